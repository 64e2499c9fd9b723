/**
 * The pure half of `npm run bench -- roam`: options, reading a timestamped ping, when traffic came back after a
 * move or a wake, and the markdown table. The lab half is roam.ts.
 */
import type { Gap } from "../lab/tools/probe-stats.ts";
import { fmtMs, summarize } from "./stats.ts";

export type RoamScenario = "switch" | "wake-30s" | "wake-5min";
export const ROAM_SCENARIOS: readonly RoamScenario[] = ["switch", "wake-30s", "wake-5min"];
/** How long each wake scenario sleeps: the 30 s (the gateways keep the sessions) and 5 minutes (they don't). */
export const SLEEP_S: Record<Exclude<RoamScenario, "switch">, number> = { "wake-30s": 30, "wake-5min": 300 };

export interface RoamOptions {
  only: RoamScenario[];
  /** Runs of the 5 minute wake (each costs 5 minutes per setup group); default: the suite's runs. */
  longRuns: number | null;
}

export function parseRoamOptions(args: readonly string[]): RoamOptions {
  const opts: RoamOptions = { only: [...ROAM_SCENARIOS], longRuns: null };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    const [key, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, null];
    const value = (): string => {
      const v = inline ?? args[++i];
      if (v === undefined || v === "") throw new Error(`roam: ${key} needs a value`);
      return v;
    };
    if (key === "--only") {
      const names = value().split(",");
      const bad = names.filter((n) => !(ROAM_SCENARIOS as readonly string[]).includes(n));
      if (bad.length > 0)
        throw new Error(`roam: unknown scenario ${bad.join(", ")}; expected ${ROAM_SCENARIOS.join(", ")}`);
      opts.only = names as RoamScenario[];
    } else if (key === "--long-runs") {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1) throw new Error(`roam: --long-runs needs a whole number >= 1, got "${v}"`);
      opts.longRuns = n;
    } else throw new Error(`roam: unknown option ${a}; expected --only ${ROAM_SCENARIOS.join(",")} or --long-runs N`);
  }
  return opts;
}

/** Epoch ms of every echo reply in `ping -D` output ("[1765100000.123456] 64 bytes from ..."). */
export function pingReplyTimes(output: string): number[] {
  const out: number[] = [];
  for (const m of output.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from /gm)) out.push(Math.round(Number(m[1]) * 1000));
  return out;
}

/** How long after `at` the first reply came (0 if replies never stopped across it), or null if none came. */
export function restoredAfter(replyTimes: readonly number[], at: number): number | null {
  const first = replyTimes.find((t) => t >= at);
  return first === undefined ? null : first - at;
}

/** The same from a probe stream's gaps: the gap that spans `at` ends when traffic came back. */
export function restoredFromGaps(gaps: readonly Gap[], at: number, received: number): number | null {
  if (received === 0) return null;
  const g = gaps.find((x) => x.fromAt <= at && (x.toAt === null || x.toAt >= at));
  if (g === undefined) return 0;
  return g.toAt === null ? null : g.toAt - at;
}

export interface RoamRow {
  scenario: RoamScenario;
  setup: string;
  settings: string;
  detour: boolean;
  /** Time to traffic per successful run (ms): after the new network's default route, or after the wake. */
  ms: number[];
  /** Runs where traffic never came back within the deadline. */
  failures: number;
  /** Packets to protected networks the routers saw from the client outside a tunnel, per run. */
  leaked: number[];
  /** Failovers detourd recorded per run (Detour only). */
  failovers: number[];
}

const TITLES: Record<RoamScenario, string> = {
  switch: "Network switch (wifi -> mobile, under a 50/s echo stream): time from the new default route to traffic",
  "wake-30s": "Wake after 30 s of sleep: time from the thaw to traffic",
  "wake-5min": "Wake after 5 minutes of sleep: time from the thaw to traffic",
};

/** Targets from the issue: traffic within 1 s of the new route / of a wake that kept the session, 2 s if not. */
export const TARGET_MS: Record<RoamScenario, number> = { switch: 1000, "wake-30s": 1000, "wake-5min": 2000 };

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

export function roamMarkdown(rows: readonly RoamRow[], notes: string): string {
  const lines: string[] = ["# Roaming and wake", "", notes, ""];
  for (const scenario of ROAM_SCENARIOS) {
    const rs = rows.filter((r) => r.scenario === scenario);
    if (rs.length === 0) continue;
    lines.push(`## ${TITLES[scenario]}`, "");
    lines.push(`Target (Detour): median under ${fmtMs(TARGET_MS[scenario])}, 0 leaked packets, 0 failovers.`, "");
    lines.push("| setup | median | p10–p90 | min–max | failed runs | leaked packets | failovers | settings |");
    lines.push("|---|---|---|---|---|---|---|---|");
    for (const r of rs) {
      const s = summarize(r.ms);
      const name = r.detour ? `**${r.setup}**` : r.setup;
      const verdict =
        r.detour && s.n > 0
          ? s.median <= TARGET_MS[scenario] && sum(r.leaked) === 0 && sum(r.failovers) === 0
            ? " (met)"
            : " (not met)"
          : "";
      lines.push(
        `| ${name} | ${s.n === 0 ? "no successful run" : fmtMs(s.median) + verdict} | ${fmtMs(s.p10)}–${fmtMs(s.p90)} | ${fmtMs(s.min)}–${fmtMs(s.max)} | ${String(r.failures)} of ${String(r.failures + r.ms.length)} | ${String(sum(r.leaked))} | ${r.detour ? String(sum(r.failovers)) : "n/a"} | ${r.settings} |`,
      );
    }
    lines.push("");
  }
  return lines.join("\n");
}
