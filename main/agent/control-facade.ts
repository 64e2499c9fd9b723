/**
 * What detourd offers its control socket, the policy wiring and diagnostics: status, connect, disconnect, the
 * gateway choice, drills, reconfiguration, the start-up warm-up and an orderly shutdown. Each call turns into
 * inputs for the daemon's loop or a read of the modules that keep the state; nothing here decides.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import {
  activeLeg,
  connectionHealth,
  snapshot,
  type MachineContext,
  type MachineState,
} from "../core/connection/machine.ts";
import type {
  Candidate,
  ConnectionEvent,
  ConnectionSnapshot,
  ConnectionStateName,
  DrillResult,
  FailoverRecord,
  MachineInput,
  RaceRecord,
} from "../core/connection/types.ts";
import type { Refusals, RefusedInput } from "../core/net/refusals.ts";
import type { LockdownStateReport } from "../core/lockdown-state.ts";
import type { KillSwitchStatus } from "../core/killswitch.ts";
import type { ConnectPayload, CrashProtection } from "../core/protocol/messages.ts";
import type { DaemonInfo, DnsStatus, LocalNetworksStatus, PathMtuStatus } from "../core/protocol/messages.ts";
import type { TelemetryStatus } from "../core/telemetry/status.ts";
import { atomicWriteFailures } from "../shared/atomic-write.ts";
import type { CandidateRefresh } from "./candidate-refresh.ts";
import type { ConnectionEvents } from "./connection-events.ts";
import { ControlRequestError } from "./control-server.ts";
import type { CaptiveMonitor, CaptiveTrigger } from "./captive.ts";
import type { CaptiveStatus, CaptiveVerdict } from "../core/captive.ts";
import type { DataPlane } from "./data-plane.ts";
import type { DiagInputs } from "./diag/bundle.ts";
import type { DrillRunner } from "./drill.ts";
import type { LegRuntimes } from "./leg-runtime.ts";
import type { Logger } from "./log.ts";
import type { NetworkMemoryStore } from "./network-memory-store.ts";
import type { PathMtuGuard } from "./path-mtu.ts";
import type { NetworkWatchStatus } from "./network-watch.ts";
import { applyConfiguration } from "./policy-change.ts";
import type { TelemetryHandle } from "./telemetry/factory.ts";
import type { TunnelHistory } from "./telemetry/history.ts";
import { tunnelOnlyStatus, type TelemetrySource } from "./telemetry/telemetry.ts";
import { runShutdown, type ShutdownReport, type ShutdownStep } from "./shutdown.ts";
import type { WireGuardSparePool } from "./wireguard-spare-pool.ts";

/** Status lists at most this many reclaimed items (a crashed race leaves a handful). */
const RECOVERY_LIST_MAX = 50;

/** Crash recovery and caught faults, as status shows them. */
export type DaemonRecovery = NonNullable<DaemonInfo["recovery"]>;

/** A shutdown step past this is left behind so the rest (the kill switch last) still run within the exit budget. */
const SHUTDOWN_STEP_MS = 3000;
/** Legs stop in parallel, each within its engine's stop budget (an orderly stop, then SIGKILL after 3 s). */
const SHUTDOWN_LEGS_MS = 8000;

/** The daemon's loop as the facade drives it. */
export interface DaemonLoop {
  state(): MachineState;
  readonly ctx: MachineContext;
  /** The machine's time (monotonic). */
  now(): number;
  /** The connection snapshot in wall time. */
  snapshot(): ConnectionSnapshot;
  dispatch(input: MachineInput): void;
  track(p: Promise<unknown>): void;
  /** Whether user traffic into a tunnel is seen (policy-change.ts machinePolicy). */
  readonly seesTunnelTraffic: boolean;
  /** Waits (bounded) until nothing tracked is pending and every leg has stopped. */
  settle(): Promise<void>;
  /** Cancels every machine timer. */
  stopTimers(): void;
}

