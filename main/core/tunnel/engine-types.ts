/**
 * What the connection core knows about one tunnel engine instance: its outcome codes, what a started tunnel
 * reports, its counters and its events. Engines (native/engines) produce these values; the core decides.
 */

export type TunnelProtocol = "wireguard" | "ikev2" | "anyconnect";

/**
 * Why an engine failed to start or stopped working. Stable codes, shown to users through the error catalogue.
 * - timeout: no verdict before the deadline (WireGuard never reports a failed handshake, so it ends here)
 * - unreachable: refused, or no answer at all from the gateway's port
 * - auth-failed: the gateway answered and refused our credentials
 * - identity-mismatch: the gateway is not the one pinned (key, IKE identity or TLS pin differs)
 * - engine-crashed: the engine process died or misbehaved
 * - bad-config: the spec cannot work (invalid value, missing secret, engine rejected its config)
 * - cancelled: the caller aborted; never reported to users as a failure
 */
export type EngineErrorCode =
  "timeout" | "unreachable" | "auth-failed" | "identity-mismatch" | "engine-crashed" | "bad-config" | "cancelled";

export const RETRYABLE: Record<EngineErrorCode, boolean> = {
  timeout: true,
  unreachable: true,
  "auth-failed": false,
  "identity-mismatch": false,
  "engine-crashed": true,
  "bad-config": false,
  cancelled: false,
};

/** What the gateway pushed and the engine was given; the caller applies routes and DNS, never the engine. */
export interface TunnelConfig {
  /** The TUN device carrying the tunnel. */
  ifname: string;
  /** This device's inner addresses, as prefixes (e.g. 198.19.11.2/32). */
  addresses: string[];
  /** Networks the gateway routes for us (split include); empty when it pushed none. */
  routes: string[];
  /** DNS servers the gateway pushed. */
  dns: string[];
  /** Inner MTU, when known. */
  mtu: number | null;
}

/** Epoch milliseconds of each start-up step. */
export interface TunnelTimings {
  spawnedAt: number;
  /** Handshake or authentication done (WireGuard handshake, IKE_SA + CHILD_SA up, CSTP connected). */
  handshakeAt: number | null;
  /** The first reply from the gateway's side came back through the tunnel. */
  firstReplyAt: number;
  /**
   * The round trip of that first reply (the echo's own time): the path's RTT as the leg's proof of life measured
   * it, where the in-tunnel monitor starts from. Absent when the engine could not tell.
   */
  firstReplyRttMs?: number;
}

export interface TunnelUp {
  config: TunnelConfig;
  timings: TunnelTimings;
  /** Engine-specific state worth showing, e.g. { transport: "dtls" } for AnyConnect. */
  detail: Record<string, string>;
}

export interface TunnelStats {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  /** Milliseconds since the engine last heard the gateway, when the engine can tell. */
  lastRxAgoMs: number | null;
  /** e.g. "dtls" or "tls" for AnyConnect; null when the engine has no sub-state. */
  subState: string | null;
}

export type TunnelEvent =
  | { type: "up"; at: number }
  | { type: "down"; at: number; reason: string }
  | { type: "degraded"; at: number; reason: string }
  | { type: "engine-exit"; at: number; code: number | null; signal: string | null; expected: boolean };
