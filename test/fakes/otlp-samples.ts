/**
 * OTLP request samples for the collector's tests and the lab's sender. `sdk*` go through the OpenTelemetry JS
 * SDK and its own OTLP serializers (what a real exporter puts on the wire); `plain*` build OTLP/JSON objects by
 * hand with explicit timestamps, for tests that control time.
 */
import type { Attributes } from "@opentelemetry/api";
import {
  JsonLogsSerializer,
  JsonMetricsSerializer,
  ProtobufLogsSerializer,
  ProtobufMetricsSerializer,
} from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from "@opentelemetry/sdk-logs";
import { AggregationTemporality, MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import {
  AGENT_METRIC,
  AGENT_SERVICE_NAME,
  ATTR,
  EVENT,
  FAILOVER_ATTRIBUTES,
  METRIC,
  POINT_ATTRIBUTES,
  RESOURCE,
  RTT_BUCKETS_MS,
  STATE_ATTRIBUTES,
} from "../../main/core/telemetry/names.ts";
import type { LogsRequest, MetricsRequest } from "../../main/collector/otlp.ts";

export type Format = "json" | "protobuf";

export interface AgentIdentity {
  deviceId: string;
  batchId: string;
  version?: string;
  policyHash?: string;
}

export interface TunnelSample {
  gateway: string;
  protocol: string;
  rttMs: number[];
  lossPercent: number;
  jitterMs?: number;
  rxBytes?: number;
}

export interface FailoverSample {
  from: string;
  fromProtocol: string;
  to: string;
  toProtocol: string;
  reason: string;
  detectedAfterMs: number;
  restoredAfterMs: number;
}

function resourceAttributes(id: AgentIdentity): Record<string, string> {
  return {
    [RESOURCE.serviceName]: AGENT_SERVICE_NAME,
    [RESOURCE.serviceVersion]: id.version ?? "0.1.0",
    [RESOURCE.deviceId]: id.deviceId,
    [RESOURCE.policyHash]: id.policyHash ?? "3f7a9c0d5e21b4a8",
    [RESOURCE.batchId]: id.batchId,
  };
}

/** A reader the test drives by hand: collect() when asked, no timers. */
class ManualReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** The same reader exporting deltas, as detourd's exporter does (each export holds its own interval). */
class ManualDeltaReader extends ManualReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.DELTA });
  }
}

export interface AgentInterval {
  gateway: string;
  protocol: string;
  /** Every in-tunnel probe's round trip in the interval (detourd probes the active tunnel every 25 ms). */
  rttMs: number[];
  /** Probes without a reply in the interval. */
  lost: number;
  lossPercent: number;
}

/**
 * One export interval of a connected detourd, with the instruments, names, attributes, histogram buckets and
 * temporality of main/agent/telemetry/telemetry.ts: the RTT histogram and probe counter, the health gauges,
 * connection state, engine counters, host health and the spool's own gauges. Serialized by the SDK as protobuf.
 */
