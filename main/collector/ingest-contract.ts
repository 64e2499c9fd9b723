/**
 * The ingest contract between detourd's telemetry exporter and the collector, and the function that turns a
 * decoded OTLP request into the batch the store keeps. The exporter is written to this contract:
 *
 * Transport: OTLP/HTTP. POST /v1/metrics or /v1/logs, Content-Type application/x-protobuf or application/json,
 * optional Content-Encoding gzip. Authorization: Bearer <ingest token>; the token names the organisation.
 *
 * One request = one batch of one device. Every resource in the request carries the same
 *   detour.device.id  the device's stable id (1-128 of [A-Za-z0-9._:-])
 *   detour.batch.id   the batch's id (same alphabet and length), unique per device and signal, and the SAME on
 *                     every re-delivery of that batch (the spool assigns it when the batch is cut, e.g. a
 *                     per-device sequence number; order does not matter).
 *
 * Answers, and what the exporter does with them:
 *   200  stored (the body may report a partial success: records of unknown metrics or events, not stored).
 *        Drop the batch from the spool.
 *   409  duplicate-batch: this batch id of this device was stored before (the earlier attempt did arrive, or the
 *        body is a replay). Nothing is stored twice. Drop the batch from the spool: it is delivered.
 *   400  malformed / missing-attribute / mixed-batch / stale-batch / clock-skew: the batch can never be
 *        accepted. Drop it and log the message (it names the fault).
 *   401  unauthenticated (no or unknown token), 403 forbidden (a read-only token, or under mTLS a certificate of
 *        another organisation): keep the batch, fix the configuration.
 *   413  too-large / too-many-records: split the batch (MAX_BODY_BYTES, MAX_RECORDS_PER_BATCH) and resend.
 *   415  unsupported-media-type / unsupported-encoding.
 *   5xx or no answer: keep the batch and retry with backoff, with the same batch id.
 *
 * Replay: OTLP has no nonce, so the (organisation, device, signal, batch id) key is it. The collector remembers
 * a batch id as long as it keeps the batch's data (the retention window), and refuses a batch whose newest record
 * is older than that window (stale-batch), so a batch old enough for its id to be forgotten cannot be replayed
 * either. A batch with records more than MAX_CLOCK_SKEW_MS in the future is refused (clock-skew): such records
 * would escape retention and distort every chart.
 */
import {
  EVENT,
  EVENT_NAME_ATTRIBUTE,
  FAILOVER_ATTRIBUTES,
  METRIC_NAMES,
  POINT_ATTRIBUTES,
  RESOURCE,
  STATE_ATTRIBUTES,
  type MetricName,
} from "../core/telemetry/names.ts";
import { IngestError } from "./errors.ts";
import { anyValue, attributes, type DecodedRequest, type LogRecord, type Resource } from "./otlp.ts";

/**
 * Records one request may carry. An agent exports about five metrics each interval plus rare events, so a batch
 * holds tens of records; the bound keeps one request's insert (one SQLite transaction) short for everyone else.
 */
export const MAX_RECORDS_PER_BATCH = 20_000;
/** Laptops sync their clocks; ten minutes tolerates a drifting one without letting records escape retention. */
export const MAX_CLOCK_SKEW_MS = 10 * 60_000;
const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export interface Point {
  name: MetricName;
  tsMs: number;
  /** Gauge and sum: the value. Histogram: the mean (sum / count). */
  value: number;
  /** Histograms only: how many samples, and their extremes. */
  count: number | null;
  min: number | null;
  max: number | null;
  gateway: string | null;
  protocol: string | null;
}

export type AgentEvent =
  | {
      kind: "failover";
      tsMs: number;
      from: string | null;
      fromProtocol: string | null;
      to: string | null;
      toProtocol: string | null;
      reason: string | null;
      detectedAfterMs: number | null;
      restoredAfterMs: number | null;
    }
  | { kind: "state"; tsMs: number; state: string; gateway: string | null; protocol: string | null };

export interface Batch {
  signal: DecodedRequest["signal"];
  deviceId: string;
  batchId: string;
  serviceName: string | null;
  serviceVersion: string | null;
  policyHash: string | null;
  points: Point[];
  events: AgentEvent[];
  /** Records not stored (unknown metric or event names), with a summary for the partial-success answer. */
  ignored: number;
  ignoredWhy: string;
}

function str(v: string | number | boolean | undefined): string | null {
  return v === undefined ? null : String(v);
}

