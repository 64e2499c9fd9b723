/**
 * The collector's storage on SQLite (better-sqlite3), the embedded default behind TelemetryStorage: batches (the idempotency and replay key), metric points,
 * agent events and the latest view of each agent, per organisation. The schema moves forward by numbered
 * migrations (PRAGMA user_version); retention deletes by age; the indexes serve the dashboard's queries.
 * Every write of a batch is one transaction, so a batch is stored entirely or not at all.
 */
import Database from "better-sqlite3";
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
 * Each entry moves the schema from version i to i + 1. Never edit a released entry: add one. The index on
 * (org, device, name, ts) serves per-agent charts; (org, name, ts) the fleet aggregates; the ts-only indexes
 * make retention a range delete.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE batches (
     org TEXT NOT NULL, device_id TEXT NOT NULL, signal TEXT NOT NULL, batch_id TEXT NOT NULL,
     received_ms INTEGER NOT NULL, body_sha256 TEXT NOT NULL,
     PRIMARY KEY (org, device_id, signal, batch_id)) WITHOUT ROWID;
   CREATE INDEX batches_received ON batches (received_ms);
   CREATE TABLE agents (
     org TEXT NOT NULL, device_id TEXT NOT NULL, service_version TEXT, policy_hash TEXT,
     first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
     state TEXT, gateway TEXT, protocol TEXT, state_ms INTEGER,
     PRIMARY KEY (org, device_id)) WITHOUT ROWID;
   CREATE TABLE points (
     org TEXT NOT NULL, device_id TEXT NOT NULL, name TEXT NOT NULL, ts_ms INTEGER NOT NULL,
     value REAL NOT NULL, count INTEGER, min REAL, max REAL, gateway TEXT, protocol TEXT);
   CREATE INDEX points_device ON points (org, device_id, name, ts_ms);
   CREATE INDEX points_name ON points (org, name, ts_ms);
   CREATE INDEX points_ts ON points (ts_ms);
   CREATE TABLE events (
     org TEXT NOT NULL, device_id TEXT NOT NULL, kind TEXT NOT NULL, ts_ms INTEGER NOT NULL,
     state TEXT, gateway TEXT, protocol TEXT,
     from_gateway TEXT, from_protocol TEXT, to_gateway TEXT, to_protocol TEXT, reason TEXT,
     detected_after_ms INTEGER, restored_after_ms INTEGER);
   CREATE INDEX events_kind ON events (org, kind, ts_ms);
   CREATE INDEX events_device ON events (org, device_id, ts_ms);
   CREATE INDEX events_ts ON events (ts_ms);`,
  // Diagnostic bundles uploaded by agents (at most MAX_BODY_BYTES each), kept like the rest by retention.
  `CREATE TABLE bundles (
     org TEXT NOT NULL, id TEXT NOT NULL, device_id TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
     bytes INTEGER NOT NULL, received_ms INTEGER NOT NULL, body BLOB NOT NULL,
     PRIMARY KEY (org, id)) WITHOUT ROWID;
   CREATE INDEX bundles_device ON bundles (org, device_id, received_ms);
   CREATE INDEX bundles_received ON bundles (received_ms);`,
];

/** One batch to store, as ingestMany takes them. */
export interface IngestItem {
  org: string;
  batch: Batch;
  receivedMs: number;
  bodySha256: string;
}

export class CollectorStore {
  readonly #db: Database.Database;
  readonly #stmt: ReturnType<typeof prepareIngest>;
  readonly #ingestOne: (org: string, batch: Batch, receivedMs: number, bodySha256: string) => IngestOutcome;

  private constructor(db: Database.Database) {
    this.#db = db;
    // Prepared once: preparing the ingest's statements for every batch cost about a tenth of its time.
    this.#stmt = prepareIngest(db);
    // Called inside ingestMany's transaction, better-sqlite3 runs this as a savepoint: one batch's failure undoes
    // that batch only.
    this.#ingestOne = db.transaction((org: string, batch: Batch, receivedMs: number, bodySha256: string) =>
      this.#write(org, batch, receivedMs, bodySha256),
    );
  }

  /** Opens (or creates) the database at `path` (":memory:" for tests) and migrates it to the latest schema. */
  static open(path: string): CollectorStore {
    const db = new Database(path);
    // WAL lets the dashboard read while an ingest writes; NORMAL sync is durable across a crash of the process.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma("foreign_keys = ON");
    migrate(db);
    return new CollectorStore(db);
  }

  schemaVersion(): number {
    return this.#db.pragma("user_version", { simple: true }) as number;
  }

  close(): void {
    this.#db.close();
  }

  /** Stores a batch unless its id was seen before for this org, device and signal. */
  ingest(org: string, batch: Batch, receivedMs: number, bodySha256: string): IngestOutcome {
    return this.#ingestOne(org, batch, receivedMs, bodySha256);
  }

  /**
   * Stores several batches in one transaction (one commit: most of a small batch's cost is its commit), each batch
   * still all or nothing and at most once, in order (a batch twice in the list is stored once, then a duplicate).
   * Per item: the outcome, or the error that undid that item alone. If the commit itself fails, it throws and
   * nothing of any item is stored.
   */
  ingestMany(items: readonly IngestItem[]): (IngestOutcome | Error)[] {
    return this.#db.transaction(() =>
      items.map((it): IngestOutcome | Error => {
        try {
          return this.#ingestOne(it.org, it.batch, it.receivedMs, it.bodySha256);
        } catch (e) {
          return e instanceof Error ? e : new Error(String(e));
        }
      }),
    )();
  }

  #write(org: string, batch: Batch, receivedMs: number, bodySha256: string): IngestOutcome {
    const st = this.#stmt;
    const seen = st.seen.get(org, batch.deviceId, batch.signal, batch.batchId) as
      { receivedMs: number; sha: string } | undefined;
    if (seen !== undefined)
      return { kind: "duplicate", firstReceivedMs: seen.receivedMs, sameContent: seen.sha === bodySha256 };
    st.insBatch.run(org, batch.deviceId, batch.signal, batch.batchId, receivedMs, bodySha256);
    st.upsertAgent.run(org, batch.deviceId, batch.serviceVersion, batch.policyHash, receivedMs, receivedMs);
    for (const p of batch.points)
      st.insPoint.run(org, batch.deviceId, p.name, p.tsMs, p.value, p.count, p.min, p.max, p.gateway, p.protocol);
    for (const e of batch.events) {
      st.insEvent.run(...eventRow(org, batch.deviceId, e));
      if (e.kind === "state") st.setState.run(e.state, e.gateway, e.protocol, e.tsMs, org, batch.deviceId, e.tsMs);
    }
    return { kind: "stored", points: batch.points.length, events: batch.events.length };
  }

  /** Deletes everything older than `cutoffMs`: data by its own time, batch ids and agents by when last heard. */
  prune(cutoffMs: number): PruneReport {
    const db = this.#db;
    return db.transaction((): PruneReport => ({
      bundles: db.prepare("DELETE FROM bundles WHERE received_ms < ?").run(cutoffMs).changes,
      batches: db.prepare("DELETE FROM batches WHERE received_ms < ?").run(cutoffMs).changes,
      points: db.prepare("DELETE FROM points WHERE ts_ms < ?").run(cutoffMs).changes,
      events: db.prepare("DELETE FROM events WHERE ts_ms < ?").run(cutoffMs).changes,
      agents: db.prepare("DELETE FROM agents WHERE last_seen_ms < ?").run(cutoffMs).changes,
    }))();
  }

  /**
   * Stores a bundle once: its id is its content's hash, so a retried upload finds the first copy. The
   * organisation's bundles stay within `limits` (count and bytes): the oldest are evicted to make room, in the same
   * transaction, because the newest bundle is the one helpdesk asked for. `evicted` counts them.
   */
  addBundle(
    org: string,
    b: Omit<BundleRow, "id">,
    body: Uint8Array,
    limits: BundleLimits = DEFAULT_BUNDLE_LIMITS,
  ): AddedBundle {
    const id = b.sha256.slice(0, 16);
    const db = this.#db;
    return db.transaction(() => {
      const r = db
        .prepare(
          "INSERT OR IGNORE INTO bundles (org, id, device_id, name, sha256, bytes, received_ms, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .run(org, id, b.deviceId, b.name, b.sha256, b.bytes, b.receivedMs, Buffer.from(body));
      if (r.changes === 0) return { id, duplicate: true, evicted: 0 };
      const rows = db.prepare("SELECT id, bytes FROM bundles WHERE org = ? ORDER BY received_ms DESC, id").all(org) as {
        id: string;
        bytes: number;
      }[];
      const evict = bundlesToEvict(rows, id, limits);
      const del = db.prepare("DELETE FROM bundles WHERE org = ? AND id = ?");
      for (const e of evict) del.run(org, e);
      return { id, duplicate: false, evicted: evict.length };
    })();
  }

  /** The organisation's bundles (of one device when given), newest first. */
  bundles(org: string, deviceId?: string, limit = 50): BundleRow[] {
    const sql = `SELECT id, device_id AS deviceId, name, sha256, bytes, received_ms AS receivedMs FROM bundles WHERE org = ?${deviceId === undefined ? "" : " AND device_id = ?"} ORDER BY received_ms DESC LIMIT ?`;
    const params: unknown[] = deviceId === undefined ? [org, limit] : [org, deviceId, limit];
    return this.#db.prepare(sql).all(...params) as BundleRow[];
  }

  bundle(org: string, id: string): (BundleRow & { body: Buffer }) | undefined {
    return this.#db
      .prepare(
        "SELECT id, device_id AS deviceId, name, sha256, bytes, received_ms AS receivedMs, body FROM bundles WHERE org = ? AND id = ?",
      )
      .get(org, id) as (BundleRow & { body: Buffer }) | undefined;
  }

  /** Every agent of the organisation, most recently heard first. */
  fleet(org: string): AgentRow[] {
    const rows = this.#db
      .prepare(
        `SELECT a.device_id AS deviceId, a.service_version AS serviceVersion, a.policy_hash AS policyHash,
                a.first_seen_ms AS firstSeenMs, a.last_seen_ms AS lastSeenMs, a.state AS state,
                coalesce(a.gateway, p.gateway) AS gateway, coalesce(a.protocol, p.protocol) AS protocol
         FROM agents a
         LEFT JOIN points p ON a.state IS NULL AND p.rowid = (
           SELECT rowid FROM points WHERE org = a.org AND device_id = a.device_id ORDER BY ts_ms DESC LIMIT 1)
         WHERE a.org = ? ORDER BY a.last_seen_ms DESC, a.device_id`,
      )
      .all(org) as (Omit<AgentRow, "state"> & { state: string | null })[];
    return rows.map((r) => ({ ...r, state: r.state ?? "unknown" }));
  }

  agent(org: string, deviceId: string): AgentRow | undefined {
    return this.fleet(org).find((a) => a.deviceId === deviceId);
  }

  /** One metric of one agent since `sinceMs`, oldest first. */
  series(org: string, deviceId: string, name: MetricName, sinceMs: number): SeriesPoint[] {
    return this.#db
      .prepare(
        "SELECT ts_ms AS tsMs, value, gateway, protocol FROM points WHERE org = ? AND device_id = ? AND name = ? AND ts_ms >= ? ORDER BY ts_ms",
      )
      .all(org, deviceId, name, sinceMs) as SeriesPoint[];
  }

  /** Failovers since `sinceMs`, newest first, of the whole fleet or one agent. */
  failovers(org: string, sinceMs: number, limit: number, deviceId?: string): FailoverRow[] {
    return this.#db
      .prepare(
        `SELECT device_id AS deviceId, ts_ms AS tsMs, from_gateway AS "from", from_protocol AS fromProtocol, to_gateway AS "to",
                to_protocol AS toProtocol, reason, detected_after_ms AS detectedAfterMs, restored_after_ms AS restoredAfterMs
         FROM events WHERE org = ? AND kind = 'failover' AND ts_ms >= ? AND (? IS NULL OR device_id = ?)
         ORDER BY ts_ms DESC LIMIT ?`,
      )
      .all(org, sinceMs, deviceId ?? null, deviceId ?? null, limit) as FailoverRow[];
  }

  /** Per gateway, aggregated across agents over [sinceMs, now]: who is on it, how it performs, who leaves it. */
  gatewayHealth(org: string, sinceMs: number, rtt: MetricName, loss: MetricName): GatewayHealth[] {
    const db = this.#db;
    const connected = db
      .prepare(
        "SELECT gateway, count(*) AS n FROM agents WHERE org = ? AND state = 'connected' AND gateway IS NOT NULL GROUP BY gateway",
      )
      .all(org) as { gateway: string; n: number }[];
    const perf = db
      .prepare(
        `SELECT gateway, count(DISTINCT device_id) AS agents,
                avg(CASE WHEN name = ? THEN value END) AS rtt, avg(CASE WHEN name = ? THEN value END) AS loss
         FROM points WHERE org = ? AND name IN (?, ?) AND ts_ms >= ? AND gateway IS NOT NULL GROUP BY gateway`,
      )
      .all(rtt, loss, org, rtt, loss, sinceMs) as {
      gateway: string;
      agents: number;
      rtt: number | null;
      loss: number | null;
    }[];
    const away = db
      .prepare(
        "SELECT from_gateway AS gateway, reason, count(*) AS n FROM events WHERE org = ? AND kind = 'failover' AND ts_ms >= ? AND from_gateway IS NOT NULL GROUP BY from_gateway, reason ORDER BY n DESC, reason",
      )
      .all(org, sinceMs) as { gateway: string; reason: string | null; n: number }[];
    const to = db
      .prepare(
        "SELECT to_gateway AS gateway, count(*) AS n FROM events WHERE org = ? AND kind = 'failover' AND ts_ms >= ? AND to_gateway IS NOT NULL GROUP BY to_gateway",
      )
      .all(org, sinceMs) as { gateway: string; n: number }[];
    return gatewayHealthOf({ connected, perf, away, to });
  }

  /** Agents by state, for /metrics. */
  agentsByState(org: string): { state: string; n: number }[] {
    return this.#db
      .prepare(
        "SELECT coalesce(state, 'unknown') AS state, count(*) AS n FROM agents WHERE org = ? GROUP BY 1 ORDER BY 1",
      )
      .all(org) as { state: string; n: number }[];
  }

  /** Failovers since `sinceMs` per (from, to, reason), for /metrics. */
  failoverCounts(org: string, sinceMs: number): { from: string; to: string; reason: string; n: number }[] {
    return this.#db
      .prepare(
        `SELECT coalesce(from_gateway, '') AS "from", coalesce(to_gateway, '') AS "to", coalesce(reason, '') AS reason, count(*) AS n
         FROM events WHERE org = ? AND kind = 'failover' AND ts_ms >= ? GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
      )
      .all(org, sinceMs) as { from: string; to: string; reason: string; n: number }[];
  }
}

