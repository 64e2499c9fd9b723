/**
 * The connected state: one leg carries the protected routes while its in-tunnel monitor feeds the health verdict;
 * a dead, downed or browned-out leg starts a failover, and a better gateway that stays reachable is raced back to.
 */
import { allKindsUnreachable, reportsReachable } from "../candidates.ts";
import { healthDeadline, healthEvaluate, healthOnSample, healthStart, type HealthState } from "../health.ts";
import type { ActiveLeg, ConnectedState, Entry, FailoverCause, Go, MachineContext, Outcome, Shared } from "../machine-state.ts";
import { KIND_NAMES, allocateLegs, cancelAllTimers, nextRaceId, planFailover, stateEvent, timerDue, withCandidates } from "../machine-state.ts";
import { TIMER_SLACK_MS, raceCancel, raceHasLeg, raceOnLegFailed, raceOnLegUp, raceOnStaggerTimer, raceRecord, raceStart, type RaceState } from "../race.ts";
import type { Effect, FailoverRecord, MachineInput } from "../types.ts";

/**
 * How often candidates are re-probed while connected. Each recheck costs a few TCP handshakes per gateway; every
 * 30 s notices a preferred gateway's return within a minute (two rechecks) at a negligible cost.
 */
export const RECHECK_INTERVAL_MS = 30_000;
/** A better gateway must report reachable this many rechecks in a row: one good probe after an outage is often a flap. */
export const RECOVER_AFTER_RECHECKS = 2;
/**
 * After a brownout failover found nothing better, the degraded leg is kept and the next attempt waits this long,
 * so a persistently lossy network does not churn legs every few seconds.
 */
export const BROWNOUT_RETRY_AFTER_MS = 30_000;

export function summary(state: ConnectedState): string {
  const a = state.active.leg;
  const base = `Connected to ${a.gateway} over ${KIND_NAMES[a.kind]}`;
  const v = state.health.verdict;
  if (v.state === "brownout") return `${base}, degraded (${v.reason.replace(/^brownout: /, "")})`;
  if (state.recover !== null && state.recover.status === "running") {
    const targets = [...new Set(state.recover.legs.map((l) => l.leg.gateway))];
    return `${base}; trying to move back to ${targets.join(" or ")}`;
  }
  return base;
}

type NewLegEntry = Extract<Entry, { to: "connected" }>;
type ResumeEntry = Extract<Entry, { to: "connected-resume" }>;

function raceEnded(race: RaceState, now: number): Effect[] {
  const record = raceRecord(race);
  return [
    { type: "record-race", race: record },
    { type: "notify", event: { type: "race-ended", at: now, race: record } },
  ];
}

function failoverEffects(f: FailoverRecord | null, now: number): Effect[] {
  if (f === null) return [];
  return [
    { type: "record-failover", failover: f },
    { type: "notify", event: { type: "failover", at: now, failover: f } },
  ];
}

/**
 * A leg won a race. Routes move to it first; only then is the previous leg (if any) torn down, so traffic never
 * has a moment without a tunnel (make-before-break).
 */
/** A fresh connected state: health watched from `health`, rechecks scheduled, no recover race under way. */
function connectedState(shared: Shared, active: ConnectedState["active"], health: ConnectedState["health"], now: number, ctx: MachineContext, brownoutRetryAt: number | null): ConnectedState {
  return {
    name: "connected",
    shared,
    active,
    health,
    healthCheckAt: healthDeadline(health, ctx.policy.health),
    recheckAt: now + RECHECK_INTERVAL_MS,
    betterStreak: 0,
    recover: null,
    brownoutRetryAt,
  };
}

export function enter(shared0: Shared, now: number, ctx: MachineContext, e: NewLegEntry): Outcome {
  const health = healthStart(now);
  const shared: Shared = {
    ...shared0,
    since: now,
    lastRace: raceRecord(e.race),
    lastFailover: e.failover ?? shared0.lastFailover,
  };
  const state = connectedState(shared, e.active, health, now, ctx, null);
  const effects: Effect[] = [{ type: "apply-routes", legId: e.active.leg.id }];
  if (e.previous !== null) effects.push({ type: "stop-monitor", legId: e.previous.leg.id }, { type: "stop-leg", legId: e.previous.leg.id });
  effects.push(
    ...e.raceEffects,
    { type: "start-monitor", legId: e.active.leg.id },
    { type: "set-timer", timer: "health-check", at: state.healthCheckAt },
    { type: "set-timer", timer: "recheck-candidates", at: state.recheckAt },
    ...raceEnded(e.race, now),
    ...failoverEffects(e.failover, now),
    stateEvent("connected", now, summary(state)),
  );
  return { state, effects };
}

