/**
 * What detourd puts on the wire is plain OTLP/HTTP, readable by any OTLP receiver (an OpenTelemetry Collector, a
 * vendor's backend), not only by Detour's collector: the daemon's real telemetry (instruments, spool, sender) runs
 * on a captured transport, and every body it posts is decoded by a second, independent decoder: the protobuf code
 * the OpenTelemetry JS maintainers generated from the official opentelemetry-proto definitions
 * (@opentelemetry/otlp-transformer 0.214, the last release that ships it for metrics and logs, installed as
 * `otlp-proto-reference`).
 * Detour's own subset decoder (main/collector/otlp.ts) plays no part here.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import reference from "otlp-proto-reference/build/src/generated/root.js";
import { Telemetry as TelemetrySchema } from "../../core/config/schema.ts";
import { Secret } from "../../core/secret.ts";
import { ATTR, BATCH_HEADER, EVENT, FAILOVER_ATTRIBUTES, METRIC, RESOURCE } from "../../core/telemetry/names.ts";
import type { Logger } from "../log.ts";
import type { PostResult } from "./sender.ts";
import { Telemetry } from "./telemetry.ts";

/** The sender posts right after the SDK spools; a loaded machine still delivers within this. */
const POSTED_WITHIN_MS = 10_000;
const POLL_MS = 20;

interface KeyValue {
  key: string;
  value: { stringValue?: string; intValue?: number | string; doubleValue?: number; boolValue?: boolean };
}
interface Decoded {
  resourceMetrics?: {
    resource?: { attributes?: KeyValue[] };
    scopeMetrics?: {
      scope?: { name?: string };
      metrics?: {
        name: string;
        unit?: string;
        histogram?: {
          aggregationTemporality?: number;
          dataPoints?: {
            attributes?: KeyValue[];
            count?: number | string;
            sum?: number;
            bucketCounts?: (number | string)[];
            explicitBounds?: number[];
            timeUnixNano?: number | string;
          }[];
        };
        gauge?: { dataPoints?: { attributes?: KeyValue[]; asDouble?: number; asInt?: number | string }[] };
        sum?: { dataPoints?: { attributes?: KeyValue[] }[] };
      }[];
    }[];
  }[];
  resourceLogs?: {
    resource?: { attributes?: KeyValue[] };
    scopeLogs?: {
      logRecords?: {
        eventName?: string;
        severityText?: string;
        timeUnixNano?: number | string;
        body?: { stringValue?: string };
        attributes?: KeyValue[];
      }[];
    }[];
  }[];
}
interface MessageType {
  decode(bytes: Uint8Array): unknown;
  verify(message: unknown): string | null;
  toObject(message: unknown, options: Record<string, unknown>): Decoded;
}
interface ReferenceRoot {
  opentelemetry: {
    proto: {
      collector: {
        metrics: { v1: { ExportMetricsServiceRequest: MessageType } };
        logs: { v1: { ExportLogsServiceRequest: MessageType } };
      };
    };
  };
}
const otlp = (reference as unknown as ReferenceRoot).opentelemetry.proto.collector;

/** Decodes with the reference code, refusing anything it cannot read or that does not verify. */
function decode(type: MessageType, body: Buffer): Decoded {
  const message = type.decode(body);
  const problem = type.verify(message);
  assert.equal(problem, null, `the reference decoder's verify: ${String(problem)}`);
  return type.toObject(message, { longs: String, enums: String, defaults: false, arrays: true });
}

function attrs(list: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries(
    (list ?? []).map((kv) => [
      kv.key,
      kv.value.stringValue ?? kv.value.intValue ?? kv.value.doubleValue ?? kv.value.boolValue,
    ]),
  );
}

