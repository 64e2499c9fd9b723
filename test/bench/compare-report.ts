/**
 * The pure half of `npm run bench -- compare`: its options, and the markdown tables and target verdicts built
 * from measured values. No I/O, so the tables can be tested without a lab.
 */
import { fmtMs, summarize, type Summary } from "./stats.ts";

export const SCENARIOS = ["connect", "udp-blocked", "failover", "false-alarm"] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** The default soak: ten lossy minutes per setup. */
export const DEFAULT_FALSE_ALARM_MINUTES = 10;
/** A soak longer than a working day is a typo, not a benchmark. */
const MAX_FALSE_ALARM_MINUTES = 8 * 60;

export interface CompareOptions {
  only: Scenario[];
  falseAlarmMinutes: number;
  /** False alarms for Detour alone (the baselines' rows come from a full run): a re-check after a change. */
  detourOnly: boolean;
}

/**
 * Parses the suite's own options: `--only a,b` (repeatable), `--false-alarm-minutes M` and `--detour-only` (the
 * false-alarm soak without the baselines). Throws naming the bad option.
 */
export function parseCompareOptions(args: readonly string[]): CompareOptions {
  const only: Scenario[] = [];
  let falseAlarmMinutes = DEFAULT_FALSE_ALARM_MINUTES;
  let detourOnly = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? args[++i];
      if (v === undefined || v === "") throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--only":
        for (const s of value().split(",")) {
          if (!(SCENARIOS as readonly string[]).includes(s))
            throw new Error(`--only: unknown scenario "${s}"; expected ${SCENARIOS.join(", ")}`);
          if (!only.includes(s as Scenario)) only.push(s as Scenario);
        }
        break;
      case "--false-alarm-minutes": {
        const v = value();
        const m = Number(v);
        if (!(Number.isFinite(m) && m > 0 && m <= MAX_FALSE_ALARM_MINUTES))
          throw new Error(`--false-alarm-minutes: expected minutes in (0, ${MAX_FALSE_ALARM_MINUTES}], got "${v}"`);
        falseAlarmMinutes = m;
        break;
      }
      case "--detour-only":
        if (inline !== undefined) throw new Error("--detour-only takes no value");
        detourOnly = true;
        break;
      default:
        throw new Error(
          `unknown option "${a}" for compare; expected --only <${SCENARIOS.join("|")}>[,...], --false-alarm-minutes M or --detour-only`,
        );
    }
  }
  return { only: only.length > 0 ? only : [...SCENARIOS], falseAlarmMinutes, detourOnly };
}

/** One setup's repeated timing measurement (connect time or outage), in ms; failed runs are counted, not averaged. */
export interface TimedRow {
  setup: string;
  settings: string;
  /** Detour's row that the targets and the "vs Detour" ratios refer to. */
  detour?: "target" | "other";
  /** A plain single engine: the fastest of these is the reference of the connect target. */
  singleEngine?: boolean;
  ms: number[];
  /** Probes lost per run (failover only). */
  lost?: number[];
  failures: number;
}

export interface FalseAlarmRow {
  setup: string;
  settings: string;
  detour: boolean;
  minutes: number;
  /** null when the setup could not be brought up. */
  failovers: number | null;
  /** Loss the probe stream saw through the tunnel over the soak. */
  streamLossPct: number | null;
  error?: string;
}

export interface CompareResult {
  runs: number;
  falseAlarmMinutes: number;
  connect?: TimedRow[];
  udpBlocked?: TimedRow[];
  failover?: TimedRow[];
  falseAlarm?: FalseAlarmRow[];
  /** How the false-alarm setups shared the clock. */
  falseAlarmSchedule?: string;
}

/** The targets for Detour. */
export const TARGETS = {
  udpBlockedConnectMs: 500,
  failoverOutageMs: 500,
  connectVsFastestEngine: 1.3,
} as const;

export interface Verdict {
  target: string;
  measured: string;
  met: boolean | null;
}

function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : "-";
}

function detourTarget(rows: readonly TimedRow[] | undefined): Summary | null {
  const r = rows?.find((x) => x.detour === "target");
  return r === undefined ? null : summarize(r.ms);
}

function fastestEngine(rows: readonly TimedRow[]): { row: TimedRow; s: Summary } | null {
  let best: { row: TimedRow; s: Summary } | null = null;
  for (const row of rows) {
    if (row.singleEngine !== true) continue;
    const s = summarize(row.ms);
    if (s.n > 0 && (best === null || s.median < best.s.median)) best = { row, s };
  }
  return best;
}

