/**
 * The telemetry vocabulary shared by the agent (which sends it) and the collector (which stores and charts it):
 * metric names, event names, attribute keys and the ingest contract's batch header. Defined once, so the
 * agent's exporter and the collector cannot drift apart. Units are in the comments.
 */

/** Resource attributes: who sent a batch. No user names, host names or secrets: a device is a random id. */
export const RESOURCE = {
  serviceName: "service.name",
  serviceVersion: "service.version",
  /** A stable, non-personal id of the device (the agent's install id). Required by the collector. */
  deviceId: "detour.device.id",
  organisation: "detour.organisation",
  /** Hash of the effective policy the agent runs, so IT can see which devices run an old one. */
  policyHash: "detour.policy.hash",
  os: "os.type",
  /**
   * The id of an export batch, unique per device and stable across re-deliveries: the collector's idempotency
   * and replay key (main/collector/ingest-contract.ts). The agent sends it as BATCH_HEADER; a sender whose
   * resource can carry it per batch may put it here instead.
   */
  batchId: "detour.batch.id",
} as const;

/** service.name of the agent. */
export const AGENT_SERVICE_NAME = "detourd";
export const SERVICE_NAME = AGENT_SERVICE_NAME;

/**
 * The ingest contract's idempotency key as a header: `<device id>:<spool sequence>`. Sequences only grow on a
 * device (they survive restarts), so a collector that stores each key once turns the agent's at-least-once
 * retries into exactly-once records.
 */
export const BATCH_HEADER = "x-detour-batch-id";

/** Metric names. Tunnel metrics carry POINT_ATTRIBUTES.gateway and .protocol of the tunnel they measure. */
export const METRIC = {
  /** Histogram, ms: every in-tunnel probe's round trip through the active tunnel. */
  rtt: "detour.tunnel.rtt",
  /** Gauge, ms: variation of the probe round-trip time over the health window. */
  jitter: "detour.tunnel.jitter",
  /** Gauge, percent (0-100): probes lost over the health window. */
  loss: "detour.tunnel.loss",
  /** Gauges, bytes: received and sent through the tunnel since it came up (from the engine). */
  rxBytes: "detour.tunnel.rx_bytes",
  txBytes: "detour.tunnel.tx_bytes",
} as const;

export type MetricName = (typeof METRIC)[keyof typeof METRIC];
/** The metrics the collector stores and charts; the agent's others are accepted and reported as not stored. */
export const METRIC_NAMES: readonly MetricName[] = Object.values(METRIC);

/** Further metrics the agent sends (for an organisation's own OpenTelemetry backend; the collector skips them). */
export const AGENT_METRIC = {
  /** Gauges over the health window, ms. */
  rttP50: "detour.tunnel.rtt.p50",
  rttP95: "detour.tunnel.rtt.p95",
  /** Counter: in-tunnel probes by result ("reply", "lost", or "late": a reply after the probe was counted lost). */
  probes: "detour.tunnel.probes",
  /** Gauge, s: how long ago the engine last heard the gateway (WireGuard handshake, IKE traffic, DPD). */
  lastHeard: "detour.tunnel.last_heard",
  /** Gauge, 1 while in that state, with attributes state, gateway and protocol. */
  state: "detour.connection.state",
  /** Counter: races by reason and outcome; histogram, ms: how long a race took. */
  races: "detour.race.count",
  raceDuration: "detour.race.duration",
  /** Counter: failed legs by protocol and error code. */
  legFailures: "detour.leg.failures",
  /** Counter: failovers by cause and path (standby or race); histograms, ms: detection and restoration. */
  failovers: "detour.failover.count",
  failoverDetected: "detour.failover.detected",
  failoverRestored: "detour.failover.restored",
  /** Application reachability through the tunnel: histogram (ms) and counter by result ("ok" or "fail"). */
  appLatency: "detour.app.latency",
  appChecks: "detour.app.checks",
  /** Device health: utilisation in % (systeminformation) and the count of interfaces other than loopback with an address. */
  hostCpu: "detour.host.cpu.utilization",
  hostMemory: "detour.host.memory.utilization",
  hostDisk: "detour.host.disk.utilization",
  hostInterfacesUp: "detour.host.interfaces.up",
  /** The spool itself: records waiting, dropped past the bound, refused by the collector. */
  spoolPending: "detour.telemetry.spool.pending",
  spoolDropped: "detour.telemetry.spool.dropped",
  spoolRejected: "detour.telemetry.spool.rejected",
  /**
   * Counter: kill-switch changes by outcome (apply-failed, fallback, failed, in-force, restored, remove-failed,
   * watcher-restarted) and the state after it (in-force, fallback, failed, off).
   */
  killSwitch: "detour.killswitch.changes",
  /**
   * Counter: path MTU changes by outcome (lowered, black-hole, lower-failed, clamp-failed) and protocol: full-size
   * packets that vanished on a tunnel's path while small ones passed.
   */
  pathMtu: "detour.mtu.changes",
} as const;

