/**
 * The names detourd's telemetry uses on the wire (OTLP metric names, log event names, attribute keys), defined
 * once so that the agent's exporter and the collector cannot drift apart. Units are in the names' comments.
 */

/** Resource attributes: who sent a batch. */
export const RESOURCE = {
  serviceName: "service.name",
  serviceVersion: "service.version",
  /** A stable, non-personal id of the device (the agent's install id). Required by the collector. */
  deviceId: "detour.device.id",
  /** Hash of the signed policy the agent runs, so IT can see which devices run an old policy. */
  policyHash: "detour.policy.hash",
  /**
   * The id of this export batch, unique per device and signal and stable across re-deliveries of the same
   * batch: the collector's idempotency and replay key (see main/collector/ingest-contract.ts).
   */
  batchId: "detour.batch.id",
} as const;

/** service.name of the agent. */
export const AGENT_SERVICE_NAME = "detourd";

/** Metric names. Every point carries POINT_ATTRIBUTES.gateway and .protocol of the tunnel it measures. */
export const METRIC = {
  /** Histogram, ms: in-tunnel probe round-trip times. */
  rtt: "detour.tunnel.rtt",
  /** Gauge, ms: variation of the probe round-trip time. */
  jitter: "detour.tunnel.jitter",
  /** Gauge, percent (0-100): probes lost over the export interval. */
  loss: "detour.tunnel.loss",
  /** Sum, bytes: received through the tunnel. */
  rxBytes: "detour.tunnel.rx_bytes",
  /** Sum, bytes: sent through the tunnel. */
  txBytes: "detour.tunnel.tx_bytes",
} as const;

export type MetricName = (typeof METRIC)[keyof typeof METRIC];
export const METRIC_NAMES: readonly MetricName[] = Object.values(METRIC);

/** Data point attributes. */
export const POINT_ATTRIBUTES = {
  gateway: "detour.gateway",
  protocol: "detour.protocol",
} as const;

/**
 * Log events: the name travels in the log record's event_name field, or (for older SDKs) in the attribute
 * `event.name`; the collector accepts either.
 */
export const EVENT = {
  /** The agent moved its traffic from one tunnel to another. Attributes: FAILOVER_ATTRIBUTES. */
  failover: "detour.failover",
  /** The agent's connection state changed. Attributes: STATE_ATTRIBUTES. */
  state: "detour.state",
} as const;

export const EVENT_NAME_ATTRIBUTE = "event.name";

export const FAILOVER_ATTRIBUTES = {
  /** Gateway name the agent failed away from. */
  from: "detour.failover.from",
  fromProtocol: "detour.failover.from_protocol",
  /** Gateway name it moved to; absent when no gateway was left. */
  to: "detour.failover.to",
  toProtocol: "detour.failover.to_protocol",
  /** Why: the machine's reason string (e.g. "dead", "brownout-loss", "brownout-latency"). */
  reason: "detour.failover.reason",
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
  /** The active protocol (wireguard, ikev2, anyconnect), when there is one. */
  protocol: POINT_ATTRIBUTES.protocol,
} as const;
