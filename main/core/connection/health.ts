/**
 * In-tunnel health of one leg from its probe samples: a sliding window that yields a verdict (healthy, dead,
 * brownout) and the RTT/loss/jitter numbers telemetry reports. Pure: every call takes `now`.
 */
import type { HealthPolicy } from "../config/schema.ts";
import type { HealthVerdict, ProbeSample } from "./types.ts";

/**
 * Fewer settled samples than this in the window say nothing about loss: one lost probe out of four is 25 %.
 * Ten keeps the percentage's granularity at 10 points while a 50 ms monitor fills it in half a second.
 */
export const MIN_LOSS_SAMPLES = 10;
/**
 * A brownout clears only when loss stays below this fraction of the threshold for `holdMs`, so a link hovering
 * around the threshold cannot flap between verdicts (and the tunnel between gateways).
 */
export const RECOVER_LOSS_FRACTION = 0.5;
/** ...and, when an RTT threshold is set, the median RTT below this fraction of it, for the same reason. */
export const RECOVER_RTT_FRACTION = 0.8;

/**
 * On a slow or bloated path the dead window stretches to this many times the recent 95th-percentile RTT: a reply
 * that is merely queued for 200 ms behind a download must not look like a dead gateway. Four covers RTT doubling
 * twice over, which is more than queueing does to a path that still works.
 */
export const DEAD_RTT_MULTIPLE = 4;
/**
 * Until the monitor has this many replies of its own, the path's round trip measured before it started (the
 * leg's proof of life) speaks for the path too: a gateway 360 ms away must not be declared dead after 300 ms,
 * before its first reply could arrive. A handful of replies is a p95 worth trusting on its own.
 */
export const PATH_RTT_TRUST_SAMPLES = 5;

/**
 * Invariants: `samples` holds at most one sample per seq, none sent before the retention horizon; `overSince` is
 * non-null only while the brownout condition has held without a break; `lastReplyAt` never decreases.
 */
export interface HealthState {
  startedAt: number;
  /** The path's round trip known when the monitor started (see PATH_RTT_TRUST_SAMPLES), null if none. */
  pathRttMs: number | null;
  samples: ProbeSample[];
  lastReplyAt: number | null;
  /** When the newest answered probe was sent: probes sent after it and not answered are the evidence of a dead leg. */
  lastAnsweredSentAt: number | null;
  /**
   * When the oldest probe sent after the newest answered one was sent, if it is still unanswered (in flight, as
   * the prober reports at each health check, or timed out): how long the leg has really been asked and kept silent.
   * Null when nothing sent since the last answer is known to be waiting.
   */
  unansweredSince: number | null;
  /**
   * Probes sent before this are no evidence of death; null: none is (the slow, idle pace of pace.ts, where a probe
   * left unanswered only brings the fast pace back, from which the evidence then counts).
   */
  evidenceFrom: number | null;
  /** Since when the brownout condition (loss or RTT over threshold) has held, while it holds. */
  overSince: number | null;
  /** In a brownout: since when the recovery condition (well under the thresholds) has held, while it holds. */
  clearSince: number | null;
  verdict: HealthVerdict;
}

export interface HealthStats {
  /** Settled samples (replied or timed out) the loss figure is computed over. */
  samples: number;
  lossPct: number | null;
  rttP50Ms: number | null;
  rttP95Ms: number | null;
  /** Mean absolute difference of successive RTTs (RFC 3550's idea, unsmoothed). */
  jitterMs: number | null;
  lastReplyAt: number | null;
}

/** A fresh monitor: the dead clock runs from `now` until the first reply; `pathRttMs` is what the leg measured before. */
export function healthStart(now: number, pathRttMs: number | null = null): HealthState {
  return {
    startedAt: now,
    pathRttMs: pathRttMs !== null && Number.isFinite(pathRttMs) && pathRttMs > 0 ? pathRttMs : null,
    samples: [],
    lastReplyAt: null,
    lastAnsweredSentAt: null,
    unansweredSince: null,
    evidenceFrom: now,
    overSince: null,
    clearSince: null,
    verdict: { state: "healthy" },
  };
}

/**
 * How long without a reply means dead: the policy's window, stretched on a path whose RTT is a large part of it.
 * The path's RTT is the p95 of the monitor's own replies (RTT plus its jitter), and until there are enough of
 * them, never below the round trip the leg measured before the monitor started.
 */
export function deadWindowMs(h: HealthState, policy: HealthPolicy): number {
  const rtts = sortedRtts(h);
  const p95 = percentile(rtts, 95) ?? 0;
  const path = rtts.length >= PATH_RTT_TRUST_SAMPLES ? p95 : Math.max(p95, h.pathRttMs ?? 0);
  return Math.max(policy.deadAfterMs, Math.ceil(DEAD_RTT_MULTIPLE * path));
}

