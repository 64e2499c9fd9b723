/**
 * What detourd hears of the laptop's life: the platform's network monitor (path changed, offline, online again)
 * and sleep (a jump between the wall and the monotonic clock, or the event loop not running for a while), turned
 * into the connection machine's "network" and "wake" inputs, with the network memory's key refreshed on each
 * change so the next race starts with what won on the new network.
 */
import type { MachineInput } from "../core/connection/types.ts";
import type { NetworkChange, NetworkMonitor } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/** How often the sleep detector looks at the clocks: a background timer, nothing else runs for it. */
export const WAKE_TICK_MS = 1_000;
/**
 * A wall-clock jump beyond the monotonic one (the monotonic clock stops in a suspend) or a tick this late (the
 * process was frozen, or a suspend that the monotonic clock counted) is taken for a sleep: longer than any
 * scheduling stall on a busy laptop, shorter than any sleep worth checking the tunnel after. A false alarm costs
 * one probe burst.
 */
export const WAKE_GAP_MS = 4_000;

export interface NetworkWatchHost {
  monitor: NetworkMonitor;
  ifnamePrefix: string;
  /** The gateways' underlay addresses: the route toward them is the path that matters. */
  targets(): string[];
  /** The machine's clock reading. */
  now(): number;
  dispatch(input: MachineInput): void;
  /** A new network (or one back): probe results from the old one are stale. */
  networkChanged(): void;
  /** The network's key is looked up again; resolves once known (the caller bounds the wait). */
  refreshNetworkKey(): Promise<void>;
  /** Telemetry and events: what changed, and a watcher that died (it restarts by itself). */
  report(name: "detour.network.changed" | "detour.network.watcher-died" | "detour.sleep.woke", body: object): void;
  track(p: Promise<unknown>): void;
  log: Logger;
}

/** The last thing the monitor said, for status and diagnostics. */
export interface NetworkWatchStatus {
  online: boolean | null;
  path: NetworkChange["path"];
  lastChange: { at: number; kind: NetworkChange["kind"]; reason: string } | null;
  changes: number;
  watcherDeaths: number;
  wakes: number;
}

export class NetworkWatch {
  readonly #host: NetworkWatchHost;
  readonly #clock: Clock;
  #sub: { stop(): void; recheck(): void } | null = null;
  #tick: Timer | null = null;
  #last: { mono: number; wall: number } | null = null;
  #status: NetworkWatchStatus = {
    online: null,
    path: null,
    lastChange: null,
    changes: 0,
    watcherDeaths: 0,
    wakes: 0,
  };

  constructor(host: NetworkWatchHost, clock: Clock) {
    this.#host = host;
    this.#clock = clock;
  }

  start(): void {
    if (this.#sub !== null) return;
    const h = this.#host;
    this.#sub = h.monitor.subscribe(
      {
        change: (c) => {
          this.#onChange(c);
        },
        watcherDied: (reason) => {
          this.#status.watcherDeaths++;
          h.log.warn("network monitor died; restarting", { reason });
          h.report("detour.network.watcher-died", { reason });
        },
      },
      { ifnamePrefix: h.ifnamePrefix, targets: () => h.targets() },
    );
    this.#last = { mono: this.#clock.monotonic(), wall: this.#clock.wall() };
    this.#armTick();
  }

  /** Looks at the path again now (the gateways' addresses became known, a connect is about to race). */
  recheck(): void {
    this.#sub?.recheck();
  }

  stop(): void {
    this.#sub?.stop();
    this.#sub = null;
    this.#tick?.cancel();
    this.#tick = null;
  }

  status(): NetworkWatchStatus {
    return { ...this.#status };
  }

  #onChange(c: NetworkChange): void {
    const h = this.#host;
    this.#status = {
      ...this.#status,
      online: c.kind !== "offline",
      path: c.path,
      lastChange: { at: c.at, kind: c.kind, reason: c.reason },
      changes: this.#status.changes + (c.initial ? 0 : 1),
    };
    h.log.info("network", { kind: c.kind, initial: c.initial, reason: c.reason, path: c.path });
    h.report("detour.network.changed", { kind: c.kind, initial: c.initial, reason: c.reason });
    const input = (): MachineInput => ({
      type: "network",
      now: h.now(),
      change: c.kind,
      detail: c.reason,
      ...(c.initial ? { initial: true } : {}),
    });
    if (c.kind === "offline") {
      h.dispatch(input());
      return;
    }
    if (!c.initial) h.networkChanged();
    if (c.kind === "path-changed") {
      // A tunnel up now must be told at once (its silence is not a dead gateway); the key follows in the background.
      h.dispatch(input());
      h.track(h.refreshNetworkKey());
      return;
    }
    // A network (back): its key first (bounded by the host), so the connect it starts races what won here last time.
    h.track(
      h.refreshNetworkKey().then(
        () => {
          h.dispatch(input());
        },
        () => {
          h.dispatch(input());
        },
      ),
    );
  }

  #armTick(): void {
    this.#tick = this.#clock.after(
      WAKE_TICK_MS,
      () => {
        this.#onTick();
        if (this.#sub !== null) this.#armTick();
      },
      { background: true },
    );
  }

  #onTick(): void {
    const mono = this.#clock.monotonic();
    const wall = this.#clock.wall();
    const last = this.#last;
    this.#last = { mono, wall };
    if (last === null) return;
    const late = mono - last.mono - WAKE_TICK_MS;
    const jump = wall - mono - (last.wall - last.mono);
    const sleptMs = Math.max(late, jump);
    if (sleptMs < WAKE_GAP_MS) return;
    this.#status.wakes++;
    this.#host.log.info("woke up", { sleptMs: Math.round(sleptMs), monotonicLateMs: Math.round(late) });
    this.#host.report("detour.sleep.woke", { sleptMs: Math.round(sleptMs) });
    this.#host.dispatch({ type: "wake", now: mono, sleptMs });
    // Routes and addresses may have changed while asleep without an event reaching the monitor in time.
    this.recheck();
  }
}
