/**
 * The collector's server: node:http (or node:https with client-certificate verification for mTLS) around the
 * pure handler, a bounded body reader, a retention sweep and a JSON access log without tokens or bodies.
 *
 *   node --import tsx main/collector/server.ts --listen 0.0.0.0:4318 (--db <file> | --postgres <url file>)
 *        --tokens <file> [--retention-days 30] [--tls-cert <pem> --tls-key <pem> [--client-ca <pem>]]
 *        [--insecure-plain-http]
 *
 * --db keeps everything in one SQLite file (one collector process); --postgres names a file (mode 0600) holding a
 * PostgreSQL connection URL, for any number of replicas in front of one database (see postgres-store.ts).
 *
 * Tokens travel in every request, so plain HTTP is for loopback only unless --insecure-plain-http says otherwise
 * (a lab, or TLS ended by a proxy in front), and then the start says so loudly. A request's token is checked
 * from its headers before its body is read, so an unauthenticated peer cannot make the collector read a megabyte.
 */
import { readFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { TLSSocket } from "node:tls";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { BodyTooLargeError, readBoundedBody } from "../shared/bounded-body.ts";
import { TokenTable } from "./auth.ts";
import { createHandler, MAX_BODY_BYTES, type CollectorRequest, type Handler } from "./handler.ts";
import { describeUrl, PostgresStorage, readPostgresUrl } from "./postgres-store.ts";
import type { BundleLimits, TelemetryStorage } from "./storage.ts";
import { SqliteStorage } from "./store.ts";

/** Thirty days covers a month of trends and the longest holiday an agent spends offline with a full spool. */
export const DEFAULT_RETENTION_DAYS = 30;
/** Retention runs this often: old data may outlive its window by at most this much, and a sweep is cheap. */
const RETENTION_SWEEP_INTERVAL_MS = 10 * 60_000;
/** A client must send all headers within this; it stops slow-header (slowloris) clients from holding sockets. */
const HEADERS_TIMEOUT_MS = 10_000;
/** The whole request (a body of at most MAX_BODY_BYTES) must arrive within this, even over a slow uplink. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Idle keep-alive connections are closed after this; exporters post every few seconds to a minute. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;
/**
 * Connections open at once. A fleet's agents post every few seconds to a minute over short-lived or keep-alive
 * connections; 512 serves thousands of agents, and bounds the sockets (and bodies in flight, at most 1 MiB each)
 * that peers, authenticated or not, can make the collector hold. Past it, new connections are closed at once.
 */
export const DEFAULT_MAX_CONNECTIONS = 512;
/** On SIGTERM, open requests get this long to finish before the process exits anyway. */
const SHUTDOWN_GRACE_MS = 3_000;

const EXIT_USAGE = 2;

/** The access and event log: one JSON object per line on stdout. */
export type CollectorLog = (fields: Record<string, unknown>) => void;

const log: CollectorLog = (fields) => {
  process.stdout.write(`${JSON.stringify({ service: "detour-collector", at: new Date().toISOString(), ...fields })}\n`);
};

const USAGE =
  "usage: server.ts --listen <host:port> (--db <file> | --postgres <url file>) --tokens <file> [--retention-days N] [--tls-cert <pem> --tls-key <pem> [--client-ca <pem>]] [--insecure-plain-http] [--max-connections N]";

/** A bad command line: main prints it with the usage and exits 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

function usage(message: string): never {
  throw new UsageError(message);
}

/** True for an address (or name) that only this host can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export interface ServerOptions {
  host: string;
  port: number;
  /** Where records are kept: one SQLite file, or the PostgreSQL server whose URL is in a private file. */
  storage: { kind: "sqlite"; path: string } | { kind: "postgresql"; urlFile: string };
  tokensFile: string;
  retentionDays: number;
  tls: { cert: string; key: string; clientCa: string | null } | null;
  /** Plain HTTP on an address other hosts can reach: only with --insecure-plain-http. */
  insecurePlainHttp?: boolean;
  /** Connections open at once (DEFAULT_MAX_CONNECTIONS). */
  maxConnections?: number;
  /** Bundle storage per organisation (DEFAULT_BUNDLE_LIMITS). */
  bundleLimits?: BundleLimits;
  /** Where log lines go (stdout by default; tests pass their own). */
  log?: CollectorLog;
}

