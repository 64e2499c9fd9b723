/**
 * `npm run bench -- race-scale`: the race across 16 gateways x 4 protocols with only the last-ranked two alive, on
 * simulated engines (the connection machine on the fake-clock harness of main/core/connection/harness.test.ts:
 * the lab has three gateways). Time from `connect` to connected and the most legs in flight at once, medians over
 * the runs (each with its own seeded handshake times and probe arrival), today's race next to the race of
 * `--baseline REV` (default: the last revision before the cap), exported with `git archive` and run side by side.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { seededRandom } from "../fakes/seeded-random.ts";
import { REPO_ROOT } from "../lab/services.ts";
import { summarize } from "./stats.ts";
import { exportRevision } from "./telemetry.ts";
import type {
  Candidate,
  CandidateProbe,
  ConnectionStateName,
  Effect,
  Leg,
  MachineInput,
} from "../../main/core/connection/types.ts";

/**
 * What the bench uses of main/core/connection/harness.test.ts, in both revisions (loaded at run time: the harness
 * belongs to the core's test project, not this one's).
 */
interface Sim {
  now: number;
  readonly running: Set<string>;
  dispatch(input: MachineInput): Effect[];
  send(input: { type: "connect" }): Effect[];
  schedule(at: number, run: () => void): void;
  runUntilTrue(pred: () => boolean, limitMs: number): boolean;
  phase(): ConnectionStateName;
  effectsOf(type: "start-leg"): unknown[];
}
type LegScript = { up: number } | "hang";
interface Harness {
  Sim: new (opts: {
    gateways: Candidate[];
    ctx: unknown;
    candidates: (sim: Sim) => Candidate[];
    resolveMs: number;
    legs: (leg: Leg) => LegScript;
  }) => Sim;
  gateway(name: string, priority: number, opts: Partial<Candidate>): Candidate;
  probe(latencyMs: number | null, reachable: CandidateProbe["reachable"]): CandidateProbe;
  context(gateways: Candidate[], overrides: { race: { maxGateways: number } }): unknown;
}

/** The last revision before legs in flight were capped and one leg went to every gateway first (issue 17). */
const BEFORE_REV = "6dd6ac9";
const GATEWAYS = 16;
/** A run that has not connected by then is reported as not connected (the old race takes about 15 s). */
const RUN_LIMIT_MS = 120_000;

type Probes = "none" | "every host answers its port" | "dead found silent";
interface Scenario {
  name: string;
  probes: Probes;
  /** When the probes come back after the connect: the daemon's probe timeout (1 s) on an addressed connect. */
  probesAtMs: [number, number];
  maxGateways: number;
  allAlive?: boolean;
}

const SCENARIOS: Scenario[] = [
  { name: "no probe result, maxGateways 3 (default)", probes: "none", probesAtMs: [0, 0], maxGateways: 3 },
  { name: "no probe result, maxGateways 16", probes: "none", probesAtMs: [0, 0], maxGateways: 16 },
  {
    name: "every host answers its port (tunnels time out)",
    probes: "every host answers its port",
    probesAtMs: [0, 0],
    maxGateways: 3,
  },
  {
    name: "probes find the dead silent 0.8-1.2 s in (addressed connect)",
    probes: "dead found silent",
    probesAtMs: [800, 1200],
    maxGateways: 3,
  },
  {
    name: "probes find the dead silent 2.5-3.5 s in (hostname connect)",
    probes: "dead found silent",
    probesAtMs: [2500, 3500],
    maxGateways: 3,
  },
  { name: "all 16 healthy", probes: "dead found silent", probesAtMs: [0, 0], maxGateways: 3, allAlive: true },
];

interface RunResult {
  connectedMs: number | null;
  peakInFlight: number;
  legsStarted: number;
}

