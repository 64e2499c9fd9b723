/**
 * The `detour` command end to end: a real ControlServer with fake handlers in a daemon process of its own, the
 * CLI as a child process, checked by its output and exit code as a user or a script would see them.
 */
import { initialKillSwitchStatus } from "../core/killswitch-status.ts";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { DrillResult, RaceRecord } from "../core/connection/types.ts";
import type { StatusPayload } from "../core/protocol/messages.ts";

const REPO = new URL("../../", import.meta.url).pathname;
/** A child node with the tsx loader starts in well under a second; this bounds a wedged CLI, not a slow one. */
const CLI_TIMEOUT_MS = 20_000;

const NOW = Date.now();
const RACE: RaceRecord = {
  id: "R1",
  reason: "connect",
  startedAt: NOW - 60_000,
  endedAt: NOW - 59_600,
  winner: { id: "L1", gateway: "gw1", kind: "wireguard" },
  legs: [
    {
      leg: { id: "L1", gateway: "gw1", kind: "wireguard" },
      outcome: "won",
      startedAt: NOW - 60_000,
      endedAt: NOW - 59_820,
      error: null,
    },
    {
      leg: { id: "L2", gateway: "gw2", kind: "ikev2" },
      outcome: "failed",
      startedAt: NOW - 59_750,
      endedAt: NOW - 59_700,
      error: { code: "unreachable", message: "no answer from gw2:500" },
    },
  ],
};
const STATUS: StatusPayload = {
  state: "connected",
  summary: "Connected to gw1 over WireGuard after gw2 failed.",
  gateway: "gw1",
  protocol: "wireguard",
  activeLegId: "L1",
  standby: null,
  since: NOW - 59_600,
  candidates: [
    {
      name: "gw1",
      hostname: "gw1.lab.detour.test",
      address: "198.18.1.2",
      priority: 10,
      region: "lab",
      kinds: ["wireguard"],
      sources: ["config"],
      probe: null,
    },
  ],
  lastRace: RACE,
  lastFailover: {
    from: { gateway: "gw2", kind: "ikev2" },
    to: { gateway: "gw1", kind: "wireguard" },
    reason: "no reply for 600 ms",
    via: "race",
    lastReplyAt: NOW - 30_000,
    detectedAt: NOW - 29_388,
    restoredAt: NOW - 29_155,
    detectedAfterMs: 612,
    restoredAfterMs: 845,
  },
  error: null,
  daemon: { version: "0.1.0", pid: 4242, startedAt: NOW - 3_600_000, configPath: "/etc/detour/client.json" },
};

const DRILL: DrillResult = {
  id: "D1",
  startedAt: NOW - 1000,
  endedAt: NOW - 100,
  slaMs: 1000,
  verdict: "pass",
  reason: "detected in 312 ms and restored in 355 ms, within SLA 1000 ms",
  from: { gateway: "gw1", kind: "wireguard" },
  to: { gateway: "gw2", kind: "wireguard" },
  blockedAt: NOW - 950,
  liftedAt: NOW - 150,
  detectedAt: NOW - 638,
  detectedAfterMs: 312,
  restoredAt: NOW - 595,
  restoredAfterMs: 355,
  probesSent: 18,
  probesLost: 17,
  failover: STATUS.lastFailover,
};

/**
 * The fake daemon runs in its own process, as detourd does: the import rules keep main/cli from importing
 * main/agent, and the CLI must reach the server only through its socket anyway. It reports each call on stdout.
 */
