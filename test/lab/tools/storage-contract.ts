/**
 * One scenario run against a collector storage, printed as a JSON snapshot, so a test can hold SQLite and
 * PostgreSQL to the same behaviour behind TelemetryStorage: ingest and its exactly-once answers (also for one batch
 * raced on several connections at once), events and the agent's latest state, bundles and their eviction, every
 * read the dashboard and /metrics make, and retention. Run inside the namespace that can reach the database:
 *
 *   storage-contract.ts --sqlite <file|:memory:>
 *   storage-contract.ts --postgres <url file>        (an empty database: the scenario's counts assume it)
 */
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import type { Batch, Point } from "../../../main/collector/ingest-contract.ts";
import { PostgresStorage, readPostgresUrl } from "../../../main/collector/postgres-store.ts";
import type { TelemetryStorage } from "../../../main/collector/storage.ts";
import { SqliteStorage } from "../../../main/collector/store.ts";
import { METRIC } from "../../../main/core/telemetry/names.ts";

/** The scenario's fixed "now": every timestamp is relative to it, so both storages see identical input. */
const NOW = 1_795_000_000_000;
/** How many connections try to store one batch at the same moment. */
const RACERS = 6;

function point(name: Point["name"], tsMs: number, value: number, gateway: string, protocol: string): Point {
  return { name, tsMs, value, count: null, min: null, max: null, gateway, protocol };
}

function batch(over: Partial<Batch> & Pick<Batch, "deviceId" | "batchId">): Batch {
  return {
    signal: "metrics",
    serviceName: "detourd",
    serviceVersion: "1.2.3",
    policyHash: "abcd",
    points: [],
    events: [],
    ignored: 0,
    ignoredWhy: "",
    ...over,
  };
}

const round = (v: number | null): number | null => (v === null ? null : Math.round(v * 1e6) / 1e6);