export function parseServerArgs(argv: readonly string[]): ServerOptions {
  let values;
  try {
    values = parseArgs({
      args: [...argv],
      strict: true,
      options: {
        listen: { type: "string" },
        db: { type: "string" },
        postgres: { type: "string" },
        tokens: { type: "string" },
        "retention-days": { type: "string", default: String(DEFAULT_RETENTION_DAYS) },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "client-ca": { type: "string" },
        "insecure-plain-http": { type: "boolean", default: false },
        "max-connections": { type: "string", default: String(DEFAULT_MAX_CONNECTIONS) },
      },
    }).values;
  } catch (e) {
    return usage((e as Error).message);
  }
  const m = /^(.+):(\d{1,5})$/.exec(values.listen ?? "");
  if (m === null) return usage("--listen <host:port> is required, e.g. 0.0.0.0:4318");
  const port = Number(m[2]);
  if (port > 65535) return usage(`--listen port ${port} is out of range`);
  if (values.db !== undefined && values.postgres !== undefined)
    return usage("--db (SQLite) and --postgres (PostgreSQL) exclude each other; give one");
  if (values.db === undefined && values.postgres === undefined)
    return usage(
      "--db <file> (SQLite) or --postgres <file> (a file of mode 0600 holding the PostgreSQL connection URL) is required",
    );
  if (values.postgres !== undefined && /^postgres(ql)?:\/\//.test(values.postgres))
    return usage(
      "--postgres takes a file holding the connection URL, not the URL itself: a password in argv is visible to every user of the machine",
    );
  if (values.tokens === undefined) return usage("--tokens <file> is required");
  const retentionDays = Number(values["retention-days"]);
  if (!Number.isFinite(retentionDays) || retentionDays <= 0) return usage("--retention-days must be a positive number");
  const cert = values["tls-cert"];
  const key = values["tls-key"];
  if ((cert === undefined) !== (key === undefined)) return usage("--tls-cert and --tls-key go together");
  if (values["client-ca"] !== undefined && cert === undefined)
    return usage("--client-ca (mTLS) needs --tls-cert and --tls-key");
  const host = (m[1] ?? "").replace(/^\[(.*)\]$/, "$1");
  const insecurePlainHttp = values["insecure-plain-http"];
  if (cert === undefined && !isLoopbackHost(host) && !insecurePlainHttp)
    return usage(
      `--listen ${host} without --tls-cert would send every token in clear to anyone on the path; give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure-plain-http if TLS ends in front of the collector`,
    );
  const maxConnections = Number(values["max-connections"]);
  if (!Number.isInteger(maxConnections) || maxConnections < 1)
    return usage(`--max-connections must be a positive integer; got ${values["max-connections"]}`);
  return {
    host,
    insecurePlainHttp,
    maxConnections,
    port,
    storage:
      values.postgres !== undefined
        ? { kind: "postgresql", urlFile: values.postgres }
        : { kind: "sqlite", path: values.db ?? "" },
    tokensFile: values.tokens,
    retentionDays,
    tls: cert === undefined || key === undefined ? null : { cert, key, clientCa: values["client-ca"] ?? null },
  };
}

function certOrgOf(req: IncomingMessage): string | null {
  const socket = req.socket;
  if (!(socket instanceof TLSSocket) || !socket.authorized) return null;
  const o = socket.getPeerCertificate().subject.O;
  return (Array.isArray(o) ? o[0] : o) ?? null;
}

function serve(
  handler: Handler,
  mtls: boolean,
  log: CollectorLog,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const t0 = performance.now();
    const path = (req.url ?? "/").split("?")[0];
    const finish = (
      status: number,
      headers: Record<string, string>,
      body: string | Uint8Array,
      fields: Record<string, unknown>,
    ): void => {
      res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(body)) });
      res.end(req.method === "HEAD" ? undefined : body);
      log({
        method: req.method,
        path,
        status,
        ms: Math.round(performance.now() - t0),
        peer: req.socket.remoteAddress,
        ...fields,
      });
    };
    const head = {
      method: req.method ?? "GET",
      url: req.url ?? "/",
      headers: req.headers,
      ...(mtls ? { mtls: { certOrg: certOrgOf(req) } } : {}),
    };
    const refused = handler.authorize(head);
    if (refused !== null) {
      // The body is never read: closing afterwards stops the peer from sending it.
      res.setHeader("connection", "close");
      finish(refused.status, refused.headers, refused.body, { org: refused.outcome.org, code: refused.outcome.code });
      return;
    }
    readBoundedBody(req, MAX_BODY_BYTES).then(
      async (body) => {
        const r: CollectorRequest = { ...head, body };
        let out;
        try {
          out = await handler(r);
        } catch (e) {
          // A bug in one request must not take the collector down for everyone else; it is logged loudly.
          log({ level: "error", path, error: (e as Error).stack ?? String(e) });
          finish(500, { "content-type": "text/plain; charset=utf-8" }, "internal error\n", { code: "internal" });
          return;
        }
        finish(out.status, out.headers, out.body, {
          org: out.outcome.org,
          code: out.outcome.code,
          stored: out.outcome.stored,
          evictedBundles: out.outcome.evictedBundles,
          ...(out.outcome.storageError === undefined ? {} : { level: "warn", storageError: out.outcome.storageError }),
        });
      },
      (e: unknown) => {
        if (e instanceof BodyTooLargeError) {
          // The rest of the body is discarded unread; closing afterwards stops the peer from sending more.
          res.setHeader("connection", "close");
          finish(
            413,
            { "content-type": "text/plain; charset=utf-8" },
            `too-large: the body exceeds ${MAX_BODY_BYTES} bytes\n`,
            { code: "too-large" },
          );
          return;
        }
        log({ level: "warn", path, error: `request aborted: ${(e as Error).message}` });
        res.destroy();
      },
    );
  };
}

