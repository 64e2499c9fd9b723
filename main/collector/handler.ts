/**
 * The collector's HTTP behaviour as a pure function of a request (method, path, headers, body, and under mTLS
 * the client certificate's organisation) to a response, so every rule is unit-tested without a socket. The
 * server (server.ts) only reads bodies within MAX_BODY_BYTES and writes what this returns.
 *
 *   POST /v1/metrics, /v1/logs   OTLP/HTTP ingest (ingest token), the contract in ingest-contract.ts
 *   GET  /                       the fleet dashboard (read token; Bearer, or Basic with the token as password)
 *   GET  /agents/<device id>     one agent's charts and failovers (read token)
 *   GET  /metrics                Prometheus text format 0.0.4 of the fleet's aggregates (read token)
 *   POST /v1/diagnostics         a diagnostic bundle (.tar.gz) from an agent (ingest token)
 *   GET  /bundles/<id>/summary   a bundle's summary page, rendered here from its summary.json (read token);
 *                                /bundles/<id> downloads the bundle (an attachment)
 *   GET  /healthz                liveness, no credentials, no data
 */
import { authenticate, sha256Hex, type Principal, type Role, type TokenTable } from "./auth.ts";
import { agentPage, DASHBOARD_CSP, fleetPage, windowOf } from "./dashboard.ts";
import { grpcCodeOf, IngestError } from "./errors.ts";
import { BATCH_HEADER } from "../core/telemetry/names.ts";
import { toBatch } from "./ingest-contract.ts";
import { bundleSummary } from "./bundle-summary.ts";
import { renderSummaryHtml } from "../core/diag/summary.ts";
import { createHash } from "node:crypto";
import {
  contentTypeOf,
  decodeRequest,
  decompress,
  encodeResponse,
  encodeStatus,
  encodingOf,
  type Encoding,
  type Signal,
} from "./otlp.ts";
import { fleetFamilies, formatFamilies, PROMETHEUS_CONTENT_TYPE } from "./prometheus.ts";
import { DEFAULT_BUNDLE_LIMITS, StorageUnavailableError, type BundleLimits, type TelemetryStorage } from "./storage.ts";

/**
 * The largest request body the collector reads, as sent (compressed or not). An agent batch is a few kilobytes;
 * 1 MiB leaves room for a long-offline agent's spool flush while bounding what one request can make us hold.
 */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * What a 503 asks the client to wait: a PostgreSQL restart or failover takes seconds to tens of seconds, and the
 * agent's own backoff (1 s doubling to 30 s) already spreads a fleet's retries.
 */
export const STORAGE_RETRY_AFTER_S = 5;

export interface CollectorRequest {
  method: string;
  /** Path with query, as in the request line. */
  url: string;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  body: Uint8Array;
  /** Present when the server runs with mTLS: the verified client certificate's subject O (null without one). */
  mtls?: { certOrg: string | null };
}

export interface CollectorResponse {
  status: number;
  headers: Record<string, string>;
  body: string | Uint8Array;
}

/** What the handler reports for the server's access log; never the token or the body. */
export interface RequestOutcome {
  org: string | null;
  code: string | null;
  stored?: { points: number; events: number };
  /** Older bundles of the organisation removed to keep its storage within its limits. */
  evictedBundles?: number;
  /** Why the storage could not answer (for the log only: the client is told to retry, not the storage's words). */
  storageError?: string;
}

export interface HandlerOptions {
  store: TelemetryStorage;
  tokens: TokenTable;
  /** Wall clock in ms: injected so tests control time. */
  now: () => number;
  /** How long data and batch ids are kept; also how old a batch may be and still be accepted. */
  retentionMs: number;
  /** Bundle storage per organisation; DEFAULT_BUNDLE_LIMITS when absent. */
  bundleLimits?: BundleLimits;
}

/** A request before its body is read. */
export type RequestHead = Omit<CollectorRequest, "body">;

export type HandlerResult = CollectorResponse & { outcome: RequestOutcome };

export type Handler = ((req: CollectorRequest) => Promise<HandlerResult>) & {
  /**
   * Checks the credentials from the headers alone, before the server reads the body: the refusal to send (401,
   * 403) or null when the request may go on. An unauthenticated peer cannot make the collector read a body.
   */
  authorize(head: RequestHead): (CollectorResponse & { outcome: RequestOutcome }) | null;
};

