/** Summary statistics for benchmarks: medians and spread, never a single run. */

export interface Summary {
  n: number;
  median: number;
  p10: number;
  p25: number;
  p75: number;
  p90: number;
  min: number;
  max: number;
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  const a = sorted[lo] ?? NaN;
  const b = sorted[hi] ?? NaN;
  return a + (b - a) * (pos - lo);
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].filter(Number.isFinite).sort((a, b) => a - b);
  return {
    n: s.length,
    median: quantile(s, 0.5),
    p10: quantile(s, 0.1),
    p25: quantile(s, 0.25),
    p75: quantile(s, 0.75),
    p90: quantile(s, 0.9),
    min: s[0] ?? NaN,
    max: s[s.length - 1] ?? NaN,
  };
}

export function fmtMs(v: number): string {
  return Number.isFinite(v) ? `${v.toFixed(v < 10 ? 1 : 0)} ms` : "-";
}

export function fmtSummary(s: Summary): string {
  if (s.n === 0) return "no successful run";
  return `${fmtMs(s.median)} (IQR ${fmtMs(s.p25)}–${fmtMs(s.p75)}, range ${fmtMs(s.min)}–${fmtMs(s.max)}, n=${s.n})`;
}
