/**
 * Failover drills, the pure part: what a drill request may ask for, the SLA it is judged against by default,
 * when a drill is refused, how long it watches, and the verdict from what it observed. The agent's runner
 * (main/agent/drill.ts) blocks the gateway, watches and feeds its observation in here.
 */
import type { ConnectionStateName, DrillResult, FailoverRecord, LegKind } from "./connection/types.ts";

/**
 * The SLA a drill is judged against unless the request names one: Detour promises to move traffic to the next
 * healthy gateway in under a second (README), so by default a drill checks exactly that promise.
 */
export const DEFAULT_SLA_MS = 1000;
/** An SLA is a whole number of milliseconds; 1 ms is impossible to meet and still a valid way to see a failing drill. */
export const MIN_SLA_MS = 1;
/**
 * Beyond 10 s a failure is an outage users report, not a failover an SLA describes; the bound also keeps the
 * watch window (3 x SLA) within MAX_OBSERVE_MS, so every accepted SLA can actually be observed being met.
 */
export const MAX_SLA_MS = 10_000;
/** How long a drill watches, as a multiple of the SLA: long enough to measure a failover that misses it. */
export const OBSERVE_SLA_FACTOR = 3;
/**
 * The shortest watch: the default dead window (600 ms) plus a race that falls back to a slow leg (IKEv2 or TLS,
 * up to ~1.2 s on a loaded two-core machine) fit several times over, so a tiny SLA still gets real numbers.
 */
export const MIN_OBSERVE_MS = 5000;
/** The longest watch: the user's gateway stays blocked at most this long, whatever the SLA. */
export const MAX_OBSERVE_MS = 30_000;
/**
 * Upper bound of a whole drill: the watch plus its preparation (a first reply over the tunnel, 2 s) and the
 * block's apply and lift (5 s each). The control server and client bound the drill request by this plus margins.
 */
export const DRILL_MAX_DURATION_MS = MAX_OBSERVE_MS + 12_000;

export type SlaParse = { ok: true; slaMs: number } | { ok: false; message: string };

/** The SLA of a drill request: undefined gives the default; anything else must be a whole number of ms in range. */
export function parseSlaMs(value: unknown): SlaParse {
  if (value === undefined) return { ok: true, slaMs: DEFAULT_SLA_MS };
  const n =
    typeof value === "string" && /^\s*\d+\s*$/.test(value) ? Number(value) : typeof value === "number" ? value : NaN;
  if (!Number.isInteger(n) || n < MIN_SLA_MS || n > MAX_SLA_MS) {
    const got =
      typeof value === "string"
        ? JSON.stringify(value.slice(0, 40))
        : typeof value === "number"
          ? String(value)
          : typeof value;
    return {
      ok: false,
      message: `the SLA must be a whole number of milliseconds from ${MIN_SLA_MS} to ${MAX_SLA_MS}; got ${got}`,
    };
  }
  return { ok: true, slaMs: n };
}

/** How long a drill with this SLA keeps the gateway blocked at most while it waits for detection and restoration. */
export function observeWindowMs(slaMs: number): number {
  return Math.min(MAX_OBSERVE_MS, Math.max(MIN_OBSERVE_MS, slaMs * OBSERVE_SLA_FACTOR));
}

export interface DrillPreconditions {
  state: ConnectionStateName;
  gateway: string | null;
  /** Other gateways the daemon could fail over to (with an address). */
  otherGateways: readonly string[];
  /** Another drill is under way. */
  running: boolean;
}

/** Why a drill must not run now, or null when it may. A refused drill blocks nothing. */
export function refusalReason(p: DrillPreconditions): string | null {
  if (p.running) return "another drill is under way; wait for its result";
  if (p.state !== "connected" || p.gateway === null)
    return `detourd is not connected (it is ${p.state}); connect first, then drill`;
  if (p.otherGateways.length === 0)
    return `no other gateway to fail over to: ${p.gateway} is the only one with an address`;
  return null;
}

