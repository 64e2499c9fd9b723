/**
 * The collector's storage on PostgreSQL (node-postgres), for several stateless collector replicas in front of one
 * database server: every replica writes through the same unique keys and reads the same tables, so the dashboard
 * and /metrics of any replica show the whole fleet. The schema matches the SQLite one (store.ts) table for table.
 *
 * Exactly once across replicas: a batch's row in `batches` is inserted with ON CONFLICT DO NOTHING inside the
 * batch's transaction; a second replica inserting the same key waits on the unique index until the first commits,
 * then finds it and answers `duplicate` (or stores it, if the first rolled back). Nothing else of the batch is
 * written unless that insert took.
 */
import { readFileSync, statSync } from "node:fs";
import pg from "pg";
import type { MetricName } from "../core/telemetry/names.ts";
import type { AgentEvent, Batch } from "./ingest-contract.ts";
import {
  bundlesToEvict,
  DEFAULT_BUNDLE_LIMITS,
  gatewayHealthOf,
  StorageUnavailableError,
  type AddedBundle,
  type AgentRow,
  type BundleLimits,
  type BundleRow,
  type FailoverRow,
  type GatewayHealth,
  type IngestOutcome,
  type PruneReport,
  type SeriesPoint,
  type TelemetryStorage,
} from "./storage.ts";

/**
 * Each entry moves the schema from version i to i + 1, as store.ts's MIGRATIONS do for SQLite. Never edit a
 * released entry: add one. The indexes serve the same queries as SQLite's (per-agent charts, fleet aggregates,
 * retention by time). Milliseconds are bigint; values double precision.
 */
export const PG_MIGRATIONS: readonly string[] = [
  `CREATE TABLE batches (
     org text NOT NULL, device_id text NOT NULL, signal text NOT NULL, batch_id text NOT NULL,
     received_ms bigint NOT NULL, body_sha256 text NOT NULL,
     PRIMARY KEY (org, device_id, signal, batch_id));
   CREATE INDEX batches_received ON batches (received_ms);
   CREATE TABLE agents (
     org text NOT NULL, device_id text NOT NULL, service_version text, policy_hash text,
     first_seen_ms bigint NOT NULL, last_seen_ms bigint NOT NULL,
     state text, gateway text, protocol text, state_ms bigint,
     PRIMARY KEY (org, device_id));
   CREATE TABLE points (
     org text NOT NULL, device_id text NOT NULL, name text NOT NULL, ts_ms bigint NOT NULL,
     value double precision NOT NULL, count bigint, min double precision, max double precision,
     gateway text, protocol text);
   CREATE INDEX points_device ON points (org, device_id, name, ts_ms);
   CREATE INDEX points_name ON points (org, name, ts_ms);
   CREATE INDEX points_ts ON points (ts_ms);
   CREATE TABLE events (
     org text NOT NULL, device_id text NOT NULL, kind text NOT NULL, ts_ms bigint NOT NULL,
     state text, gateway text, protocol text,
     from_gateway text, from_protocol text, to_gateway text, to_protocol text, reason text,
     detected_after_ms bigint, restored_after_ms bigint);
   CREATE INDEX events_kind ON events (org, kind, ts_ms);
   CREATE INDEX events_device ON events (org, device_id, ts_ms);
   CREATE INDEX events_ts ON events (ts_ms);
   CREATE TABLE bundles (
     org text NOT NULL, id text NOT NULL, device_id text NOT NULL, name text NOT NULL, sha256 text NOT NULL,
     bytes bigint NOT NULL, received_ms bigint NOT NULL, body bytea NOT NULL,
     PRIMARY KEY (org, id));
   CREATE INDEX bundles_device ON bundles (org, device_id, received_ms);
   CREATE INDEX bundles_received ON bundles (received_ms);`,
];

/** Arbitrary constant keys for pg_advisory_xact_lock: replicas starting together migrate one after the other. */
const MIGRATION_LOCK_KEY = 0x64_74_72_01;

/**
 * Connections per replica. A collector's requests each hold one for a transaction of a few round trips; ten keep
 * two cores busy and leave a server's default max_connections (100) room for many replicas.
 */
const POOL_MAX = 10;
/** A replica that cannot reach the server within this answers 503 rather than holding the agent's request. */
const CONNECT_TIMEOUT_MS = 3000;
/**
 * The server cancels a statement running longer than this, and the client gives up on a query after a little
 * more: an answer (stored, or 503) must reach the agent within its own 10 s request timeout.
 */
