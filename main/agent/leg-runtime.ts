/**
 * The legs' runtime: each leg the machine starts gets an engine (adopting the spare wireguard-go when it can),
 * its own source routing once it is up (so its monitor's probes leave through its device), its in-tunnel monitor
 * at the role's rate, and an orderly stop. What happens to a leg goes back to the machine as an input.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import type { Candidate, Leg, MachineInput } from "../core/connection/types.ts";
import type { TunnelUp } from "../core/tunnel/engine-types.ts";
import { isEngineError, type TunnelEngine } from "../../native/engines/engine.ts";
import type { LegSource, Platform, SpareDevice } from "../../native/platform/platform.ts";
import { monotonicAt, wallAt, type Clock } from "./clock.ts";
import { engineSpecFor, type IdentitySecrets } from "./engine-spec.ts";
import type { Logger } from "./log.ts";
import { startMonitor, type Monitor, type MonitorOptions } from "./monitor.ts";

/** Policy-routing tables and rule preferences for legs: below kernel-libipsec's 220, above the main rules. */
const LEG_TABLE_BASE = 5100;
const LEG_RULE_PREF_BASE = 100;
const LEG_SLOTS = 90;

export interface LegRuntime {
  leg: Leg;
  engine: TunnelEngine;
  up: TunnelUp | null;
  monitor: Monitor | null;
  source: LegSource | null;
  /** Settles when the leg's source routing is installed (source set) or failed; null before the leg is up. */
  sourceReady: Promise<void> | null;
  /** The source rule could not be installed: the leg cannot be probed. */
  sourceFailed: boolean;
  /** The role the machine last asked the leg to be monitored in; null after stop-monitor. */
  monitorRole: "active" | "standby" | null;
  stopping: Promise<void> | null;
}

export interface LegHost {
  config(): DetourConfig;
  identity: IdentitySecrets;
  workDir: string;
  ifnamePrefix: string;
  /** The candidate a leg connects to (its address, discovered or configured). */
  candidate(gateway: string): Candidate | undefined;
  /** The spare device a starting leg adopts, if any. */
  spareFor(leg: Leg): SpareDevice | null;
  dispatch(input: MachineInput): void;
  track(p: Promise<unknown>): void;
  log: Logger;
}

export class LegRuntimes {
  readonly #host: LegHost;
  readonly #platform: Pick<Platform, "engines" | "routes">;
  readonly #clock: Clock;
  readonly #startMonitor: (opts: MonitorOptions) => Monitor;
  readonly #legs = new Map<string, LegRuntime>();
  #legCounter = 0;

  constructor(
    host: LegHost,
    platform: Pick<Platform, "engines" | "routes">,
    clock: Clock,
    monitor: (opts: MonitorOptions) => Monitor = startMonitor,
  ) {
    this.#host = host;
    this.#platform = platform;
    this.#clock = clock;
    this.#startMonitor = monitor;
  }

  get(legId: string): LegRuntime | undefined {
    return this.#legs.get(legId);
  }

