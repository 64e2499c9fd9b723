/**
 * `npm run bench -- telemetry`: what telemetry costs on both ends, on the lab. ingest: how many agent reports
 * per second the embedded collector takes before its latency degrades, with realistic SDK-serialized payloads
 * of many simulated devices posted open-loop from the client namespace. agent: detourd connected and idle with
 * telemetry on vs the same daemon restarted without `telemetry`, CPU and RSS, medians of samples in one run.
 * replicas (only when asked: `--only replicas`): the same ramp, repeated, against the embedded SQLite collector,
 * one replica on PostgreSQL and two replicas on one PostgreSQL (requests in turn), medians over the ramps.
 */
import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "../lab/agent.ts";
import { COLLECTOR_PORT, collectorPaths, collectorUrl, startCollector } from "../lab/collector.ts";
import { isAlive, processTree, stopPids } from "../lab/exec.ts";
import * as lab from "../lab/lab.ts";
import { startPostgres, stopPostgres } from "../lab/postgres.ts";
import { REPO_ROOT } from "../lab/services.ts";
import type { StepLine } from "../lab/tools/otlp-load.ts";
import { cpuTicks, rssKiB, waitState, type Status } from "./connect.ts";
import { summarize, type Summary } from "./stats.ts";

/** The suite's lab; `--lab-id` picks another, so a second bench can run beside one already running. */
const DEFAULT_ID = "tbench";
let ID = DEFAULT_ID;
/** The PostgreSQL-backed replicas listen beside the lab's own collector in its namespace. */
const REPLICA_PORTS = [COLLECTOR_PORT + 1, COLLECTOR_PORT + 2] as const;
/** `--baseline`'s collector listens beside the replicas. */
const BASELINE_PORT = COLLECTOR_PORT + 3;
/** Ramps per storage configuration in `replicas`; each is a full ramp, the table shows their medians. */
const DEFAULT_INGEST_RUNS = 3;
/** Offered agent reports per second, step by step; the ramp stops at the first step that degrades. */
const RATES = [25, 50, 100, 150, 200, 300, 400, 600, 800, 1000, 1200, 1600, 2000, 2500, 3000, 4000, 5000, 6000];
/** Each step lasts this long: at the lowest rate still 125 requests, enough for a p99 worth the name. */
const DEFAULT_STEP_MS = 5000;
/** A short low-rate run first, so the collector's JIT and SQLite's page cache are warm for the first step. */
const WARMUP_MS = 3000;
/**
 * "Degraded": an idle collector answers a report in a few milliseconds; a p99 past 100 ms means requests
 * queue behind each other, i.e. the collector no longer keeps up. (Agents themselves would tolerate seconds.)
 */
const P99_LIMIT_MS = 100;
/** Simulated devices, each with its own id and payload; their batch ids are sequences per device. */
const DEFAULT_DEVICES = 500;
/** Every 20th report is an event batch (a failover and a state change): fleets see events far more rarely. */
const LOGS_EVERY = 20;
/** detourd's default export interval: the fleet size a rate serves is rate x this. */
const DEFAULT_EXPORT_INTERVAL_S = 10;
/** Serializing the payload pool and starting node with tsx takes seconds; the ramp adds its steps. */
const LOAD_STARTUP_MS = 60_000;
/** A step's last requests may take until the generator's request timeout to be answered or fail. */
const LOAD_REQUEST_TIMEOUT_MS = 10_000;
/** One CPU/RSS sample spans one of the lab's export intervals (5 s), so each holds exactly one export. */
const SAMPLE_MS = 5000;
/** After connecting: the standby up, a first export delivered, start-up work (tsx, JIT) done. */
const SETTLE_MS = 10_000;
const CONNECT_WITHIN_MS = 15_000;
/** Linux reports process CPU time in ticks of 1/100 s (CLK_TCK). */
const CLK_TCK = 100;

