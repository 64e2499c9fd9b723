/**
 * The legs' runtime: each leg the machine starts gets an engine (adopting the spare wireguard-go when it can), a
 * routing slot it owns from its start until its teardown has finished (see leg-slots.ts), its own source routing
 * installed before its first echo (so the echo's reply passes a strict reverse-path filter and its monitor's
 * probes leave through its device), a check of its device's MTU with full-size echoes before it counts as up
 * (path-mtu.ts: a leg whose path swallows every usable size fails instead), its in-tunnel monitor at the role's
 * rate, and an orderly stop. What happens to a leg goes back to the machine as an input.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import { paceIntervalMs, type ProbePace } from "../core/connection/pace.ts";
import type { Candidate, Leg, MachineInput } from "../core/connection/types.ts";
import type { TunnelUp } from "../core/tunnel/engine-types.ts";
import { isEngineError, type ProbeDevice, type TunnelEngine } from "../../native/engines/engine.ts";
import type { LegSource, Platform, SpareDevice } from "../../native/platform/platform.ts";
import { monotonicAt, wallAt, type Clock } from "./clock.ts";
import { engineSpecFor, type IdentitySecrets } from "./engine-spec.ts";
import { LegSlots, type LegSlot } from "./leg-slots.ts";
import type { Logger } from "./log.ts";
import { startMonitor, type Monitor, type MonitorOptions } from "./monitor.ts";
import type { PathMtuGuard } from "./path-mtu.ts";

export interface LegRuntime {
  leg: Leg;
  engine: TunnelEngine;
  up: TunnelUp | null;
  monitor: Monitor | null;
  /** The routing table and rule preference this leg owns until its teardown has finished. */
  slot: LegSlot;
  /** The leg's source routing once installed; null before, and when the install failed. */
  source: LegSource | null;
  /** The source routing asked for (installed, failed or under way): what every teardown path removes. */
  routed: LegSource | null;
  /** Settles when the leg's source routing is installed (source set) or failed; null before it was asked for. */
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
  /** Path MTU checks of each leg's device and of the active one; absent: the engines' MTUs are taken as they are. */
  pathMtu?: PathMtuGuard | null;
}

export class LegRuntimes {
  readonly #host: LegHost;
  readonly #platform: Pick<Platform, "engines" | "routes">;
  readonly #clock: Clock;
  readonly #startMonitor: (opts: MonitorOptions) => Monitor;
  /** The probes' pace the connection machine last asked for (fast until it says otherwise). */
  #pace: ProbePace = "fast";
  readonly #legs = new Map<string, LegRuntime>();
  readonly #slots: LegSlots;
  /** Who holds each leg's slot, as the slots know it (a leg id can come back; an owner is never reused). */
  readonly #owners = new WeakMap<LegRuntime, string>();
  /** Teardowns of legs whose start failed: they still own their slot until these settle. */
  readonly #retiring = new Set<Promise<void>>();
  #legCounter = 0;

  constructor(
    host: LegHost,
    platform: Pick<Platform, "engines" | "routes">,
    clock: Clock,
    monitor: (opts: MonitorOptions) => Monitor = startMonitor,
    slots: LegSlots = new LegSlots(),
  ) {
    this.#host = host;
    this.#platform = platform;
    this.#clock = clock;
    this.#startMonitor = monitor;
    this.#slots = slots;
  }

  get(legId: string): LegRuntime | undefined {
    return this.#legs.get(legId);
  }

