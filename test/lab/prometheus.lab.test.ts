/**
 * An organisation's own Prometheus watches the fleet: Debian's Prometheus, in the lab's collector namespace,
 * scrapes the collector's /metrics (read token from a file, every second) while a real detourd reports to it,
 * and its query API returns the fleet's values: one agent connected, on the gateway it uses, with a measured
 * RTT; after the lab kills that gateway, the failover away from it and the agent on the next one.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";
import {
  parseVector,
  SCRAPE_JOB,
  startPrometheus,
  stopPrometheus,
  type LabPrometheus,
  type PromSample,
} from "./prometheus.ts";

const ID = "prom";
/** A healthy lab connects in well under a second; allow for a loaded two-core machine. */
const CONNECT_WITHIN_MS = 10_000;
/** The lab exports every 5 s; three intervals bound the first delivery on a loaded machine. */
const DELIVERED_WITHIN_MS = 20_000;
/**
 * From a change at the collector to Prometheus's answer: a 1 s scrape plus a few export intervals, since the
 * kill switch may make a delivery attempt during the failover fail and back off.
 */
const SEEN_BY_PROMETHEUS_WITHIN_MS = 40_000;
const QUERY_TIMEOUT_MS = 5000;
const POLL_MS = 500;

type Status = Awaited<ReturnType<ControlClient["status"]>>;
let client: ControlClient | null = null;
let prom: LabPrometheus | null = null;
let probe: ProbeClient | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});

after(async () => {
  await probe?.close();
  if (prom !== null) await stopPrometheus(prom);
  client?.close();
  await agentStop(ID);
  await lab.down(ID);
});

async function waitStatus(
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
    `timed out waiting for ${what}; last state ${String(last?.state)}, telemetry ${JSON.stringify(last?.telemetry?.export ?? null)}`,
  );
}

/** An instant query, sent from inside the collector namespace (Prometheus listens on its loopback only). */
async function query(promql: string): Promise<PromSample[]> {
  const p = probe ?? assert.fail("no probe client");
  const url = `${prom?.url ?? ""}/api/v1/query?query=${encodeURIComponent(promql)}`;
  const r = await p.http({ url, timeoutMs: QUERY_TIMEOUT_MS });
  if (!r.ok) throw new Error(`query ${promql}: ${r.error}`);
  if (r.status !== 200) throw new Error(`query ${promql}: HTTP ${r.status}: ${r.body.slice(0, 300)}`);
  return parseVector(r.body);
}

/** Polls a query until `ok` accepts its samples; fails with the last answer. */
async function queryUntil(
  promql: string,
  ok: (s: PromSample[]) => boolean,
  timeoutMs = SEEN_BY_PROMETHEUS_WITHIN_MS,
): Promise<PromSample[]> {
  const until = Date.now() + timeoutMs;
  let last: PromSample[] = [];
  for (let i = 0; i < timeoutMs / POLL_MS + 1 && Date.now() < until; i++) {
    last = await query(promql);
    if (ok(last)) return last;
    await sleep(POLL_MS);
  }
  assert.fail(`${promql} did not reach the expected value within ${timeoutMs} ms; last answer ${JSON.stringify(last)}`);
}

/** label value -> sample value, for one label of a query's samples. */
const byLabel = (samples: PromSample[], label: string): Record<string, number> =>
  Object.fromEntries(samples.map((s) => [s.labels[label] ?? "", s.value]));

test("prometheus-scrapes-the-collector-and-its-query-api-returns-the-fleet", { timeout: 180_000 }, async () => {
  const topo = lab.topologyOf(ID);
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  await c.connect();
  const up = await waitStatus(
    c,
    "connected with a standby",
    (s) => s.state === "connected" && s.standby !== null,
    CONNECT_WITHIN_MS,
  );
  const first = up.gateway ?? assert.fail("connected without a gateway");
  await waitStatus(c, "a first delivery", (s) => (s.telemetry?.export?.delivered ?? 0) > 0, DELIVERED_WITHIN_MS);

  prom = await startPrometheus(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.collector.ns] });

  // The scrape works: the target is up, with the read token.
  await queryUntil(`up{job="${SCRAPE_JOB}"}`, (s) => s.length === 1 && s[0]?.value === 1, 15_000);

  const agents = await queryUntil("detour_agents", (s) => byLabel(s, "state").connected === 1);
  assert.deepEqual(byLabel(agents, "state"), { connected: 1 }, "one agent, connected");
  assert.ok(
    agents.every((s) => s.labels.job === SCRAPE_JOB && s.labels.instance === `${topo.collector.address}:4318`),
    JSON.stringify(agents),
  );
  const perGateway = await queryUntil("detour_gateway_agents_connected", (s) => byLabel(s, "gateway")[first] === 1);
  assert.deepEqual(
    Object.entries(byLabel(perGateway, "gateway")).filter(([, n]) => n > 0),
    [[first, 1]],
    "the agent is counted on its gateway only",
  );
  const rtt = await queryUntil(`detour_gateway_rtt_ms{gateway="${first}"}`, (s) => s.length === 1);
  assert.ok(
    (rtt[0]?.value ?? 0) > 0 && (rtt[0]?.value ?? 0) < 100,
    `a plausible lab RTT through ${first}: ${JSON.stringify(rtt)}`,
  );
  const total = await query("sum(detour_agents)");
  assert.equal(total[0]?.value, 1, "PromQL aggregates the fleet");
  console.log(
    `Prometheus sees: agents ${JSON.stringify(byLabel(agents, "state"))}, per gateway ${JSON.stringify(byLabel(perGateway, "gateway"))}, RTT via ${first} ${String(rtt[0]?.value)} ms`,
  );

  // A failover shows in Prometheus too: counted away from the killed gateway, the agent on the next one.
  await lab.kill(first, "all", ID);
  const moved = await waitStatus(
    c,
    "the failover",
    (s) => s.state === "connected" && s.gateway !== null && s.gateway !== first,
    CONNECT_WITHIN_MS,
  );
  const next = moved.gateway ?? "";
  const failovers = await queryUntil(`sum by (from, to) (detour_failovers_last_hour)`, (s) =>
    s.some((x) => x.labels.from === first && x.value >= 1),
  );
  assert.deepEqual(
    failovers.map((s) => [s.labels.from, s.labels.to, s.value]),
    [[first, next, 1]],
    "one failover, from the killed gateway to the next",
  );
  await queryUntil(
    "detour_gateway_agents_connected",
    (s) => byLabel(s, "gateway")[next] === 1 && (byLabel(s, "gateway")[first] ?? 0) === 0,
  );
  assert.deepEqual(byLabel(await query("detour_agents"), "state"), { connected: 1 });
});
