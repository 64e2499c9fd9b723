/**
 * The tunnel's recent history for diagnostic bundles, kept in memory and bounded: every settled in-tunnel probe
 * is folded into a per-second summary of its leg (the flight recorder's probe ring, last ten minutes) and, for
 * the active leg, into ten-second samples (the last hour of telemetry: RTT p50/p95, jitter, loss, gateway and
 * protocol). No timer: buckets close when a probe of a later bucket arrives, or when a snapshot is read.
 */
import type { LegKind, ProbeSample } from "../../core/connection/types.ts";

/** One second per probe summary: fine enough to see a failover's outage, 600 of them are ten minutes. */
export const PROBE_SECOND_MS = 1000;
export const PROBE_SECONDS_KEPT = 600;
/** Ten-second samples, as often as telemetry exports metrics; 360 of them are the last hour. */
export const HISTORY_SAMPLE_MS = 10_000;
export const HISTORY_SAMPLES_KEPT = 360;

export interface ProbeSecond {
  /** Start of the second (epoch ms). */
  at: number;
  legId: string;
  gateway: string;
  protocol: LegKind;
  role: "active" | "standby";
  sent: number;
  lost: number;
  rttMinMs: number | null;
  rttAvgMs: number | null;
  rttMaxMs: number | null;
}

export interface HistorySample {
  /** Start of the ten-second window (epoch ms). */
  at: number;
  gateway: string;
  protocol: LegKind;
  probes: number;
  lossPct: number;
  rttP50Ms: number | null;
  rttP95Ms: number | null;
  /** Mean absolute difference of consecutive RTTs (RFC 3550's idea, without its smoothing). */
  jitterMs: number | null;
}

export interface ProbeLeg {
  legId: string;
  gateway: string;
  protocol: LegKind;
  active: boolean;
}

interface OpenSecond {
  at: number;
  leg: ProbeLeg;
  sent: number;
  lost: number;
  min: number;
  max: number;
  sum: number;
}

interface OpenWindow {
  at: number;
  gateway: string;
  protocol: LegKind;
  probes: number;
  lost: number;
  rtts: number[];
}

function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const a = sorted[lo] ?? 0;
  const b = sorted[Math.ceil(pos)] ?? a;
  return a + (b - a) * (pos - lo);
}

function round(v: number | null): number | null {
  return v === null ? null : Math.round(v * 100) / 100;
}

export function closeWindow(w: OpenWindow): HistorySample {
  const sorted = [...w.rtts].sort((a, b) => a - b);
  let jitter = 0;
  for (let i = 1; i < w.rtts.length; i++) jitter += Math.abs((w.rtts[i] ?? 0) - (w.rtts[i - 1] ?? 0));
  return {
    at: w.at,
    gateway: w.gateway,
    protocol: w.protocol,
    probes: w.probes,
    lossPct: w.probes === 0 ? 0 : (round((100 * w.lost) / w.probes) ?? 0),
    rttP50Ms: round(quantile(sorted, 0.5)),
    rttP95Ms: round(quantile(sorted, 0.95)),
    jitterMs: w.rtts.length < 2 ? null : round(jitter / (w.rtts.length - 1)),
  };
}

function closeSecond(s: OpenSecond): ProbeSecond {
  const replies = s.sent - s.lost;
  return {
    at: s.at,
    legId: s.leg.legId,
    gateway: s.leg.gateway,
    protocol: s.leg.protocol,
    role: s.leg.active ? "active" : "standby",
    sent: s.sent,
    lost: s.lost,
    rttMinMs: replies === 0 ? null : round(s.min),
    rttAvgMs: replies === 0 ? null : round(s.sum / replies),
    rttMaxMs: replies === 0 ? null : round(s.max),
  };
}