function prepareIngest(db: Database.Database) {
  return {
    seen: db.prepare(
      "SELECT received_ms AS receivedMs, body_sha256 AS sha FROM batches WHERE org = ? AND device_id = ? AND signal = ? AND batch_id = ?",
    ),
    insBatch: db.prepare(
      "INSERT INTO batches (org, device_id, signal, batch_id, received_ms, body_sha256) VALUES (?, ?, ?, ?, ?, ?)",
    ),
    upsertAgent: db.prepare(
      `INSERT INTO agents (org, device_id, service_version, policy_hash, first_seen_ms, last_seen_ms) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (org, device_id) DO UPDATE SET
         service_version = coalesce(excluded.service_version, service_version),
         policy_hash = coalesce(excluded.policy_hash, policy_hash),
         last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)`,
    ),
    insPoint: db.prepare(
      "INSERT INTO points (org, device_id, name, ts_ms, value, count, min, max, gateway, protocol) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    insEvent: db.prepare(
      `INSERT INTO events (org, device_id, kind, ts_ms, state, gateway, protocol, from_gateway, from_protocol, to_gateway, to_protocol, reason, detected_after_ms, restored_after_ms)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ),
    setState: db.prepare(
      "UPDATE agents SET state = ?, gateway = ?, protocol = ?, state_ms = ? WHERE org = ? AND device_id = ? AND (state_ms IS NULL OR state_ms <= ?)",
    ),
  };
}

function eventRow(org: string, deviceId: string, e: AgentEvent): (string | number | null)[] {
  return e.kind === "state"
    ? [org, deviceId, e.kind, e.tsMs, e.state, e.gateway, e.protocol, null, null, null, null, null, null, null]
    : [
        org,
        deviceId,
        e.kind,
        e.tsMs,
        null,
        null,
        null,
        e.from,
        e.fromProtocol,
        e.to,
        e.toProtocol,
        e.reason,
        e.detectedAfterMs,
        e.restoredAfterMs,
      ];
}

function migrate(db: Database.Database): void {
  const current = db.pragma("user_version", { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new Error(
      `the database has schema version ${current}, newer than this collector knows (${MIGRATIONS.length}); use a newer collector`,
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    const sql = MIGRATIONS[v];
    if (sql === undefined) break;
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/** SQLite's result codes that mean "not now" rather than a bug: a lock held elsewhere, a full or failing disk. */
const SQLITE_UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|FULL|IOERR|CANTOPEN)/;

/** A "not now" failure of SQLite as StorageUnavailableError; anything else as it is. */
function unavailableOrSelf(what: string, e: unknown): Error {
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string" && SQLITE_UNAVAILABLE.test(code))
    return new StorageUnavailableError(`SQLite: ${what}: ${(e as Error).message}`, { cause: e });
  return e instanceof Error ? e : new Error(String(e));
}

/** Runs a synchronous store call as the interface's promise. */
function guarded<T>(what: string, f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(unavailableOrSelf(what, e));
  }
}

/**
 * Batches waiting for the next group commit are written together once this many are queued, without waiting for
 * the turn of the event loop to end: it bounds one transaction (a few milliseconds) under a flood.
 */
const GROUP_COMMIT_MAX = 256;

interface Pending extends IngestItem {
  resolve(o: IngestOutcome): void;
  reject(e: unknown): void;
}

/**
 * TelemetryStorage on one SQLite file. better-sqlite3 is synchronous, which suits one process: each call runs to
 * completion on the event loop. Ingests are committed in groups: every batch handed over during one turn of the
 * event loop (the requests read together under load) goes into one transaction at the end of that turn, so a
 * commit's cost is shared; each answer waits for its group's commit, so "stored" always means committed.
 * SQLite's automatic WAL checkpoint (every 1000 pages, inside the commit that crosses it) is kept: checkpointing
 * from a thread of its own, every second, measured a worse tail (p99 12-15 ms, max 40-45 ms against 7-8 and 9-14
 * ms at 1500 batches/s on this machine's disk), its fsyncs stalling the writer's appends to the WAL.
 */
export class SqliteStorage implements TelemetryStorage {
  readonly kind = "sqlite";
  #queue: Pending[] = [];
  #scheduled = false;

  constructor(readonly store: CollectorStore) {}

  static open(path: string): SqliteStorage {
    return new SqliteStorage(CollectorStore.open(path));
  }

  ingest(org: string, batch: Batch, receivedMs: number, bodySha256: string): Promise<IngestOutcome> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ org, batch, receivedMs, bodySha256, resolve, reject });
      if (this.#queue.length >= GROUP_COMMIT_MAX) this.#flush();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.#flush();
        });
      }
    });
  }

  #flush(): void {
    const group = this.#queue;
    if (group.length === 0) return;
    this.#queue = [];
    let results: (IngestOutcome | Error)[];
    try {
      results = this.store.ingestMany(group);
    } catch (e) {
      const err = unavailableOrSelf("ingest", e);
      for (const p of group) p.reject(err);
      return;
    }
    for (const [i, p] of group.entries()) {
      const r = results[i];
      if (r === undefined) p.reject(new Error("group commit lost an item"));
      else if (r instanceof Error) p.reject(unavailableOrSelf("ingest", r));
      else p.resolve(r);
    }
  }

  prune(cutoffMs: number): Promise<PruneReport> {
    return guarded("retention", () => this.store.prune(cutoffMs));
  }
  addBundle(org: string, b: Omit<BundleRow, "id">, body: Uint8Array, limits?: BundleLimits): Promise<AddedBundle> {
    return guarded("bundle upload", () => this.store.addBundle(org, b, body, limits));
  }
  bundles(org: string, deviceId?: string, limit?: number): Promise<BundleRow[]> {
    return guarded("bundles", () => this.store.bundles(org, deviceId, limit));
  }
  bundle(org: string, id: string): Promise<(BundleRow & { body: Buffer }) | undefined> {
    return guarded("bundle", () => this.store.bundle(org, id));
  }
  fleet(org: string): Promise<AgentRow[]> {
    return guarded("fleet", () => this.store.fleet(org));
  }
  agent(org: string, deviceId: string): Promise<AgentRow | undefined> {
    return guarded("agent", () => this.store.agent(org, deviceId));
  }
  series(org: string, deviceId: string, name: MetricName, sinceMs: number): Promise<SeriesPoint[]> {
    return guarded("series", () => this.store.series(org, deviceId, name, sinceMs));
  }
  failovers(org: string, sinceMs: number, limit: number, deviceId?: string): Promise<FailoverRow[]> {
    return guarded("failovers", () => this.store.failovers(org, sinceMs, limit, deviceId));
  }
  gatewayHealth(org: string, sinceMs: number, rtt: MetricName, loss: MetricName): Promise<GatewayHealth[]> {
    return guarded("gateway health", () => this.store.gatewayHealth(org, sinceMs, rtt, loss));
  }
  agentsByState(org: string): Promise<{ state: string; n: number }[]> {
    return guarded("agents by state", () => this.store.agentsByState(org));
  }
  failoverCounts(org: string, sinceMs: number): Promise<{ from: string; to: string; reason: string; n: number }[]> {
    return guarded("failover counts", () => this.store.failoverCounts(org, sinceMs));
  }
  close(): Promise<void> {
    this.#flush();
    this.store.close();
    return Promise.resolve();
  }
}
