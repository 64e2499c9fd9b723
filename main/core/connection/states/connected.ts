/**
 * The connected state: one leg carries the protected routes while its in-tunnel monitor feeds the health verdict;
 * a dead, downed or browned-out leg starts a failover, and a better gateway that stays reachable is raced back to.
 */
import { allKindsUnreachable, reportsReachable } from "../candidates.ts";
import {
  deadWindowMs,
  healthDeadline,
  healthEvaluate,
  healthNotePending,
  healthOnSample,
  healthSetEvidence,
  healthStart,
  pathRttOf,
  type HealthState,
} from "../health.ts";
import type {
  ActiveLeg,
  ConnectedState,
  Entry,
  FailoverCause,
  Go,
  MachineContext,
  Outcome,
  Shared,
  StandbyState,
} from "../machine-state.ts";
import {
  activeFromLegUp,
  KIND_NAMES,
  allocateLegs,
  cancelAllTimers,
  goWaiting,
  nextRaceId,
  stateEvent,
  withCandidates,
} from "../machine-state.ts";
import { paceAdaptive, paceMaySlow, paceQuicken, paceStart, paceSuspectAt, type PaceState } from "../pace.ts";
import { TIMER_SLACK_MS, rearmIfEarly, timerDue } from "../timers.ts";
import {
  raceCancel,
  raceHasLeg,
  raceOnLegFailed,
  raceOnLegUp,
  raceOnStaggerTimer,
  raceRecord,
  raceStart,
  type RaceState,
} from "../race.ts";
import {
  standbyAtRest,
  standbyMeasuredBetter,
  standbyFresh,
  standbyIdle,
  standbyOnCheck,
  standbyOnLegDown,
  standbyOnLegFailed,
  standbyOnLegUp,
  standbyOnProbe,
  standbyOnStagger,
  standbyOwns,
  standbyScheduleRaise,
  standbyTeardown,
  type StandbyContext,
} from "../standby.ts";
import type { Effect, FailoverRecord, LegKind, MachineInput } from "../types.ts";

/**
 * How often candidates are re-probed while connected. Each recheck costs a few TCP handshakes per gateway; every
 * 30 s notices a preferred gateway's return within a minute (two rechecks) at a negligible cost.
 */
export const RECHECK_INTERVAL_MS = 30_000;
/** A better gateway must report reachable this many rechecks in a row: one good probe after an outage is often a flap. */
export const RECOVER_AFTER_RECHECKS = 2;
/**
 * After a path change or a wake, how long the active gateway has to answer again before detourd races: WireGuard
 * re-handshakes from a new address within one round trip, MOBIKE's address update takes one or two, openconnect's
 * reconnect with its cookie a TLS handshake and a DTLS one; 2 s covers each on a 250 ms path, and a gateway that
 * stays silent longer is as good as gone for the user.
 */
export const ROAM_VERIFY_MS = 2_000;
/**
 * After a wake, how long the tunnel has to answer the probe burst: a session that survived answers within a round
 * trip or two; one the gateway dropped is re-established this much sooner than after ROAM_VERIFY_MS (no engine has
 * to move). A slow path's dead window, when longer, is the floor.
 */
export const WAKE_VERIFY_MS = 1_000;
/**
 * Whether a leg's engine follows a new underlay address by itself (after the recheck-leg effect): wireguard-go once
 * its endpoint is set again, openconnect by reconnecting with its session cookie, charon with MOBIKE (RFC 4555: it
 * notices the new address over netlink and moves its IKE and CHILD SAs there; native/engines/ipsec/charon-config.ts).
 * A leg that follows is checked for ROAM_VERIFY_MS; one that stays silent is replaced by a fresh leg ("session-lost").
 * An engine that cannot follow would be re-established on the same gateway at once instead.
 */
export const FOLLOWS_PATH_CHANGE: Record<LegKind, boolean> = {
  wireguard: true,
  ikev2: true,
  "anyconnect-tls": true,
  "anyconnect-dtls": true,
};

