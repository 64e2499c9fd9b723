/** How a replica is pointed at PostgreSQL and how it tells an outage from a bug; no server needed here. */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import pg from "pg";
import { describeUrl, isUnavailable, readPostgresUrl } from "./postgres-store.ts";
import { parseServerArgs, UsageError } from "./server.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-pg-url-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function urlFile(name: string, content: string, mode = 0o600): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  chmodSync(p, mode);
  return p;
}

test("the-url-comes-from-a-private-file-and-bad-ones-are-named", () => {
  const url = "postgres://collector:s3cret@db.example:5432/telemetry?sslmode=verify-full";
  assert.equal(readPostgresUrl(urlFile("ok", `${url}\n`)), url);
  assert.throws(() => readPostgresUrl(urlFile("open", url, 0o644)), /mode 644; it holds credentials: chmod 600/);
  assert.throws(() => readPostgresUrl(urlFile("junk", "not a url")), /does not hold a URL/);
  assert.throws(() => readPostgresUrl(urlFile("http", "http://db.example/telemetry")), /must start with postgres:\/\//);
  assert.throws(() => readPostgresUrl(urlFile("nodb", "postgres://db.example")), /name a host and a database/);
  assert.throws(() => readPostgresUrl(urlFile("two", `${url}\n${url}\n`)), /one line/);
});

test("logs-name-the-database-without-its-password", () => {
  const d = describeUrl("postgres://collector:s3cret@db.example:5432/telemetry?sslmode=require&password=x");
  assert.equal(d, "postgres://collector@db.example:5432/telemetry");
  assert.doesNotMatch(d, /s3cret|password/);
});

test("the-command-line-takes-sqlite-or-postgresql-and-never-a-url-with-its-password", () => {
  const base = ["--listen", "127.0.0.1:4318", "--tokens", "/etc/detour/tokens.json"];
  assert.deepEqual(parseServerArgs([...base, "--postgres", "/etc/detour/pg.url"]).storage, {
    kind: "postgresql",
    urlFile: "/etc/detour/pg.url",
  });
  assert.deepEqual(parseServerArgs([...base, "--db", "/var/lib/detour/t.db"]).storage, {
    kind: "sqlite",
    path: "/var/lib/detour/t.db",
  });
  assert.throws(() => parseServerArgs([...base, "--db", "a", "--postgres", "b"]), /exclude each other/);
  assert.throws(
    () => parseServerArgs(base),
    (e: unknown) => e instanceof UsageError && /--postgres <file>/.test(e.message),
  );
  assert.throws(
    () => parseServerArgs([...base, "--postgres", "postgres://collector:s3cret@db/telemetry"]),
    /not the URL itself: a password in argv/,
  );
});

test("an-unreachable-server-is-an-outage-and-a-bad-query-is-a-bug", () => {
  const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
  assert.equal(isUnavailable(refused), true);
  assert.equal(isUnavailable(new AggregateError([refused], "")), true, "happy eyeballs reports every address");
  assert.equal(isUnavailable(new Error("Connection terminated unexpectedly")), true);
  assert.equal(isUnavailable(new Error("timeout exceeded when trying to connect")), true);
  const db = (code: string): pg.DatabaseError => Object.assign(new pg.DatabaseError("x", 1, "error"), { code });
  assert.equal(isUnavailable(db("57P01")), true, "admin shutdown (a restart)");
  assert.equal(isUnavailable(db("57P03")), true, "starting up");
  assert.equal(isUnavailable(db("53300")), true, "too many connections");
  assert.equal(isUnavailable(db("40P01")), true, "deadlock: the retry succeeds");
  assert.equal(isUnavailable(db("08006")), true, "connection failure");
  assert.equal(isUnavailable(db("42601")), false, "a syntax error is ours");
  assert.equal(isUnavailable(db("23502")), false, "a NOT NULL violation is ours");
  assert.equal(isUnavailable(new TypeError("x is undefined")), false);
});
