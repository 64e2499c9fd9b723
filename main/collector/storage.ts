/**
 * The collector's storage behind one interface: SQLite (store.ts, the embedded default, one process) or
 * PostgreSQL (postgres-store.ts, several stateless replicas in front of one database server). The handler, the
 * dashboard and /metrics see only this; every read answers for the whole organisation, whichever replica stored
 * its records.
 *
 * Invariants every implementation keeps:
 * - a batch (org, device, signal, batch id) is stored entirely or not at all, and at most once, also when two
 *   replicas receive the same batch at the same moment (the second answers `duplicate`);
 * - a failure of the storage itself (server down, connection lost, database busy) is a StorageUnavailableError,
 *   which the handler answers with 503 so the agent keeps the batch and retries; anything else is a bug.
 */
import type { MetricName } from "../core/telemetry/names.ts";
import type { Batch } from "./ingest-contract.ts";

/** How much bundle storage one organisation (all its devices and tokens together) may hold. */
export interface BundleLimits {
  maxCount: number;
  maxBytes: number;
}

/**
 * A helpdesk asks for a bundle now and then; 200 per organisation is weeks of tickets, and 256 MiB bounds what the
 * devices of one organisation (or one leaked ingest token) can make the collector's disk hold.
 */
export const DEFAULT_BUNDLE_LIMITS: Readonly<BundleLimits> = { maxCount: 200, maxBytes: 256 * 1024 * 1024 };

/** A diagnostic bundle as listed (the body only through `bundle`). */
export interface BundleRow {
  id: string;
  deviceId: string;
  name: string;
  sha256: string;
  bytes: number;
  receivedMs: number;
}

export interface AgentRow {
  deviceId: string;
  serviceVersion: string | null;
  policyHash: string | null;
  firstSeenMs: number;
  lastSeenMs: number;
  /** From the latest detour.state event; "unknown" before the first one. */
  state: string;
  gateway: string | null;
  protocol: string | null;
}

export interface SeriesPoint {
  tsMs: number;
  value: number;
  gateway: string | null;
  protocol: string | null;
}

export interface FailoverRow {
  deviceId: string;
  tsMs: number;
  from: string | null;
  fromProtocol: string | null;
  to: string | null;
  toProtocol: string | null;
  reason: string | null;
  detectedAfterMs: number | null;
  restoredAfterMs: number | null;
}

export interface GatewayHealth {
  gateway: string;
  /** Agents whose latest state is connected through this gateway. */
  agentsConnected: number;
  /** Agents that reported points through it in the window. */
  agentsReporting: number;
  rttMeanMs: number | null;
  lossMeanPercent: number | null;
  failoversAway: number;
  failoversTo: number;
  /** The most frequent reason for failing away from it in the window. */
  topReason: string | null;
}

export type IngestOutcome =
  | { kind: "stored"; points: number; events: number }
  | { kind: "duplicate"; firstReceivedMs: number; sameContent: boolean };

export interface PruneReport {
  bundles: number;
  batches: number;
  points: number;
  events: number;
  agents: number;
}

export interface AddedBundle {
  id: string;
  duplicate: boolean;
  /** Older bundles of the organisation removed to keep it within its limits. */
  evicted: number;
}

/** Rows of the four queries behind gatewayHealth, the same in every storage. */
export interface GatewayHealthRows {
  connected: readonly { gateway: string; n: number }[];
  perf: readonly { gateway: string; agents: number; rtt: number | null; loss: number | null }[];
  /** Failovers away per (gateway, reason), most frequent first: the first reason seen is the top one. */
  away: readonly { gateway: string; reason: string | null; n: number }[];
  to: readonly { gateway: string; n: number }[];
}

