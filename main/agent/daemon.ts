/**
 * detourd's event loop: feeds inputs to the pure connection machine (main/core/connection) one at a time and
 * runs the effects it returns: engines, in-tunnel monitors, routes, timers, discovery. It owns every timer
 * and every side effect; the machine owns every decision.
 */
import { mkdirSync } from "node:fs";
import type { DetourConfig } from "../core/config/schema.ts";
import { connectionHealth, initialState, snapshot, step, type MachineContext, type MachineState } from "../core/connection/machine.ts";
import { failoverAtWall, raceAtWall, snapshotAtWall } from "../core/connection/wall-time.ts";
import type { Candidate, ConnectionEvent, ConnectionSnapshot, ConnectionStateName, DrillResult, Effect, FailoverRecord, Leg, MachineInput, ProbeSample, RaceRecord, TimerId } from "../core/connection/types.ts";
import type { Platform } from "../../native/platform/platform.ts";
import { configuredCandidates } from "./discovery.ts";
import { ConnectionEvents } from "./connection-events.ts";
import { WireGuardSparePool } from "./wireguard-spare-pool.ts";
import { LegRuntimes } from "./leg-runtime.ts";
import { CandidateRefresh, networkFinder, type CandidateFinder } from "./candidate-refresh.ts";
import { NetworkMemoryStore } from "./network-memory-store.ts";
import { DataPlane } from "./data-plane.ts";
import { DrillRunner } from "./drill.ts";
import { loadIdentity, type IdentitySecrets } from "./engine-spec.ts";
import { ControlRequestError } from "./control-server.ts";
import type { Logger } from "./log.ts";
import type { Monitor, MonitorOptions } from "./monitor.ts";
import { systemClock, wallAt, wallOffset, type Clock, type Timer } from "./clock.ts";
import { tunnelOnlyStatus, type TelemetrySource } from "./telemetry/telemetry.ts";
import { TelemetryHandle } from "./telemetry/factory.ts";
import { TunnelHistory } from "./telemetry/history.ts";
import type { DiagInputs } from "./diag/bundle.ts";
import type { TelemetryStatus } from "../core/telemetry/status.ts";
import { legAllowed } from "../core/policy/apply.ts";

export interface DaemonOptions {
  config: DetourConfig;
  configPath: string;
  workDir: string;
  /** Survives daemon restarts (the original resolv.conf is kept here while the tunnel's is in force). */
  stateDir: string;
  /** The resolv.conf detourd manages; /etc/resolv.conf in production. */
  resolvConf: string;
  ifnamePrefix: string;
  log: Logger;
  version: string;
}

/** What the daemon is given besides its options: the OS, and time. */
export interface DaemonDeps {
  platform: Platform;
  clock?: Clock;
  /** Where candidates come from (discovery and port probes over the network by default). */
  finder?: CandidateFinder;
  /** The in-tunnel prober (monitor.ts's UDP echo by default). */
  startMonitor?: (opts: MonitorOptions) => Monitor;
}

export class Daemon {
  readonly startedAt: number;
  #opts: DaemonOptions;
  #identity: IdentitySecrets;
  #state: MachineState = initialState();
  #ctx: MachineContext;
  #queue: MachineInput[] = [];
  #draining = false;
  #timers = new Map<TimerId, Timer>();
  readonly #legs: LegRuntimes;
  readonly #candidates: CandidateRefresh;
  /** Per-second probe summaries and the last hour of ten-second tunnel samples, for diagnostic bundles. */
  readonly history = new TunnelHistory();
  readonly #events: ConnectionEvents;
  readonly #dataPlane: DataPlane;
  #pending = new Set<Promise<unknown>>();
  readonly #spares: WireGuardSparePool;
  readonly #clock: Clock;
  readonly #networkMemory: NetworkMemoryStore;
  readonly #telemetry: TelemetryHandle;
  #drills: DrillRunner;