export interface ControlParts {
  loop: DaemonLoop;
  config(): DetourConfig;
  setConfig(config: DetourConfig): void;
  info: { version: string; configPath: string; resolvConf: string; startedAt: number };
  wallNow(): number;
  legs: LegRuntimes;
  candidates: CandidateRefresh;
  events: ConnectionEvents;
  dataPlane: DataPlane;
  spares: WireGuardSparePool;
  networkMemory: NetworkMemoryStore;
  /** The network monitor and sleep detector (network-watch.ts), started with the warm-up. */
  networkWatch?: { start(): void; status(): NetworkWatchStatus };
  /** Subscribes to the network monitor's changes (not the first look, nor going offline); returns the unsubscribe. */
  onNetworkChange?(listener: () => void): () => void;
  telemetry: TelemetryHandle;
  drills: DrillRunner;
  history: TunnelHistory;
  /** What was refused from the network (gateway addresses, pushes). */
  refusals: Refusals;
  /** The lockdown state recorded for the early-boot step (lockdown-state-store.ts). */
  lockdownState(): LockdownStateReport;
  /** Captive-network checks and the sign-in exception (captive.ts); absent from a daemon without a captive probe. */
  captive?: CaptiveMonitor;
  /** What the start-up reclaim did and how the ownership record's writes fare (status). */
  ownership?: {
    readonly reclaimed: {
      removed: string[];
      failed: string[];
      recordError: string | null;
      previousConnectIntent: boolean;
    };
    readonly writeFailures: number;
    readonly lastWriteError: string | null;
    /** Whether a crash now would be resumed with the kill switch held (ownership.ts). */
    crashProtection?(): CrashProtection;
    /** Whether a connection is wanted, for a successor after a crash (ownership.ts). */
    setConnectIntent(wanted: boolean): void;
  };
  /** Path MTU checks and the MSS clamp; null or absent on a platform without them. */
  pathMtu?: PathMtuGuard | null;
  /** Allow local network access (local-network-access.ts), started with the warm-up. */
  localNetworks?: { start(): void; stop(): void; status(): LocalNetworksStatus };
  log: Logger;
}

export type DaemonStatus = ConnectionSnapshot & {
  gatewayChoice: string | null;
  network: ReturnType<NetworkMemoryStore["network"]> & { monitor?: NetworkWatchStatus };
  telemetry: TelemetryStatus;
  daemon: {
    version: string;
    pid: number;
    startedAt: number;
    configPath: string;
    recovery: DaemonRecovery;
    memory: NonNullable<DaemonInfo["memory"]>;
  };
  lastDrill: DrillResult | null;
  refused: RefusedInput[];
  lockdownState: LockdownStateReport;
  killSwitch: KillSwitchStatus;
  dns: DnsStatus;
  pathMtu?: PathMtuStatus;
  captive?: CaptiveStatus;
  localNetworks?: LocalNetworksStatus;
};

/** The active leg's in-tunnel numbers over the health window. */
export function tunnelHealth(loop: Pick<DaemonLoop, "state" | "now" | "ctx">): ReturnType<TelemetrySource["health"]> {
  const h = connectionHealth(loop.state(), loop.now(), loop.ctx);
  return h === null
    ? null
    : { rttP50Ms: h.rttP50Ms, rttP95Ms: h.rttP95Ms, jitterMs: h.jitterMs, lossPct: h.lossPct, samples: h.samples };
}

/** What telemetry reads of the connection: its state, the active leg, its health and its engine's counters. */
export function telemetrySource(
  loop: Pick<DaemonLoop, "state" | "now" | "ctx">,
  legs: () => LegRuntimes,
): TelemetrySource {
  const active = (): { legId: string; gateway: string; protocol: Candidate["kinds"][number] } | null => {
    const a = activeLeg(loop.state());
    return a === null ? null : { legId: a.id, gateway: a.gateway, protocol: a.kind };
  };
  return {
    state: () => loop.state().name,
    active,
    health: () => tunnelHealth(loop),
    engineStats: async () => {
      const a = active();
      const rt = a === null ? undefined : legs().get(a.legId);
      if (rt?.up == null) return null;
      return rt.engine.stats().catch(() => null);
    },
  };
}

export class ControlFacade {
  readonly #p: ControlParts;
  #faults = 0;
  #lastFault: string | null = null;

  constructor(parts: ControlParts) {
    this.#p = parts;
  }