/** A fixed-size ring: pushing past the bound drops the oldest. */
class Ring<T> {
  readonly #items: T[] = [];
  constructor(readonly size: number) {}
  push(v: T): void {
    this.#items.push(v);
    if (this.#items.length > this.size) this.#items.splice(0, this.#items.length - this.size);
  }
  all(): T[] {
    return [...this.#items];
  }
}

export class TunnelHistory {
  readonly #seconds = new Ring<ProbeSecond>(PROBE_SECONDS_KEPT);
  readonly #samples = new Ring<HistorySample>(HISTORY_SAMPLES_KEPT);
  /** Open seconds by leg (the active leg and the standby probe side by side). */
  readonly #open = new Map<string, OpenSecond>();
  #window: OpenWindow | null = null;

  /** One settled probe of a leg (the daemon's one hook, from its dispatch of probe inputs). */
  onProbe(leg: ProbeLeg, sample: ProbeSample): void {
    if (sample.late === true) {
      this.#onLateReply(leg, sample);
      return;
    }
    const secAt = Math.floor(sample.sentAt / PROBE_SECOND_MS) * PROBE_SECOND_MS;
    let sec = this.#open.get(leg.legId);
    if (sec !== undefined && sec.at !== secAt) {
      this.#seconds.push(closeSecond(sec));
      sec = undefined;
    }
    sec ??= { at: secAt, leg, sent: 0, lost: 0, min: Infinity, max: -Infinity, sum: 0 };
    sec.leg = leg;
    sec.sent += 1;
    if (sample.rttMs === null) sec.lost += 1;
    else {
      sec.min = Math.min(sec.min, sample.rttMs);
      sec.max = Math.max(sec.max, sample.rttMs);
      sec.sum += sample.rttMs;
    }
    this.#open.set(leg.legId, sec);
    // Other legs' seconds that ended long ago (a torn-down standby) are closed too, so #open stays small.
    for (const [id, s] of this.#open) {
      if (id !== leg.legId && s.at < secAt - PROBE_SECOND_MS) {
        this.#seconds.push(closeSecond(s));
        this.#open.delete(id);
      }
    }
    if (!leg.active) return;
    const winAt = Math.floor(sample.sentAt / HISTORY_SAMPLE_MS) * HISTORY_SAMPLE_MS;
    let w = this.#window;
    if (w !== null && (w.at !== winAt || w.gateway !== leg.gateway || w.protocol !== leg.protocol)) {
      this.#samples.push(closeWindow(w));
      w = null;
    }
    w ??= { at: winAt, gateway: leg.gateway, protocol: leg.protocol, probes: 0, lost: 0, rtts: [] };
    w.probes += 1;
    if (sample.rttMs === null) w.lost += 1;
    else w.rtts.push(sample.rttMs);
    this.#window = w;
  }

  /**
   * A reply to a probe already counted lost: late, not lost, in the second and the window it was sent in while they
   * are still open (a reply later than that stays a loss in what was already closed).
   */
  #onLateReply(leg: ProbeLeg, sample: ProbeSample): void {
    const rtt = sample.rttMs;
    if (rtt === null) return;
    const sec = this.#open.get(leg.legId);
    if (sec !== undefined && sec.at === Math.floor(sample.sentAt / PROBE_SECOND_MS) * PROBE_SECOND_MS && sec.lost > 0) {
      sec.lost -= 1;
      sec.min = Math.min(sec.min, rtt);
      sec.max = Math.max(sec.max, rtt);
      sec.sum += rtt;
    }
    const w = this.#window;
    const winAt = Math.floor(sample.sentAt / HISTORY_SAMPLE_MS) * HISTORY_SAMPLE_MS;
    if (leg.active && w !== null && w.at === winAt && w.gateway === leg.gateway && w.lost > 0) {
      w.lost -= 1;
      w.rtts.push(rtt);
    }
  }

  /** A closed ten-second sample (from another source, e.g. a benchmark replaying a day). */
  addSample(s: HistorySample): void {
    this.#samples.push(s);
  }

  /** Per-second probe summaries, oldest first, the open ones included. */
  probeSeconds(): ProbeSecond[] {
    return [...this.#seconds.all(), ...[...this.#open.values()].map(closeSecond)].sort((a, b) => a.at - b.at);
  }

  /** Ten-second samples of the active tunnel, oldest first, the open window included; only the last hour. */
  samples(now: number): HistorySample[] {
    const all = [...this.#samples.all(), ...(this.#window === null ? [] : [closeWindow(this.#window)])];
    return all.filter((s) => s.at >= now - HISTORY_SAMPLES_KEPT * HISTORY_SAMPLE_MS);
  }
}
