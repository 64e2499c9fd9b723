/** The disconnected state: nothing runs, nothing is routed; only `connect` leaves it. */
import type { DisconnectedState, Outcome, Shared } from "../machine-state.ts";
import { goWaiting, stateEvent, withCandidates } from "../machine-state.ts";
import type { MachineInput } from "../types.ts";

export function summary(): string {
  return "Disconnected";
}

/** Every exit path has already stopped legs, monitor, routes and timers; entering only announces it. */
export function enter(shared: Shared, now: number): Outcome {
  return {
    state: { name: "disconnected", shared: { ...shared, since: now } },
    effects: [stateEvent("disconnected", now, summary())],
  };
}

export function handle(state: DisconnectedState, input: MachineInput): Outcome {
  switch (input.type) {
    case "connect":
      // Offline: no race that cannot succeed, no backoff churn; the first route starts the connect.
      if (state.shared.offline === true) return goWaiting(state.shared, "no route to any gateway", []);
      return { go: { to: "resolving", reason: "connect", attempt: 0 }, shared: state.shared, effects: [] };
    case "leg-up":
      // A leg that came up after a disconnect would otherwise keep its tunnel running with nobody watching it.
      return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
    case "candidates":
      return { state: { ...state, shared: withCandidates(state.shared, input.candidates) }, effects: [] };
    case "disconnect":
    case "network":
    case "wake":
    case "tunnel-activity":
    case "timer":
    case "leg-failed":
    case "leg-down":
    case "probe":
      return { state, effects: [] };
  }
}