export function verdicts(r: CompareResult): Verdict[] {
  const out: Verdict[] = [];
  if (r.connect !== undefined) {
    const d = detourTarget(r.connect);
    const f = fastestEngine(r.connect);
    const ok = d !== null && f !== null && d.n > 0;
    out.push({
      target: `connect, all healthy: within ${TARGETS.connectVsFastestEngine}x the fastest single engine`,
      measured: ok
        ? `${fmtMs(d.median)} vs ${f.row.setup} ${fmtMs(f.s.median)} = ${ratio(d.median, f.s.median)}`
        : "not measured",
      met: ok ? d.median <= TARGETS.connectVsFastestEngine * f.s.median : null,
    });
  }
  if (r.udpBlocked !== undefined) {
    const d = detourTarget(r.udpBlocked);
    out.push({
      target: `connect on a network that drops all UDP: within ${TARGETS.udpBlockedConnectMs} ms`,
      measured: d !== null && d.n > 0 ? `median ${fmtMs(d.median)} (max ${fmtMs(d.max)})` : "not measured",
      met: d !== null && d.n > 0 ? d.median <= TARGETS.udpBlockedConnectMs : null,
    });
  }
  if (r.failover !== undefined) {
    const d = detourTarget(r.failover);
    out.push({
      target: `failover when the active gateway goes silent: outage under ${TARGETS.failoverOutageMs} ms median`,
      measured: d !== null && d.n > 0 ? `median ${fmtMs(d.median)}` : "not measured",
      met: d !== null && d.n > 0 ? d.median < TARGETS.failoverOutageMs : null,
    });
  }
  if (r.falseAlarm !== undefined) {
    const d = r.falseAlarm.find((x) => x.detour);
    const known = d !== undefined && d.failovers !== null;
    out.push({
      target: `no false alarm in ${r.falseAlarmMinutes} minutes of 5 % loss each way on the active gateway`,
      measured: known ? `${d.failovers} failover(s)` : "not measured",
      met: known ? d.failovers === 0 : null,
    });
  }
  return out;
}

function spread(s: Summary, fmt: (v: number) => string): string {
  return s.n === 0 ? "-" : `${fmt(s.p10)}–${fmt(s.p90)}`;
}

function range(s: Summary, fmt: (v: number) => string): string {
  return s.n === 0 ? "-" : `${fmt(s.min)}–${fmt(s.max)}`;
}

const count = (v: number): string => (Number.isFinite(v) ? String(Math.round(v)) : "-");

/** One markdown table of timed rows, with ratios against Detour's target row. */
export function timedTable(rows: readonly TimedRow[], withLost: boolean): string[] {
  const d = detourTarget(rows);
  const head = [
    "setup",
    "median",
    "p10–p90",
    "min–max",
    "runs ok / failed",
    "vs Detour",
    ...(withLost ? ["probes lost at 50/s: median (min–max)"] : []),
    "settings",
  ];
  const lines = [
    `| ${head.join(" | ")} |`,
    `|${head.map((h) => (h === "setup" || h === "settings" ? "---" : "---:")).join("|")}|`,
  ];
  for (const row of rows) {
    const s = summarize(row.ms);
    const cells = [
      row.detour !== undefined ? `**${row.setup}**` : row.setup,
      s.n === 0 ? "no successful run" : fmtMs(s.median),
      spread(s, fmtMs),
      range(s, fmtMs),
      `${s.n} / ${row.failures}`,
      d === null || s.n === 0 ? "-" : ratio(s.median, d.median),
    ];
    if (withLost) {
      const l = summarize(row.lost ?? []);
      cells.push(l.n === 0 ? "-" : `${count(l.median)} (${range(l, count)})`);
    }
    cells.push(row.settings);
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines;
}

export function falseAlarmTable(rows: readonly FalseAlarmRow[]): string[] {
  const lines = [
    "| setup | lossy minutes | failovers (0 is right) | loss seen by the probe stream | settings |",
    "|---|---:|---:|---:|---|",
  ];
  for (const r of rows) {
    const name = r.detour ? `**${r.setup}**` : r.setup;
    const f = r.failovers === null ? `failed: ${r.error ?? "did not come up"}` : String(r.failovers);
    const loss = r.streamLossPct === null ? "-" : `${r.streamLossPct.toFixed(1)} %`;
    lines.push(`| ${name} | ${r.minutes} | ${f} | ${loss} | ${r.settings} |`);
  }
  return lines;
}

/** The whole report: targets first, then one table per scenario that ran. */
export function compareMarkdown(r: CompareResult, notes: { lab: string; failover: string }): string {
  const v = verdicts(r);
  const md = [
    `# Detour vs what a user would otherwise build (${r.runs} runs per timed setup, same lab, same run)`,
    "",
    notes.lab,
    "",
    "## Targets",
    "",
    "| target | measured | verdict |",
    "|---|---|---|",
    ...v.map(
      (x) => `| ${x.target} | ${x.measured} | ${x.met === null ? "not measured" : x.met ? "met" : "**not met**"} |`,
    ),
  ];
  if (r.connect !== undefined) {
    md.push(
      "",
      "## Connect, all healthy",
      "",
      "From the connect command (or the engine's launch) to the first corp echo reply through the tunnel.",
      "",
      ...timedTable(r.connect, false),
    );
  }
  if (r.udpBlocked !== undefined) {
    md.push(
      "",
      "## Connect on a network that silently drops all UDP",
      "",
      "The client's uplink drops every UDP packet (no ICMP errors). Same measure as above.",
      "",
      ...timedTable(r.udpBlocked, false),
    );
  }
  if (r.failover !== undefined) {
    md.push("", "## Failover: the active gateway goes silent", "", notes.failover, "", ...timedTable(r.failover, true));
  }
  if (r.falseAlarm !== undefined) {
    md.push(
      "",
      `## False alarms: ${r.falseAlarmMinutes} minutes of 5 % random loss each way on the healthy active gateway`,
      "",
      r.falseAlarmSchedule ?? "",
      "",
      ...falseAlarmTable(r.falseAlarm),
    );
  }
  return md.join("\n") + "\n";
}