/** The path's round trip as this monitor knows it: the p95 of its replies, else what it started from. */
export function pathRttOf(h: HealthState): number | null {
  return percentile(sortedRtts(h), 95) ?? h.pathRttMs;
}

/** The round trips of the answered samples in the window, smallest first. */
function sortedRtts(h: HealthState): number[] {
  return h.samples.flatMap((s) => (s.rttMs === null ? [] : [s.rttMs])).sort((a, b) => a - b);
}

/**
 * How long the oldest unanswered probe must have waited before silence counts as death: the dead window less one
 * probe interval (the probe after a reply goes out up to an interval later), never under half the window.
 */
export function evidenceWindowMs(h: HealthState, policy: HealthPolicy): number {
  const w = deadWindowMs(h, policy);
  return Math.max(Math.ceil(w / 2), w - policy.probeIntervalMs);
}

/**
 * When the leg is declared dead if no reply comes before then; the daemon arms its health-check timer for it.
 * Both clocks must have run: silence since the last reply, and a probe waiting since `unansweredSince`.
 */
export function healthDeadline(h: HealthState, policy: HealthPolicy): number {
  const silence = (h.lastReplyAt ?? h.startedAt) + deadWindowMs(h, policy);
  return h.unansweredSince === null ? silence : Math.max(silence, h.unansweredSince + evidenceWindowMs(h, policy));
}

/**
 * Notes the prober's oldest probe sent after the newest answered one that is still in flight (null: none), as
 * the daemon reads it at a health check. A daemon that was not scheduled for a while (a busy laptop, a long GC)
 * sent nothing meanwhile: its silence is its own, and only probes actually sent and left unanswered count.
 */
export function healthNotePending(h: HealthState, pendingSentAt: number | null): HealthState {
  if (pendingSentAt === null || h.evidenceFrom === null) return h;
  if (h.lastAnsweredSentAt !== null && pendingSentAt <= h.lastAnsweredSentAt) return h;
  // A probe of the slow pace before the fast one began is waited on from when the fast pace began.
  const since = Math.max(pendingSentAt, h.evidenceFrom);
  if (h.unansweredSince !== null && h.unansweredSince <= since) return h;
  return { ...h, unansweredSince: since };
}

/**
 * The pace changed (pace.ts): at the slow pace nothing is evidence and what was waiting is forgotten; at the fast
 * pace probes count from `now` on.
 */
export function healthSetEvidence(h: HealthState, pace: "fast" | "slow", now: number): HealthState {
  return pace === "slow"
    ? { ...h, evidenceFrom: null, unansweredSince: null }
    : { ...h, evidenceFrom: h.evidenceFrom ?? now };
}

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] ?? null;
}

/**
 * Loss is measured over samples whose fate is settled: sent in (now - timeout - window, now - timeout]. A
 * younger probe may still be answered, and counting only its replies would understate loss by up to timeout/window.
 */
export function healthStats(h: HealthState, now: number, policy: HealthPolicy): HealthStats {
  const win = policy.brownout.windowMs;
  const settledEnd = now - policy.probeTimeoutMs;
  const settled = h.samples.filter((s) => s.sentAt <= settledEnd && s.sentAt > settledEnd - win);
  const lost = settled.filter((s) => s.rttMs === null).length;
  const recent = h.samples.filter((s) => s.sentAt > now - win && s.rttMs !== null).sort((a, b) => a.seq - b.seq);
  const rtts = recent.map((s) => s.rttMs ?? 0);
  const sorted = [...rtts].sort((a, b) => a - b);
  let jitter: number | null = null;
  if (rtts.length >= 2) {
    let sum = 0;
    for (let i = 1; i < rtts.length; i++) sum += Math.abs((rtts[i] ?? 0) - (rtts[i - 1] ?? 0));
    jitter = sum / (rtts.length - 1);
  }
  return {
    samples: settled.length,
    lossPct: settled.length === 0 ? null : (100 * lost) / settled.length,
    rttP50Ms: percentile(sorted, 50),
    rttP95Ms: percentile(sorted, 95),
    jitterMs: jitter,
    lastReplyAt: h.lastReplyAt,
  };
}

function minLossSamples(policy: HealthPolicy): number {
  // A slow monitor never fills ten samples per window; then half of what it can send has to do.
  const possible = Math.floor(policy.brownout.windowMs / policy.probeIntervalMs);
  return Math.max(1, Math.min(MIN_LOSS_SAMPLES, Math.floor(possible / 2)));
}