function num(v: string | number | boolean | undefined): number | null {
  if (v === undefined || typeof v === "boolean") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/** Nanosecond timestamp string to ms; 0 or absent is an error for the named record. */
function tsMsOf(nanos: string | undefined, what: string): number {
  const ms = nanos === undefined ? 0 : Math.floor(Number(BigInt(nanos) / 1_000_000n));
  if (ms <= 0) throw new IngestError(400, "malformed", `${what} has no time_unix_nano`);
  return ms;
}

interface Identity {
  deviceId: string;
  batchId: string;
  serviceName: string | null;
  serviceVersion: string | null;
  policyHash: string | null;
}

/** `headerBatchId`: the agent's BATCH_HEADER, which wins over the resource attribute (a resource is per process). */
function identityOf(resources: (Resource | undefined)[], headerBatchId: string | null): Identity {
  if (resources.length === 0)
    throw new IngestError(
      400,
      "missing-attribute",
      "the request has no resource; every batch needs detour.device.id and detour.batch.id",
    );
  let id: Identity | undefined;
  for (const [i, r] of resources.entries()) {
    const a = attributes(r?.attributes);
    const deviceId = str(a.get(RESOURCE.deviceId));
    const batchId = headerBatchId ?? str(a.get(RESOURCE.batchId));
    for (const [key, v] of [
      [RESOURCE.deviceId, deviceId],
      [RESOURCE.batchId, batchId],
    ] as const) {
      if (v === null) throw new IngestError(400, "missing-attribute", `resource ${i} has no ${key} attribute`);
      if (!ID_PATTERN.test(v))
        throw new IngestError(400, "malformed", `resource ${i}: ${key} must be 1-128 of A-Z a-z 0-9 . _ : -`);
    }
    const next: Identity = {
      deviceId: deviceId ?? "",
      batchId: batchId ?? "",
      serviceName: str(a.get(RESOURCE.serviceName)),
      serviceVersion: str(a.get(RESOURCE.serviceVersion)),
      policyHash: str(a.get(RESOURCE.policyHash)),
    };
    if (id !== undefined && (id.deviceId !== next.deviceId || id.batchId !== next.batchId)) {
      throw new IngestError(
        400,
        "mixed-batch",
        `resources of one request must share ${RESOURCE.deviceId} and ${RESOURCE.batchId}; resource ${i} differs`,
      );
    }
    id = next;
  }
  if (id === undefined) throw new IngestError(400, "missing-attribute", "the request has no resource");
  return id;
}

function eventNameOf(r: LogRecord): string | null {
  if (r.eventName !== undefined && r.eventName !== "") return r.eventName;
  return str(attributes(r.attributes).get(EVENT_NAME_ATTRIBUTE));
}

function toEvent(r: LogRecord, where: string): AgentEvent | null {
  const name = eventNameOf(r);
  const a = attributes(r.attributes);
  const tsMs = tsMsOf(r.timeUnixNano ?? r.observedTimeUnixNano, where);
  if (name === EVENT.failover) {
    return {
      kind: "failover",
      tsMs,
      from: str(a.get(FAILOVER_ATTRIBUTES.from)),
      fromProtocol: str(a.get(FAILOVER_ATTRIBUTES.fromProtocol)),
      to: str(a.get(FAILOVER_ATTRIBUTES.to)),
      toProtocol: str(a.get(FAILOVER_ATTRIBUTES.toProtocol)),
      reason: str(a.get(FAILOVER_ATTRIBUTES.reason)),
      detectedAfterMs: num(a.get(FAILOVER_ATTRIBUTES.detectedAfterMs)),
      restoredAfterMs: num(a.get(FAILOVER_ATTRIBUTES.restoredAfterMs)),
    };
  }
  if (name === EVENT.state) {
    const state = str(a.get(STATE_ATTRIBUTES.state)) ?? str(anyValue(r.body));
    if (state === null)
      throw new IngestError(
        400,
        "missing-attribute",
        `${where} (${EVENT.state}) has no ${STATE_ATTRIBUTES.state} attribute`,
      );
    return {
      kind: "state",
      tsMs,
      state,
      gateway: str(a.get(STATE_ATTRIBUTES.gateway)),
      protocol: str(a.get(STATE_ATTRIBUTES.protocol)),
    };
  }
  return null;
}

function isMetricName(n: string | undefined): n is MetricName {
  return (METRIC_NAMES as readonly (string | undefined)[]).includes(n);
}

/**
 * Checks a decoded request against the contract and extracts what the collector keeps. `oldestAcceptedMs` is the
 * start of the retention window (older batches are stale); `nowMs` bounds timestamps from above.
 */
export function toBatch(
  decoded: DecodedRequest,
  nowMs: number,
  oldestAcceptedMs: number,
  headerBatchId: string | null = null,
): Batch {
  const points: Point[] = [];
  const events: AgentEvent[] = [];
  const ignoredNames = new Set<string>();
  let ignored = 0;
  let records = 0;
  const count = (n: number): void => {
    records += n;
    if (records > MAX_RECORDS_PER_BATCH)
      throw new IngestError(
        413,
        "too-many-records",
        `a batch may hold at most ${MAX_RECORDS_PER_BATCH} records; split it`,
      );
  };
  let identity: Identity;
  if (decoded.signal === "metrics") {
    const rms = decoded.request.resourceMetrics ?? [];
    identity = identityOf(
      rms.map((r) => r.resource),
      headerBatchId,
    );
    for (const [ri, rm] of rms.entries()) {
      for (const sm of rm.scopeMetrics ?? []) {
        for (const m of sm.metrics ?? []) {
          const name = m.name;
          const where = `metric ${name ?? "(unnamed)"} of resource ${ri}`;
          const nPoints =
            (m.gauge?.dataPoints?.length ?? 0) +
            (m.sum?.dataPoints?.length ?? 0) +
            (m.histogram?.dataPoints?.length ?? 0);
          count(nPoints);
          if (!isMetricName(name)) {
            ignored += nPoints;
            ignoredNames.add(name ?? "(unnamed)");
            continue;
          }
          for (const dp of [...(m.gauge?.dataPoints ?? []), ...(m.sum?.dataPoints ?? [])]) {
            const a = attributes(dp.attributes);
            const value = dp.asDouble ?? (dp.asInt === undefined ? undefined : Number(dp.asInt));
            if (value === undefined || !Number.isFinite(value))
              throw new IngestError(400, "malformed", `a data point of ${where} has no value`);
            points.push({
              name,
              tsMs: tsMsOf(dp.timeUnixNano, `a data point of ${where}`),
              value,
              count: null,
              min: null,
              max: null,
              gateway: str(a.get(POINT_ATTRIBUTES.gateway)),
              protocol: str(a.get(POINT_ATTRIBUTES.protocol)),
            });
          }
          for (const dp of m.histogram?.dataPoints ?? []) {
            const a = attributes(dp.attributes);
            const n = Number(dp.count ?? "0");
            if (n === 0) continue; // an interval without samples says nothing about latency
            if (dp.sum === undefined)
              throw new IngestError(400, "malformed", `a histogram point of ${where} has a count but no sum`);
            points.push({
              name,
              tsMs: tsMsOf(dp.timeUnixNano, `a data point of ${where}`),
              value: dp.sum / n,
              count: n,
              min: dp.min ?? null,
              max: dp.max ?? null,
              gateway: str(a.get(POINT_ATTRIBUTES.gateway)),
              protocol: str(a.get(POINT_ATTRIBUTES.protocol)),
            });
          }
        }
      }
    }
  } else {
    const rls = decoded.request.resourceLogs ?? [];
    identity = identityOf(
      rls.map((r) => r.resource),
      headerBatchId,
    );
    for (const [ri, rl] of rls.entries()) {
      for (const sl of rl.scopeLogs ?? []) {
        const recs = sl.logRecords ?? [];
        count(recs.length);
        for (const [li, r] of recs.entries()) {
          const ev = toEvent(r, `log record ${li} of resource ${ri}`);
          if (ev === null) {
            ignored += 1;
            ignoredNames.add(eventNameOf(r) ?? "(unnamed log record)");
          } else {
            events.push(ev);
          }
        }
      }
    }
  }
  const times = [...points.map((p) => p.tsMs), ...events.map((e) => e.tsMs)];
  if (times.length > 0) {
    const newest = Math.max(...times);
    if (newest > nowMs + MAX_CLOCK_SKEW_MS) {
      throw new IngestError(
        400,
        "clock-skew",
        `records are up to ${Math.round((newest - nowMs) / 1000)} s in the future; the device clock is off by more than ${MAX_CLOCK_SKEW_MS / 1000} s`,
      );
    }
    if (newest < oldestAcceptedMs) {
      throw new IngestError(
        400,
        "stale-batch",
        `the newest record (${new Date(newest).toISOString()}) is older than the retention window (${new Date(oldestAcceptedMs).toISOString()}); it cannot be accepted`,
      );
    }
  }
  const ignoredWhy =
    ignored === 0
      ? ""
      : `not stored: unknown to Detour's collector: ${[...ignoredNames].sort().slice(0, 5).join(", ")}`;
  return { signal: decoded.signal, ...identity, points, events, ignored, ignoredWhy };
}
