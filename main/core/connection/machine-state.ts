/**
 * The tunnel state machine's data: one record per state (a tagged union), what every state carries, and the
 * small shared helpers the per-state modules in states/ use. The states themselves live in states/*.ts.
 */
import type { Random } from "../backoff.ts";
import type { HealthPolicy, RacePolicy, RetryPolicy, StandbyPolicy } from "../config/schema.ts";
import { RETRYABLE, type EngineErrorCode, type TunnelConfig } from "../tunnel/engine-types.ts";
import { allKindsUnreachable, probedSilent, rankCandidates } from "./candidates.ts";
import type { HealthState } from "./health.ts";
import type { PaceState } from "./pace.ts";
import {
  legsInFlight,
  MAX_LEGS_IN_FLIGHT,
  pendingRecord,
  planLegs,
  legKey,
  raceLastLive,
  raceReplacePending,
  raceRetryGateways,
  type RaceState,
} from "./race.ts";
import type {
  Candidate,
  ConnectionStateName,
  Effect,
  FailoverRecord,
  Leg,
  LegKind,
  LegRecord,
  MachineInput,
  RaceRecord,
  TimerId,
} from "./types.ts";

export interface MachineContext {
  policy: { race: RacePolicy; health: HealthPolicy; retry: RetryPolicy; standby: StandbyPolicy };
  /** The configured candidates: what a race uses when discovery returns nothing. */
  gateways: Candidate[];
  /** What won last time on the current network (per-network memory); connect races try it first. */
  preferredLeg?: { gateway: string; kind: LegKind } | null;
  /**
   * Where the retry backoff's jitter comes from (see ../backoff.ts): the daemon passes Math.random, so devices
   * that lost their gateways together do not retry in lockstep. Left out, retries wait exactly the backoff's
   * step, which the fake-clock tests rely on.
   */
  random?: Random;
}

/** What survives every transition. Invariant: `legSeq` and `raceSeq` only grow, so ids are never reused. */
export interface Shared {
  legSeq: number;
  raceSeq: number;
  /** The last ranking, best first. */
  candidates: Candidate[];
  lastRace: RaceRecord | null;
  lastFailover: FailoverRecord | null;
  /** When the current state was entered. */
  since: number | null;
  /** The network monitor's last word: no route toward any gateway (absent: none, or a route). */
  offline?: boolean;
}

/** The leg that carries traffic: routes point at it and its monitor runs. */
export interface ActiveLeg {
  leg: Leg;
  config: TunnelConfig;
  /** When the first reply came back through it (from the engine's data-plane probe). */
  firstReplyAt: number;
  upAt: number;
  /** The path's round trip as measured before the monitor started (proof of life, or the standby's probes). */
  pathRttMs?: number | null;
}

export interface DisconnectedState {
  name: "disconnected";
  shared: Shared;
}

export interface ResolvingState {
  name: "resolving";
  shared: Shared;
  reason: "connect" | "retry";
  /** Consecutive failed races before this one (0 on a fresh connect). */
  attempt: number;
}

export interface RacingState {
  name: "racing";
  shared: Shared;
  race: RaceState;
  attempt: number;
  /** When the armed recheck-candidates timer is due (RACE_RECHECK_MS after the last round came back). */
  recheckAt: number | null;
}

export interface StandbyLeg {
  leg: Leg;
  config: TunnelConfig;
  upAt: number;
  firstReplyAt: number;
  health: HealthState;
}

/** The warm standby (see standby.ts). Invariant: at most one of `leg` and a running `race`; `checkAt` is when the armed "standby" timer is due. */
export interface StandbyState {
  leg: StandbyLeg | null;
  race: RaceState | null;
  checkAt: number | null;
  /** Gateways the next standby race leaves out (the one just failed away from); cleared once a standby is raised. */
  avoid: string[];
}

export interface ConnectedState {
  name: "connected";
  shared: Shared;
  active: ActiveLeg;
  health: HealthState;
  /** When the armed health-check timer is due. */
  healthCheckAt: number;
  /** When the armed recheck-candidates timer is due. */
  recheckAt: number;
  /** Consecutive rechecks in which a better-ranked gateway reported reachable. */
  betterStreak: number;
  /** A race toward a better gateway, run while this tunnel keeps carrying traffic. */
  recover: RaceState | null;
  /**
   * While the active leg is degrading (its brownout condition holds): since when the standby has measured better
   * without a break (standby.ts standbyMeasuredBetter); the tunnel moves once this held for the brownout's hold.
   */
  standbyBetterSince?: number | null;
  standby: StandbyState;
  /**
   * After a path change or a wake: the tunnel is being checked (and re-established on the same gateway by its
   * engine) until a probe sent since `since` is answered; silence meanwhile is not a dead gateway until `until`.
   */
  verify?: Verify | null;
  /** The last path change or wake: an engine re-establishing soon after (openconnect's reconnect) is expected. */
  rechecked?: { at: number; why: Verify["why"] } | null;
  /** The probes' pace (pace.ts); absent: fast. */
  pace?: PaceState;
}

