/**
 * `npm run bench -- engines`: cold start to first echo reply through the tunnel, per engine, for Detour's
 * driver and for the same tunnel built with the engine's plain tools, interleaved in one run on one lab.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { createEngine } from "../../native/engines/create-engine.ts";
import { pingThrough } from "../../native/platform/probe.linux.ts";
import { labEngineSpec, type LabLeg } from "../lab/engine-specs.ts";
import * as lab from "../lab/lab.ts";
import { startPlain } from "../lab/plain/plain-clients.ts";
import type { LabTopology } from "../lab/topology.ts";
import { fmtMs, fmtSummary, summarize, type Summary } from "./stats.ts";

const LEGS: readonly LabLeg[] = ["wireguard", "ikev2", "anyconnect-dtls", "anyconnect-tls"];
/** A healthy leg answers within ~0.2 s here; a run past this counts as failed, not as a slow sample. */
const RUN_DEADLINE_MS = 10_000;
/** Let the gateway finish tearing down the previous session so runs do not overlap. */
const SETTLE_MS = 150;
/** Each ping attempt lasts at most this long; a device that does not exist yet makes ping exit at once. */
const PING_ATTEMPT_MS = 1000;
const MAX_PING_ATTEMPTS = 2000;

export interface EngineRow {
  leg: LabLeg;
  plain: Summary;
  detour: Summary;
  ratio: number;
  failures: { plain: number; detour: number };
}

async function firstReplyThrough(topo: LabTopology, ifname: string, deadline: number): Promise<number | null> {
  for (let i = 0; i < MAX_PING_ATTEMPTS && Date.now() < deadline; i++) {
    const r = await pingThrough({
      ifname,
      target: topo.corp.address,
      netns: topo.client.ns,
      deadlineAt: Math.min(deadline, Date.now() + PING_ATTEMPT_MS),
      intervalMs: 20,
    });
    if (r.ok) return r.at;
    await sleep(5);
  }
  return null;
}

async function plainRun(topo: LabTopology, state: lab.LabState, leg: LabLeg): Promise<number | null> {
  const t = await startPlain(
    leg,
    topo,
    state,
    topo.gateways[0] ??
      (() => {
        throw new Error("no gateway");
      })(),
    "bp",
  );
  try {
    const at = await firstReplyThrough(topo, t.ifname, t.launchedAt + RUN_DEADLINE_MS);
    return at === null ? null : at - t.launchedAt;
  } finally {
    await t.stop();
  }
}

async function detourRun(topo: LabTopology, state: lab.LabState, leg: LabLeg): Promise<number | null> {
  const spec = labEngineSpec(topo, state, "gw1", leg, { ifname: "dbench-0" });
  const engine = createEngine(spec);
  const t0 = Date.now();
  try {
    const up = await engine.start(t0 + RUN_DEADLINE_MS);
    return up.timings.firstReplyAt - t0;
  } catch {
    return null;
  } finally {
    await engine.stop();
  }
}

export async function benchEngines(runs: number): Promise<{ rows: EngineRow[]; markdown: string }> {
  const id = "bench";
  await lab.down(id);
  // 0 ms everywhere: cold starts are compared with the plain tools' (and earlier runs') in the world the table names.
  const state = await lab.up(id, { distance: "none" });
  const topo = lab.topologyOf(id);
  try {
    const rows: EngineRow[] = [];
    for (const leg of LEGS) {
      const plain: number[] = [];
      const detour: number[] = [];
      let pf = 0;
      let df = 0;
      for (let i = 0; i < runs; i++) {
        // Interleaved, so both sides see the same machine load over the run.
        const p = await plainRun(topo, state, leg);
        if (p === null) pf++;
        else plain.push(p);
        await sleep(SETTLE_MS);
        const d = await detourRun(topo, state, leg);
        if (d === null) df++;
        else detour.push(d);
        await sleep(SETTLE_MS);
      }
      const ps = summarize(plain);
      const ds = summarize(detour);
      rows.push({ leg, plain: ps, detour: ds, ratio: ds.median / ps.median, failures: { plain: pf, detour: df } });
    }
    const lines = [
      `# Engines: cold start to first echo reply through the tunnel (${runs} runs each, interleaved, gateway gw1, 0 ms RTT)`,
      "",
      "Plain tools: wireguard-go + wg, charon-systemd + swanctl, openconnect + a minimal script, timed from launch.",
      "Detour: the native/engines driver, timed from start() to its resolved first reply. Both probe with ICMP echo bound to the tunnel device.",
      "",
      "| engine | plain tools: median (IQR, range) | Detour driver: median (IQR, range) | overhead ratio | failed runs (plain/Detour) |",
      "|---|---|---|---:|---:|",
      ...rows.map(
        (r) =>
          `| ${r.leg} | ${fmtSummary(r.plain)} | ${fmtSummary(r.detour)} | ${Number.isFinite(r.ratio) ? r.ratio.toFixed(2) : "-"} | ${r.failures.plain}/${r.failures.detour} |`,
      ),
      "",
      `Medians: ${rows.map((r) => `${r.leg} ${fmtMs(r.detour.median)} vs ${fmtMs(r.plain.median)}`).join("; ")}.`,
    ];
    return { rows, markdown: lines.join("\n") + "\n" };
  } finally {
    await lab.down(id);
  }
}