/** A brownout failover found nothing better: the degraded leg never stopped carrying traffic, so only timers restart. */
export function enterResume(shared0: Shared, now: number, ctx: MachineContext, e: ResumeEntry): Outcome {
  const shared: Shared = { ...shared0, since: now, lastFailover: e.failover, lastRace: e.race === null ? shared0.lastRace : raceRecord(e.race) };
  const health = healthEvaluate(e.health, now, ctx.policy.health);
  const state = connectedState(shared, e.active, health, now, ctx, now + BROWNOUT_RETRY_AFTER_MS);
  return {
    state,
    effects: [
      ...e.raceEffects,
      { type: "set-timer", timer: "health-check", at: state.healthCheckAt },
      { type: "set-timer", timer: "recheck-candidates", at: state.recheckAt },
      ...(e.race === null ? [] : raceEnded(e.race, now)),
      ...failoverEffects(e.failover, now),
      stateEvent("connected", now, summary(state)),
    ],
  };
}

/** Leaves for failing-over: the recover race (if any) is cancelled; the active leg keeps its routes and monitor. */
function failover(state: ConnectedState, now: number, cause: FailoverCause, reason: string): Go {
  const effects: Effect[] = [];
  let shared = state.shared;
  if (state.recover !== null && state.recover.status === "running") {
    const r = raceCancel(state.recover, now);
    effects.push(...r.effects, { type: "record-race", race: raceRecord(r.race) });
    shared = { ...shared, lastRace: raceRecord(r.race) };
  }
  effects.push({ type: "cancel-timer", timer: "health-check" }, { type: "cancel-timer", timer: "recheck-candidates" });
  const lastReplyAt = state.health.lastReplyAt ?? state.active.firstReplyAt;
  return { go: { to: "failing-over", failed: state.active, health: state.health, cause, reason, lastReplyAt }, shared, effects };
}

/** Acts on the verdict after new evidence: dead fails over; brownout fails over only if somewhere better exists. */
function react(state: ConnectedState, before: HealthState["verdict"], now: number, ctx: MachineContext): { state: ConnectedState; effects: Effect[] } | Go {
  const v = state.health.verdict;
  if (v.state === "dead") return failover(state, now, "dead", `dead: ${v.reason}`);
  const effects: Effect[] = [];
  if (v.state !== before.state) effects.push({ type: "notify", event: { type: "health", at: now, legId: state.active.leg.id, verdict: v } });
  if (v.state === "brownout" && (state.brownoutRetryAt === null || now >= state.brownoutRetryAt)) {
    const alternatives = planFailover(state.shared, state.active.leg, ctx.policy.race, true);
    if (alternatives.legs.length > 0) {
      const out = failover(state, now, "brownout", v.reason);
      return { ...out, effects: [...effects, ...out.effects] };
    }
  }
  return { state, effects };
}

/** A recheck's candidate list: count rechecks in which a better gateway answered, and race toward it after enough. */
function onCandidates(state: ConnectedState, input: Extract<MachineInput, { type: "candidates" }>, ctx: MachineContext): Outcome {
  const shared = withCandidates(state.shared, input.candidates);
  const own = shared.candidates.find((c) => c.name === state.active.leg.gateway) ?? state.shared.candidates.find((c) => c.name === state.active.leg.gateway);
  if (own === undefined) return { state: { ...state, shared }, effects: [] };
  const better = shared.candidates.filter((c) => c.priority < own.priority && reportsReachable(c) && !allKindsUnreachable(c));
  const streak = better.length > 0 ? state.betterStreak + 1 : 0;
  if (streak < RECOVER_AFTER_RECHECKS || (state.recover !== null && state.recover.status === "running")) {
    return { state: { ...state, shared, betterStreak: streak }, effects: [] };
  }
  const planned = allocateLegs(shared, better, ctx.policy.race);
  if (planned.legs.length === 0) return { state: { ...state, shared, betterStreak: streak }, effects: [] };
  const { id, shared: s2 } = nextRaceId(planned.shared);
  const r = raceStart(id, planned.legs, "recover", input.now, ctx.policy.race);
  const next: ConnectedState = { ...state, shared: s2, betterStreak: 0, recover: r.race };
  return { state: next, effects: [...r.effects, stateEvent("connected", input.now, summary(next))] };
}