type Part = "ingest" | "agent" | "replicas";

interface Options {
  only: Set<Part>;
  devices: number;
  stepMs: number;
  ingestRuns: number;
  labId: string;
  /** A git revision whose SQLite collector runs beside today's in `replicas`, as the before of a before/after. */
  baseline: string | null;
}

function parseOptions(options: readonly string[]): Options {
  const { values } = parseArgs({
    args: [...options],
    strict: true,
    options: {
      only: { type: "string" },
      devices: { type: "string" },
      "step-ms": { type: "string" },
      "ingest-runs": { type: "string" },
      "lab-id": { type: "string" },
      baseline: { type: "string" },
    },
  });
  const only = new Set((values.only ?? "ingest,agent").split(",").map((s) => s.trim()));
  for (const o of only)
    if (o !== "ingest" && o !== "agent" && o !== "replicas")
      throw new Error(`--only takes ingest, agent and/or replicas, got "${o}"`);
  const ingestRuns = Number(values["ingest-runs"] ?? DEFAULT_INGEST_RUNS);
  if (!Number.isInteger(ingestRuns) || ingestRuns < 1)
    throw new Error(`--ingest-runs needs a whole number, got "${String(values["ingest-runs"])}"`);
  const labId = values["lab-id"] ?? DEFAULT_ID;
  if (!/^[a-z][a-z0-9]{0,5}$/.test(labId))
    throw new Error(`--lab-id needs 1-6 lowercase letters or digits starting with a letter, got "${labId}"`);
  const devices = Number(values.devices ?? DEFAULT_DEVICES);
  const stepMs = Number(values["step-ms"] ?? DEFAULT_STEP_MS);
  if (!Number.isInteger(devices) || devices < 1)
    throw new Error(`--devices needs a whole number, got "${String(values.devices)}"`);
  if (!Number.isInteger(stepMs) || stepMs < 1000)
    throw new Error(`--step-ms needs at least 1000, got "${String(values["step-ms"])}"`);
  const baseline = values.baseline ?? null;
  if (baseline !== null && !/^[\w./~^-]{1,80}$/.test(baseline))
    throw new Error(`--baseline needs a git revision, got "${baseline}"`);
  return { only: only as Set<Part>, devices, stepMs, ingestRuns, labId, baseline };
}

interface IngestStep extends StepLine {
  /** The collector processes' CPU over the step, in % of one core (summed over replicas). */
  collectorCpuPct: number | null;
  /** The database server's CPU (postmaster and its backends), when there is one. */
  dbCpuPct?: number | null;
}

/** Where a ramp's requests go and whose CPU it measures. */
interface IngestTarget {
  label: string;
  urls: string[];
  collectorPids: readonly number[];
  dbPid: number | null;
}

interface IngestResult {
  payloads: { metricsBytesMean: number; logsBytesMean: number; devices: number } | null;
  steps: IngestStep[];
  /** The highest offered rate with p99 within the limit and no errors. */
  sustainedPerSec: number | null;
}