export function summary(state: ConnectedState): string {
  const a = state.active.leg;
  const base = `Connected to ${a.gateway} over ${KIND_NAMES[a.kind]}`;
  const verify = state.verify ?? null;
  if (verify !== null)
    return `${base}; checking the tunnel after ${verify.why === "wake" ? "waking up" : "the network changed"}`;
  const v = state.health.verdict;
  if (v.state === "brownout") return `${base}, degraded (${v.reason.replace(/^brownout: /, "")})`;
  if (state.recover !== null && state.recover.status === "running") {
    const targets = [...new Set(state.recover.legs.map((l) => l.leg.gateway))];
    return `${base}; trying to move back to ${targets.join(" or ")}`;
  }
  return base;
}

type NewLegEntry = Extract<Entry, { to: "connected" }>;

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

function standbyContext(ctx: MachineContext): StandbyContext {
  return { standby: ctx.policy.standby, race: ctx.policy.race, health: ctx.policy.health };
}

/**
 * The standby's context in this state: with the standby off, a degraded tunnel still raises one, to measure where
 * it could move (a brownout never moves to an unmeasured gateway); it is torn down when the brownout clears.
 */
function standbyContextIn(state: ConnectedState, ctx: MachineContext): StandbyContext {
  const base = standbyContext(ctx);
  if (base.standby.mode !== "off" || state.health.verdict.state !== "brownout") return base;
  return { ...base, standby: { ...base.standby, mode: "on" } };
}

/** A fresh connected state: health watched from `health`, rechecks scheduled, no recover race under way. */
function connectedState(
  shared: Shared,
  active: ConnectedState["active"],
  health: ConnectedState["health"],
  now: number,
  ctx: MachineContext,
  standby: StandbyState,
): ConnectedState {
  return {
    name: "connected",
    shared,
    active,
    health,
    healthCheckAt: healthDeadline(health, ctx.policy.health),
    recheckAt: now + RECHECK_INTERVAL_MS,
    betterStreak: 0,
    recover: null,
    standbyBetterSince: null,
    standby,
    pace: paceStart(now),
  };
}

/**
 * At the slow pace each reply moves the suspicion time on: the timer is moved with it (no wake-up), so it only
 * fires when a slow probe really is overdue.
 */
function rearmSuspicion(out: Outcome, hp: MachineContext["policy"]["health"]): Outcome {
  if ("go" in out || out.state.name !== "connected") return out;
  const st = out.state;
  const at = paceSuspectAt(st.health, hp);
  if (at === st.healthCheckAt) return out;
  return {
    state: { ...st, healthCheckAt: at },
    effects: [...out.effects, { type: "set-timer", timer: "health-check", at }],
  };
}

/** The probes' pace (pace.ts); a state from before pacing existed is fast. */
function paceOf(state: ConnectedState): PaceState {
  return state.pace ?? { pace: "fast", fastUntil: Number.NEGATIVE_INFINITY, fastSince: Number.NEGATIVE_INFINITY };
}

/**
 * Back to the fast pace, or held there longer: user traffic went into the tunnel, a slow probe went unanswered,
 * the laptop woke or the path changed. From slow, every monitor speeds up (a probe goes out at once), probes
 * count as evidence from now, and the health check runs on the fast pace's schedule again.
 */
function quicken(state: ConnectedState, now: number, ctx: MachineContext): Outcome & { state: ConnectedState } {
  const hp = ctx.policy.health;
  if (!paceAdaptive(hp)) return { state, effects: [] };
  const before = paceOf(state);
  const pace = paceQuicken(before, now);
  if (before.pace === "fast") return { state: { ...state, pace }, effects: [] };
  const health = healthSetEvidence(state.health, "fast", now);
  const healthCheckAt = now + hp.probeIntervalMs;
  return {
    state: { ...state, pace, health, healthCheckAt },
    effects: [
      { type: "probe-pace", pace: "fast" },
      { type: "set-timer", timer: "health-check", at: healthCheckAt },
    ],
  };
}

