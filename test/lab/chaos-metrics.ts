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
