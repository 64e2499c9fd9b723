/**
 * A clock a test drives (main/agent/clock.ts): monotonic time moves only when the test advances it, running each
 * timer due on the way at its own instant, and the wall clock can be stepped either way on its own, as an NTP
 * step, a user setting the time or a laptop waking up would.
 */
import type { Clock, Timer } from "../../main/agent/clock.ts";

interface Scheduled {
  at: number;
  seq: number;
  fn: () => void;
  live: boolean;
}

/** Rounds of setImmediate that let promise chains and deferred timer inputs settle after each step. */
const SETTLE_ROUNDS = 8;

export class FakeClock implements Clock {
  #mono = 0;
  #offset: number;
  #seq = 0;
  #timers: Scheduled[] = [];

  constructor(wallStart = Date.UTC(2025, 5, 2, 9, 0, 0)) {
    this.#offset = wallStart;
  }

  wall(): number {
    return this.#mono + this.#offset;
  }

  monotonic(): number {
    return this.#mono;
  }

  after(ms: number, fn: () => void): Timer {
    const t: Scheduled = { at: this.#mono + Math.max(0, ms), seq: this.#seq++, fn, live: true };
    this.#timers.push(t);
    return {
      cancel: () => {
        t.live = false;
      },
    };
  }

  /** The wall clock jumps by `ms` (negative: back); monotonic time and every timer stay where they are. */
  stepWall(ms: number): void {
    this.#offset += ms;
  }

  /** Lets promise callbacks and setImmediate work run to quiet. */
  async settle(): Promise<void> {
    for (let i = 0; i < SETTLE_ROUNDS; i++) await new Promise<void>((r) => setImmediate(r));
  }

  /** Moves monotonic time forward by `ms`, firing every timer due on the way in order, each at its own instant. */
  async advance(ms: number): Promise<void> {
    const until = this.#mono + ms;
    await this.settle();
    for (;;) {
      this.#timers = this.#timers.filter((t) => t.live);
      let next: Scheduled | undefined;
      for (const t of this.#timers)
        if (t.at <= until && (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))) next = t;
      if (next === undefined) break;
      next.live = false;
      this.#mono = Math.max(this.#mono, next.at);
      next.fn();
      await this.settle();
    }
    this.#mono = until;
    await this.settle();
  }

  /** Advances in steps of `stepMs` until `pred` holds, at most `limitMs`; whether it held. */
  async until(pred: () => boolean, limitMs: number, stepMs = 10): Promise<boolean> {
    const end = this.#mono + limitMs;
    await this.settle();
    while (!pred()) {
      if (this.#mono >= end) return false;
      await this.advance(Math.min(stepMs, end - this.#mono));
    }
    return true;
  }
}
