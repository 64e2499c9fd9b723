/** Lab scenarios for delayq: real pings between two network namespaces, delayed through NFQUEUE (needs root). */
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { access, constants } from "node:fs/promises";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { TestContext } from "node:test";
import { delayqArgv, ensureDelayqBinary } from "./delayq.ts";

const execFileAsync = promisify(execFile);

const NS_A = "detour-dqt-a";
const NS_B = "detour-dqt-b";
const VETH_A = "dqt-a0";
const VETH_B = "dqt-b0";
const ADDR_A = "198.18.250.1";
const ADDR_B = "198.18.250.2";
const QUEUE = 7;

const PING_COUNT = 20;
/** 50 ms between pings: 20 pings in about a second, sparse enough that each RTT is the delay, not a backlog. */
const PING_INTERVAL = "0.05";
/**
 * Longest ping waits for a reply, including the last one after the final send (s): far above the 140 ms worst case
 * with jitter, so a ping counted lost really was lost. No `-w`: with it ping keeps sending until it has 20 replies.
 */
const PING_REPLY_WAIT_S = 2;
/** Kills a ping that hangs: 20 pings at 50 ms plus the reply wait take about 3 s at most. */
const PING_TIMEOUT_MS = 15_000;
/** ip and iptables finish in milliseconds; 5 s only catches a hung command. */
const COMMAND_TIMEOUT_MS = 5_000;
/** delayq binds its queue within milliseconds of starting. */
const READY_TIMEOUT_MS = 3_000;
/** On SIGTERM delayq accepts what it holds and unbinds at once; after this it gets SIGKILL. */
const STOP_TIMEOUT_MS = 3_000;
/** How long the underlay may take to answer its first ping after the veth comes up. */
const UNDERLAY_TIMEOUT_MS = 5_000;
/** Into the 1 s ping run, so packets are held in delayq when it is told to stop. */
const STOP_DURING_PING_AFTER_MS = 500;
/** Whole-scenario bound: each scenario is about 1.5 s of pinging. */
const SCENARIO_TIMEOUT_MS = 30_000;
/** Setup includes compiling delayq when the binary is stale. */
const SETUP_TIMEOUT_MS = 90_000;

interface PingResult {
  sent: number;
  received: number;
  /** RTTs in ms, in the order the replies arrived. */
  rtts: number[];
  seqs: number[];
  avg: number;
}

interface Delayq {
  pid: number;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

let binary = "";
let running: Delayq | undefined;
let namespacesTouched = false;

async function onPath(name: string): Promise<boolean> {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    try {
      await access(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Fails (never skips) with the full list of what this machine lacks. */
async function preflight(): Promise<void> {
  const missing: string[] = [];
  if (process.getuid?.() !== 0) missing.push("root (network namespaces and iptables need it)");
  const tools: [string, string][] = [
    ["ip", "iproute2"],
    ["iptables", "iptables"],
    ["ping", "iputils-ping"],
    ["cc", "gcc"],
  ];
  for (const [tool, pkg] of tools) {
    if (!(await onPath(tool))) missing.push(`${tool} (package ${pkg})`);
  }
  if (missing.length > 0) throw new Error(`delayq lab test cannot run; missing: ${missing.join(", ")}`);
}

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { timeout: COMMAND_TIMEOUT_MS, encoding: "utf8" });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr;
    const detail = typeof stderr === "string" && stderr.trim() !== "" ? stderr.trim() : String(err);
    throw new Error(`${cmd} ${args.join(" ")} failed: ${detail}`, { cause: err });
  }
}

/** Deletes a namespace left by an earlier run, first killing (by PID) anything still running inside it. */
async function deleteNamespace(ns: string): Promise<void> {
  const list = await run("ip", ["netns", "list"]);
  if (!list.split("\n").some((line) => line.split(" ")[0] === ns)) return;
  const pids = (await run("ip", ["netns", "pids", ns])).split(/\s+/).filter((p) => p !== "");
  for (const pid of pids) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
    }
  }
  await run("ip", ["netns", "del", ns]);
}

