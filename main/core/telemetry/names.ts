/**
 * The telemetry vocabulary shared by the agent (which sends it) and the collector (which stores and charts it):
 * metric names, event names, attribute keys and the ingest contract's header. One place, so the two never drift.
 */

/** Resource attributes every export carries. No user names, host names or secrets: a device is a random id. */
export const RESOURCE = {
  serviceName: "service.name",
  serviceVersion: "service.version",
  deviceId: "detour.device.id",
  organisation: "detour.organisation",
  policyHash: "detour.policy.hash",
  os: "os.type",
} as const;

export const SERVICE_NAME = "detourd";

/** Metric names; units in the comments are the OTLP `unit` the agent sets. */
export const METRIC = {
  /** Histogram, ms: every in-tunnel probe's round trip through the active tunnel. */
  rtt: "detour.tunnel.rtt",
  /** Gauges over the health window: RTT percentiles (ms), jitter (ms), loss (%). */
  rttP50: "detour.tunnel.rtt.p50",
  rttP95: "detour.tunnel.rtt.p95",
  jitter: "detour.tunnel.jitter",
  loss: "detour.tunnel.loss",
  /** Counter: in-tunnel probes by result ("reply" or "lost"). */
  probes: "detour.tunnel.probes",
  /** Counters, bytes, from the engine. */
  rxBytes: "detour.tunnel.rx_bytes",
  txBytes: "detour.tunnel.tx_bytes",
  /** Gauge, s: how long ago the engine last heard the gateway (WireGuard handshake, IKE traffic, DPD). */
  lastHeard: "detour.tunnel.last_heard",
  /** Gauge, 1 while in that state, with attributes state, gateway and protocol: the fleet view's source. */
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
  /** Device health, from systeminformation: utilisation in % and the count of interfaces that are up. */
  hostCpu: "detour.host.cpu.utilization",
  hostMemory: "detour.host.memory.utilization",
  hostDisk: "detour.host.disk.utilization",
  hostInterfacesUp: "detour.host.interfaces.up",
  /** The spool itself: records waiting, dropped past the bound, refused by the collector (counters/gauges). */
  spoolPending: "detour.telemetry.spool.pending",
  spoolDropped: "detour.telemetry.spool.dropped",
  spoolRejected: "detour.telemetry.spool.rejected",
} as const;

/** OTLP log records carry one of these as the `event.name` attribute; their body is the event as JSON. */
export const EVENT = {
  state: "detour.state",
  race: "detour.race",
  failover: "detour.failover",
  health: "detour.health",
  drill: "detour.drill",
  /** A managed policy was put in force or a document was refused (body: the policy event, with code and field). */
  policy: "detour.policy",
} as const;

/** Attribute keys on metrics and events. */
export const ATTR = {
  eventName: "event.name",
  gateway: "detour.gateway",
  protocol: "detour.protocol",
  state: "detour.state",
  reason: "detour.reason",
  via: "detour.via",
  from: "detour.from.gateway",
  to: "detour.to.gateway",
  result: "detour.result",
  code: "detour.code",
  target: "detour.target",
  outcome: "detour.outcome",
} as const;

/**
 * The ingest contract's idempotency key: every POST carries `<device id>:<spool sequence>`. Sequences only grow
 * on a device (they survive restarts), so a collector that stores each key once turns the agent's at-least-once
 * retries into exactly-once records; a repeat is answered 200 (already stored), never stored twice.
 */
export const BATCH_HEADER = "x-detour-batch-id";

/** RTT histogram buckets (ms): fine where tunnels live (1-100 ms), coarse beyond. */
export const RTT_BUCKETS_MS = [1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000];
