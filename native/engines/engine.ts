/**
 * The one interface every tunnel engine driver implements (WireGuard, IKEv2, AnyConnect), so the connection
 * core can race and supervise them alike. A driver starts, watches and stops one engine instance; it never
 * applies routes or DNS: it reports what the gateway pushed and the caller decides.
 */
import type { Secret } from "../../main/core/secret.ts";
import {
  RETRYABLE,
  type EngineErrorCode,
  type TunnelEvent,
  type TunnelProtocol,
  type TunnelStats,
  type TunnelUp,
} from "../../main/core/tunnel/engine-types.ts";

export interface EngineRuntime {
  /** Run the engine inside this network namespace (the lab); unset when detourd already runs where tunnels belong. */
  netns?: string;
  /** Private folder for this instance (configs, sockets, logs); start creates it, stop removes it. */
  workDir: string;
  /**
   * TUN device name, unique on the host and at most 15 characters (wireguard-go's socket path is host-wide).
   * For IKEv2 it is only a label: kernel-libipsec names its device itself, reported in TunnelUp.config.ifname.
   */
  ifname: string;
}

export interface GatewayEndpoint {
  name: string;
  /** Underlay address the engine connects to. */
  address: string;
}

/** ICMP echo target behind the gateway: start() resolves only once it answers through the tunnel. */
export interface ProbeSpec {
  address: string;
}

interface SpecBase {
  gateway: GatewayEndpoint;
  runtime: EngineRuntime;
  probe: ProbeSpec;
}

export interface WireGuardSpec extends SpecBase {
  protocol: "wireguard";
  params: {
    port: number;
    publicKey: string;
    tunnelAddress: string;
    persistentKeepaliveSec: number;
    allowedIps: string[];
  };
  credentials: { privateKey: Secret };
}

export interface Ikev2Spec extends SpecBase {
  protocol: "ikev2";
  params: {
    port: number;
    natTraversalPort: number;
    remoteId: string;
    proposals: string[];
    espProposals: string[];
    remoteTs: string[];
  };
  credentials: { localId: string; psk: Secret };
}

export interface AnyConnectSpec extends SpecBase {
  protocol: "anyconnect";
  /** dtls false runs openconnect with --no-dtls: a TLS-only leg that costs nothing on UDP-hostile networks. */
  params: { port: number; pin: string; dtls: boolean };
  credentials: { username: string; password: Secret };
}

export type EngineSpec = WireGuardSpec | Ikev2Spec | AnyConnectSpec;

/** What a driver shows of its engine for a diagnostic bundle: state without keys, and the engine's recent output. */
export interface EngineDiagnostics {
  engine: string;
  state: unknown;
  log: string;
}

/** The tunnel device as it is about to carry its first echo: its name and inner address (no prefix length). */
export interface ProbeDevice {
  ifname: string;
  address: string;
}

export interface EngineStartHooks {
  /**
   * Runs once the device has its address and is up, before the first echo is sent; the echo waits for it. The
   * caller routes the device's source address here, so the reply passes a strict reverse-path filter
   * (rp_filter=1). A rejection fails the start.
   */
  beforeProbe?(device: ProbeDevice): Promise<void>;
}

export interface TunnelEngine {
  readonly protocol: TunnelProtocol;
  /** The engine process while it runs (crash drills, diagnostics); null before start and after stop. */
  readonly pid: number | null;
  /**
   * Starts the engine and resolves once a probe reply came back through the tunnel. Rejects with an
   * EngineError; whatever it started is stopped again before it rejects. `deadlineAt` is epoch ms.
   */
  start(deadlineAt: number, signal?: AbortSignal, hooks?: EngineStartHooks): Promise<TunnelUp>;
  /** Orderly shutdown, then by PID; afterwards no process, device, socket, route or file remains. Idempotent. */
  stop(): Promise<void>;
  stats(): Promise<TunnelStats>;
  /** The engine's own view (UAPI dump, VICI list-sas, openconnect's output), bounded in time; never rejects. */
  diagnostics?(): Promise<EngineDiagnostics>;
  /**
   * The underlay path changed (a new address or network): an engine that does not follow by itself re-establishes
   * its session with the same gateway now (openconnect: at once, with its session cookie). wireguard-go roams with
   * its next packet and charon updates its addresses with MOBIKE, so they leave this out.
   */
  roam?(): void;
  /** Subscribes to up/down/degraded/engine-exit; returns the unsubscribe function. */
  onEvent(listener: (e: TunnelEvent) => void): () => void;
}

/** A domain error from an engine: stable code, retryable flag, the engine's own words, and the cause. */
export class EngineError extends Error {
  readonly retryable: boolean;

  constructor(
    readonly code: EngineErrorCode,
    message: string,
    /** The last lines the engine printed (never secrets: engines are not given them on the command line). */
    readonly engineOutput = "",
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "EngineError";
    this.retryable = RETRYABLE[code];
  }
}

export function isEngineError(e: unknown): e is EngineError {
  return e instanceof EngineError;
}

/** Small typed event hub shared by the drivers. */
export class EventHub {
  readonly #listeners = new Set<(e: TunnelEvent) => void>();

  on(listener: (e: TunnelEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  emit(e: TunnelEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // a listener's bug must not break the driver
      }
    }
  }
}