  status(): DaemonStatus {
    const p = this.#p;
    return {
      ...p.loop.snapshot(),
      gatewayChoice: p.candidates.choice,
      network: {
        ...p.networkMemory.network(),
        ...(p.networkWatch === undefined ? {} : { monitor: p.networkWatch.status() }),
      },
      telemetry: p.telemetry.current?.status() ?? tunnelOnlyStatus(tunnelHealth(p.loop)),
      daemon: {
        version: p.info.version,
        pid: process.pid,
        startedAt: p.info.startedAt,
        configPath: p.info.configPath,
        recovery: this.recovery(),
        memory: daemonMemory(),
      },
      lastDrill: p.drills.last,
      refused: p.refusals.list(),
      lockdownState: p.lockdownState(),
      killSwitch: p.dataPlane.killSwitchStatus(),
      dns: p.dataPlane.dnsStatus(),
      ...(p.pathMtu == null ? {} : { pathMtu: p.pathMtu.status() }),
      ...(p.captive === undefined ? {} : { captive: p.captive.status() }),
      ...(p.localNetworks === undefined ? {} : { localNetworks: p.localNetworks.status() }),
    };
  }

  /** The connection's state name (cheaper than status, for the trusted-network monitor's polls). */
  connectionState(): ConnectionStateName {
    return this.#p.loop.state().name;
  }

  /** The network memory's key for the network the device is on (null: not identified yet). */
  networkKey(): string | null {
    return this.#p.networkMemory.network().id;
  }

  /** The path of the resolv.conf that describes the network the device is on (the original while the tunnel's is in force). */
  networkResolvConfPath(): string {
    return this.#p.dataPlane.networkResolvConf();
  }

  /** A failover drill (main/agent/drill.ts): blocks the active gateway for this host, measures, lifts the block. */
  drill(request: { slaMs?: number | undefined }): Promise<DrillResult> {
    return this.#p.drills.run(request);
  }

  /** Flushes measured telemetry into the spool now (tests, and before a diagnostic bundle). */
  async flushTelemetry(): Promise<void> {
    await this.#p.telemetry.current?.flush();
  }

  /** The candidates with their latest probe results (discovery keeps them fresh in the background). */
  candidates(): Candidate[] {
    return this.#p.candidates.list();
  }

  lastRace(): RaceRecord | null {
    return this.#p.events.lastRace;
  }

  lastFailover(): FailoverRecord | null {
    return this.#p.events.lastFailover;
  }

  recorder(): ConnectionEvent[] {
    return this.#p.events.recorder();
  }

  subscribe(listener: (e: ConnectionEvent) => void): () => void {
    return this.#p.events.subscribe(listener);
  }

  /** What a diagnostic bundle is built from (main/agent/diag/bundle.ts redacts it). */
  diagInputs(): Omit<DiagInputs, "logTail" | "logFile"> {
    const p = this.#p;
    const now = p.wallNow();
    const status = this.status();
    return {
      now,
      version: p.info.version,
      deviceId: p.telemetry.deviceId(),
      policyHash: p.telemetry.policyHash(p.config()),
      status,
      events: this.recorder(),
      probeSeconds: p.history.probeSeconds(),
      samples: p.history.samples(now),
      candidates: this.candidates(),
      config: p.config(),
      configPath: p.info.configPath,
      resolvConf: p.info.resolvConf,
      startedAt: p.info.startedAt,
      engines: p.legs.all().map((rt) => ({
        legId: rt.leg.id,
        gateway: rt.leg.gateway,
        kind: rt.leg.kind,
        role:
          status.activeLegId === rt.leg.id
            ? "active"
            : status.standby?.legId === rt.leg.id
              ? "standby"
              : rt.up === null
                ? "starting"
                : "other",
        diagnostics: () =>
          rt.engine.diagnostics?.() ?? Promise.resolve({ engine: rt.engine.protocol, state: null, log: "" }),
      })),
    };
  }

  /**
   * Discovery, port probes and the network's identity in the background, before the first connect; and the
   * block of a drill a previous detourd died in is lifted.
   */
  warmUp(): void {
    const p = this.#p;
    p.spares.warmUp();
    p.dataPlane.watchKillSwitch();
    p.dataPlane.stage();
    p.telemetry.start();
    p.loop.track(p.drills.clearLeftover());
    p.loop.track(p.candidates.discover());
    p.loop.track(p.networkMemory.refresh());
    p.networkWatch?.start();
    p.localNetworks?.start();
    // A captive network found at start says "Sign in to this network" before the user even tries to connect.
    if (p.captive !== undefined) p.loop.track(p.captive.check("start"));
  }

