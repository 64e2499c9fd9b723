/**
 * What detourd hears of the laptop's life: the platform's network monitor (path changed, offline, online again)
 * and sleep (logind's PrepareForSleep where the platform hears it, and a jump between the wall and the monotonic
 * clock or the event loop not running for a while), turned into the connection machine's "network" and "wake"
 * inputs, with the network memory's key refreshed on each change so the next race starts with what won on the new
 * network. One resume is one wake, whichever detector saw it first.
 */
import type { MachineInput } from "../core/connection/types.ts";
import type { NetworkChange, NetworkMonitor, SleepMonitor, SleepSourceState } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/**
 * How often the sleep detector's own timer looks at the clocks. It is the backstop: every input the daemon handles
 * looks too (observe: a connected tunnel's probe results come at least once a second, idle), so a suspend the
 * monotonic clock did not count is seen at the first of them after resume; the tick finds a frozen process (its
 * timer overdue at the thaw) and a resume while nothing else runs. Five seconds keeps an idle daemon's wake-ups
 * low (issue 17); a freeze shorter than WAKE_GAP_MS plus a tick may go unseen, and costs nothing: the probes'
 * own silence brings the fast pace back.
 */
export const WAKE_TICK_MS = 5_000;
/**
 * A wall-clock jump beyond the monotonic one (the monotonic clock stops in a suspend) or a tick this late (the
 * process was frozen, or a suspend that the monotonic clock counted) is taken for a sleep: longer than any
 * scheduling stall on a busy laptop, shorter than any sleep worth checking the tunnel after. A false alarm costs
 * one probe burst.
 */
export const WAKE_GAP_MS = 4_000;
/**
 * After one detector reports a wake, the other's report of the same resume is absorbed if it comes within this
 * long: logind announces the resume within a second or two, the clock tick within WAKE_TICK_MS plus scheduling,
 * and an NTP correction right after a resume lands within a few seconds more. A sleep announced in between ends
 * the window, so a real second sleep is never swallowed.
 */
export const WAKE_DEDUPE_MS = 15_000;
/** Forged PrepareForSleep signals are counted each, but logged and reported at most this often. */
export const SLEEP_IMPOSTOR_REPORT_MS = 60_000;

export type WakeSource = "clock" | "logind";

type Report =
  | "detour.network.changed"
  | "detour.network.watcher-died"
  | "detour.sleep.woke"
  | "detour.sleep.preparing"
  | "detour.sleep.source"
  | "detour.sleep.watcher-died"
  | "detour.sleep.impostor";

export interface NetworkWatchHost {
  monitor: NetworkMonitor;
  /** The system's sleep announcements (logind); absent where the platform has none. */
  sleep?: SleepMonitor;
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
  report(name: Report, body: object): void;
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
  sleep: SleepWatchStatus;
}

/** How detourd hears of sleep, and the last sleep and wake, for status. */
export interface SleepWatchStatus {
  /** The detectors in use: the clocks always, logind while its signal can be heard. */
  sources: WakeSource[];
  /** logind's signal: heard ("listening"), or why not; "unsupported" where the platform has no such monitor. */
  logind: SleepSourceState | "unsupported";
  logindDetail: string | null;
  /** Wall ms of the last "about to sleep" from logind. */
  lastSleepAt: number | null;
  lastWake: { at: number; source: WakeSource; sleptMs: number } | null;
  /** Reports of a resume already handled by the other detector (not dispatched again). */
  absorbed: number;
  watcherDeaths: number;
  /** PrepareForSleep signals from senders that do not own org.freedesktop.login1, ignored. */
  impostors: number;
}

