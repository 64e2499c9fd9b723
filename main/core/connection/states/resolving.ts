/** The resolving state: waiting for the daemon's candidate list (discovery plus outside probes) before a race. */
import type { MachineContext, Outcome, ResolvingState, Shared } from "../machine-state.ts";
import { cancelAllTimers, goWaiting, stateEvent, withCandidates } from "../machine-state.ts";
import type { MachineInput } from "../types.ts";

export function summary(state: ResolvingState): string {
  return state.reason === "retry"
    ? `Looking for gateways again (attempt ${state.attempt + 1})`
    : "Looking for gateways";
}

export function enter(shared: Shared, now: number, reason: ResolvingState["reason"], attempt: number): Outcome {
  const state: ResolvingState = { name: "resolving", shared: { ...shared, since: now }, reason, attempt };
  return { state, effects: [{ type: "resolve-candidates" }, stateEvent("resolving", now, summary(state))] };
}

export function handle(state: ResolvingState, input: MachineInput, ctx: MachineContext): Outcome {
  switch (input.type) {
    case "candidates": {
      // Discovery that found nothing must not strand the user: the configured gateways are always a fallback.
      const pool = input.candidates.length > 0 ? input.candidates : ctx.gateways;
      const shared = withCandidates(state.shared, pool);
      return {
        go: { to: "racing", reason: state.reason, attempt: state.attempt, ranked: shared.candidates },
        shared,
        effects: [],
      };
    }
    case "disconnect":
      return { go: { to: "disconnected" }, shared: state.shared, effects: cancelAllTimers() };
    case "leg-up":
      return { state, effects: [{ type: "stop-leg", legId: input.legId }] };
    case "network":
      if (input.change === "offline") return goWaiting(state.shared, input.detail, []);
      return { state, effects: [] };
    case "wake":
    case "tunnel-activity":
    case "connect":
    case "timer":
    case "leg-failed":
    case "leg-down":
    case "probe":
      return { state, effects: [] };
  }
}