/** Data point attributes. */
export const POINT_ATTRIBUTES = {
  gateway: "detour.gateway",
  protocol: "detour.protocol",
} as const;

/**
 * Log events: the name travels in the log record's event_name field and in the attribute `event.name`; the
 * collector accepts either. Bodies are the event as JSON.
 */
export const EVENT = {
  /** The agent moved its traffic from one tunnel to another. Attributes: FAILOVER_ATTRIBUTES. */
  failover: "detour.failover",
  /** The agent's connection state changed. Attributes: STATE_ATTRIBUTES. */
  state: "detour.state",
  race: "detour.race",
  health: "detour.health",
  drill: "detour.drill",
  policy: "detour.policy",
  /** The kill switch failed, fell back, recovered, or was restored after other software changed it. */
  killSwitch: "detour.killswitch",
  /** A tunnel's MTU was lowered after a black hole, no usable size crossed, or the MSS clamp failed. */
  pathMtu: "detour.mtu",
  /** Crash protection lost (the connect intent could not be written to any copy of the record) or back in force. */
  crashProtection: "detour.crash_protection",
} as const;

export const EVENT_NAME_ATTRIBUTE = "event.name";

export const FAILOVER_ATTRIBUTES = {
  /** Gateway name the agent failed away from. */
  from: "detour.failover.from",
  fromProtocol: "detour.failover.from_protocol",
  /** Gateway name it moved to; absent when no gateway was left. */
  to: "detour.failover.to",
  toProtocol: "detour.failover.to_protocol",
  /** Why: the machine's reason string (e.g. "dead: no reply for 0.3 s", "brownout: loss 20% over 5 s"). */
  reason: "detour.failover.reason",
  /** How traffic moved: "standby" (a route change) or "race". */
  via: "detour.failover.via",
  /** Integer ms from the last good probe to the decision to fail over. */
  detectedAfterMs: "detour.failover.detected_after_ms",
  /** Integer ms from the last good probe until traffic flowed through the new tunnel. */
  restoredAfterMs: "detour.failover.restored_after_ms",
} as const;

export const STATE_ATTRIBUTES = {
  /** The connection state: disconnected, resolving, racing, connected, failing-over, error. */
  state: "detour.state",
  /** The active gateway, when there is one. */
  gateway: POINT_ATTRIBUTES.gateway,
  /** The active protocol, when there is one. */
  protocol: POINT_ATTRIBUTES.protocol,
} as const;

/** Other attribute keys on the agent's metrics and events. */
export const ATTR = {
  eventName: EVENT_NAME_ATTRIBUTE,
  gateway: POINT_ATTRIBUTES.gateway,
  protocol: POINT_ATTRIBUTES.protocol,
  state: STATE_ATTRIBUTES.state,
  reason: "detour.reason",
  via: FAILOVER_ATTRIBUTES.via,
  from: FAILOVER_ATTRIBUTES.from,
  to: FAILOVER_ATTRIBUTES.to,
  result: "detour.result",
  code: "detour.code",
  target: "detour.target",
  outcome: "detour.outcome",
} as const;

/** RTT histogram buckets (ms): fine where tunnels live (1-100 ms), coarse beyond. */
export const RTT_BUCKETS_MS = [1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000];
