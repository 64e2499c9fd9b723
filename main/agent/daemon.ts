/**
 * detourd's event loop: feeds inputs to the pure connection machine (main/core/connection) one at a time, runs
 * the effects it returns and owns its timers. The machine owns every decision; the modules beside this file do
 * the work (leg-runtime, data-plane, candidate-refresh, wireguard-spare-pool, network-memory-store, connection-
 * events, telemetry/factory, drill-wiring), and control-facade.ts is what the control socket and the policy see.
 *
 * Time: the machine's `now`, its timers and every deadline are the Clock's monotonic time; wall time appears only
 * where people read it (events, records, status).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { DetourConfig } from "../core/config/schema.ts";
import { LOCKDOWN_STATE_FILE, lockdownStateFor } from "../core/lockdown-state.ts";
import {
  activeLeg,
  initialState,
  snapshot,
  step,
  type MachineContext,
  type MachineState,
} from "../core/connection/machine.ts";
import type {
  ConnectionSnapshot,
  ConnectionStateName,
  Effect,
  MachineInput,
  ProbeSample,
  TimerId,
} from "../core/connection/types.ts";
import { failoverAtWall, raceAtWall, snapshotAtWall } from "../core/connection/wall-time.ts";
import type { Platform } from "../../native/platform/platform.ts";
import { Refusals, type RefusedInput } from "../core/net/refusals.ts";
import { CaptiveMonitor, type CaptiveProbe } from "./captive.ts";
import { CandidateRefresh, networkFinder, type CandidateFinder } from "./candidate-refresh.ts";
import { systemClock, wallAt, wallOffset, type Clock, type Timer } from "./clock.ts";
import { ConnectionEvents } from "./connection-events.ts";
import { ControlFacade, telemetrySource, type DaemonLoop } from "./control-facade.ts";
import { DataPlane } from "./data-plane.ts";
import { createDrills } from "./drill-wiring.ts";
import { loadIdentity } from "./engine-spec.ts";
import { LegRuntimes } from "./leg-runtime.ts";
import type { Logger } from "./log.ts";
import type { Monitor, MonitorOptions } from "./monitor.ts";
import { LockdownStateStore } from "./lockdown-state-store.ts";
import { LocalNetworkAccess } from "./local-network-access.ts";
import { NetworkMemoryStore } from "./network-memory-store.ts";
import { PathMtuGuard } from "./path-mtu.ts";
import { NetworkWatch } from "./network-watch.ts";
import type { OwnershipRecord } from "./ownership.ts";
import { machinePolicy, moveOffDisallowed, startupGateways } from "./policy-change.ts";
import { TelemetryHandle } from "./telemetry/factory.ts";
import { TunnelHistory } from "./telemetry/history.ts";
import { WireGuardSparePool } from "./wireguard-spare-pool.ts";

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
  /** The group id detourd runs as (detourd.ts switches to it): the kill switch's underlay allowances are bound to it. */
  ownGroup?: number | null;
}

/** What the daemon is given besides its options: the OS, time, and (for tests) where candidates and probes come from. */
export interface DaemonDeps {
  platform: Platform;
  clock?: Clock;
  /** Where candidates come from (discovery and port probes over the network by default). */
  finder?: CandidateFinder;
  /** The in-tunnel prober (monitor.ts's UDP echo by default). */
  startMonitor?: (opts: MonitorOptions) => Monitor;
  /** What detourd owns on the host, noted as the platform creates it (ownership.ts); none in most unit tests. */
  ownership?: OwnershipRecord;
  /** How captive networks are checked (captive-probe.ts on a real host); absent: no captive checks. */
  captiveProbe?: CaptiveProbe;
}

/** One input's effects may feed inputs back; more than this many in one drain is a loop, not work. */
const MAX_INPUTS_PER_DRAIN = 10_000;
/** Shutdown waits for legs and pending work in rounds; each round is bounded by the engines' own stop budgets. */
const SHUTDOWN_ROUNDS = 20;