/**
 * A leg won a race, or the standby was promoted. Routes move to it first; only then is the previous leg (if any)
 * torn down, so traffic never has a moment without a tunnel (make-before-break). A standby is raised shortly
 * after, if none came along, avoiding the gateway just left.
 */
export function enter(shared0: Shared, now: number, ctx: MachineContext, e: NewLegEntry): Outcome {
  const health = healthStart(now, e.active.pathRttMs ?? null);
  const shared1: Shared = {
    ...shared0,
    since: now,
    lastRace: e.race === null ? shared0.lastRace : raceRecord(e.race),
    lastFailover: e.failover ?? shared0.lastFailover,
  };
  const effects: Effect[] = [{ type: "apply-routes", legId: e.active.leg.id }];
  if (e.previous !== null)
    effects.push({ type: "stop-monitor", legId: e.previous.leg.id }, { type: "stop-leg", legId: e.previous.leg.id });
  const avoid = e.previous === null || e.failover === null ? [] : [e.previous.leg.gateway];
  const sb = standbyScheduleRaise(e.standby ?? standbyIdle(), avoid, now, standbyContext(ctx));
  const state = connectedState(shared1, e.active, health, now, ctx, sb.standby);
  effects.push(
    ...e.raceEffects,
    // Every monitor back at the fast pace (a slow one from before a failover is not kept): traffic is about to flow.
    ...(paceAdaptive(ctx.policy.health) ? [{ type: "probe-pace", pace: "fast" } as const] : []),
    { type: "start-monitor", legId: e.active.leg.id, role: "active" },
    { type: "set-timer", timer: "health-check", at: state.healthCheckAt },
    { type: "set-timer", timer: "recheck-candidates", at: state.recheckAt },
    ...(e.race === null ? [] : raceEnded(e.race, now)),
    ...failoverEffects(e.failover, now),
    ...sb.effects,
    stateEvent("connected", now, summary(state)),
  );
  return { state, effects };
}

/** Cancels a running recover race, recording it. */
function cancelRecover(state: ConnectedState, now: number): { shared: Shared; effects: Effect[] } {
  if (state.recover === null || state.recover.status !== "running") return { shared: state.shared, effects: [] };
  const r = raceCancel(state.recover, now);
  return {
    shared: { ...state.shared, lastRace: raceRecord(r.race) },
    effects: [...r.effects, { type: "record-race", race: raceRecord(r.race) }],
  };
}

/**
 * The active leg failed and the standby answered recently: traffic moves to it with one route change, the failed
 * leg is torn down, and a new standby is raised elsewhere. No race, so the outage is the detection time.
 */
function promoteStandby(state: ConnectedState, now: number, reason: string): Go | null {
  const sb = state.standby.leg;
  if (sb === null) return null;
  const rec = cancelRecover(state, now);
  const lastReplyAt = state.health.lastReplyAt ?? state.active.firstReplyAt;
  const failover: FailoverRecord = {
    from: { gateway: state.active.leg.gateway, kind: state.active.leg.kind },
    to: { gateway: sb.leg.gateway, kind: sb.leg.kind },
    reason,
    via: "standby",
    lastReplyAt,
    detectedAt: now,
    restoredAt: now,
    detectedAfterMs: now - lastReplyAt,
    restoredAfterMs: now - lastReplyAt,
  };
  const active: ActiveLeg = {
    leg: sb.leg,
    config: sb.config,
    firstReplyAt: sb.firstReplyAt,
    upAt: sb.upAt,
    pathRttMs: pathRttOf(sb.health),
  };
  const effects: Effect[] = [
    ...rec.effects,
    { type: "cancel-timer", timer: "standby" },
    { type: "cancel-timer", timer: "standby-stagger" },
  ];
  return {
    go: { to: "connected", active, race: null, raceEffects: [], previous: state.active, failover, standby: null },
    shared: rec.shared,
    effects,
  };
}