export async function sdkAgentIntervalBatch(id: AgentIdentity, t: AgentInterval): Promise<Uint8Array> {
  const reader = new ManualDeltaReader();
  const resource = resourceFromAttributes({
    ...resourceAttributes(id),
    [RESOURCE.organisation]: "Example Corp",
    [RESOURCE.os]: "linux",
  });
  const provider = new MeterProvider({ resource, readers: [reader] });
  const meter = provider.getMeter("detourd", id.version ?? "0.1.0");
  const tunnel: Attributes = { [ATTR.gateway]: t.gateway, [ATTR.protocol]: t.protocol };
  const buckets = { advice: { explicitBucketBoundaries: RTT_BUCKETS_MS } };
  const rtt = meter.createHistogram(METRIC.rtt, {
    unit: "ms",
    description: "round trip of in-tunnel probes through the active tunnel",
    ...buckets,
  });
  for (const v of t.rttMs) rtt.record(v, tunnel);
  const probes = meter.createCounter(AGENT_METRIC.probes, { description: "in-tunnel probes by result" });
  probes.add(t.rttMs.length, { ...tunnel, [ATTR.result]: "reply" });
  if (t.lost > 0) probes.add(t.lost, { ...tunnel, [ATTR.result]: "lost" });
  const sorted = [...t.rttMs].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  const gauge = (name: string, unit: string, v: number, attrs: Attributes = tunnel): void => {
    meter.createGauge(name, { unit }).record(v, attrs);
  };
  gauge(AGENT_METRIC.rttP50, "ms", at(0.5));
  gauge(AGENT_METRIC.rttP95, "ms", at(0.95));
  gauge(METRIC.jitter, "ms", Math.abs(at(0.75) - at(0.25)));
  gauge(METRIC.loss, "%", t.lossPercent);
  gauge(AGENT_METRIC.state, "1", 1, { [ATTR.state]: "connected", ...tunnel });
  gauge(METRIC.rxBytes, "By", 1_843_200 + t.rttMs.length * 64);
  gauge(METRIC.txBytes, "By", 1_212_416 + t.rttMs.length * 64);
  gauge(AGENT_METRIC.lastHeard, "s", 0.02);
  gauge(AGENT_METRIC.hostCpu, "%", 7.5, {});
  gauge(AGENT_METRIC.hostMemory, "%", 41.2, {});
  gauge(AGENT_METRIC.hostDisk, "%", 63.9, {});
  gauge(AGENT_METRIC.hostInterfacesUp, "1", 3, {});
  gauge(AGENT_METRIC.spoolPending, "1", 1, {});
  gauge(AGENT_METRIC.spoolDropped, "1", 0, {});
  gauge(AGENT_METRIC.spoolRejected, "1", 0, {});
  const { resourceMetrics, errors } = await reader.collect();
  if (errors.length > 0) throw new Error(`collect failed: ${String(errors[0])}`);
  await provider.shutdown();
  const bytes = ProtobufMetricsSerializer.serializeRequest(resourceMetrics);
  if (bytes === undefined) throw new Error("the SDK serializer produced nothing");
  return bytes;
}

/** One export interval of one agent, recorded through the SDK's instruments and serialized by the SDK. */
export async function sdkMetricsBatch(id: AgentIdentity, tunnel: TunnelSample, format: Format): Promise<Uint8Array> {
  const reader = new ManualReader();
  const provider = new MeterProvider({ resource: resourceFromAttributes(resourceAttributes(id)), readers: [reader] });
  const meter = provider.getMeter("detourd");
  const attrs: Attributes = {
    [POINT_ATTRIBUTES.gateway]: tunnel.gateway,
    [POINT_ATTRIBUTES.protocol]: tunnel.protocol,
  };
  const rtt = meter.createHistogram(METRIC.rtt, { unit: "ms" });
  for (const v of tunnel.rttMs) rtt.record(v, attrs);
  meter.createGauge(METRIC.loss, { unit: "%" }).record(tunnel.lossPercent, attrs);
  meter.createGauge(METRIC.jitter, { unit: "ms" }).record(tunnel.jitterMs ?? 0.4, attrs);
  meter.createCounter(METRIC.rxBytes, { unit: "By" }).add(tunnel.rxBytes ?? 12_345, attrs);
  const { resourceMetrics, errors } = await reader.collect();
  if (errors.length > 0) throw new Error(`collect failed: ${String(errors[0])}`);
  await provider.shutdown();
  const bytes = (format === "json" ? JsonMetricsSerializer : ProtobufMetricsSerializer).serializeRequest(
    resourceMetrics,
  );
  if (bytes === undefined) throw new Error("the SDK serializer produced nothing");
  return bytes;
}

/** Events of one agent (failovers, then optionally a state change), emitted through the SDK's logger. */
export async function sdkLogsBatch(
  id: AgentIdentity,
  events: {
    failovers?: FailoverSample[];
    state?: { state: string; gateway: string; protocol: string };
    other?: string;
  },
  format: Format,
): Promise<Uint8Array> {
  const exporter = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({
    resource: resourceFromAttributes(resourceAttributes(id)),
    processors: [new SimpleLogRecordProcessor({ exporter })],
  });
  const logger = provider.getLogger("detourd");
  for (const f of events.failovers ?? []) {
    logger.emit({
      eventName: EVENT.failover,
      body: `failover ${f.from} -> ${f.to}: ${f.reason}`,
      attributes: {
        [FAILOVER_ATTRIBUTES.from]: f.from,
        [FAILOVER_ATTRIBUTES.fromProtocol]: f.fromProtocol,
        [FAILOVER_ATTRIBUTES.to]: f.to,
        [FAILOVER_ATTRIBUTES.toProtocol]: f.toProtocol,
        [FAILOVER_ATTRIBUTES.reason]: f.reason,
        [FAILOVER_ATTRIBUTES.detectedAfterMs]: f.detectedAfterMs,
        [FAILOVER_ATTRIBUTES.restoredAfterMs]: f.restoredAfterMs,
      },
    });
  }
  if (events.state !== undefined) {
    logger.emit({
      eventName: EVENT.state,
      attributes: {
        [STATE_ATTRIBUTES.state]: events.state.state,
        [STATE_ATTRIBUTES.gateway]: events.state.gateway,
        [STATE_ATTRIBUTES.protocol]: events.state.protocol,
      },
    });
  }
  if (events.other !== undefined) logger.emit({ eventName: events.other, body: "something else" });
  await provider.forceFlush();
  const records = exporter.getFinishedLogRecords();
  await provider.shutdown();
  const bytes = (format === "json" ? JsonLogsSerializer : ProtobufLogsSerializer).serializeRequest(records);
  if (bytes === undefined) throw new Error("the SDK serializer produced nothing");
  return bytes;
}

