/**
 * The race, a pure sub-machine: legs start one stagger apart in ranked order, at most MAX_LEGS_IN_FLIGHT at once, a
 * failure hands its slot to the next leg at once, the first leg whose data-plane probe passed both ways wins, and
 * every other started leg is torn down.
 */
import type { RacePolicy } from "../config/schema.ts";
import type { Candidate, Effect, Leg, LegKind, LegRecord, RaceRecord } from "./types.ts";
import type { EngineErrorCode } from "../tunnel/engine-types.ts";
import { probedSilent } from "./candidates.ts";
import { rearmIfEarly, timerDue } from "./timers.ts";

/** Names one leg across races ("gw1/wireguard"): what `exclude` matches, since leg ids are never reused. */
export function legKey(leg: { gateway: string; kind: LegKind }): string {
  return `${leg.gateway}/${leg.kind}`;
}

export interface PlanOptions {
  /** Entries with `gateway` drop every leg of that gateway; entries with `legKey` drop that one leg. */
  exclude?: { gateway?: string; legKey?: string }[];
  nextId: () => string;
  /** The leg that won last time on this network: raced first when it is on offer (per-network memory). */
  preferred?: { gateway: string; kind: LegKind } | null;
}

/**
 * At most this many legs of one race are starting at once; a leg that fails (or gives way to a gateway that
 * answers: replanRace and reviveRace in machine-state.ts) hands its slot to the next pending leg at once. Every leg is a real engine process (wireguard-go, a charon with its
 * plugins, openconnect), a policy-routing slot and a handshake on a laptop's CPU. On a healthy network one leg
 * starts (a handshake answers long before the next stagger) and a UDP-silent one two; a race only reaches eight
 * when the legs ahead are silent, which hold their slots until the leg deadline. Eight is two gateways' every
 * protocol, or the first protocol of the eight best gateways: with 16 gateways and no probe result to tell the
 * dead from the live, the 15th gateway's first leg still starts one leg deadline plus seven staggers in (6.75 s)
 * rather than after every pair ahead of it (14 s, with 20 engines running), and fewer slots would double that.
 */
export const MAX_LEGS_IN_FLIGHT = 8;
/**
 * The best gateway's first this many kinds go before any other gateway's: `policy.order` alternates transports
 * (UDP, then TLS), so a network that drops all UDP costs one stagger on the best gateway, as with one gateway.
 */
export const LEAD_KINDS = 2;

/**
 * The legs of one race in start order. Candidates come ranked (candidates.ts: answered before silent, by
 * priority, by measured latency); each offers its kinds in `policy.order`, less the ones its probe found
 * unreachable and the excluded ones. Order: the best gateway's first LEAD_KINDS kinds; then the first kind of
 * every other gateway (one leg each before any gateway's second: when the best-ranked ones are dead and no probe
 * told, the live ones are reached after one leg per dead gateway, not four); then the remaining kinds of the best
 * `policy.maxGateways` gateways, gateway by gateway. The other gateways' remaining kinds join when those are
 * spent (replanRace, extendBeforeFailure). The preferred leg goes first unless its gateway was probed silent.
 */