/**
 * The active leg failed: with a fresh standby the standby takes over at once; otherwise the standby is torn down
 * and a failover race runs while the active leg keeps its routes.
 */
function failover(state: ConnectedState, now: number, cause: FailoverCause, reason: string, ctx: MachineContext): Go {
  // A lost session (path change, wake) goes back to the same gateway first: it was not at fault.
  if (cause !== "session-lost" && standbyFresh(state.standby, now, standbyContext(ctx))) {
    const promoted = promoteStandby(state, now, reason);
    if (promoted !== null) return promoted;
  }
  const rec = cancelRecover(state, now);
  const down = standbyTeardown(state.standby, now);
  const effects: Effect[] = [
    ...rec.effects,
    ...down.effects,
    { type: "cancel-timer", timer: "health-check" },
    { type: "cancel-timer", timer: "recheck-candidates" },
  ];
  const lastReplyAt = state.health.lastReplyAt ?? state.active.firstReplyAt;
  return {
    go: { to: "failing-over", failed: state.active, health: state.health, cause, reason, lastReplyAt },
    shared: rec.shared,
    effects,
  };
}

/**
 * Acts on the verdict after new evidence: dead fails over. A degrading leg moves only to a standby measured better
 * than it for the brownout's hold (standbyMeasuredBetter), never to an unmeasured gateway: on a link lossy for
 * every gateway the standby measures as badly and the tunnel stays, degraded, instead of hopping. With the standby
 * off, a brownout raises one to measure; it goes again when the brownout clears.
 */
function react(
  state: ConnectedState,
  before: HealthState["verdict"],
  now: number,
  ctx: MachineContext,
): { state: ConnectedState; effects: Effect[] } | Go {
  const v = state.health.verdict;
  // Checking after a path change or a wake: silence is expected until the engine has followed; ROAM_VERIFY_MS decides.
  if (state.verify != null && now < state.verify.until) return { state, effects: [] };
  if (v.state === "dead") return failover(state, now, "dead", `dead: ${v.reason}`, ctx);
  const effects: Effect[] = [];
  if (v.state !== before.state)
    effects.push({ type: "notify", event: { type: "health", at: now, legId: state.active.leg.id, verdict: v } });
  const degrading = v.state === "brownout" || state.health.overSince !== null;
  const sctx = standbyContextIn(state, ctx);
  const better = degrading && standbyMeasuredBetter(state.standby, state.health, now, sctx);
  const since = better ? (state.standbyBetterSince ?? now) : null;
  let next: ConnectedState =
    since === (state.standbyBetterSince ?? null) ? state : { ...state, standbyBetterSince: since };
  if (v.state === "brownout") {
    if (since !== null && now - since >= ctx.policy.health.brownout.holdMs) {
      const promoted = promoteStandby(next, now, v.reason);
      if (promoted !== null) return { ...promoted, effects: [...effects, ...promoted.effects] };
    }
    // Nothing measured to compare with: with the standby off, raise one to measure (standbyContextIn).
    const raise = standbyAtRest(next.standby) ? standbyScheduleRaise(next.standby, [], now, sctx) : null;
    if (raise !== null && raise.standby !== next.standby) {
      next = { ...next, standby: raise.standby };
      effects.push(...raise.effects);
    }
  } else if (before.state === "brownout" && ctx.policy.standby.mode === "off" && !standbyAtRest(next.standby)) {
    const down = standbyTeardown(next.standby, now);
    next = { ...next, standby: down.standby };
    effects.push(...down.effects);
  }
  return { state: next, effects };
}

/**
 * A recheck's candidate list: count rechecks in which a better gateway answered, and move toward it after enough:
 * by promoting the standby when it already is on that gateway, otherwise by a recover race.
 */