function onTimer(state: ConnectedState, input: Extract<MachineInput, { type: "timer" }>, ctx: MachineContext): Outcome {
  const hp = ctx.policy.health;
  switch (input.timer) {
    case "health-check": {
      if (!timerDue(state.healthCheckAt, input.now, TIMER_SLACK_MS)) return { state, effects: [] };
      const before = state.health.verdict;
      const health = healthEvaluate(state.health, input.now, hp);
      const out = react({ ...state, health }, before, input.now, ctx);
      if ("go" in out) return out;
      // Replies pushed the deadline on since the timer was armed: re-arm for the new one.
      const healthCheckAt = Math.max(healthDeadline(health, hp), input.now + TIMER_SLACK_MS);
      return { state: { ...out.state, healthCheckAt }, effects: [...out.effects, { type: "set-timer", timer: "health-check", at: healthCheckAt }] };
    }
    case "recheck-candidates": {
      if (!timerDue(state.recheckAt, input.now, TIMER_SLACK_MS)) return { state, effects: [] };
      const recheckAt = input.now + RECHECK_INTERVAL_MS;
      return { state: { ...state, recheckAt }, effects: [{ type: "resolve-candidates" }, { type: "set-timer", timer: "recheck-candidates", at: recheckAt }] };
    }
    case "race-stagger": {
      if (state.recover === null) return { state, effects: [] };
      const r = raceOnStaggerTimer(state.recover, input.now, ctx.policy.race);
      return { state: { ...state, recover: r.race }, effects: r.effects };
    }
    case "backoff":
      return { state, effects: [] };
  }
}

export function handle(state: ConnectedState, input: MachineInput, ctx: MachineContext): Outcome {
  const hp = ctx.policy.health;
  switch (input.type) {
    case "probe": {
      if (input.legId !== state.active.leg.id) return { state, effects: [] };
      const before = state.health.verdict;
      return react({ ...state, health: healthOnSample(state.health, input.sample, input.now, hp) }, before, input.now, ctx);
    }
    case "timer":
      return onTimer(state, input, ctx);
    case "candidates":
      return onCandidates(state, input, ctx);
    case "leg-up": {
      if (input.legId === state.active.leg.id) return { state, effects: [] };
      if (state.recover === null || !raceHasLeg(state.recover, input.legId)) return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
      const r = raceOnLegUp(state.recover, input.legId, input.now);
      const winner = r.race.winner;
      if (!r.decided || winner === null) return { state: { ...state, recover: r.race }, effects: r.effects };
      const active: ActiveLeg = { leg: winner, config: input.config, firstReplyAt: input.firstReplyAt, upAt: input.now };
      return { go: { to: "connected", active, race: r.race, raceEffects: r.effects, previous: state.active, failover: null }, shared: state.shared, effects: [] };
    }
    case "leg-failed": {
      if (state.recover === null) return { state, effects: [] };
      const r = raceOnLegFailed(state.recover, input.legId, input.code, input.message, input.now, ctx.policy.race);
      if (!r.decided) return { state: { ...state, recover: r.race }, effects: r.effects };
      // The better gateway answered probes but no leg to it came up: stay, and let the streak build up again.
      const next: ConnectedState = { ...state, recover: null, betterStreak: 0, shared: { ...state.shared, lastRace: raceRecord(r.race) } };
      return { state: next, effects: [...r.effects, ...raceEnded(r.race, input.now)] };
    }
    case "leg-down":
      if (input.legId !== state.active.leg.id) return { state, effects: [] };
      return failover(state, input.now, "leg-down", `leg-down: ${input.reason}`);
    case "disconnect": {
      const effects: Effect[] = [];
      let shared = state.shared;
      if (state.recover !== null && state.recover.status === "running") {
        const r = raceCancel(state.recover, input.now);
        effects.push(...r.effects, { type: "record-race", race: raceRecord(r.race) });
        shared = { ...shared, lastRace: raceRecord(r.race) };
      }
      const id = state.active.leg.id;
      effects.push({ type: "stop-monitor", legId: id }, { type: "clear-routes" }, { type: "stop-leg", legId: id }, ...cancelAllTimers());
      return { go: { to: "disconnected" }, shared, effects };
    }
    case "connect":
      return { state, effects: [] };
  }
}