export class NetworkWatch {
  readonly #host: NetworkWatchHost;
  readonly #clock: Clock;
  #sub: { stop(): void; recheck(): void } | null = null;
  #sleepSub: { stop(): void } | null = null;
  /** The first wake from the other detector before `until` (monotonic) is the same resume. */
  #absorb: { source: WakeSource; until: number } | null = null;
  /** Monotonic and wall time of logind's last "about to sleep", until the resume. */
  #sleepingSince: { mono: number; wall: number } | null = null;
  #lastImpostorReport = -Infinity;
  #tick: Timer | null = null;
  #last: { mono: number; wall: number } | null = null;
  /** The monotonic time of the last tick: how late the next one is. */
  #lastTick: number | null = null;
  #status: NetworkWatchStatus = {
    online: null,
    path: null,
    lastChange: null,
    changes: 0,
    watcherDeaths: 0,
    wakes: 0,
    sleep: {
      sources: ["clock"],
      logind: "unsupported",
      logindDetail: null,
      lastSleepAt: null,
      lastWake: null,
      absorbed: 0,
      watcherDeaths: 0,
      impostors: 0,
    },
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
    this.#lastTick = this.#last.mono;
    this.#armTick();
    this.#subscribeSleep();
  }

  /**
   * Looks at the clocks now, as the daemon handles an input: a wall-clock jump beyond the monotonic one is a
   * resume from a suspend, seen without a timer of its own. Two clock reads; nothing while stopped.
   */
  observe(): void {
    if (this.#sub !== null) this.#look(0);
  }

  /** Looks at the path again now (the gateways' addresses became known, a connect is about to race). */
  recheck(): void {
    this.#sub?.recheck();
  }

  stop(): void {
    this.#sub?.stop();
    this.#sub = null;
    this.#sleepSub?.stop();
    this.#sleepSub = null;
    this.#tick?.cancel();
    this.#tick = null;
  }

  status(): NetworkWatchStatus {
    return { ...this.#status, sleep: { ...this.#status.sleep, sources: [...this.#status.sleep.sources] } };
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
    const lastTick = this.#lastTick;
    this.#lastTick = mono;
    this.#look(lastTick === null ? 0 : mono - lastTick - WAKE_TICK_MS);
  }

  /** A sleep is a tick `lateMs` late or a wall-clock jump beyond the monotonic one, either WAKE_GAP_MS or more. */
  #look(lateMs: number): void {
    const mono = this.#clock.monotonic();
    const wall = this.#clock.wall();
    const last = this.#last;
    this.#last = { mono, wall };
    if (last === null) return;
    const jump = wall - mono - (last.wall - last.mono);
    const sleptMs = Math.max(lateMs, jump);
    if (sleptMs < WAKE_GAP_MS) return;
    this.#wake("clock", sleptMs, { monotonicLateMs: Math.round(lateMs) });
  }

  /** One resume, one wake: the first detector's report dispatches it, the other's report of the same resume is absorbed. */
  #wake(source: WakeSource, sleptMs: number, detail: object = {}): void {
    const h = this.#host;
    const mono = this.#clock.monotonic();
    const wall = this.#clock.wall();
    const s = this.#status.sleep;
    const absorb = this.#absorb;
    if (absorb !== null && mono >= absorb.until) this.#absorb = null;
    if (this.#absorb !== null && this.#absorb.source === source) {
      this.#absorb = null;
      s.absorbed++;
      h.log.info("wake already handled", { source, sleptMs: Math.round(sleptMs) });
      return;
    }
    // The clocks' baseline moves past the sleep: the gap logind just announced is not seen a second time.
    this.#last = { mono, wall };
    this.#absorb = { source: source === "clock" ? "logind" : "clock", until: mono + WAKE_DEDUPE_MS };
    this.#status.wakes++;
    s.lastWake = { at: wall, source, sleptMs: Math.round(sleptMs) };
    h.log.info("woke up", { source, sleptMs: Math.round(sleptMs), ...detail });
    h.report("detour.sleep.woke", { source, sleptMs: Math.round(sleptMs) });
    h.dispatch({ type: "wake", now: mono, sleptMs });
    // Routes and addresses may have changed while asleep without an event reaching the monitor in time.
    this.recheck();
  }

  #subscribeSleep(): void {
    const h = this.#host;
    if (h.sleep === undefined) return;
    const s = this.#status.sleep;
    this.#sleepSub = h.sleep.subscribe({
      prepareForSleep: ({ sleeping }) => {
        if (this.#sub === null) return;
        if (sleeping) {
          // Nothing is taken down: the kill switch and the tunnel stay as they are, and the wake checks them.
          this.#sleepingSince = { mono: this.#clock.monotonic(), wall: this.#clock.wall() };
          this.#absorb = null;
          s.lastSleepAt = this.#sleepingSince.wall;
          h.log.info("about to sleep", { source: "logind" });
          h.report("detour.sleep.preparing", { source: "logind" });
          return;
        }
        const since = this.#sleepingSince;
        this.#sleepingSince = null;
        // The monotonic clock stood still while suspended: the wall clock measures the sleep.
        const sleptMs = since === null ? 0 : Math.max(0, this.#clock.wall() - since.wall);
        this.#wake("logind", sleptMs);
      },
      state: (state, detail) => {
        s.logind = state;
        s.logindDetail = detail;
        s.sources = state === "listening" ? ["clock", "logind"] : ["clock"];
        h.log.info("sleep detection", { logind: state, detail, sources: s.sources });
        h.report("detour.sleep.source", { logind: state, detail: detail ?? "", sources: s.sources.join(",") });
      },
      watcherDied: (reason) => {
        s.watcherDeaths++;
        h.log.warn("logind watcher died; restarting", { reason });
        h.report("detour.sleep.watcher-died", { reason });
      },
      ignored: (reason) => {
        s.impostors++;
        const now = this.#clock.monotonic();
        if (now - this.#lastImpostorReport < SLEEP_IMPOSTOR_REPORT_MS) return;
        this.#lastImpostorReport = now;
        h.log.warn("ignored a forged sleep signal", { reason, impostors: s.impostors });
        h.report("detour.sleep.impostor", { reason, impostors: s.impostors });
      },
    });
  }
}