function onCandidates(
  state: ConnectedState,
  input: Extract<MachineInput, { type: "candidates" }>,
  ctx: MachineContext,
): Outcome {
  const shared = withCandidates(state.shared, input.candidates);
  const own =
    shared.candidates.find((c) => c.name === state.active.leg.gateway) ??
    state.shared.candidates.find((c) => c.name === state.active.leg.gateway);
  if (own === undefined) return { state: { ...state, shared }, effects: [] };
  const better = shared.candidates.filter(
    (c) => c.priority < own.priority && reportsReachable(c) && !allKindsUnreachable(c),
  );
  const streak = better.length > 0 ? state.betterStreak + 1 : 0;
  if (streak < RECOVER_AFTER_RECHECKS || (state.recover !== null && state.recover.status === "running")) {
    return { state: { ...state, shared, betterStreak: streak }, effects: [] };
  }
  const sctx = standbyContext(ctx);
  const sbGateway = state.standby.leg?.leg.gateway ?? null;
  const best = better[0];
  if (best !== undefined && sbGateway === best.name && standbyFresh(state.standby, input.now, sctx)) {
    const sb = state.standby.leg;
    if (sb !== null) {
      const active: ActiveLeg = {
        leg: sb.leg,
        config: sb.config,
        firstReplyAt: sb.firstReplyAt,
        upAt: sb.upAt,
        pathRttMs: pathRttOf(sb.health),
      };
      const effects: Effect[] = [
        { type: "cancel-timer", timer: "standby" },
        { type: "cancel-timer", timer: "standby-stagger" },
      ];
      return {
        go: {
          to: "connected",
          active,
          race: null,
          raceEffects: [],
          previous: state.active,
          failover: null,
          standby: null,
        },
        shared: { ...shared, lastRace: state.shared.lastRace },
        effects,
      };
    }
  }
  // A standby on (or racing toward) a gateway the recover race may use would be a second tunnel with the same keys.
  const clash = state.standby.race !== null || (sbGateway !== null && better.some((c) => c.name === sbGateway));
  const down = clash ? standbyTeardown(state.standby, input.now) : { standby: state.standby, effects: [] };
  const planned = allocateLegs(shared, better, ctx.policy.race);
  if (planned.legs.length === 0) return { state: { ...state, shared, betterStreak: streak }, effects: [] };
  const { id, shared: s2 } = nextRaceId(planned.shared);
  const r = raceStart(id, planned.legs, "recover", input.now, ctx.policy.race);
  const next: ConnectedState = { ...state, shared: s2, betterStreak: 0, recover: r.race, standby: down.standby };
  return { state: next, effects: [...down.effects, ...r.effects, stateEvent("connected", input.now, summary(next))] };
}

