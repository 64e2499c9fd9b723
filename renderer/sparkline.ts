/**
 * Sparklines for the status view's live latency and loss: turns a window of samples into an SVG path.
 * Missing samples (no probe reply) break the line instead of being drawn as zero, so an outage shows as a gap.
 */

export interface SparklineBox {
  width: number;
  height: number;
  /** Fixed top of the scale; by default the largest sample (so a flat line sits at the top). */
  max?: number;
}

/** SVG path data ("M x y L x y ...") for the samples, oldest first; null samples leave a gap. */
export function sparklinePath(samples: readonly (number | null)[], box: SparklineBox): string {
  const finite = samples.filter((s): s is number => s !== null && Number.isFinite(s));
  if (finite.length === 0 || box.width <= 0 || box.height <= 0) return "";
  const top = box.max ?? Math.max(...finite);
  const scale = top > 0 ? box.height / top : 0;
  const step = samples.length > 1 ? box.width / (samples.length - 1) : 0;
  const parts: string[] = [];
  let penDown = false;
  samples.forEach((s, i) => {
    if (s === null || !Number.isFinite(s)) {
      penDown = false;
      return;
    }
    const x = round(i * step);
    const y = round(box.height - Math.min(s, top) * scale);
    parts.push(`${penDown ? "L" : "M"}${x} ${y}`);
    penDown = true;
  });
  return parts.join(" ");
}

function round(n: number): number {
  return Math.round(n * 10) / 10;
}