const STATEMENT_TIMEOUT_MS = 5000;
const QUERY_TIMEOUT_MS = 6000;
/** Idle pooled connections are closed after this; a replica under no load holds none open for long. */
const IDLE_TIMEOUT_MS = 30_000;

/** SQLSTATE classes and codes that mean "not now": connection, resources, shutdown, lock and timeout trouble. */
const RETRYABLE_SQLSTATE = /^(08|53|57P0|58|40001|40P01|55P03|57014)/;
/** Node's socket errors and node-postgres's own words for a lost or unreachable server. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
const CONNECTION_WORDS = /connection terminated|timeout exceeded|query read timeout|not queryable|connection error/i;

/** True when `e` says the database cannot answer now (retry later), false for anything that is a bug. */
export function isUnavailable(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  if (e instanceof pg.DatabaseError) return typeof code === "string" && RETRYABLE_SQLSTATE.test(code);
  if (typeof code === "string" && NETWORK_CODES.has(code)) return true;
  if (e instanceof AggregateError) return e.errors.some(isUnavailable);
  return CONNECTION_WORDS.test(e.message);
}

/** Where a replica's database is, for logs: the URL without its password or query. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.username === "" ? "" : `${decodeURIComponent(u.username)}@`}${u.host}${u.pathname}`;
  } catch {
    return "(unparsable URL)";
  }
}

/**
 * Reads the connection URL from a file of mode 0600 (it may hold a password, like the tokens file): one line,
 * `postgres://user:password@host:port/database[?sslmode=verify-full&sslrootcert=...]`. The URL never travels in
 * argv or logs.
 */
export function readPostgresUrl(path: string): string {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0)
    throw new Error(`PostgreSQL URL file ${path} has mode ${mode.toString(8)}; it holds credentials: chmod 600 it`);
  const url = readFileSync(path, "utf8").trim();
  if (url.includes("\n")) throw new Error(`PostgreSQL URL file ${path} must hold one line, the connection URL`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`PostgreSQL URL file ${path} does not hold a URL (postgres://user:password@host:port/database)`);
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:")
    throw new Error(`PostgreSQL URL file ${path}: the URL must start with postgres://, not ${parsed.protocol}//`);
  if (parsed.hostname === "" || parsed.pathname.length <= 1)
    throw new Error(`PostgreSQL URL file ${path}: the URL must name a host and a database (postgres://host/db)`);
  return url;
}

/** bigint (OID 20) and numeric (1700) as JS numbers: milliseconds and counts stay far below 2^53. */
const builtinParser = pg.types.getTypeParser as (oid: number, format?: string) => (v: string) => unknown;
const TYPES = {
  getTypeParser: (oid: number, format?: string): ((v: string) => unknown) =>
    oid === 20 || oid === 1700 ? Number : builtinParser(oid, format),
} as unknown as pg.CustomTypesConfig;

type Queryable = pg.Pool | pg.PoolClient;

/** The upsert's test that the batch's latest state is not older than the agent's recorded one. */
const NEWER_STATE =
  "excluded.state_ms IS NOT NULL AND (agents.state_ms IS NULL OR agents.state_ms <= excluded.state_ms)";

export interface PostgresStorageOptions {
  /** Called with each error of an idle pooled connection (the server restarting): the log, never a crash. */
  onIdleError?: (e: Error) => void;
}

export class PostgresStorage implements TelemetryStorage {
  readonly kind = "postgresql";
  readonly #pool: pg.Pool;

  private constructor(pool: pg.Pool) {
    this.#pool = pool;
  }

  /**
   * Connects, migrates the schema to the latest version (under an advisory lock, so replicas that start together
   * take turns) and returns the storage. A database from a newer collector is refused rather than misread.
   */
  static async open(url: string, opts: PostgresStorageOptions = {}): Promise<PostgresStorage> {
    const pool = new pg.Pool({
      connectionString: url,
      max: POOL_MAX,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: IDLE_TIMEOUT_MS,
      statement_timeout: STATEMENT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      application_name: "detour-collector",
      types: TYPES,
    });
    // Without a listener an idle connection's error (a server restart) would crash the process.
    pool.on("error", (e) => opts.onIdleError?.(e));
    try {
      await migrate(pool);
    } catch (e) {
      await pool.end().catch(() => undefined);
      if (isUnavailable(e))
        throw new StorageUnavailableError(`PostgreSQL at ${describeUrl(url)}: ${(e as Error).message}`, { cause: e });
      throw e;
    }
    return new PostgresStorage(pool);
  }