function onTimer(state: ConnectedState, input: Extract<MachineInput, { type: "timer" }>, ctx: MachineContext): Outcome {
  const hp = ctx.policy.health;
  switch (input.timer) {
    case "health-check": {
      if (!timerDue(state.healthCheckAt, input.now))
        return { state, effects: rearmIfEarly("health-check", state.healthCheckAt, input.now) };
      const verify = state.verify ?? null;
      if (verify !== null && input.now + TIMER_SLACK_MS >= verify.until)
        return failover(
          { ...state, verify: null },
          input.now,
          "session-lost",
          `no reply from ${state.active.leg.gateway} within ${String((verify.until - verify.since) / 1000)} s after ${verify.why === "wake" ? "waking up" : "the network changed"}`,
          ctx,
        );
      const pace = paceOf(state);
      if (pace.pace === "slow") {
        // The idle pace judges nothing: a probe unanswered past its suspicion time brings the fast pace back.
        const suspectAt = paceSuspectAt(state.health, hp);
        if (input.now + TIMER_SLACK_MS >= suspectAt) return quicken(state, input.now, ctx);
        return {
          state: { ...state, healthCheckAt: suspectAt },
          effects: [{ type: "set-timer", timer: "health-check", at: suspectAt }],
        };
      }
      const before = state.health.verdict;
      const h0 = state.health;
      // Without the prober's word, assume a probe has waited since the last reply: silence alone decides.
      const pending = input.pendingSentAt === undefined ? (h0.lastReplyAt ?? h0.startedAt) : input.pendingSentAt;
      const health = healthEvaluate(healthNotePending(h0, pending), input.now, hp);
      const out = react({ ...state, health }, before, input.now, ctx);
      if ("go" in out) return out;
      // Replies pushed the deadline on since the timer was armed: re-arm for the new one.
      // With nothing known to be waiting (the prober not started yet, or all answered), look again a probe later.
      const soonest = input.now + (health.unansweredSince === null ? hp.probeIntervalMs : TIMER_SLACK_MS);
      const deadline = Math.max(healthDeadline(health, hp), soonest);
      const healthCheckAt = verify === null ? deadline : Math.min(deadline, verify.until);
      const cur = out.state;
      if (verify === null && paceMaySlow(pace, cur.health, input.now, hp)) {
        // No user traffic for a while and all is well: the idle pace, checked only when a slow probe is overdue.
        const idle = healthSetEvidence(cur.health, "slow", input.now);
        const suspectAt = paceSuspectAt(idle, hp);
        return {
          state: { ...cur, health: idle, pace: { ...pace, pace: "slow" }, healthCheckAt: suspectAt },
          effects: [
            ...out.effects,
            { type: "probe-pace", pace: "slow" },
            { type: "set-timer", timer: "health-check", at: suspectAt },
          ],
        };
      }
      return {
        state: { ...out.state, healthCheckAt },
        effects: [...out.effects, { type: "set-timer", timer: "health-check", at: healthCheckAt }],
      };
    }
    case "recheck-candidates": {
      if (!timerDue(state.recheckAt, input.now))
        return { state, effects: rearmIfEarly("recheck-candidates", state.recheckAt, input.now) };
      const recheckAt = input.now + RECHECK_INTERVAL_MS;
      return {
        state: { ...state, recheckAt },
        effects: [{ type: "resolve-candidates" }, { type: "set-timer", timer: "recheck-candidates", at: recheckAt }],
      };
    }
    case "race-stagger": {
      if (state.recover === null) return { state, effects: [] };
      const r = raceOnStaggerTimer(state.recover, input.now, ctx.policy.race);
      return { state: { ...state, recover: r.race }, effects: r.effects };
    }
    case "standby-stagger": {
      const r = standbyOnStagger(state.standby, input.now, standbyContextIn(state, ctx));
      return { state: { ...state, standby: r.standby }, effects: r.effects };
    }
    case "standby": {
      const r = standbyOnCheck(
        state.standby,
        state.shared,
        state.active.leg,
        input.now,
        {
          ...standbyContextIn(state, ctx),
          idlePace: paceOf(state).pace === "slow",
          fastSince: paceOf(state).fastSince,
        },
        TIMER_SLACK_MS,
      );
      return { state: { ...state, standby: r.standby, shared: r.shared }, effects: r.effects };
    }
    case "backoff":
      return { state, effects: [] };
  }
}

/** A recover race's winner: routes move to it; the standby stays if it is elsewhere, else a new one is raised. */
function onRecoverWon(
  state: ConnectedState,
  input: Extract<MachineInput, { type: "leg-up" }>,
  race: RaceState,
  raceEffects: Effect[],
): Go {
  const winner = race.winner;
  if (winner === null) throw new Error("connected: a decided recover race without a winner");
  const active = activeFromLegUp(winner, input);
  const keep =
    state.standby.leg !== null && state.standby.leg.leg.gateway !== winner.gateway && state.standby.race === null;
  const down = keep ? { standby: state.standby, effects: [] } : standbyTeardown(state.standby, input.now);
  return {
    go: {
      to: "connected",
      active,
      race,
      raceEffects,
      previous: state.active,
      failover: null,
      standby: keep ? down.standby : null,
    },
    shared: state.shared,
    effects: down.effects,
  };
}

