/**
 * The chaos soak's arithmetic, kept pure so it is tested without a lab: which gateways a set of faults leaves
 * healthy, the share of time connected while one was, and the invariant checks that read the status and probe
 * timelines (connected while the probe stream is dead, detourd not answering).
 */
import { GATEWAY_NAMES, type GatewayName } from "./topology.ts";
import type { BlockedProto } from "./chaos-schedule.ts";

/**
 * After a fault fires, detourd gets this long to be connected again before the time counts against it: detection
 * (0.3 s dead verdict, 5 s for a brownout) and a failover to the standby or a race (its legs' 5 s deadline).
 */
export const RECOVERY_GRACE_MS = 5_000;
/** Connected by detourd's own account while the probe stream through the tunnel got no reply for longer than this
 * is a lie a user would notice; the monitor declares a dead leg well within it. */
export const PROBE_DEAD_LIMIT_MS = 4_000;
/** detourd not answering `status` for longer than this (outside a restart the soak caused) is a hang. */
export const STATUS_SILENCE_LIMIT_MS = 5_000;
/** Loss at or above this share leaves a gateway unusable for the soak's purpose (most probes and handshakes die). */
export const UNHEALTHY_LOSS_PERCENT = 50;

/** The faults in force at one instant, as the runner applied them. */
export interface FaultState {
  /** Gateways powered off (kill) or with their link cut (flap in its off phase). */
  down: ReadonlySet<GatewayName>;
  blocks: readonly { target: "client" | GatewayName; proto: BlockedProto }[];
  losses: readonly { target: "client" | GatewayName; percent: number }[];
}

/** Which blocks stop each tunnel protocol; a DTLS block only slows AnyConnect down to TLS. */
const STOPPED_BY: Record<"wireguard" | "ikev2" | "anyconnect", readonly BlockedProto[]> = {
  wireguard: ["wireguard", "udp"],
  ikev2: ["ike", "udp"],
  anyconnect: ["tls"],
};

/** A gateway is healthy when it is up, one of its protocols gets through, and loss leaves it usable. */
export function healthyGateways(s: FaultState): GatewayName[] {
  return GATEWAY_NAMES.filter((g) => {
    if (s.down.has(g)) return false;
    const applies = (t: "client" | GatewayName): boolean => t === "client" || t === g;
    const usable = Object.values(STOPPED_BY).some(
      (stoppers) => !s.blocks.some((b) => applies(b.target) && stoppers.includes(b.proto)),
    );
    if (!usable) return false;
    // Losses on the client link and the gateway's link compound.
    const pass = s.losses.filter((l) => applies(l.target)).reduce((p, l) => p * (1 - l.percent / 100), 1);
    return (1 - pass) * 100 < UNHEALTHY_LOSS_PERCENT;
  });
}

/** One status poll: `answered` false when detourd did not answer in time or was down. */
export interface StatusSample {
  at: number;
  answered: boolean;
  state: string | null;
  gateway: string | null;
  /** At least one gateway healthy at this instant (from the fault state). */
  anyHealthy: boolean;
  /** Which gateways the fault state left healthy at this instant (absent: not recorded). */
  healthy?: readonly string[];
  /** detourd's status summary line, null when it did not answer. */
  summary?: string | null;
  /** detourd was down on purpose (between the soak's SIGKILL and its restart). */
  expectedDown: boolean;
}

export interface Interval {
  from: number;
  to: number;
}

export interface ShareReport {
  /** Time with at least one healthy gateway, and the part of it connected. */
  healthyMs: number;
  connectedWhileHealthyMs: number;
  /** The same, leaving out RECOVERY_GRACE_MS after each fault (the time a failover or restart is allowed). */
  owedMs: number;
  connectedWhileOwedMs: number;
  /** Where the owed time that was not connected went: detourd's state, or "unanswered". */
  notConnectedOwedMs: Record<string, number>;
}

function inAny(t: number, ivs: readonly Interval[]): boolean {
  return ivs.some((i) => t >= i.from && t < i.to);
}

