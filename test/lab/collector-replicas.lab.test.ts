/**
 * The collector as a fleet runs it: two stateless replicas in the lab's collector namespace on one PostgreSQL
 * (Debian's server, a private cluster listening on that namespace's loopback only), agents in the client namespace
 * spreading their OTLP reports over both. Either replica's dashboard and /metrics show the union, every record is
 * stored exactly once (also when a batch is re-sent to the other replica, or sent to both at once), SQLite and
 * PostgreSQL answer the storage contract alike, and a database outage is a retryable 503 that detourd's own
 * delivery code rides out: nothing is lost, nothing stored twice.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { collectorPaths, startCollector } from "./collector.ts";
import { isAlive, readIfExists, stopPids, waitFor } from "./exec.ts";
import * as lab from "./lab.ts";
import { createDatabase, psql, restartPostgres, startPostgres, stopPostgres, type LabPostgres } from "./postgres.ts";
import { REPO_ROOT } from "./services.ts";

const ID = "wrep";
/** Two replicas beside the lab's own collector (4318) in its namespace. */
const REPLICA_PORTS = [4319, 4320] as const;
/** A third replica, started while the database is down. */
const LATE_REPLICA_PORT = 4321;
/** Simulated agents; each sends a metrics and an events batch, and one more metrics batch to both replicas. */
const DEVICES = 30;
/** Each tool run starts Node with tsx (about a second) plus its requests; generous for a loaded 2-core box. */
const TOOL_TIMEOUT_MS = 60_000;
/** detourd's sender retries after 1 s, 2 s, 4 s ... (upper half of each step): a short outage ends within this. */
const DELIVERED_WITHIN_MS = 45_000;
/** The first 503 comes at the sender's first attempt, as soon as Node and tsx are up. */
const FIRST_REFUSAL_WITHIN_MS = 30_000;

let state: lab.LabState;
let db: LabPostgres | null = null;
const replicas: number[] = [];

function replicaUrl(i: 0 | 1): string {
  return `http://${lab.topologyOf(ID).collector.address}:${REPLICA_PORTS[i]}`;
}

before(async () => {
  await lab.down(ID);
  state = await lab.up(ID, { distance: "none" });
  const topo = lab.topologyOf(ID);
  db = await startPostgres(topo.collector.ns, join(state.labDir, "postgres"));
  const urlFile = db.urlFile;
  // Started together: the schema migration takes an advisory lock, so the second waits for the first.
  replicas.push(
    ...(await Promise.all(
      REPLICA_PORTS.map((port, i) =>
        startCollector(topo, state.labDir, { port, postgresUrlFile: urlFile, name: `replica-${i}` }),
      ),
    )),
  );
});

after(async () => {
  await stopPids(replicas, "SIGTERM");
  if (db !== null) await stopPostgres(db);
  await lab.down(ID);
  assert.deepEqual(await lab.leftovers(ID), [], "nothing of the lab is left");
});

/** Runs a tool from test/lab/tools in a lab namespace and returns its stdout's JSON lines. */
function tool(ns: "client" | "collector", name: string, args: string[]): unknown[] {
  const topo = lab.topologyOf(ID);
  const argv = [
    "netns",
    "exec",
    ns === "client" ? topo.client.ns : topo.collector.ns,
    process.execPath,
    "--import",
    "tsx",
    join(REPO_ROOT, "test", "lab", "tools", name),
    ...args,
  ];
  const r = spawnSync("ip", argv, { cwd: REPO_ROOT, encoding: "utf8", timeout: TOOL_TIMEOUT_MS });
  assert.equal(r.status, 0, `${name} failed: ${r.stdout}${r.stderr}`);
  return r.stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as unknown);
}

interface Page {
  status: number;
  body: string;
}

/** GETs `path` from both replicas (read token), from the client namespace. */
function fromBoth(path: string): [Page, Page] {
  const pages = tool("client", "otlp-send.ts", [
    "get",
    "--url",
    `${replicaUrl(0)}${path},${replicaUrl(1)}${path}`,
    "--tokens",
    collectorPaths(state.labDir).tokensFile,
  ]) as Page[];
  const [a, b] = pages;
  assert.ok(a !== undefined && b !== undefined, `two answers: ${JSON.stringify(pages)}`);
  return [a, b];
}

async function count(sql: string): Promise<number> {
  if (db === null) throw new Error("no database");
  return Number((await psql(db, sql)).trim());
}

