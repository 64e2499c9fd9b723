import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { isNoOwnerError, LogindOwner, parseMonitorLine, parseNameOwner } from "./logind.ts";

/**
 * Recorded from `busctl monitor --json=short` (systemd 252) with logind.ts' matches on a private bus: a fake login1
 * took the name, announced a sleep and a resume, and left.
 */
const RECORDED = readFileSync(new URL("./fixtures/busctl-monitor-login1.txt", import.meta.url), "utf8")
  .split("\n")
  .filter((l) => l !== "");

const signal = (over: Record<string, unknown>, payload: unknown = { type: "b", data: [false] }): string =>
  JSON.stringify({
    type: "signal",
    sender: ":1.9",
    path: "/org/freedesktop/login1",
    interface: "org.freedesktop.login1.Manager",
    member: "PrepareForSleep",
    payload,
    ...over,
  });

test("the-recorded-monitor-lines-parse-into-owner-changes-and-sleep-then-resume", () => {
  assert.deepEqual(RECORDED.map(parseMonitorLine), [
    { kind: "owner-changed", owner: ":1.2" },
    { kind: "prepare-for-sleep", sleeping: true, sender: ":1.2" },
    { kind: "prepare-for-sleep", sleeping: false, sender: ":1.2" },
    { kind: "owner-changed", owner: null },
  ]);
});

test("malformed-or-foreign-monitor-lines-are-ignored", () => {
  for (const line of [
    "",
    "Monitoring bus message stream.",
    "{not json",
    "[1,2]",
    "null",
    signal({ type: "method_call" }),
    signal({ member: "PrepareForShutdown" }),
    signal({ interface: "org.example.Manager" }),
    signal({ path: "/org/freedesktop/login1/session/1" }),
    signal({ sender: 7 }),
    signal({}, { type: "s", data: ["false"] }),
    signal({}, { type: "b", data: [] }),
    signal({}, { type: "b", data: [true, false] }),
    signal({}, { type: "b", data: ["true"] }),
    signal({}, null),
    `${signal({})}${" ".repeat(20_000)}`,
    // A NameOwnerChanged that the bus driver did not send is anyone's forgery.
    signal(
      { sender: ":1.66", member: "NameOwnerChanged", interface: "org.freedesktop.DBus", path: "/org/freedesktop/DBus" },
      { type: "sss", data: ["org.freedesktop.login1", "", ":1.66"] },
    ),
    // Another name's owner, or an owner that is not a unique name.
    signal(
      {
        sender: "org.freedesktop.DBus",
        member: "NameOwnerChanged",
        interface: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
      },
      { type: "sss", data: ["org.example.other", "", ":1.5"] },
    ),
    signal(
      {
        sender: "org.freedesktop.DBus",
        member: "NameOwnerChanged",
        interface: "org.freedesktop.DBus",
        path: "/org/freedesktop/DBus",
      },
      { type: "sss", data: ["org.freedesktop.login1", "", "org.freedesktop.login1"] },
    ),
  ])
    assert.equal(parseMonitorLine(line), null, line.slice(0, 200));
});

test("login1's-owner-comes-from-getnameowner's-answer-and-nothing-else", () => {
  assert.equal(parseNameOwner('s ":1.5"\n'), ":1.5");
  assert.equal(parseNameOwner('s "org.freedesktop.login1"'), null);
  assert.equal(parseNameOwner('s ""'), null);
  assert.equal(parseNameOwner("garbage"), null);
  assert.ok(isNoOwnerError("Could not get owner of name 'org.freedesktop.login1': No such name"));
  assert.ok(!isNoOwnerError("Failed to connect to bus: No such file or directory"));
});

test("a-signal-counts-only-from-login1's-owner-and-a-stale-owner-answer-is-dropped", () => {
  const o = new LogindOwner();
  assert.equal(o.judge(":1.2"), "unknown", "nothing is trusted before the owner is known");
  const t = o.asking();
  assert.ok(o.answered(t, ":1.2"));
  assert.equal(o.judge(":1.2"), "trusted");
  assert.equal(o.judge(":1.3"), "impostor");
  // logind restarts while a query is out: the answer (the old owner) is older than the change the bus announced.
  const t2 = o.asking();
  o.changed(":1.8");
  assert.equal(o.answered(t2, ":1.2"), false);
  assert.equal(o.judge(":1.8"), "trusted");
  assert.equal(o.judge(":1.2"), "impostor", "the old logind's name is nobody's now");
  o.changed(null);
  assert.equal(o.judge(":1.8"), "impostor", "with nobody owning login1, nobody is trusted");
  o.forget();
  assert.equal(o.judge(":1.8"), "unknown");
});