export interface Verify {
  why: "path-changed" | "wake";
  since: number;
  until: number;
}

/** "session-lost": after a path change or a wake the gateway did not answer in time; its own leg is raced first. */
export type FailoverCause = "dead" | "leg-down" | "session-lost";

export interface FailingOverState {
  name: "failing-over";
  shared: Shared;
  /** Still routed and monitored until a winner is up: make-before-break. */
  failed: ActiveLeg;
  health: HealthState;
  cause: FailoverCause;
  failover: FailoverRecord;
  race: RaceState;
  /** When the armed recheck-candidates timer is due (RACE_RECHECK_MS after the last round came back). */
  recheckAt: number | null;
}

export interface ErrorState {
  name: "error";
  shared: Shared;
  reason: string;
  /** Consecutive failed races, including the one that led here. */
  attempt: number;
  /** Null when retrying cannot help (credentials, pinned identity, configuration): only `connect` retries. */
  nextRetryAt: number | null;
  /** When the armed recheck-candidates timer is due: while a long backoff runs, a returning gateway ends it. */
  recheckAt: number | null;
}

export interface WaitingState {
  name: "waiting-for-network";
  shared: Shared;
  /** What the monitor said last (for status). */
  detail: string;
}

export type MachineState =
  DisconnectedState | ResolvingState | RacingState | ConnectedState | FailingOverState | ErrorState | WaitingState;

/** A request to enter a state; states name their successor this way so that no state module imports another. */
export type Entry =
  | { to: "disconnected" }
  | { to: "resolving"; reason: "connect" | "retry"; attempt: number }
  | { to: "racing"; reason: RaceRecord["reason"]; attempt: number; ranked: Candidate[] }
  | {
      to: "connected";
      active: ActiveLeg;
      /** The race whose winner this is; null when the warm standby was promoted instead. */
      race: RaceState | null;
      /** Effects of deciding the race (losers stopped), emitted after the winner's routes are applied. */
      raceEffects: Effect[];
      /** The leg traffic moves away from; stopped only after the winner's routes are applied. */
      previous: ActiveLeg | null;
      failover: FailoverRecord | null;
      /** A standby that stays up across the move (null: raise a new one, avoiding the previous leg's gateway). */
      standby: StandbyState | null;
    }
  | {
      to: "failing-over";
      failed: ActiveLeg;
      health: HealthState;
      cause: FailoverCause;
      reason: string;
      lastReplyAt: number;
    }
  | { to: "waiting-for-network"; detail: string }
  | {
      to: "error";
      reason: string;
      attempt: number;
      retry: boolean;
      race: RaceState | null;
      failover: FailoverRecord | null;
    };

/** What a state's `enter` or `handle` returns: stay (a new record of a state), or go to another state. */
export type Outcome = { state: MachineState; effects: Effect[] } | Go;
export interface Go {
  go: Entry;
  shared: Shared;
  /** Effects of leaving the current state; they run before the next state's entry effects. */
  effects: Effect[];
}

export const TIMERS: readonly TimerId[] = Object.keys({
  "race-stagger": true,
  backoff: true,
  "health-check": true,
  "recheck-candidates": true,
  standby: true,
  "standby-stagger": true,
} satisfies Record<TimerId, true>) as TimerId[];

/** Effects that leave nothing armed. */
export function cancelAllTimers(): Effect[] {
  return TIMERS.map((timer) => ({ type: "cancel-timer", timer }));
}

export function stateEvent(name: ConnectionStateName, now: number, summary: string): Effect {
  return { type: "notify", event: { type: "state", at: now, state: name, detail: summary } };
}

/** The leg that won a race, as the active leg: when it first answered, and the path's RTT its proof of life measured. */
export function activeFromLegUp(winner: Leg, input: Extract<MachineInput, { type: "leg-up" }>): ActiveLeg {
  return {
    leg: winner,
    config: input.config,
    firstReplyAt: input.firstReplyAt,
    upAt: input.now,
    pathRttMs: input.pathRttMs ?? null,
  };
}