export function handle(state: ConnectedState, input: MachineInput, ctx: MachineContext): Outcome {
  const hp = ctx.policy.health;
  const sctx = standbyContextIn(state, ctx);
  switch (input.type) {
    case "probe": {
      if (standbyOwns(state.standby, input.legId))
        return {
          state: { ...state, standby: standbyOnProbe(state.standby, input.legId, input.sample, input.now, sctx) },
          effects: [],
        };
      if (input.legId !== state.active.leg.id) return { state, effects: [] };
      const verify = state.verify ?? null;
      if (verify !== null && input.sample.rttMs !== null && input.sample.sentAt >= verify.since)
        return verified(state, input.sample, input.now, ctx);
      const before = state.health.verdict;
      const out = react(
        { ...state, health: healthOnSample(state.health, input.sample, input.now, hp) },
        before,
        input.now,
        ctx,
      );
      return paceOf(state).pace === "slow" ? rearmSuspicion(out, hp) : out;
    }
    case "timer":
      return onTimer(state, input, ctx);
    case "candidates":
      return onCandidates(state, input, ctx);
    case "leg-up": {
      if (input.legId === state.active.leg.id) return { state, effects: [] };
      if (standbyOwns(state.standby, input.legId)) {
        const r = standbyOnLegUp(
          state.standby,
          input.legId,
          input.config,
          input.firstReplyAt,
          input.now,
          input.pathRttMs ?? null,
        );
        return { state: { ...state, standby: r.standby }, effects: r.effects };
      }
      if (state.recover === null || !raceHasLeg(state.recover, input.legId))
        return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
      const r = raceOnLegUp(state.recover, input.legId, input.now);
      const winner = r.race.winner;
      if (!r.decided || winner === null) return { state: { ...state, recover: r.race }, effects: r.effects };
      return onRecoverWon(state, input, r.race, r.effects);
    }
    case "leg-failed": {
      if (standbyOwns(state.standby, input.legId)) {
        const r = standbyOnLegFailed(state.standby, input.legId, input.code, input.message, input.now, sctx);
        return { state: { ...state, standby: r.standby }, effects: r.effects };
      }
      if (state.recover === null) return { state, effects: [] };
      const r = raceOnLegFailed(state.recover, input.legId, input.code, input.message, input.now, ctx.policy.race);
      if (!r.decided) return { state: { ...state, recover: r.race }, effects: r.effects };
      // The better gateway answered probes but no leg to it came up: stay, and let the streak build up again.
      const next: ConnectedState = {
        ...state,
        recover: null,
        betterStreak: 0,
        shared: { ...state.shared, lastRace: raceRecord(r.race) },
      };
      return { state: next, effects: [...r.effects, ...raceEnded(r.race, input.now)] };
    }
    case "leg-down": {
      if (standbyOwns(state.standby, input.legId)) {
        const r = standbyOnLegDown(state.standby, input.legId, input.now);
        return { state: { ...state, standby: r.standby }, effects: r.effects };
      }
      if (input.legId !== state.active.leg.id) return { state, effects: [] };
      // An engine re-establishing after a path change or a wake (openconnect's reconnect) says so; the check decides.
      if (state.verify != null && input.now < state.verify.until) return { state, effects: [] };
      // The reconnect may come after the first replies ended the check (packets still passed meanwhile): check again.
      const rechecked = state.rechecked ?? null;
      if (rechecked !== null && input.now - rechecked.at < ROAM_VERIFY_MS) {
        const verify = { why: rechecked.why, since: input.now, until: input.now + ROAM_VERIFY_MS };
        const next: ConnectedState = { ...state, verify, healthCheckAt: Math.min(state.healthCheckAt, verify.until) };
        return {
          state: next,
          effects: [
            { type: "set-timer", timer: "health-check", at: Math.max(next.healthCheckAt, input.now) },
            stateEvent("connected", input.now, summary(next)),
          ],
        };
      }
      return failover(state, input.now, "leg-down", `leg-down: ${input.reason}`, ctx);
    }
    case "disconnect": {
      const rec = cancelRecover(state, input.now);
      const down = standbyTeardown(state.standby, input.now);
      const id = state.active.leg.id;
      const effects: Effect[] = [
        ...rec.effects,
        ...down.effects,
        { type: "stop-monitor", legId: id },
        { type: "clear-routes" },
        { type: "stop-leg", legId: id },
        ...cancelAllTimers(),
      ];
      return { go: { to: "disconnected" }, shared: rec.shared, effects };
    }
    case "network":
      if (input.initial === true) return { state, effects: [] };
      if (input.change === "offline") return goOffline(state, input.now, input.detail);
      return startVerify(state, "path-changed", input.now, ctx);
    case "wake":
      return startVerify(state, "wake", input.now, ctx);
    case "tunnel-activity":
      return quicken(state, input.now, ctx);
    case "connect":
      return { state, effects: [] };
  }
}

