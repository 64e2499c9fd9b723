/**
 * The failing-over state: the active leg failed (dead, downed by its engine, or browned out) and a race to other
 * gateways runs while the failed leg keeps its routes, so traffic moves the moment a winner is up.
 */
import { healthOnSample } from "../health.ts";
import type { Entry, FailingOverState, MachineContext, Outcome, Shared } from "../machine-state.ts";
import {
  activeFromLegUp,
  cancelAllTimers,
  allocateLegs,
  extendBeforeFailure,
  goWaiting,
  listNames,
  nextRaceId,
  planFailover,
  RACE_RECHECK_MS,
  raceFailure,
  returnedGateways,
  reviveRace,
  stateEvent,
  withCandidates,
} from "../machine-state.ts";
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
import type { Effect, FailoverRecord, Leg, MachineInput } from "../types.ts";

export function summary(state: FailingOverState): string {
  const gw = state.failed.leg.gateway;
  const what =
    state.cause === "dead"
      ? `${gw} stopped answering`
      : state.cause === "leg-down"
        ? `${gw} went down`
        : `the session with ${gw} was lost when the network changed`;
  const trying = state.race.legs
    .filter((l) => l.outcome === "starting" || l.outcome === "pending")
    .map((l) => l.leg.gateway);
  if (state.cause === "session-lost" || !trying.includes(gw))
    return `Reconnecting: ${what}, trying ${trying.length > 0 ? listNames(trying) : "the remaining legs"}`;
  // The failed gateway's other protocols come after the other gateways that answer (planFailover).
  const others = trying.filter((g) => g !== gw);
  const self = `${gw} over another protocol`;
  return `Reconnecting: ${what}, trying ${others.length > 0 ? `${listNames(others)}, then ${self}` : self}`;
}

type FailoverEntry = Extract<Entry, { to: "failing-over" }>;

/** Tears down the failed leg for good: nothing replaced it, so its routes must not keep pointing at a dead tunnel. */
function abandon(failedLegId: string): Effect[] {
  return [
    { type: "stop-monitor", legId: failedLegId },
    { type: "clear-routes" },
    { type: "stop-leg", legId: failedLegId },
  ];
}

/**
 * After a path change or a wake the gateway's session may simply be gone (its DPD or idle timeout dropped it):
 * a fresh leg of the same kind to the same gateway goes first, then the other gateways a stagger later, so a
 * healthy gateway is kept and a dead one still costs only the stagger.
 */
function planReconnect(shared: Shared, failed: Leg, ctx: MachineContext): { legs: Leg[]; shared: Shared } {
  const same = allocateLegs(
    shared,
    shared.candidates.filter((c) => c.name === failed.gateway),
    ctx.policy.race,
    [],
    { gateway: failed.gateway, kind: failed.kind },
  );
  const first = same.legs.filter((l) => l.kind === failed.kind).slice(0, 1);
  const others = planFailover(same.shared, failed, ctx.policy.race, true);
  return { legs: [...first, ...others.legs], shared: others.shared };
}

export function enter(shared0: Shared, now: number, ctx: MachineContext, e: FailoverEntry): Outcome {
  const from = { gateway: e.failed.leg.gateway, kind: e.failed.leg.kind };
  const failover: FailoverRecord = {
    from,
    to: null,
    reason: e.reason,
    via: "race",
    lastReplyAt: e.lastReplyAt,
    detectedAt: now,
    restoredAt: null,
    detectedAfterMs: now - e.lastReplyAt,
    restoredAfterMs: null,
  };
  const planned =
    e.cause === "session-lost"
      ? planReconnect(shared0, e.failed.leg, ctx)
      : planFailover(shared0, e.failed.leg, ctx.policy.race, false);
  if (planned.legs.length === 0) {
    return {
      go: {
        to: "error",
        reason: `${from.gateway} stopped working and no other gateway is available`,
        attempt: 1,
        retry: true,
        race: null,
        failover,
      },
      shared: shared0,
      effects: abandon(e.failed.leg.id),
    };
  }
  const { id, shared } = nextRaceId(planned.shared);
  const r = raceStart(id, planned.legs, "failover", now, ctx.policy.race);
  const state: FailingOverState = {
    name: "failing-over",
    shared: { ...shared, since: now },
    failed: e.failed,
    health: e.health,
    cause: e.cause,
    failover,
    race: r.race,
    recheckAt: now + RACE_RECHECK_MS,
  };
  return {
    state,
    effects: [
      ...r.effects,
      { type: "set-timer", timer: "recheck-candidates", at: now + RACE_RECHECK_MS },
      stateEvent("failing-over", now, summary(state)),
    ],
  };
}

