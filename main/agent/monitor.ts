/**
 * The in-tunnel prober: one UDP echo probe every interval from a leg's tunnel address (so source routing sends
 * it through that leg) to the probe target, and one ProbeSample per probe: its RTT, or null when no reply came
 * within the timeout or the probe could not be sent. With `lateReplies`, a reply that comes after the timeout (up
 * to LATE_KEEP_MS after the probe left) is reported as a second sample of the same probe, with its RTT: late, not
 * lost (core/connection/health.ts replaces the loss with it).
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { randomBytes } from "node:crypto";
import type { ProbeSample } from "../core/connection/types.ts";
import { systemClock, type Clock } from "./clock.ts";

export interface MonitorOptions {
  legId: string;
  /** The leg's tunnel address; the socket binds to it, so the leg's source rule routes every probe. */
  sourceAddress: string;
  target: { address: string; port: number };
  intervalMs: number;
  /** A reply later than this counts as lost when the timeout passes (see `lateReplies` for what follows). */
  timeoutMs: number;
  /** Report a reply that arrives after the timeout as a second, answered sample of the probe; default false. */
  lateReplies?: boolean;
  onSample(sample: ProbeSample): void;
  /** Socket and send failures, for the log; each failed probe is also reported as a lost sample. */
  onError?(message: string): void;
  /** Send times and round trips are on this clock's monotonic time (the system's by default). */
  clock?: Pick<Clock, "monotonic">;
}

export interface Monitor {
  /** Stops probing and closes the socket; no sample is reported afterwards. Idempotent. */
  stop(): void;
  /**
   * Probes every `ms` from now on (the pace, core/connection/pace.ts); a faster pace sends one probe at once, so a
   * tunnel that went quiet is asked right away.
   */
  setInterval(ms: number): void;
  /** Probes sent and not yet answered or timed out (diagnostics, tests). */
  readonly outstanding: number;
  /**
   * When the oldest probe sent after the newest answered one was sent, if it is still in flight; null when none
   * is. The dead window counts from here too: after a stall of the daemon itself nothing was sent, so nothing
   * could have been answered.
   */
  pendingSince(): number | null;
}

/** "DTRM": the first four bytes of every probe, so anything else arriving at the socket is ignored. */
const MAGIC = 0x4454524d;
/** magic (4) + nonce (4) + seq (4) + send time on the monitor's clock (8). */
export const PROBE_BYTES = 20;
/**
 * Probes in flight are capped so memory stays bounded whatever the settings: the schema allows at most
 * 10 s / 10 ms = 1000 in flight; beyond the cap the oldest probe is reported lost early.
 */
export const MAX_OUTSTANDING = 1024;
/**
 * A probe counted lost is still matched with its reply this long after it left: a reply later than that is past
 * every window the health verdict looks at (a brownout's 5 s plus the timeout, by default).
 */
export const LATE_KEEP_MS = 10_000;
/** After a bind failure (the leg's address not there yet or any more) the next tick tries again, at most this often. */
const REBIND_MIN_GAP_MS = 1000;

interface InFlight {
  seq: number;
  sentAt: number;
}

/** Encodes one probe; exported for tests. */
export function encodeProbe(nonce: number, seq: number, sentAt: number): Buffer {
  const b = Buffer.alloc(PROBE_BYTES);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(nonce >>> 0, 4);
  b.writeUInt32BE(seq >>> 0, 8);
  b.writeDoubleBE(sentAt, 12);
  return b;
}

/** Decodes a reply; null for anything that is not one of this monitor's probes. */
export function decodeProbe(msg: Buffer, nonce: number): { seq: number; sentAt: number } | null {
  if (msg.length !== PROBE_BYTES || msg.readUInt32BE(0) !== MAGIC || msg.readUInt32BE(4) !== nonce >>> 0) return null;
  return { seq: msg.readUInt32BE(8), sentAt: msg.readDoubleBE(12) };
}

