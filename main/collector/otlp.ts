/**
 * OTLP/HTTP wire formats for the collector: decodes metrics and logs export requests from protobuf or JSON into
 * one plain-object shape, and encodes the responses and error statuses OTLP/HTTP clients expect. Both encodings
 * go through protobufjs and the same schema (resources/otlp/otlp-v1-subset.proto), so they yield identical
 * objects: camelCase fields, 64-bit integers as decimal strings.
 */
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import protobuf from "protobufjs";
import { IngestError } from "./errors.ts";

export type Signal = "metrics" | "logs";
export type Encoding = "json" | "protobuf";

/** Where the reduced OTLP schema lives; resolved from this file so it works from any working directory. */
const SCHEMA_FILE = new URL("../../resources/otlp/otlp-v1-subset.proto", import.meta.url);

/**
 * Largest request body after gzip is undone. An agent batch is a few kilobytes; the bound stops a small
 * compressed body from expanding into gigabytes (a "zip bomb") before it is even parsed.
 */
export const MAX_DECODED_BYTES = 8 * 1024 * 1024;

const root = protobuf.parse(readFileSync(SCHEMA_FILE, "utf8"), { keepCase: false }).root;
const TYPES = {
  metrics: {
    request: root.lookupType("opentelemetry.proto.ExportMetricsServiceRequest"),
    response: root.lookupType("opentelemetry.proto.ExportMetricsServiceResponse"),
    partialField: "rejectedDataPoints",
  },
  logs: {
    request: root.lookupType("opentelemetry.proto.ExportLogsServiceRequest"),
    response: root.lookupType("opentelemetry.proto.ExportLogsServiceResponse"),
    partialField: "rejectedLogRecords",
  },
} as const;
const STATUS = root.lookupType("opentelemetry.proto.Status");

/** protobufjs' toObject options that give the OTLP/JSON shape: 64-bit integers as strings, enums as numbers. */
const TO_OBJECT: protobuf.IConversionOptions = {
  longs: String,
  enums: Number,
  bytes: String,
  defaults: false,
  oneofs: false,
};

// ---- the decoded shape (only the fields the collector reads; everything optional, as proto3 makes it) ----

export interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: AnyValue[] };
  kvlistValue?: { values?: KeyValue[] };
  bytesValue?: string;
}
export interface KeyValue {
  key?: string;
  value?: AnyValue;
}
export interface Resource {
  attributes?: KeyValue[];
}
export interface NumberDataPoint {
  attributes?: KeyValue[];
  timeUnixNano?: string;
  asDouble?: number;
  asInt?: string;
}
export interface HistogramDataPoint {
  attributes?: KeyValue[];
  timeUnixNano?: string;
  count?: string;
  sum?: number;
  min?: number;
  max?: number;
}
export interface Metric {
  name?: string;
  unit?: string;
  gauge?: { dataPoints?: NumberDataPoint[] };
  sum?: { dataPoints?: NumberDataPoint[]; aggregationTemporality?: number; isMonotonic?: boolean };
  histogram?: { dataPoints?: HistogramDataPoint[]; aggregationTemporality?: number };
}
export interface MetricsRequest {
  resourceMetrics?: { resource?: Resource; scopeMetrics?: { metrics?: Metric[] }[] }[];
}
export interface LogRecord {
  timeUnixNano?: string;
  observedTimeUnixNano?: string;
  severityText?: string;
  body?: AnyValue;
  attributes?: KeyValue[];
  eventName?: string;
}
export interface LogsRequest {
  resourceLogs?: { resource?: Resource; scopeLogs?: { logRecords?: LogRecord[] }[] }[];
}

export type DecodedRequest = { signal: "metrics"; request: MetricsRequest } | { signal: "logs"; request: LogsRequest };

