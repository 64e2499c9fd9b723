/**
 * The vocabulary of the connection core: legs, candidates, race records, the inputs the daemon feeds the
 * state machine and the effects it gets back. Pure data; time is always an input, in milliseconds of the daemon's
 * monotonic clock (it never jumps); the daemon shifts records to wall time where people read them (wall-time.ts).
 */
import type { KillSwitchChange, KillSwitchStatus } from "../killswitch-status.ts";
import type { IpFamily } from "../ip-address.ts";
import type { EngineErrorCode, TunnelConfig } from "../tunnel/engine-types.ts";

/** One way to reach a gateway: WireGuard, IKEv2, or AnyConnect with or without DTLS. */
export type LegKind = "wireguard" | "ikev2" | "anyconnect-tls" | "anyconnect-dtls";
export const LEG_KINDS: readonly LegKind[] = ["wireguard", "ikev2", "anyconnect-tls", "anyconnect-dtls"];

/** A leg is a gateway plus a way to reach it. `id` is unique for the daemon's lifetime (e.g. "L17"). */
export interface Leg {
  id: string;
  gateway: string;
  kind: LegKind;
}

export type CandidateSource = "config" | "dns" | "portal";

/** Result of probing one candidate's ports from outside the tunnel. */
export interface CandidateProbe {
  at: number;
  /** Best round trip of the probes that answered (TCP connect or TLS handshake to 443), null if none did. */
  latencyMs: number | null;
  /** Per leg kind: reachable, unreachable, or unknown (UDP protocols that cannot be probed without a handshake). */
  reachable: Partial<Record<LegKind, "yes" | "no" | "unknown">>;
  /**
   * The address these results are for: with both families known, the one address-family.ts's policy chose
   * (the daemon makes it the candidate's `address`). Absent when the candidate had no address.
   */
  address?: string;
  /** What each family's probe saw, when the candidate has addresses of both (diagnostics, status). */
  families?: Partial<Record<IpFamily, FamilyProbe>>;
  /**
   * Whether the gateway's host answered the probe at all on some family (a TCP SYN-ACK or RST, or a TLS
   * handshake). False is the "no answer" that ranks a gateway after the ones that answered; absent: not known.
   */
  answered?: boolean;
}

/** One address family's outside-the-tunnel probe of a candidate. */
export interface FamilyProbe {
  address: string;
  /** The gateway's host answered on this family (a TCP SYN-ACK or RST): the path works. */
  works: boolean;
  /** TCP connect time (or time to the RST), null after silence. */
  latencyMs: number | null;
  /** How many of the candidate's leg kinds this family's probe did not rule out ("yes" or "unknown"). */
  usableKinds: number;
}

/** Every underlay address known for a gateway, one per family (configured, or DNS A/AAAA, or the portal's). */
export interface CandidateAddresses {
  ipv4: string | null;
  ipv6: string | null;
}

export interface Candidate {
  name: string;
  hostname: string;
  /** Underlay address legs connect to, once known (configured, or resolved): one of `addresses`. */
  address: string | null;
  /** Both families' addresses when discovery found them; absent means `address` is the only one. */
  addresses?: CandidateAddresses;
  priority: number;
  region: string;
  kinds: LegKind[];
  sources: CandidateSource[];
  probe: CandidateProbe | null;
}

export type LegOutcome = "pending" | "starting" | "won" | "failed" | "cancelled" | "lost";

export interface LegRecord {
  leg: Leg;
  outcome: LegOutcome;
  startedAt: number | null;
  endedAt: number | null;
  /** For failed legs: the engine's error code and message. */
  error: { code: EngineErrorCode; message: string } | null;
}

export interface RaceRecord {
  id: string;
  /** "standby" races raise the warm standby; they never move traffic by themselves. */
  reason: "connect" | "failover" | "recover" | "retry" | "standby";
  startedAt: number;
  endedAt: number | null;
  winner: Leg | null;
  legs: LegRecord[];
}

export interface FailoverRecord {
  from: { gateway: string; kind: LegKind };
  to: { gateway: string; kind: LegKind } | null;
  reason: string;
  /** How traffic moved: onto the warm standby (a route change), or onto the winner of a race. */
  via: "standby" | "race";
  /** When the last reply through the failed tunnel arrived (the start of the outage). */
  lastReplyAt: number;
  detectedAt: number;
  restoredAt: number | null;
  /** detectedAt - lastReplyAt */
  detectedAfterMs: number;
  /** restoredAt - lastReplyAt: how long traffic was cut off */
  restoredAfterMs: number | null;
}