export function startMonitor(opts: MonitorOptions): Monitor {
  if (!(Number.isFinite(opts.intervalMs) && opts.intervalMs > 0))
    throw new Error(`monitor ${opts.legId}: intervalMs must be positive`);
  if (!(Number.isFinite(opts.timeoutMs) && opts.timeoutMs > 0))
    throw new Error(`monitor ${opts.legId}: timeoutMs must be positive`);
  const clock = opts.clock ?? systemClock;
  const nonce = randomBytes(4).readUInt32BE(0);
  const inFlight = new Map<number, InFlight>();
  let seq = 0;
  let stopped = false;
  let socket: Socket | null = null;
  let bound = false;
  let lastBindAttempt = Number.NEGATIVE_INFINITY;
  let newestAnsweredSentAt = Number.NEGATIVE_INFINITY;
  /** Probes counted lost whose reply may still come (lateReplies), in send order: seq to send time. */
  const late = new Map<number, number>();

  const report = (sample: ProbeSample): void => {
    if (stopped) return;
    try {
      opts.onSample(sample);
    } catch (err) {
      // A listener's bug must not stop the probing that detects dead tunnels.
      opts.onError?.(`onSample threw: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  const fail = (message: string): void => {
    if (!stopped) opts.onError?.(`monitor ${opts.legId}: ${message}`);
  };
  const settle = (s: number, rttMs: number | null): void => {
    const p = inFlight.get(s);
    if (p === undefined) return; // already answered or timed out: a duplicate or late reply
    inFlight.delete(s);
    if (rttMs === null && opts.lateReplies === true) {
      if (late.size >= MAX_OUTSTANDING) {
        const oldest = late.keys().next();
        if (oldest.done !== true) late.delete(oldest.value);
      }
      late.set(p.seq, p.sentAt);
    }
    report({ seq: p.seq, sentAt: p.sentAt, rttMs });
  };
  const rtt = (sentAt: number): number => Math.max(0, Math.round((clock.monotonic() - sentAt) * 1000) / 1000);

  const onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    if (rinfo.address !== opts.target.address || rinfo.port !== opts.target.port) return;
    const d = decodeProbe(msg, nonce);
    if (d === null) return;
    const p = inFlight.get(d.seq);
    if (p === undefined) {
      const sentAt = late.get(d.seq);
      if (sentAt === undefined || sentAt !== d.sentAt) return;
      late.delete(d.seq);
      newestAnsweredSentAt = Math.max(newestAnsweredSentAt, sentAt);
      report({ seq: d.seq, sentAt, rttMs: rtt(sentAt), late: true });
      return;
    }
    if (p.sentAt !== d.sentAt) return;
    newestAnsweredSentAt = Math.max(newestAnsweredSentAt, p.sentAt);
    // Microsecond resolution is all a RTT needs; the rest is clock noise.
    settle(d.seq, rtt(p.sentAt));
  };

  const openSocket = (): void => {
    lastBindAttempt = clock.monotonic();
    const s = createSocket({ type: "udp4" });
    socket = s;
    bound = false;
    s.on("message", onMessage);
    s.on("error", (err: NodeJS.ErrnoException) => {
      // A bind error (EADDRNOTAVAIL while the leg's address is missing) leaves the socket unusable: drop it and
      // bind again on a later tick. Errors of a bound socket do not end it.
      if (socket === s && !bound) {
        socket = null;
        closeQuietly(s);
      }
      fail(`socket error: ${err.code ?? err.message}`);
    });
    s.on("listening", () => {
      if (socket === s) bound = true;
    });
    s.bind({ address: opts.sourceAddress, port: 0, exclusive: true });
  };

  const expire = (): void => {
    const due = clock.monotonic() - opts.timeoutMs;
    for (const p of inFlight.values()) {
      if (stopped || p.sentAt > due) break;
      settle(p.seq, null);
    }
  };

  const tick = (): void => {
    if (stopped) return;
    if (socket === null && clock.monotonic() - lastBindAttempt >= REBIND_MIN_GAP_MS) openSocket();
    seq = (seq + 1) >>> 0;
    const s = seq;
    const sentAt = clock.monotonic();
    for (const [k, at] of late) {
      if (sentAt - at < LATE_KEEP_MS) break;
      late.delete(k);
    }
    if (inFlight.size >= MAX_OUTSTANDING) {
      const oldest = inFlight.keys().next();
      if (oldest.done !== true) settle(oldest.value, null);
    }
    inFlight.set(s, { seq: s, sentAt });
    // Timeouts are settled on the ticks, not by a timer per probe: an idle tunnel's monitor wakes the process once
    // per probe sent and once per reply, nothing else (a lost probe is reported at the first tick after its
    // timeout; at the fast pace that is within one interval of it, at the idle pace nothing waits on it: pace.ts
    // watches pendingSince). After an event-loop stall Node runs due timers before it reads the sockets, so the
    // check phase settles: a reply that arrived during the stall is read first and its probe is not counted lost.
    setImmediate(expire);
    const sock = socket;
    if (sock === null) {
      settle(s, null);
      return;
    }
    try {
      // Before `listening`, dgram queues the send until the bind completes (or drops it if the bind fails).
      sock.send(encodeProbe(nonce, s, sentAt), opts.target.port, opts.target.address, (err) => {
        if (err !== null) {
          fail(`send failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
          settle(s, null);
        }
      });
    } catch (err) {
      fail(`send failed: ${err instanceof Error ? err.message : String(err)}`);
      settle(s, null);
    }
  };

  openSocket();
  let intervalMs = opts.intervalMs;
  let interval = setInterval(tick, intervalMs);
  tick();

  return {
    stop(): void {
      if (stopped) return;
      stopped = true;
      clearInterval(interval);
      inFlight.clear();
      late.clear();
      if (socket !== null) closeQuietly(socket);
      socket = null;
    },
    setInterval(ms: number): void {
      if (stopped || ms === intervalMs) return;
      if (!(Number.isFinite(ms) && ms > 0)) throw new Error(`monitor ${opts.legId}: intervalMs must be positive`);
      const faster = ms < intervalMs;
      intervalMs = ms;
      clearInterval(interval);
      interval = setInterval(tick, ms);
      if (faster) tick();
    },
    get outstanding(): number {
      return inFlight.size;
    },
    pendingSince(): number | null {
      // In send order; at most MAX_OUTSTANDING, in practice timeout / interval (40 at the defaults).
      for (const p of inFlight.values()) if (p.sentAt > newestAnsweredSentAt) return p.sentAt;
      return null;
    },
  };
}

function closeQuietly(s: Socket): void {
  try {
    s.close();
  } catch {
    // already closed
  }
}
