/**
 * detourd's time, injected so tests control it. Wall time (epoch ms) is only for what people read: records,
 * events, status, the network memory. Everything measured or waited on uses monotonic time: the connection
 * machine's `now`, deadlines, round trips, health, timers. The wall clock jumps (an NTP step, someone setting
 * the time, a laptop waking up); a jump must never look like a dead tunnel, a fresh standby or a stalled race.
 */

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Epoch milliseconds; may jump either way. */
  wall(): number;
  /** Milliseconds from an arbitrary origin, never going back; what timers count. */
  monotonic(): number;
  /** Calls `fn` once `ms` of monotonic time have passed. A `background` timer does not keep the process alive. */
  after(ms: number, fn: () => void, opts?: { background?: boolean }): Timer;
}

/**
 * The process's clocks: performance.now() (relative to the process start, so nothing of the wall clock is in
 * it) counts on the same monotonic source as Node's timers.
 */
export const systemClock: Clock = {
  wall: () => Date.now(),
  monotonic: () => performance.now(),
  after: (ms, fn, opts) => {
    const t = setTimeout(fn, Math.max(0, ms));
    if (opts?.background === true) t.unref();
    return {
      cancel: () => {
        clearTimeout(t);
      },
    };
  },
};

/** wall - monotonic now: added to a monotonic instant it gives the wall time people read for it. */
export function wallOffset(clock: Clock): number {
  return clock.wall() - clock.monotonic();
}

/** The wall time of a monotonic instant (by today's offset: a recent instant reads as people expect). */
export function wallAt(clock: Clock, monotonic: number): number {
  return monotonic + wallOffset(clock);
}

/** The monotonic instant of a wall time just measured elsewhere (an engine's timings). */
export function monotonicAt(clock: Clock, wall: number): number {
  return wall - wallOffset(clock);
}
