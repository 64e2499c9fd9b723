/**
 * When a machine timer counts as due. The daemon arms each timer for an instant on the machine's clock and feeds
 * it back as an input when it fires; an input for a timer that was cancelled or re-armed since is stale.
 */
import type { Effect, TimerId } from "./types.ts";

/**
 * Slack for timers that fire a hair early: the daemon's timers and the machine's `now` come from one monotonic
 * clock, but the timer's delay is rounded to whole milliseconds.
 */
export const TIMER_SLACK_MS = 5;

/** Whether a timer input is for a timer this state armed and is due (early-by-slack counts; stale ones do not). */
export function timerDue(armedAt: number | null, now: number, slackMs: number = TIMER_SLACK_MS): boolean {
  return armedAt !== null && now + slackMs >= armedAt;
}

/**
 * A timer armed for `armedAt` that fired before it was due (by more than the slack) is armed again for that
 * instant: dropping it would leave the state waiting for a timer that never comes (a retry that never happens).
 * A timer that is not armed (null) was cancelled: nothing to do.
 */
export function rearmIfEarly(
  timer: TimerId,
  armedAt: number | null,
  now: number,
  slackMs: number = TIMER_SLACK_MS,
): Effect[] {
  return armedAt !== null && now + slackMs < armedAt ? [{ type: "set-timer", timer, at: armedAt }] : [];
}