export class Daemon {
  /** What the control socket, the policy wiring and diagnostics use. */
  readonly control: ControlFacade;
  #config: DetourConfig;
  readonly #log: Logger;
  readonly #clock: Clock;
  #state: MachineState = initialState();
  readonly #ctx: MachineContext;
  /** The kill switch traces user traffic into tunnels only with detourd's own group (firewall.linux.ts). */
  readonly #seesTunnelTraffic: boolean;
  readonly #queue: MachineInput[] = [];
  #draining = false;
  readonly #timers = new Map<TimerId, Timer>();
  readonly #pending = new Set<Promise<unknown>>();
  /** Per-second probe summaries and the last hour of ten-second tunnel samples, for diagnostic bundles. */
  readonly #history = new TunnelHistory();
  readonly #legs: LegRuntimes;
  readonly #candidates: CandidateRefresh;
  readonly #dataPlane: DataPlane;
  readonly #networkMemory: NetworkMemoryStore;
  readonly #networkWatch: NetworkWatch;
  readonly #events: ConnectionEvents;
  readonly #telemetry: TelemetryHandle;
  readonly #loopView: DaemonLoop;
  readonly #captive: CaptiveMonitor | undefined;
  /** Told of every network change the monitor reports (trusted network detection re-evaluates on them). */
  readonly #networkListeners = new Set<() => void>();
  /** Allow local network access: the connected networks reachable outside the tunnel. */
  readonly #localNetworks: LocalNetworkAccess;