const dir = mkdtempSync(join(tmpdir(), "detour-otlp-wire-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test("detourds-metrics-and-events-decode-with-the-official-otlp-protos", async () => {
  const posted: { url: string; body: Buffer; headers: Record<string, string> }[] = [];
  const quiet: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: () => undefined,
  };
  const active = { legId: "L1", gateway: "gw1", protocol: "wireguard" as const };
  let current: typeof active | null = active;
  const t = new Telemetry({
    config: TelemetrySchema.parse({ endpoint: "https://collector.example.com" }),
    token: new Secret("ingest-token"),
    stateDir: dir,
    version: "1.2.3",
    organisation: "acme",
    policyBytes: "{}",
    source: {
      state: () => "connected",
      active: () => current,
      health: () => ({ rttP50Ms: 11, rttP95Ms: 19, jitterMs: 2.5, lossPct: 1.25, samples: 40 }),
      engineStats: () => Promise.resolve(null),
    },
    log: quiet,
    post: (url, body, headers): Promise<PostResult> => {
      posted.push({ url, body, headers });
      return Promise.resolve({ status: 200, body: "" });
    },
  });
  try {
    for (const [seq, rttMs] of [10, 12, 14, 16, null].entries()) t.onProbe("L1", { seq, sentAt: seq * 25, rttMs });
    t.onEvent({ type: "state", at: 1000, state: "connected", detail: "gw1 over wireguard" });
    t.onEvent({
      type: "failover",
      at: 2000,
      failover: {
        from: { gateway: "gw1", kind: "wireguard" },
        to: { gateway: "gw2", kind: "ikev2" },
        reason: "dead: no reply for 0.3 s",
        via: "standby",
        lastReplyAt: 1000,
        detectedAt: 1310,
        restoredAt: 1420,
        detectedAfterMs: 310,
        restoredAfterMs: 420,
      },
    });
    current = null;
    await t.flush();
    const until = Date.now() + POSTED_WITHIN_MS;
    const paths = (): string[] => posted.map((p) => new URL(p.url).pathname);
    for (let i = 0; i < POSTED_WITHIN_MS / POLL_MS; i++) {
      if ((paths().includes("/v1/metrics") && paths().includes("/v1/logs")) || Date.now() > until) break;
      await sleep(POLL_MS);
    }
  } finally {
    await t.shutdown();
  }
  const metricsPost = posted.find((p) => p.url.endsWith("/v1/metrics"));
  const logsPost = posted.find((p) => p.url.endsWith("/v1/logs"));
  assert.ok(metricsPost !== undefined && logsPost !== undefined, `posted: ${posted.map((p) => p.url).join(", ")}`);
  for (const p of [metricsPost, logsPost]) {
    assert.equal(p.headers["content-type"], "application/x-protobuf", "OTLP/HTTP's binary encoding");
    assert.match(p.headers[BATCH_HEADER] ?? "", /^[0-9a-f-]{36}:\d+$/, "the batch id rides in a header");
  }

  const m = decode(otlp.metrics.v1.ExportMetricsServiceRequest, metricsPost.body);
  const [rm] = m.resourceMetrics ?? [];
  const resource = attrs(rm?.resource?.attributes);
  assert.equal(resource[RESOURCE.serviceName], "detourd");
  assert.equal(resource[RESOURCE.serviceVersion], "1.2.3");
  assert.match(String(resource[RESOURCE.deviceId]), /^[0-9a-f-]{36}$/);
  const metrics = new Map((rm?.scopeMetrics ?? []).flatMap((s) => s.metrics ?? []).map((x) => [x.name, x]));
  const rtt = metrics.get(METRIC.rtt);
  assert.ok(rtt?.histogram !== undefined, `metrics: ${[...metrics.keys()].join(", ")}`);
  assert.equal(rtt.unit, "ms");
  assert.equal(rtt.histogram.aggregationTemporality, "AGGREGATION_TEMPORALITY_DELTA");
  const [point] = rtt.histogram.dataPoints ?? [];
  assert.ok(point !== undefined, "one data point for the active tunnel");
  assert.deepEqual(attrs(point.attributes), { [ATTR.gateway]: "gw1", [ATTR.protocol]: "wireguard" });
  assert.equal(Number(point.count), 4, "four replies (the lost probe is counted elsewhere)");
  assert.equal(point.sum, 52);
  const buckets = (point.bucketCounts ?? []).map(Number);
  assert.equal(
    buckets.reduce((a, b) => a + b, 0),
    4,
    "the buckets hold every sample",
  );
  assert.equal(buckets.length, (point.explicitBounds ?? []).length + 1);
  assert.ok(Number(point.timeUnixNano) > 1.6e18, "timestamps are Unix nanoseconds");
  assert.throws(
    () => otlp.metrics.v1.ExportMetricsServiceRequest.decode(metricsPost.body.subarray(0, metricsPost.body.length - 3)),
    "the reference decoder does read the bytes: a truncated body is refused",
  );

  const l = decode(otlp.logs.v1.ExportLogsServiceRequest, logsPost.body);
  const records = (l.resourceLogs ?? []).flatMap((r) => (r.scopeLogs ?? []).flatMap((s) => s.logRecords ?? []));
  const failover = records.find((r) => r.eventName === EVENT.failover);
  assert.ok(failover !== undefined, `events: ${records.map((r) => r.eventName).join(", ")}`);
  const fa = attrs(failover.attributes);
  assert.equal(fa[FAILOVER_ATTRIBUTES.from], "gw1");
  assert.equal(fa[FAILOVER_ATTRIBUTES.to], "gw2");
  assert.equal(Number(fa[FAILOVER_ATTRIBUTES.detectedAfterMs]), 310);
  assert.equal(failover.severityText, "WARN");
  assert.equal((JSON.parse(failover.body?.stringValue ?? "{}") as { via?: string }).via, "standby");
  assert.ok(
    records.some((r) => r.eventName === EVENT.state && attrs(r.attributes)[ATTR.state] === "connected"),
    "the state change is there too",
  );
});