export function handle(state: FailingOverState, input: MachineInput, ctx: MachineContext): Outcome {
  const policy = ctx.policy.race;
  const failedId = state.failed.leg.id;
  switch (input.type) {
    case "timer": {
      if (input.timer === "recheck-candidates") {
        if (!timerDue(state.recheckAt, input.now))
          return { state, effects: rearmIfEarly("recheck-candidates", state.recheckAt, input.now) };
        return { state: { ...state, recheckAt: null }, effects: [{ type: "resolve-candidates" }] };
      }
      if (input.timer !== "race-stagger") return { state, effects: [] };
      const r = raceOnStaggerTimer(state.race, input.now, policy);
      return { state: { ...state, race: r.race }, effects: r.effects };
    }
    case "probe":
      // The failed leg's monitor still runs: a brownout race that finds nothing returns to it with current numbers.
      if (input.legId !== failedId) return { state, effects: [] };
      return {
        state: { ...state, health: healthOnSample(state.health, input.sample, input.now, ctx.policy.health) },
        effects: [],
      };
    case "leg-up": {
      if (input.legId === failedId) return { state, effects: [] };
      if (!raceHasLeg(state.race, input.legId)) return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
      const r = raceOnLegUp(state.race, input.legId, input.now);
      const winner = r.race.winner;
      if (!r.decided || winner === null) return { state: { ...state, race: r.race }, effects: r.effects };
      const restoredAt = input.firstReplyAt;
      const failover: FailoverRecord = {
        ...state.failover,
        to: { gateway: winner.gateway, kind: winner.kind },
        restoredAt,
        restoredAfterMs: restoredAt - state.failover.lastReplyAt,
      };
      const active = activeFromLegUp(winner, input);
      // Back on the same gateway after a path change or a wake: it was never at fault, so nothing is recorded.
      const reconnected = state.cause === "session-lost" && winner.gateway === state.failed.leg.gateway;
      return {
        go: {
          to: "connected",
          active,
          race: r.race,
          raceEffects: r.effects,
          previous: state.failed,
          failover: reconnected ? null : failover,
          standby: null,
        },
        shared: state.shared,
        effects: [],
      };
    }
    case "leg-failed": {
      const x = extendBeforeFailure(state.shared, state.race, input.legId, policy, [state.failed.leg.gateway]);
      const r = raceOnLegFailed(x.race, input.legId, input.code, input.message, input.now, policy);
      if (!r.decided) return { state: { ...state, shared: x.shared, race: r.race }, effects: r.effects };
      const f = raceFailure(r.race);
      return {
        go: { to: "error", reason: f.reason, attempt: 1, retry: f.retry, race: r.race, failover: state.failover },
        shared: state.shared,
        effects: [...r.effects, ...abandon(failedId)],
      };
    }
    case "disconnect": {
      const r = raceCancel(state.race, input.now);
      const record = raceRecord(r.race);
      return {
        go: { to: "disconnected" },
        shared: { ...state.shared, lastRace: record },
        effects: [...r.effects, { type: "record-race", race: record }, ...abandon(failedId), ...cancelAllTimers()],
      };
    }
    case "network": {
      if (input.change !== "offline") return { state, effects: [] };
      // No route at all: the gateway was not at fault, so no failover is recorded; everything stops until a route.
      const r = raceCancel(state.race, input.now);
      const record = raceRecord(r.race);
      return goWaiting({ ...state.shared, lastRace: record }, input.detail, [
        ...r.effects,
        { type: "record-race", race: record },
        ...abandon(failedId),
      ]);
    }
    case "candidates": {
      // A gateway found answering again joins the race at once. The one failed away from only when the race
      // already tries it (after a path change, or as the only gateway left): its failure is no news otherwise.
      const shared = withCandidates(state.shared, input.candidates);
      const failedGw = state.failed.leg.gateway;
      const avoid = state.race.legs.some((l) => l.leg.gateway === failedGw) ? [] : [failedGw];
      const back = returnedGateways(state.shared.candidates, shared.candidates);
      const x = reviveRace(shared, state.race, policy, input.now, back, avoid);
      const recheckAt = input.now + RACE_RECHECK_MS;
      const rearm: Effect = { type: "set-timer", timer: "recheck-candidates", at: recheckAt };
      if (x === null) return { state: { ...state, shared, recheckAt }, effects: [rearm] };
      return { state: { ...state, shared: x.shared, race: x.race, recheckAt }, effects: [...x.effects, rearm] };
    }
    case "leg-down":
    case "connect":
    case "wake":
    case "tunnel-activity":
      return { state, effects: [] };
  }
}
