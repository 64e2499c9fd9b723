/**
 * Telemetry from a real detourd reaches the lab's collector (tunnel metrics, state and failover events), and a
 * two-minute collector outage loses nothing and duplicates nothing: every batch the agent produced meanwhile is
 * stored exactly once when the collector is back.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import Database from "better-sqlite3";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import { collectorPaths } from "./collector.ts";
import * as lab from "./lab.ts";

const ID = "tdel";
const CONNECT_WITHIN_MS = 10_000;
/** The lab exports every 5 s; three intervals bound the first delivery on a loaded machine. */
const DELIVERED_WITHIN_MS = 20_000;
/** The outage: two minutes. DETOUR_OUTAGE_MS shortens it for a developer's quick run. */
const OUTAGE_MS = Number(process.env.DETOUR_OUTAGE_MS ?? 120_000);
/** After the outage the backlog drains at the sender's backoff (at most 30 s) plus the delivery itself. */
const DRAINED_WITHIN_MS = 60_000;
const POLL_MS = 250;

type Status = Awaited<ReturnType<ControlClient["status"]>>;
let client: ControlClient | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await lab.down(ID);
});

async function waitFor(
  c: ControlClient,
  what: string,
  pred: (s: Status) => boolean,
  timeoutMs: number,
): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status | null = null;
  for (let i = 0; i < timeoutMs / POLL_MS + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(POLL_MS);
  }
  assert.fail(
    `timed out waiting for ${what}; last telemetry: ${JSON.stringify(last?.telemetry ?? null).slice(0, 1500)}`,
  );
}

/** Reads the collector's database (a file read in the root namespace, no network). */
function query<T>(sql: string, ...params: unknown[]): T[] {
  const db = new Database(collectorPaths(lab.labDirOf(ID)).db, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

function spoolNextSeq(): number {
  const st = JSON.parse(
    readFileSync(join(lab.labDirOf(ID), "detourd-state", "telemetry-spool", "state.json"), "utf8"),
  ) as { nextSeq: number };
  return st.nextSeq;
}

test(
  "tunnel-metrics-state-and-failover-events-arrive-at-the-collector-and-a-two-minute-outage-loses-and-duplicates-nothing",
  { timeout: OUTAGE_MS + 240_000 },
  async () => {
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await c.connect();
    await waitFor(
      c,
      "connected with a standby",
      (s) => s.state === "connected" && s.standby !== null,
      CONNECT_WITHIN_MS,
    );
    const s1 = await waitFor(
      c,
      "a first delivery",
      (s) => (s.telemetry?.export?.delivered ?? 0) > 0,
      DELIVERED_WITHIN_MS,
    );
    const device = s1.telemetry?.export?.deviceId ?? "";
    assert.match(device, /^[0-9a-f-]{36}$/);

    // The fleet view and the charts have this device, connected to gw1, with RTT points.
    await sleep(6000);
    const agents = query<{ state: string | null; gateway: string | null }>(
      "SELECT state, gateway FROM agents WHERE device_id = ?",
      device,
    );
    assert.deepEqual(agents, [{ state: "connected", gateway: "gw1" }]);
    const rtt = query<{ n: number }>(
      "SELECT count(*) AS n FROM points WHERE device_id = ? AND name = 'detour.tunnel.rtt' AND gateway = 'gw1'",
      device,
    );
    assert.ok((rtt[0]?.n ?? 0) > 0, "RTT points of gw1 are stored");

    // A failover reaches the timeline with its reason and times.
    await lab.kill("gw1", "all", ID);
    await waitFor(c, "the failover", (s) => s.state === "connected" && s.gateway !== "gw1", CONNECT_WITHIN_MS);
    let failovers: { from_gateway: string; to_gateway: string; reason: string; restored_after_ms: number | null }[] =
      [];
    for (let i = 0; i < DELIVERED_WITHIN_MS / POLL_MS && failovers.length === 0; i++) {
      await sleep(POLL_MS);
      failovers = query(
        "SELECT from_gateway, to_gateway, reason, restored_after_ms FROM events WHERE device_id = ? AND kind = 'failover'",
        device,
      );
    }
    console.log(`failover at the collector: ${JSON.stringify(failovers)}`);
    const f = failovers[0];
    assert.ok(failovers.length === 1 && f !== undefined);
    assert.equal(f.from_gateway, "gw1");
    assert.match(f.reason, /^dead/);

    // Two minutes without the collector: the agent keeps measuring into its spool.
    await waitFor(c, "an empty spool", (s) => s.telemetry?.export?.pending === 0, DRAINED_WITHIN_MS);
    const firstSeq = spoolNextSeq();
    await lab.collectorStop(ID);
    const outageStart = Date.now();
    await sleep(OUTAGE_MS);
    const during = await c.status();
    const lastSeq = spoolNextSeq() - 1;
    console.log(
      `outage of ${Math.round((Date.now() - outageStart) / 1000)} s: batches ${firstSeq}..${lastSeq} spooled, ${during.telemetry?.export?.pending ?? "?"} pending; last error: ${during.telemetry?.export?.lastError ?? "none"}`,
    );
    assert.ok(
      lastSeq - firstSeq + 1 >= OUTAGE_MS / 5000 - 2,
      "the agent kept exporting into the spool during the outage",
    );
    const ex = during.telemetry?.export ?? null;
    assert.ok(ex !== null && ex.pending > 0);
    assert.match(ex.lastError ?? "", /unreachable|ECONNREFUSED|fetch failed/);

    await lab.collectorStart(ID);
    const drained = await waitFor(
      c,
      "the backlog delivered",
      (s) => s.telemetry?.export?.pending === 0 && (s.telemetry.export.nextAttemptAt ?? null) === null,
      DRAINED_WITHIN_MS,
    );
    const dx = drained.telemetry?.export ?? null;
    assert.ok(dx !== null);
    assert.equal(dx.dropped, 0, "nothing was dropped");
    assert.equal(dx.rejected, 0, "nothing was refused");

    const stored = query<{ batch_id: string; signal: string }>(
      "SELECT batch_id, signal FROM batches WHERE device_id = ?",
      device,
    );
    const ids = stored.map((r) => r.batch_id);
    assert.equal(new Set(ids).size, ids.length, "each batch id is stored once");
    const missing: number[] = [];
    for (let seq = firstSeq; seq <= lastSeq; seq++) if (!ids.includes(`${device}:${seq}`)) missing.push(seq);
    assert.deepEqual(missing, [], "every batch produced during the outage arrived");
    const pointsDuring = query<{ n: number }>(
      "SELECT count(*) AS n FROM points WHERE device_id = ? AND ts_ms BETWEEN ? AND ?",
      device,
      outageStart + 5000,
      outageStart + OUTAGE_MS - 5000,
    );
    console.log(
      `after the outage: ${ids.length} batches stored for the device, ${lastSeq - firstSeq + 1} of them from the outage; ${pointsDuring[0]?.n ?? 0} points timed inside it`,
    );
    assert.ok((pointsDuring[0]?.n ?? 0) > 0, "the outage's measurements are in the charts, at their own times");
  },
);
