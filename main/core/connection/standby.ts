/**
 * The warm standby, a pure sub-machine of the connected state: a second tunnel to another gateway (preferably
 * over another protocol), raised by a small race of its own, probed slowly, and promoted by a route change when
 * the active tunnel fails. It never carries traffic while it is the standby.
 */
import type { HealthPolicy, RacePolicy, StandbyPolicy } from "../config/schema.ts";
import type { TunnelConfig } from "../tunnel/engine-types.ts";
import { healthOnSample, healthStart, healthStats, RECOVER_RTT_FRACTION, type HealthState } from "./health.ts";
import { allocateLegs, nextRaceId, type Shared, type StandbyLeg, type StandbyState } from "./machine-state.ts";
import {
  raceCancel,
  raceHasLeg,
  raceOnLegFailed,
  raceOnLegUp,
  raceOnStaggerTimer,
  raceRecord,
  raceStart,
  type RaceState,
  type RaceStep,
} from "./race.ts";
import type { Effect, Leg, ProbeSample } from "./types.ts";
import { rearmIfEarly, timerDue } from "./timers.ts";

/**
 * After a standby race found nothing (every other gateway down or refusing), the next attempt waits this long:
 * often enough to have a standby again soon after a gateway returns, rarely enough not to churn engines.
 */
export const STANDBY_RETRY_MS = 10_000;
/**
 * A new standby is raised this long after the active tunnel took over, not at once: its engine start (charon's
 * above all) costs CPU exactly while the new tunnel's routes go in and its first packets flow. A second later
 * nobody notices, and a failure inside that second still has the failover race.
 */
export const STANDBY_RAISE_DELAY_MS = 1_000;
/** How often an up standby is checked for staleness; a check costs nothing but a look at its last reply. */
export const STANDBY_CHECK_MS = 2_000;
/**
 * ...and at the idle pace, where its stale window is four idle probe intervals (16 s by default): a check every
 * 4 s finds a silent standby soon enough, with half the wake-ups of an idle daemon.
 */
export const STANDBY_IDLE_CHECK_MS = 4_000;
/**
 * A standby silent for this many freshness windows (or idle probe intervals, when longer) is replaced: it would
 * not be promoted anyway, and a new one may find a path that works. Four windows (3 s at the fast pace, 16 s at
 * the idle one by default) ride out a short hiccup of the standby's own path.
 */
export const STANDBY_STALE_FACTOR = 4;

export interface StandbyContext {
  standby: StandbyPolicy;
  race: RacePolicy;
  health: HealthPolicy;
  /** The probes run at the idle pace (pace.ts): the standby answers only every idleProbeIntervalMs. */
  idlePace?: boolean;
  /** When the current fast pace began (pace.ts): the standby's silence counts from then at the earliest. */
  fastSince?: number;
}

export interface StandbyStep {
  standby: StandbyState;
  shared: Shared;
  effects: Effect[];
}

export function standbyIdle(): StandbyState {
  return { leg: null, race: null, checkAt: null, avoid: [] };
}

/** Arms the first standby race for `STANDBY_RAISE_DELAY_MS` from now (nothing when one is up or off). */
export function standbyScheduleRaise(
  sb: StandbyState,
  avoid: readonly string[],
  now: number,
  ctx: StandbyContext,
): { standby: StandbyState; effects: Effect[] } {
  if (ctx.standby.mode === "off" || sb.leg !== null || sb.race !== null) return { standby: sb, effects: [] };
  const effects: Effect[] = [];
  return { standby: schedule({ ...sb, avoid: [...avoid] }, now + STANDBY_RAISE_DELAY_MS, effects), effects };
}

/** The standby's race runs beside a possible recover race, so its stagger timer has a name of its own. */
function retime(effects: readonly Effect[]): Effect[] {
  return effects.map((e) =>
    (e.type === "set-timer" || e.type === "cancel-timer") && e.timer === "race-stagger"
      ? { ...e, timer: "standby-stagger" }
      : e,
  );
}

function raceEndedEffects(race: RaceState, now: number): Effect[] {
  return [{ type: "notify", event: { type: "race-ended", at: now, race: raceRecord(race) } }];
}