const FAKE_DAEMON = `
import { ControlServer } from ${JSON.stringify(new URL("../agent/control-server.ts", import.meta.url).href)};
const fx = JSON.parse(process.env.DETOUR_FAKE_FIXTURES);
const call = (name, value) => { process.stdout.write("call " + name + "\\n"); return Promise.resolve(value); };
const server = await ControlServer.start({
  path: process.env.DETOUR_FAKE_SOCKET,
  group: process.getgid(),
  version: "0.1.0",
  log: { debug() {}, info() {}, warn() {}, error() {} },
  handlers: {
    status: () => call("status", fx.status),
    connect: () => call("connect", fx.connect),
    disconnect: () => call("disconnect"),
    gateways: () => call("gateways", fx.status.candidates),
    race: () => call("race", fx.race),
    subscribe: () => () => undefined,
    // An SLA of 1 ms cannot be met: the fake answers as detourd would, with a failed drill.
    drill: (p) => call("drill " + JSON.stringify(p), p.slaMs === 1
      ? { ...fx.drill, slaMs: 1, verdict: "fail", reason: "detection 312 ms exceeds SLA 1 ms" }
      : { ...fx.drill, slaMs: p.slaMs ?? 1000 }),
  },
});
process.on("SIGTERM", () => { void server.close().then(() => process.exit(0)); });
process.stdout.write("ready\\n");
`;

const dir = mkdtempSync(join(tmpdir(), "detour-cli-"));
const socket = join(dir, "detourd.sock");
let daemon: ChildProcess | null = null;
let daemonOut = "";

before(async () => {
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", FAKE_DAEMON], {
    cwd: REPO,
    env: {
      ...process.env,
      DETOUR_FAKE_SOCKET: socket,
      DETOUR_FAKE_FIXTURES: JSON.stringify({
        status: STATUS,
        race: RACE,
        drill: DRILL,
        connect: { killSwitch: { ...initialKillSwitchStatus(), state: "in-force", mode: "blocking", ownGroup: 64950 } },
      }),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  daemon = child;
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (d: string) => (daemonOut += d));
  const deadline = Date.now() + CLI_TIMEOUT_MS;
  while (!daemonOut.includes("ready\n")) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`the fake daemon did not start (exit ${child.exitCode})`);
    await new Promise((r) => setTimeout(r, 20));
  }
});