export function planLegs(ranked: readonly Candidate[], policy: RacePolicy, opts: PlanOptions): Leg[] {
  const exclude = opts.exclude ?? [];
  const excluded = (c: Candidate, kind: LegKind): boolean =>
    exclude.some((e) => e.legKey === legKey({ gateway: c.name, kind }));
  // The order is worked out over every kind on offer and excluded legs (already started) are dropped after, so a
  // re-plan during the race keeps the order the race started with.
  const offers: { c: Candidate; kinds: LegKind[] }[] = [];
  for (const c of ranked) {
    if (exclude.some((e) => e.gateway === c.name)) continue;
    const kinds = policy.order.filter((k) => c.kinds.includes(k) && c.probe?.reachable[k] !== "no");
    if (kinds.length > 0) offers.push({ c, kinds });
  }
  const [lead, ...others] = offers;
  if (lead === undefined) return [];
  const legsOf = (
    o: { c: Candidate; kinds: LegKind[] },
    kinds: readonly LegKind[],
  ): { c: Candidate; kind: LegKind }[] =>
    kinds.filter((kind) => !excluded(o.c, kind)).map((kind) => ({ c: o.c, kind }));
  const rest = others.filter((o) => legsOf(o, o.kinds.slice(1)).length > 0).slice(0, policy.maxGateways - 1);
  const order = [
    ...legsOf(lead, lead.kinds.slice(0, LEAD_KINDS)),
    ...others.flatMap((o) => legsOf(o, o.kinds.slice(0, 1))),
    ...legsOf(lead, lead.kinds.slice(LEAD_KINDS)),
    ...rest.flatMap((o) => legsOf(o, o.kinds.slice(1))),
  ];
  const p = opts.preferred;
  const i = p == null ? -1 : order.findIndex((l) => l.c.name === p.gateway && l.kind === p.kind);
  const first = order[i];
  if (i > 0 && first !== undefined && !probedSilent(first.c)) {
    order.splice(i, 1);
    order.unshift(first);
  }
  return order.map(({ c, kind }) => ({ id: opts.nextId(), gateway: c.name, kind }));
}

export type RaceStatus = "running" | "won" | "failed" | "cancelled";

/**
 * One race. Invariants: `legs` keeps plan order; legs before `next` left "pending"; at most MAX_LEGS_IN_FLIGHT legs
 * are "starting"; `staggerAt` is non-null only while running with a pending leg left and a slot free; `winner` is
 * set exactly when status is "won".
 */
export interface RaceState {
  id: string;
  reason: RaceRecord["reason"];
  status: RaceStatus;
  startedAt: number;
  endedAt: number | null;
  legs: LegRecord[];
  /** Index of the next leg to start. */
  next: number;
  /** When the stagger timer is due, while one is armed. */
  staggerAt: number | null;
  winner: Leg | null;
}

export interface RaceStep {
  race: RaceState;
  effects: Effect[];
  /** Set when the input changed the race's outcome from running to decided. */
  decided: boolean;
}

function legEvent(race: RaceState, record: LegRecord, now: number): Effect {
  return { type: "notify", event: { type: "leg", at: now, raceId: race.id, record } };
}

/** How many of the race's legs are starting: each holds one of MAX_LEGS_IN_FLIGHT slots. */
export function legsInFlight(race: RaceState): number {
  return race.legs.filter((l) => l.outcome === "starting").length;
}

/**
 * Starts the next pending leg when a slot is free, and arms the stagger for the one after it while a slot is still
 * free. With every slot taken nothing starts and no stagger runs: the next leg starts when a slot frees.
 */
function startNext(race: RaceState, now: number, policy: RacePolicy, effects: Effect[]): RaceState {
  const rec = race.legs[race.next];
  if (rec === undefined || legsInFlight(race) >= MAX_LEGS_IN_FLIGHT) {
    if (race.staggerAt === null) return race;
    effects.push({ type: "cancel-timer", timer: "race-stagger" });
    return { ...race, staggerAt: null };
  }
  const legs = [...race.legs];
  const started: LegRecord = { ...rec, outcome: "starting", startedAt: now };
  legs[race.next] = started;
  effects.push({ type: "start-leg", leg: rec.leg, deadlineAt: now + policy.legDeadlineMs });
  const next = race.next + 1;
  const out0 = { ...race, legs, next };
  const staggerAt = next < legs.length && legsInFlight(out0) < MAX_LEGS_IN_FLIGHT ? now + policy.staggerMs : null;
  effects.push(
    staggerAt !== null
      ? { type: "set-timer", timer: "race-stagger", at: staggerAt }
      : { type: "cancel-timer", timer: "race-stagger" },
  );
  const out = { ...out0, staggerAt };
  effects.push(legEvent(out, started, now));
  return out;
}

/** A leg planned into a race and not started yet. */
export function pendingRecord(leg: Leg): LegRecord {
  return { leg, outcome: "pending", startedAt: null, endedAt: null, error: null };
}