/** What the start says, on stderr and in the log, when it listens in plain HTTP beyond this host; else null. */
export function plainHttpWarning(opts: Pick<ServerOptions, "tls" | "host">): string | null {
  if (opts.tls !== null || isLoopbackHost(opts.host)) return null;
  return `WARNING: plain HTTP on ${opts.host} (--insecure-plain-http): tokens and telemetry cross the network unencrypted; use --tls-cert and --tls-key unless TLS ends in front of this collector`;
}

export interface RunningCollector {
  server: Server;
  address: AddressInfo;
  /** Where records go, for the start-up line: the SQLite file, or the PostgreSQL URL without its password. */
  storage: string;
  close(): Promise<void>;
}

export async function startCollector(opts: ServerOptions): Promise<RunningCollector> {
  const tokens = TokenTable.load(opts.tokensFile);
  const logTo = opts.log ?? log;
  let store: TelemetryStorage;
  let storage: string;
  if (opts.storage.kind === "sqlite") {
    store = SqliteStorage.open(opts.storage.path);
    storage = `sqlite ${opts.storage.path}`;
  } else {
    const url = readPostgresUrl(opts.storage.urlFile);
    storage = `postgresql ${describeUrl(url)}`;
    store = await PostgresStorage.open(url, {
      onIdleError: (e) => {
        logTo({ level: "warn", msg: "a pooled PostgreSQL connection failed", error: e.message });
      },
    });
  }
  const retentionMs = opts.retentionDays * 24 * 3_600_000;
  const handler = createHandler({
    store,
    tokens,
    now: () => Date.now(),
    retentionMs,
    ...(opts.bundleLimits === undefined ? {} : { bundleLimits: opts.bundleLimits }),
  });
  const listener = serve(handler, opts.tls?.clientCa != null, logTo);
  const server: Server =
    opts.tls === null
      ? createHttpServer(listener)
      : createHttpsServer(
          {
            cert: readFileSync(opts.tls.cert),
            key: readFileSync(opts.tls.key),
            ...(opts.tls.clientCa === null
              ? {}
              : { ca: readFileSync(opts.tls.clientCa), requestCert: true, rejectUnauthorized: true }),
          },
          listener,
        );
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  server.on("drop", (d?: { remoteAddress?: string }) => {
    logTo({
      level: "warn",
      msg: "connection refused: too many open",
      peer: d?.remoteAddress,
      max: server.maxConnections,
    });
  });
  // Every replica sweeps; the deletes are idempotent, so replicas of one database need no coordination for it.
  const sweep = (): void => {
    store.prune(Date.now() - retentionMs).then(
      (r) => {
        if (r.bundles + r.batches + r.points + r.events + r.agents > 0) logTo({ retention: r });
      },
      (e: unknown) => {
        logTo({ level: "warn", msg: "retention sweep failed; the next one retries", error: (e as Error).message });
      },
    );
  };
  sweep();
  const timer = setInterval(sweep, RETENTION_SWEEP_INTERVAL_MS);
  timer.unref();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    server,
    address,
    storage,
    close: async () => {
      clearInterval(timer);
      const closed = new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      server.closeIdleConnections();
      const grace = setTimeout(() => {
        server.closeAllConnections();
      }, SHUTDOWN_GRACE_MS);
      await closed;
      clearTimeout(grace);
      await store.close();
    },
  };
}

async function main(): Promise<void> {
  let opts: ServerOptions;
  try {
    opts = parseServerArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`collector: ${e.message}\n${USAGE}\n`);
    process.exit(EXIT_USAGE);
  }
  let c: RunningCollector;
  try {
    c = await startCollector(opts);
  } catch (e) {
    process.stderr.write(`collector: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const scheme = opts.tls === null ? "http" : "https";
  const warning = plainHttpWarning(opts);
  if (warning !== null) {
    process.stderr.write(`collector: ${warning}\n`);
    log({ level: "warn", msg: warning });
  }
  log({
    msg: "collector ready",
    url: `${scheme}://${opts.host}:${c.address.port}`,
    storage: c.storage,
    retentionDays: opts.retentionDays,
    mtls: opts.tls?.clientCa != null,
  });
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log({ msg: `stopping on ${signal}` });
    c.close().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`collector: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => {
    stop("SIGTERM");
  });
  process.on("SIGINT", () => {
    stop("SIGINT");
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main();
}