function kv(
  attrs: Record<string, string | number>,
): { key: string; value: { stringValue: string } | { intValue: string } | { doubleValue: number } }[] {
  return Object.entries(attrs).map(([key, v]) => ({
    key,
    value:
      typeof v === "string" ? { stringValue: v } : Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v },
  }));
}

function nanos(ms: number): string {
  return `${BigInt(Math.round(ms)) * 1_000_000n}`;
}

/** A metrics request with explicit point times (ms): loss gauge + rtt histogram per sample. */
export function plainMetrics(
  id: AgentIdentity,
  samples: { tsMs: number; gateway: string; protocol: string; rttMs: number; lossPercent: number }[],
): MetricsRequest {
  const attrs = (s: { gateway: string; protocol: string }): ReturnType<typeof kv> =>
    kv({ [POINT_ATTRIBUTES.gateway]: s.gateway, [POINT_ATTRIBUTES.protocol]: s.protocol });
  return {
    resourceMetrics: [
      {
        resource: { attributes: kv(resourceAttributes(id)) },
        scopeMetrics: [
          {
            metrics: [
              {
                name: METRIC.loss,
                unit: "%",
                gauge: {
                  dataPoints: samples.map((s) => ({
                    attributes: attrs(s),
                    timeUnixNano: nanos(s.tsMs),
                    asDouble: s.lossPercent,
                  })),
                },
              },
              {
                name: METRIC.rtt,
                unit: "ms",
                histogram: {
                  aggregationTemporality: 1,
                  dataPoints: samples.map((s) => ({
                    attributes: attrs(s),
                    timeUnixNano: nanos(s.tsMs),
                    count: "4",
                    sum: s.rttMs * 4,
                    min: s.rttMs * 0.8,
                    max: s.rttMs * 1.3,
                  })),
                },
              },
            ],
          },
        ],
      },
    ],
  };
}

/** A logs request with explicit event times (ms). */
export function plainLogs(
  id: AgentIdentity,
  events: ({ tsMs: number } & (
    { failover: FailoverSample } | { state: { state: string; gateway: string; protocol: string } }
  ))[],
): LogsRequest {
  return {
    resourceLogs: [
      {
        resource: { attributes: kv(resourceAttributes(id)) },
        scopeLogs: [
          {
            logRecords: events.map((e) =>
              "failover" in e
                ? {
                    timeUnixNano: nanos(e.tsMs),
                    eventName: EVENT.failover,
                    attributes: kv({
                      [FAILOVER_ATTRIBUTES.from]: e.failover.from,
                      [FAILOVER_ATTRIBUTES.fromProtocol]: e.failover.fromProtocol,
                      [FAILOVER_ATTRIBUTES.to]: e.failover.to,
                      [FAILOVER_ATTRIBUTES.toProtocol]: e.failover.toProtocol,
                      [FAILOVER_ATTRIBUTES.reason]: e.failover.reason,
                      [FAILOVER_ATTRIBUTES.detectedAfterMs]: e.failover.detectedAfterMs,
                      [FAILOVER_ATTRIBUTES.restoredAfterMs]: e.failover.restoredAfterMs,
                    }),
                  }
                : {
                    timeUnixNano: nanos(e.tsMs),
                    // the older convention: the event name as an attribute rather than the event_name field
                    attributes: kv({
                      "event.name": EVENT.state,
                      [STATE_ATTRIBUTES.state]: e.state.state,
                      [STATE_ATTRIBUTES.gateway]: e.state.gateway,
                      [STATE_ATTRIBUTES.protocol]: e.state.protocol,
                    }),
                  },
            ),
          },
        ],
      },
    ],
  };
}
