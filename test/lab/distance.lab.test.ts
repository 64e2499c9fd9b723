/** The lab's geography: each gateway as far from the client as users have it, and every impairment adding to that. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { run, stopPids } from "./exec.ts";
import * as lab from "./lab.ts";
import { GATEWAY_NAMES, gatewayByName, oneWayDelay, USER_DISTANCES, type GatewayName } from "./topology.ts";

const ID = "dist";
/** A second lab, built without distances. */
const NONE_ID = "dist0";

/** Echoes per measurement: the median of 15 is steady to a millisecond or two against a few ms of jitter. */
const PING_SAMPLES = 15;
/** 200 ms apart: sparse, so each echo sees the link's delay and never waits behind the previous one. */
const PING_INTERVAL_S = "0.2";
/** How long ping waits for the last reply: above the longest round trip measured here (450 ms) with room for load. */
const PING_WAIT_S = "2";
/** 15 echoes 0.2 s apart plus the last reply's wait; more means ping hung. */
const PING_TIMEOUT_MS = 15_000;
/** A median may sit this far below the target: the jitter of 15 samples, which averages out to within a millisecond. */
const MEDIAN_BELOW_MS = 3;
/**
 * And this far above: each delayq pass adds a fraction of a millisecond on an idle machine, and a 2-core machine
 * shared with other labs adds scheduling delay; a missing or doubled distance is tens of ms off.
 */
const MEDIAN_ABOVE_MS = 10;
/** No echo can beat the links' fixed delays; this allows for ping's and the kernel's clocks rounding. */
const FLOOR_SLACK_MS = 1;
/** The 0 ms world: a veth through the router answers in well under a millisecond, a loaded machine in a few. */
const NONE_MAX_MEDIAN_MS = 5;
/** The client-uplink delay the stacking check adds each way. */
const CLIENT_DELAY_MS = 100;
/** A delay on one gateway's link in the router, each way. */
const GATEWAY_DELAY_MS = 30;

interface Pings {
  rtts: number[];
  median: number;
  min: number;
}

async function pingFrom(id: string, address: string): Promise<Pings> {
  const ns = lab.topologyOf(id).client.ns;
  const family = address.includes(":") ? "-6" : "-4";
  const r = await run(
    "ip",
    [
      "netns",
      "exec",
      ns,
      "ping",
      family,
      "-n",
      "-c",
      String(PING_SAMPLES),
      "-i",
      PING_INTERVAL_S,
      "-W",
      PING_WAIT_S,
      address,
    ],
    { timeoutMs: PING_TIMEOUT_MS },
  );
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  assert.ok(
    rtts.length >= PING_SAMPLES - 1,
    `ping ${address} from ${ns}: ${rtts.length}/${PING_SAMPLES} replies\n${r.stdout}${r.stderr}`,
  );
  const sorted = [...rtts].sort((a, b) => a - b);
  return { rtts, median: sorted[Math.floor(sorted.length / 2)] ?? NaN, min: sorted[0] ?? NaN };
}

/** The median round trip to each gateway's underlay address, measured side by side. */
async function medians(id: string, family: "ipv4" | "ipv6" = "ipv4"): Promise<Record<GatewayName, Pings>> {
  const topo = lab.topologyOf(id);
  const all = await Promise.all(
    GATEWAY_NAMES.map((g) =>
      pingFrom(id, family === "ipv4" ? gatewayByName(topo, g).address : gatewayByName(topo, g).address6),
    ),
  );
  return Object.fromEntries(GATEWAY_NAMES.map((g, i) => [g, all[i]])) as Record<GatewayName, Pings>;
}

/** Asserts each gateway's median near `expected` and no echo below the fixed delays (`floor`). */
function assertRtts(
  what: string,
  got: Record<GatewayName, Pings>,
  expected: (g: GatewayName) => number,
  floor: (g: GatewayName) => number,
): void {
  console.log(
    `${what}: ${GATEWAY_NAMES.map((g) => `${g} median ${got[g].median.toFixed(1)} ms (min ${got[g].min.toFixed(1)}, expected ${expected(g)})`).join(", ")}`,
  );
  for (const g of GATEWAY_NAMES) {
    const { median, min, rtts } = got[g];
    assert.ok(
      median >= expected(g) - MEDIAN_BELOW_MS && median <= expected(g) + MEDIAN_ABOVE_MS,
      `${what}: ${g} median ${median} ms, expected ${expected(g)} (-${MEDIAN_BELOW_MS}/+${MEDIAN_ABOVE_MS}); samples ${rtts.join(", ")}`,
    );
    assert.ok(
      min >= floor(g) - FLOOR_SLACK_MS,
      `${what}: ${g} echo after ${min} ms, below the links' fixed ${floor(g)} ms`,
    );
  }
}

