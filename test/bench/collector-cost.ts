/**
 * Where a collector's time per agent report goes, in-process (no sockets): the same realistic SDK-serialized
 * export intervals the telemetry bench posts, through each stage of an ingest alone (protobuf decode, the ingest
 * contract, the body's hash, the SQLite write) and through the whole handler, many times, as microseconds per
 * report (median of rounds). Run with --cpu-prof for a profile of the whole-handler rounds.
 *
 *   node --import tsx test/bench/collector-cost.ts [--reports 4000] [--rounds 5] [--db <file>]
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { sha256Hex, TokenTable } from "../../main/collector/auth.ts";
import { createHandler } from "../../main/collector/handler.ts";
import { toBatch } from "../../main/collector/ingest-contract.ts";
import { decodeRequest } from "../../main/collector/otlp.ts";
import { SqliteStorage } from "../../main/collector/store.ts";
import { BATCH_HEADER } from "../../main/core/telemetry/names.ts";
import { sdkAgentIntervalBatch } from "../fakes/otlp-samples.ts";
import { seededRandom } from "../fakes/seeded-random.ts";
import { summarize } from "./stats.ts";

/** detourd's default export interval holds this many 25 ms probes. */
const SAMPLES_PER_REPORT = 400;
const DEVICES = 200;
const RETENTION_MS = 30 * 86_400_000;
const TOKEN = "ingest-token-for-the-cost-bench";
/** Requests handed to the handler together in the concurrent stage. */
const IN_FLIGHT = 64;

const { values } = parseArgs({
  options: {
    reports: { type: "string", default: "4000" },
    rounds: { type: "string", default: "5" },
    db: { type: "string" },
  },
});

async function main(): Promise<void> {
  const reports = Number(values.reports);
  const rounds = Number(values.rounds);
  const rnd = seededRandom(7);
  const bodies: { deviceId: string; body: Uint8Array }[] = [];
  for (let d = 0; d < DEVICES; d++) {
    const deviceId = randomUUID();
    const base = 8 + rnd() * 60;
    const rttMs = Array.from({ length: SAMPLES_PER_REPORT }, () => Math.round((base + rnd() * 25) * 100) / 100);
    bodies.push({
      deviceId,
      body: await sdkAgentIntervalBatch(
        { deviceId, batchId: "template" },
        { gateway: `gw${1 + (d % 3)}`, protocol: "wireguard", rttMs, lost: 0, lossPercent: 0 },
      ),
    });
  }
  const dir = mkdtempSync(join(tmpdir(), "detour-collector-cost-"));
  const storage = SqliteStorage.open(values.db ?? join(dir, "cost.db"));
  const tokens = TokenTable.parse(JSON.stringify({ tokens: [{ org: "acme", role: "ingest", token: TOKEN }] }));
  const handler = createHandler({ store: storage, tokens, now: () => Date.now(), retentionMs: RETENTION_MS });
  let seq = 0;
  const body = (i: number): { deviceId: string; body: Uint8Array } => {
    const b = bodies[i % bodies.length];
    if (b === undefined) throw new Error("no body");
    return b;
  };
  const stages: Record<string, (i: number) => unknown> = {
    "protobuf decode": (i) => decodeRequest("metrics", "protobuf", body(i).body),
    "decode + ingest contract": (i) => {
      const now = Date.now();
      return toBatch(decodeRequest("metrics", "protobuf", body(i).body), now, now - RETENTION_MS, `x:${i}`);
    },
    "sha256 of the body": (i) => sha256Hex(body(i).body),
    "SQLite write (one batch)": (i) => {
      const now = Date.now();
      const b = toBatch(decodeRequest("metrics", "protobuf", body(i).body), now, now - RETENTION_MS, `w:${seq++}`);
      return storage.store.ingest("acme", b, now, "0");
    },
  };
  const perReportUs = async (f: (i: number) => unknown): Promise<number> => {
    const t0 = performance.now();
    for (let i = 0; i < reports; i++) {
      const r = f(i);
      if (r instanceof Promise) await r;
    }
    return ((performance.now() - t0) * 1000) / reports;
  };
  const out: Record<string, string> = {};
  for (const [name, f] of Object.entries(stages)) {
    const us: number[] = [];
    for (let r = 0; r < rounds; r++) us.push(await perReportUs(f));
    out[name] = summarize(us).median.toFixed(1);
  }
  /** One agent's report as the server hands it to the handler, each with a batch id of its own. */
  const post = (i: number): ReturnType<typeof handler> => {
    const b = body(i);
    return handler({
      method: "POST",
      url: "/v1/metrics",
      headers: {
        "content-type": "application/x-protobuf",
        authorization: `Bearer ${TOKEN}`,
        [BATCH_HEADER]: `${b.deviceId}:h${seq++}`,
      },
      body: b.body,
    });
  };
  const whole: number[] = [];
  for (let r = 0; r < rounds; r++)
    whole.push(
      await perReportUs(async (i) => {
        const res = await post(i);
        if (res.status !== 200) throw new Error(`handler answered ${res.status}`);
      }),
    );
  out["whole handler (all of the above)"] = summarize(whole).median.toFixed(1);
  // As under load: many requests read and handed to the handler in one turn of the event loop.
  const concurrent: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reports; i += IN_FLIGHT) {
      const wave = Array.from({ length: Math.min(IN_FLIGHT, reports - i) }, (_, k) => post(i + k));
      for (const res of await Promise.all(wave))
        if (res.status !== 200) throw new Error(`handler answered ${res.status}`);
    }
    concurrent.push(((performance.now() - t0) * 1000) / reports);
  }
  out[`whole handler, ${IN_FLIGHT} at once`] = summarize(concurrent).median.toFixed(1);
  const mean = bodies.reduce((a, b) => a + b.body.length, 0) / bodies.length;
  console.log(
    `collector cost per report (${Math.round(mean)} bytes of protobuf, ${reports} reports x ${rounds} rounds):`,
  );
  for (const [k, v] of Object.entries(out)) console.log(`  ${k.padEnd(34)} ${v.padStart(8)} µs`);
  await storage.close();
  rmSync(dir, { recursive: true, force: true });
}

main().catch((e: unknown) => {
  console.error(`collector-cost: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  process.exitCode = 1;
});