/** Plans legs with ids taken from `shared`'s counter; returns the legs and the advanced shared record. */
export function allocateLegs(
  shared: Shared,
  ranked: readonly Candidate[],
  policy: RacePolicy,
  exclude: { gateway?: string; legKey?: string }[] = [],
  preferred: { gateway: string; kind: LegKind } | null = null,
): { legs: Leg[]; shared: Shared } {
  let n = shared.legSeq;
  const legs = planLegs(ranked, policy, { exclude, nextId: () => `L${String((n += 1))}`, preferred });
  return { legs, shared: { ...shared, legSeq: n } };
}

export function nextRaceId(shared: Shared): { id: string; shared: Shared } {
  const n = shared.raceSeq + 1;
  return { id: `R${String(n)}`, shared: { ...shared, raceSeq: n } };
}

/**
 * Legs for replacing a failed one: other gateways first, then the failed gateway's other kinds (a protocol that
 * broke on a gateway that still answers: blocked, or its engine's session lost), then gateways the probes found
 * silent, which a race would only wait on (`otherGatewaysOnly` leaves out the failed gateway).
 */
export function planFailover(
  shared: Shared,
  failed: Leg,
  policy: RacePolicy,
  otherGatewaysOnly: boolean,
): { legs: Leg[]; shared: Shared } {
  const others = allocateLegs(shared, shared.candidates, policy, [{ gateway: failed.gateway }]);
  if (otherGatewaysOnly) return others;
  const own = shared.candidates.filter((c) => c.name === failed.gateway);
  const same = allocateLegs(others.shared, own, policy, [{ legKey: legKey(failed) }]);
  const silent = new Set(shared.candidates.filter(probedSilent).map((c) => c.name));
  const heard = (l: Leg): boolean => !silent.has(l.gateway);
  const legs = [
    ...others.legs.filter(heard),
    ...same.legs.filter(heard),
    ...others.legs.filter((l) => !heard(l)),
    ...same.legs.filter((l) => !heard(l)),
  ];
  return { legs, shared: same.shared };
}

/**
 * A leg of a running race failed. When it was the race's last live leg and legs the race has not tried yet are
 * left (the other kinds of gateways beyond `policy.maxGateways`, or candidates ranked after it), they join the race
 * first, so the failure starts the next of them at once: a race whose best gateways are all down (a data centre
 * lost, decommissioned entries at the top of the list) moves on instead of failing and being repeated over the
 * same gateways. `avoid` names gateways never to add (the one a failover moves away from).
 */
export function extendBeforeFailure(
  shared: Shared,
  race: RaceState,
  legId: string,
  policy: RacePolicy,
  avoid: readonly string[] = [],
): { race: RaceState; shared: Shared } {
  if (!raceLastLive(race, legId)) return { race, shared };
  const planned = allocateLegs(shared, shared.candidates, policy, [
    ...race.legs.map((l) => ({ legKey: legKey(l.leg) })),
    ...avoid.map((gateway) => ({ gateway })),
  ]);
  if (planned.legs.length === 0) return { race, shared };
  // Added as pending behind the live leg: its failure, handled next, starts the first of them.
  const pending: RaceState = {
    ...race,
    legs: [...race.legs, ...planned.legs.map(pendingRecord)],
  };
  return { race: pending, shared: planned.shared };
}

/** Gateways the probes found silent, or refusing every kind: their legs wait behind every other gateway's. */
function unheardGateways(candidates: readonly Candidate[]): Set<string> {
  return new Set(candidates.filter((c) => probedSilent(c) || allKindsUnreachable(c)).map((c) => c.name));
}

/**
 * The starting legs that give way to a gateway that answers: with every slot (MAX_LEGS_IN_FLIGHT) held even after
 * `freed` of them stop, the legs of `unheard` gateways. None otherwise.
 */
function yieldingLegs(race: RaceState, unheard: ReadonlySet<string>, freed = 0): LegRecord[] {
  if (legsInFlight(race) - freed < MAX_LEGS_IN_FLIGHT) return [];
  return race.legs.filter((l) => l.outcome === "starting" && unheard.has(l.leg.gateway));
}

/**
 * New candidates arrived while a race runs (discovery or probes finished after it started): its pending legs are
 * re-planned from the new ranking, so gateways that answered go before gateways found silent. Legs already started
 * keep running, except that when every slot (MAX_LEGS_IN_FLIGHT) is held and the next leg is to a gateway that
 * answered, the starting legs of gateways now found silent give way: they are stopped (their gateways' legs go to
 * the back of the plan) and the freed slots go to the gateways that answer. Unchanged when the plan is the same.
 */