function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return Number.isInteger(s) ? `${s} s` : `${s.toFixed(1)} s`;
}

/**
 * Recomputes the verdict at `now`. Dead wins over brownout. Brownout needs its condition unbroken for `holdMs`;
 * it clears only after `holdMs` well under the thresholds (hysteresis).
 */
export function healthEvaluate(h: HealthState, now: number, policy: HealthPolicy): HealthState {
  const since = h.lastReplyAt ?? h.startedAt;
  const asked = h.unansweredSince !== null && now - h.unansweredSince >= evidenceWindowMs(h, policy);
  if (asked && now - since >= deadWindowMs(h, policy)) {
    const reason =
      h.lastReplyAt === null
        ? `no reply in ${formatSeconds(now - since)} since the monitor started`
        : `no reply for ${formatSeconds(now - since)}`;
    return { ...h, verdict: { state: "dead", reason, lastReplyAt: since } };
  }
  const b = policy.brownout;
  const st = healthStats(h, now, policy);
  const enoughForLoss = st.samples >= minLossSamples(policy);
  const loss = enoughForLoss ? st.lossPct : null;
  const rtt = st.rttP50Ms;
  const lossOver = loss !== null && loss > b.lossPct;
  const rttOver = b.rttMs !== null && rtt !== null && rtt > b.rttMs;
  const reasonText = lossOver
    ? `brownout: loss ${Math.round(loss)}% over ${formatSeconds(b.windowMs)}`
    : `brownout: median RTT ${Math.round(rtt ?? 0)} ms over ${formatSeconds(b.windowMs)}`;

  if (h.verdict.state === "brownout") {
    const lossOk = loss === null || loss < b.lossPct * RECOVER_LOSS_FRACTION;
    const rttOk = b.rttMs === null || rtt === null || rtt < b.rttMs * RECOVER_RTT_FRACTION;
    const reason = lossOver || rttOver ? reasonText : h.verdict.reason;
    if (!(lossOk && rttOk))
      return { ...h, clearSince: null, verdict: { state: "brownout", reason, lastReplyAt: since } };
    const clearSince = h.clearSince ?? now;
    if (now - clearSince >= b.holdMs) return { ...h, overSince: null, clearSince: null, verdict: { state: "healthy" } };
    return { ...h, clearSince, verdict: { state: "brownout", reason, lastReplyAt: since } };
  }
  if (!lossOver && !rttOver)
    return h.overSince === null && h.verdict.state === "healthy"
      ? h
      : { ...h, overSince: null, clearSince: null, verdict: { state: "healthy" } };
  const overSince = h.overSince ?? now;
  if (now - overSince >= b.holdMs)
    return {
      ...h,
      overSince,
      clearSince: null,
      verdict: { state: "brownout", reason: reasonText, lastReplyAt: since },
    };
  return { ...h, overSince, verdict: { state: "healthy" } };
}

/**
 * Adds one probe result (a reply, or a timeout with rttMs null), prunes the window and re-evaluates at `now`. A
 * reply to a probe already counted lost (the monitor reports late replies too) replaces its loss: a probe answered
 * after the timeout is late, not lost, so a bufferbloated path shows its RTT instead of a loss it does not have.
 */
export function healthOnSample(h: HealthState, sample: ProbeSample, now: number, policy: HealthPolicy): HealthState {
  const known = h.samples.find((s) => s.seq === sample.seq);
  const late = known !== undefined && known.rttMs === null && sample.rttMs !== null && known.sentAt === sample.sentAt;
  if (known !== undefined && !late) return healthEvaluate(h, now, policy);
  const horizon = now - policy.probeTimeoutMs - policy.brownout.windowMs;
  const samples = h.samples.filter((s) => s.sentAt > horizon && s.seq !== sample.seq);
  if (sample.sentAt > horizon) samples.push(sample);
  if (sample.rttMs === null) return healthEvaluate(healthNotePending({ ...h, samples }, sample.sentAt), now, policy);
  const replyAt = sample.sentAt + sample.rttMs;
  const lastReplyAt = Math.max(replyAt, h.lastReplyAt ?? replyAt);
  const lastAnsweredSentAt = Math.max(sample.sentAt, h.lastAnsweredSentAt ?? sample.sentAt);
  // This answer clears the evidence of every probe sent before it; later ones the prober reports again.
  const unansweredSince =
    h.unansweredSince !== null && h.unansweredSince > lastAnsweredSentAt ? h.unansweredSince : null;
  return healthEvaluate({ ...h, samples, lastReplyAt, lastAnsweredSentAt, unansweredSince }, now, policy);
}
