/** The racing state: legs to the best gateways start a stagger apart and the first one that passes traffic wins. */
import type { MachineContext, Outcome, RacingState, Shared } from "../machine-state.ts";
import {
  activeFromLegUp,
  allocateLegs,
  cancelAllTimers,
  describeLegs,
  extendBeforeFailure,
  goWaiting,
  nextRaceId,
  RACE_RECHECK_MS,
  raceFailure,
  replanRace,
  returnedGateways,
  reviveRace,
  stateEvent,
  withCandidates,
} from "../machine-state.ts";
import { allKindsUnreachable } from "../candidates.ts";
import {
  raceCancel,
  raceHasLeg,
  raceOnLegFailed,
  raceOnLegUp,
  raceOnStaggerTimer,
  raceRecord,
  raceStart,
} from "../race.ts";
import { rearmIfEarly, timerDue } from "../timers.ts";
import type { Candidate, MachineInput, RaceRecord } from "../types.ts";

export function summary(state: RacingState): string {
  const live = state.race.legs.filter((l) => l.outcome === "starting").map((l) => l.leg);
  const failed = state.race.legs.filter((l) => l.outcome === "failed").length;
  const prefix = state.race.reason === "retry" ? "Retrying" : "Connecting";
  const trying = live.length > 0 ? `trying ${describeLegs(live)}` : "starting";
  return `${prefix}: ${trying}${failed > 0 ? ` (${failed} attempt${failed === 1 ? "" : "s"} failed)` : ""}`;
}

/**
 * Why a race had no leg to start: the user's next step differs between a network that reaches no gateway at all
 * (offline, no route) and gateways that answered but refuse every protocol.
 */
function emptyRaceReason(ranked: readonly Candidate[]): string {
  if (ranked.length === 0) return "No gateway configured or discovered";
  if (ranked.every((c) => allKindsUnreachable(c) && c.probe?.answered === false))
    return "No gateway reachable: no route to any gateway from this network (offline?)";
  if (ranked.some((c) => allKindsUnreachable(c) && c.probe?.answered === true))
    return "No gateway reachable: the gateways refused every protocol from this network";
  return "No gateway reachable";
}

export function enter(
  shared0: Shared,
  now: number,
  ctx: MachineContext,
  reason: RaceRecord["reason"],
  attempt: number,
  ranked: Candidate[],
): Outcome {
  const planned = allocateLegs(shared0, ranked, ctx.policy.race, [], ctx.preferredLeg ?? null);
  const { id, shared } = nextRaceId(planned.shared);
  const r = raceStart(id, planned.legs, reason, now, ctx.policy.race);
  if (r.race.status !== "running") {
    // Nothing to try (every candidate's ports refused, or no candidate at all): the backoff keeps looking.
    return {
      go: {
        to: "error",
        reason: emptyRaceReason(ranked),
        attempt: attempt + 1,
        retry: true,
        race: r.race,
        failover: null,
      },
      shared,
      effects: r.effects,
    };
  }
  const recheckAt = now + RACE_RECHECK_MS;
  const state: RacingState = { name: "racing", shared: { ...shared, since: now }, race: r.race, attempt, recheckAt };
  return {
    state,
    effects: [
      ...r.effects,
      { type: "set-timer", timer: "recheck-candidates", at: recheckAt },
      stateEvent("racing", now, summary(state)),
    ],
  };
}

export function handle(state: RacingState, input: MachineInput, ctx: MachineContext): Outcome {
  const policy = ctx.policy.race;
  switch (input.type) {
    case "timer": {
      if (input.timer === "recheck-candidates") {
        if (!timerDue(state.recheckAt, input.now))
          return { state, effects: rearmIfEarly("recheck-candidates", state.recheckAt, input.now) };
        // The next one is armed when this round's candidates come back: rounds never overlap.
        return { state: { ...state, recheckAt: null }, effects: [{ type: "resolve-candidates" }] };
      }
      if (input.timer !== "race-stagger") return { state, effects: [] };
      const r = raceOnStaggerTimer(state.race, input.now, policy);
      return { state: { ...state, race: r.race }, effects: r.effects };
    }
    case "leg-up": {
      if (!raceHasLeg(state.race, input.legId)) return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
      const r = raceOnLegUp(state.race, input.legId, input.now);
      const winner = r.race.winner;
      if (!r.decided || winner === null) return { state: { ...state, race: r.race }, effects: r.effects };
      const active = activeFromLegUp(winner, input);
      return {
        go: {
          to: "connected",
          active,
          race: r.race,
          raceEffects: r.effects,
          previous: null,
          failover: null,
          standby: null,
        },
        shared: state.shared,
        effects: [],
      };
    }
    case "leg-failed": {
      const x = extendBeforeFailure(state.shared, state.race, input.legId, policy);
      const r = raceOnLegFailed(x.race, input.legId, input.code, input.message, input.now, policy);
      if (!r.decided) return { state: { ...state, shared: x.shared, race: r.race }, effects: r.effects };
      const f = raceFailure(r.race);
      return {
        go: { to: "error", reason: f.reason, attempt: state.attempt + 1, retry: f.retry, race: r.race, failover: null },
        shared: x.shared,
        effects: r.effects,
      };
    }
    case "disconnect": {
      const r = raceCancel(state.race, input.now);
      const record = raceRecord(r.race);
      return {
        go: { to: "disconnected" },
        shared: { ...state.shared, lastRace: record },
        effects: [...r.effects, { type: "record-race", race: record }, ...cancelAllTimers()],
      };
    }
    case "network": {
      if (input.change !== "offline") return { state, effects: [] };
      // No route: legs cannot come up; they stop, and the first route starts a fresh connect.
      const r = raceCancel(state.race, input.now);
      const record = raceRecord(r.race);
      return goWaiting({ ...state.shared, lastRace: record }, input.detail, [
        ...r.effects,
        { type: "record-race", race: record },
      ]);
    }
    case "candidates": {
      const shared = withCandidates(state.shared, input.candidates);
      const back = returnedGateways(state.shared.candidates, shared.candidates);
      const x =
        reviveRace(shared, state.race, policy, input.now, back) ?? replanRace(shared, state.race, policy, input.now);
      const recheckAt = input.now + RACE_RECHECK_MS;
      return {
        state: { ...state, shared: x.shared, race: x.race, recheckAt },
        effects: [...x.effects, { type: "set-timer", timer: "recheck-candidates", at: recheckAt }],
      };
    }
    case "connect":
    case "wake":
    case "tunnel-activity":
    case "leg-down":
    case "probe":
      return { state, effects: [] };
  }
}
