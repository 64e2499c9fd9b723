/**
 * `npm run bench -- footprint [--window-s N]`: what detourd costs the laptop while connected, idle and under a
 * steady user stream, with its engines' and helpers' cost beside it. detourd runs from its esbuild bundle (what
 * ships) with the unit's memory settings, telemetry on (the lab's collector). Each window reads /proc before and
 * after: CPU ticks, voluntary context switches over every thread (a wake-up each), RSS; and the tunnel devices'
 * byte counters (idle, that is detourd's probes and the engines' keepalives). Medians over the windows (`--runs N`,
 * one window per run and scenario); and detourd's start-up (spawn to its control socket open) from its bundle
 * and through tsx, one start each per run. Table in bench-out/footprint.md, pure half in footprint-report.ts.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { ControlClient } from "../../main/client/control-client.ts";
import { ACTIVITY_HOLD_MS } from "../../main/core/connection/pace.ts";
import { agentStart, agentStop } from "../lab/agent.ts";
import { daemonBundle } from "../lab/daemon-bundle.ts";
import { runOk } from "../lab/exec.ts";
import * as lab from "../lab/lab.ts";
import { ProbeClient } from "../lab/probe-client.ts";
import { CORP_ECHO_PORT } from "../lab/topology.ts";
import { waitState } from "./connect.ts";
import {
  bytesPerSecond,
  footprintMarkdown,
  statTicks,
  statusField,
  windowCost,
  type DaemonRuntime,
  type FootprintRow,
  type FootprintScenario,
  type StartupTimes,
  type ProcReading,
} from "./footprint-report.ts";

const ID = "jfoot";
const CONNECT_WITHIN_MS = 30_000;
/** After connecting: the standby up, a first telemetry export sent, start-up work (JIT) done. */
const SETTLE_MS = 20_000;
/** The user stream: 50 UDP echoes a second to corp through the tunnel (a call's worth of small packets). */
const STREAM_RATE = 50;
/** The stream starts this long before its window, so the window sees it steady. */
const STREAM_LEAD_MS = 2000;
const DEFAULT_WINDOW_S = 60;
/**
 * An idle window starts this long after the last user packet (a stream window's end): the probes' fast pace holds
 * ACTIVITY_HOLD_MS after traffic (core/connection/pace.ts), so idle is measured once the tunnel really is idle.
 */
const IDLE_AFTER_TRAFFIC_MS = ACTIVITY_HOLD_MS + 2000;

function parseOptions(options: readonly string[]): { windowMs: number } {
  const { values } = parseArgs({ args: [...options], strict: true, options: { "window-s": { type: "string" } } });
  const s = Number(values["window-s"] ?? DEFAULT_WINDOW_S);
  if (!Number.isInteger(s) || s < 5 || s > 600)
    throw new Error(`footprint: --window-s needs whole seconds 5-600, got "${String(values["window-s"])}"`);
  return { windowMs: s * 1000 };
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null; // the process or thread ended between listing and reading
  }
}

/** One process's counters, its threads' context switches summed; null once it is gone. */
function readProc(pid: number): ProcReading | null {
  const stat = readText(`/proc/${String(pid)}/stat`);
  const status = readText(`/proc/${String(pid)}/status`);
  if (stat === null || status === null) return null;
  let voluntary = 0;
  const tasks = existsSync(`/proc/${String(pid)}/task`) ? readdirSync(`/proc/${String(pid)}/task`) : [];
  for (const t of tasks) {
    const ts = readText(`/proc/${String(pid)}/task/${t}/status`);
    if (ts !== null) voluntary += statusField(ts, "voluntary_ctxt_switches") ?? 0;
  }
  return { ticks: statTicks(stat), voluntary, rssKiB: statusField(status, "VmRSS") ?? 0 };
}