export function replanRace(
  shared: Shared,
  race: RaceState,
  policy: RacePolicy,
  now: number,
  avoid: readonly string[] = [],
): { race: RaceState; shared: Shared; effects: Effect[] } {
  if (race.status !== "running") return { race, shared, effects: [] };
  const started = race.legs.slice(0, race.next);
  const unheard = unheardGateways(shared.candidates);
  const giveWay = yieldingLegs(race, unheard);
  const plan = (keep: readonly LegRecord[]): { legs: Leg[]; shared: Shared } =>
    allocateLegs(shared, shared.candidates, policy, [
      ...keep.map((l) => ({ legKey: legKey(l.leg) })),
      ...avoid.map((gateway) => ({ gateway })),
    ]);
  if (giveWay.length > 0) {
    const planned = plan(started.filter((l) => !giveWay.includes(l)));
    const next = planned.legs[0];
    if (next !== undefined && !unheard.has(next.gateway)) {
      const stop = new Set(giveWay.map((l) => l.leg.id));
      const r = raceRetryGateways(race, stop, planned.legs, now, policy);
      return { race: r.race, shared: planned.shared, effects: r.effects };
    }
  }
  const planned = plan(started);
  const same = (a: readonly Leg[], b: readonly Leg[]): boolean =>
    a.length === b.length &&
    a.every((l, i) => {
      const o = b[i];
      return o !== undefined && legKey(l) === legKey(o);
    });
  if (
    same(
      planned.legs,
      race.legs.slice(race.next).map((l) => l.leg),
    )
  )
    return { race, shared, effects: [] };
  const r = raceReplacePending(race, planned.legs, now, policy);
  return { race: r.race, shared: planned.shared, effects: r.effects };
}

/**
 * While a race runs (a connect, a retry, a failover), the candidates are probed again this long after the last
 * round came back: a gateway that was silent when its legs started and answers now is raced again at once
 * (reviveRace) instead of after the legs' deadline and a retry's backoff.
 */
export const RACE_RECHECK_MS = 250;
/** While an error's backoff runs, candidates are probed again this long after the last round came back. */
export const ERROR_RECHECK_MS = 2000;

/** Gateways probed silent in `before` that answered the probe in `after`: back since the last look. */
export function returnedGateways(before: readonly Candidate[], after: readonly Candidate[]): string[] {
  const silent = new Set(before.filter(probedSilent).map((c) => c.name));
  return after
    .filter((c) => silent.has(c.name) && c.probe !== null && !probedSilent(c) && !allKindsUnreachable(c))
    .map((c) => c.name);
}

/**
 * When, after its start, a leg's engine sends its attempt again into a host that stayed silent: wireguard-go every
 * 5 s (REKEY_TIMEOUT); charon's IKE_SA_INIT after 1, 2.4 and 4.36 s (native/engines/ipsec/charon-config.ts:
 * timeout 1.0 s, base 1.4, 3 tries); the kernel's TCP SYN after 1, 3, 7, 15 and 31 s (AnyConnect's TLS, which its
 * DTLS leg starts with too).
 */
export const ENGINE_RETRIES_MS: Record<LegKind, readonly number[]> = {
  wireguard: [5000, 10_000, 15_000, 20_000, 25_000, 30_000],
  ikev2: [1000, 2400, 4360],
  "anyconnect-tls": [1000, 3000, 7000, 15_000, 31_000],
  "anyconnect-dtls": [1000, 3000, 7000, 15_000, 31_000],
};
/** A retry sent this recently may still be completing its exchange (a few round trips and the engine's set-up). */
export const RETRY_IN_FLIGHT_MS = 600;
/** A retry due this soon beats a fresh leg (which needs its engine started): the leg is left to it. */
export const RETRY_DUE_SOON_MS = 300;

/**
 * Whether a leg still starting toward a gateway that came back is better left to its engine's own retry than
 * replaced by a fresh leg: its last retry may still be completing, or its next one is due at once.
 */
export function engineRetryInTime(l: LegRecord, now: number): boolean {
  const age = now - (l.startedAt ?? now);
  const schedule = [0, ...ENGINE_RETRIES_MS[l.leg.kind]];
  const last = Math.max(...schedule.filter((t) => t <= age));
  const next = schedule.find((t) => t > age);
  return age - last < RETRY_IN_FLIGHT_MS || (next !== undefined && next - age <= RETRY_DUE_SOON_MS);
}

/**
 * New candidates while a race runs: gateways that came back (`returned`, outside `avoid`) get fresh legs that start
 * at once, in place of their legs that failed while the host was down and of those still starting whose engine
 * would retry too late (engineRetryInTime), with the other pending legs re-planned behind them; when every slot is
 * held, legs of gateways still silent give way to them (yieldingLegs). Null when no gateway came back that has such
 * a leg to race.
 */