/**
 * A failover drill (main/core/drill.ts, main/agent/drill.ts): the active gateway was made unusable for this
 * client only, and this is how long detection and restoration took, against the SLA. Times are epoch ms (the
 * drill runner measures on the monotonic clock and reports in wall time);
 * durations are measured from `blockedAt`, by the drill itself, not taken from the machine's FailoverRecord.
 */
export interface DrillResult {
  /** "D1", "D2", ... unique for the daemon's lifetime. */
  id: string;
  startedAt: number;
  endedAt: number;
  slaMs: number;
  /** refused: the drill did not run (nothing was blocked); fail: it ran and the SLA was not shown to be met. */
  verdict: "pass" | "fail" | "refused";
  /** One sentence: why it failed or was refused, or what passed. */
  reason: string;
  /** The gateway and leg that were active, and blocked. */
  from: { gateway: string; kind: LegKind } | null;
  /** Where the daemon moved the tunnel, if it did. */
  to: { gateway: string; kind: LegKind } | null;
  /** When the block was requested (measurements start here) and when it was lifted again. */
  blockedAt: number | null;
  liftedAt: number | null;
  /** When detourd noticed the failure (it left the connected state). */
  detectedAt: number | null;
  detectedAfterMs: number | null;
  /** When the first reply came back over the host's own routes after the block: users' traffic flows again. */
  restoredAt: number | null;
  /** restoredAt - blockedAt: how long users were cut off. */
  restoredAfterMs: number | null;
  /** The drill's own probes over the host's routes: sent after the block until restoration, and of those unanswered. */
  probesSent: number;
  probesLost: number;
  /** detourd's own record of the failover (measured from its last in-tunnel reply), for comparison. */
  failover: FailoverRecord | null;
}

/** One in-tunnel probe result; rttMs null means no reply came in time. */
export interface ProbeSample {
  seq: number;
  sentAt: number;
  rttMs: number | null;
  /** A reply after the probe was already reported lost (its timeout passed): the same probe again, answered late. */
  late?: boolean;
}

export type HealthVerdict =
  | { state: "healthy" }
  | { state: "dead"; reason: string; lastReplyAt: number }
  | { state: "brownout"; reason: string; lastReplyAt: number };

export type ConnectionStateName =
  | "disconnected"
  | "resolving"
  | "racing"
  | "connected"
  | "failing-over"
  | "error"
  /** A connect is wanted but no route leads toward any gateway: nothing runs until one appears. */
  | "waiting-for-network";

/** What the network monitor said: the path toward the gateways moved, went away, or came (back). */
export type NetworkInputKind = "online" | "offline" | "path-changed";

/** What the daemon tells the machine. */
export type MachineInput =
  | { type: "connect"; now: number }
  | { type: "disconnect"; now: number }
  /**
   * A due timer. For "health-check", `pendingSentAt` is when the active leg's prober sent its oldest probe after the
   * newest answered one that is still in flight (null: none in flight); left out, silence alone is judged.
   */
  | { type: "timer"; now: number; timer: TimerId; pendingSentAt?: number | null }
  | { type: "candidates"; now: number; candidates: Candidate[] }
  | {
      type: "leg-up";
      now: number;
      legId: string;
      config: TunnelConfig;
      firstReplyAt: number;
      /** The path's round trip as the leg's proof of life measured it (TunnelTimings.firstReplyRttMs). */
      pathRttMs?: number | null;
    }
  | { type: "leg-failed"; now: number; legId: string; code: EngineErrorCode; message: string }
  /** The engine itself reported the tunnel down or exited. */
  | { type: "leg-down"; now: number; legId: string; reason: string }
  | { type: "probe"; now: number; legId: string; sample: ProbeSample }
  /**
   * The underlay changed (the network monitor): distinct from a gateway that stopped answering. `initial` is the
   * monitor's first look (how the network was found at start), which changes no tunnel.
   */
  | { type: "network"; now: number; change: NetworkInputKind; detail: string; initial?: boolean }
  /** The daemon was not running for a while (a suspend and resume, or the process frozen): `sleptMs` long. */
  | { type: "wake"; now: number; sleptMs: number }
  /** User traffic went into a tunnel (at most about once a second while it flows): the probes' pace (pace.ts). */
  | { type: "tunnel-activity"; now: number };