/** Starts a race over planned legs. An empty plan gives a race that has already failed. */
export function raceStart(
  id: string,
  legs: readonly Leg[],
  reason: RaceRecord["reason"],
  now: number,
  policy: RacePolicy,
): RaceStep {
  const base: RaceState = {
    id,
    reason,
    status: legs.length === 0 ? "failed" : "running",
    startedAt: now,
    endedAt: legs.length === 0 ? now : null,
    legs: legs.map(pendingRecord),
    next: 0,
    staggerAt: null,
    winner: null,
  };
  const effects: Effect[] = [
    { type: "notify", event: { type: "race-started", at: now, raceId: id, reason, legs: [...legs] } },
  ];
  if (legs.length === 0) return { race: base, effects, decided: true };
  return { race: startNext(base, now, policy, effects), effects, decided: false };
}

/** The stagger timer fired: start the next pending leg. A stale timer changes nothing; an early one is armed again. */
export function raceOnStaggerTimer(race: RaceState, now: number, policy: RacePolicy): RaceStep {
  if (race.status !== "running") return { race, effects: [], decided: false };
  if (!timerDue(race.staggerAt, now))
    return { race, effects: rearmIfEarly("race-stagger", race.staggerAt, now), decided: false };
  const effects: Effect[] = [];
  return { race: startNext(race, now, policy, effects), effects, decided: false };
}

/** Whether this race started the leg (so a leg-up or leg-failed for it belongs here, late or not). */
export function raceHasLeg(race: RaceState, legId: string): boolean {
  return race.legs.some((l) => l.leg.id === legId);
}

/** Ends a running race: started legs other than the winner are stopped and marked, pending ones cancelled. */
function settle(
  race: RaceState,
  now: number,
  status: Exclude<RaceStatus, "running">,
  winnerId: string | null,
  effects: Effect[],
): RaceState {
  const winner = race.legs.find((l) => l.leg.id === winnerId)?.leg ?? null;
  const legs = race.legs.map((l): LegRecord => {
    if (l.leg.id === winnerId) {
      const rec: LegRecord = { ...l, outcome: "won", endedAt: now };
      effects.push(legEvent(race, rec, now));
      return rec;
    }
    if (l.outcome === "pending") return { ...l, outcome: "cancelled" };
    if (l.outcome === "starting") {
      effects.push({ type: "stop-leg", legId: l.leg.id });
      const rec: LegRecord = { ...l, outcome: status === "won" ? "lost" : "cancelled", endedAt: now };
      effects.push(legEvent(race, rec, now));
      return rec;
    }
    return l;
  });
  if (race.staggerAt !== null) effects.push({ type: "cancel-timer", timer: "race-stagger" });
  return { ...race, legs, status, endedAt: now, staggerAt: null, winner };
}

/**
 * A leg passed its data-plane probe both ways. While running and the leg is starting, it wins. After the race is
 * decided, the late leg's tunnel is stopped; a leg-up for a leg this race never started changes nothing.
 */
export function raceOnLegUp(race: RaceState, legId: string, now: number): RaceStep {
  const rec = race.legs.find((l) => l.leg.id === legId);
  if (rec === undefined) return { race, effects: [], decided: false };
  if (race.status !== "running" || rec.outcome !== "starting") {
    // The winner's own duplicate leg-up must never stop the tunnel that carries traffic.
    if (race.winner?.id === legId) return { race, effects: [], decided: false };
    return { race, effects: [{ type: "stop-leg", legId }], decided: false };
  }
  const effects: Effect[] = [];
  return { race: settle(race, now, "won", legId, effects), effects, decided: true };
}

/**
 * A starting leg failed: record why and start the next leg at once (re-arming the stagger from now). When no leg
 * is left running or pending, the race has failed and every leg carries its outcome. Late or unknown: ignored.
 */
