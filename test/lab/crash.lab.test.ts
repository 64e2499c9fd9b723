/**
 * Crash recovery with the real daemon and engines: detourd is SIGKILLed in each phase of its life (resolving,
 * racing with several engines starting, connected with a standby and a spare, failing over, disconnected under
 * lockdown), started again, and stopped cleanly. The client namespace must then be exactly as it was before
 * detourd first started: processes, links, addresses, rules and routes in every table (both families), nftables
 * tables, resolv.conf and wireguard-go sockets. What the second detourd found it reclaimed by its ownership record.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentPaths, agentRunning, agentStart, agentStop } from "./agent.ts";
import { waitFor } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";
import { watchKillSwitchTable } from "./kill-switch-watch.ts";

const ID = "crash";
/** A healthy lab connects and raises its standby within a second or two; 20 s bounds a loaded, shared machine. */
const CONNECT_WITHIN_MS = 20_000;
/** A phase that the test waits for (racing, failing over) starts within a few seconds of its cause. */
const PHASE_WITHIN_MS = 15_000;
/** The spare wireguard-go is prepared about a second after the connect settles. */
const SPARE_WITHIN_MS = 15_000;
/** Polling fast enough to catch short phases (a race lasts a few hundred milliseconds). */
const FAST_POLL_MS = 10;
/** A killed engine's TUN device goes with its process; the kernel needs only moments. */
const SETTLE_MS = 300;

let client: ControlClient | null = null;
let baseConfig = "";

function ns(): string {
  return lab.topologyOf(ID).client.ns;
}