  /**
   * Starts connecting and resolves once the kill switch for connecting is in force. The race starts at once:
   * its own packets go to gateway endpoints, which the kill switch allows anyway, so failing closed costs the
   * attempt no time. The answer says whether the kill switch went in: "in-force" guarantees that nothing leaves
   * outside a tunnel from then on; "fallback" that everything but detourd's own traffic is blocked; "failed" that
   * nothing can be relied on.
   */
  async connect(): Promise<ConnectPayload> {
    const p = this.#p;
    p.captive?.userConnected();
    let inForce: Promise<void> = Promise.resolve();
    await p.dataPlane.whileConnectPending(async () => {
      p.dataPlane.refreshKillSwitch("resolving");
      inForce = new Promise<void>((resolve) => {
        p.dataPlane.op(() => {
          resolve();
          return Promise.resolve();
        });
      });
      p.dataPlane.stage();
      // Which network this is decides which leg goes first.
      await p.networkMemory.settleForConnect();
      p.loop.dispatch({ type: "connect", now: p.loop.now() });
    });
    p.ownership?.setConnectIntent(true);
    await inForce;
    const crashProtection = p.ownership?.crashProtection?.();
    return {
      killSwitch: p.dataPlane.killSwitchStatus(),
      ...(crashProtection === undefined ? {} : { crashProtection }),
    };
  }

  /**
   * Chooses the gateway to connect to (null: automatic, every candidate by ranking) and returns the choice. A
   * chosen gateway is the only candidate the machine is given, so races and failovers stay on it (across its
   * protocols); if the tunnel is up or coming up elsewhere, it reconnects at once so the choice takes effect.
   */
  setGateway(gateway: string | null): string | null {
    const p = this.#p;
    if (gateway !== null && !this.candidates().some((c) => c.name === gateway)) {
      throw new ControlRequestError(
        `no gateway named "${gateway}"; candidates: ${this.candidates()
          .map((c) => c.name)
          .join(", ")}`,
      );
    }
    const changed = gateway !== p.candidates.choice;
    p.candidates.choice = gateway;
    p.log.info("gateway choice", { gateway: gateway ?? "automatic" });
    const state = snapshot(p.loop.state(), p.loop.now());
    const elsewhere = gateway !== null && state.gateway !== null && state.gateway !== gateway;
    if (state.state !== "disconnected" && (elsewhere || (changed && state.state !== "connected"))) {
      p.loop.dispatch({ type: "disconnect", now: p.loop.now() });
      this.connect().catch((err: unknown) => {
        this.#p.log.error("reconnect to the chosen gateway failed", { err });
      });
    }
    return gateway;
  }

  /** What crash recovery found at start, the ownership record's write failures and the faults caught at the top. */
  recovery(): DaemonRecovery {
    const o = this.#p.ownership;
    return {
      reclaimed: o?.reclaimed.removed.slice(0, RECOVERY_LIST_MAX) ?? [],
      reclaimFailed: o?.reclaimed.failed.slice(0, RECOVERY_LIST_MAX) ?? [],
      recordError: o?.reclaimed.recordError ?? null,
      resumedConnection: o?.reclaimed.previousConnectIntent ?? false,
      recordWriteFailures: o?.writeFailures ?? 0,
      lastRecordWriteError: o?.lastWriteError ?? null,
      ...(o?.crashProtection === undefined ? {} : { crashProtection: o.crashProtection() }),
      faults: this.#faults,
      lastFault: this.#lastFault,
      dnsRestoreError: this.#p.dataPlane.dnsRestoreError,
      ...atomicWriteFailures(),
    };
  }

  /**
   * An exception or rejection that reached the top of detourd (detourd.ts): counted in status and reported to
   * the collector, beside the log line detourd.ts writes with its context.
   */
  reportFault(kind: "unhandled-rejection" | "uncaught-exception", err: unknown): void {
    this.#faults += 1;
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    this.#lastFault = `${kind}: ${message}`.slice(0, 500);
    try {
      this.emitTelemetry("detour.daemon.fault", { kind, message: message.slice(0, 500) }, { kind });
    } catch {
      // the fault is in status and the log either way
    }
  }

  disconnect(): void {
    const p = this.#p;
    p.loop.dispatch({ type: "disconnect", now: p.loop.now() });
    p.ownership?.setConnectIntent(false);
    // The next connect may be on another network (a laptop moves while disconnected).
    p.loop.track(p.networkMemory.refresh(p.dataPlane.settled()));
  }