export function reviveRace(
  shared: Shared,
  race: RaceState,
  policy: RacePolicy,
  now: number,
  returned: readonly string[],
  avoid: readonly string[] = [],
): { race: RaceState; shared: Shared; effects: Effect[]; revived: string[] } | null {
  const back = returned.filter((g) => !avoid.includes(g));
  if (race.status !== "running" || back.length === 0) return null;
  const started = race.legs.slice(0, race.next);
  const stuck = (l: LegRecord): boolean => l.outcome === "starting" && !engineRetryInTime(l, now);
  const redo = started.filter((l) => back.includes(l.leg.gateway) && (l.outcome !== "starting" || stuck(l)));
  const giveWay = yieldingLegs(
    race,
    unheardGateways(shared.candidates),
    redo.filter((l) => l.outcome === "starting").length,
  );
  const keep = started.filter((l) => !redo.includes(l) && !giveWay.includes(l)).map((l) => ({ legKey: legKey(l.leg) }));
  const planned = allocateLegs(shared, shared.candidates, policy, [...keep, ...avoid.map((gateway) => ({ gateway }))]);
  const revived = back.filter((g) => planned.legs.some((l) => l.gateway === g));
  if (revived.length === 0) return null;
  const stop = new Set([...redo.filter((l) => l.outcome === "starting"), ...giveWay].map((l) => l.leg.id));
  const r = raceRetryGateways(race, stop, planned.legs, now, policy);
  return { race: r.race, shared: planned.shared, effects: r.effects, revived };
}

/** Leaves for waiting-for-network after these teardown effects (every timer is cancelled on entry). */
export function goWaiting(shared: Shared, detail: string, effects: Effect[]): Go {
  return { go: { to: "waiting-for-network", detail }, shared, effects };
}

/** Human names of the leg kinds, for summaries. */
export const KIND_NAMES: Record<Leg["kind"], string> = {
  wireguard: "WireGuard",
  ikev2: "IKEv2",
  "anyconnect-tls": "AnyConnect (TLS)",
  "anyconnect-dtls": "AnyConnect (DTLS)",
};

/** "gw1", "gw1 and gw2", "gw1, gw2 and gw3". */
export function listNames(names: readonly string[]): string {
  const uniq = [...new Set(names)];
  if (uniq.length <= 1) return uniq[0] ?? "";
  return `${uniq.slice(0, -1).join(", ")} and ${uniq[uniq.length - 1] ?? ""}`;
}

/** "gw1 over WireGuard or IKEv2, gw2 over WireGuard": the legs of a race grouped by gateway. */
export function describeLegs(legs: readonly Leg[]): string {
  const groups = new Map<string, string[]>();
  for (const l of legs) {
    const g = groups.get(l.gateway) ?? [];
    g.push(KIND_NAMES[l.kind]);
    groups.set(l.gateway, g);
  }
  return [...groups].map(([gw, kinds]) => `${gw} over ${kinds.join(" or ")}`).join(", ");
}

const CODE_REASONS: Partial<Record<EngineErrorCode, string>> = {
  "auth-failed": "The gateways refused our credentials",
  "identity-mismatch": "No gateway presented its pinned identity",
  "bad-config": "The configuration cannot work",
};

/**
 * Why a race failed as a whole, and whether retrying by timer can help. Only when every leg failed for a reason
 * a retry cannot fix (credentials, pinned identity, configuration) does the machine stop retrying by itself.
 */
export function raceFailure(race: RaceState): { reason: string; retry: boolean } {
  const codes = race.legs.flatMap((l) => (l.error === null ? [] : [l.error.code]));
  if (codes.length === 0) return { reason: "No gateway reachable", retry: true };
  const fatal = codes.every((c) => c !== "cancelled" && !RETRYABLE[c]);
  if (!fatal) return { reason: "No gateway reachable", retry: true };
  const distinct = [...new Set(codes)];
  const only = distinct.length === 1 ? distinct[0] : undefined;
  return {
    reason: (only === undefined ? undefined : CODE_REASONS[only]) ?? "Every gateway refused the connection",
    retry: false,
  };
}

/** Shared with a fresh candidate list, ranked with hysteresis against the previous ranking. */
export function withCandidates(shared: Shared, candidates: readonly Candidate[]): Shared {
  const previous = shared.candidates.length > 0 ? shared.candidates.map((c) => c.name) : null;
  return { ...shared, candidates: rankCandidates(candidates, previous) };
}