  constructor(opts: DaemonOptions, deps: DaemonDeps) {
    const platform = deps.ownership?.watch(deps.platform) ?? deps.platform;
    const log = opts.log;
    this.#config = opts.config;
    this.#log = log;
    this.#clock = deps.clock ?? systemClock;
    const startedAt = this.#clock.wall();
    const identity = loadIdentity(opts.config);
    mkdirSync(opts.workDir, { recursive: true, mode: 0o700 });
    mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    // Retries are jittered, so a fleet that lost its gateways does not come back to them in lockstep.
    this.#seesTunnelTraffic = (opts.ownGroup ?? null) !== null;
    this.#ctx = {
      policy: machinePolicy(opts.config, this.#seesTunnelTraffic),
      gateways: startupGateways(opts.config),
      random: Math.random,
    };
    const config = (): DetourConfig => this.#config;
    const track = (p: Promise<unknown>): void => {
      this.#track(p);
    };
    const dispatch = (input: MachineInput): void => {
      this.dispatch(input);
    };
    // What was refused from the network: logged once, counted, and shown in status for helpdesk.
    const refusals = new Refusals();
    const refuse = (r: Omit<RefusedInput, "at" | "count" | "source"> & { source?: string }): void => {
      const entry = { ...r, source: r.source ?? r.gateway, at: this.#clock.wall() };
      if (refusals.record(entry)) log.warn("refused input from the network", { ...entry });
    };
    const loop = this.#loop();
    this.#loopView = loop;
    this.#telemetry = new TelemetryHandle(opts.config, {
      stateDir: opts.stateDir,
      version: opts.version,
      source: telemetrySource(loop, () => this.#legs),
      log,
    });
    this.#candidates = new CandidateRefresh(
      {
        config,
        configured: () => this.#ctx.gateways,
        stateName: () => this.#state.name,
        now: () => this.#now(),
        dispatch,
        refreshKillSwitch: () => {
          this.#dataPlane.refreshKillSwitch();
        },
        bypassNewGateways: () => {
          this.#dataPlane.bypassNewGateways();
        },
        routesSettled: () => this.#dataPlane.settled(),
        // Tunnel devices' addresses are inside the tunnel, not the network the device is on.
        localNetworks: async () =>
          (await platform.network.localNetworks())
            .filter((n) => !n.dev.startsWith(`${opts.ifnamePrefix}-`) && !/^ipsec\d/.test(n.dev))
            .map((n) => n.prefix),
        refuse,
        track,
        log,
      },
      deps.finder ?? networkFinder,
      this.#clock,
    );
    this.#dataPlane = new DataPlane(
      {
        config,
        ifnamePrefix: opts.ifnamePrefix,
        leg: (legId) => this.#legs.get(legId),
        reachable: () => this.#candidates.reachable(),
        stateName: () => this.#state.name,
        track,
        refuse,
        log,
        clock: this.#clock,
        ownGroup: opts.ownGroup ?? null,
        // An event for `detour events`, the flight recorder and telemetry (which counts them).
        reportKillSwitch: (change, status, detail) => {
          this.#events.announce({ type: "kill-switch", at: this.#clock.wall(), change, status, detail });
        },
        tunnelActivity: () => {
          this.#tunnelInUse();
        },
        captive: () => this.#captive?.killSwitchInputs() ?? { checkAddresses: [], captiveException: null },
        localNetworks: (alsoInside) => this.#localNetworks.allowed(alsoInside),
        reportDns: (change, status, detail) => {
          this.#telemetry.current?.emitEvent(
            "detour.dns.reasserted",
            { change, detail, reassertions: status.reassertions, lastError: status.lastError },
            { change, failed: change === "failed" },
          );
        },
      },
      platform,
      { resolvConf: opts.resolvConf, stateDir: opts.stateDir },
    );
    // Crash protection lost or back: an event for `detour events`, the flight recorder and telemetry.
    deps.ownership?.onCrashProtection((report) => {
      const detail = report.inForce
        ? "the connect intent is on disk again; a crash now is resumed with the kill switch held"
        : `the connect intent could not be written (${report.failedCopies
            .map((c) => `${c.path}: ${c.code ?? c.message}`)
            .join("; ")}); a crash now lifts the kill switch; retrying`;
      this.#events.announce({ type: "crash-protection", at: this.#clock.wall(), inForce: report.inForce, detail });
    });
    this.#localNetworks = new LocalNetworkAccess(
      {
        config,
        protectedNetworks: () => this.#dataPlane.protectedNetworks(),
        tunnelAddresses: () => this.#dataPlane.tunnelAddresses(),
        // The kill switch's own tunnel devices: their connected routes are the tunnels' inside.
        tunnelDevices: [`${opts.ifnamePrefix}-*`, "ipsec*"],
        changed: () => {
          this.#dataPlane.localNetworksChanged();
        },
        report: (name, body) => {
          this.#telemetry.current?.emitEvent(name, body, {});
        },
        clock: this.#clock,
        log,
        track,
      },
      platform.network,
    );
    // Full-size echoes through each tunnel and the MSS clamp (path-mtu.ts), where the platform can do them.
    const pathMtu =
      platform.mtu === undefined
        ? null
        : new PathMtuGuard(
            {
              probeTarget: () => this.#config.probe.address,
              ifnamePrefix: opts.ifnamePrefix,
              clock: this.#clock,
              log,
              track,
              report: (e) => {
                this.#events.announce(e);
              },
              blackHole: (legId, reason) => {
                this.dispatch({ type: "leg-down", now: this.#now(), legId, reason });
              },
            },
            platform.mtu,
          );
    const captiveProbe = deps.captiveProbe;
    this.#captive =
      captiveProbe === undefined
        ? undefined
        : new CaptiveMonitor({
            config,
            probe: captiveProbe,
            networkResolvers: () => this.#dataPlane.networkResolvers(),
            applyKillSwitch: () => {
              this.#dataPlane.refreshKillSwitch();
              return this.#dataPlane.settled();
            },
            // The user wanted a connection (it failed on the portal): connect at once rather than at the next retry.
            reconnect: () => {
              if (this.#state.name !== "error") return;
              this.control.connect().catch((err: unknown) => {
                log.error("connect after the captive sign-in failed", { err });
              });
            },
            report: (change, status) => {
              log.info("captive", { change, state: status.state, reason: status.reason, exception: status.exception });
              this.#telemetry.current?.emitEvent(
                "detour.captive",
                { change, ...status },
                { change, state: status.state, exception: status.exception.state },
              );
            },
            clock: this.#clock,
            log,
            track,
          });
    const busy = (): boolean => ["resolving", "racing", "failing-over"].includes(this.#state.name);
    const spares = new WireGuardSparePool(
      {
        config,
        hasWireGuardIdentity: identity.wireguard !== null,
        busy,
        workDir: opts.workDir,
        ifnamePrefix: opts.ifnamePrefix,
        track,
        log,
      },
      platform.engines,
      this.#clock,
    );
    this.#legs = new LegRuntimes(
      {
        config,
        identity,
        workDir: opts.workDir,
        ifnamePrefix: opts.ifnamePrefix,
        candidate: (gateway) => this.#candidates.find(gateway),
        spareFor: (leg) => spares.forLeg(leg),
        dispatch,
        track,
        log,
        pathMtu,
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
        log,
      },
      platform.network,
      this.#clock,
    );
    this.#networkWatch = new NetworkWatch(
      {
        monitor: platform.netmon,
        ...(platform.sleep === undefined ? {} : { sleep: platform.sleep }),
        ifnamePrefix: opts.ifnamePrefix,
        targets: () => [
          ...new Set(
            this.#candidates
              .known()
              .flatMap((c) => [c.address, c.addresses?.ipv4 ?? null, c.addresses?.ipv6 ?? null])
              .filter((a): a is string => a !== null),
          ),
        ],
        now: () => this.#now(),
        dispatch,
        networkChanged: () => {
          this.#candidates.forgetProbes();
          // A new network may be a hotel's: check it at once, also while a tunnel is up (it re-establishes on the
          // new network and would fail behind a portal before saying why). The check leaves on the underlay
          // whatever the tunnel's routes are (captive-probe.ts), so a full tunnel does not swallow it.
          if (this.#captive !== undefined) track(this.#captive.check("network-change"));
          for (const l of this.#networkListeners) l();
          // The new network's LAN is allowed and the old one's exception goes.
          this.#localNetworks.refresh("network-change");
        },
        refreshNetworkKey: () => {
          track(this.#networkMemory.refresh());
          // Bounded (NETWORK_KEY_WAIT_MS): a connect on the new network is worth a few milliseconds, never more.
          return this.#networkMemory.settleForConnect();
        },
        report: (name, body) => {
          this.#telemetry.current?.emitEvent(name, body, {});
        },
        track,
        log,
      },
      this.#clock,
    );
    this.#events = new ConnectionEvents({
      telemetry: () => this.#telemetry.current,
      routesSettled: () => this.#dataPlane.settled(),
    });
    const drills = createDrills({
      config,
      snapshot: () => loop.snapshot(),
      candidates: () => this.#candidates.known(),
      events: this.#events,
      block: platform.firewall.drillBlock,
      clock: this.#clock,
      log,
      // A drill measures a failover as a user in the middle of their work meets it: the probes' fast pace.
      inUse: () => {
        this.#tunnelInUse();
      },
    });
    // The early-boot step reads what is in force here: lockdown and the protected networks, on every change.
    const lockdownState = new LockdownStateStore(join(opts.stateDir, LOCKDOWN_STATE_FILE), log);
    lockdownState.record(lockdownStateFor(opts.config, opts.ifnamePrefix));
    this.control = new ControlFacade({
      loop,
      config,
      setConfig: (c) => {
        this.#config = c;
        lockdownState.record(lockdownStateFor(c, opts.ifnamePrefix));
        // A policy may force local network access on or off, or turn lockdown on (which "auto" follows).
        this.#localNetworks.reconsider("configuration");
      },
      lockdownState: () => lockdownState.status(),
      info: { version: opts.version, configPath: opts.configPath, resolvConf: opts.resolvConf, startedAt },
      wallNow: () => this.#clock.wall(),
      legs: this.#legs,
      candidates: this.#candidates,
      events: this.#events,
      dataPlane: this.#dataPlane,
      spares,
      networkMemory: this.#networkMemory,
      networkWatch: this.#networkWatch,
      onNetworkChange: (listener) => {
        this.#networkListeners.add(listener);
        return () => {
          this.#networkListeners.delete(listener);
        };
      },
      telemetry: this.#telemetry,
      drills,
      history: this.#history,
      refusals,
      pathMtu,
      localNetworks: this.#localNetworks,
      ...(deps.ownership === undefined ? {} : { ownership: deps.ownership }),
      ...(this.#captive === undefined ? {} : { captive: this.#captive }),
      log,
    });
  }

  /** Feeds one input to the machine; inputs its effects produce are queued and run in order, never nested. */
  dispatch(input: MachineInput): void {
    this.#queue.push(input);
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let i = 0; i < MAX_INPUTS_PER_DRAIN && this.#queue.length > 0; i++) {
        const next = this.#queue.shift();
        if (next === undefined) break;
        // A suspend shows as a wall-clock jump at the first input after resume (no timer needed for it).
        if (next.type !== "wake") this.#networkWatch.observe();
        if (next.type === "probe") this.#recordProbe(next.legId, next.sample);
        const before = this.#state;
        const r = step(before, next, this.#ctx);
        this.#state = r.state;
        this.#noteLegRoles(before, r.state, next);
        for (const e of r.effects) this.#run(e);
      }
    } finally {
      this.#draining = false;
    }
  }

  /**
   * Which leg carries traffic and which stands by, logged when either changes with the input that changed it: a
   * standby dropped for silence or a leg replaced after a path change is otherwise invisible in the log.
   */
  #noteLegRoles(before: MachineState, after: MachineState, input: MachineInput): void {
    const roles = (s: MachineState): { active: string | null; standby: string | null } => ({
      active: activeLeg(s)?.id ?? null,
      standby: s.name === "connected" ? (s.standby.leg?.leg.id ?? null) : null,
    });
    const a = roles(before);
    const b = roles(after);
    if (a.active === b.active && a.standby === b.standby) return;
    this.#log.info("leg roles", {
      active: b.active,
      standby: b.standby,
      was: a,
      state: after.name,
      input: input.type,
      ...("legId" in input ? { inputLeg: input.legId } : {}),
      ...(input.type === "timer" ? { timer: input.timer } : {}),
    });
  }

  /** The loop as the control facade and the policy change drive it (the context is the one object, updated in place). */
  #loop(): DaemonLoop {
    return {
      state: () => this.#state,
      ctx: this.#ctx,
      seesTunnelTraffic: this.#seesTunnelTraffic,
      now: () => this.#now(),
      snapshot: () => this.#snapshot(),
      dispatch: (input) => {
        this.dispatch(input);
      },
      track: (p) => {
        this.#track(p);
      },
      settle: () => this.#settle(),
      stopTimers: () => {
        this.#networkWatch.stop();
        for (const t of this.#timers.values()) t.cancel();
        this.#timers.clear();
      },
    };
  }

  /** The machine's time: monotonic, so a wall-clock step is never taken for silence or a deadline. */
  #now(): number {
    return this.#clock.monotonic();
  }

  /** The connection snapshot in wall time, as status shows it. */
  #snapshot(): ConnectionSnapshot {
    return snapshotAtWall(snapshot(this.#state, this.#now()), wallOffset(this.#clock));
  }

  /** A probe result also feeds telemetry (the active leg's) and the diagnostic history (in wall-clock seconds). */
  #recordProbe(legId: string, sample: ProbeSample): void {
    this.#telemetry.current?.onProbe(legId, sample);
    const leg = this.#legs.get(legId)?.leg;
    if (leg !== undefined)
      this.#history.onProbe(
        { legId, gateway: leg.gateway, protocol: leg.kind, active: activeLeg(this.#state)?.id === legId },
        { ...sample, sentAt: wallAt(this.#clock, sample.sentAt) },
      );
  }

  /**
   * Background work the shutdown waits for. A rejection here is handled (logged with its context), never left to
   * reach the top of the daemon as an unhandled rejection; the work's owner reports what it means.
   */
  #track(p: Promise<unknown>): void {
    this.#pending.add(p);
    p.then(
      () => this.#pending.delete(p),
      (err: unknown) => {
        this.#pending.delete(p);
        this.#log.error("background work failed", { err, state: this.#state.name });
      },
    );
  }

  /** Waits until nothing tracked is pending and every leg has stopped (each round bounded by the stops' budgets). */
  async #settle(): Promise<void> {
    for (let i = 0; i < SHUTDOWN_ROUNDS && (this.#pending.size > 0 || this.#legs.size > 0); i++) {
      await Promise.allSettled([...this.#pending, ...this.#legs.stopAll()]);
    }
    if (this.#legs.size > 0) throw new Error(`${String(this.#legs.size)} leg(s) did not stop`);
  }

  /** The tunnel carries a user's traffic (or a drill's): the probes' fast pace (core/connection/pace.ts). */
  #tunnelInUse(): void {
    if (this.#state.name === "connected") this.dispatch({ type: "tunnel-activity", now: this.#now() });
  }

  #run(e: Effect): void {
    const log = this.#log;
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
      case "recheck-leg":
        this.#legs.recheck(e.legId, e.why);
        return;
      case "probe-pace":
        this.#legs.setPace(e.pace);
        return;
      case "apply-routes":
        this.#dataPlane.applyRoutes(e.legId);
        return;
      case "clear-routes":
        this.#dataPlane.clearRoutes();
        return;
      case "set-timer":
        this.#setTimer(e.timer, e.at);
        return;
      case "cancel-timer":
        this.#timers.get(e.timer)?.cancel();
        this.#timers.delete(e.timer);
        return;
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
          // The protected networks and the tunnel's resolvers may have changed with the state (a leg's pushes).
          this.#localNetworks.reconsider(`state ${e.event.state}`);
          this.#dataPlane.refreshKillSwitch();
          this.#captiveOnState(e.event.state);
        }
        // A race started under an older policy may bring up a leg the policy now forbids.
        if (e.event.type === "state" || e.event.type === "race-ended") {
          queueMicrotask(() => moveOffDisallowed(this.#loopView, this.#config, log));
        }
        this.#events.emit(e.event, wallOffset(this.#clock));
        return;
    }
  }

  /**
   * A connect that failed with no gateway answering at all is the typical sign of a captive portal: check the
   * network. A tunnel that came up proves the network open (an open sign-in exception closes).
   */
  #captiveOnState(state: ConnectionStateName): void {
    const c = this.#captive;
    if (c === undefined) return;
    if (state === "connected") c.connected();
    else if (state === "error" && !this.#candidates.reachable().some((x) => x.probe?.answered === true))
      c.connectFailed();
  }

  /**
   * Arms a machine timer for `at` on the monotonic clock, replacing the one armed before. The machine's timers
   * (the dead window above all) are judged after the sockets are read: after an event-loop stall (a busy laptop),
   * Node runs due timers before I/O, and a health check that ran first would call a tunnel dead whose replies are
   * waiting in the socket. A stale timer changes nothing; one that fires early is armed again by the machine.
   */
  #setTimer(timer: TimerId, at: number): void {
    this.#timers.get(timer)?.cancel();
    this.#timers.set(
      timer,
      this.#clock.after(at - this.#now(), () => {
        this.#timers.delete(timer);
        setImmediate(() => {
          if (timer !== "health-check") {
            this.dispatch({ type: "timer", now: this.#now(), timer });
            return;
          }
          // The dead window needs probes that were sent and left unanswered, not just a silent clock.
          const a = activeLeg(this.#state);
          const pendingSentAt = a === null ? undefined : this.#legs.pendingSentAt(a.id);
          this.dispatch({
            type: "timer",
            now: this.#now(),
            timer,
            ...(pendingSentAt === undefined ? {} : { pendingSentAt }),
          });
        });
      }),
    );
  }
}