async function createLab(): Promise<void> {
  namespacesTouched = true;
  await deleteNamespace(NS_A);
  await deleteNamespace(NS_B);
  for (const ns of [NS_A, NS_B]) {
    await run("ip", ["netns", "add", ns]);
    await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
  }
  // The veth pair is created directly between the two namespaces and never exists in the root namespace.
  await run("ip", ["-n", NS_A, "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns", NS_B]);
  await run("ip", ["-n", NS_A, "addr", "add", `${ADDR_A}/24`, "dev", VETH_A]);
  await run("ip", ["-n", NS_B, "addr", "add", `${ADDR_B}/24`, "dev", VETH_B]);
  await run("ip", ["-n", NS_A, "link", "set", VETH_A, "up"]);
  await run("ip", ["-n", NS_B, "link", "set", VETH_B, "up"]);
  const nfqueue = ["-j", "NFQUEUE", "--queue-num", String(QUEUE), "--queue-bypass"];
  await run("ip", ["netns", "exec", NS_B, "iptables", "-t", "mangle", "-A", "INPUT", "-i", VETH_B, ...nfqueue]);
  await run("ip", ["netns", "exec", NS_B, "iptables", "-t", "mangle", "-A", "OUTPUT", "-o", VETH_B, ...nfqueue]);
}

async function waitForUnderlay(): Promise<void> {
  const deadline = Date.now() + UNDERLAY_TIMEOUT_MS;
  for (;;) {
    try {
      await run("ip", ["netns", "exec", NS_A, "ping", "-n", "-c", "1", "-W", "1", ADDR_B]);
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`underlay ${ADDR_A} -> ${ADDR_B} did not answer`, { cause: err });
      await sleep(100);
    }
  }
}

function parsePing(output: string): PingResult {
  const rtts: number[] = [];
  const seqs: number[] = [];
  for (const m of output.matchAll(/icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms(?! \(DUP!\))/g)) {
    seqs.push(Number(m[1]));
    rtts.push(Number(m[2]));
  }
  const summary = /(\d+) packets transmitted, (\d+) received/.exec(output);
  if (summary === null) throw new Error(`no ping summary in output:\n${output}`);
  const avg = rtts.length === 0 ? Number.NaN : rtts.reduce((a, b) => a + b, 0) / rtts.length;
  return { sent: Number(summary[1]), received: Number(summary[2]), rtts, seqs, avg };
}

/** Exactly 20 pings from A to B at 50 ms intervals; a partly lost run is a result, not an error. */
async function ping(): Promise<PingResult> {
  const args = ["netns", "exec", NS_A, "ping", "-n", "-c", String(PING_COUNT), "-i", PING_INTERVAL];
  args.push("-W", String(PING_REPLY_WAIT_S), ADDR_B);
  try {
    const { stdout } = await execFileAsync("ip", args, { timeout: PING_TIMEOUT_MS, encoding: "utf8" });
    return parsePing(stdout);
  } catch (err) {
    const e = err as { code?: unknown; stdout?: unknown; stderr?: unknown };
    if (e.code === 1 && typeof e.stdout === "string") return parsePing(e.stdout);
    throw new Error(`ping ${ADDR_B} from ${NS_A} failed: ${String(e.stderr ?? err)}`, { cause: err });
  }
}

function describePing(r: PingResult): string {
  const min = Math.min(...r.rtts);
  const max = Math.max(...r.rtts);
  return `${r.received}/${r.sent} replies, RTT min ${min} avg ${r.avg.toFixed(1)} max ${max} ms`;
}

/** Starts delayq inside NS_B and waits (bounded) for its ready line. */
async function startDelayq(delayMs: number, jitterMs: number): Promise<Delayq> {
  if (running !== undefined) await stopDelayq(running); // only one program can bind the queue
  // `ip netns exec` execs the command, so the child's PID is delayq's own.
  const child = spawn("ip", ["netns", "exec", NS_B, ...delayqArgv(binary, QUEUE, delayMs, jitterMs)], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      resolve({ code, signal });
    });
  });
  const spawnError = new Promise<never>((_, reject) => {
    child.once("error", reject);
  });
  spawnError.catch(() => undefined);
  const pid = child.pid;
  if (pid === undefined) return await spawnError;
  const dq: Delayq = { pid, child, exited, stderr: () => stderr };
  running = dq;

  const readyLine = `delayq: queue ${QUEUE} delay ${delayMs} jitter ${jitterMs} ready`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (!stderr.includes(readyLine)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`delayq exited before it was ready:\n${stderr}`);
    }
    if (Date.now() > deadline)
      throw new Error(`delayq printed no ready line within ${READY_TIMEOUT_MS} ms:\n${stderr}`);
    await sleep(10);
  }
  return dq;
}

async function exitWithin(
  dq: Delayq,
  ms: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  const timer = sleep(ms, undefined, { ref: false });
  return Promise.race([dq.exited, timer]);
}