  all(): LegRuntime[] {
    return [...this.#legs.values()];
  }

  get size(): number {
    return this.#legs.size;
  }

  /** Every leg's stop, running or started now (shutdown waits on them). */
  stopAll(): Promise<void>[] {
    return this.all().map((l) => l.stopping ?? this.stop(l.leg.id));
  }

  /**
   * What the health check knows of the leg's probes: when its oldest unanswered probe was sent (null: none in
   * flight, or none sent yet because its source rule is still going in), or undefined when it has no prober and
   * never will (its source rule failed): then silence alone is judged.
   */
  pendingSentAt(legId: string): number | null | undefined {
    const rt = this.#legs.get(legId);
    if (rt?.monitor != null) return rt.monitor.pendingSince();
    if (rt !== undefined && rt.source === null && rt.sourceReady !== null && !rt.sourceFailed) return null;
    return undefined;
  }

  start(leg: Leg, deadlineAt: number): void {
    const log = this.#host.log;
    const candidate = this.#host.candidate(leg.gateway);
    let engine: TunnelEngine;
    try {
      if (candidate === undefined) throw new Error(`no candidate ${leg.gateway}`);
      const spare = this.#host.spareFor(leg);
      const device = spare === null ? {} : { device: { ifname: spare.runtime.ifname, workDir: spare.runtime.workDir } };
      try {
        engine = this.#platform.engines.create(
          engineSpecFor(this.#host.config(), candidate, leg, this.#host.identity, {
            workRoot: this.#host.workDir,
            ifnamePrefix: this.#host.ifnamePrefix,
            ...device,
          }),
          spare ?? undefined,
        );
      } catch (err) {
        void spare?.stop().catch(() => undefined);
        throw err;
      }
    } catch (err) {
      queueMicrotask(() => {
        this.#host.dispatch({
          type: "leg-failed",
          now: this.#clock.monotonic(),
          legId: leg.id,
          code: "bad-config",
          message: err instanceof Error ? err.message : String(err),
        });
      });
      return;
    }
    const rt: LegRuntime = {
      leg,
      engine,
      up: null,
      monitor: null,
      source: null,
      sourceReady: null,
      sourceFailed: false,
      monitorRole: null,
      stopping: null,
    };
    this.#legs.set(leg.id, rt);
    this.#legCounter += 1;
    engine.onEvent((ev) => {
      if (rt.stopping !== null || rt.up === null) return;
      if (ev.type === "down")
        this.#host.dispatch({ type: "leg-down", now: this.#clock.monotonic(), legId: leg.id, reason: ev.reason });
      if (ev.type === "engine-exit" && !ev.expected)
        this.#host.dispatch({
          type: "leg-down",
          now: this.#clock.monotonic(),
          legId: leg.id,
          reason: `engine exited (${ev.signal ?? String(ev.code)})`,
        });
    });
    // The endpoint names the address family the leg uses (see core/connection/address-family.ts).
    log.info("leg starting", { leg, endpoint: candidate.address });
    this.#host.track(
      // Engines keep epoch-ms deadlines: the machine's monotonic one, read on the wall clock now.
      engine.start(wallAt(this.#clock, deadlineAt)).then(
        (up) => {
          rt.up = up;
          if (rt.stopping !== null) return;
          const address = up.config.addresses[0]?.split("/")[0];
          if (address !== undefined) {
            // Prefs must stay unique among live legs and below the protected-routes rule (200); a race has a
            // dozen legs at most, so cycling through 90 slots never reuses a live one.
            const n = this.#legCounter % LEG_SLOTS;
            const source = {
              ifname: up.config.ifname,
              address,
              table: LEG_TABLE_BASE + n,
              pref: LEG_RULE_PREF_BASE + n,
            };
            // The source rule only serves the leg's own monitor: the race's winner does not wait for it.
            rt.sourceReady = this.#platform.routes.installLegSource(source).then(
              () => {
                rt.source = source;
              },
              (err: unknown) => {
                rt.sourceFailed = true;
                log.warn("leg source routing failed; its monitor cannot probe it", { leg, err });
              },
            );
          }
          log.info("leg up", { leg, ifname: up.config.ifname, ms: up.timings.firstReplyAt - up.timings.spawnedAt });
          // The engine timed its first reply on the wall clock, a moment ago: the same instant on the monotonic one.
          const now = this.#clock.monotonic();
          const firstReplyAt = Math.min(now, monotonicAt(this.#clock, up.timings.firstReplyAt));
          this.#host.dispatch({
            type: "leg-up",
            now,
            legId: leg.id,
            config: up.config,
            firstReplyAt,
            pathRttMs: up.timings.firstReplyRttMs ?? null,
          });
        },
        (err: unknown) => {
          this.#legs.delete(leg.id);
          const code = isEngineError(err) ? err.code : "engine-crashed";
          const message = err instanceof Error ? err.message : String(err);
          log.info("leg failed", { leg, code, message });
          this.#host.dispatch({ type: "leg-failed", now: this.#clock.monotonic(), legId: leg.id, code, message });
        },
      ),
    );
  }

  async stop(legId: string): Promise<void> {
    const rt = this.#legs.get(legId);
    if (rt === undefined) return;
    if (rt.stopping !== null) return rt.stopping;
    rt.stopping = (async () => {
      rt.monitor?.stop();
      rt.monitor = null;
      // An install still under way would otherwise leave its rule behind the removal.
      await rt.sourceReady;
      if (rt.source !== null) await this.#platform.routes.removeLegSource(rt.source).catch(() => undefined);
      // A driver that throws at once (not only one whose promise rejects) must not skip the rest of the stop.
      await Promise.resolve()
        .then(() => rt.engine.stop())
        .catch((err: unknown) => {
          this.#host.log.error("leg stop failed", { leg: rt.leg, err });
        });
      this.#legs.delete(legId);
      this.#host.log.info("leg stopped", { leg: rt.leg });
    })();
    return rt.stopping;
  }

  /** Starts the leg's in-tunnel probes at its role's rate; a running monitor (a promoted standby's) is replaced. */
  startMonitor(legId: string, role: "active" | "standby"): void {
    const rt = this.#legs.get(legId);
    if (rt !== undefined && rt.up !== null && rt.source === null && rt.sourceReady !== null) {
      // The source rule is still going in (the winner did not wait for it): start once it is there, unless the
      // leg has stopped or another start came first.
      rt.monitorRole = role;
      void rt.sourceReady.then(() => {
        if (
          rt.monitorRole === role &&
          rt.monitor === null &&
          rt.stopping === null &&
          rt.source !== null &&
          this.#legs.get(legId) === rt
        )
          this.startMonitor(legId, role);
      });
      return;
    }
    if (rt?.up === null || rt === undefined || rt.source === null) {
      this.#host.log.warn("cannot monitor a leg that is not up", { legId });
      return;
    }
    rt.monitor?.stop();
    rt.monitorRole = role;
    const cfg = this.#host.config();
    const h = cfg.health;
    rt.monitor = this.#startMonitor({
      legId,
      sourceAddress: rt.source.address,
      target: { address: cfg.probe.address, port: cfg.probe.port },
      intervalMs: role === "standby" ? cfg.standby.probeIntervalMs : h.probeIntervalMs,
      timeoutMs: h.probeTimeoutMs,
      clock: this.#clock,
      onSample: (sample) => {
        this.#host.dispatch({ type: "probe", now: this.#clock.monotonic(), legId, sample });
      },
    });
  }

  stopMonitor(legId: string): void {
    const l = this.#legs.get(legId);
    l?.monitor?.stop();
    if (l !== undefined) {
      l.monitor = null;
      l.monitorRole = null;
    }
  }
}