test("the-storage-contract-holds-on-postgresql-as-on-sqlite", async () => {
  if (db === null) throw new Error("no database");
  const urlFile = await createDatabase(db, "contract");
  const [onPostgres] = tool("collector", "storage-contract.ts", ["--postgres", urlFile]);
  const [onSqlite] = tool("collector", "storage-contract.ts", ["--sqlite", ":memory:"]);
  assert.deepEqual(onPostgres, onSqlite, "the same scenario gives the same answers and reads");
  const raced = (onPostgres as { raced: unknown }).raced;
  assert.deepEqual(raced, { stored: 1, duplicate: 5 }, "one batch raced on six connections is stored once");
});

test("a-fleet-spread-over-two-replicas-is-stored-exactly-once-also-when-re-sent-or-raced", async () => {
  const [out] = tool("client", "otlp-fleet.ts", [
    "--urls",
    `${replicaUrl(0)},${replicaUrl(1)}`,
    "--tokens",
    collectorPaths(state.labDir).tokensFile,
    "--devices",
    String(DEVICES),
    "--resend",
    "--race",
  ]);
  const r = out as {
    first: { byReplica: { requests: number; statuses: Record<string, number> }[] };
    resent: { byReplica: { requests: number; statuses: Record<string, number> }[] };
    raced: Record<string, number>;
  };
  assert.deepEqual(
    r.first.byReplica,
    [
      { requests: DEVICES, statuses: { "200": DEVICES } },
      { requests: DEVICES, statuses: { "200": DEVICES } },
    ],
    "each replica stored half of the reports",
  );
  assert.deepEqual(
    r.resent.byReplica,
    [
      { requests: DEVICES, statuses: { "409": DEVICES } },
      { requests: DEVICES, statuses: { "409": DEVICES } },
    ],
    "every batch re-sent to the other replica is a duplicate there",
  );
  assert.deepEqual(r.raced, { "200,409": DEVICES }, "a batch sent to both at once: one stores it, one says duplicate");
  // In the database: three batches per device, four points per metrics batch (RTT, loss, jitter, rx bytes), a
  // state per device and a failover for every third one; nothing twice.
  assert.equal(await count("SELECT count(*) FROM batches WHERE device_id LIKE 'fleet-%'"), 3 * DEVICES);
  assert.equal(await count("SELECT count(*) FROM points WHERE device_id LIKE 'fleet-%'"), 2 * 4 * DEVICES);
  assert.equal(await count("SELECT count(*) FROM events WHERE device_id LIKE 'fleet-%'"), DEVICES + DEVICES / 3);
  assert.equal(
    await count(
      "SELECT count(*) FROM (SELECT device_id, name, ts_ms, value FROM points GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d",
    ),
    0,
    "no point is stored twice",
  );
});

test("either-replica-shows-the-union-of-the-fleet-on-its-dashboard-and-metrics", () => {
  const [a, b] = fromBoth("/");
  for (const [name, p] of [
    ["replica 0", a],
    ["replica 1", b],
  ] as const) {
    assert.equal(p.status, 200, `${name}: ${p.body.slice(0, 300)}`);
    assert.match(p.body, new RegExp(`${DEVICES} agents`), `${name} counts every agent`);
    for (let d = 0; d < DEVICES; d++)
      assert.ok(p.body.includes(`fleet-${String(d).padStart(3, "0")}`), `${name} lists fleet-${d}`);
  }
  // Device 0's metrics went to replica 0 and its failover to replica 1: each page shows both.
  const [pa, pb] = fromBoth("/agents/fleet-000");
  for (const p of [pa, pb]) {
    assert.equal(p.status, 200);
    assert.match(p.body, /<polyline/, "its latency chart has data");
    assert.match(p.body, /gw1 → gw2: dead/, "its failover from gw1 to gw2");
  }
  const [ma, mb] = fromBoth("/metrics");
  assert.equal(ma.status, 200);
  assert.equal(mb.status, 200);
  // Everything but the seconds since the last report (which moves between the two requests) is the same.
  const stable = (t: string): string =>
    t
      .split("\n")
      .filter((l) => !l.startsWith("detour_agent_last_seen_seconds"))
      .join("\n");
  assert.equal(stable(ma.body), stable(mb.body), "both replicas expose the same fleet");
  assert.match(ma.body, new RegExp(`^detour_agents\\{state="connected"\\} ${DEVICES}$`, "m"));
  const failovers = [...ma.body.matchAll(/^detour_failovers_last_hour\{[^}]*\} (\d+)$/gm)].reduce(
    (sum, m) => sum + Number(m[1]),
    0,
  );
  assert.equal(failovers, DEVICES / 3, "every failover counted once");
});

