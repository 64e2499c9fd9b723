/**
 * The words the window shows for each situation a user can be in: main/core/status-words.ts (the module the tray and
 * `detour status` use too), with the window's own duration format.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { StatusPayload } from "../main/core/protocol/messages.ts";
import { actions, alwaysOnNote, explanation, situation, SITUATION_LABELS } from "../main/core/status-words.ts";
import { duration, eventText } from "./format.ts";

const NOW = 1_000_000;

/** A connected daemon, varied per case. */
function status(over: Partial<StatusPayload> = {}): StatusPayload {
  return {
    state: "connected",
    summary: "Connected to Frankfurt over WireGuard",
    gateway: "Frankfurt",
    protocol: "wireguard",
    activeLegId: "L1",
    standby: null,
    since: 1000,
    candidates: [],
    lastRace: null,
    lastFailover: null,
    error: null,
    daemon: { version: "0.1.0", pid: 42, startedAt: 1, configPath: "/etc/detour/client.json" },
    ...over,
  };
}
const opts = { now: NOW, clock: (ms: number): string => `T${String(ms)}`, duration };

const TRUSTED: NonNullable<StatusPayload["trusted"]> = {
  configured: true,
  policy: "disconnect",
  trusted: true,
  rule: "office",
  reason: 'trusted network "office": DNS matches and 10.0.0.5:443 answered with a pinned key',
  checkedAt: 1,
  heldDown: true,
  alwaysOn: false,
  allowDisconnect: true,
};
const idle = { gateway: null, protocol: null, activeLegId: null } as const;

function captive(exception: Partial<NonNullable<StatusPayload["captive"]>["exception"]>): StatusPayload["captive"] {
  return {
    state: "sign-in-required",
    reason: "the check URL was redirected to http://198.18.205.1/signin",
    portalUrl: "http://198.18.205.1/signin",
    checkedAt: 1,
    checks: 1,
    exception: {
      state: "open",
      openedAt: NOW - 30_000,
      closesAt: NOW + 270_000,
      portalAddresses: ["198.18.205.1"],
      resolvers: ["198.18.53.2"],
      closedReason: null,
      opened: 1,
      ...exception,
    },
  };
}

/** One status per situation a user can be in, plus the variants whose words or actions differ. */
const CASES: Record<string, StatusPayload> = {
  connected: status(),
  "connected, always on": status({ trusted: { ...TRUSTED, trusted: false, rule: null, allowDisconnect: false } }),
  connecting: status({ ...idle, state: "racing", summary: "Connecting: racing gw1 and gw2" }),
  reconnecting: status({ state: "failing-over", summary: "Reconnecting: Frankfurt stopped answering, trying Paris" }),
  error: status({
    ...idle,
    state: "error",
    summary: "No gateway reachable; retrying in 4 s",
    error: { reason: "No gateway reachable", nextRetryAt: NOW + 4000 },
  }),
  disconnected: status({ ...idle, state: "disconnected", summary: "Disconnected" }),
  "waiting-for-network": status({
    ...idle,
    state: "waiting-for-network",
    summary: "Waiting for a network: no route to any gateway",
  }),
  "sign-in": status({ ...idle, state: "error", summary: "No gateway reachable", captive: captive({}) }),
  "sign-in, time ran out": status({
    ...idle,
    state: "disconnected",
    summary: "Disconnected",
    captive: captive({ state: "closed", closesAt: null, closedReason: "timed out" }),
  }),
  trusted: status({ ...idle, state: "disconnected", summary: "Disconnected", trusted: TRUSTED }),
  "trusted, policy connects anyway": status({
    ...idle,
    state: "disconnected",
    summary: "Disconnected",
    trusted: { ...TRUSTED, policy: "connect", heldDown: false },
  }),
};

test("every-state-has-a-human-label-and-none-shows-a-raw-state-name", () => {
  const seen = new Set<string>();
  for (const [name, s] of Object.entries(CASES)) {
    const label = SITUATION_LABELS[situation(s)];
    seen.add(label);
    assert.doesNotMatch(label, /-/, `${name}: ${label}`);
    assert.doesNotMatch(explanation(s, opts), /waiting-for-network|failing-over|sign-in-required/, name);
  }
  assert.deepEqual([...seen].sort(), [
    "Cannot connect",
    "Connected",
    "Connecting",
    "Disconnected",
    "On a trusted network",
    "Reconnecting",
    "Sign in to this network",
    "Waiting for a network",
  ]);
});

test("waiting-for-a-network-says-it-connects-by-itself-and-offers-no-connect", () => {
  const s = CASES["waiting-for-network"];
  assert.ok(s !== undefined);
  assert.equal(SITUATION_LABELS[situation(s)], "Waiting for a network");
  assert.match(explanation(s, opts), /Detour connects by itself as soon as a network is back/);
  const a = actions(s);
  assert.equal(a.connect.enabled, false, "no Connect storm while offline");
  assert.match(a.connect.why ?? "", /connects by itself/);
  assert.equal(a.disconnect.enabled, true, "the user can stop waiting");
});

test("sign-in-says-why-and-how-long-the-exception-lasts", () => {
  const s = CASES["sign-in"];
  assert.ok(s !== undefined);
  assert.equal(SITUATION_LABELS[situation(s)], "Sign in to this network");
  assert.equal(
    explanation(s, opts),
    "The check URL was redirected to http://198.18.205.1/signin. Sign in within 4 min 30 s (until T1270000); Detour connects by itself once you have.",
  );
  const out = CASES["sign-in, time ran out"];
  assert.ok(out !== undefined);
  assert.match(explanation(out, opts), /ran out: connect again/);
  assert.equal(actions(out).connect.enabled, true, "a connect opens a new exception");
});

test("on-a-trusted-network-connect-is-offered-only-where-policy-allows", () => {
  const down = CASES.trusted;
  const anyway = CASES["trusted, policy connects anyway"];
  assert.ok(down !== undefined && anyway !== undefined);
  assert.equal(
    explanation(down, opts),
    'This network matches trusted network "office": Detour stays disconnected here and connects by itself when you leave it.',
  );
  assert.deepEqual(actions(down).connect, {
    enabled: false,
    label: "Connect",
    why: "Your organisation's policy keeps Detour disconnected on trusted networks.",
  });
  assert.deepEqual(actions(anyway).connect, { enabled: true, label: "Connect anyway", why: null });
});

test("always-on-greys-disconnect-with-the-reason", () => {
  const s = CASES["connected, always on"];
  assert.ok(s !== undefined);
  assert.equal(alwaysOnNote(s), "Always on: your organisation's policy does not allow disconnecting.");
  assert.deepEqual(actions(s).disconnect, {
    enabled: false,
    label: "Disconnect",
    why: "Your organisation's policy does not allow disconnecting.",
  });
  assert.equal(alwaysOnNote(status()), null);
});

test("the-timeline-names-a-state-in-words", () => {
  assert.equal(eventText({ type: "state", at: 1, state: "waiting-for-network", detail: "" }), "Waiting for a network.");
});
