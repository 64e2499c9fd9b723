/**
 * The pure half of `npm run bench -- footprint`: reading a process's counters from /proc text, the rates between two
 * readings, and the table. footprint.ts does the I/O.
 */
import { summarize, type Summary } from "./stats.ts";

/** Linux reports process CPU time in ticks of 1/100 s (CLK_TCK). */
export const CLK_TCK = 100;

/** One process's counters at one moment: CPU ticks, context switches over all its threads, RSS. */
export interface ProcReading {
  ticks: number;
  /** Voluntary context switches summed over the threads: each is a thread going to sleep, so one per wake-up. */
  voluntary: number;
  rssKiB: number;
}

/** User + system ticks from the text of /proc/PID/stat (fields 14 and 15; the name may hold spaces and parens). */
export function statTicks(stat: string): number {
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const t = Number(f[11]) + Number(f[12]);
  if (!Number.isFinite(t)) throw new Error(`cannot read CPU ticks from /proc stat: ${stat.slice(0, 120)}`);
  return t;
}

/** A numbered field ("VmRSS:   1234 kB", "voluntary_ctxt_switches: 5") of /proc/PID/status text; null if absent. */
export function statusField(status: string, name: string): number | null {
  const m = new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status);
  return m === null ? null : Number(m[1]);
}

/** What a group of processes cost over a window, per second. */
export interface WindowCost {
  /** CPU in % of one core. */
  cpuPct: number;
  /** Voluntary context switches per second (wake-ups). */
  wakeupsPerS: number;
  /** RSS at the window's end, summed over the group. */
  rssKiB: number;
}

/**
 * The cost of the processes present at both ends of a window of `ms` milliseconds: a process that started or
 * ended inside it is left out (its counters have no start or no end).
 */
export function windowCost(
  start: ReadonlyMap<number, ProcReading>,
  end: ReadonlyMap<number, ProcReading>,
  ms: number,
): WindowCost {
  if (!(ms > 0)) throw new Error(`a window must last some time, got ${String(ms)} ms`);
  let ticks = 0;
  let voluntary = 0;
  let rssKiB = 0;
  for (const [pid, e] of end) {
    const s = start.get(pid);
    if (s === undefined) continue;
    ticks += Math.max(0, e.ticks - s.ticks);
    voluntary += Math.max(0, e.voluntary - s.voluntary);
    rssKiB += e.rssKiB;
  }
  const seconds = ms / 1000;
  return { cpuPct: (ticks / CLK_TCK / seconds) * 100, wakeupsPerS: voluntary / seconds, rssKiB };
}

/** Bytes per second each way through the tunnel devices between two readings of their counters. */
export function bytesPerSecond(
  start: { rx: number; tx: number },
  end: { rx: number; tx: number },
  ms: number,
): { rx: number; tx: number } {
  const s = ms / 1000;
  return { rx: Math.max(0, end.rx - start.rx) / s, tx: Math.max(0, end.tx - start.tx) / s };
}

/** idle-fixed-pace: idle with every probe at the fast pace, as before issue 17 (the baseline in the same run). */
export type FootprintScenario = "idle" | "stream" | "idle-fixed-pace";

const SCENARIO_WORDS: Record<FootprintScenario, string> = {
  idle: "idle",
  stream: "stream",
  "idle-fixed-pace": "idle, probes at a fixed fast pace (before)",
};

/** One row: a group of processes in one scenario, over every window measured. */
export interface FootprintRow {
  scenario: FootprintScenario;
  group: "detourd" | "engines";
  windows: WindowCost[];
  /** Tunnel bytes per second (all of detourd's tunnels), per window; only on detourd's rows. */
  tunnel: { rx: number; tx: number }[];
  /** In-tunnel probe bytes per second (to and from the probe target), per idle window; only on detourd's rows. */
  probe?: { rx: number; tx: number }[];
}

/** Issue 17's targets for detourd connected and idle. */
export const TARGETS = { cpuPct: 0.5, rssMiB: 60, wakeupsPerS: 5, probeBytesPerS: 100 } as const;

function fmt(s: Summary, digits: number, unit: string): string {
  return `${s.median.toFixed(digits)}${unit} (${s.min.toFixed(digits)}-${s.max.toFixed(digits)})`;
}

function met(ok: boolean): string {
  return ok ? "met" : "**missed**";
}

/** How detourd is run: its esbuild bundle on plain node (as it ships) or the TypeScript through tsx (development). */
export type DaemonRuntime = "bundle" | "tsx";