test("a-postgresql-outage-is-a-retryable-503-and-detourds-delivery-stores-its-report-once-it-is-back", async () => {
  if (db === null) throw new Error("no database");
  const tokens = collectorPaths(state.labDir).tokensFile;
  await stopPostgres(db);
  const post = (batch: string): { status: number; message: string; code: number | null; retryAfter: string } =>
    tool("client", "otlp-send.ts", [
      "post",
      "--url",
      replicaUrl(0),
      "--tokens",
      tokens,
      "--device",
      "outage-probe",
      "--batch",
      batch,
    ])[0] as { status: number; message: string; code: number | null; retryAfter: string };
  const refused = post("o-1");
  assert.equal(refused.status, 503, JSON.stringify(refused));
  assert.equal(refused.code, 14, "gRPC UNAVAILABLE: retryable for any OTLP exporter");
  assert.match(refused.message, /^storage-unavailable: .*send the same batch again later/);
  assert.equal(refused.retryAfter, "5");
  const [ma, mb] = fromBoth("/metrics");
  assert.deepEqual([ma.status, mb.status], [503, 503], "reads say the same");
  assert.ok(replicas.every(isAlive), "the replicas keep running through the outage");
  assert.match(readIfExists(join(state.labDir, "logs", "collector-replica-0.log")), /"storageError":"PostgreSQL: /);

  // detourd's own spool and sender, in the client namespace, with one report for replica 1.
  const topo = lab.topologyOf(ID);
  const agent = spawn(
    "ip",
    [
      "netns",
      "exec",
      topo.client.ns,
      process.execPath,
      "--import",
      "tsx",
      join(REPO_ROOT, "test", "lab", "tools", "agent-delivery.ts"),
      "--url",
      replicaUrl(1),
      "--tokens",
      tokens,
      "--device",
      "outage-agent",
      "--spool",
      join(state.labDir, "agent-spool"),
      "--timeout-ms",
      String(DELIVERED_WITHIN_MS),
    ],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  agent.stdout.on("data", (c: Buffer) => (out += c.toString("utf8")));
  agent.stderr.on("data", (c: Buffer) => (out += c.toString("utf8")));
  const exited = new Promise<number | null>((resolve) => agent.once("close", resolve));
  try {
    await waitFor("the agent's first attempt to be refused with 503", () => /"status":503/.test(out), {
      timeoutMs: FIRST_REFUSAL_WITHIN_MS,
      intervalMs: 100,
    });
    // A replica that starts now cannot reach its database: it says so plainly and exits, without the password.
    await assert.rejects(
      startCollector(topo, state.labDir, {
        port: LATE_REPLICA_PORT,
        postgresUrlFile: db.urlFile,
        name: "replica-late",
      }),
      /the collector exited during start-up/,
    );
    const lateLog = readIfExists(join(state.labDir, "logs", "collector-replica-late.log"));
    assert.match(lateLog, /PostgreSQL at postgres:\/\/collector@127\.0\.0\.1:5432\/telemetry: .*ECONNREFUSED/);
    const password = new URL(readIfExists(db.urlFile).trim()).password;
    assert.ok(password.length > 0 && !lateLog.includes(password), "the password is in no log");

    db = await restartPostgres(db);
    const code = await exited;
    assert.equal(code, 0, `the agent delivered its report:\n${out}`);
  } finally {
    if (agent.pid !== undefined && isAlive(agent.pid)) await stopPids([agent.pid], "SIGTERM");
  }
  const lines = out
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { event: string; status?: number; pending?: number });
  assert.ok(
    lines.filter((l) => l.event === "problem").every((l) => l.status === 503),
    `only 503s before delivery: ${out}`,
  );
  assert.deepEqual(lines.at(-1), { event: "end", pending: 0, rejected: 0 });
  assert.equal(await count("SELECT count(*) FROM batches WHERE device_id = 'outage-agent'"), 1, "stored once");
  // The batch refused during the outage is stored when sent again, to either replica.
  assert.equal(post("o-1").status, 200);
  assert.equal(post("o-1").status, 409);
});
