/** The store's schema versioning: migrations run once, in order, and a newer database is refused. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { CollectorStore, MIGRATIONS } from "./store.ts";

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
