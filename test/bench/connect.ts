/**
 * `npm run bench -- connect failover`: what a user feels, measured on the lab with the real daemon.
 * connect: from `detour connect` to the first corp echo reply, all healthy and with all UDP blocked, next to
 * the fastest single engine alone (plain WireGuard) in the same run. failover: a 50/s probe stream through
 * the tunnel while the active gateway goes silent: the outage and the probes lost. Plus detourd's CPU and RSS.
 */
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "../lab/agent.ts";
import * as lab from "../lab/lab.ts";
import { startPlain } from "../lab/plain/plain-clients.ts";
import { ProbeClient } from "../lab/probe-client.ts";
import { CORP_ECHO_PORT, type LabTopology } from "../lab/topology.ts";
import { fmtMs, fmtSummary, summarize, type Summary } from "./stats.ts";

const ID = "bench";
/** A run that has not reached corp by then failed (counted, not averaged). */
const RUN_DEADLINE_MS = 10_000;
/** The lab's gateways need a moment to drop the previous session's state between runs. */
const SETTLE_MS = 300;
const STREAM_RATE = 50;
/** The stream runs this long before the kill, so the tunnel is steady when the gateway dies. */
const STREAM_LEAD_MS = 1000;
const STREAM_MS = 5000;
const IDLE_MEASURE_MS = 10_000;
const POLL_MS = 50;

export type Status = Awaited<ReturnType<ControlClient["status"]>>;

export async function waitState(
  c: ControlClient,
  pred: (s: Status) => boolean,
  timeoutMs: number,
): Promise<Status | null> {
  const until = Date.now() + timeoutMs;
  for (let i = 0; i < timeoutMs / POLL_MS + 1 && Date.now() < until; i++) {
    const s = await c.status();
    if (pred(s)) return s;
    await sleep(POLL_MS);
  }
  return null;
}

async function firstCorpReply(probe: ProbeClient, topo: LabTopology, t0: number): Promise<number | null> {
  const r = await probe.waitReply({
    host: topo.corp.address,
    port: CORP_ECHO_PORT,
    intervalMs: 5,
    deadlineMs: RUN_DEADLINE_MS,
  });
  return r.ok ? r.firstReplyAt - t0 : null;
}

async function connectRun(c: ControlClient, probe: ProbeClient, topo: LabTopology): Promise<number | null> {
  const t0 = Date.now();
  await c.connect();
  const ms = await firstCorpReply(probe, topo, t0);
  await c.disconnect();
  await waitState(c, (s) => s.state === "disconnected", RUN_DEADLINE_MS);
  await sleep(SETTLE_MS);
  return ms;
}

async function plainRun(probe: ProbeClient, topo: LabTopology, state: lab.LabState): Promise<number | null> {
  const gw = topo.gateways[0];
  if (gw === undefined) return null;
  const t = await startPlain("wireguard", topo, state, gw, "bc");
  try {
    return await firstCorpReply(probe, topo, t.launchedAt);
  } finally {
    await t.stop();
    await sleep(SETTLE_MS);
  }
}

interface FailoverRun {
  outageMs: number;
  lost: number;
  detectedAfterMs: number | null;
  restoredAfterMs: number | null;
}

/**
 * Connects and waits (bounded) for the warm standby a user connected for a moment has; the active gateway and the
 * last failover's detection time before the run, or null when it did not connect.
 */
async function connectWithStandby(c: ControlClient): Promise<{ active: string; failoversBefore: number } | null> {
  await c.connect();
  const up = await waitState(c, (s) => s.state === "connected", RUN_DEADLINE_MS);
  if (up === null || up.gateway === null) return null;
  await waitState(c, (s) => s.standby !== null, RUN_DEADLINE_MS);
  return { active: up.gateway, failoversBefore: up.lastFailover?.detectedAt ?? 0 };
}

async function failoverRun(c: ControlClient, probe: ProbeClient, topo: LabTopology): Promise<FailoverRun | null> {
  const on = await connectWithStandby(c);
  if (on === null) return null;
  const { active, failoversBefore } = on;
  const stream = probe.stream({
    host: topo.corp.address,
    port: CORP_ECHO_PORT,
    ratePerSec: STREAM_RATE,
    durationMs: STREAM_MS,
  });
  await sleep(STREAM_LEAD_MS);
  await lab.kill(active, "all", ID);
  const r = await stream;
  const after = await waitState(
    c,
    (s) => s.state === "connected" && (s.lastFailover?.detectedAt ?? 0) > failoversBefore,
    RUN_DEADLINE_MS,
  );
  await lab.restore(active, "all", ID);
  await c.disconnect();
  await waitState(c, (s) => s.state === "disconnected", RUN_DEADLINE_MS);
  await sleep(SETTLE_MS);
  if (!r.ok) return null;
  const f = after?.lastFailover ?? null;
  return {
    outageMs: r.longestGapMs,
    lost: r.lost,
    detectedAfterMs: f?.detectedAfterMs ?? null,
    restoredAfterMs: f?.restoredAfterMs ?? null,
  };
}

