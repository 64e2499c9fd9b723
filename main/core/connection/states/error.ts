/**
 * The error state: the last race found no working leg. It retries by itself after a capped exponential backoff
 * with jitter (../../backoff.ts), unless every leg failed for a reason a retry cannot fix; `connect` retries at
 * once either way.
 */
import { backoffMs, NO_JITTER } from "../../backoff.ts";
import type { Entry, ErrorState, MachineContext, Outcome, Shared } from "../machine-state.ts";
import {
  cancelAllTimers,
  ERROR_RECHECK_MS,
  goWaiting,
  returnedGateways,
  stateEvent,
  withCandidates,
} from "../machine-state.ts";
import { raceRecord } from "../race.ts";
import { rearmIfEarly, timerDue } from "../timers.ts";
import type { Effect, MachineInput } from "../types.ts";

export function summary(state: ErrorState, now: number): string {
  if (state.nextRetryAt === null) return `${state.reason}; connect again to retry`;
  const s = Math.ceil((state.nextRetryAt - now) / 1000);
  return s > 0 ? `${state.reason}; retrying in ${s} s` : `${state.reason}; retrying now`;
}

type ErrorEntry = Extract<Entry, { to: "error" }>;

/** The next look at the candidates: only while a retry is due later than one more round would take. */
function recheckFor(nextRetryAt: number | null, now: number): number | null {
  return nextRetryAt !== null && nextRetryAt - now > ERROR_RECHECK_MS ? now + ERROR_RECHECK_MS : null;
}

export function enter(shared0: Shared, now: number, ctx: MachineContext, e: ErrorEntry): Outcome {
  const effects: Effect[] = [];
  let shared: Shared = { ...shared0, since: now };
  if (e.race !== null) {
    const record = raceRecord(e.race);
    shared = { ...shared, lastRace: record };
    effects.push(
      { type: "record-race", race: record },
      { type: "notify", event: { type: "race-ended", at: now, race: record } },
    );
  }
  if (e.failover !== null) {
    shared = { ...shared, lastFailover: e.failover };
    effects.push(
      { type: "record-failover", failover: e.failover },
      { type: "notify", event: { type: "failover", at: now, failover: e.failover } },
    );
  }
  const nextRetryAt = e.retry ? now + backoffMs(e.attempt, ctx.policy.retry, ctx.random ?? NO_JITTER) : null;
  if (nextRetryAt !== null) effects.push({ type: "set-timer", timer: "backoff", at: nextRetryAt });
  const recheckAt = recheckFor(nextRetryAt, now);
  if (recheckAt !== null) effects.push({ type: "set-timer", timer: "recheck-candidates", at: recheckAt });
  const state: ErrorState = { name: "error", shared, reason: e.reason, attempt: e.attempt, nextRetryAt, recheckAt };
  effects.push(stateEvent("error", now, summary(state, now)));
  return { state, effects };
}

export function handle(state: ErrorState, input: MachineInput): Outcome {
  switch (input.type) {
    case "timer":
      if (input.timer === "recheck-candidates") {
        if (!timerDue(state.recheckAt, input.now))
          return { state, effects: rearmIfEarly("recheck-candidates", state.recheckAt, input.now) };
        return { state: { ...state, recheckAt: null }, effects: [{ type: "resolve-candidates" }] };
      }
      if (input.timer !== "backoff") return { state, effects: [] };
      if (!timerDue(state.nextRetryAt, input.now))
        return { state, effects: rearmIfEarly("backoff", state.nextRetryAt, input.now) };
      return { go: { to: "resolving", reason: "retry", attempt: state.attempt }, shared: state.shared, effects: [] };
    case "connect":
      return {
        go: { to: "resolving", reason: "connect", attempt: state.attempt },
        shared: state.shared,
        effects: [{ type: "cancel-timer", timer: "backoff" }],
      };
    case "disconnect":
      return { go: { to: "disconnected" }, shared: state.shared, effects: cancelAllTimers() };
    case "network":
      if (input.change === "offline") return goWaiting(state.shared, input.detail, []);
      // A new or returning route (or the first look finding one) makes the backoff pointless: retry at once.
      if (input.initial === true) return { state, effects: [] };
      return {
        go: { to: "resolving", reason: "connect", attempt: 0 },
        shared: state.shared,
        effects: [{ type: "cancel-timer", timer: "backoff" }],
      };
    case "tunnel-activity":
      return { state, effects: [] };
    case "wake":
      // Whatever failed before the sleep says little about now: look again at once.
      return {
        go: { to: "resolving", reason: "retry", attempt: state.attempt },
        shared: state.shared,
        effects: [{ type: "cancel-timer", timer: "backoff" }],
      };
    case "leg-up":
      return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
    case "candidates": {
      const shared = withCandidates(state.shared, input.candidates);
      // A gateway that was silent answers again: the backoff waited for exactly this, retry at once.
      if (state.nextRetryAt !== null && returnedGateways(state.shared.candidates, shared.candidates).length > 0)
        return {
          go: { to: "resolving", reason: "retry", attempt: state.attempt },
          shared,
          effects: [
            { type: "cancel-timer", timer: "backoff" },
            { type: "cancel-timer", timer: "recheck-candidates" },
          ],
        };
      const recheckAt = state.recheckAt ?? recheckFor(state.nextRetryAt, input.now);
      const effects: Effect[] =
        recheckAt !== null && recheckAt !== state.recheckAt
          ? [{ type: "set-timer", timer: "recheck-candidates", at: recheckAt }]
          : [];
      return { state: { ...state, shared, recheckAt }, effects };
    }
    case "leg-failed":
    case "leg-down":
    case "probe":
      return { state, effects: [] };
  }
}
