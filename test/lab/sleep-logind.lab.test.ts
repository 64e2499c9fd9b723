/**
 * logind's PrepareForSleep with a real bus: a dbus-daemon in the lab's client namespace (as for resolved), a
 * stand-in logind (test/lab/tools/fake-login1.py) that owns org.freedesktop.login1 and announces a sleep and a
 * resume, and an impostor on the same bus emitting the same signal without owning the name. detourd is connected
 * and never frozen, so no clock jump can tell it anything: only logind's word can. Shown from outside detourd's
 * opinion where it can be (the processes in the namespace, the kill switch's table in the kernel).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentPaths, agentRunning, agentStart, agentStop } from "./agent.ts";
import { startLabBus, type LabBus } from "./dbus.ts";
import { isAlive, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "zsl";
/** A healthy lab connects within a second or two; 20 s bounds a loaded, shared machine. */
const CONNECT_WITHIN_MS = 20_000;
/** The stand-in starts in tens of milliseconds (python's import a little more). */
const SERVICE_READY_MS = 10_000;
/** The watcher starts with detourd's warm-up and asks the bus once: well under a second unloaded. */
const LISTENING_WITHIN_MS = 10_000;
/**
 * The resume reaches detourd through the bus in milliseconds; the clocks could not tell it (no jump), and their
 * tick is 1 s anyway. A loaded shared machine is allowed this much.
 */
const WAKE_WITHIN_MS = 1_000;
/** How long a forged signal is given to (wrongly) have an effect before the test says it had none. */
const IMPOSTOR_GRACE_MS = 1_500;
/** The first restart of a dead watcher comes after 200 ms (WATCH_RESTART_INITIAL_MS). */
const RESTART_WITHIN_MS = 5_000;
const STOP_GRACE_MS = 3_000;
/** Status is polled this often while a wake is timed. */
const FAST_POLL_MS = 10;

const dir = (): string => join(lab.labDirOf(ID), "logind");
let labBus: LabBus | null = null;
const busAddress = (): string => {
  if (labBus === null) throw new Error("the private bus is not running");
  return labBus.address;
};
const ns = (): string => lab.topologyOf(ID).client.ns;
const pids: number[] = [];
let owner = 0;
let impostor = 0;
let client: ControlClient | null = null;

function logTail(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8").slice(-2000) : "";
}

/** Starts the stand-in as `role` and waits until it says it is on the bus (and, as owner, owns login1). */
async function startFake(role: "owner" | "impostor"): Promise<number> {
  const log = join(dir(), `${role}.log`);
  const pid = spawnDaemon(
    [
      "ip",
      "netns",
      "exec",
      ns(),
      "/usr/bin/python3",
      join(REPO_ROOT, "test/lab/tools/fake-login1.py"),
      busAddress(),
      role,
    ],
    { logFile: log },
  );
  pids.push(pid);
  await waitFor(
    `the ${role} on the bus`,
    () => {
      if (!isAlive(pid)) throw new Error(`fake-login1 (${role}) exited:\n${logTail(log)}`);
      return readFileSync(log, "utf8").includes(`${role} :`);
    },
    { timeoutMs: SERVICE_READY_MS, intervalMs: 50 },
  );
  return pid;
}

/** The `busctl monitor` processes in the client namespace (only detourd's watcher runs one). */
function monitors(): number[] {
  const r = spawnSync("ip", ["netns", "pids", ns()], { encoding: "utf8", timeout: 5_000 });
  return r.stdout
    .split("\n")
    .filter((l) => /^\d+$/.test(l.trim()))
    .map(Number)
    .filter((pid) => {
      try {
        const argv = readFileSync(`/proc/${String(pid)}/cmdline`, "utf8").split("\0");
        return argv[0]?.endsWith("busctl") === true && argv.includes("monitor");
      } catch {
        return false;
      }
    });
}

function sleepOf(s: Status): NonNullable<NonNullable<NonNullable<Status["network"]>["monitor"]>["sleep"]> | undefined {
  return s.network?.monitor?.sleep;
}

/** Sends `sig` to a stand-in and polls status until `pred`; how long it took. */
async function signalAndTime(
  pid: number,
  sig: "SIGUSR1" | "SIGUSR2",
  what: string,
  pred: (s: Status) => boolean,
  c: ControlClient,
  withinMs: number,
): Promise<number> {
  const t0 = performance.now();
  process.kill(pid, sig);
  await waitForStatus(c, what, pred, withinMs, { pollMs: FAST_POLL_MS, context: () => agentLogs(ID, 30) });
  return Math.round(performance.now() - t0);
}

/** detourd on the private bus, resuming what a killed one left (its work folder kept, as a service manager would). */
async function startAgent(): Promise<ControlClient> {
  rmSync(agentPaths(ID).socket, { force: true });
  process.env.DBUS_SYSTEM_BUS_ADDRESS = busAddress();
  const a = await agentStart(ID, { keepWorkDir: true });
  client = await waitFor(
    "detourd's control socket to answer",
    () => ControlClient.connect(a.socket, { timeoutMs: 5000 }).catch(() => false as const),
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  return client;
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  rmSync(dir(), { recursive: true, force: true });
  mkdirSync(dir(), { recursive: true, mode: 0o755 });
  labBus = await startLabBus(ns(), join(lab.labDirOf(ID), "bus"));
  owner = await startFake("owner");
  impostor = await startFake("impostor");
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await stopPids([...pids].reverse(), "SIGTERM", STOP_GRACE_MS);
  await labBus?.stop();
  delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
  await lab.down(ID);
});

