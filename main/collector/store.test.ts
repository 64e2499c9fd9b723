/**
 * The SQLite store: migrations run once, in order, and a newer database is refused; the dashboard's queries use
 * their indexes; ingests are committed in groups, each batch still once.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { METRIC } from "../core/telemetry/names.ts";
import type { Batch } from "./ingest-contract.ts";
import { CollectorStore, MIGRATIONS, SqliteStorage } from "./store.ts";

test("a-new-database-is-migrated-to-the-latest-version-and-reopening-keeps-it", () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-store-"));
  try {
    const file = join(dir, "c.db");
    const s = CollectorStore.open(file);
    assert.equal(s.schemaVersion(), MIGRATIONS.length);
    s.close();
    const again = CollectorStore.open(file);
    assert.equal(again.schemaVersion(), MIGRATIONS.length);
    again.close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    raw.close();
    assert.throws(() => CollectorStore.open(file), /newer than this collector knows/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the-dashboard-queries-use-their-indexes", () => {
  const db = new Database(":memory:");
  for (const m of MIGRATIONS) db.exec(m);
  const plan = (sql: string): string =>
    (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail).join("; ");
  assert.match(
    plan(
      "SELECT ts_ms, value FROM points WHERE org = 'a' AND device_id = 'd' AND name = 'n' AND ts_ms >= 0 ORDER BY ts_ms",
    ),
    /USING INDEX points_device/,
  );
  assert.match(
    plan("SELECT * FROM events WHERE org = 'a' AND kind = 'failover' AND ts_ms >= 0"),
    /USING INDEX events_kind/,
  );
  assert.match(plan("DELETE FROM points WHERE ts_ms < 5"), /points_ts/);
  db.close();
});

function batchOf(deviceId: string, batchId: string, value = 12.5): Batch {
  return {
    signal: "metrics",
    deviceId,
    batchId,
    serviceName: "detourd",
    serviceVersion: "1.0.0",
    policyHash: null,
    points: [
      {
        name: METRIC.rtt,
        tsMs: 1_795_000_000_000,
        value,
        count: null,
        min: null,
        max: null,
        gateway: "gw1",
        protocol: "wireguard",
      },
    ],
    events: [],
    ignored: 0,
    ignoredWhy: "",
  };
}

test("batches-handed-over-together-are-committed-together-each-once-and-answered-after-the-commit", async () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-store-"));
  const s = SqliteStorage.open(join(dir, "c.db"));
  try {
    const calls = Array.from({ length: 100 }, (_, i) => s.ingest("acme", batchOf(`d${i % 50}`, "b1"), 1000 + i, "x"));
    const outcomes = await Promise.all(calls);
    assert.equal(outcomes.filter((o) => o.kind === "stored").length, 50, "each device's batch stored once");
    assert.equal(outcomes.filter((o) => o.kind === "duplicate").length, 50, "the second copy in the same group");
    assert.equal((await s.fleet("acme")).length, 50, "committed and readable when answered");
    // A batch that cannot be written (NaN is NULL to SQLite: a NOT NULL value) fails alone; its group is stored.
    const [bad, good] = await Promise.allSettled([
      s.ingest("acme", batchOf("d-bad", "b1", Number.NaN), 5000, "x"),
      s.ingest("acme", batchOf("d-good", "b1"), 5000, "x"),
    ]);
    assert.equal(bad.status, "rejected");
    assert.deepEqual(good.status === "fulfilled" ? good.value : good, { kind: "stored", points: 1, events: 0 });
    assert.deepEqual(
      (await s.fleet("acme")).map((a) => a.deviceId).filter((d) => d.startsWith("d-")),
      ["d-good"],
      "nothing of the failed batch",
    );
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
