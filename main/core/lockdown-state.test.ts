import assert from "node:assert/strict";
import { test } from "node:test";
import {
  earlyBlockDecision,
  earlyBlockOfThisBoot,
  encodeLockdownState,
  LOCKDOWN_STATE_FORMAT,
  lockdownStateFor,
  type LockdownState,
} from "./lockdown-state.ts";

const LOCKED: LockdownState = lockdownStateFor({ lockdown: true, protectedRoutes: ["198.19.0.0/16"] }, "dt");

test("under-lockdown-the-early-step-blocks-everything-but-loopback-tunnels-and-underlay-upkeep", () => {
  const d = earlyBlockDecision({ kind: "text", text: encodeLockdownState(LOCKED) });
  assert.ok(d.action === "block" && !d.failClosed, JSON.stringify(d));
  assert.equal(d.rules.mode, "blocking");
  assert.equal(d.rules.blockUnderlay, true);
  assert.deepEqual(d.rules.gatewayEndpoints, [], "nothing of detourd's runs yet: no allowance");
  assert.deepEqual(d.rules.dnsServers, []);
  assert.deepEqual(d.rules.protectedNetworks, ["198.19.0.0/16"]);
  assert.deepEqual(d.rules.tunnelDevices, ["dt-*", "ipsec*"]);
  assert.equal(d.rules.underlayUpkeep, true, "DHCP still brings the network up");
});

test("without-lockdown-or-without-a-recorded-state-the-early-step-does-nothing", () => {
  const off = { ...LOCKED, lockdown: false };
  assert.equal(earlyBlockDecision({ kind: "text", text: encodeLockdownState(off) }).action, "none");
  assert.deepEqual(earlyBlockDecision({ kind: "missing" }), { action: "none", reason: "no lockdown state recorded" });
});

test("a-state-that-cannot-be-read-or-parsed-fails-closed-with-its-reason", () => {
  const cases: [Parameters<typeof earlyBlockDecision>[0], RegExp][] = [
    [{ kind: "unreadable", reason: "EIO" }, /cannot be read: EIO/],
    [{ kind: "text", text: "" }, /not JSON/],
    [{ kind: "text", text: '{"format":"detour-lockdown-state/1","lockdown":tr' }, /not JSON/],
    [{ kind: "text", text: JSON.stringify({ ...LOCKED, format: "detour-lockdown-state/9" }) }, /invalid: format/],
    [{ kind: "text", text: JSON.stringify({ ...LOCKED, lockdown: "yes" }) }, /invalid: lockdown/],
    [{ kind: "text", text: JSON.stringify({ ...LOCKED, protectedNetworks: ["198.19.0.0/99"] }) }, /invalid/],
    [{ kind: "text", text: JSON.stringify({ ...LOCKED, tunnelDevices: ['x"; flush ruleset'] }) }, /invalid/],
  ];
  for (const [read, why] of cases) {
    const d = earlyBlockDecision(read);
    assert.ok(d.action === "block" && d.failClosed, JSON.stringify(read));
    assert.match(d.reason, why);
    assert.match(d.reason, /fail closed/);
    assert.deepEqual(d.rules.protectedNetworks, ["0.0.0.0/0"], "everything is protected");
    assert.equal(d.rules.blockUnderlay, true);
  }
});

test("the-state-records-the-format-lockdown-and-what-is-protected", () => {
  assert.deepEqual(JSON.parse(encodeLockdownState(LOCKED)), {
    format: LOCKDOWN_STATE_FORMAT,
    lockdown: true,
    protectedNetworks: ["198.19.0.0/16"],
    tunnelDevices: ["dt-*", "ipsec*"],
  });
});

test("the-early-steps-report-counts-only-for-the-boot-it-was-written-in", () => {
  const report = {
    bootId: "b-1",
    at: "2026-12-07T06:00:00.000Z",
    action: "block",
    reason: "lockdown is on",
    failClosed: false,
  };
  assert.deepEqual(earlyBlockOfThisBoot(JSON.stringify(report), "b-1"), report);
  assert.equal(earlyBlockOfThisBoot(JSON.stringify(report), "b-2"), null, "an earlier boot's report");
  assert.equal(earlyBlockOfThisBoot(null, "b-1"), null);
  assert.equal(earlyBlockOfThisBoot("{", "b-1"), null);
  assert.equal(earlyBlockOfThisBoot(JSON.stringify({ ...report, action: "maybe" }), "b-1"), null);
  assert.equal(earlyBlockOfThisBoot(JSON.stringify({ ...report, bootId: "" }), ""), null, "no boot id, no match");
});