test(
  "logind's-resume-checks-the-tunnel-at-once-an-impostor-is-ignored-and-a-killed-watcher-comes-back-or-is-reclaimed",
  { timeout: 180_000 },
  async () => {
    const c = await startAgent();
    await c.connect();
    const s0 = await waitForStatus(
      c,
      "connected, with logind heard",
      (s) => s.state === "connected" && sleepOf(s)?.logind === "listening",
      Math.max(CONNECT_WITHIN_MS, LISTENING_WITHIN_MS),
      { context: () => agentLogs(ID, 30) },
    );
    assert.deepEqual(sleepOf(s0)?.sources, ["clock", "logind"]);
    assert.equal(s0.network?.monitor?.wakes, 0);
    const gateway = s0.gateway;
    assert.equal(monitors().length, 1, "one watcher runs");

    // The impostor announces a sleep and a resume: nothing happens.
    process.kill(impostor, "SIGUSR1");
    process.kill(impostor, "SIGUSR2");
    await sleep(IMPOSTOR_GRACE_MS);
    assert.match(logTail(join(dir(), "impostor.log")), /sent PrepareForSleep\(false\)/);
    const s1 = await c.status();
    assert.equal(s1.network?.monitor?.wakes, 0, "a forged resume is no wake");
    assert.equal(sleepOf(s1)?.lastSleepAt, null, "a forged sleep is not noted");
    assert.equal(s1.state, "connected");

    // logind: about to sleep. Nothing is taken down.
    const tSleep = await signalAndTime(
      owner,
      "SIGUSR1",
      "the sleep noted",
      (s) => sleepOf(s)?.lastSleepAt != null,
      c,
      WAKE_WITHIN_MS,
    );
    const s2 = await c.status();
    assert.equal(s2.state, "connected", "about to sleep does not disconnect");
    assert.equal(s2.killSwitch?.state, "in-force", "the kill switch stays in force");
    // Resumed: the wake is dispatched at once, with no clock jump to go by.
    const tWake = await signalAndTime(
      owner,
      "SIGUSR2",
      "the wake from logind",
      (s) => s.network?.monitor?.wakes === 1 && sleepOf(s)?.lastWake?.source === "logind",
      c,
      WAKE_WITHIN_MS,
    );
    console.log(`logind: sleep noted ${String(tSleep)} ms, wake dispatched ${String(tWake)} ms after the signal`);
    assert.ok(
      agentLogs(ID, 200)
        .split("\n")
        .some((l) => l.includes("woke up") && l.includes("logind")),
      "detourd says it woke up from logind's word",
    );
    const s3 = await waitForStatus(
      c,
      "the tunnel checked and kept",
      (s) => s.state === "connected" && !/checking/.test(s.summary),
      CONNECT_WITHIN_MS,
    );
    assert.equal(s3.gateway, gateway, "the session survived: same gateway");
    assert.equal(s3.network?.monitor?.wakes, 1, "one resume, one wake");

    // The watcher is killed: reported, restarted, and it hears the next resume.
    const [watcher] = monitors();
    assert.ok(watcher !== undefined);
    process.kill(watcher, "SIGKILL");
    const s4 = await waitForStatus(
      c,
      "the watcher's death reported and a new one listening",
      (s) => sleepOf(s)?.watcherDeaths === 1 && sleepOf(s)?.logind === "listening",
      RESTART_WITHIN_MS,
      { context: () => agentLogs(ID, 30) },
    );
    assert.deepEqual(sleepOf(s4)?.sources, ["clock", "logind"]);
    const again = monitors();
    assert.equal(again.length, 1, "one watcher runs again");
    assert.notEqual(again[0], watcher);
    process.kill(owner, "SIGUSR1");
    await waitForStatus(
      c,
      "the second sleep noted",
      (s) => (sleepOf(s)?.lastSleepAt ?? 0) > (sleepOf(s3)?.lastSleepAt ?? 0),
      WAKE_WITHIN_MS * 5,
    );
    const tWake2 = await signalAndTime(
      owner,
      "SIGUSR2",
      "the second wake",
      (s) => s.network?.monitor?.wakes === 2,
      c,
      WAKE_WITHIN_MS,
    );
    console.log(`after the restart: wake dispatched ${String(tWake2)} ms after the signal`);

    // SIGKILL: the watcher outlives detourd (busctl notices its reader only on the next message) until the
    // successor stops it from the ownership record.
    c.close();
    client = null;
    const orphan = monitors();
    const running = agentRunning(ID);
    assert.ok(running !== null);
    process.kill(running.pid, "SIGKILL");
    for (let i = 0; i < 100 && agentRunning(ID) !== null; i++) await sleep(20);
    assert.deepEqual(monitors(), orphan, "the killed detourd's watcher is still there");
    const c2 = await startAgent();
    await waitForStatus(c2, "the successor listening", (s) => sleepOf(s)?.logind === "listening", LISTENING_WITHIN_MS, {
      context: () => agentLogs(ID, 30),
    });
    const now = monitors();
    assert.equal(now.length, 1, `one watcher after the successor's start: ${now.join(", ")}`);
    assert.ok(!orphan.some((p) => now.includes(p)), "the orphaned watcher was stopped");
    assert.ok(
      agentLogs(ID, 300)
        .split("\n")
        .some((l) => l.includes("reclaimed what a previous detourd left behind") && l.includes("busctl")),
      "the successor names the watcher it reclaimed",
    );

    // A clean stop leaves no watcher behind.
    c2.close();
    client = null;
    await agentStop(ID);
    assert.deepEqual(monitors(), [], "no busctl monitor outlives detourd");
  },
);
