/**
 * The in-tunnel probes' pace, following the user's traffic. Pure: every call takes `now`.
 *
 *            user traffic into a tunnel (tunnel-activity), a slow probe left unanswered, a wake, a path change
 *          +--------------------------------------------------------------------------------------------+
 *          v                                                                                            |
 *   +-------------+   ACTIVITY_HOLD_MS without user traffic, healthy, nothing waiting   +-------------+ |
 *   |    fast     | ------------------------------------------------------------------> |    slow     |-+
 *   | health's    |                                                                      | idle pace:  |
 *   | probe pace, |                                                                      | never judged|
 *   | judged dead |                                                                      | dead, only  |
 *   +-------------+                                                                      | suspected   |
 *                                                                                        +-------------+
 *
 * Fast is today's liveness (an echo every 25 ms, dead after 300 ms of silence). Slow sends one echo every two
 * seconds on the active tunnel and one every four on the standby (the defaults): the path stays known and NAT
 * state warm for a few dozen bytes a second. Slow never declares a tunnel dead: a slow probe left unanswered past its suspicion
 * time brings the fast pace back, and death is then judged on fast probes only (health.ts evidenceFrom), so a
 * lost idle probe on a lossy link costs a second of fast probes, never a false failover. The first user packet
 * into a tunnel brings the fast pace back at once (the kill switch traces it: firewall.linux.ts tunnelActivity),
 * so a gateway that died while the tunnel was idle is found within the dead window of that packet.
 */
import type { HealthPolicy } from "../config/schema.ts";
import { pathRttOf, type HealthState } from "./health.ts";

export type ProbePace = "fast" | "slow";

/**
 * The fast pace holds this long after the last sign of user traffic. The kill switch traces at most one packet a
 * second while traffic flows, so three seconds ride out two missed signs; after that the tunnel is idle.
 */
export const ACTIVITY_HOLD_MS = 3_000;
/**
 * A slow probe is suspected lost, and the fast pace comes back, once it waited this long, or twice the path's
 * round trip on a far path (a reply 360 ms away is not late at 150 ms).
 */
export const SUSPECT_MIN_MS = 150;
/** Suspicion waits this many round trips of the path. */
export const SUSPECT_RTT_MULTIPLE = 2;

export interface PaceState {
  pace: ProbePace;
  /** The fast pace holds at least until then (the last sign of traffic plus the hold). */
  fastUntil: number;
  /**
   * When the current fast pace began: silence is judged from here at the earliest (a standby last heard at the
   * idle pace, two seconds ago, has had no fast probe to answer yet).
   */
  fastSince: number;
}

/** Whether the pace adapts at all: without an idle interval (or without a way to see traffic) it stays fast. */
export function paceAdaptive(policy: HealthPolicy): boolean {
  return policy.idleProbeIntervalMs !== null;
}

/** A tunnel that just came up is watched at the fast pace: its user's traffic is about to flow. */
export function paceStart(now: number): PaceState {
  return { pace: "fast", fastUntil: now + ACTIVITY_HOLD_MS, fastSince: now };
}

/** Fast again (or longer) from `now`: user traffic, a suspicion, a wake or a path change. */
export function paceQuicken(p: PaceState, now: number): PaceState {
  return {
    pace: "fast",
    fastUntil: Math.max(p.fastUntil, now + ACTIVITY_HOLD_MS),
    fastSince: p.pace === "fast" ? p.fastSince : now,
  };
}

/**
 * Whether the fast pace may end now: the hold is over, the tunnel healthy and answering (its last reply younger
 * than a suspicion: a probe is nearly always in flight at the fast pace, so "nothing waiting" is not the test),
 * and not degrading (a brownout condition building is judged on fast probes, and the standby it would move to is
 * measured at its fast pace meanwhile: standby.ts standbyMeasuredBetter).
 */
export function paceMaySlow(p: PaceState, h: HealthState, now: number, policy: HealthPolicy): boolean {
  return (
    paceAdaptive(policy) &&
    p.pace === "fast" &&
    now >= p.fastUntil &&
    h.verdict.state === "healthy" &&
    h.overSince === null &&
    h.lastReplyAt !== null &&
    now - h.lastReplyAt <= suspectAfterMs(h)
  );
}

/** How long a slow probe may wait for its reply before the fast pace comes back. */
export function suspectAfterMs(h: HealthState): number {
  return Math.max(SUSPECT_MIN_MS, Math.ceil(SUSPECT_RTT_MULTIPLE * (pathRttOf(h) ?? 0)));
}

/**
 * At the slow pace, when silence becomes suspicious: one idle interval after the last reply the next probe is
 * out, and it had its suspicion time to be answered. Only meaningful when the pace adapts.
 */
export function paceSuspectAt(h: HealthState, policy: HealthPolicy): number {
  return (h.lastReplyAt ?? h.startedAt) + (policy.idleProbeIntervalMs ?? policy.probeIntervalMs) + suspectAfterMs(h);
}

/** The interval a monitor of this role probes at under this pace. */
export function paceIntervalMs(
  pace: ProbePace,
  role: "active" | "standby",
  health: Pick<HealthPolicy, "probeIntervalMs" | "idleProbeIntervalMs">,
  standby: { probeIntervalMs: number; idleProbeIntervalMs: number | null },
): number {
  if (role === "standby")
    return pace === "slow" ? (standby.idleProbeIntervalMs ?? standby.probeIntervalMs) : standby.probeIntervalMs;
  return pace === "slow" ? (health.idleProbeIntervalMs ?? health.probeIntervalMs) : health.probeIntervalMs;
}