/** Each sample stands for the time until the next one; the last one for nothing. */
export function connectedShare(samples: readonly StatusSample[], faultTimes: readonly number[]): ShareReport {
  const grace = faultTimes.map((t) => ({ from: t, to: t + RECOVERY_GRACE_MS }));
  const r: ShareReport = {
    healthyMs: 0,
    connectedWhileHealthyMs: 0,
    owedMs: 0,
    connectedWhileOwedMs: 0,
    notConnectedOwedMs: {},
  };
  for (let i = 0; i + 1 < samples.length; i++) {
    const s = samples[i];
    const next = samples[i + 1];
    if (s === undefined || next === undefined || !s.anyHealthy) continue;
    const dt = next.at - s.at;
    const connected = s.answered && s.state === "connected";
    r.healthyMs += dt;
    if (connected) r.connectedWhileHealthyMs += dt;
    if (!inAny(s.at, grace)) {
      r.owedMs += dt;
      if (connected) r.connectedWhileOwedMs += dt;
      else {
        const where = s.answered ? (s.state ?? "unknown") : "unanswered";
        r.notConnectedOwedMs[where] = (r.notConnectedOwedMs[where] ?? 0) + dt;
      }
    }
  }
  return r;
}

/** One action of the soak as fired (a fault, its end, a flap toggle), at an absolute instant. */
export interface FiredAt {
  at: number;
  what: string;
}

/** How long detourd spent in one state (with one summary line) inside an owed stretch. */
export interface StretchState {
  state: string;
  summary: string;
  ms: number;
}

/**
 * A stretch of owed time not connected: outside every recovery grace, at least one gateway healthy, detourd not
 * connected, from `from` for `ms`. What detourd said during it, which gateways were healthy, and the soak's last
 * actions before it are what explains it.
 */
export interface OwedStretch {
  from: number;
  ms: number;
  /** detourd's states in order, consecutive samples with the same state and summary merged. */
  states: StretchState[];
  /** The distinct sets of healthy gateways in order (most stretches have one). */
  healthy: string[][];
  /** The last two actions the soak fired before the stretch began, oldest first. */
  lastFaults: FiredAt[];
}

/** How many actions before a stretch explain it. */
const FAULTS_BEFORE_STRETCH = 2;

/**
 * Every owed stretch not connected, largest first; their lengths add up to the not-connected part of
 * connectedShare's owed time (the same sample arithmetic: each sample stands for the time until the next).
 */
export function owedStretches(
  samples: readonly StatusSample[],
  faultTimes: readonly number[],
  fired: readonly FiredAt[],
): OwedStretch[] {
  const grace = faultTimes.map((t) => ({ from: t, to: t + RECOVERY_GRACE_MS }));
  const out: OwedStretch[] = [];
  let cur: OwedStretch | null = null;
  for (let i = 0; i + 1 < samples.length; i++) {
    const s = samples[i];
    const next = samples[i + 1];
    if (s === undefined || next === undefined) continue;
    const owedNotConnected = s.anyHealthy && !inAny(s.at, grace) && !(s.answered && s.state === "connected");
    if (!owedNotConnected) {
      cur = null;
      continue;
    }
    const dt = next.at - s.at;
    if (cur === null) {
      cur = {
        from: s.at,
        ms: 0,
        states: [],
        healthy: [],
        lastFaults: fired.filter((f) => f.at <= s.at).slice(-FAULTS_BEFORE_STRETCH),
      };
      out.push(cur);
    }
    cur.ms += dt;
    const state = s.answered ? (s.state ?? "unknown") : "unanswered";
    const summary = s.answered ? (s.summary ?? "") : "";
    const lastState = cur.states[cur.states.length - 1];
    if (lastState !== undefined && lastState.state === state && lastState.summary === summary) lastState.ms += dt;
    else cur.states.push({ state, summary, ms: dt });
    const healthy = [...(s.healthy ?? [])];
    const lastHealthy = cur.healthy[cur.healthy.length - 1];
    if (lastHealthy?.join(",") !== healthy.join(",")) cur.healthy.push(healthy);
  }
  return out.sort((a, b) => b.ms - a.ms || a.from - b.from);
}