/** Runs the load generator in the client namespace against the collector(s) in their own; all are the lab's. */
async function ingest(opts: Options, target?: IngestTarget): Promise<IngestResult> {
  const topo = lab.topologyOf(ID);
  const state = lab.loadState(ID);
  const t: IngestTarget = target ?? {
    label: "SQLite",
    urls: [collectorUrl(topo)],
    collectorPids: [state.pids.collector ?? 0],
    dbPid: null,
  };
  const argv = [
    "netns",
    "exec",
    topo.client.ns,
    process.execPath,
    "--import",
    "tsx",
    join(REPO_ROOT, "test", "lab", "tools", "otlp-load.ts"),
    "--url",
    t.urls.join(","),
    "--tokens",
    collectorPaths(state.labDir).tokensFile,
    "--devices",
    String(opts.devices),
    "--rates",
    RATES.join(","),
    "--step-ms",
    String(opts.stepMs),
    "--warmup-ms",
    String(WARMUP_MS),
    "--p99-limit-ms",
    String(P99_LIMIT_MS),
    "--logs-every",
    String(LOGS_EVERY),
    "--interval-ms",
    String(DEFAULT_EXPORT_INTERVAL_S * 1000),
  ];
  const child = spawn("ip", argv, { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
  const result: IngestResult = { payloads: null, steps: [], sustainedPerSec: null };
  let stderr = "";
  let buf = "";
  const collectorTicks = (): number | null => sumTicks(t.collectorPids.map((p) => treeTicksOrNull(p)));
  const dbTicks = (): number | null => (t.dbPid === null ? null : treeTicksOrNull(t.dbPid));
  let mark = { ticks: collectorTicks(), db: dbTicks(), at: Date.now() };
  child.stderr.on("data", (c: Buffer) => {
    stderr += c.toString("utf8");
  });
  child.stdout.on("data", (c: Buffer) => {
    buf += c.toString("utf8");
    for (let nl = buf.indexOf("\n"); nl !== -1; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let msg: { type?: unknown };
      try {
        msg = JSON.parse(line) as { type?: unknown };
      } catch {
        console.log(`  load generator: ${line}`);
        continue;
      }
      // Each JSON line ends a phase (payloads built, warm-up, a step): the collector's CPU since the last one.
      const now = { ticks: collectorTicks(), db: dbTicks(), at: Date.now() };
      const pct = (a: number | null, b: number | null): number | null =>
        // A process tree that lost members (database backends that ended) can only be measured from the next mark.
        a === null || b === null || b < a ? null : Math.round(((b - a) / CLK_TCK / ((now.at - mark.at) / 1000)) * 100);
      const cpu = pct(mark.ticks, now.ticks);
      const dbCpu = pct(mark.db, now.db);
      mark = now;
      if (msg.type === "payloads") {
        const p = msg as { metricsBytesMean: number; logsBytesMean: number; devices: number };
        result.payloads = { metricsBytesMean: p.metricsBytesMean, logsBytesMean: p.logsBytesMean, devices: p.devices };
      }
      if (msg.type === "step") {
        const s: IngestStep = {
          ...(msg as StepLine),
          collectorCpuPct: cpu,
          ...(t.dbPid === null ? {} : { dbCpuPct: dbCpu }),
        };
        result.steps.push(s);
        console.log(
          `  ingest (${t.label}) ${s.rate}/s: answered ${s.achievedPerSec}/s, p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, errors ${s.errors}, collector CPU ${String(s.collectorCpuPct)} %${t.dbPid === null ? "" : `, database CPU ${String(s.dbCpuPct)} %`}`,
        );
      }
    }
  });
  const budgetMs = LOAD_STARTUP_MS + WARMUP_MS + RATES.length * (opts.stepMs + LOAD_REQUEST_TIMEOUT_MS);
  const exited = new Promise<number | null>((resolve) =>
    child.once("close", (code) => {
      resolve(code);
    }),
  );
  const timer = new AbortController();
  const outcome = await Promise.race([
    exited,
    sleep(budgetMs, "timeout" as const, { signal: timer.signal }).catch(() => "aborted" as const),
  ]);
  timer.abort();
  if (outcome === "timeout") {
    if (child.pid !== undefined && isAlive(child.pid)) await stopPids([child.pid], "SIGTERM", 3000);
    throw new Error(`the load generator did not finish within ${budgetMs} ms`);
  }
  if (outcome !== 0) throw new Error(`the load generator exited with ${String(outcome)}: ${stderr.slice(-2000)}`);
  const ok = result.steps.filter((s) => s.errors === 0 && s.p99Ms <= P99_LIMIT_MS);
  result.sustainedPerSec = ok.length === 0 ? null : Math.max(...ok.map((s) => s.rate));
  return result;
}

function cpuTicksOrNull(pid: number): number | null {
  try {
    return pid > 0 ? cpuTicks(pid) : null;
  } catch {
    return null;
  }
}

/** CPU ticks of a process and its descendants, or null when it is gone. */
function treeTicksOrNull(pid: number): number | null {
  if (pid <= 0 || !isAlive(pid)) return null;
  return treeTicks(pid);
}

function sumTicks(ticks: readonly (number | null)[]): number | null {
  return ticks.some((x) => x === null) ? null : ticks.reduce<number>((a, b) => a + (b ?? 0), 0);
}

/** CPU ticks of a process and its descendants (detourd's engines answer its stats requests). */
function treeTicks(pid: number): number {
  return processTree(pid).reduce((sum, p) => sum + (cpuTicksOrNull(p) ?? 0), 0);
}

interface AgentSamples {
  cpuPct: number[];
  treeCpuPct: number[];
  rssMiB: number[];
  delivered: number | null;
}

/** Starts detourd with the lab's current config, connects, settles, and samples its CPU and RSS. */
async function agentSamples(runs: number, label: string): Promise<AgentSamples> {
  const a = await agentStart(ID);
  const c = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  try {
    await c.connect();
    const up = await waitState(c, (s: Status) => s.state === "connected" && s.standby !== null, CONNECT_WITHIN_MS);
    if (up === null)
      throw new Error(`detourd (${label}) did not connect with a standby within ${CONNECT_WITHIN_MS} ms`);
    await sleep(SETTLE_MS);
    const before = (await c.status()).telemetry?.export?.delivered ?? null;
    const out: AgentSamples = { cpuPct: [], treeCpuPct: [], rssMiB: [], delivered: null };
    for (let i = 0; i < runs; i++) {
      const t0 = cpuTicks(a.pid);
      const tt0 = treeTicks(a.pid);
      const w0 = Date.now();
      await sleep(SAMPLE_MS);
      const wallS = (Date.now() - w0) / 1000;
      out.cpuPct.push(((cpuTicks(a.pid) - t0) / CLK_TCK / wallS) * 100);
      out.treeCpuPct.push(((treeTicks(a.pid) - tt0) / CLK_TCK / wallS) * 100);
      out.rssMiB.push(rssKiB(a.pid) / 1024);
    }
    const last = await c.status();
    if (last.state !== "connected")
      throw new Error(`detourd (${label}) left the connected state while measured: ${last.state}`);
    const after = last.telemetry?.export?.delivered ?? null;
    out.delivered = before === null || after === null ? null : after - before;
    console.log(
      `  agent ${label}: CPU median ${summarize(out.cpuPct).median.toFixed(2)} %, RSS median ${summarize(out.rssMiB).median.toFixed(1)} MiB, batches delivered while measured: ${String(out.delivered)}`,
    );
    await c.disconnect();
    await waitState(c, (s: Status) => s.state === "disconnected", CONNECT_WITHIN_MS);
    return out;
  } finally {
    c.close();
    await agentStop(ID);
  }
}

/** The same daemon and lab, once without `telemetry` in its config and once with the lab's (5 s exports). */
async function agentCost(runs: number): Promise<{ off: AgentSamples; on: AgentSamples }> {
  const path = lab.loadState(ID).clientConfig;
  const original = readFileSync(path, "utf8");
  const config = JSON.parse(original) as Record<string, unknown>;
  if (!("telemetry" in config)) throw new Error("the lab's client config has no telemetry section to compare against");
  const without = { ...config };
  Reflect.deleteProperty(without, "telemetry");
  writeFileSync(path, JSON.stringify(without, null, 2) + "\n", { mode: 0o600 });
  let off: AgentSamples;
  try {
    off = await agentSamples(runs, "telemetry off");
  } finally {
    writeFileSync(path, original, { mode: 0o600 });
  }
  const on = await agentSamples(runs, "telemetry on");
  return { off, on };
}

interface ReplicasResult {
  configs: { label: string; runs: IngestResult[] }[];
}

/**
 * The ramp, `opts.ingestRuns` times each, against: the lab's own collector (SQLite), one PostgreSQL-backed replica,
 * and two replicas on the same PostgreSQL taking the requests in turn. PostgreSQL and the replicas run in the
 * collector namespace (the database on its loopback), like the lab test's.
 */
async function replicas(opts: Options): Promise<ReplicasResult> {
  const topo = lab.topologyOf(ID);
  const state = lab.loadState(ID);
  const db = await startPostgres(topo.collector.ns, join(state.labDir, "postgres"));
  const pids: number[] = [];
  try {
    for (const [i, port] of REPLICA_PORTS.entries())
      pids.push(await startCollector(topo, state.labDir, { port, postgresUrlFile: db.urlFile, name: `replica-${i}` }));
    const replicaPids = [...pids];
    const url = (port: number): string => `http://${topo.collector.address}:${port}`;
    const [p0] = pids;
    if (p0 === undefined) throw new Error("no replica started");
    const targets: IngestTarget[] = [];
    if (opts.baseline !== null) {
      const root = exportRevision(opts.baseline, join(state.labDir, "baseline"));
      const pid = await startCollector(topo, state.labDir, {
        port: BASELINE_PORT,
        root,
        db: join(state.labDir, "baseline.db"),
        name: "baseline",
      });
      pids.push(pid);
      targets.push({
        label: `SQLite, one collector at ${opts.baseline}`,
        urls: [url(BASELINE_PORT)],
        collectorPids: [pid],
        dbPid: null,
      });
    }
    targets.push(
      {
        label: "SQLite, one collector",
        urls: [collectorUrl(topo)],
        collectorPids: [state.pids.collector ?? 0],
        dbPid: null,
      },
      { label: "PostgreSQL, one replica", urls: [url(REPLICA_PORTS[0])], collectorPids: [p0], dbPid: db.pid },
      { label: "PostgreSQL, two replicas", urls: REPLICA_PORTS.map(url), collectorPids: replicaPids, dbPid: db.pid },
    );
    const out: ReplicasResult = { configs: targets.map((t) => ({ label: t.label, runs: [] })) };
    // Interleaved (A B C A B C ...), so a stretch of heavy load from elsewhere on the machine hits every config.
    for (let r = 0; r < opts.ingestRuns; r++)
      for (const [i, t] of targets.entries()) out.configs[i]?.runs.push(await ingest(opts, t));
    return out;
  } finally {
    await stopPids(pids, "SIGTERM");
    await stopPostgres(db);
  }
}

/**
 * Exports `rev`'s tree (git archive) into `dir` with this checkout's node_modules linked in, so its collector runs
 * side by side with today's; returns the folder.
 */
export function exportRevision(rev: string, dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const archive = spawnSync("git", ["-C", REPO_ROOT, "archive", "--format=tar", rev, "main", "resources"], {
    maxBuffer: 256 * 1024 * 1024,
  });
  if (archive.status !== 0) throw new Error(`git archive ${rev} failed: ${archive.stderr.toString("utf8")}`);
  const tar = spawnSync("tar", ["-x", "-C", dir], { input: archive.stdout });
  if (tar.status !== 0) throw new Error(`unpacking ${rev} failed: ${tar.stderr.toString("utf8")}`);
  symlinkSync(join(REPO_ROOT, "node_modules"), join(dir, "node_modules"));
  copyFileSync(join(REPO_ROOT, "package.json"), join(dir, "package.json"));
  return dir;
}

function replicasMarkdown(r: ReplicasResult, opts: Options): string[] {
  const med = (xs: readonly (number | null | undefined)[]): string => {
    const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x));
    return v.length === 0 ? "-" : f1(summarize(v).median);
  };
  const sustained = r.configs.map((c) => {
    const each = c.runs.map((x) => x.sustainedPerSec ?? 0);
    const sum = summarize(each);
    return `| ${c.label} | **${f1(sum.median)}** | ${f1(sum.min)}–${f1(sum.max)} | ${each.join(", ")} |`;
  });
  const perRate = r.configs.flatMap((c) => {
    const rates = [...new Set(c.runs.flatMap((x) => x.steps.map((s) => s.rate)))].sort((a, b) => a - b);
    return rates.map((rate) => {
      const steps = c.runs.flatMap((x) => x.steps.filter((s) => s.rate === rate));
      const errors = steps.reduce((a, s) => a + s.errors, 0);
      return `| ${c.label} | ${rate} | ${steps.length} | ${med(steps.map((s) => s.achievedPerSec))} | ${med(steps.map((s) => s.p50Ms))} | ${med(steps.map((s) => s.p99Ms))} | ${f1(Math.max(...steps.map((s) => s.p99Ms)))} | ${errors} | ${med(steps.map((s) => s.collectorCpuPct))} | ${med(steps.map((s) => s.dbCpuPct))} |`;
    });
  });
  return [
    "## Collector ingest: SQLite vs PostgreSQL, one and two replicas",
    "",
    `The ramp above (${opts.devices} simulated devices, ${opts.stepMs / 1000} s per step, stop at the first step with p99 > ${P99_LIMIT_MS} ms or an error), ${opts.ingestRuns} times per configuration, interleaved. "Two replicas": two collector processes on one PostgreSQL 15 server, the load generator sending its requests to them in turn (as a round-robin balancer would). All of it (load generator, collectors, database, and whatever else runs on this machine) shares the same two cores, so two replicas here measure the cost of the shared database, not the scale-out a second machine would give.`,
    "",
    "| configuration | sustained reports/s (median) | range | each ramp |",
    "|---|---:|---|---|",
    ...sustained,
    "",
    "| configuration | offered/s | ramps reaching it | answered/s | p50 ms | p99 ms (median) | p99 ms (worst) | errors | collector CPU % | database CPU % |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...perRate,
    "",
  ];
}