/** Merges the per-gateway query rows into one row per gateway, most failovers away first, then by name. */
export function gatewayHealthOf(rows: GatewayHealthRows): GatewayHealth[] {
  const byGw = new Map<string, GatewayHealth>();
  const get = (gateway: string): GatewayHealth => {
    let h = byGw.get(gateway);
    if (h === undefined) {
      h = {
        gateway,
        agentsConnected: 0,
        agentsReporting: 0,
        rttMeanMs: null,
        lossMeanPercent: null,
        failoversAway: 0,
        failoversTo: 0,
        topReason: null,
      };
      byGw.set(gateway, h);
    }
    return h;
  };
  for (const r of rows.connected) get(r.gateway).agentsConnected = r.n;
  for (const r of rows.perf) {
    const h = get(r.gateway);
    h.agentsReporting = r.agents;
    h.rttMeanMs = r.rtt;
    h.lossMeanPercent = r.loss;
  }
  for (const r of rows.away) {
    const h = get(r.gateway);
    h.failoversAway += r.n;
    h.topReason ??= r.reason;
  }
  for (const r of rows.to) get(r.gateway).failoversTo = r.n;
  return [...byGw.values()].sort((a, b) => b.failoversAway - a.failoversAway || a.gateway.localeCompare(b.gateway));
}

/**
 * Which of an organisation's bundles (newest first) go so that it stays within `limits` after `keptId` was
 * stored. The bundle just stored always stays (it is within the byte limit: uploads are at most MAX_BODY_BYTES).
 */
export function bundlesToEvict(
  newestFirst: readonly { id: string; bytes: number }[],
  keptId: string,
  limits: BundleLimits,
): string[] {
  let count = 0;
  let bytes = 0;
  const evict: string[] = [];
  for (const row of newestFirst) {
    count += 1;
    bytes += row.bytes;
    if (row.id !== keptId && (count > limits.maxCount || bytes > limits.maxBytes)) evict.push(row.id);
  }
  return evict;
}

/** The collector's storage; see the module comment for what every implementation guarantees. */
export interface TelemetryStorage {
  /** "sqlite" or "postgresql", for the start-up log line. */
  readonly kind: "sqlite" | "postgresql";
  /** Stores a batch unless its id was seen before for this org, device and signal. */
  ingest(org: string, batch: Batch, receivedMs: number, bodySha256: string): Promise<IngestOutcome>;
  /** Deletes everything older than `cutoffMs`: data by its own time, batch ids and agents by when last heard. */
  prune(cutoffMs: number): Promise<PruneReport>;
  /**
   * Stores a bundle once (its id is its content's hash); the organisation's bundles stay within `limits`, the
   * oldest evicted to make room for the new one.
   */
  addBundle(org: string, b: Omit<BundleRow, "id">, body: Uint8Array, limits?: BundleLimits): Promise<AddedBundle>;
  /** The organisation's bundles (of one device when given), newest first. */
  bundles(org: string, deviceId?: string, limit?: number): Promise<BundleRow[]>;
  bundle(org: string, id: string): Promise<(BundleRow & { body: Buffer }) | undefined>;
  /** Every agent of the organisation, most recently heard first. */
  fleet(org: string): Promise<AgentRow[]>;
  agent(org: string, deviceId: string): Promise<AgentRow | undefined>;
  /** One metric of one agent since `sinceMs`, oldest first. */
  series(org: string, deviceId: string, name: MetricName, sinceMs: number): Promise<SeriesPoint[]>;
  /** Failovers since `sinceMs`, newest first, of the whole fleet or one agent. */
  failovers(org: string, sinceMs: number, limit: number, deviceId?: string): Promise<FailoverRow[]>;
  /** Per gateway, aggregated across agents over [sinceMs, now]: who is on it, how it performs, who leaves it. */
  gatewayHealth(org: string, sinceMs: number, rtt: MetricName, loss: MetricName): Promise<GatewayHealth[]>;
  /** Agents by state, for /metrics. */
  agentsByState(org: string): Promise<{ state: string; n: number }[]>;
  /** Failovers since `sinceMs` per (from, to, reason), for /metrics. */
  failoverCounts(org: string, sinceMs: number): Promise<{ from: string; to: string; reason: string; n: number }[]>;
  close(): Promise<void>;
}

/**
 * The storage cannot answer now (its server is down or restarting, a connection broke, the database is locked):
 * retryable, so ingest answers 503 and the agent keeps the batch in its spool. The message names the storage and
 * its own words, never credentials.
 */
export class StorageUnavailableError extends Error {
  override readonly name = "StorageUnavailableError";
  readonly retryable = true;
}
