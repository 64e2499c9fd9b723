/**
 * The logind watcher's supervision and sender check against a stand-in busctl (a shell script: `monitor` prints
 * what the test appends to a file, `call GetNameOwner` answers from another): no bus, no root. The real bus and a
 * real busctl are the lab's (test/lab/sleep-logind.lab.test.ts).
 */
import assert from "node:assert/strict";
import { appendFileSync, chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { watchChildren } from "./child-watch.ts";
import { watchSleep } from "./logind.linux.ts";
import type { SleepMonitorListener, SleepSourceState } from "./platform.ts";

/** The stand-in answers in milliseconds; this bounds a loaded machine. */
const WITHIN_MS = 5_000;

let dir = "";
const savedBus = process.env.DBUS_SYSTEM_BUS_ADDRESS;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "detour-logind-"));
  writeFileSync(join(dir, "bus"), "");
  process.env.DBUS_SYSTEM_BUS_ADDRESS = `unix:path=${join(dir, "bus")}`;
  writeFileSync(
    join(dir, "busctl"),
    `#!/bin/sh
d='${dir}'
case " $* " in
  *" monitor "*) echo "Monitoring bus message stream." >&2; exec tail -n +1 -s 0.05 -f "$d/lines" ;;
  *" GetNameOwner "*)
    echo call >> "$d/calls"
    if [ -s "$d/owner" ]; then printf 's "%s"\\n' "$(cat "$d/owner")"
    else echo "Call failed: Could not get owner of name 'org.freedesktop.login1': no such name" >&2; exit 1; fi ;;
  *) exit 2 ;;
esac
`,
  );
  chmodSync(join(dir, "busctl"), 0o755);
});

after(() => {
  if (savedBus === undefined) delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
  else process.env.DBUS_SYSTEM_BUS_ADDRESS = savedBus;
  rmSync(dir, { recursive: true, force: true });
});

function reset(owner: string | null): void {
  writeFileSync(join(dir, "lines"), "");
  writeFileSync(join(dir, "calls"), "");
  writeFileSync(join(dir, "owner"), owner ?? "");
}

const prepare = (sender: string, sleeping: boolean): string =>
  JSON.stringify({
    type: "signal",
    sender,
    path: "/org/freedesktop/login1",
    interface: "org.freedesktop.login1.Manager",
    member: "PrepareForSleep",
    payload: { type: "b", data: [sleeping] },
  });

const ownerChanged = (owner: string): string =>
  JSON.stringify({
    type: "signal",
    sender: "org.freedesktop.DBus",
    path: "/org/freedesktop/DBus",
    interface: "org.freedesktop.DBus",
    member: "NameOwnerChanged",
    payload: { type: "sss", data: ["org.freedesktop.login1", "", owner] },
  });

function emit(line: string): void {
  appendFileSync(join(dir, "lines"), `${line}\n`);
}

interface Heard {
  sleeps: boolean[];
  states: { state: SleepSourceState; detail: string | null }[];
  deaths: string[];
  ignored: string[];
}

function listen(): { heard: Heard; listener: SleepMonitorListener } {
  const heard: Heard = { sleeps: [], states: [], deaths: [], ignored: [] };
  return {
    heard,
    listener: {
      prepareForSleep: (s) => heard.sleeps.push(s.sleeping),
      state: (state, detail) => heard.states.push({ state, detail }),
      watcherDied: (r) => heard.deaths.push(r),
      ignored: (r) => heard.ignored.push(r),
    },
  };
}