/** Every process below `root` (its engines and their helpers), from the parent ids in /proc. */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const stat = readText(`/proc/${name}/stat`);
    if (stat === null) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const queue = [...(children.get(root) ?? [])];
  // Bounded: a process tree has far fewer members than this.
  for (let i = 0; i < 10_000 && queue.length > 0; i++) {
    const pid = queue.shift();
    if (pid === undefined) break;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

function readGroup(pids: readonly number[]): Map<number, ProcReading> {
  const m = new Map<number, ProcReading>();
  for (const pid of pids) {
    const r = readProc(pid);
    if (r !== null) m.set(pid, r);
  }
  return m;
}

/** Bytes through every tunnel device of this lab's detourd (named d<lab id>-...), summed. */
async function tunnelBytes(ns: string): Promise<{ rx: number; tx: number }> {
  const out = await runOk("ip", ["-n", ns, "-j", "-s", "link", "show"]);
  const links = JSON.parse(out) as { ifname: string; stats64?: { rx?: { bytes: number }; tx?: { bytes: number } } }[];
  let rx = 0;
  let tx = 0;
  for (const l of links) {
    if (!l.ifname.startsWith(`d${ID}-`)) continue;
    rx += l.stats64?.rx?.bytes ?? 0;
    tx += l.stats64?.tx?.bytes ?? 0;
  }
  return { rx, tx };
}

/** The bench's own counters of in-tunnel probe bytes (to and from the probe target's port, through any tunnel). */
const PROBE_COUNT_TABLE = "detour_bench_probe_bytes";

function probeCountTable(): string {
  const devs = [`d${ID}-*`, "ipsec*"];
  const rules = (dir: "out" | "in"): string[] =>
    devs.map((d) =>
      dir === "out"
        ? `\t\toifname "${d}" udp dport ${String(CORP_ECHO_PORT)} counter comment "out"`
        : `\t\tiifname "${d}" udp sport ${String(CORP_ECHO_PORT)} counter comment "in"`,
    );
  return [
    `table inet ${PROBE_COUNT_TABLE} {`,
    "\tchain out {",
    "\t\ttype filter hook output priority -10; policy accept;",
    ...rules("out"),
    "\t}",
    "\tchain in {",
    "\t\ttype filter hook input priority -10; policy accept;",
    ...rules("in"),
    "\t}",
    "}",
    "",
  ].join("\n");
}

/** Probe bytes so far, each way, from the counting table. */
async function probeBytes(ns: string): Promise<{ rx: number; tx: number }> {
  const out = await runOk("ip", ["netns", "exec", ns, "nft", "-j", "list", "table", "inet", PROBE_COUNT_TABLE]);
  const items = (JSON.parse(out) as { nftables: { rule?: { comment?: string; expr: unknown[] } }[] }).nftables;
  let rx = 0;
  let tx = 0;
  for (const it of items) {
    const r = it.rule;
    if (r === undefined) continue;
    for (const e of r.expr as { counter?: { bytes: number } }[]) {
      if (e.counter === undefined) continue;
      if (r.comment === "in") rx += e.counter.bytes;
      else if (r.comment === "out") tx += e.counter.bytes;
    }
  }
  return { rx, tx };
}

/**
 * The lab's client configuration with the product's own telemetry and reachability intervals (the lab shortens
 * them for its tests), written beside it: what a laptop runs.
 */
function shippedConfig(id: string): string {
  const path = lab.loadState(id).clientConfig;
  const c = JSON.parse(readFileSync(path, "utf8")) as {
    telemetry?: { intervalMs?: number; reachability?: { intervalMs?: number }[] };
  };
  if (c.telemetry !== undefined) {
    delete c.telemetry.intervalMs;
    for (const r of c.telemetry.reachability ?? []) delete r.intervalMs;
  }
  const out = join(dirname(path), "footprint-shipped.json");
  writeFileSync(out, JSON.stringify(c, null, 2), { mode: 0o600 });
  return out;
}

/** The same with idle pacing off: every probe at the fast pace, as detourd did before issue 17. */
function fixedPaceConfig(shipped: string): string {
  const c = JSON.parse(readFileSync(shipped, "utf8")) as {
    health?: Record<string, unknown>;
    standby?: Record<string, unknown>;
  };
  c.health = { ...c.health, idleProbeIntervalMs: null };
  c.standby = { ...c.standby, idleProbeIntervalMs: null };
  const out = join(dirname(shipped), "footprint-fixed-pace.json");
  writeFileSync(out, JSON.stringify(c, null, 2), { mode: 0o600 });
  return out;
}

export async function benchFootprint(
  runs: number,
  options: readonly string[],
): Promise<{ rows: FootprintRow[]; markdown: string }> {
  const { windowMs } = parseOptions(options);
  const rows: FootprintRow[] = [];
  const row = (scenario: FootprintScenario, group: FootprintRow["group"]): FootprintRow => {
    let r = rows.find((x) => x.scenario === scenario && x.group === group);
    if (r === undefined) {
      r = { scenario, group, windows: [], tunnel: [] };
      rows.push(r);
    }
    return r;
  };
  await lab.down(ID);
  await lab.up(ID, { distance: "none" });
  const topo = lab.topologyOf(ID);
  await runOk("ip", ["netns", "exec", topo.client.ns, "nft", "-f", "-"], { input: probeCountTable() });
  let client: ControlClient | null = null;
  let probe: ProbeClient | null = null;
  const startup: StartupTimes = {};
  try {
    const bundle = (await daemonBundle()).detourd;
    // Start-up first, disconnected: spawn to the control socket answering, alternating the runtimes so both see
    // the same machine (agentStart returns once the socket exists; it polls every few milliseconds).
    for (let i = 0; i < runs; i++) {
      for (const runtime of ["bundle", "tsx"] as DaemonRuntime[]) {
        const t0 = performance.now();
        await agentStart(ID, runtime === "bundle" ? { bundle } : { tsx: true });
        (startup[runtime] ??= []).push(performance.now() - t0);
        await agentStop(ID);
      }
    }
    // As shipped: the lab's configuration with the product's telemetry and reachability intervals (the lab's own
    // are shortened for its tests). Before: the same with the probes' fixed fast pace (idle pacing off).
    const shipped = shippedConfig(ID);
    for (const variant of [
      { config: shipped, scenarios: ["idle", "stream"] as FootprintScenario[] },
      { config: fixedPaceConfig(shipped), scenarios: ["idle-fixed-pace"] as FootprintScenario[] },
    ]) {
      const a = await agentStart(ID, { connect: true, bundle, config: variant.config });
      client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
      const up = await waitState(client, (s) => s.state === "connected", CONNECT_WITHIN_MS);
      if (up === null) throw new Error("footprint: detourd did not connect");
      probe ??= await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
      await sleep(SETTLE_MS);
      for (let i = 0; i < runs; i++) {
        for (const scenario of variant.scenarios) {
          console.error(`footprint: ${scenario} window ${String(i + 1)} of ${String(runs)}`);
          const stream =
            scenario === "stream"
              ? probe.stream({
                  host: topo.corp.address,
                  port: CORP_ECHO_PORT,
                  ratePerSec: STREAM_RATE,
                  durationMs: windowMs + 2 * STREAM_LEAD_MS,
                })
              : null;
          if (stream !== null) await sleep(STREAM_LEAD_MS);
          else if (i > 0) await sleep(IDLE_AFTER_TRAFFIC_MS);
          const engines = descendants(a.pid);
          const d0 = readGroup([a.pid]);
          const e0 = readGroup(engines);
          const b0 = await tunnelBytes(topo.client.ns);
          const p0 = await probeBytes(topo.client.ns);
          const t0 = Date.now();
          await sleep(windowMs);
          const d1 = readGroup([a.pid]);
          const e1 = readGroup(engines);
          const b1 = await tunnelBytes(topo.client.ns);
          const p1 = await probeBytes(topo.client.ns);
          const ms = Date.now() - t0;
          const st = await client.status();
          if (stream !== null) await stream;
          if (st.state !== "connected") {
            console.error(
              `footprint: ${scenario} window ${String(i + 1)} left out: detourd was ${st.state} at its end`,
            );
            continue;
          }
          const dr = row(scenario, "detourd");
          dr.windows.push(windowCost(d0, d1, ms));
          dr.tunnel.push(bytesPerSecond(b0, b1, ms));
          if (stream === null) (dr.probe ??= []).push(bytesPerSecond(p0, p1, ms));
          row(scenario, "engines").windows.push(windowCost(e0, e1, ms));
        }
      }
      client.close();
      client = null;
      await agentStop(ID);
    }
  } finally {
    await runOk("ip", ["netns", "exec", topo.client.ns, "nft", "delete", "table", "inet", PROBE_COUNT_TABLE]).catch(
      () => undefined,
    );
    client?.close();
    await probe?.close().catch(() => undefined);
    await agentStop(ID);
    await lab.down(ID);
  }
  const notes = [
    `Lab at 0 ms RTT, 3 gateways, the lab's configuration (standby on, telemetry to the lab's collector). detourd from its esbuild bundle on plain node with the unit's settings; one ${String(windowMs / 1000)} s window per run and scenario, ${String(SETTLE_MS / 1000)} s after connecting.`,
    `idle: no user traffic; stream: ${String(STREAM_RATE)} UDP echoes a second to corp through the tunnel. Wake-ups are voluntary context switches summed over every thread (each is a thread going back to sleep). Tunnel bytes count every detourd tunnel (active and standby): idle, that is the in-tunnel probes and the engines' keepalives. Engines and helpers: every process below detourd (wireguard-go, charon, openconnect, ip and nft monitors). Medians (min-max) over the windows.`,
  ].join("\n\n");
  return { rows, markdown: footprintMarkdown(rows, notes, startup) };
}