/** What the runner saw, in epoch ms; null where something never happened. */
export interface DrillObservation {
  id: string;
  startedAt: number;
  endedAt: number;
  slaMs: number;
  observeMs: number;
  from: { gateway: string; kind: LegKind };
  to: { gateway: string; kind: LegKind } | null;
  blockedAt: number;
  liftedAt: number | null;
  detectedAt: number | null;
  restoredAt: number | null;
  probesSent: number;
  probesLost: number;
  failover: FailoverRecord | null;
  /** A reply over the host's routes arrived after the block and before detection: the block did not cut the path. */
  answeredDuringBlock: boolean;
  /** Why watching stopped early (disconnected, daemon stopping, the block could not be applied), or null. */
  interrupted: string | null;
  /** detourd ended in the error state (every other leg failed) with this reason. */
  errorReason: string | null;
}

/** Whole milliseconds: probe round trips carry microseconds that say nothing about an outage. */
function after(t: number | null, from: number): number | null {
  return t === null ? null : Math.max(0, Math.round(t - from));
}

/** The verdict: pass only if detection and restoration both happened, were measured, and are within the SLA. */
export function evaluateDrill(o: DrillObservation): DrillResult {
  const detectedAfterMs = after(o.detectedAt, o.blockedAt);
  const restoredAfterMs = after(o.restoredAt, o.blockedAt);
  const gw = o.from.gateway;
  let reason: string;
  if (o.interrupted !== null) reason = o.interrupted;
  else if (o.answeredDuringBlock)
    reason = `traffic still flowed while ${gw} was blocked, so the block did not cut the path users take and nothing could be measured`;
  else if (detectedAfterMs === null) reason = `detourd did not notice that ${gw} was blocked within ${o.observeMs} ms`;
  else if (o.to === null)
    reason =
      o.errorReason !== null
        ? `no other gateway took over: ${o.errorReason}`
        : `no other gateway took over within ${o.observeMs} ms`;
  else if (restoredAfterMs === null)
    reason = `detourd moved to ${o.to.gateway}, but traffic did not flow again within ${o.observeMs} ms of the block`;
  else if (detectedAfterMs > o.slaMs) reason = `detection ${detectedAfterMs} ms exceeds SLA ${o.slaMs} ms`;
  else if (restoredAfterMs > o.slaMs) reason = `restoration ${restoredAfterMs} ms exceeds SLA ${o.slaMs} ms`;
  else reason = `detected in ${detectedAfterMs} ms and restored in ${restoredAfterMs} ms, within SLA ${o.slaMs} ms`;
  const pass =
    o.interrupted === null &&
    !o.answeredDuringBlock &&
    o.to !== null &&
    detectedAfterMs !== null &&
    restoredAfterMs !== null &&
    restoredAfterMs <= o.slaMs &&
    detectedAfterMs <= o.slaMs;
  return {
    id: o.id,
    startedAt: o.startedAt,
    endedAt: o.endedAt,
    slaMs: o.slaMs,
    verdict: pass ? "pass" : "fail",
    reason,
    from: o.from,
    to: o.to,
    blockedAt: o.blockedAt,
    liftedAt: o.liftedAt,
    detectedAt: o.detectedAt,
    detectedAfterMs,
    restoredAt: o.restoredAt,
    restoredAfterMs,
    probesSent: o.probesSent,
    probesLost: o.probesLost,
    failover: o.failover,
  };
}

/** The result of a drill that did not run. */
export function refusedDrill(
  id: string,
  now: number,
  slaMs: number,
  from: DrillResult["from"],
  reason: string,
): DrillResult {
  return {
    id,
    startedAt: now,
    endedAt: now,
    slaMs,
    verdict: "refused",
    reason,
    from,
    to: null,
    blockedAt: null,
    liftedAt: null,
    detectedAt: null,
    detectedAfterMs: null,
    restoredAt: null,
    restoredAfterMs: null,
    probesSent: 0,
    probesLost: 0,
    failover: null,
  };
}