  constructor(opts: DaemonOptions, deps: DaemonDeps) {
    const platform = deps.platform;
    this.#opts = opts;
    this.#clock = deps.clock ?? systemClock;
    this.startedAt = this.#clock.wall();
    this.#identity = loadIdentity(opts.config);
    mkdirSync(opts.workDir, { recursive: true, mode: 0o700 });
    mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    this.#telemetry = new TelemetryHandle(opts.config, { stateDir: opts.stateDir, version: opts.version, source: this.#telemetrySource(), log: opts.log });
    this.#candidates = new CandidateRefresh(
      {
        config: () => this.#opts.config,
        configured: () => this.#ctx.gateways,
        stateName: () => this.#state.name,
        now: () => this.#now(),
        dispatch: (input) => {
          this.dispatch(input);
        },
        refreshKillSwitch: () => {
          this.refreshKillSwitch();
        },
        routesSettled: () => this.#dataPlane.settled(),
        track: (p) => {
          this.#track(p);
        },
        log: opts.log,
      },
      deps.finder ?? networkFinder,
      this.#clock,
    );
    this.#dataPlane = new DataPlane(
      {
        config: () => this.#opts.config,
        ifnamePrefix: opts.ifnamePrefix,
        leg: (legId) => this.#legs.get(legId),
        gateways: () => this.#candidates.known(),
        reachable: () => this.#candidates.reachable(),
        stateName: () => this.#state.name,
        track: (p) => {
          this.#track(p);
        },
        log: opts.log,
      },
      platform,
      { resolvConf: opts.resolvConf, stateDir: opts.stateDir },
    );
    this.#spares = new WireGuardSparePool(
      {
        config: () => this.#opts.config,
        hasWireGuardIdentity: this.#identity.wireguard !== null,
        busy: () => ["resolving", "racing", "failing-over"].includes(this.#state.name),
        workDir: opts.workDir,
        ifnamePrefix: opts.ifnamePrefix,
        track: (p) => {
          this.#track(p);
        },
        log: opts.log,
      },
      platform.engines,
      this.#clock,
    );
    this.#legs = new LegRuntimes(
      {
        config: () => this.#opts.config,
        identity: this.#identity,
        workDir: opts.workDir,
        ifnamePrefix: opts.ifnamePrefix,
        candidate: (gateway) => this.#candidates.find(gateway),
        spareFor: (leg) => this.#spares.forLeg(leg),
        dispatch: (input) => {
          this.dispatch(input);
        },
        track: (p) => {
          this.#track(p);
        },
        log: opts.log,
      },
      platform,
      this.#clock,
      deps.startMonitor,
    );
    this.#networkMemory = new NetworkMemoryStore(
      opts.stateDir,
      {
        towards: () => this.#ctx.gateways.find((c) => c.address !== null)?.address ?? null,
        resolvConf: () => this.#dataPlane.networkResolvConf(),
        onRecall: (leg) => {
          this.#ctx.preferredLeg = leg;
        },
        log: opts.log,
      },
      platform.network,
      this.#clock,
    );
    this.#events = new ConnectionEvents({ telemetry: () => this.#telemetry.current, routesSettled: () => this.#dataPlane.settled() });
    this.#ctx = {
      policy: { race: opts.config.race, health: opts.config.health, retry: opts.config.retry, standby: opts.config.standby },
      gateways: opts.config.gateways.map((g) => ({
        name: g.name,
        hostname: g.hostname,
        address: g.address ?? null,
        priority: g.priority,
        region: g.region,
        kinds: [
          ...(g.protocols.wireguard !== undefined ? (["wireguard"] as const) : []),
          ...(g.protocols.ikev2 !== undefined ? (["ikev2"] as const) : []),
          ...(g.protocols.anyconnect !== undefined ? (["anyconnect-tls"] as const) : []),
          ...(g.protocols.anyconnect?.dtls === true ? (["anyconnect-dtls"] as const) : []),
        ],
        sources: ["config"],
        probe: null,
      })),
    };
    this.#drills = new DrillRunner(
      {
      config: opts.config,
      log: opts.log,
      status: () => this.#snapshot(),
      candidates: () => this.#candidates.known(),
      subscribe: (listener) => this.#events.watch(listener),
      record: (event) => {
        this.#events.announce(event);
      },
      },
      { block: platform.firewall.drillBlock, clock: this.#clock },
    );
  }

  // ---- control API ----

  status(): ConnectionSnapshot & {
    gatewayChoice: string | null;
    network: ReturnType<NetworkMemoryStore["network"]>;
    telemetry: TelemetryStatus;
    daemon: { version: string; pid: number; startedAt: number; configPath: string };
    lastDrill: DrillResult | null;
  } {
    return {
      ...this.#snapshot(),
      gatewayChoice: this.#candidates.choice,
      network: this.#networkMemory.network(),
      telemetry: this.#telemetry.current?.status() ?? tunnelOnlyStatus(this.#health()),
      daemon: { version: this.#opts.version, pid: process.pid, startedAt: this.startedAt, configPath: this.#opts.configPath },
      lastDrill: this.#drills.last,
    };
  }

  /** A failover drill (main/agent/drill.ts): blocks the active gateway for this host, measures, lifts the block. */
  drill(request: { slaMs?: number | undefined }): Promise<DrillResult> {
    return this.#drills.run(request);
  }

  /** The active leg's in-tunnel numbers over the health window. */
  #health(): ReturnType<TelemetrySource["health"]> {
    const h = connectionHealth(this.#state, this.#now(), this.#ctx);
    return h === null ? null : { rttP50Ms: h.rttP50Ms, rttP95Ms: h.rttP95Ms, jitterMs: h.jitterMs, lossPct: h.lossPct, samples: h.samples };
  }

  #activeLeg(): { legId: string; gateway: string; protocol: Leg["kind"] } | null {
    const s = this.#state;
    const a = s.name === "connected" ? s.active : s.name === "failing-over" ? s.failed : null;
    return a === null ? null : { legId: a.leg.id, gateway: a.leg.gateway, protocol: a.leg.kind };
  }

  #telemetrySource(): TelemetrySource {
    return {
      state: () => this.#state.name,
      active: () => this.#activeLeg(),
      health: () => this.#health(),
      engineStats: async () => {
        const a = this.#activeLeg();
        const rt = a === null ? undefined : this.#legs.get(a.legId);
        if (rt?.up == null) return null;
        return rt.engine.stats().catch(() => null);
      },
    };
  }

  /** Flushes measured telemetry into the spool now (tests, and before a diagnostic bundle). */
  async flushTelemetry(): Promise<void> {
    await this.#telemetry.current?.flush();

  }

  /** The candidates with their latest probe results (discovery keeps them fresh in the background). */
  candidates(): Candidate[] {
    return this.#candidates.list();
  }

  lastRace(): RaceRecord | null {
    return this.#events.lastRace;
  }

  lastFailover(): FailoverRecord | null {
    return this.#events.lastFailover;
  }

  recorder(): ConnectionEvent[] {
    return this.#events.recorder();
  }

  #recordProbe(legId: string, sample: ProbeSample): void {
    const leg = this.#legs.get(legId)?.leg;
    // The history's seconds are wall-clock seconds, as a diagnostic bundle shows them.
    if (leg !== undefined) this.history.onProbe({ legId, gateway: leg.gateway, protocol: leg.kind, active: this.#activeLeg()?.legId === legId }, { ...sample, sentAt: wallAt(this.#clock, sample.sentAt) });
  }

  /** The machine's time: monotonic, so a wall-clock step is never taken for silence or a deadline. */
  #now(): number {
    return this.#clock.monotonic();
  }

  /** The connection snapshot in wall time, as status shows it. */
  #snapshot(): ConnectionSnapshot {
    return snapshotAtWall(snapshot(this.#state, this.#now()), wallOffset(this.#clock));
  }

  /** What a diagnostic bundle is built from (main/agent/diag/bundle.ts redacts it). */
  diagInputs(): Omit<DiagInputs, "logTail" | "logFile"> {
    const now = this.#clock.wall();
    const status = this.status();
    return {
      now,
      version: this.#opts.version,
      deviceId: this.#telemetry.deviceId(),
      policyHash: this.#telemetry.policyHash(this.#opts.config),
      status,
      events: this.recorder(),
      probeSeconds: this.history.probeSeconds(),
      samples: this.history.samples(now),
      candidates: this.candidates(),
      config: this.#opts.config,
      configPath: this.#opts.configPath,
      resolvConf: this.#opts.resolvConf,
      startedAt: this.startedAt,
      engines: this.#legs.all().map((rt) => ({
        legId: rt.leg.id,
        gateway: rt.leg.gateway,
        kind: rt.leg.kind,
        role: status.activeLegId === rt.leg.id ? "active" : status.standby?.legId === rt.leg.id ? "standby" : rt.up === null ? "starting" : "other",
        diagnostics: () => rt.engine.diagnostics?.() ?? Promise.resolve({ engine: rt.engine.protocol, state: null, log: "" }),
      })),
    };
  }

  subscribe(listener: (e: ConnectionEvent) => void): () => void {
    return this.#events.subscribe(listener);
  }

  /**
   * Discovery, port probes and the network's identity in the background, before the first connect; and the
   * block of a drill a previous detourd died in is lifted.
   */
  warmUp(): void {
    this.#spares.warmUp();
    this.#dataPlane.stage();
    this.#telemetry.start();
    this.#track(this.#drills.clearLeftover());
    this.#track(this.#candidates.discover());
    this.#track(this.#networkMemory.refresh());
  }

  /**
   * Starts connecting and resolves once the kill switch for connecting is in force. The race starts at once:
   * its own packets go to gateway endpoints, which the kill switch allows anyway, so failing closed costs the
   * attempt no time; what the answer guarantees is that nothing leaves outside a tunnel from then on.
   */
  async connect(): Promise<void> {
    this.refreshKillSwitch("resolving");
    const inForce = new Promise<void>((resolve) => {
      this.#dataPlane.op(() => {
        resolve();
        return Promise.resolve();
      });
    });
    this.#dataPlane.stage();
    // Which network this is decides which leg goes first.
    await this.#networkMemory.settleForConnect();
    this.dispatch({ type: "connect", now: this.#now() });
    return inForce;
  }

  /**
   * Chooses the gateway to connect to (null: automatic, every candidate by ranking) and returns the choice. A
   * chosen gateway is the only candidate the machine is given, so races and failovers stay on it (across its
   * protocols); if the tunnel is up or coming up elsewhere, it reconnects at once so the choice takes effect.
   */
  setGateway(gateway: string | null): string | null {
    if (gateway !== null && !this.candidates().some((c) => c.name === gateway)) {
      throw new ControlRequestError(`no gateway named "${gateway}"; candidates: ${this.candidates().map((c) => c.name).join(", ")}`);
    }
    const changed = gateway !== this.#candidates.choice;
    this.#candidates.choice = gateway;
    this.#opts.log.info("gateway choice", { gateway: gateway ?? "automatic" });
    const state = snapshot(this.#state, this.#now());
    const elsewhere = gateway !== null && state.gateway !== null && state.gateway !== gateway;
    if (state.state !== "disconnected" && (elsewhere || (changed && state.state !== "connected"))) {
      this.dispatch({ type: "disconnect", now: this.#now() });
      void this.connect();
    }
    return gateway;
  }

  disconnect(): void {
    this.dispatch({ type: "disconnect", now: this.#now() });
    // The next connect may be on another network (a laptop moves while disconnected).
    this.#track(this.#networkMemory.refresh(this.#dataPlane.settled()));
  }

  /** Disconnects and waits (bounded by the engines' own stop budgets) until every leg is down. */
  async shutdown(): Promise<void> {
    await this.#spares.shutdown();
    await this.#drills.stop();
    this.disconnect();
    for (let i = 0; i < 20 && (this.#pending.size > 0 || this.#legs.size > 0); i++) {
      await Promise.allSettled([...this.#pending, ...this.#legs.stopAll()]);
    }
    for (const t of this.#timers.values()) t.cancel();
    this.#timers.clear();
    this.#candidates.stop();
    await this.#dataPlane.clearForExit();
    // Events of the disconnect itself are spooled; whatever the collector did not get yet waits on disk.
    await this.#telemetry.shutdown();
    // With lockdown the host stays fail-closed after detourd exits; otherwise the kill switch goes with it.
    if (!this.#opts.config.lockdown) await this.#dataPlane.removeKillSwitch();
  }

  /**
   * Puts the kill switch for the current state in force: while connecting, failing over, in error (and while
   * disconnected under lockdown) only the candidates' gateway endpoints and the discovery resolvers may be
   * reached on the underlay, and protected networks only ever leave through a tunnel device.
   */
  refreshKillSwitch(stateOverride?: ConnectionStateName): void {
    this.#dataPlane.refreshKillSwitch(stateOverride);
  }

  /**
   * Puts a new effective configuration in force (a managed policy or a preference changed): candidates, the race,
   * health, standby and retry policies, lockdown and telemetry follow at once. The tunnel is touched only when its
   * gateway or protocol is no longer allowed; then it moves make-before-break (see #moveOffDisallowed).
   * Returns whether a leg was moved off.
   */
  reconfigure(config: DetourConfig): boolean {
    const before = this.#opts.config;
    this.#opts.config = config;
    this.#ctx.policy = { race: config.race, health: config.health, retry: config.retry, standby: config.standby };
    this.#ctx.gateways = configuredCandidates(config);
    // A gateway allowed again comes back into the candidates with a discovery round, started now.
    this.#candidates.reconfigure(config);
    // In resolving, a candidate list starts the race; the resolve under way delivers the restricted one anyway.
    if (this.#state.name !== "resolving") this.dispatch({ type: "candidates", now: this.#now(), candidates: this.candidates() });
    this.refreshKillSwitch();
    if (JSON.stringify(before.telemetry) !== JSON.stringify(config.telemetry)) this.#track(this.#telemetry.restart(config));
    return this.#moveOffDisallowed();
  }

  /** Reports a daemon event (policy applied or rejected) to the collector, when telemetry is configured. */
  emitTelemetry(name: string, body: unknown, attrs: Record<string, string | number | boolean> = {}): void {
    this.#telemetry.current?.emitEvent(name, body, attrs);
  }

  /**
   * Legs the configuration no longer allows are reported down to the machine, the standby first: a standby that
   * is still allowed then takes over by a route change, otherwise a failover race runs over the allowed
   * candidates while the forbidden leg keeps carrying traffic until the winner is up.
   */
  #moveOffDisallowed(): boolean {
    const cfg = this.#opts.config;
    let moved = false;
    const s = this.#state;
    if (s.name !== "connected") return false;
    const sb = s.standby.leg?.leg;
    if (sb !== undefined && !legAllowed(cfg, sb)) {
      this.#opts.log.info("standby leg no longer allowed; replacing it", { leg: sb });
      this.dispatch({ type: "leg-down", now: this.#now(), legId: sb.id, reason: `policy: ${sb.gateway} over ${sb.kind} is no longer allowed` });
    }
    const after = this.#state;
    if (after.name === "connected" && !legAllowed(cfg, after.active.leg)) {
      const a = after.active.leg;
      this.#opts.log.info("active leg no longer allowed; moving the tunnel", { leg: a });
      this.dispatch({ type: "leg-down", now: this.#now(), legId: a.id, reason: `policy: ${a.gateway} over ${a.kind} is no longer allowed` });
      moved = true;
    }
    return moved;
  }

  // ---- the loop ----

  dispatch(input: MachineInput): void {
    this.#queue.push(input);
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let i = 0; i < 10_000 && this.#queue.length > 0; i++) {
        const next = this.#queue.shift();
        if (next === undefined) break;
        if (next.type === "probe") {
          this.#telemetry.current?.onProbe(next.legId, next.sample);
          this.#recordProbe(next.legId, next.sample);
        }
        const r = step(this.#state, next, this.#ctx);
        this.#state = r.state;
        for (const e of r.effects) this.#run(e);
      }
    } finally {
      this.#draining = false;
    }
  }

  #track(p: Promise<unknown>): void {
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
  }

  #run(e: Effect): void {
    const log = this.#opts.log;
    switch (e.type) {
      case "resolve-candidates":
        this.#track(this.#candidates.resolve());
        return;
      case "start-leg":
        this.#legs.start(e.leg, e.deadlineAt);
        return;
      case "stop-leg":
        this.#track(this.#legs.stop(e.legId));
        return;
      case "start-monitor":
        this.#legs.startMonitor(e.legId, e.role);
        return;
      case "stop-monitor":
        this.#legs.stopMonitor(e.legId);
        return;
      case "apply-routes":
        this.#dataPlane.applyRoutes(e.legId);
        return;
      case "clear-routes":
        this.#dataPlane.clearRoutes();
        return;
      case "set-timer": {
        const old = this.#timers.get(e.timer);
        old?.cancel();
        const timer = e.timer;
        // The machine's timers (the dead window above all) are judged after the sockets are read: after an
        // event-loop stall (a busy laptop), Node runs due timers before I/O, and a health check that ran first
        // would call a tunnel dead whose replies are waiting in the socket. A stale timer changes nothing.
        this.#timers.set(timer, this.#clock.after(e.at - this.#now(), () => {
          this.#timers.delete(timer);
          setImmediate(() => {
            if (timer !== "health-check") {
              this.dispatch({ type: "timer", now: this.#now(), timer });
              return;
            }
            // The dead window needs probes that were sent and left unanswered, not just a silent clock.
            const a = this.#activeLeg();
            const pendingSentAt = a === null ? undefined : this.#legs.pendingSentAt(a.legId);
            this.dispatch({ type: "timer", now: this.#now(), timer, ...(pendingSentAt === undefined ? {} : { pendingSentAt }) });
          });
        }));
        return;
      }
      case "cancel-timer": {
        const t = this.#timers.get(e.timer);
        t?.cancel();
        this.#timers.delete(e.timer);
        return;
      }
      case "record-race":
        this.#events.lastRace = raceAtWall(e.race, wallOffset(this.#clock));
        this.#networkMemory.remember(e.race);
        log.info("race", { race: this.#events.lastRace });
        return;
      case "record-failover":
        this.#events.lastFailover = failoverAtWall(e.failover, wallOffset(this.#clock));
        log.info("failover", { failover: this.#events.lastFailover });
        return;
      case "notify":
        if (e.event.type === "state") {
          log.info("state", { state: e.event.state, detail: e.event.detail });
          this.refreshKillSwitch();
        }
        // A race started under an older policy may bring up a leg the policy now forbids.
        if (e.event.type === "state" || e.event.type === "race-ended") queueMicrotask(() => this.#moveOffDisallowed());
        this.#events.emit(e.event, wallOffset(this.#clock));
        return;
    }
  }
}