  /**
   * Disconnects and waits (bounded by the engines' own stop budgets) until every leg is down, then takes down
   * what detourd put in place. Each step is guarded and bounded (shutdown.ts): a failure or hang is logged and
   * reported, and the next step still runs; the kill switch goes last, whatever failed before it (and stays, under
   * lockdown: the host remains fail-closed after detourd exits).
   */
  async shutdown(): Promise<ShutdownReport> {
    const p = this.#p;
    const steps: ShutdownStep[] = [
      { name: "stopping the wireguard spare", budgetMs: SHUTDOWN_STEP_MS, run: () => p.spares.shutdown() },
      { name: "ending the drill", budgetMs: SHUTDOWN_STEP_MS, run: () => p.drills.stop() },
      {
        name: "disconnecting",
        budgetMs: SHUTDOWN_STEP_MS,
        run: () => {
          this.disconnect();
        },
      },
      { name: "stopping the legs", budgetMs: SHUTDOWN_LEGS_MS, run: () => p.loop.settle() },
      {
        name: "stopping timers",
        budgetMs: SHUTDOWN_STEP_MS,
        run: () => {
          p.loop.stopTimers();
          p.candidates.stop();
          p.captive?.stop();
          p.localNetworks?.stop();
        },
      },
      {
        name: "clearing the protected routes",
        budgetMs: SHUTDOWN_STEP_MS,
        run: () => p.dataPlane.clearRoutesForExit(),
      },
      {
        name: "restoring resolv.conf",
        budgetMs: SHUTDOWN_STEP_MS,
        run: () => {
          p.dataPlane.restoreDnsForExit();
        },
      },
      {
        name: "removing the TCP MSS clamp",
        budgetMs: SHUTDOWN_STEP_MS,
        run: () => p.pathMtu?.shutdown(),
      },
      // Events of the disconnect itself are spooled; whatever the collector did not get yet waits on disk.
      { name: "stopping telemetry", budgetMs: SHUTDOWN_STEP_MS, run: () => p.telemetry.shutdown() },
    ];
    const last: ShutdownStep = p.config().lockdown
      ? {
          name: "keeping the kill switch (lockdown)",
          budgetMs: SHUTDOWN_STEP_MS,
          run: () => p.dataPlane.keepKillSwitch(),
        }
      : { name: "removing the kill switch", budgetMs: SHUTDOWN_STEP_MS, run: () => p.dataPlane.removeKillSwitch() };
    return runShutdown(steps, last, p.log);
  }

  /**
   * Checks the network for a captive portal now (the network monitor calls this on a path change); resolves with
   * the verdict, or null on a daemon without captive checks.
   */
  /** Calls `listener` on every network change the monitor reports (a new network, or one back); returns the stop. */
  onNetworkChange(listener: () => void): () => void {
    return this.#p.onNetworkChange?.(listener) ?? (() => undefined);
  }

  captiveCheck(trigger: CaptiveTrigger): Promise<CaptiveVerdict | null> {
    return this.#p.captive?.check(trigger) ?? Promise.resolve(null);
  }

  /**
   * Puts the kill switch for the current state in force: while connecting, failing over, in error (and while
   * disconnected under lockdown) only the candidates' gateway endpoints and the discovery resolvers may be
   * reached on the underlay, and protected networks only ever leave through a tunnel device.
   */
  refreshKillSwitch(stateOverride?: ConnectionStateName): void {
    this.#p.dataPlane.refreshKillSwitch(stateOverride);
  }

  /**
   * Puts a new effective configuration in force (policy-change.ts). Returns whether the active leg was moved
   * off because the configuration no longer allows it.
   */
  reconfigure(config: DetourConfig): boolean {
    const p = this.#p;
    const before = p.config();
    p.setConfig(config);
    return applyConfiguration(
      { machine: p.loop, candidates: p.candidates, dataPlane: p.dataPlane, telemetry: p.telemetry, log: p.log },
      before,
      config,
    );
  }

  /** Reports a daemon event (policy applied or rejected) to the collector, when telemetry is configured. */
  emitTelemetry(name: string, body: unknown, attrs: Record<string, string | number | boolean> = {}): void {
    this.#p.telemetry.current?.emitEvent(name, body, attrs);
  }
}

/** The four figures of process.memoryUsage() that tell warm-up from a leak. */
function daemonMemory(): NonNullable<DaemonInfo["memory"]> {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}