function runOnce(h: Harness, s: Scenario, seed: number): RunResult {
  const rand = seededRandom(seed);
  const between = (lo: number, hi: number): number => Math.round(lo + (hi - lo) * rand());
  const names = Array.from({ length: GATEWAYS }, (_, i) => `gw${String(i + 1).padStart(2, "0")}`);
  const alive = new Set(s.allAlive === true ? names : names.slice(-2));
  const configured: Candidate[] = names.map((n, i) => h.gateway(n, i + 1, { address: `198.18.${String(i)}.2` }));
  const answered = (): CandidateProbe => ({
    ...h.probe(between(10, 40), {
      wireguard: "unknown",
      ikev2: "unknown",
      "anyconnect-tls": "yes",
      "anyconnect-dtls": "unknown",
    }),
    answered: true,
  });
  const silent = (): CandidateProbe => ({
    ...h.probe(null, { wireguard: "unknown", ikev2: "unknown", "anyconnect-tls": "no", "anyconnect-dtls": "no" }),
    answered: false,
  });
  const probed: Candidate[] =
    s.probes === "none"
      ? configured
      : configured.map((c) => ({
          ...c,
          probe: alive.has(c.name) || s.probes === "every host answers its port" ? answered() : silent(),
        }));
  const probesAt = between(...s.probesAtMs);
  const upMs = new Map<string, number>();
  const sim = new h.Sim({
    gateways: configured,
    ctx: h.context(configured, { race: { maxGateways: s.maxGateways } }),
    candidates: (sim) => (sim.now >= probesAt ? probed : configured),
    resolveMs: 10,
    legs: (leg) => {
      if (!alive.has(leg.gateway)) return "hang";
      const up = upMs.get(leg.id) ?? between(60, 160);
      upMs.set(leg.id, up);
      return { up };
    },
  });
  // The old harness has no peak count of its own: count after every input.
  let peak = 0;
  const dispatch = sim.dispatch.bind(sim);
  sim.dispatch = (input) => {
    const effects = dispatch(input);
    peak = Math.max(peak, sim.running.size);
    return effects;
  };
  sim.send({ type: "connect" });
  // The daemon hands a race the probe results as they come back (candidate-refresh's discovery).
  if (probesAt > 0 && s.probes !== "none")
    sim.schedule(probesAt, () => sim.dispatch({ type: "candidates", now: sim.now, candidates: probed }));
  const ok = sim.runUntilTrue(() => sim.phase() === "connected", RUN_LIMIT_MS);
  return {
    connectedMs: ok ? sim.now : null,
    peakInFlight: peak,
    legsStarted: sim.effectsOf("start-leg").length,
  };
}

function parseBaseline(options: readonly string[]): string {
  const i = options.indexOf("--baseline");
  const rev = i >= 0 ? options[i + 1] : options.find((o) => o.startsWith("--baseline="))?.slice("--baseline=".length);
  if (rev === undefined) return BEFORE_REV;
  if (!/^[\w./~^-]{1,80}$/.test(rev)) throw new Error(`--baseline needs a git revision, got "${rev}"`);
  return rev;
}

export async function benchRaceScale(
  runs: number,
  options: readonly string[],
): Promise<{ markdown: string; rows: unknown }> {
  const unknown = options.filter((o, i) => !o.startsWith("--baseline") && options[i - 1] !== "--baseline");
  if (unknown.length > 0) throw new Error(`race-scale: unknown option ${unknown.join(" ")} (takes --baseline REV)`);
  const rev = parseBaseline(options);
  const dir = join(REPO_ROOT, ".build", "bench-race-scale-baseline");
  rmSync(dir, { recursive: true, force: true });
  exportRevision(rev, dir);
  const harnessPath = "main/core/connection/harness.test.ts";
  try {
    const setups: { label: string; h: Harness }[] = [
      { label: `before (${rev})`, h: (await import(pathToFileURL(join(dir, harnessPath)).href)) as Harness },
      { label: "after", h: (await import(pathToFileURL(join(REPO_ROOT, harnessPath)).href)) as Harness },
    ];
    const rows = SCENARIOS.flatMap((s) =>
      setups.map((setup) => {
        const results = Array.from({ length: runs }, (_, i) => runOnce(setup.h, s, 1000 + i));
        const connected = results.flatMap((r) => (r.connectedMs === null ? [] : [r.connectedMs]));
        return {
          scenario: s.name,
          setup: setup.label,
          connectedMs: summarize(connected),
          notConnected: results.length - connected.length,
          peakInFlight: summarize(results.map((r) => r.peakInFlight)),
          legsStarted: summarize(results.map((r) => r.legsStarted)),
        };
      }),
    );
    const f = (v: number): string => (Number.isFinite(v) ? String(Math.round(v)) : "-");
    const markdown = [
      `## Race at scale: ${String(GATEWAYS)} gateways x 4 protocols, only the last-ranked two alive (simulated engines)`,
      "",
      "Simulated engines on the connection machine's fake clock (the lab has three gateways): a dead gateway's legs",
      "hang to the 5 s leg deadline, a live one's come up in 60-160 ms; stagger 250 ms. Medians over the runs, each",
      "seeded differently; p10-p90 in brackets.",
      "",
      "| scenario | setup | time to connected, ms | peak legs in flight | legs started | not connected |",
      "| --- | --- | --- | --- | --- | --- |",
      ...rows.map(
        (r) =>
          `| ${r.scenario} | ${r.setup} | **${f(r.connectedMs.median)}** (${f(r.connectedMs.p10)}-${f(r.connectedMs.p90)}) | ` +
          `**${f(r.peakInFlight.median)}** (max ${f(r.peakInFlight.max)}) | ${f(r.legsStarted.median)} | ${String(r.notConnected)} |`,
      ),
      "",
    ].join("\n");
    return { markdown, rows };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