function schedule(sb: StandbyState, at: number, effects: Effect[]): StandbyState {
  effects.push({ type: "set-timer", timer: "standby", at });
  return { ...sb, checkAt: at };
}

/** The standby's health policy: its slower probes, and a dead window that never fires (freshness decides). */
function standbyHealthPolicy(ctx: StandbyContext): HealthPolicy {
  return { ...ctx.health, probeIntervalMs: ctx.standby.probeIntervalMs, deadAfterMs: Number.MAX_SAFE_INTEGER };
}

/**
 * Legs for a standby: gateways other than the active one (and than `avoid`, e.g. the one just failed away from),
 * in ranked order; within each gateway, kinds other than the active leg's first, so the standby is reached
 * another way and one blocked protocol cannot take both tunnels down; datagram protocols before TLS, because
 * the standby becomes the active tunnel and TCP inside TCP suffers under loss.
 */
export function planStandby(
  shared: Shared,
  active: Leg,
  avoid: readonly string[],
  policy: RacePolicy,
): { legs: Leg[]; shared: Shared } {
  const exclude = [active.gateway, ...avoid].map((gateway) => ({ gateway }));
  const planned = allocateLegs(shared, shared.candidates, policy, exclude);
  const order: string[] = [];
  for (const l of planned.legs) if (!order.includes(l.gateway)) order.push(l.gateway);
  const legs = order.flatMap((gw) => {
    const rank = (l: Leg): number => (l.kind === active.kind ? 2 : l.kind === "anyconnect-tls" ? 1 : 0);
    return planned.legs.filter((l) => l.gateway === gw).sort((a, b) => rank(a) - rank(b));
  });
  return { legs, shared: planned.shared };
}

/** Starts a standby race when the policy wants one and none is up or coming; otherwise retries later. */
export function standbyRaise(
  sb: StandbyState,
  shared0: Shared,
  active: Leg,
  avoid: readonly string[],
  now: number,
  ctx: StandbyContext,
): StandbyStep {
  if (ctx.standby.mode === "off" || sb.leg !== null || sb.race !== null)
    return { standby: sb, shared: shared0, effects: [] };
  const planned = planStandby(shared0, active, [...new Set([...sb.avoid, ...avoid])], ctx.race);
  const effects: Effect[] = [];
  if (planned.legs.length === 0)
    return {
      standby: schedule({ ...sb, avoid: [] }, now + STANDBY_RETRY_MS, effects),
      shared: planned.shared,
      effects,
    };
  const { id, shared } = nextRaceId(planned.shared);
  const r = raceStart(id, planned.legs, "standby", now, ctx.race);
  return { standby: { ...sb, race: r.race, checkAt: null, avoid: [] }, shared, effects: retime(r.effects) };
}

/** Whether the leg id belongs to the standby (its race's legs or the standby tunnel itself). */
export function standbyOwns(sb: StandbyState, legId: string): boolean {
  return sb.leg?.leg.id === legId || (sb.race !== null && raceHasLeg(sb.race, legId));
}

export function standbyOnLegUp(
  sb: StandbyState,
  legId: string,
  config: TunnelConfig,
  firstReplyAt: number,
  now: number,
  pathRttMs: number | null = null,
): { standby: StandbyState; effects: Effect[] } {
  if (sb.race === null) return { standby: sb, effects: sb.leg?.leg.id === legId ? [] : [{ type: "stop-leg", legId }] };
  const r: RaceStep = raceOnLegUp(sb.race, legId, now);
  const effects = retime(r.effects);
  const winner = r.race.winner;
  if (!r.decided || winner === null)
    return { standby: { ...sb, race: r.race.status === "running" ? r.race : null }, effects };
  // The engine's own data-plane probe is the standby's first reply.
  const health: HealthState = { ...healthStart(now, pathRttMs), lastReplyAt: firstReplyAt };
  const leg: StandbyLeg = { leg: winner, config, upAt: now, firstReplyAt, health };
  effects.push({ type: "start-monitor", legId: winner.id, role: "standby" }, ...raceEndedEffects(r.race, now));
  return { standby: schedule({ leg, race: null, checkAt: null, avoid: [] }, now + STANDBY_CHECK_MS, effects), effects };
}

