/**
 * What detourd tells about the connection: the flight recorder (the last events, for status and diagnostic
 * bundles), the last race and failover records, in-daemon watchers (the drill) that time events as the machine
 * emits them, and subscribers (the CLI, the app) that hear each event once the route changes asked for before
 * it are done, so "connected" means traffic already goes through the new leg.
 */
import type { ConnectionEvent, FailoverRecord, RaceRecord } from "../core/connection/types.ts";
import { eventAtWall } from "../core/connection/wall-time.ts";

/** The flight recorder keeps this many recent events for status and diagnostics. */
export const RECORDER_SIZE = 500;

export interface ConnectionEventsDeps {
  /** Telemetry's event sink, when a collector is configured. */
  telemetry(): { onEvent(e: ConnectionEvent): void } | null;
  /** Settles once the route changes asked for so far are done (the data plane's chain). */
  routesSettled(): Promise<void>;
}

type Listener = (e: ConnectionEvent) => void;

export class ConnectionEvents {
  readonly #deps: ConnectionEventsDeps;
  readonly #recorder: ConnectionEvent[] = [];
  readonly #subscribers = new Set<Listener>();
  readonly #watchers = new Set<Listener>();
  /** The last race and failover, in wall time. */
  lastRace: RaceRecord | null = null;
  lastFailover: FailoverRecord | null = null;

  constructor(deps: ConnectionEventsDeps) {
    this.#deps = deps;
  }

  /** Subscribers hear events in wall time, after the route changes before them. */
  subscribe(listener: Listener): () => void {
    this.#subscribers.add(listener);
    return () => this.#subscribers.delete(listener);
  }

  /** Watchers hear the machine's events at once, on its monotonic clock. */
  watch(listener: Listener): () => void {
    this.#watchers.add(listener);
    return () => this.#watchers.delete(listener);
  }

  recorder(): ConnectionEvent[] {
    return [...this.#recorder];
  }

  /** An event of the machine (monotonic instants): watchers first, then everyone else in wall time. */
  emit(event: ConnectionEvent, wallOffset: number): void {
    for (const w of this.#watchers) {
      try {
        w(event);
      } catch {
        // a watcher's failure is its own
      }
    }
    this.announce(eventAtWall(event, wallOffset));
  }

  /**
   * An event in wall time goes to telemetry and the flight recorder at once, and to subscribers once the route
   * changes asked for before it are done. Events keep their order (each waits on the chain as it was, and
   * callbacks on one promise run in order); a failed route change is logged and does not hold them.
   */
  announce(event: ConnectionEvent): void {
    this.#deps.telemetry()?.onEvent(event);
    this.#recorder.push(event);
    if (this.#recorder.length > RECORDER_SIZE) this.#recorder.shift();
    void this.#deps.routesSettled().then(() => {
      for (const s of this.#subscribers) {
        try {
          s(event);
        } catch {
          // a subscriber's failure is its own
        }
      }
    });
  }
}
