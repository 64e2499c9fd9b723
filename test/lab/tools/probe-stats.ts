/**
 * The probe agent's pure arithmetic: the UDP probe payload codec, the ledger that classifies replies (counted,
 * duplicate, late, stray), round-trip statistics and outage-gap detection. Time is always passed in.
 */

/** Round-trip times in milliseconds over the replies that counted. */
export interface RttSummary {
  readonly min: number;
  readonly p50: number;
  readonly avg: number;
  readonly p95: number;
  readonly max: number;
}

/**
 * A run of consecutive lost probes. `fromAt` is the send time of the first lost probe, `toAt` the send time of
 * the next probe that got a reply, or null if none did before the run ended; `durationMs` then runs to the end.
 */
export interface Gap {
  readonly fromAt: number;
  readonly toAt: number | null;
  readonly lost: number;
  readonly durationMs: number;
}

export interface GapReport {
  readonly gaps: readonly Gap[];
  readonly gapCount: number;
  readonly longestGapMs: number;
}

/** "DTPR": lets the agent tell its probes from anything else arriving on the socket. */
export const PROBE_MAGIC = 0x44545052;
/** magic u32, run u32, seq u32, reserved u32, sentAt f64: 24 bytes, well under any tunnel MTU. */
export const PROBE_PAYLOAD_BYTES = 24;

export interface ProbePayload {
  /** A random number per operation, so a late echo from an earlier operation is never taken for a reply. */
  readonly run: number;
  readonly seq: number;
  /** Epoch milliseconds; informational (visible in a capture), the ledger's own record is what counts. */
  readonly sentAt: number;
}

export function encodeProbe(p: ProbePayload): Uint8Array {
  const bytes = new Uint8Array(PROBE_PAYLOAD_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, PROBE_MAGIC);
  view.setUint32(4, p.run >>> 0);
  view.setUint32(8, p.seq >>> 0);
  view.setUint32(12, 0);
  view.setFloat64(16, p.sentAt);
  return bytes;
}

/** The payload, or null if the datagram is not one of our probes. */
export function decodeProbe(bytes: Uint8Array): ProbePayload | null {
  if (bytes.byteLength !== PROBE_PAYLOAD_BYTES) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== PROBE_MAGIC) return null;
  const sentAt = view.getFloat64(16);
  if (!Number.isFinite(sentAt)) return null;
  return { run: view.getUint32(4), seq: view.getUint32(8), sentAt };
}

/** Nearest-rank percentile (always one of the samples) of an ascending array; NaN for an empty one. */
export function percentile(sortedAscending: readonly number[], p: number): number {
  if (sortedAscending.length === 0) return Number.NaN;
  const clamped = Math.min(100, Math.max(0, p));
  const rank = Math.max(1, Math.ceil((clamped / 100) * sortedAscending.length));
  return sortedAscending[rank - 1] ?? Number.NaN;
}

/** Three decimals: microsecond resolution is all a JavaScript timer can honestly claim. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

export function summarizeRtts(samples: readonly number[]): RttSummary | null {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((acc, v) => acc + v, 0);
  return {
    min: roundMs(sorted[0] ?? Number.NaN),
    p50: roundMs(percentile(sorted, 50)),
    avg: roundMs(sum / sorted.length),
    p95: roundMs(percentile(sorted, 95)),
    max: roundMs(sorted[sorted.length - 1] ?? Number.NaN),
  };
}

/**
 * Gaps over probes in send order. `replied` means a reply that counted; `endAt` closes a gap that lasted to the
 * end. Only the first `maxGaps` gaps are listed (a flapping link can produce thousands); the count and the longest
 * cover all of them.
 */
export function findGaps(
  probes: readonly { readonly sentAt: number; readonly replied: boolean }[],
  endAt: number,
  maxGaps = Number.POSITIVE_INFINITY,
): GapReport {
  const gaps: Gap[] = [];
  let gapCount = 0;
  let longestGapMs = 0;
  let runStart: number | null = null;
  let runLost = 0;
  const close = (toAt: number | null): void => {
    if (runStart === null) return;
    const durationMs = roundMs((toAt ?? endAt) - runStart);
    gapCount++;
    longestGapMs = Math.max(longestGapMs, durationMs);
    if (gaps.length < maxGaps) gaps.push({ fromAt: runStart, toAt, lost: runLost, durationMs });
    runStart = null;
    runLost = 0;
  };
  for (const probe of probes) {
    if (probe.replied) {
      close(probe.sentAt);
    } else {
      runStart ??= probe.sentAt;
      runLost++;
    }
  }
  close(null);
  return { gaps, gapCount, longestGapMs };
}