export function standbyOnLegFailed(
  sb: StandbyState,
  legId: string,
  code: Parameters<typeof raceOnLegFailed>[2],
  message: string,
  now: number,
  ctx: StandbyContext,
): { standby: StandbyState; effects: Effect[] } {
  if (sb.race === null) return { standby: sb, effects: [] };
  const r = raceOnLegFailed(sb.race, legId, code, message, now, ctx.race);
  const effects = retime(r.effects);
  if (!r.decided) return { standby: { ...sb, race: r.race }, effects };
  effects.push(...raceEndedEffects(r.race, now));
  return { standby: schedule({ ...sb, race: null }, now + STANDBY_RETRY_MS, effects), effects };
}

export function standbyOnStagger(
  sb: StandbyState,
  now: number,
  ctx: StandbyContext,
): { standby: StandbyState; effects: Effect[] } {
  if (sb.race === null) return { standby: sb, effects: [] };
  const r = raceOnStaggerTimer(sb.race, now, ctx.race);
  return { standby: { ...sb, race: r.race }, effects: retime(r.effects) };
}

export function standbyOnProbe(
  sb: StandbyState,
  legId: string,
  sample: ProbeSample,
  now: number,
  ctx: StandbyContext,
): StandbyState {
  if (sb.leg?.leg.id !== legId) return sb;
  return { ...sb, leg: { ...sb.leg, health: healthOnSample(sb.leg.health, sample, now, standbyHealthPolicy(ctx)) } };
}

/** Tears the standby down: its race cancelled, its tunnel and monitor stopped, its timers disarmed. */
export function standbyTeardown(sb: StandbyState, now: number): { standby: StandbyState; effects: Effect[] } {
  const effects: Effect[] = [];
  if (sb.race !== null) {
    const r = raceCancel(sb.race, now);
    effects.push(...retime(r.effects), ...raceEndedEffects(r.race, now));
  }
  if (sb.leg !== null)
    effects.push({ type: "stop-monitor", legId: sb.leg.leg.id }, { type: "stop-leg", legId: sb.leg.leg.id });
  effects.push({ type: "cancel-timer", timer: "standby" }, { type: "cancel-timer", timer: "standby-stagger" });
  return { standby: standbyIdle(), effects };
}

/** The standby engine reported its tunnel down: drop it and raise another later. */
export function standbyOnLegDown(
  sb: StandbyState,
  legId: string,
  now: number,
): { standby: StandbyState; effects: Effect[] } {
  if (sb.leg?.leg.id !== legId) return { standby: sb, effects: [] };
  const effects: Effect[] = [
    { type: "stop-monitor", legId },
    { type: "stop-leg", legId },
  ];
  return { standby: schedule({ ...sb, leg: null }, now + STANDBY_RETRY_MS, effects), effects };
}

/** Whether the standby has nothing under way: no leg up, no race of its own, no check or retry armed. */
export function standbyAtRest(sb: StandbyState): boolean {
  return sb.leg === null && sb.race === null && sb.checkAt === null;
}

/** Whether the standby answered recently enough to carry traffic the moment routes move to it. */
export function standbyFresh(sb: StandbyState, now: number, ctx: StandbyContext): boolean {
  const last = sb.leg?.health.lastReplyAt ?? null;
  return last !== null && now - last <= ctx.standby.freshMs;
}

/**
 * A brownout moves the tunnel only to a standby measured better than the degraded leg, never to an unmeasured
 * gateway: on a link lossy for every gateway (crowded Wi-Fi, a saturated uplink) the standby measures as badly, and
 * the tunnel stays where it is. This many settled standby samples (4 s at its 250 ms pace) make a measurement.
 */
export const MEASURED_MIN_SAMPLES = 16;
/** The confidence of the loss comparison (z of a two-sided 95 % interval). */
const LOSS_Z = 1.96;

/**
 * Wilson's score interval for `lost` of `n` probes, in percent: unlike the plain ratio it stays honest for a few
 * dozen samples (0 of 20 lost is "under 16 %", not "0 %"), so a lucky run of the standby is not taken for a better path.
 */
export function lossInterval(lost: number, n: number, z = LOSS_Z): { low: number; high: number } {
  if (n <= 0) return { low: 0, high: 100 };
  const p = lost / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return { low: 100 * Math.max(0, centre - half), high: 100 * Math.min(1, centre + half) };
}