  async schemaVersion(): Promise<number> {
    return this.#guard("schema version", async () => schemaVersionOf(this.#pool));
  }

  async close(): Promise<void> {
    await this.#pool.end();
  }

  /** Runs `f`, turning "the database cannot answer now" into StorageUnavailableError. */
  async #guard<T>(what: string, f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (isUnavailable(e))
        throw new StorageUnavailableError(`PostgreSQL: ${what}: ${(e as Error).message}`, { cause: e });
      throw e;
    }
  }

  /** `f` inside one transaction on one pooled connection; rolled back if it throws. */
  async #tx<T>(what: string, f: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.#guard(what, async () => {
      const c = await this.#pool.connect();
      let broken: Error | undefined;
      try {
        await c.query("BEGIN");
        const r = await f(c);
        await c.query("COMMIT");
        return r;
      } catch (e) {
        await c.query("ROLLBACK").catch((re: unknown) => {
          // A connection that cannot roll back is not given back to the pool for reuse.
          broken = re instanceof Error ? re : new Error(String(re));
        });
        throw e;
      } finally {
        c.release(broken);
      }
    });
  }

  async #rows<R>(q: Queryable, sql: string, params: unknown[]): Promise<R[]> {
    const r = await q.query(sql, params);
    return r.rows as R[];
  }

  /**
   * One statement, so one round trip and its own transaction: the batch row is inserted first (ON CONFLICT DO
   * NOTHING), and every other part of the statement writes only if that insert took. The agent's row takes the
   * batch's latest state event in the same upsert, when it is not older than the state already recorded.
   */
  async ingest(org: string, batch: Batch, receivedMs: number, bodySha256: string): Promise<IngestOutcome> {
    const p = batch.points;
    const ev = batch.events.map(eventColumns);
    const col = <K extends keyof EventColumns>(k: K): EventColumns[K][] => ev.map((r) => r[k]);
    // The batch's latest state event (the last of equal times, as applying them in order would leave it).
    let latest: Extract<AgentEvent, { kind: "state" }> | null = null;
    for (const e of batch.events) if (e.kind === "state" && (latest === null || e.tsMs >= latest.tsMs)) latest = e;
    const [row] = await this.#guard("ingest", () =>
      this.#rows<{ stored: number }>(
        this.#pool,
        `WITH b AS (
           INSERT INTO batches (org, device_id, signal, batch_id, received_ms, body_sha256)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING 1),
         a AS (
           INSERT INTO agents (org, device_id, service_version, policy_hash, first_seen_ms, last_seen_ms, state, gateway, protocol, state_ms)
           SELECT $1, $2, $7, $8, $5, $5, $9, $10, $11, $12 WHERE EXISTS (SELECT 1 FROM b)
           ON CONFLICT (org, device_id) DO UPDATE SET
             service_version = coalesce(excluded.service_version, agents.service_version),
             policy_hash = coalesce(excluded.policy_hash, agents.policy_hash),
             last_seen_ms = greatest(agents.last_seen_ms, excluded.last_seen_ms),
             state = CASE WHEN ${NEWER_STATE} THEN excluded.state ELSE agents.state END,
             gateway = CASE WHEN ${NEWER_STATE} THEN excluded.gateway ELSE agents.gateway END,
             protocol = CASE WHEN ${NEWER_STATE} THEN excluded.protocol ELSE agents.protocol END,
             state_ms = CASE WHEN ${NEWER_STATE} THEN excluded.state_ms ELSE agents.state_ms END),
         p AS (
           INSERT INTO points (org, device_id, name, ts_ms, value, count, min, max, gateway, protocol)
           SELECT $1, $2, u.* FROM unnest($13::text[], $14::bigint[], $15::float8[], $16::bigint[], $17::float8[], $18::float8[], $19::text[], $20::text[]) AS u
           WHERE EXISTS (SELECT 1 FROM b)),
         e AS (
           INSERT INTO events (org, device_id, kind, ts_ms, state, gateway, protocol, from_gateway, from_protocol, to_gateway, to_protocol, reason, detected_after_ms, restored_after_ms)
           SELECT $1, $2, u.* FROM unnest($21::text[], $22::bigint[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[], $28::text[], $29::text[], $30::text[], $31::bigint[], $32::bigint[]) AS u
           WHERE EXISTS (SELECT 1 FROM b))
         SELECT count(*) AS stored FROM b`,
        [
          org,
          batch.deviceId,
          batch.signal,
          batch.batchId,
          receivedMs,
          bodySha256,
          batch.serviceVersion,
          batch.policyHash,
          latest?.state ?? null,
          latest?.gateway ?? null,
          latest?.protocol ?? null,
          latest?.tsMs ?? null,
          p.map((x) => x.name),
          p.map((x) => x.tsMs),
          p.map((x) => x.value),
          p.map((x) => x.count),
          p.map((x) => x.min),
          p.map((x) => x.max),
          p.map((x) => x.gateway),
          p.map((x) => x.protocol),
          col("kind"),
          col("tsMs"),
          col("state"),
          col("gateway"),
          col("protocol"),
          col("from"),
          col("fromProtocol"),
          col("to"),
          col("toProtocol"),
          col("reason"),
          col("detectedAfterMs"),
          col("restoredAfterMs"),
        ],
      ),
    );
    if (row?.stored === 1) return { kind: "stored", points: p.length, events: batch.events.length };
    const [seen] = await this.#guard("ingest", () =>
      this.#rows<{ receivedMs: number; sha: string }>(
        this.#pool,
        `SELECT received_ms AS "receivedMs", body_sha256 AS sha FROM batches
         WHERE org = $1 AND device_id = $2 AND signal = $3 AND batch_id = $4`,
        [org, batch.deviceId, batch.signal, batch.batchId],
      ),
    );
    if (seen === undefined) throw new Error("a batch id conflicted but its row is not there");
    return { kind: "duplicate", firstReceivedMs: seen.receivedMs, sameContent: seen.sha === bodySha256 };
  }

  prune(cutoffMs: number): Promise<PruneReport> {
    return this.#tx("retention", async (c) => {
      const del = async (sql: string): Promise<number> => (await c.query(sql, [cutoffMs])).rowCount ?? 0;
      return {
        bundles: await del("DELETE FROM bundles WHERE received_ms < $1"),
        batches: await del("DELETE FROM batches WHERE received_ms < $1"),
        points: await del("DELETE FROM points WHERE ts_ms < $1"),
        events: await del("DELETE FROM events WHERE ts_ms < $1"),
        agents: await del("DELETE FROM agents WHERE last_seen_ms < $1"),
      };
    });
  }

  addBundle(
    org: string,
    b: Omit<BundleRow, "id">,
    body: Uint8Array,
    limits: BundleLimits = DEFAULT_BUNDLE_LIMITS,
  ): Promise<AddedBundle> {
    const id = b.sha256.slice(0, 16);
    return this.#tx("bundle upload", async (c) => {
      // One organisation's uploads take turns across replicas, so two cannot each evict with a stale view.
      await c.query("SELECT pg_advisory_xact_lock(hashtext('detour-bundles'), hashtext($1))", [org]);
      const r = await c.query(
        `INSERT INTO bundles (org, id, device_id, name, sha256, bytes, received_ms, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT DO NOTHING`,
        [org, id, b.deviceId, b.name, b.sha256, b.bytes, b.receivedMs, Buffer.from(body)],
      );
      if (r.rowCount === 0) return { id, duplicate: true, evicted: 0 };
      const rows = await this.#rows<{ id: string; bytes: number }>(
        c,
        `SELECT id, bytes FROM bundles WHERE org = $1 ORDER BY received_ms DESC, id COLLATE "C"`,
        [org],
      );
      const evict = bundlesToEvict(rows, id, limits);
      if (evict.length > 0) await c.query("DELETE FROM bundles WHERE org = $1 AND id = ANY($2::text[])", [org, evict]);
      return { id, duplicate: false, evicted: evict.length };
    });
  }

  bundles(org: string, deviceId?: string, limit = 50): Promise<BundleRow[]> {
    return this.#guard("bundles", () =>
      this.#rows<BundleRow>(
        this.#pool,
        `SELECT id, device_id AS "deviceId", name, sha256, bytes, received_ms AS "receivedMs" FROM bundles
         WHERE org = $1 AND ($2::text IS NULL OR device_id = $2) ORDER BY received_ms DESC LIMIT $3`,
        [org, deviceId ?? null, limit],
      ),
    );
  }

  async bundle(org: string, id: string): Promise<(BundleRow & { body: Buffer }) | undefined> {
    const [row] = await this.#guard("bundle", () =>
      this.#rows<BundleRow & { body: Buffer }>(
        this.#pool,
        `SELECT id, device_id AS "deviceId", name, sha256, bytes, received_ms AS "receivedMs", body FROM bundles
         WHERE org = $1 AND id = $2`,
        [org, id],
      ),
    );
    return row;
  }

  async fleet(org: string): Promise<AgentRow[]> {
    const rows = await this.#guard("fleet", () =>
      this.#rows<Omit<AgentRow, "state"> & { state: string | null }>(
        this.#pool,
        `SELECT a.device_id AS "deviceId", a.service_version AS "serviceVersion", a.policy_hash AS "policyHash",
                a.first_seen_ms AS "firstSeenMs", a.last_seen_ms AS "lastSeenMs", a.state AS state,
                coalesce(a.gateway, p.gateway) AS gateway, coalesce(a.protocol, p.protocol) AS protocol
         FROM agents a
         LEFT JOIN LATERAL (
           SELECT gateway, protocol FROM points
           WHERE a.state IS NULL AND org = a.org AND device_id = a.device_id ORDER BY ts_ms DESC LIMIT 1) p ON true
         WHERE a.org = $1 ORDER BY a.last_seen_ms DESC, a.device_id COLLATE "C"`,
        [org],
      ),
    );
    return rows.map((r) => ({ ...r, state: r.state ?? "unknown" }));
  }

  async agent(org: string, deviceId: string): Promise<AgentRow | undefined> {
    return (await this.fleet(org)).find((a) => a.deviceId === deviceId);
  }

  series(org: string, deviceId: string, name: MetricName, sinceMs: number): Promise<SeriesPoint[]> {
    return this.#guard("series", () =>
      this.#rows<SeriesPoint>(
        this.#pool,
        `SELECT ts_ms AS "tsMs", value, gateway, protocol FROM points
         WHERE org = $1 AND device_id = $2 AND name = $3 AND ts_ms >= $4 ORDER BY ts_ms`,
        [org, deviceId, name, sinceMs],
      ),
    );
  }

  failovers(org: string, sinceMs: number, limit: number, deviceId?: string): Promise<FailoverRow[]> {
    return this.#guard("failovers", () =>
      this.#rows<FailoverRow>(
        this.#pool,
        `SELECT device_id AS "deviceId", ts_ms AS "tsMs", from_gateway AS "from", from_protocol AS "fromProtocol",
                to_gateway AS "to", to_protocol AS "toProtocol", reason, detected_after_ms AS "detectedAfterMs",
                restored_after_ms AS "restoredAfterMs"
         FROM events WHERE org = $1 AND kind = 'failover' AND ts_ms >= $2 AND ($4::text IS NULL OR device_id = $4)
         ORDER BY ts_ms DESC LIMIT $3`,
        [org, sinceMs, limit, deviceId ?? null],
      ),
    );
  }

  gatewayHealth(org: string, sinceMs: number, rtt: MetricName, loss: MetricName): Promise<GatewayHealth[]> {
    return this.#guard("gateway health", async () => {
      const q = this.#pool;
      const [connected, perf, away, to] = await Promise.all([
        this.#rows<{ gateway: string; n: number }>(
          q,
          `SELECT gateway, count(*) AS n FROM agents WHERE org = $1 AND state = 'connected' AND gateway IS NOT NULL
           GROUP BY gateway`,
          [org],
        ),
        this.#rows<{ gateway: string; agents: number; rtt: number | null; loss: number | null }>(
          q,
          `SELECT gateway, count(DISTINCT device_id) AS agents,
                  avg(CASE WHEN name = $1 THEN value END) AS rtt, avg(CASE WHEN name = $2 THEN value END) AS loss
           FROM points WHERE org = $3 AND name IN ($1, $2) AND ts_ms >= $4 AND gateway IS NOT NULL GROUP BY gateway`,
          [rtt, loss, org, sinceMs],
        ),
        this.#rows<{ gateway: string; reason: string | null; n: number }>(
          q,
          `SELECT from_gateway AS gateway, reason, count(*) AS n FROM events
           WHERE org = $1 AND kind = 'failover' AND ts_ms >= $2 AND from_gateway IS NOT NULL
           GROUP BY from_gateway, reason ORDER BY n DESC, reason COLLATE "C" NULLS FIRST`,
          [org, sinceMs],
        ),
        this.#rows<{ gateway: string; n: number }>(
          q,
          `SELECT to_gateway AS gateway, count(*) AS n FROM events
           WHERE org = $1 AND kind = 'failover' AND ts_ms >= $2 AND to_gateway IS NOT NULL GROUP BY to_gateway`,
          [org, sinceMs],
        ),
      ]);
      return gatewayHealthOf({ connected, perf, away, to });
    });
  }

  agentsByState(org: string): Promise<{ state: string; n: number }[]> {
    return this.#guard("agents by state", () =>
      this.#rows<{ state: string; n: number }>(
        this.#pool,
        `SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM agents WHERE org = $1
         GROUP BY 1 ORDER BY coalesce(state, 'unknown') COLLATE "C"`,
        [org],
      ),
    );
  }

  failoverCounts(org: string, sinceMs: number): Promise<{ from: string; to: string; reason: string; n: number }[]> {
    return this.#guard("failover counts", () =>
      this.#rows<{ from: string; to: string; reason: string; n: number }>(
        this.#pool,
        `SELECT coalesce(from_gateway, '') AS "from", coalesce(to_gateway, '') AS "to", coalesce(reason, '') AS reason,
                count(*) AS n
         FROM events WHERE org = $1 AND kind = 'failover' AND ts_ms >= $2
         GROUP BY 1, 2, 3
         ORDER BY coalesce(from_gateway, '') COLLATE "C", coalesce(to_gateway, '') COLLATE "C", coalesce(reason, '') COLLATE "C"`,
        [org, sinceMs],
      ),
    );
  }
}