export function raceOnLegFailed(
  race: RaceState,
  legId: string,
  code: EngineErrorCode,
  message: string,
  now: number,
  policy: RacePolicy,
): RaceStep {
  const idx = race.legs.findIndex((l) => l.leg.id === legId);
  const rec = race.legs[idx];
  if (race.status !== "running" || rec?.outcome !== "starting") return { race, effects: [], decided: false };
  const effects: Effect[] = [];
  const failed: LegRecord = { ...rec, outcome: "failed", endedAt: now, error: { code, message } };
  const legs = [...race.legs];
  legs[idx] = failed;
  effects.push(legEvent(race, failed, now));
  let next: RaceState = { ...race, legs };
  if (next.next < legs.length) next = startNext(next, now, policy, effects);
  if (next.legs.some((l) => l.outcome === "starting" || l.outcome === "pending"))
    return { race: next, effects, decided: false };
  return { race: settle(next, now, "failed", null, effects), effects, decided: true };
}

/**
 * Gives a running race new legs to try in place of its pending ones (legs already started keep running): the
 * ranking changed under it, or its last live leg is about to fail with gateways it never tried left over. When
 * nothing is starting or due by the stagger, the first new leg starts at once (if a slot is free). Not running, or
 * nothing to start and nothing pending: unchanged.
 */
export function raceReplacePending(race: RaceState, legs: readonly Leg[], now: number, policy: RacePolicy): RaceStep {
  if (race.status !== "running") return { race, effects: [], decided: false };
  const started = race.legs.slice(0, race.next);
  const replaced: RaceState = {
    ...race,
    legs: [...started, ...legs.map(pendingRecord)],
  };
  const effects: Effect[] = [];
  if (legs.length === 0) {
    if (race.staggerAt !== null) effects.push({ type: "cancel-timer", timer: "race-stagger" });
    return { race: { ...replaced, staggerAt: null }, effects, decided: false };
  }
  const live = started.some((l) => l.outcome === "starting");
  if (live && race.staggerAt !== null) return { race: replaced, effects, decided: false };
  return { race: startNext(replaced, now, policy, effects), effects, decided: false };
}

/**
 * Legs to stop and legs to race instead: gateways found answering again while the race runs (their legs in `stop`
 * are still starting, but their engine's next retry comes too late), or legs of gateways found silent giving way
 * to ones that answer (replanRace). The `stop` legs are stopped (outcome "cancelled") and `legs` (with whatever
 * else is still to try) replace the pending legs; the first starts at once in a freed slot. Not running, or no
 * legs: unchanged.
 */
export function raceRetryGateways(
  race: RaceState,
  stop: ReadonlySet<string>,
  legs: readonly Leg[],
  now: number,
  policy: RacePolicy,
): RaceStep {
  if (race.status !== "running" || legs.length === 0) return { race, effects: [], decided: false };
  const effects: Effect[] = [];
  const started = race.legs.slice(0, race.next).map((l): LegRecord => {
    if (l.outcome !== "starting" || !stop.has(l.leg.id)) return l;
    effects.push({ type: "stop-leg", legId: l.leg.id });
    const rec: LegRecord = { ...l, outcome: "cancelled", endedAt: now };
    effects.push(legEvent(race, rec, now));
    return rec;
  });
  const replaced: RaceState = { ...race, legs: [...started, ...legs.map(pendingRecord)], next: started.length };
  return { race: startNext(replaced, now, policy, effects), effects, decided: false };
}

/** Whether a failure of `legId` would leave the race with no leg starting or pending (it would then fail). */
export function raceLastLive(race: RaceState, legId: string): boolean {
  return (
    race.status === "running" &&
    race.legs.every((l) => l.leg.id === legId || (l.outcome !== "starting" && l.outcome !== "pending"))
  );
}

/** Cancels a running race (disconnect, or a failover that supersedes it): every started leg is stopped. */
export function raceCancel(race: RaceState, now: number): RaceStep {
  if (race.status !== "running") return { race, effects: [], decided: false };
  const effects: Effect[] = [];
  return { race: settle(race, now, "cancelled", null, effects), effects, decided: true };
}

/** What the race looks like in records and events. */
export function raceRecord(race: RaceState): RaceRecord {
  return {
    id: race.id,
    reason: race.reason,
    startedAt: race.startedAt,
    endedAt: race.endedAt,
    winner: race.winner,
    legs: race.legs.map((l) => ({ ...l })),
  };
}