const f1 = (v: number): string => (Number.isFinite(v) ? v.toFixed(v < 10 ? 2 : 1) : "-");
const spread = (s: Summary, unit: string): string =>
  s.n === 0 ? "no samples" : `${f1(s.median)} ${unit} (IQR ${f1(s.p25)}–${f1(s.p75)}, n=${s.n})`;

function ingestMarkdown(r: IngestResult, opts: Options): string[] {
  const p = r.payloads;
  const rows = r.steps.map(
    (s) =>
      `| ${s.rate} | ${s.achievedPerSec} | ${s.errors}${s.firstError === null ? "" : ` (${s.firstError})`} | ${s.p50Ms} | ${s.p90Ms} | ${s.p99Ms}${s.p99Ms > P99_LIMIT_MS ? " **over**" : ""} | ${s.maxMs} | ${s.maxSendLagMs} | ${s.collectorCpuPct ?? "-"} |`,
  );
  const sustained = r.sustainedPerSec;
  const last = r.steps[r.steps.length - 1];
  const verdict =
    sustained === null
      ? "No step stayed within the limit."
      : `Highest rate with p99 ≤ ${P99_LIMIT_MS} ms and no errors: **${sustained} reports/s**, about ${(sustained * DEFAULT_EXPORT_INTERVAL_S).toLocaleString("en")} agents at the default ${DEFAULT_EXPORT_INTERVAL_S} s export interval.` +
        (last !== undefined && last.rate === sustained
          ? ` The ramp ended at its top rate without degrading, so the real limit is higher.`
          : "");
  return [
    "## Collector ingest: agent reports per second",
    "",
    `Each report is one export interval of a connected agent, serialized by the OpenTelemetry SDK as detourd does (protobuf, delta temporality, its 17 per-interval instruments, ${DEFAULT_EXPORT_INTERVAL_S * 40} RTT samples in the histogram): ${p === null ? "?" : `${p.metricsBytesMean} bytes`} on average; every ${LOGS_EVERY}th report is an event batch (a failover and a state change, ${p === null ? "?" : `${p.logsBytesMean} bytes`}). ${opts.devices} simulated devices, each request with its own batch id, posted open-loop (on schedule, not waiting for answers) from the lab's client namespace to the collector in its namespace, keep-alive connections. ${opts.stepMs / 1000} s per step after a ${WARMUP_MS / 1000} s warm-up; latency is from sending to the end of the answer.`,
    "",
    "| offered reports/s | answered/s | errors | p50 ms | p90 ms | p99 ms | max ms | sender lag ms | collector CPU % of a core |",
    "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    verdict,
    "The collector's database is in the lab's run folder on tmpfs, so fsync costs nothing here; on a disk each transaction's commit adds its sync. The load generator shares the machine's two cores with the collector.",
    "",
  ];
}