/** What a datagram that reached the probe socket turned out to be. */
export type ReplyKind = "reply" | "duplicate" | "late" | "stray";

const NO_REPLY = 0;
const REPLIED = 1;
const LATE = 2;

export interface LedgerCounts {
  readonly sent: number;
  /** Probes with a reply within the reply timeout; each probe counts once. */
  readonly received: number;
  /** Extra copies of a reply already seen (counted or late). */
  readonly duplicates: number;
  /** Probes whose first reply came after the reply timeout: lost as far as the user is concerned. */
  readonly late: number;
  /** Datagrams that were not a reply to a probe of this run. */
  readonly stray: number;
  readonly lossPct: number;
  readonly firstReplyAt: number | null;
  readonly rttMs: RttSummary | null;
}

/**
 * Every probe an operation sent, in sequence order, and what came back for it. A reply counts when it arrives
 * within `replyTimeoutMs` of its probe's send time; the sequence number is the index into the ledger.
 */
export class ProbeLedger {
  private readonly sentAt: number[] = [];
  private readonly state: number[] = [];
  private readonly rtt: number[] = [];
  private received = 0;
  private duplicates = 0;
  private late = 0;
  private stray = 0;
  private firstReplyAt: number | null = null;

  constructor(
    readonly run: number,
    readonly replyTimeoutMs: number,
  ) {}

  get sent(): number {
    return this.sentAt.length;
  }

  /** Registers the next probe and returns its payload. */
  nextProbe(now: number): ProbePayload {
    const seq = this.sentAt.length;
    this.sentAt.push(now);
    this.state.push(NO_REPLY);
    return { run: this.run, seq, sentAt: now };
  }

  record(payload: ProbePayload | null, receivedAt: number): ReplyKind {
    const sentAt = payload === null || payload.run !== this.run ? undefined : this.sentAt[payload.seq];
    if (payload === null || sentAt === undefined) {
      this.stray++;
      return "stray";
    }
    const state = this.state[payload.seq];
    if (state !== NO_REPLY) {
      this.duplicates++;
      return "duplicate";
    }
    const rtt = receivedAt - sentAt;
    if (rtt > this.replyTimeoutMs) {
      this.state[payload.seq] = LATE;
      this.late++;
      return "late";
    }
    this.state[payload.seq] = REPLIED;
    this.rtt.push(rtt);
    this.received++;
    this.firstReplyAt ??= receivedAt;
    return "reply";
  }

  /** Probes still waiting for a reply that could yet count at `now`. */
  pending(now: number): number {
    let count = 0;
    for (let seq = this.sentAt.length - 1; seq >= 0; seq--) {
      const sentAt = this.sentAt[seq] ?? Number.NEGATIVE_INFINITY;
      if (now - sentAt > this.replyTimeoutMs) break;
      if (this.state[seq] === NO_REPLY) count++;
    }
    return count;
  }

  /** The send time of the most recent probe, or null before the first. */
  lastSentAt(): number | null {
    return this.sentAt[this.sentAt.length - 1] ?? null;
  }

  counts(): LedgerCounts {
    const sent = this.sentAt.length;
    return {
      sent,
      received: this.received,
      duplicates: this.duplicates,
      late: this.late,
      stray: this.stray,
      lossPct: sent === 0 ? 0 : roundMs(((sent - this.received) / sent) * 100),
      firstReplyAt: this.firstReplyAt,
      rttMs: summarizeRtts(this.rtt),
    };
  }

  gaps(endAt: number, maxGaps?: number): GapReport {
    const probes = this.sentAt.map((sentAt, seq) => ({ sentAt, replied: this.state[seq] === REPLIED }));
    return findGaps(probes, endAt, maxGaps);
  }
}