/** Start-up times, spawn to the control socket open, in ms per start. */
export type StartupTimes = Partial<Record<DaemonRuntime, number[]>>;

const RUNTIME_WORDS: Record<DaemonRuntime, string> = {
  bundle: "esbuild bundle on plain node (as shipped, and as every lab, test and bench runs it)",
  tsx: "TypeScript through tsx (development only)",
};

/** The table: medians (range) over the windows, with the targets for idle detourd, and start-up times. */
export function footprintMarkdown(rows: readonly FootprintRow[], notes: string, startup: StartupTimes = {}): string {
  const lines = [
    "# Footprint: detourd connected, telemetry on",
    "",
    notes,
    "",
    "| scenario | processes | CPU, % of one core | wake-ups/s | RSS | tunnel bytes/s in / out | of which probes | windows |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    const cpu = summarize(r.windows.map((w) => w.cpuPct));
    const wake = summarize(r.windows.map((w) => w.wakeupsPerS));
    const rss = summarize(r.windows.map((w) => w.rssKiB / 1024));
    const rx = r.tunnel.length === 0 ? null : summarize(r.tunnel.map((t) => t.rx));
    const tx = r.tunnel.length === 0 ? null : summarize(r.tunnel.map((t) => t.tx));
    const probe = r.probe === undefined || r.probe.length === 0 ? null : r.probe;
    const prx = probe === null ? null : summarize(probe.map((t) => t.rx)).median;
    const ptx = probe === null ? null : summarize(probe.map((t) => t.tx)).median;
    lines.push(
      `| ${SCENARIO_WORDS[r.scenario]} | ${r.group === "detourd" ? "**detourd**" : "its engines and helpers"} | ${fmt(cpu, 2, " %")} | ${fmt(wake, 1, "")} | ${fmt(rss, 1, " MiB")} | ${rx === null || tx === null ? "-" : `${rx.median.toFixed(0)} / ${tx.median.toFixed(0)}`} | ${prx === null || ptx === null ? "-" : `${prx.toFixed(0)} / ${ptx.toFixed(0)}`} | ${String(r.windows.length)} |`,
    );
  }
  const idle = rows.find((r) => r.scenario === "idle" && r.group === "detourd");
  if (idle !== undefined && idle.windows.length > 0) {
    const cpu = summarize(idle.windows.map((w) => w.cpuPct)).median;
    const rss = summarize(idle.windows.map((w) => w.rssKiB / 1024)).median;
    const wake = summarize(idle.windows.map((w) => w.wakeupsPerS)).median;
    const probe = idle.probe ?? [];
    const bytes = probe.length === 0 ? null : summarize(probe.map((t) => Math.max(t.rx, t.tx))).median;
    lines.push(
      "",
      "## Targets for detourd connected and idle (issue 17)",
      "",
      "| measure | median | target | met |",
      "|---|---:|---:|---|",
      `| CPU | ${cpu.toFixed(2)} % | <= ${String(TARGETS.cpuPct)} % | ${met(cpu <= TARGETS.cpuPct)} |`,
      `| RSS | ${rss.toFixed(1)} MiB | <= ${String(TARGETS.rssMiB)} MiB | ${met(rss <= TARGETS.rssMiB)} |`,
      `| wake-ups | ${wake.toFixed(1)}/s | <= ${String(TARGETS.wakeupsPerS)}/s | ${met(wake <= TARGETS.wakeupsPerS)} |`,
      `| probe traffic, busier direction | ${bytes === null ? "-" : `${bytes.toFixed(0)} B/s`} | <= ${String(TARGETS.probeBytesPerS)} B/s | ${bytes === null ? "-" : met(bytes <= TARGETS.probeBytesPerS)} |`,
    );
  }
  const runtimes = (Object.keys(RUNTIME_WORDS) as DaemonRuntime[]).filter((k) => (startup[k]?.length ?? 0) > 0);
  if (runtimes.length > 0) {
    lines.push(
      "",
      "## Start-up: detourd spawned to its control socket open",
      "",
      "| detourd runs as | median | min-max | starts |",
      "|---|---:|---:|---:|",
    );
    for (const k of runtimes) {
      const t = startup[k] ?? [];
      const s = summarize(t);
      lines.push(
        `| ${RUNTIME_WORDS[k]} | ${s.median.toFixed(0)} ms | ${s.min.toFixed(0)}-${s.max.toFixed(0)} ms | ${String(t.length)} |`,
      );
    }
  }
  return lines.join("\n") + "\n";
}