function agentMarkdown(r: { off: AgentSamples; on: AgentSamples }, runs: number): string[] {
  const row = (name: string, s: AgentSamples): string =>
    `| ${name} | ${spread(summarize(s.cpuPct), "%")} | ${spread(summarize(s.treeCpuPct), "%")} | ${spread(summarize(s.rssMiB), "MiB")} |`;
  const d = (a: number[], b: number[]): string => {
    const x = summarize(b).median - summarize(a).median;
    return `${x >= 0 ? "+" : ""}${f1(x)}`;
  };
  return [
    "## detourd's cost of measuring and exporting",
    "",
    `detourd connected and idle (active tunnel probed every 25 ms, warm standby every 250 ms), first without \`telemetry\` in its config, then restarted with the lab's telemetry (SDK instruments, export every 5 s through the spool to the lab's collector, a reachability check every 5 s). ${runs} samples of ${SAMPLE_MS / 1000} s each (one export per sample) after ${SETTLE_MS / 1000} s of settling; medians in the same run.`,
    "",
    "| detourd | CPU % of one core (detourd) | CPU % incl. its engines | RSS |",
    "|---|---|---|---|",
    row("telemetry off", r.off),
    row("telemetry on", r.on),
    `| difference of medians | ${d(r.off.cpuPct, r.on.cpuPct)} % | ${d(r.off.treeCpuPct, r.on.treeCpuPct)} % | ${d(r.off.rssMiB, r.on.rssMiB)} MiB |`,
    "",
    `Batches delivered while measured with telemetry on: ${String(r.on.delivered)}.`,
    "",
  ];
}

export async function benchTelemetry(
  runs: number,
  options: readonly string[],
): Promise<{ rows: unknown; markdown: string }> {
  const opts = parseOptions(options);
  ID = opts.labId;
  await lab.down(ID);
  // 0 ms everywhere, as the report's title says: the agent's cost is compared with telemetry off and on, not distance.
  await lab.up(ID, { distance: "none" });
  try {
    const ing = opts.only.has("ingest") ? await ingest(opts) : null;
    const agent = opts.only.has("agent") ? await agentCost(runs) : null;
    const rep = opts.only.has("replicas") ? await replicas(opts) : null;
    const md = [
      `# Telemetry (lab at 0 ms RTT, ${runs} samples per agent measurement)`,
      "",
      ...(ing === null ? [] : ingestMarkdown(ing, opts)),
      ...(agent === null ? [] : agentMarkdown(agent, runs)),
      ...(rep === null ? [] : replicasMarkdown(rep, opts)),
    ];
    return { rows: { ingest: ing, agent, replicas: rep, p99LimitMs: P99_LIMIT_MS }, markdown: md.join("\n") };
  } finally {
    await agentStop(ID);
    await lab.down(ID);
  }
}