/**
 * Whether the standby is measured better than the degraded active leg (`active`, its health): fresh, measured
 * (MEASURED_MIN_SAMPLES), its loss surely under the brownout threshold, surely under the active leg's loss when
 * that leg is lossy, and with an RTT threshold set, its median RTT well under it (and under the active leg's when
 * that leg is slow). The caller asks for this to hold for the brownout's hold time before it moves.
 */
export function standbyMeasuredBetter(
  sb: StandbyState,
  active: HealthState,
  now: number,
  ctx: StandbyContext,
): boolean {
  if (sb.leg === null || !standbyFresh(sb, now, ctx)) return false;
  const st = healthStats(sb.leg.health, now, standbyHealthPolicy(ctx));
  if (st.lossPct === null || st.samples < MEASURED_MIN_SAMPLES) return false;
  const b = ctx.health.brownout;
  const mine = lossInterval(Math.round((st.lossPct * st.samples) / 100), st.samples);
  if (mine.high >= b.lossPct) return false;
  const at = healthStats(active, now, ctx.health);
  if (at.lossPct !== null && at.lossPct >= b.lossPct) {
    const theirs = lossInterval(Math.round((at.lossPct * at.samples) / 100), at.samples);
    if (mine.high >= theirs.low) return false;
  }
  if (b.rttMs === null) return true;
  if (st.rttP50Ms === null || st.rttP50Ms >= b.rttMs * RECOVER_RTT_FRACTION) return false;
  return at.rttP50Ms === null || at.rttP50Ms <= b.rttMs || st.rttP50Ms < at.rttP50Ms;
}

/**
 * The "standby" timer: raise a standby when there is none (a retry after a failed attempt), replace a stale one,
 * and re-arm the next check. A stale timer changes nothing; an early one is armed again.
 */
export function standbyOnCheck(
  sb: StandbyState,
  shared: Shared,
  active: Leg,
  now: number,
  ctx: StandbyContext,
  slackMs: number,
): StandbyStep {
  if (!timerDue(sb.checkAt, now, slackMs))
    return { standby: sb, shared, effects: rearmIfEarly("standby", sb.checkAt, now, slackMs) };
  const cleared: StandbyState = { ...sb, checkAt: null };
  if (cleared.leg === null) return standbyRaise(cleared, shared, active, [], now, ctx);
  // Silence counts from the last reply, or from when the fast pace began if later: a standby heard two seconds ago
  // at the idle pace has only had the fast probes since then to answer (a move's MOBIKE update takes a moment).
  const last = Math.max(
    cleared.leg.health.lastReplyAt ?? cleared.leg.firstReplyAt,
    ctx.idlePace === true ? Number.NEGATIVE_INFINITY : (ctx.fastSince ?? Number.NEGATIVE_INFINITY),
  );
  // At the idle pace (pace.ts) a standby answers only every idleProbeIntervalMs: stale is judged on that scale.
  const windowMs = ctx.idlePace === true ? Math.max(ctx.standby.freshMs, ctx.standby.idleProbeIntervalMs ?? 0) : 0;
  if (now - last > STANDBY_STALE_FACTOR * Math.max(ctx.standby.freshMs, windowMs)) {
    const down = standbyTeardown(cleared, now);
    const effects = [...down.effects];
    return { standby: schedule(down.standby, now + STANDBY_RETRY_MS, effects), shared, effects };
  }
  const effects: Effect[] = [];
  const every = ctx.idlePace === true ? STANDBY_IDLE_CHECK_MS : STANDBY_CHECK_MS;
  return { standby: schedule(cleared, now + every, effects), shared, effects };
}

/** What status shows of the standby. */
export function standbySnapshot(
  sb: StandbyState,
): { gateway: string; protocol: Leg["kind"]; legId: string; lastReplyAt: number | null } | null {
  if (sb.leg === null) return null;
  return {
    gateway: sb.leg.leg.gateway,
    protocol: sb.leg.leg.kind,
    legId: sb.leg.leg.id,
    lastReplyAt: sb.leg.health.lastReplyAt,
  };
}