function inNs(argv: string[]): string {
  const r = spawnSync("ip", ["netns", "exec", ns(), ...argv], { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed: ${r.stderr}`);
  return r.stdout;
}

/** Everything detourd may touch in the client namespace, in a form that compares equal when nothing changed. */
interface Snapshot {
  processes: string[];
  links: string[];
  addresses: string[];
  rules4: string[];
  rules6: string[];
  routes4: string[];
  routes6: string[];
  nftTables: string[];
  resolvConf: string[];
  wgSockets: string[];
}

function snapshotClient(): Snapshot {
  const pids = inNs(["ip", "netns", "pids", ns()])
    .split("\n")
    .filter((l) => l.trim() !== "");
  const processes = pids
    .map((p) => {
      try {
        return readFileSync(`/proc/${p.trim()}/cmdline`, "utf8").replace(/\0/g, " ").trim();
      } catch {
        return "";
      }
    })
    .filter((c) => c !== "" && !c.startsWith("ip netns pids"))
    .sort();
  const lines = (out: string): string[] =>
    out
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "")
      .sort();
  // Interface indexes grow with every device created: names, flags and addresses are what matter.
  const links = lines(inNs(["ip", "-o", "link", "show"])).map((l) =>
    l.replace(/^\d+:\s*/, "").replace(/\\\s+link\/.*$/, ""),
  );
  const addresses = lines(inNs(["ip", "-o", "addr", "show"])).map((l) =>
    l.replace(/^\d+:\s*/, "").replace(/\\\s+valid_lft.*$/, ""),
  );
  const wgSockets = readdirSafe("/run/wireguard").filter((f) => f.startsWith(`d${ID}-`));
  return {
    processes,
    links,
    addresses,
    rules4: lines(inNs(["ip", "-4", "rule", "show"])),
    rules6: lines(inNs(["ip", "-6", "rule", "show"])),
    routes4: lines(inNs(["ip", "-4", "route", "show", "table", "all"])),
    routes6: lines(inNs(["ip", "-6", "route", "show", "table", "all"])),
    nftTables: lines(inNs(["nft", "list", "tables"])),
    resolvConf: [readFileSync(`/etc/netns/${ns()}/resolv.conf`, "utf8")],
    wgSockets,
  };
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Engine processes (wireguard-go, charon, openconnect) in the client namespace. */
function engines(): string[] {
  return snapshotClient().processes.filter((c) => /wireguard-go|charon|openconnect/.test(c));
}

function writeConfig(change: (c: Record<string, unknown>) => void): void {
  const cfg = JSON.parse(baseConfig) as Record<string, unknown>;
  change(cfg);
  writeFileSync(lab.loadState(ID).clientConfig, JSON.stringify(cfg, null, 2));
}

async function start(): Promise<ControlClient> {
  // A killed detourd leaves its socket file: the lab's readiness check would pass on it at once.
  rmSync(agentPaths(ID).socket, { force: true });
  const a = await agentStart(ID);
  client = await waitFor(
    "detourd's control socket to answer",
    () => ControlClient.connect(a.socket, { timeoutMs: 5000 }).catch(() => false as const),
    {
      timeoutMs: 20_000,
      intervalMs: 100,
    },
  );
  return client;
}

/** SIGKILL: no shutdown path runs, nothing is cleaned. */
async function sigkill(): Promise<void> {
  client?.close();
  client = null;
  const running = agentRunning(ID);
  assert.ok(running !== null, "detourd runs when the test kills it");
  process.kill(running.pid, "SIGKILL");
  for (let i = 0; i < 100 && agentRunning(ID) !== null; i++) await sleep(20);
  await sleep(SETTLE_MS);
}

/**
 * Starts detourd again after the crash, waits until it settled (it resumes a connection the user had asked for,
 * "connected"; else "disconnected"), and stops it cleanly (SIGTERM).
 */
async function restartAndStop(
  settled: "connected" | "disconnected" = "connected",
  whileStarting?: { stop(): Promise<number[]> },
): Promise<string> {
  const c = await start();
  await waitForStatus(
    c,
    `the restarted detourd to settle ${settled}`,
    (s) => s.state === settled,
    settled === "connected" ? CONNECT_WITHIN_MS : PHASE_WITHIN_MS,
  );
  const gaps = await whileStarting?.stop();
  if (gaps !== undefined)
    assert.deepEqual(
      gaps.slice(0, 5),
      [],
      `the kill switch held from the crash until the resumed tunnel was up (missing at ms ${gaps.join(", ")})\n${agentLogs(ID, 30)}`,
    );
  // The new detourd prepares its own spare wireguard-go: the name a killed one held must be free again.
  let spare = false;
  for (let i = 0; i < SPARE_WITHIN_MS / 100 && !spare; i++) {
    spare = snapshotClient().links.some((l) => l.startsWith(`d${ID}-s`));
    if (!spare) await sleep(100);
  }
  assert.ok(spare, `the restarted detourd prepared its own spare\n${agentLogs(ID, 30)}`);
  const reclaimed = agentLogs(ID, 200)
    .split("\n")
    .filter((l) => l.includes("reclaim"));
  console.log(reclaimed.at(-1) ?? "nothing reclaimed");
  client?.close();
  client = null;
  await agentStop(ID);
  await sleep(SETTLE_MS);
  return reclaimed.at(-1) ?? "";
}

function assertSameAs(
  before: Snapshot,
  what: string,
  ignore: (key: string, line: string) => boolean = () => false,
): void {
  const now = snapshotClient();
  const diffs: string[] = [];
  for (const key of Object.keys(before) as (keyof Snapshot)[]) {
    const b = before[key].filter((l) => !ignore(key, l));
    const a = now[key].filter((l) => !ignore(key, l));
    const extra = a.filter((l) => !b.includes(l));
    const missing = b.filter((l) => !a.includes(l));
    for (const l of extra) diffs.push(`${key}: left behind: ${l}`);
    for (const l of missing) diffs.push(`${key}: gone: ${l}`);
  }
  assert.deepEqual(
    diffs,
    [],
    `${what}: the client namespace differs from before detourd started\n${agentLogs(ID, 40)}`,
  );
}

let pristine: Snapshot | null = null;

function base(): Snapshot {
  assert.ok(pristine !== null, "the namespace was recorded before detourd started");
  return pristine;
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  baseConfig = readFileSync(lab.loadState(ID).clientConfig, "utf8");
  pristine = snapshotClient();
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await lab.down(ID);
});

test("sigkill-while-resolving-leaves-nothing-after-a-restart", { timeout: 120_000 }, async () => {
  writeConfig(() => undefined);
  const c = await start();
  void c.connect().catch(() => undefined);
  await waitForStatus(c, "resolving or later", (s) => s.state !== "disconnected", PHASE_WITHIN_MS, {
    pollMs: FAST_POLL_MS,
  });
  await sigkill();
  await restartAndStop();
  assertSameAs(base(), "killed while resolving");
});

test("sigkill-while-racing-several-engines-leaves-nothing-after-a-restart", { timeout: 120_000 }, async () => {
  writeConfig(() => undefined);
  // Every gateway silent: each leg's engine starts and waits for its handshake, so the race holds several at once.
  const blocks = [];
  for (const gw of ["gw1", "gw2", "gw3"] as const)
    blocks.push(await lab.impair({ kind: "block", target: gw, proto: "all", dir: "both" }, ID));
  try {
    const c = await start();
    void c.connect().catch(() => undefined);
    await waitForStatus(c, "racing", (s) => s.state === "racing", PHASE_WITHIN_MS, { pollMs: FAST_POLL_MS });
    for (let i = 0; i < PHASE_WITHIN_MS / 50 && engines().length < 2; i++) await sleep(50);
    const running = engines();
    console.log(`engines starting when killed: ${running.join(" | ")}`);
    assert.ok(running.length >= 2, `several engines start while racing (saw ${running.length})`);
    await sigkill();
  } finally {
    for (const b of blocks) await lab.lift(b.id, ID);
  }
  await restartAndStop();
  assertSameAs(base(), "killed while racing");
});

test(
  "sigkill-while-connected-with-a-standby-and-a-spare-leaves-nothing-after-a-restart",
  { timeout: 120_000 },
  async () => {
    writeConfig(() => undefined);
    const c = await start();
    await c.connect();
    await waitForStatus(
      c,
      "connected with a standby",
      (s) => s.state === "connected" && s.standby !== null,
      CONNECT_WITHIN_MS,
    );
    for (let i = 0; i < SPARE_WITHIN_MS / 100 && !snapshotClient().links.some((l) => l.includes(`d${ID}-s`)); i++)
      await sleep(100);
    const s = snapshotClient();
    assert.ok(
      s.links.some((l) => l.includes(`d${ID}-s`)),
      `a spare device is up when detourd is killed: ${s.links.join(" | ")}`,
    );
    assert.ok(
      s.nftTables.some((t) => t.includes("detour_killswitch")),
      "the kill switch is in force",
    );
    assert.ok(s.resolvConf[0] !== base().resolvConf[0], "the tunnel's resolv.conf is in force");
    const table = watchKillSwitchTable(ns());
    await sigkill();
    const reclaimed = await restartAndStop("connected", table);
    // The killed detourd's firewall watcher (nft monitor) is in its ownership record and stopped by the successor
    // before anything else changes the ruleset (which would also end it, by a broken pipe).
    assert.match(reclaimed, /\bnft \d+/, "the killed detourd's nft monitor is reclaimed");
    assertSameAs(base(), "killed while connected with a standby and a spare");
  },
);

test("sigkill-while-failing-over-leaves-nothing-after-a-restart", { timeout: 150_000 }, async () => {
  writeConfig(() => undefined);
  const c = await start();
  await c.connect();
  const s0: Status = await waitForStatus(
    c,
    "connected with a standby",
    (s) => s.state === "connected" && s.standby !== null,
    CONNECT_WITHIN_MS,
  );
  // Both the active gateway and the standby's die: the failover has to race to the third.
  const dead = [s0.gateway ?? "gw1", s0.standby?.gateway ?? "gw2"];
  const blocks = [];
  for (const gw of dead)
    blocks.push(await lab.impair({ kind: "block", target: gw as "gw1", proto: "all", dir: "both" }, ID));
  try {
    await waitForStatus(c, "failing over", (s) => s.state === "failing-over", PHASE_WITHIN_MS, {
      pollMs: FAST_POLL_MS,
    });
    await sigkill();
  } finally {
    for (const b of blocks) await lab.lift(b.id, ID);
  }
  await restartAndStop();
  assertSameAs(base(), "killed while failing over");
});

test(
  "sigkill-while-disconnected-under-lockdown-keeps-blocking-and-leaves-nothing-else-after-a-restart",
  { timeout: 120_000 },
  async () => {
    writeConfig((cfg) => {
      cfg.lockdown = true;
    });
    const c = await start();
    await c.connect();
    await waitForStatus(c, "connected", (s) => s.state === "connected", CONNECT_WITHIN_MS);
    await c.disconnect();
    await waitForStatus(c, "disconnected", (s) => s.state === "disconnected", PHASE_WITHIN_MS);
    assert.ok(
      snapshotClient().nftTables.some((t) => t.includes("detour_killswitch")),
      "lockdown blocks",
    );
    await sigkill();
    await restartAndStop("disconnected");
    // Under lockdown a clean stop keeps the kill switch: its table and its routing backstop (rule 230, table 5001,
    // see kill-switch-enforcer.ts) are the promise, everything else must be gone.
    const now = snapshotClient();
    assert.ok(
      now.rules4.some((l) => /^230:\s.*lookup 5001/.test(l)),
      "the routing backstop stays under lockdown",
    );
    assert.ok(
      now.nftTables.some((t) => t.includes("detour_killswitch")),
      "the kill switch stays under lockdown",
    );
    assertSameAs(
      base(),
      "killed while disconnected under lockdown",
      (key, l) =>
        (key === "nftTables" && l.includes("detour_killswitch")) ||
        (key === "rules4" && /^230:\s.*lookup 5001/.test(l)) ||
        (key === "routes4" && l.endsWith("table 5001")),
    );
    inNs(["nft", "delete", "table", "inet", "detour_killswitch"]);
    inNs(["ip", "-4", "rule", "del", "pref", "230"]);
    inNs(["ip", "-4", "route", "flush", "table", "5001"]);
    writeConfig(() => undefined);
  },
);