/** Stops delayq with SIGTERM by PID, then SIGKILL if it does not exit in time; returns how it exited. */
async function stopDelayq(dq: Delayq): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (running === dq) running = undefined;
  if (dq.child.exitCode === null && dq.child.signalCode === null) process.kill(dq.pid, "SIGTERM");
  const result = await exitWithin(dq, STOP_TIMEOUT_MS);
  if (result !== undefined) return result;
  process.kill(dq.pid, "SIGKILL");
  const killed = await exitWithin(dq, STOP_TIMEOUT_MS);
  throw new Error(
    `delayq (pid ${dq.pid}) ignored SIGTERM for ${STOP_TIMEOUT_MS} ms; SIGKILL ${killed ? "worked" : "failed"}`,
  );
}

void describe("delayq in network namespaces", () => {
  before(
    async () => {
      await preflight();
      binary = await ensureDelayqBinary();
      await createLab();
      await waitForUnderlay();
    },
    { timeout: SETUP_TIMEOUT_MS },
  );

  after(
    async () => {
      const errors: unknown[] = [];
      if (running !== undefined) {
        try {
          await stopDelayq(running);
        } catch (err) {
          errors.push(err);
        }
      }
      if (namespacesTouched) {
        for (const ns of [NS_A, NS_B]) {
          try {
            await deleteNamespace(ns);
          } catch (err) {
            errors.push(err);
          }
        }
      }
      if (errors.length > 0) throw new AggregateError(errors, "delayq lab cleanup failed");
    },
    { timeout: SETUP_TIMEOUT_MS },
  );

  void it("50-ms-each-way-gives-100-ms-rtt", { timeout: SCENARIO_TIMEOUT_MS }, async (t: TestContext) => {
    const dq = await startDelayq(50, 0);
    let result: PingResult;
    try {
      result = await ping();
    } finally {
      const exit = await stopDelayq(dq);
      assert.deepEqual(exit, { code: 0, signal: null }, `delayq did not exit cleanly:\n${dq.stderr()}`);
    }
    t.diagnostic(describePing(result));
    assert.ok(result.sent === PING_COUNT && result.received === PING_COUNT, `lost pings: ${describePing(result)}`);
    assert.ok(result.avg >= 90 && result.avg <= 130, `average RTT outside 90-130 ms: ${describePing(result)}`);
    assert.ok(Math.min(...result.rtts) >= 90, `a packet was released early: ${describePing(result)}`);
  });

  void it(
    "20-ms-jitter-keeps-rtt-100-150-ms-without-loss-or-reordering",
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t: TestContext) => {
      const dq = await startDelayq(50, 20);
      let result: PingResult;
      try {
        result = await ping();
      } finally {
        const exit = await stopDelayq(dq);
        assert.deepEqual(exit, { code: 0, signal: null }, `delayq did not exit cleanly:\n${dq.stderr()}`);
      }
      t.diagnostic(describePing(result));
      assert.ok(result.sent === PING_COUNT && result.received === PING_COUNT, `lost pings: ${describePing(result)}`);
      assert.ok(result.avg >= 100 && result.avg <= 150, `average RTT outside 100-150 ms: ${describePing(result)}`);
      assert.deepEqual(
        result.seqs,
        [...result.seqs].sort((a, b) => a - b),
        "replies arrived out of order",
      );
    },
  );

  void it(
    "sigterm-releases-held-packets-and-bypass-restores-direct-rtt",
    { timeout: SCENARIO_TIMEOUT_MS },
    async (t: TestContext) => {
      const dq = await startDelayq(50, 0);
      const [exit, duringResult] = await Promise.all([
        sleep(STOP_DURING_PING_AFTER_MS).then(() => stopDelayq(dq)),
        ping(),
      ]);
      t.diagnostic(`delayq stopped mid-run: ${dq.stderr().trim().split("\n").at(-1) ?? ""}`);
      t.diagnostic(`ping across the stop: ${describePing(duringResult)}`);
      assert.deepEqual(exit, { code: 0, signal: null }, `delayq did not exit 0 on SIGTERM:\n${dq.stderr()}`);
      assert.ok(
        duringResult.sent === PING_COUNT && duringResult.received === PING_COUNT,
        `pings lost when delayq stopped: ${describePing(duringResult)}`,
      );

      const bypass = await ping();
      t.diagnostic(`after stop (queue-bypass): ${describePing(bypass)}`);
      assert.ok(
        bypass.sent === PING_COUNT && bypass.received === PING_COUNT,
        `lost pings with delayq stopped: ${describePing(bypass)}`,
      );
      assert.ok(bypass.avg < 10, `RTT did not drop below 10 ms once delayq stopped: ${describePing(bypass)}`);
    },
  );
});