/** The encoding a Content-Type names, or null when OTLP/HTTP does not define it. */
export function encodingOf(contentType: string | undefined): Encoding | null {
  const mime = (contentType ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  if (mime === "application/x-protobuf" || mime === "application/protobuf") return "protobuf";
  if (mime === "application/json") return "json";
  return null;
}

export function contentTypeOf(encoding: Encoding): string {
  return encoding === "json" ? "application/json" : "application/x-protobuf";
}

/** Undoes Content-Encoding (identity or gzip, what OTLP exporters send), bounded by MAX_DECODED_BYTES. */
export function decompress(body: Uint8Array, contentEncoding: string | undefined): Uint8Array {
  const enc = (contentEncoding ?? "identity").trim().toLowerCase();
  if (enc === "identity" || enc === "") return body;
  if (enc !== "gzip")
    throw new IngestError(
      415,
      "unsupported-encoding",
      `Content-Encoding "${enc}" is not supported; send identity or gzip`,
    );
  try {
    return gunzipSync(body, { maxOutputLength: MAX_DECODED_BYTES });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new IngestError(413, "too-large", `the body expands to more than ${MAX_DECODED_BYTES} bytes after gzip`);
    }
    throw new IngestError(400, "malformed", `the gzip body is corrupt: ${(e as Error).message}`);
  }
}

/** Decodes an export request; a body that is not a valid request of that signal is a 400 naming the fault. */
export function decodeRequest(signal: Signal, encoding: Encoding, body: Uint8Array): DecodedRequest {
  const type = TYPES[signal].request;
  let message: protobuf.Message;
  if (encoding === "protobuf") {
    try {
      message = type.decode(body);
    } catch (e) {
      throw new IngestError(400, "malformed", `the body is not a protobuf ${type.name}: ${(e as Error).message}`);
    }
  } else {
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(body).toString("utf8"));
    } catch (e) {
      throw new IngestError(400, "malformed", `the body is not JSON: ${(e as Error).message}`);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new IngestError(400, "malformed", `the body must be a JSON object (an OTLP ${type.name})`);
    }
    try {
      message = type.fromObject(parsed);
    } catch (e) {
      throw new IngestError(400, "malformed", `the JSON is not an OTLP ${type.name}: ${(e as Error).message}`);
    }
  }
  const obj: Record<string, unknown> = type.toObject(message, TO_OBJECT);
  return signal === "metrics" ? { signal, request: obj } : { signal, request: obj };
}

/** A success response; `rejected` > 0 reports a partial success (records the collector did not store, and why). */
export function encodeResponse(signal: Signal, encoding: Encoding, rejected = 0, why = ""): Uint8Array | string {
  const t = TYPES[signal];
  const body = rejected > 0 ? { partialSuccess: { [t.partialField]: rejected, errorMessage: why } } : {};
  if (encoding === "json") return JSON.stringify(body);
  return t.response.encode(t.response.fromObject(body)).finish();
}

/**
 * An error body: google.rpc.Status as OTLP/HTTP specifies, in the request's encoding. `code` is the gRPC
 * status code that matches the HTTP status; the message starts with the collector's stable error code.
 */
export function encodeStatus(encoding: Encoding, grpcCode: number, message: string): Uint8Array | string {
  if (encoding === "json") return JSON.stringify({ code: grpcCode, message });
  return STATUS.encode(STATUS.fromObject({ code: grpcCode, message })).finish();
}

/** Decodes an error body (for tests and tools that print what the collector said). */
export function decodeStatus(body: Uint8Array): { code: number; message: string } {
  const o = STATUS.toObject(STATUS.decode(body), { defaults: true }) as { code: number; message: string };
  return o;
}

/** Encodes a request from its plain-object form (tests and the lab's sender build samples with it). */
export function encodeRequest(signal: Signal, request: MetricsRequest | LogsRequest): Uint8Array {
  const type = TYPES[signal].request;
  return type.encode(type.fromObject(request)).finish();
}

/** The value of an OTLP AnyValue as a JS value (strings, numbers, booleans; nested values as JSON text). */
export function anyValue(v: AnyValue | undefined): string | number | boolean | undefined {
  if (v === undefined) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.arrayValue !== undefined || v.kvlistValue !== undefined) return JSON.stringify(v.arrayValue ?? v.kvlistValue);
  return undefined;
}

/** Attributes as a map; a key given twice keeps its last value, as OTLP leaves duplicates undefined. */
export function attributes(kvs: readonly KeyValue[] | undefined): Map<string, string | number | boolean> {
  const m = new Map<string, string | number | boolean>();
  for (const kv of kvs ?? []) {
    const v = anyValue(kv.value);
    if (kv.key !== undefined && v !== undefined) m.set(kv.key, v);
  }
  return m;
}