interface EventColumns {
  kind: string;
  tsMs: number;
  state: string | null;
  gateway: string | null;
  protocol: string | null;
  from: string | null;
  fromProtocol: string | null;
  to: string | null;
  toProtocol: string | null;
  reason: string | null;
  detectedAfterMs: number | null;
  restoredAfterMs: number | null;
}

function eventColumns(e: AgentEvent): EventColumns {
  const none = { from: null, fromProtocol: null, to: null, toProtocol: null, reason: null };
  return e.kind === "state"
    ? {
        kind: e.kind,
        tsMs: e.tsMs,
        state: e.state,
        gateway: e.gateway,
        protocol: e.protocol,
        ...none,
        detectedAfterMs: null,
        restoredAfterMs: null,
      }
    : {
        kind: e.kind,
        tsMs: e.tsMs,
        state: null,
        gateway: null,
        protocol: null,
        from: e.from,
        fromProtocol: e.fromProtocol,
        to: e.to,
        toProtocol: e.toProtocol,
        reason: e.reason,
        detectedAfterMs: e.detectedAfterMs,
        restoredAfterMs: e.restoredAfterMs,
      };
}

async function schemaVersionOf(q: Queryable): Promise<number> {
  const exists = await q.query("SELECT to_regclass('detour_schema') IS NOT NULL AS ok");
  if ((exists.rows[0] as { ok: boolean } | undefined)?.ok !== true) return 0;
  const r = await q.query("SELECT version FROM detour_schema");
  return (r.rows[0] as { version: number } | undefined)?.version ?? 0;
}

async function migrate(pool: pg.Pool): Promise<void> {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    // Transactional DDL: a migration is applied entirely or not at all, and replicas wait their turn here.
    await c.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
    await c.query("CREATE TABLE IF NOT EXISTS detour_schema (version integer NOT NULL)");
    const current = await schemaVersionOf(c);
    if (current > PG_MIGRATIONS.length) {
      throw new Error(
        `the database has schema version ${current}, newer than this collector knows (${PG_MIGRATIONS.length}); use a newer collector`,
      );
    }
    for (let v = current; v < PG_MIGRATIONS.length; v++) {
      const sql = PG_MIGRATIONS[v];
      if (sql !== undefined) await c.query(sql);
    }
    if (current < PG_MIGRATIONS.length) {
      await c.query("DELETE FROM detour_schema");
      await c.query("INSERT INTO detour_schema (version) VALUES ($1)", [PG_MIGRATIONS.length]);
    }
    await c.query("COMMIT");
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  } finally {
    c.release();
  }
}