export interface Violation {
  at: number;
  kind: string;
  detail: string;
}

/**
 * Stretches where detourd said "connected" (continuously, one gateway) while the probe stream had no reply
 * for longer than PROBE_DEAD_LIMIT_MS: `dead` are the stream's gaps as [first lost probe, next reply).
 */
export function connectedButDead(samples: readonly StatusSample[], dead: readonly Interval[]): Violation[] {
  const out: Violation[] = [];
  for (const d of dead) {
    if (d.to - d.from <= PROBE_DEAD_LIMIT_MS) continue;
    let runStart: StatusSample | null = null;
    let runEnd = 0;
    const flush = (): void => {
      if (runStart !== null && runEnd - runStart.at > PROBE_DEAD_LIMIT_MS)
        out.push({
          at: runStart.at,
          kind: "connected-but-no-traffic",
          detail: `status said connected to ${String(runStart.gateway)} for ${Math.round(runEnd - runStart.at)} ms while no probe through the tunnel got a reply`,
        });
      runStart = null;
    };
    for (const s of samples) {
      if (s.at < d.from || s.at >= d.to) continue;
      const connected = s.answered && s.state === "connected";
      if (connected && runStart !== null && s.gateway === runStart.gateway) runEnd = s.at;
      else {
        flush();
        if (connected) {
          runStart = s;
          runEnd = s.at;
        }
      }
    }
    flush();
  }
  return out;
}

/** Runs of unanswered status polls longer than STATUS_SILENCE_LIMIT_MS while detourd should have been up. */
export function statusSilences(samples: readonly StatusSample[]): Violation[] {
  const out: Violation[] = [];
  let from: number | null = null;
  let last = 0;
  const flush = (): void => {
    if (from !== null && last - from > STATUS_SILENCE_LIMIT_MS)
      out.push({
        at: from,
        kind: "status-unanswered",
        detail: `detourd did not answer status for ${Math.round(last - from)} ms`,
      });
    from = null;
  };
  for (const s of samples) {
    if (s.answered || s.expectedDown) {
      flush();
      continue;
    }
    from ??= s.at;
    last = s.at;
  }
  flush();
  return out;
}

/** Merges the dead intervals of consecutive probe streams (a gap may run over a stream's end into the next). */
export function mergeIntervals(ivs: readonly Interval[], joinWithinMs: number): Interval[] {
  const sorted = [...ivs].sort((a, b) => a.from - b.from);
  const out: Interval[] = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && i.from <= last.to + joinWithinMs) last.to = Math.max(last.to, i.to);
    else out.push({ ...i });
  }
  return out;
}

/**
 * The median of the first and of the last `n` readings (fewer when the series is short, so the two ends never
 * overlap): one reading of V8's heap swings with each garbage collection, a median over half a minute does not.
 */
export function edgeMedians(values: readonly number[], n: number): { first: number; last: number } | null {
  if (values.length === 0) return null;
  const k = Math.max(1, Math.min(n, Math.floor(values.length / 2)));
  const median = (xs: readonly number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
  };
  return { first: median(values.slice(0, k)), last: median(values.slice(-k)) };
}

/** Lines present on one side only, per category of a namespace snapshot. */
export function diffSnapshots(
  before: Readonly<Record<string, readonly string[]>>,
  after: Readonly<Record<string, readonly string[]>>,
): string[] {
  const out: string[] = [];
  for (const k of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) {
    const b = new Set(before[k] ?? []);
    const a = new Set(after[k] ?? []);
    for (const l of a) if (!b.has(l)) out.push(`${k}: left behind: ${l}`);
    for (const l of b) if (!a.has(l)) out.push(`${k}: gone: ${l}`);
  }
  return out;
}