/**
 * A path change or a wake: the active leg (and the standby) stay and are checked at once; the engines follow the new
 * address themselves (see the recheck-leg effect). Until ROAM_VERIFY_MS has passed, silence is not a dead gateway.
 */
function startVerify(state: ConnectedState, why: "path-changed" | "wake", now: number, ctx: MachineContext): Outcome {
  const active = state.active.leg;
  if (why === "path-changed" && !FOLLOWS_PATH_CHANGE[active.kind])
    return failover(
      state,
      now,
      "session-lost",
      `${KIND_NAMES[active.kind]} to ${active.gateway} cannot follow the new network: reconnecting`,
      ctx,
    );
  // Checked at the fast pace: the restarted monitors start fast, and the health check keeps its fast schedule.
  const q = quicken(state, now, ctx);
  const fast = q.state;
  const boundMs =
    why === "wake" ? Math.max(WAKE_VERIFY_MS, deadWindowMs(fast.health, ctx.policy.health)) : ROAM_VERIFY_MS;
  const verify = { why, since: now, until: now + boundMs };
  const healthCheckAt = Math.min(healthDeadline(fast.health, ctx.policy.health), verify.until);
  const next: ConnectedState = {
    ...fast,
    verify,
    healthCheckAt: Math.max(healthCheckAt, now),
    rechecked: { at: now, why },
  };
  const effects: Effect[] = [
    ...q.effects.filter((e) => e.type !== "set-timer"),
    { type: "recheck-leg", legId: state.active.leg.id, why },
  ];
  const sb = state.standby.leg;
  if (sb !== null) effects.push({ type: "recheck-leg", legId: sb.leg.id, why });
  effects.push(
    { type: "set-timer", timer: "health-check", at: next.healthCheckAt },
    stateEvent("connected", now, summary(next)),
  );
  return { state: next, effects };
}

/** The active gateway answered after the change: the silence of the move is forgotten, not counted as loss. */
function verified(
  state: ConnectedState,
  sample: Extract<MachineInput, { type: "probe" }>["sample"],
  now: number,
  ctx: MachineContext,
): Outcome {
  const hp = ctx.policy.health;
  const health = healthOnSample(healthStart(now, pathRttOf(state.health)), sample, now, hp);
  const next: ConnectedState = { ...state, verify: null, health, healthCheckAt: healthDeadline(health, hp) };
  return {
    state: next,
    effects: [
      { type: "set-timer", timer: "health-check", at: next.healthCheckAt },
      stateEvent("connected", now, summary(next)),
    ],
  };
}

/** No route toward any gateway: nothing can carry traffic, so everything stops and detourd waits for a network. */
function goOffline(state: ConnectedState, now: number, detail: string): Go {
  const rec = cancelRecover(state, now);
  const down = standbyTeardown(state.standby, now);
  const id = state.active.leg.id;
  return goWaiting(rec.shared, detail, [
    ...rec.effects,
    ...down.effects,
    { type: "stop-monitor", legId: id },
    { type: "clear-routes" },
    { type: "stop-leg", legId: id },
  ]);
}