const INGEST_PATHS: Record<string, Signal> = { "/v1/metrics": "metrics", "/v1/logs": "logs" };

function header(req: CollectorRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The request's failure as an IngestError: a storage outage becomes 503 (retryable: the agent keeps the batch);
 * anything that is neither is a bug and is thrown on to the server, which logs it and answers 500.
 */
function requestError(e: unknown): IngestError {
  if (e instanceof IngestError) return e;
  if (e instanceof StorageUnavailableError)
    return new IngestError(
      503,
      "storage-unavailable",
      `the collector's storage cannot answer now; nothing was stored, send the same batch again later`,
      e.message,
    );
  throw e;
}

function outcomeOf(org: string | null, e: IngestError): RequestOutcome {
  return { org, code: e.code, ...(e.detail === undefined ? {} : { storageError: e.detail }) };
}

function errorHeaders(e: IngestError, contentType: string): Record<string, string> {
  const headers: Record<string, string> = { "content-type": contentType };
  if (e.status === 503) headers["retry-after"] = String(STORAGE_RETRY_AFTER_S);
  return headers;
}

function textError(e: IngestError, basicChallenge: boolean): CollectorResponse {
  const headers = errorHeaders(e, "text/plain; charset=utf-8");
  if (e.status === 401)
    headers["www-authenticate"] = basicChallenge
      ? 'Basic realm="Detour collector", charset="UTF-8"'
      : 'Bearer realm="Detour collector"';
  if (e.status === 405) headers.allow = "GET";
  return { status: e.status, headers, body: `${e.code}: ${e.message}\n` };
}

/**
 * The request target (origin form, "/path?query") as a URL, or null when it is not one. Always appended to a fixed
 * origin, never resolved against it: "//host/x" stays the path "//host/x" rather than becoming another host's "/x".
 */
function targetOf(target: string): URL | null {
  if (!target.startsWith("/")) return null;
  try {
    return new URL(`http://collector.invalid${target}`);
  } catch {
    return null;
  }
}

export function createHandler(opts: HandlerOptions): Handler {
  const { store, tokens, now, retentionMs } = opts;
  const bundleLimits = opts.bundleLimits ?? DEFAULT_BUNDLE_LIMITS;

  function auth(req: CollectorRequest, role: Role): Principal {
    return authenticate(tokens, header(req, "authorization"), role, req.mtls ?? null);
  }

  async function ingest(req: CollectorRequest, signal: Signal): Promise<HandlerResult> {
    // Until the content type is known, errors are answered in JSON: the one encoding every client can read.
    let encoding: Encoding = "json";
    let org: string | null = null;
    try {
      if (req.method !== "POST")
        throw new IngestError(405, "method-not-allowed", `${req.url.split("?")[0] ?? ""} takes POST`);
      const p = auth(req, "ingest");
      org = p.org;
      const enc = encodingOf(header(req, "content-type"));
      if (enc === null) {
        throw new IngestError(
          415,
          "unsupported-media-type",
          `Content-Type must be application/x-protobuf or application/json; got ${JSON.stringify(header(req, "content-type") ?? "nothing")}`,
        );
      }
      encoding = enc;
      if (req.body.byteLength > MAX_BODY_BYTES)
        throw new IngestError(
          413,
          "too-large",
          `the body is ${req.body.byteLength} bytes; the limit is ${MAX_BODY_BYTES}`,
        );
      const body = decompress(req.body, header(req, "content-encoding"));
      const nowMs = now();
      const batch = toBatch(
        decodeRequest(signal, encoding, body),
        nowMs,
        nowMs - retentionMs,
        header(req, BATCH_HEADER) ?? null,
      );
      const r = await store.ingest(p.org, batch, nowMs, sha256Hex(body));
      if (r.kind === "duplicate") {
        throw new IngestError(
          409,
          "duplicate-batch",
          `batch ${batch.batchId} of device ${batch.deviceId} (${signal}) was stored at ${new Date(r.firstReceivedMs).toISOString()}${r.sameContent ? "" : " with different content"}; it is not stored again`,
        );
      }
      return {
        status: 200,
        headers: { "content-type": contentTypeOf(encoding) },
        body: encodeResponse(signal, encoding, batch.ignored, batch.ignoredWhy),
        outcome: { org, code: null, stored: { points: r.points, events: r.events } },
      };
    } catch (caught) {
      const e = requestError(caught);
      const headers = errorHeaders(e, contentTypeOf(encoding));
      if (e.status === 401) headers["www-authenticate"] = 'Bearer realm="Detour collector"';
      if (e.status === 405) headers.allow = "POST";
      return {
        status: e.status,
        headers,
        body: encodeStatus(encoding, grpcCodeOf(e.status), `${e.code}: ${e.message}`),
        outcome: outcomeOf(org, e),
      };
    }
  }

  /**
   * A diagnostic bundle from an agent (main/agent/diag/upload.ts): the device id, the bundle's name and the SHA-256
   * of the body in headers; stored once per content (a retried upload answers with the first copy's id).
   */
  async function diagnostics(req: CollectorRequest): Promise<HandlerResult> {
    let org: string | null = null;
    try {
      if (req.method !== "POST") throw new IngestError(405, "method-not-allowed", "/v1/diagnostics takes POST");
      org = auth(req, "ingest").org;
      const type = header(req, "content-type") ?? "";
      if (!/^application\/(gzip|x-gzip|octet-stream)\b/.test(type))
        throw new IngestError(
          415,
          "unsupported-media-type",
          `Content-Type must be application/gzip; got ${JSON.stringify(type)}`,
        );
      if (req.body.byteLength > MAX_BODY_BYTES)
        throw new IngestError(
          413,
          "too-large",
          `the bundle is ${req.body.byteLength} bytes; the limit is ${MAX_BODY_BYTES}`,
        );
      const deviceId = header(req, "x-detour-device-id") ?? "";
      if (!/^[A-Za-z0-9._:-]{1,128}$/.test(deviceId))
        throw new IngestError(
          400,
          "missing-attribute",
          "x-detour-device-id must be the agent's device id (1-128 of A-Z a-z 0-9 . _ : -)",
        );
      const name = header(req, "x-detour-bundle-name") ?? "";
      if (!/^detour-diag-[A-Za-z0-9._-]{1,100}\.tar\.gz$/.test(name))
        throw new IngestError(400, "malformed", "x-detour-bundle-name must be detour-diag-<...>.tar.gz");
      const sha = createHash("sha256").update(req.body).digest("hex");
      if ((header(req, "x-detour-bundle-sha256") ?? "").toLowerCase() !== sha)
        throw new IngestError(400, "malformed", "x-detour-bundle-sha256 does not match the body (damaged in transit?)");
      const summary = bundleSummary(req.body);
      if (!summary.ok) throw new IngestError(400, "malformed", `not a Detour diagnostic bundle: ${summary.message}`);
      const r = await store.addBundle(
        org,
        { deviceId, name, sha256: sha, bytes: req.body.byteLength, receivedMs: now() },
        req.body,
        bundleLimits,
      );
      const body = JSON.stringify({ id: r.id, url: `/bundles/${r.id}/summary`, duplicate: r.duplicate }) + "\n";
      return {
        status: 200,
        headers: { "content-type": "application/json" },
        body,
        outcome: { org, code: null, ...(r.evicted > 0 ? { evictedBundles: r.evicted } : {}) },
      };
    } catch (caught) {
      const e = requestError(caught);
      return { ...textError(e, false), outcome: outcomeOf(org, e) };
    }
  }

  async function bundle(req: CollectorRequest, path: string): Promise<HandlerResult> {
    let org: string | null = null;
    try {
      if (req.method !== "GET" && req.method !== "HEAD")
        throw new IngestError(405, "method-not-allowed", `${path} takes GET`);
      org = auth(req, "read").org;
      const m = /^\/bundles\/([0-9a-f]{16})(\/summary)?$/.exec(path);
      const b = m?.[1] === undefined ? undefined : await store.bundle(org, m[1]);
      if (m === null || b === undefined) throw new IngestError(404, "not-found", "no such bundle");
      if (m[2] === undefined) {
        return {
          status: 200,
          headers: {
            "content-type": "application/gzip",
            "content-disposition": `attachment; filename="${b.name}"`,
            "x-content-type-options": "nosniff",
          },
          body: b.body,
          outcome: { org, code: null },
        };
      }
      const summary = bundleSummary(b.body);
      // Checked on upload, so this is a stored bundle that no longer reads: say so rather than serve nothing.
      if (!summary.ok) throw new IngestError(422, "malformed", summary.message);
      // Rendered here from the bundle's data, every string escaped: the page the device wrote is never served.
      const html = {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": DASHBOARD_CSP,
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      };
      return { status: 200, headers: html, body: renderSummaryHtml(summary.model), outcome: { org, code: null } };
    } catch (caught) {
      const e = requestError(caught);
      return { ...textError(e, true), outcome: outcomeOf(org, e) };
    }
  }

  async function read(req: CollectorRequest, path: string, query: URLSearchParams): Promise<HandlerResult> {
    let org: string | null = null;
    try {
      if (req.method !== "GET" && req.method !== "HEAD")
        throw new IngestError(405, "method-not-allowed", `${path} takes GET`);
      org = auth(req, "read").org;
      const nowMs = now();
      if (path === "/metrics") {
        return {
          status: 200,
          headers: { "content-type": PROMETHEUS_CONTENT_TYPE },
          body: formatFamilies(await fleetFamilies(store, org, nowMs)),
          outcome: { org, code: null },
        };
      }
      const html = {
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": DASHBOARD_CSP,
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      };
      const windowMs = windowOf(query);
      if (path === "/")
        return {
          status: 200,
          headers: html,
          body: await fleetPage(store, org, nowMs, windowMs),
          outcome: { org, code: null },
        };
      let deviceId: string;
      try {
        deviceId = decodeURIComponent(path.slice("/agents/".length));
      } catch {
        throw new IngestError(404, "not-found", "no such agent");
      }
      const agent = await store.agent(org, deviceId);
      if (agent === undefined)
        throw new IngestError(
          404,
          "not-found",
          `no agent ${JSON.stringify(deviceId)} has reported to this organisation`,
        );
      return {
        status: 200,
        headers: html,
        body: await agentPage(store, org, agent, nowMs, windowMs),
        outcome: { org, code: null },
      };
    } catch (caught) {
      const e = requestError(caught);
      return { ...textError(e, path !== "/metrics"), outcome: outcomeOf(org, e) };
    }
  }

  function authorize(head: RequestHead): HandlerResult | null {
    const url = targetOf(head.url);
    if (url === null) return null; // the handler answers it; the body is bounded either way
    const path = url.pathname;
    const signal = INGEST_PATHS[path];
    const role: Role | null =
      signal !== undefined || path === "/v1/diagnostics"
        ? "ingest"
        : path === "/" || path === "/metrics" || path.startsWith("/agents/") || path.startsWith("/bundles/")
          ? "read"
          : null;
    if (role === null) return null;
    try {
      authenticate(tokens, header({ ...head, body: new Uint8Array() }, "authorization"), role, head.mtls ?? null);
      return null;
    } catch (e) {
      if (!(e instanceof IngestError)) throw e;
      const outcome = { org: null, code: e.code };
      if (signal !== undefined) {
        // As ingest answers before it knows the content type: JSON, the one encoding every client reads.
        const headers: Record<string, string> = { "content-type": contentTypeOf("json") };
        if (e.status === 401) headers["www-authenticate"] = 'Bearer realm="Detour collector"';
        return {
          status: e.status,
          headers,
          body: encodeStatus("json", grpcCodeOf(e.status), `${e.code}: ${e.message}`),
          outcome,
        };
      }
      return { ...textError(e, role === "read" && path !== "/metrics"), outcome };
    }
  }

  const handle = async (req: CollectorRequest): Promise<HandlerResult> => {
    const url = targetOf(req.url);
    if (url === null)
      return {
        ...textError(new IngestError(400, "malformed", "the request target must be a path starting with /"), false),
        outcome: { org: null, code: "malformed" },
      };
    const path = url.pathname;
    const signal = INGEST_PATHS[path];
    if (signal !== undefined) return ingest(req, signal);
    if (path === "/v1/diagnostics") return diagnostics(req);
    if (path.startsWith("/bundles/")) return bundle(req, path);
    if (path === "/" || path === "/metrics" || path.startsWith("/agents/")) return read(req, path, url.searchParams);
    if (path === "/healthz")
      return {
        status: 200,
        headers: { "content-type": "text/plain; charset=utf-8" },
        body: "ok\n",
        outcome: { org: null, code: null },
      };
    return {
      ...textError(
        new IngestError(404, "not-found", `no such endpoint ${path}; see /v1/metrics, /v1/logs, /, /metrics`),
        false,
      ),
      outcome: { org: null, code: "not-found" },
    };
  };
  return Object.assign(handle, { authorize });
}