after(async () => {
  const child = daemon;
  if (child?.pid !== undefined && child.exitCode === null) {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function detour(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "main/cli/detour.ts", ...args], {
      cwd: REPO,
      env: { ...process.env, DETOUR_SOCKET: "" },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: CLI_TIMEOUT_MS,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.once("error", reject);
    child.once("close", (code) => {
      resolve({ code, stdout, stderr });
    });
  });
}

describe("detour against a running daemon", () => {
  test("status-prints-the-summary-first-then-state-gateway-race-and-failover", async () => {
    const r = await detour("--socket", socket, "status");
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split("\n");
    assert.equal(lines[0], "Connected to gw1 over WireGuard after gw2 failed.");
    assert.match(r.stdout, /^ {2}state {5}connected$/m);
    assert.match(r.stdout, /^ {2}gateway {3}gw1$/m);
    assert.match(r.stdout, /^ {2}protocol {2}wireguard \(WireGuard\)$/m);
    assert.match(r.stdout, /^ {2}since {5}(59 s|1m 0\ds) \(at \d\d:\d\d:\d\d\.\d{3}\)$/m);
    assert.match(r.stdout, /^last race R1 \(connect\) at .*, took 400 ms, winner gw1 wireguard$/m);
    assert.match(r.stdout, /^ {2}L2 +gw2 +ikev2 +\+250 ms +\+300 ms +failed +unreachable: no answer from gw2:500$/m);
    assert.match(
      r.stdout,
      /^last failover: gw2 ikev2 -> gw1 wireguard, reason: no reply for 600 ms, detected after 612 ms, restored after 845 ms/m,
    );
    assert.equal(r.stderr, "");
  });

  test("status-json-prints-the-daemons-payload-as-is", async () => {
    const r = await detour("status", "--json", "--socket", socket);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as StatusPayload;
    assert.deepEqual(s, STATUS);
    for (const key of ["state", "gateway", "protocol", "since", "candidates", "lastRace", "lastFailover"])
      assert.ok(key in s, key);
    assert.deepEqual(
      s.lastFailover && [
        s.lastFailover.from,
        s.lastFailover.to,
        s.lastFailover.reason,
        s.lastFailover.detectedAfterMs,
        s.lastFailover.restoredAfterMs,
      ],
      [{ gateway: "gw2", kind: "ikev2" }, { gateway: "gw1", kind: "wireguard" }, "no reply for 600 ms", 612, 845],
    );
  });

  test("connect-asks-the-daemon-and-reports-its-state", async () => {
    const before = daemonOut.split("call connect").length;
    const r = await detour("connect", "--socket", socket);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      "connect requested; detourd is connected: Connected to gw1 over WireGuard after gw2 failed.\n" +
        "kill switch: in force (blocking); own traffic bound to gid 64950\n",
    );
    assert.equal(daemonOut.split("call connect").length, before + 1, "the daemon's connect handler ran once");
  });

  test("drill-passes-prints-one-summary-line-and-exits-0", async () => {
    const r = await detour("--socket", socket, "drill", "--sla-ms", "3000");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout.split("\n")[0],
      "Drill passed: gw1 (WireGuard) blocked; detected in 312 ms, traffic restored via gw2 (WireGuard) in 355 ms; SLA 3000 ms",
    );
    assert.match(r.stdout, /^ {2}probes +17 of 18 lost over the host's routes while cut off$/m);
    assert.match(r.stdout, /^ {2}block +lifted after 800 ms; gw1 is usable again$/m);
    assert.match(daemonOut, /call drill \{"slaMs":3000\}/);
  });

  test("drill-that-misses-its-sla-says-why-and-exits-4", async () => {
    const r = await detour("--socket", socket, "drill", "--sla-ms", "1");
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stdout, /^Drill failed \(detection 312 ms exceeds SLA 1 ms\): gw1 \(WireGuard\) blocked; /);
    const j = await detour("--socket", socket, "drill", "--sla-ms", "1", "--json");
    assert.equal(j.code, 4);
    assert.equal((JSON.parse(j.stdout) as DrillResult).verdict, "fail");
  });

  test("drill-without-an-sla-leaves-the-default-to-the-daemon", async () => {
    const r = await detour("--socket", socket, "drill", "--json");
    assert.equal(r.code, 0, r.stderr);
    assert.match(daemonOut, /call drill \{\}/);
  });

  test("race-json-prints-the-last-race-record", async () => {
    const r = await detour("--socket", socket, "race", "--json");
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), RACE);
  });
});

describe("detour without a daemon, and misuse", () => {
  test("a-bad-sla-names-the-range", async () => {
    const r = await detour("drill", "--sla-ms", "1.5");
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^detour: --sla-ms: the SLA must be a whole number of milliseconds from 1 to 10000; got "1\.5"\n/,
    );
  });

  test("a-stopped-daemon-exits-3-with-a-clear-message", async () => {
    const absent = join(dir, "absent.sock");
    const r = await detour("status", "--socket", absent);
    assert.equal(r.code, 3);
    assert.equal(r.stderr, `detour: detourd is not running (no socket at ${absent})\n`);
    assert.equal(r.stdout, "");
  });

  test("bad-usage-exits-2-with-the-usage", async () => {
    for (const args of [
      [],
      ["frobnicate"],
      ["status", "--verbose"],
      ["connect", "--json"],
      ["status", "extra"],
      ["--socket"],
      ["drill", "--sla-ms", "abc"],
      ["drill", "--sla-ms", "0"],
      ["drill", "--sla-ms", "10001"],
      ["status", "--sla-ms", "5"],
    ]) {
      const r = await detour(...args);
      assert.equal(r.code, 2, `detour ${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^detour: .+\nusage: detour /, args.join(" "));
      assert.equal(r.stdout, "");
    }
  });
});