async function until(what: string, ok: () => boolean): Promise<void> {
  const end = performance.now() + WITHIN_MS;
  while (!ok()) {
    if (performance.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test("only-login1's-owner-is-heard-an-impostor-is-ignored-and-a-new-logind-is-followed", async () => {
  reset(":1.2");
  const { heard, listener } = listen();
  const w = watchSleep(listener, { busctl: join(dir, "busctl") });
  try {
    await until("listening", () => heard.states.at(-1)?.state === "listening");
    assert.equal(heard.states.at(-1)?.detail, "org.freedesktop.login1 is :1.2");
    emit(prepare(":1.2", true));
    emit(prepare(":1.2", false));
    await until("the sleep and the resume", () => heard.sleeps.length === 2);
    assert.deepEqual(heard.sleeps, [true, false]);
    emit(prepare(":1.66", false));
    await until("the forged resume to be judged", () => heard.ignored.length === 1);
    assert.match(heard.ignored[0] ?? "", /from :1\.66, which does not own org\.freedesktop\.login1 \(:1\.2 does/);
    assert.deepEqual(heard.sleeps, [true, false], "the forged resume is not heard");
    // logind restarts: the bus announces its new name, and only that name counts from then on.
    writeFileSync(join(dir, "owner"), ":1.9");
    emit(ownerChanged(":1.9"));
    emit(prepare(":1.2", false));
    emit(prepare(":1.9", false));
    await until("the new logind's resume", () => heard.sleeps.length === 3);
    await until("the old name's signal ignored", () => heard.ignored.length === 2);
    assert.equal(heard.states.at(-1)?.detail, "org.freedesktop.login1 is :1.9");
  } finally {
    w.stop();
  }
});

test("a-sender-unknown-to-the-watcher-makes-it-ask-the-bus-again-before-judging", async () => {
  reset(null);
  const { heard, listener } = listen();
  const w = watchSleep(listener, { busctl: join(dir, "busctl") });
  try {
    await until("no logind", () => heard.states.at(-1)?.state === "no-logind");
    await sleep(1_100); // past the recheck's rate limit
    // logind came up without the watcher seeing the change (it is asked, not assumed).
    writeFileSync(join(dir, "owner"), ":1.4");
    emit(prepare(":1.4", false));
    await until("the resume after asking again", () => heard.sleeps.length === 1);
    assert.equal(heard.states.at(-1)?.state, "listening");
    assert.equal(heard.ignored.length, 0);
  } finally {
    w.stop();
  }
});

test("a-killed-watcher-is-reported-and-restarted-and-hears-the-next-resume", async () => {
  reset(":1.2");
  const pids: number[] = [];
  const unwatch = watchChildren({ spawned: (p) => pids.push(p.pid), exited: () => undefined });
  const { heard, listener } = listen();
  const w = watchSleep(listener, { busctl: join(dir, "busctl") });
  try {
    await until("listening", () => heard.states.at(-1)?.state === "listening");
    assert.equal(pids.length, 1, "the monitor is noted for the ownership record");
    process.kill(pids[0] ?? -1, "SIGKILL");
    await until("the death reported", () => heard.deaths.length === 1);
    assert.match(heard.deaths[0] ?? "", /busctl monitor exited \(SIGKILL\)/);
    await until("a second monitor", () => pids.length === 2);
    await until("listening again", () => heard.states.at(-1)?.state === "listening");
    writeFileSync(join(dir, "lines"), "");
    emit(prepare(":1.2", false));
    await until("the resume after the restart", () => heard.sleeps.length >= 1);
  } finally {
    w.stop();
    unwatch();
  }
});

test("without-a-system-bus-the-watcher-says-so-and-nothing-runs", async () => {
  reset(":1.2");
  const pids: number[] = [];
  const unwatch = watchChildren({ spawned: (p) => pids.push(p.pid), exited: () => undefined });
  process.env.DBUS_SYSTEM_BUS_ADDRESS = `unix:path=${join(dir, "no-such-bus")}`;
  const { heard, listener } = listen();
  const w = watchSleep(listener, { busctl: join(dir, "busctl") });
  try {
    await until("unavailable", () => heard.states.at(-1)?.state === "unavailable");
    assert.match(heard.states.at(-1)?.detail ?? "", /no system bus at .*no-such-bus/);
    assert.equal(pids.length, 0);
    assert.equal(heard.deaths.length, 0, "a bus that is not there is a state, not a watcher's death");
  } finally {
    w.stop();
    unwatch();
    process.env.DBUS_SYSTEM_BUS_ADDRESS = `unix:path=${join(dir, "bus")}`;
  }
});