/** How long the tunnel sits idle before the user's first packet, and when in that the active gateway dies. */
const IDLE_MS = 60_000;
const IDLE_DIES_AT_MS = 30_000;

interface IdleDeadRun {
  /** From the user's first packet to its reply (a retry every 50 ms until one is answered). */
  firstReplyMs: number;
  /** Whether detourd had already moved off the dead gateway when the packet went out (found it while idle). */
  movedBefore: boolean;
}

/**
 * A user's first packet after IDLE_MS of silence, toward a gateway that died IDLE_DIES_AT_MS in: the idle pace
 * (core/connection/pace.ts) must have found it, or the packet's own fast probes must, within the dead window.
 */
async function idleDeadRun(c: ControlClient, probe: ProbeClient, topo: LabTopology): Promise<IdleDeadRun | null> {
  const on = await connectWithStandby(c);
  if (on === null) return null;
  const { active, failoversBefore } = on;
  await sleep(IDLE_DIES_AT_MS);
  await lab.kill(active, "all", ID);
  await sleep(IDLE_MS - IDLE_DIES_AT_MS);
  const before = await c.status();
  const r = await probe.waitReply({ host: topo.corp.address, port: CORP_ECHO_PORT, intervalMs: 50, deadlineMs: 5000 });
  await lab.restore(active, "all", ID);
  await c.disconnect();
  await waitState(c, (s) => s.state === "disconnected", RUN_DEADLINE_MS);
  await sleep(SETTLE_MS);
  if (!r.ok) return null;
  return {
    firstReplyMs: r.firstReplyAt - r.startedAt,
    movedBefore: (before.lastFailover?.detectedAt ?? 0) > failoversBefore,
  };
}

/** User + system CPU time of one process, in clock ticks (1/100 s on Linux). */
export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]);
}

export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m === null ? NaN : Number(m[1]);
}

interface Daemon {
  client: ControlClient;
  pid: number;
  /** A fresh detourd that has never seen this network (no per-network memory). */
  restartForgetting(): Promise<void>;
}

async function withDaemon<T>(
  body: (d: Daemon, probe: ProbeClient, topo: LabTopology, state: lab.LabState) => Promise<T>,
): Promise<T> {
  await lab.down(ID);
  // 0 ms everywhere: the tables say so, and each run is compared with numbers measured there.
  const state = await lab.up(ID, { distance: "none" });
  const topo = lab.topologyOf(ID);
  const agent = await agentStart(ID);
  const d: Daemon = {
    client: await ControlClient.connect(agent.socket, { timeoutMs: 5000 }),
    pid: agent.pid,
    async restartForgetting() {
      d.client.close();
      await agentStop(ID);
      rmSync(join(lab.labDirOf(ID), "detourd-state"), { recursive: true, force: true });
      const a = await agentStart(ID);
      d.client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
      d.pid = a.pid;
    },
  };
  const probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
  try {
    return await body(d, probe, topo, state);
  } finally {
    d.client.close();
    await probe.close();
    await agentStop(ID);
    await lab.down(ID);
  }
}

