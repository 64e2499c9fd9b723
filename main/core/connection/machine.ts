/**
 * The tunnel state machine: `step` takes one input (with its `now`) and returns the next state plus the effects
 * the daemon runs in order; `snapshot` is what status shows. Each state lives in states/<name>.ts.
 *
 *   ┌──────────────┐ connect ┌───────────┐ candidates ┌────────┐ winner up ┌───────────┐ ──┐ recover race won:
 *   │ disconnected │ ──────▶ │ resolving │ ─────────▶ │ racing │ ────────▶ │ connected │ ◀─┘ routes move, then
 *   └──────────────┘         └───────────┘            └────────┘           └───────────┘     the old leg stops
 *          ▲                       ▲                      │                    │     ▲
 *          │                       │ backoff timer        │ every leg          │     │ winner up: routes move,
 *          │ disconnect            │ or connect           │ failed             │     │ then the failed leg stops;
 *          │ from any state:       │                      ▼                    │     │ brownout and nothing better:
 *          │ legs, monitor,        │                 ┌─────────┐               │     │ keep the degraded leg
 *          │ routes and timers     └──────────────── │  error  │               │     │
 *          │ all torn down                           └─────────┘               │     │
 *                                                         ▲   race failed     ▼     │
 *                                                         │           ┌──────────────┐   dead, leg-down, or
 *                                                         └────────── │ failing-over │   brownout with an
 *                                                                     └──────────────┘   alternative (from connected)
 *
 * Offline (the network monitor: no route toward any gateway) from any state that wants a tunnel goes to
 * waiting-for-network, which tears everything down and waits; the first route back enters resolving at once. A
 * path change or a wake while connected keeps the leg and checks it (verify, in connected.ts); only a gateway that
 * does not answer within ROAM_VERIFY_MS fails over, with its own leg raced first.
 *
 *   any state but disconnected ── offline ──▶ ┌─────────────────────┐ ── online / path changed ──▶ resolving
 *   disconnected ── connect while offline ──▶ │ waiting-for-network │ ── disconnect ──▶ disconnected
 *                                             └─────────────────────┘
 *
 * Every input is safe in every state: stale timers, and inputs for unknown or stopped legs, change nothing,
 * except that a leg that comes up when nobody wants it is stopped.
 */
import { healthStats, type HealthStats } from "./health.ts";
import type { Entry, MachineContext, MachineState, Outcome, Shared } from "./machine-state.ts";
import { raceRecord } from "./race.ts";
import { standbySnapshot } from "./standby.ts";
import * as connected from "./states/connected.ts";
import * as disconnected from "./states/disconnected.ts";
import * as error from "./states/error.ts";
import * as failingOver from "./states/failing-over.ts";
import * as racing from "./states/racing.ts";
import * as resolving from "./states/resolving.ts";
import * as waiting from "./states/waiting.ts";
import type { ConnectionSnapshot, Effect, Leg, MachineInput } from "./types.ts";

export type { MachineContext, MachineState } from "./machine-state.ts";

/** Entries chain at most racing → error or failing-over → error/connected; more hops than this is a bug. */
const MAX_ENTRY_HOPS = 4;

export function initialState(): MachineState {
  const shared: Shared = { legSeq: 0, raceSeq: 0, candidates: [], lastRace: null, lastFailover: null, since: null };
  return { name: "disconnected", shared };
}

function handle(state: MachineState, input: MachineInput, ctx: MachineContext): Outcome {
  switch (state.name) {
    case "disconnected":
      return disconnected.handle(state, input);
    case "resolving":
      return resolving.handle(state, input, ctx);
    case "racing":
      return racing.handle(state, input, ctx);
    case "connected":
      return connected.handle(state, input, ctx);
    case "failing-over":
      return failingOver.handle(state, input, ctx);
    case "error":
      return error.handle(state, input);
    case "waiting-for-network":
      return waiting.handle(state, input);
  }
}

function enter(entry: Entry, shared: Shared, now: number, ctx: MachineContext): Outcome {
  switch (entry.to) {
    case "disconnected":
      return disconnected.enter(shared, now);
    case "resolving":
      return resolving.enter(shared, now, entry.reason, entry.attempt);
    case "racing":
      return racing.enter(shared, now, ctx, entry.reason, entry.attempt, entry.ranked);
    case "connected":
      return connected.enter(shared, now, ctx, entry);
    case "failing-over":
      return failingOver.enter(shared, now, ctx, entry);
    case "error":
      return error.enter(shared, now, ctx, entry);
    case "waiting-for-network":
      return waiting.enter(shared, now, entry.detail);
  }
}

/** One input in, the next state and the effects to run (in order) out. Never throws for any input in any state. */
export function step(
  state: MachineState,
  input: MachineInput,
  ctx: MachineContext,
): { state: MachineState; effects: Effect[] } {
  // Every state knows whether the network is there: a connect while offline waits for one instead of racing.
  const s0: MachineState =
    input.type === "network" ? { ...state, shared: { ...state.shared, offline: input.change === "offline" } } : state;
  let out = handle(s0, input, ctx);
  const effects: Effect[] = [];
  for (let hops = 0; "go" in out; hops++) {
    if (hops >= MAX_ENTRY_HOPS) throw new Error(`connection machine: entry loop at ${out.go.to}`);
    effects.push(...out.effects);
    out = enter(out.go, out.shared, input.now, ctx);
  }
  effects.push(...out.effects);
  return { state: out.state, effects };
}

function summary(state: MachineState, now: number): string {
  switch (state.name) {
    case "disconnected":
      return disconnected.summary();
    case "resolving":
      return resolving.summary(state);
    case "racing":
      return racing.summary(state);
    case "connected":
      return connected.summary(state);
    case "failing-over":
      return failingOver.summary(state);
    case "error":
      return error.summary(state, now);
    case "waiting-for-network":
      return waiting.summary();
  }
}

/** What status shows: the state, one human sentence, the leg carrying traffic, and the latest records. */
export function snapshot(state: MachineState, now: number): ConnectionSnapshot {
  const s = state.shared;
  const active = state.name === "connected" ? state.active : state.name === "failing-over" ? state.failed : null;
  const runningRace = state.name === "racing" || state.name === "failing-over" ? state.race : null;
  return {
    state: state.name,
    summary: summary(state, now),
    gateway: active?.leg.gateway ?? null,
    protocol: active?.leg.kind ?? null,
    activeLegId: active?.leg.id ?? null,
    standby: state.name === "connected" ? standbySnapshot(state.standby) : null,
    since: s.since,
    candidates: s.candidates,
    lastRace: runningRace !== null ? raceRecord(runningRace) : s.lastRace,
    lastFailover: s.lastFailover,
    error: state.name === "error" ? { reason: state.reason, nextRetryAt: state.nextRetryAt } : null,
  };
}

/** The leg that carries traffic: the connected one, or the failed one that keeps the routes while a failover races. */
export function activeLeg(state: MachineState): Leg | null {
  return state.name === "connected" ? state.active.leg : state.name === "failing-over" ? state.failed.leg : null;
}

/** The active leg's in-tunnel numbers (RTT percentiles, jitter, loss) for telemetry; null when no leg is monitored. */
export function connectionHealth(
  state: MachineState,
  now: number,
  ctx: MachineContext,
): (HealthStats & { legId: string }) | null {
  const pair =
    state.name === "connected"
      ? { leg: state.active.leg, health: state.health }
      : state.name === "failing-over"
        ? { leg: state.failed.leg, health: state.health }
        : null;
  if (pair === null) return null;
  return { ...healthStats(pair.health, now, ctx.policy.health), legId: pair.leg.id };
}