export async function scenario(s: TelemetryStorage): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const alice = batch({
    deviceId: "alice",
    batchId: "m-1",
    points: [
      point(METRIC.rtt, NOW - 60_000, 12.5, "gw1", "wireguard"),
      point(METRIC.rtt, NOW - 30_000, 14.25, "gw1", "wireguard"),
      point(METRIC.loss, NOW - 30_000, 1.5, "gw1", "wireguard"),
    ],
  });
  out.first = await s.ingest("acme", alice, NOW - 29_000, "sha-a");
  out.again = await s.ingest("acme", alice, NOW - 28_000, "sha-a");
  out.otherContent = await s.ingest("acme", alice, NOW - 27_000, "sha-b");
  out.otherSignal = await s.ingest("acme", { ...alice, signal: "logs", points: [] }, NOW - 27_000, "sha-l");
  out.otherOrg = await s.ingest("globex", alice, NOW - 27_000, "sha-a");
  const events = batch({
    deviceId: "alice",
    batchId: "l-1",
    signal: "logs",
    events: [
      {
        kind: "failover",
        tsMs: NOW - 20_000,
        from: "gw1",
        fromProtocol: "wireguard",
        to: "gw2",
        toProtocol: "ikev2",
        reason: "dead",
        detectedAfterMs: 310,
        restoredAfterMs: 420,
      },
      { kind: "state", tsMs: NOW - 20_000, state: "failing-over", gateway: "gw1", protocol: "wireguard" },
      { kind: "state", tsMs: NOW - 19_000, state: "connected", gateway: "gw2", protocol: "ikev2" },
    ],
  });
  out.events = await s.ingest("acme", events, NOW - 18_000, "sha-e");
  // An older state arriving later does not replace the newer one.
  out.late = await s.ingest(
    "acme",
    batch({
      deviceId: "alice",
      batchId: "l-0",
      signal: "logs",
      events: [{ kind: "state", tsMs: NOW - 50_000, state: "connecting", gateway: null, protocol: null }],
    }),
    NOW - 17_000,
    "sha-late",
  );
  out.bob = await s.ingest(
    "acme",
    batch({
      deviceId: "bob",
      batchId: "m-1",
      serviceVersion: null,
      points: [point(METRIC.rtt, NOW - 10_000, 40, "gw3", "anyconnect")],
    }),
    NOW - 9_000,
    "sha-bob",
  );
  const raced = batch({
    deviceId: "carol",
    batchId: "m-7",
    points: [point(METRIC.rtt, NOW - 5000, 9, "gw1", "ikev2")],
  });
  const answers = await Promise.all(Array.from({ length: RACERS }, () => s.ingest("acme", raced, NOW - 4000, "sha-c")));
  out.raced = {
    stored: answers.filter((a) => a.kind === "stored").length,
    duplicate: answers.filter((a) => a.kind === "duplicate").length,
  };
  const old = batch({
    deviceId: "dave",
    batchId: "m-1",
    points: [point(METRIC.rtt, NOW - 40 * 86_400_000, 5, "gw1", "ikev2")],
  });
  out.old = await s.ingest("acme", old, NOW - 40 * 86_400_000, "sha-d");

  const limits = { maxCount: 2, maxBytes: 1024 * 1024 };
  const bundleIds: unknown[] = [];
  for (let i = 0; i < 4; i++) {
    const body = Buffer.from(`bundle ${i}`);
    const sha = createHash("sha256").update(body).digest("hex");
    bundleIds.push(
      await s.addBundle(
        "acme",
        {
          deviceId: "alice",
          name: `detour-diag-${i}.tar.gz`,
          sha256: sha,
          bytes: body.length,
          receivedMs: NOW - 8000 + i,
        },
        body,
        limits,
      ),
    );
  }
  const again = Buffer.from("bundle 3");
  bundleIds.push(
    await s.addBundle(
      "acme",
      {
        deviceId: "alice",
        name: "detour-diag-3.tar.gz",
        sha256: createHash("sha256").update(again).digest("hex"),
        bytes: again.length,
        receivedMs: NOW,
      },
      again,
      limits,
    ),
  );
  out.bundleUploads = bundleIds;
  const listed = await s.bundles("acme");
  out.bundles = listed;
  out.aliceBundles = (await s.bundles("acme", "alice", 1)).map((b) => b.id);
  const first = listed[0];
  const got = first === undefined ? undefined : await s.bundle("acme", first.id);
  out.bundleBody = got?.body.toString("utf8") ?? null;
  out.noBundle = (await s.bundle("globex", first?.id ?? "none")) ?? null;

  out.fleet = await s.fleet("acme");
  out.agent = (await s.agent("acme", "bob")) ?? null;
  out.noAgent = (await s.agent("acme", "nobody")) ?? null;
  out.series = await s.series("acme", "alice", METRIC.rtt, NOW - 45_000);
  out.failovers = await s.failovers("acme", NOW - 3_600_000, 10);
  out.aliceFailovers = await s.failovers("acme", NOW - 3_600_000, 10, "alice");
  out.bobFailovers = await s.failovers("acme", NOW - 3_600_000, 10, "bob");
  out.health = (await s.gatewayHealth("acme", NOW - 300_000, METRIC.rtt, METRIC.loss)).map((h) => ({
    ...h,
    rttMeanMs: round(h.rttMeanMs),
    lossMeanPercent: round(h.lossMeanPercent),
  }));
  out.byState = await s.agentsByState("acme");
  out.failoverCounts = await s.failoverCounts("acme", NOW - 3_600_000);
  out.globexFleet = (await s.fleet("globex")).map((a) => a.deviceId);
  out.prune = await s.prune(NOW - 30 * 86_400_000);
  out.fleetAfterPrune = (await s.fleet("acme")).map((a) => a.deviceId);
  out.oldAgain = await s.ingest("acme", old, NOW, "sha-d");
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { sqlite: { type: "string" }, postgres: { type: "string" } } });
  if ((values.sqlite === undefined) === (values.postgres === undefined))
    throw new Error("give --sqlite <file> or --postgres <url file>");
  const s: TelemetryStorage =
    values.sqlite !== undefined
      ? SqliteStorage.open(values.sqlite)
      : await PostgresStorage.open(readPostgresUrl(values.postgres ?? ""));
  try {
    console.log(JSON.stringify(await scenario(s)));
  } finally {
    await s.close();
  }
}

if (process.argv[1]?.endsWith("storage-contract.ts") === true) {
  main().catch((e: unknown) => {
    console.error(`storage-contract: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exitCode = 1;
  });
}
