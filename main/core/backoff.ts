/**
 * Capped exponential backoff with jitter, for every retry loop in Detour: the connection machine's retries, the
 * telemetry sender, the remote policy poller and the diagnostics upload.
 *
 * Jitter is "equal jitter": the wait after a failure is drawn uniformly from the upper half of the exponential
 * step, [ceiling / 2, ceiling]. A fleet that lost its server at the same moment (a collector restart, a gateway
 * outage, a policy server behind one load balancer) then comes back spread over half a step instead of in
 * lockstep. "Full jitter" ([0, ceiling]) spreads a little wider, but it can draw a wait near zero, so a client
 * would sometimes retry at once against a server that has just failed; equal jitter keeps every caller's
 * documented first wait as a floor of half of it, and a user-facing bound ("about half a minute of trying")
 * stays a bound.
 *
 * Pure: randomness is an input. The agent passes Math.random; tests pass a fixed value or a seeded generator.
 */

export interface BackoffPolicy {
  /** The step after the first failure. */
  initialMs: number;
  /** No step is longer than this. */
  maxMs: number;
}

/** A source of uniform numbers in [0, 1), like Math.random. */
export type Random = () => number;

/** No jitter: every wait is the step's ceiling (deterministic tests, and callers that must not spread). */
export const NO_JITTER: Random = () => 0;

/** The exponential step after `failures` consecutive failures (1: initialMs, 2: twice that, ...), capped; 0 before any. */
export function backoffCeilingMs(failures: number, policy: BackoffPolicy): number {
  if (!(failures >= 1)) return 0;
  // 2^52 keeps the product finite; any real cap is reached long before.
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(Math.floor(failures) - 1, 52));
}

/**
 * The wait after `failures` consecutive failures: the step's ceiling less up to half of it, as `random` draws
 * (0 gives the ceiling itself, values towards 1 approach half of it). Whole milliseconds; 0 before any failure.
 */
export function backoffMs(failures: number, policy: BackoffPolicy, random: Random): number {
  const ceiling = backoffCeilingMs(failures, policy);
  const r = random();
  // A source outside [0, 1) (a bad test double, NaN) must not produce a wait outside the band.
  const u = r >= 0 && r < 1 ? r : 0;
  return Math.round(ceiling - (ceiling / 2) * u);
}
