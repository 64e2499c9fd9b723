/**
 * The waiting-for-network state: a connect is wanted, but the network monitor found no route toward any gateway
 * (offline, or started that way). Nothing runs (no race, no backoff, no legs): the first usable route starts a
 * connect at once, and a disconnect leaves.
 */
import type { Outcome, Shared, WaitingState } from "../machine-state.ts";
import { cancelAllTimers, stateEvent, withCandidates } from "../machine-state.ts";
import type { MachineInput } from "../types.ts";

export function summary(): string {
  return "Waiting for a network: no route to any gateway";
}

export function enter(shared: Shared, now: number, detail: string): Outcome {
  const state: WaitingState = { name: "waiting-for-network", shared: { ...shared, since: now }, detail };
  return { state, effects: [...cancelAllTimers(), stateEvent("waiting-for-network", now, summary())] };
}

export function handle(state: WaitingState, input: MachineInput): Outcome {
  switch (input.type) {
    case "network":
      if (input.change === "offline") return { state: { ...state, detail: input.detail }, effects: [] };
      // A route appeared: connect at once, as a fresh connect (no backoff carried over from before).
      return { go: { to: "resolving", reason: "connect", attempt: 0 }, shared: state.shared, effects: [] };
    case "disconnect":
      return { go: { to: "disconnected" }, shared: state.shared, effects: cancelAllTimers() };
    case "leg-up":
      return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
    case "candidates":
      return { state: { ...state, shared: withCandidates(state.shared, input.candidates) }, effects: [] };
    case "connect":
    case "wake":
    case "tunnel-activity":
    case "timer":
    case "leg-failed":
    case "leg-down":
    case "probe":
      return { state, effects: [] };
  }
}