export type TimerId =
  "race-stagger" | "backoff" | "health-check" | "recheck-candidates" | "standby" | "standby-stagger";

/** What the machine asks the daemon to do. The daemon runs them in order and reports back as inputs. */
export type Effect =
  | { type: "resolve-candidates" }
  | { type: "start-leg"; leg: Leg; deadlineAt: number }
  | { type: "stop-leg"; legId: string }
  /** Starts (or restarts, at the role's rate) the in-tunnel probes of a leg that is up. */
  | { type: "start-monitor"; legId: string; role: "active" | "standby" }
  | { type: "stop-monitor"; legId: string }
  /** Every monitor, running or started later, probes at its role's interval for this pace (pace.ts). */
  | { type: "probe-pace"; pace: "fast" | "slow" }
  /**
   * Check a leg that is up at once after a path change or a wake: an immediate burst of in-tunnel probes, and on a
   * path change the engine is told (openconnect reconnects with its session cookie; wireguard-go and charon with
   * MOBIKE follow the new address by themselves).
   */
  | { type: "recheck-leg"; legId: string; why: "path-changed" | "wake" }
  /** Route the protected networks through this leg's device (atomic swap from any previous leg). */
  | { type: "apply-routes"; legId: string }
  | { type: "clear-routes" }
  | { type: "set-timer"; timer: TimerId; at: number }
  | { type: "cancel-timer"; timer: TimerId }
  | { type: "record-race"; race: RaceRecord }
  | { type: "record-failover"; failover: FailoverRecord }
  | { type: "notify"; event: ConnectionEvent };

/** What subscribers (CLI, tray) are told; also the flight recorder's entries. */
export type ConnectionEvent =
  | { type: "state"; at: number; state: ConnectionStateName; detail: string }
  | { type: "race-started"; at: number; raceId: string; reason: RaceRecord["reason"]; legs: Leg[] }
  | { type: "leg"; at: number; raceId: string; record: LegRecord }
  | { type: "race-ended"; at: number; race: RaceRecord }
  | { type: "failover"; at: number; failover: FailoverRecord }
  | { type: "health"; at: number; legId: string; verdict: HealthVerdict }
  | { type: "drill"; at: number; drill: DrillResult }
  /** The kill switch failed, fell back, recovered or was restored after someone else changed it (daemon, wall time). */
  | { type: "kill-switch"; at: number; change: KillSwitchChange; status: KillSwitchStatus; detail: string }
  /** A tunnel's path MTU: lowered after a black hole, a black hole with no usable size, a failed step (daemon, wall time). */
  | PathMtuEvent
  /**
   * Crash protection lost (no copy of the ownership record holds the wanted connection: a crash now lifts the kill
   * switch) or back in force (daemon, wall time); the detail names the files and the system's codes.
   */
  | { type: "crash-protection"; at: number; inForce: boolean; detail: string };

/** What happened to a tunnel's path MTU or the TCP MSS clamp. */
export type PathMtuChange = "lowered" | "black-hole" | "lower-failed" | "clamp-failed";
export const PATH_MTU_CHANGES: readonly PathMtuChange[] = ["lowered", "black-hole", "lower-failed", "clamp-failed"];

export interface PathMtuEvent {
  type: "path-mtu";
  at: number;
  legId: string;
  gateway: string;
  protocol: LegKind;
  /** The tunnel device. */
  ifname: string;
  change: PathMtuChange;
  /** The device's MTU before, and after (null when it did not change). */
  from: number | null;
  to: number | null;
  detail: string;
}

/** What `detour status --json` shows of the connection. */
export interface ConnectionSnapshot {
  state: ConnectionStateName;
  /** One human sentence: what is happening and why. */
  summary: string;
  gateway: string | null;
  protocol: LegKind | null;
  activeLegId: string | null;
  /** The warm standby tunnel, while one is up. */
  standby: { gateway: string; protocol: LegKind; legId: string; lastReplyAt: number | null } | null;
  since: number | null;
  candidates: Candidate[];
  lastRace: RaceRecord | null;
  lastFailover: FailoverRecord | null;
  error: { reason: string; nextRetryAt: number | null } | null;
}