  all(): LegRuntime[] {
    return [...this.#legs.values()];
  }

  /** Legs still holding anything: running, stopping, or tearing down after a failed start. */
  get size(): number {
    return this.#legs.size + this.#retiring.size;
  }

  /** Every leg's stop, running or started now, and the teardowns of failed starts (shutdown waits on them). */
  stopAll(): Promise<void>[] {
    return [...this.all().map((l) => l.stopping ?? this.stop(l.leg.id)), ...this.#retiring];
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
    const failNow = (code: "bad-config" | "engine-crashed", message: string): void => {
      queueMicrotask(() => {
        this.#host.dispatch({ type: "leg-failed", now: this.#clock.monotonic(), legId: leg.id, code, message });
      });
    };
    this.#legCounter += 1;
    const owner = `${leg.id}#${String(this.#legCounter)}`;
    const slot = this.#slots.acquire(owner);
    if (slot === null) {
      // Retryable: slots come back as other legs finish their teardown.
      const message = `no routing slot free for leg ${leg.id}: all ${String(this.#slots.capacity)} are owned by legs not yet torn down`;
      log.error("leg slots exhausted", { leg, inUse: this.#slots.inUse });
      failNow("engine-crashed", message);
      return;
    }
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
      this.#slots.release(slot, owner);
      failNow("bad-config", err instanceof Error ? err.message : String(err));
      return;
    }
    const rt: LegRuntime = {
      leg,
      engine,
      up: null,
      monitor: null,
      slot,
      source: null,
      routed: null,
      sourceReady: null,
      sourceFailed: false,
      monitorRole: null,
      stopping: null,
    };
    this.#legs.set(leg.id, rt);
    this.#owners.set(rt, owner);
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
    log.info("leg starting", { leg, endpoint: candidate.address, table: slot.table, pref: slot.pref });
    this.#host.track(
      // Engines keep epoch-ms deadlines: the machine's monotonic one, read on the wall clock now.
      engine
        .start(wallAt(this.#clock, deadlineAt), undefined, {
          // The source rule goes in before the first echo: under rp_filter=1 the echo's reply is dropped unless
          // the route back to the probe target from the leg's address leaves through the leg's own device.
          beforeProbe: (dev) => this.#routeSource(rt, dev),
        })
        .then(
          (up) => {
            rt.up = up;
            if (rt.stopping !== null) return;
            // An engine that did not call beforeProbe: its source routing goes in now, as the monitor needs it.
            const address = up.config.addresses[0]?.split("/")[0];
            if (rt.sourceReady === null && address !== undefined)
              void this.#routeSource(rt, { ifname: up.config.ifname, address });
            const guard = this.#host.pathMtu ?? null;
            if (guard === null) {
              this.#legUp(rt, up);
              return;
            }
            // Full-size echoes (under rp_filter=1 only once the source rule is in) before the leg counts as up, so
            // traffic never goes into a tunnel whose MTU its path swallows.
            const rtt = up.timings.firstReplyRttMs ?? null;
            this.#host.track(
              Promise.resolve(rt.sourceReady)
                .then(() => guard.checkNew(leg, up, rtt, () => rt.stopping === null && this.#legs.get(leg.id) === rt))
                .then((verdict) => {
                  if (rt.stopping !== null || this.#legs.get(leg.id) !== rt) return;
                  if (verdict === null || verdict.kind === "ok" || verdict.kind === "lowered") {
                    this.#legUp(rt, up);
                    return;
                  }
                  // Silent right after its first reply: a full-size echo stuck the tunnel (a TLS leg's TCP retransmits
                  // a segment its path swallows, and everything queues behind it) or it died; neither is a winner.
                  const message =
                    verdict.kind === "black-hole"
                      ? `${leg.gateway}: path MTU black hole (packets of ${String(verdict.from)} bytes vanish while small ones pass, and nothing of 1280 bytes crosses)`
                      : `${leg.gateway}: the tunnel went silent after a full-size echo of ${String(verdict.mtu)} bytes (a path MTU black hole under a TCP transport, or a tunnel that died)`;
                  log.info("leg failed", { leg, code: "unreachable", message });
                  this.#host.track(this.stop(leg.id));
                  this.#host.dispatch({
                    type: "leg-failed",
                    now: this.#clock.monotonic(),
                    legId: leg.id,
                    code: "unreachable",
                    message,
                  });
                }),
            );
          },
          (err: unknown) => {
            const code = isEngineError(err) ? err.code : "engine-crashed";
            const message = err instanceof Error ? err.message : String(err);
            log.info("leg failed", { leg, code, message });
            if (this.#legs.get(leg.id) === rt) this.#legs.delete(leg.id);
            // A stop() under way owns the teardown (and the slot's release); otherwise the failure does.
            if (rt.stopping === null) {
              const retiring = this.#teardownRouting(rt).finally(() => {
                this.#slots.release(rt.slot, owner);
                this.#retiring.delete(retiring);
              });
              rt.stopping = retiring;
              this.#retiring.add(retiring);
            }
            this.#host.dispatch({ type: "leg-failed", now: this.#clock.monotonic(), legId: leg.id, code, message });
          },
        ),
    );
  }

  /** Tells the machine the leg is up (its first reply, its path's round trip). */
  #legUp(rt: LegRuntime, up: TunnelUp): void {
    const leg = rt.leg;
    this.#host.log.info("leg up", {
      leg,
      ifname: up.config.ifname,
      mtu: this.#host.pathMtu?.mtuOf(leg.id) ?? up.config.mtu,
      ms: up.timings.firstReplyAt - up.timings.spawnedAt,
    });
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
  }

  /** Installs the leg's source routing in its own slot (once); never rejects: a failure leaves the leg unprobed. */
  #routeSource(rt: LegRuntime, dev: ProbeDevice): Promise<void> {
    if (rt.sourceReady !== null) return rt.sourceReady;
    // A stopping leg's teardown may already have run: a rule installed now would outlive it.
    if (rt.stopping !== null) return Promise.resolve();
    const source: LegSource = { ifname: dev.ifname, address: dev.address, table: rt.slot.table, pref: rt.slot.pref };
    rt.routed = source;
    rt.sourceReady = this.#platform.routes.installLegSource(source).then(
      () => {
        rt.source = source;
      },
      (err: unknown) => {
        rt.sourceFailed = true;
        this.#host.log.warn("leg source routing failed; its monitor cannot probe it", { leg: rt.leg, err });
      },
    );
    return rt.sourceReady;
  }

  /** Removes whatever source routing the leg asked for, once any install under way has settled. */
  async #teardownRouting(rt: LegRuntime): Promise<void> {
    // An install still under way would otherwise leave its rule behind the removal.
    await rt.sourceReady;
    const routed = rt.routed;
    if (routed === null) return;
    await this.#platform.routes.removeLegSource(routed).catch((err: unknown) => {
      // The slot is reused anyway: the next owner's install replaces any rule left at its preference.
      this.#host.log.error("leg source routing removal failed", { leg: rt.leg, err });
    });
    rt.source = null;
  }

  async stop(legId: string): Promise<void> {
    const rt = this.#legs.get(legId);
    if (rt === undefined) return;
    if (rt.stopping !== null) return rt.stopping;
    rt.stopping = (async () => {
      rt.monitor?.stop();
      rt.monitor = null;
      this.#host.pathMtu?.forget(legId);
      // The rule goes first (the device it routes to is about to vanish); a start still in flight routes nothing
      // from here on (see #routeSource), so nothing can come back behind this removal.
      await this.#teardownRouting(rt);
      // A driver that throws at once (not only one whose promise rejects) must not skip the rest of the stop.
      await Promise.resolve()
        .then(() => rt.engine.stop())
        .catch((err: unknown) => {
          this.#host.log.error("leg stop failed", { leg: rt.leg, err });
        });
      if (this.#legs.get(legId) === rt) this.#legs.delete(legId);
      const owner = this.#owners.get(rt);
      if (owner !== undefined) this.#slots.release(rt.slot, owner);
      this.#host.log.info("leg stopped", { leg: rt.leg });
    })();
    return rt.stopping;
  }

  /**
   * Every monitor's pace (core/connection/pace.ts), the running ones now (a probe goes out at once when they
   * speed up) and those started later.
   */
  setPace(pace: ProbePace): void {
    if (pace === this.#pace) return;
    this.#pace = pace;
    this.#host.log.debug("probe pace", { pace });
    this.#host.pathMtu?.setPace(pace);
    const cfg = this.#host.config();
    for (const rt of this.#legs.values())
      if (rt.monitor !== null && rt.monitorRole !== null)
        rt.monitor.setInterval(paceIntervalMs(pace, rt.monitorRole, cfg.health, cfg.standby));
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
    // Only the tunnel carrying the traffic is rechecked with full-size echoes (and has the MSS clamp behind it).
    const guard = this.#host.pathMtu ?? null;
    if (role === "active") guard?.watch(rt.leg, rt.up, rt.up.timings.firstReplyRttMs ?? null);
    else guard?.unwatch(legId);
    const cfg = this.#host.config();
    const h = cfg.health;
    rt.monitor = this.#startMonitor({
      legId,
      sourceAddress: rt.source.address,
      target: { address: cfg.probe.address, port: cfg.probe.port },
      intervalMs: paceIntervalMs(this.#pace, role, h, cfg.standby),
      timeoutMs: h.probeTimeoutMs,
      lateReplies: true,
      clock: this.#clock,
      onSample: (sample) => {
        this.#host.dispatch({ type: "probe", now: this.#clock.monotonic(), legId, sample });
      },
    });
  }

  /**
   * After a path change or a wake: the leg's monitor starts over (a probe goes out at once, then at its rate) and,
   * on a path change, its engine is told (openconnect reconnects with its cookie; the others follow by themselves).
   */
  recheck(legId: string, why: "path-changed" | "wake"): void {
    const rt = this.#legs.get(legId);
    if (rt === undefined || rt.stopping !== null) return;
    if (why === "path-changed") {
      try {
        rt.engine.roam?.();
      } catch (err) {
        this.#host.log.warn("the engine could not be told of the path change", { leg: rt.leg, err });
      }
    }
    const role = rt.monitorRole;
    if (role !== null && rt.monitor !== null) this.startMonitor(legId, role);
  }

  stopMonitor(legId: string): void {
    const l = this.#legs.get(legId);
    this.#host.pathMtu?.unwatch(legId);
    l?.monitor?.stop();
    if (l !== undefined) {
      l.monitor = null;
      l.monitorRole = null;
    }
  }
}