const rtt = (g: GatewayName): number => USER_DISTANCES[g].rttMs;
const fixed = (g: GatewayName): number => 2 * oneWayDelay(USER_DISTANCES[g]).delayMs;

before(async () => {
  await lab.down(ID);
  await lab.down(NONE_ID);
  await lab.up(ID);
});
after(async () => {
  await lab.down(ID);
  await lab.down(NONE_ID);
});

test("each-gateway-is-as-far-as-users-have-it", { timeout: 60_000 }, async () => {
  const st = await lab.status(ID);
  assert.equal(st.distance, "user", "the default lab has the users' distances");
  assert.deepEqual(
    st.distances.map((d) => [d.gateway, d.rttMs, d.alive]),
    GATEWAY_NAMES.map((g) => [g, rtt(g), true]),
    "status shows every gateway's distance with its delayqs running",
  );
  assertRtts("IPv4", await medians(ID), rtt, fixed);
  assertRtts("IPv6", await medians(ID, "ipv6"), rtt, fixed);
});

test("a-client-uplink-delay-adds-to-every-distance", { timeout: 60_000 }, async () => {
  const imp = await lab.impair(
    { kind: "delay", target: "client", proto: "all", dir: "both", delayMs: CLIENT_DELAY_MS, jitterMs: 0 },
    ID,
  );
  try {
    const extra = 2 * CLIENT_DELAY_MS;
    assertRtts(
      `client delay ${CLIENT_DELAY_MS} ms each way`,
      await medians(ID),
      (g) => rtt(g) + extra,
      (g) => fixed(g) + extra,
    );
  } finally {
    await lab.lift(imp.id, ID);
  }
});

test("a-delay-on-one-gateway-adds-to-its-distance-only", { timeout: 60_000 }, async () => {
  const imp = await lab.impair(
    { kind: "delay", target: "gw2", proto: "all", dir: "both", delayMs: GATEWAY_DELAY_MS, jitterMs: 0 },
    ID,
  );
  try {
    const extra = (g: GatewayName): number => (g === "gw2" ? 2 * GATEWAY_DELAY_MS : 0);
    assertRtts(
      `gw2 delay ${GATEWAY_DELAY_MS} ms each way`,
      await medians(ID),
      (g) => rtt(g) + extra(g),
      (g) => fixed(g) + extra(g),
    );
  } finally {
    await lab.lift(imp.id, ID);
  }
});

test("heal-keeps-the-distances-and-restarts-a-dead-one", { timeout: 60_000 }, async () => {
  await lab.impair({ kind: "loss", target: "gw3", proto: "all", dir: "both", percent: 50 }, ID);
  const gw1 = (await lab.status(ID)).distances.find((d) => d.gateway === "gw1");
  assert.ok(gw1 !== undefined);
  await stopPids([gw1.pids.up], "SIGKILL");
  assert.equal(
    (await lab.status(ID)).distances.find((d) => d.gateway === "gw1")?.alive,
    false,
    "status notices a dead distance delayq",
  );

  await lab.heal(ID);
  const st = await lab.status(ID);
  assert.deepEqual(st.impairments, [], "heal lifts the impairments");
  assert.ok(
    st.distances.length === 3 && st.distances.every((d) => d.alive),
    `every distance in force after heal: ${JSON.stringify(st.distances)}`,
  );
  assertRtts("after heal", await medians(ID), rtt, fixed);
});

test("distance-none-is-the-zero-ms-world-of-the-baselines", { timeout: 120_000 }, async () => {
  await lab.up(NONE_ID, { distance: "none" });
  const st = await lab.status(NONE_ID);
  assert.equal(st.distance, "none");
  assert.deepEqual(st.distances, [], "no distance delayq runs");
  const got = await medians(NONE_ID);
  console.log(`distance none: ${GATEWAY_NAMES.map((g) => `${g} median ${got[g].median.toFixed(2)} ms`).join(", ")}`);
  for (const g of GATEWAY_NAMES)
    assert.ok(got[g].median <= NONE_MAX_MEDIAN_MS, `${g} median ${got[g].median} ms in the 0 ms world`);
  await lab.down(NONE_ID);
});