export async function benchConnect(runs: number): Promise<{ rows: unknown; markdown: string }> {
  return withDaemon(async (d, probe, topo, state) => {
    const detour: number[] = [];
    const plain: number[] = [];
    const blockedCold: number[] = [];
    const blockedKnown: number[] = [];
    let fails = 0;
    const record = (list: number[], v: number | null): void => {
      if (v === null) fails++;
      else list.push(v);
    };
    for (let i = 0; i < runs; i++) {
      const p = await plainRun(probe, topo, state);
      if (p !== null) plain.push(p);
      record(detour, await connectRun(d.client, probe, topo));
    }
    const imp = await lab.impair({ kind: "block", target: "client", proto: "udp", dir: "both" }, ID);
    for (let i = 0; i < runs; i++) {
      // A daemon that has never seen this network: the race walks its usual order to the TLS leg.
      await d.restartForgetting();
      record(blockedCold, await connectRun(d.client, probe, topo));
    }
    // The daemon now remembers that TLS won here (the last cold run taught it).
    for (let i = 0; i < runs; i++) record(blockedKnown, await connectRun(d.client, probe, topo));
    await lab.lift(imp.id, ID);
    await d.client.connect();
    await waitState(d.client, (s) => s.state === "connected", RUN_DEADLINE_MS);
    await sleep(1000);
    const t0 = cpuTicks(d.pid);
    const w0 = Date.now();
    await sleep(IDLE_MEASURE_MS);
    const cpuPct = ((cpuTicks(d.pid) - t0) / 100 / ((Date.now() - w0) / 1000)) * 100;
    const rss = rssKiB(d.pid);
    await d.client.disconnect();
    const dt = summarize(detour);
    const pl = summarize(plain);
    const bc = summarize(blockedCold);
    const bk = summarize(blockedKnown);
    const md = [
      `# Connect (${runs} runs each, lab at 0 ms RTT, 3 gateways)`,
      "",
      "From `detour connect` to the first corp echo reply through the tunnel (UDP echo every 5 ms).",
      "",
      "| scenario | median (IQR, range) | vs plain WireGuard alone |",
      "|---|---|---:|",
      `| Detour, all healthy | ${fmtSummary(dt)} | ${(dt.median / pl.median).toFixed(2)}x |`,
      `| plain WireGuard alone (wireguard-go + wg, launch to reply) | ${fmtSummary(pl)} | 1.00x |`,
      `| Detour, all UDP blocked, network never seen before | ${fmtSummary(bc)} | ${(bc.median / pl.median).toFixed(2)}x |`,
      `| Detour, all UDP blocked, network remembered | ${fmtSummary(bk)} | ${(bk.median / pl.median).toFixed(2)}x |`,
      "",
      `Failed runs: ${fails}. detourd while connected and idle (its monitor probes 20 times a second): CPU ${cpuPct.toFixed(1)} % of one core over ${IDLE_MEASURE_MS / 1000} s, RSS ${(rss / 1024).toFixed(1)} MiB.`,
    ];
    return {
      rows: {
        detour: dt,
        plain: pl,
        udpBlockedCold: bc,
        udpBlockedRemembered: bk,
        failures: fails,
        idleCpuPct: cpuPct,
        rssKiB: rss,
      },
      markdown: md.join("\n") + "\n",
    };
  });
}

export async function benchFailover(runs: number): Promise<{ rows: unknown; markdown: string }> {
  return withDaemon(async (d, probe, topo) => {
    const c = d.client;
    const outs: FailoverRun[] = [];
    let fails = 0;
    for (let i = 0; i < runs; i++) {
      const r = await failoverRun(c, probe, topo);
      if (r === null) fails++;
      else outs.push(r);
    }
    const idle: IdleDeadRun[] = [];
    let idleFails = 0;
    for (let i = 0; i < runs; i++) {
      console.error(
        `failover: first packet after ${String(IDLE_MS / 1000)} s idle, run ${String(i + 1)} of ${String(runs)}`,
      );
      const r = await idleDeadRun(c, probe, topo);
      if (r === null) idleFails++;
      else idle.push(r);
    }
    const row = (name: string, s: Summary): string => `| ${name} | ${fmtSummary(s)} |`;
    const md = [
      `# Failover (${runs} runs, lab at 0 ms RTT): the active gateway goes silent (blackhole + SIGKILL of its engines)`,
      "",
      `A steady UDP probe stream through the tunnel (${STREAM_RATE}/s) measures what a user loses; detourd's own record says when it noticed.`,
      "",
      "| measure | median (IQR, range) |",
      "|---|---|",
      row("outage seen by the probe stream (longest gap)", summarize(outs.map((o) => o.outageMs))),
      row("probes lost (at 50/s)", summarize(outs.map((o) => o.lost))).replace(/ ms/g, ""),
      row(
        "detected after (detourd: last reply to verdict)",
        summarize(outs.flatMap((o) => (o.detectedAfterMs === null ? [] : [o.detectedAfterMs]))),
      ),
      row(
        "restored after (detourd: last reply to first reply via the next leg)",
        summarize(outs.flatMap((o) => (o.restoredAfterMs === null ? [] : [o.restoredAfterMs]))),
      ),
      "",
      `Failed runs: ${fails}. Outage medians: ${fmtMs(summarize(outs.map((o) => o.outageMs)).median)}.`,
      "",
      `## The first packet after ${String(IDLE_MS / 1000)} s idle, toward a gateway that died ${String((IDLE_MS - IDLE_DIES_AT_MS) / 1000)} s before`,
      "",
      "The tunnel carries nothing (detourd probes at its idle pace); the active gateway is killed halfway through; then the user sends (a retry every 50 ms until a reply). Target (issue 17): 600 ms median.",
      "",
      "| measure | median (IQR, range) |",
      "|---|---|",
      idle.length === 0
        ? "| first packet to its reply | no run succeeded |"
        : row("first packet to its reply", summarize(idle.map((o) => o.firstReplyMs))),
      "",
      `detourd had already moved off the dead gateway before the packet in ${String(idle.filter((o) => o.movedBefore).length)} of ${String(idle.length)} runs. Failed runs: ${String(idleFails)}.`,
    ];
    return {
      rows: { runs: outs, failures: fails, idleDead: idle, idleDeadFailures: idleFails },
      markdown: md.join("\n") + "\n",
    };
  });
}
