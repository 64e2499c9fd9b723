/**
 * Laptop life against the real engines: the client moves between its two networks while traffic flows (the same
 * gateway keeps the tunnel, nothing is recorded against it), moves with an offline gap (detourd waits for a
 * network, then connects at once), and detourd starts with no network at all.
 */
import assert from "node:assert/strict";
import { spawnSync, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop, keepAgentLog } from "./agent.ts";
import * as lab from "./lab.ts";
import { firstReplyAfter, pingStream, type PingStream } from "./roam.ts";
import { CORP_ADDRESS } from "./topology.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "nroam";
const ARTIFACTS = join(new URL("../..", import.meta.url).pathname, "test-artifacts", "roam");
/** Connecting on the lab's user distances takes well under this; the bound only keeps a broken run from hanging. */
const CONNECT_WITHIN_MS = 20_000;
/** The target is traffic back within 1 s of the new route; the test allows for a busy 2-core machine. */
const BACK_WITHIN_MS = 5_000;

let client: ControlClient | null = null;
let pinger: ChildProcess | null = null;

before(async () => {
  await lab.down(ID);
  // Both networks NATed, as a laptop's are: a gateway sees one network's public address, then the other's.
  await lab.up(ID, { wifi: "nat" });
});

after(async () => {
  if (pinger?.pid !== undefined && pinger.exitCode === null) pinger.kill("SIGTERM");
  client?.close();
  await agentStop(ID);
  // What happened at each move is in detourd's log.
  keepAgentLog(ID, ARTIFACTS);
  await lab.down(ID);
});

/** A ping through the tunnel to corp every 50 ms; the times (epoch ms) of its replies. */
function startTraffic(): PingStream {
  const t = pingStream(lab.topologyOf(ID), CORP_ADDRESS);
  pinger = t.child;
  return t;
}

function reachCorp(): boolean {
  const topo = lab.topologyOf(ID);
  const r = spawnSync("ip", ["netns", "exec", topo.client.ns, "ping", "-n", "-c", "3", "-W", "2", CORP_ADDRESS], {
    timeout: 10_000,
  });
  return r.status === 0;
}

async function connected(c: ControlClient, what: string, within = CONNECT_WITHIN_MS): Promise<Status> {
  return waitForStatus(c, what, (s) => s.state === "connected", within);
}

test(
  "a-move-between-networks-while-traffic-flows-keeps-the-gateway-and-records-no-failover",
  { timeout: 120_000 },
  async () => {
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await c.connect();
    const before = await connected(c, "connected on wifi");
    const networkBefore = before.network?.id ?? null;
    const traffic = startTraffic();
    await new Promise((r) => setTimeout(r, 1000));
    const moved = await lab.move("mobile", {}, ID);
    const movedAt = Date.now();
    const back = await firstReplyAfter(traffic.replies, movedAt, BACK_WITHIN_MS * 2);
    await new Promise((r) => setTimeout(r, 2500));
    traffic.stop();
    const s = await c.status();
    console.log(
      `move ${JSON.stringify(moved.from)} -> ${moved.to}: traffic back ${back === null ? "never" : `${String(back - movedAt)} ms`} after the new route; state ${s.state} on ${String(s.gateway)} over ${String(s.protocol)}; summary: ${s.summary}; network ${String(networkBefore)} -> ${String(s.network?.id)}`,
    );
    assert.ok(back !== null && back - movedAt <= BACK_WITHIN_MS, "traffic flows again through the tunnel");
    assert.equal(s.state, "connected");
    assert.equal(s.gateway, before.gateway, "the same gateway");
    assert.equal(s.protocol, before.protocol, "the same protocol");
    assert.deepEqual(
      s.lastFailover,
      before.lastFailover,
      "no failover recorded against a gateway that was never at fault",
    );
    assert.ok(s.network?.id != null && s.network.id !== networkBefore, "the new network's memory is the one in use");
    assert.ok(reachCorp());
  },
);

test("a-move-with-an-offline-gap-waits-for-a-network-then-connects-at-once", { timeout: 120_000 }, async () => {
  assert.ok(client !== null, "runs after the first test");
  const c = client;
  await connected(c, "connected before the move");
  const failovers = (await c.status()).lastFailover;
  let waiting: Status | null = null;
  const report = await lab.move(
    "wifi",
    {
      gapMs: 4000,
      onOffline: async () => {
        waiting = await waitForStatus(c, "waiting for a network", (x) => x.state === "waiting-for-network", 3500);
      },
    },
    ID,
  );
  const t0 = Date.now();
  const up = await connected(c, "connected after the gap", 10_000);
  const ms = Date.now() - t0;
  const w = waiting as Status | null;
  console.log(
    `gap ${String(report.gapMs)} ms: waiting said "${String(w?.summary)}"; connected ${String(ms)} ms after the route came back to ${String(up.gateway)} (${String(up.protocol)})`,
  );
  assert.ok(w !== null);
  assert.match(w.summary, /Waiting for a network/);
  assert.ok(ms <= BACK_WITHIN_MS, `connected ${String(ms)} ms after the route came back`);
  assert.deepEqual(up.lastFailover, failovers, "no failover recorded for the gap");
  assert.ok(reachCorp());
});

test("detourd-started-offline-waits-for-a-network-and-connects-when-one-appears", { timeout: 120_000 }, async () => {
  client?.close();
  client = null;
  await agentStop(ID);
  // Set inside the move's offline hook: a holder, so the reads after the move see what the hook stored.
  const seen: { c: ControlClient | null; waited: Status | null } = { c: null, waited: null };
  await lab.move(
    "mobile",
    {
      gapMs: 6000,
      onOffline: async () => {
        const a = await agentStart(ID);
        const c = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
        seen.c = c;
        client = c;
        await c.connect();
        const waited = await waitForStatus(c, "waiting for a network", (x) => x.state === "waiting-for-network", 5000);
        seen.waited = waited;
        const racesBefore = waited.lastRace?.id ?? null;
        await new Promise((r) => setTimeout(r, 1000));
        const still = await c.status();
        assert.equal(still.state, "waiting-for-network", "no race or backoff churn while offline");
        assert.equal(still.lastRace?.id ?? null, racesBefore, "no race ran while offline");
      },
    },
    ID,
  );
  const t0 = Date.now();
  const c = seen.c;
  assert.ok(c !== null);
  const up = await connected(c, "connected once a network appeared", 10_000);
  console.log(
    `started offline: connected ${String(Date.now() - t0)} ms after the route appeared (${String(up.gateway)})`,
  );
  assert.ok(Date.now() - t0 <= BACK_WITHIN_MS);
  assert.ok(seen.waited !== null);
  assert.ok(reachCorp());
});

test(
  "after-a-sleep-with-the-session-kept-the-tunnel-is-checked-at-once-and-nothing-fails-over",
  { timeout: 120_000 },
  async () => {
    const c = client;
    assert.ok(c !== null, "runs after the tests before it");
    const before = await connected(c, "connected before the sleep");
    const traffic = startTraffic();
    const { wokeAt } = await lab.sleepClient(6, ID);
    const back = await firstReplyAfter(traffic.replies, wokeAt, BACK_WITHIN_MS * 2);
    await new Promise((r) => setTimeout(r, 2500));
    traffic.stop();
    const s = await c.status();
    console.log(
      `sleep 6 s: traffic back ${back === null ? "never" : `${String(back - wokeAt)} ms`} after the wake; ${s.summary}; wakes seen ${String(s.network?.monitor?.wakes)}`,
    );
    assert.ok(back !== null && back - wokeAt <= BACK_WITHIN_MS, "traffic flows again after the wake");
    assert.equal(s.state, "connected");
    assert.equal(s.gateway, before.gateway, "the same gateway");
    assert.deepEqual(s.lastFailover, before.lastFailover, "no failover after a sleep that kept the session");
    assert.ok((s.network?.monitor?.wakes ?? 0) >= 1, "detourd noticed the sleep");
  },
);

test(
  "after-a-long-sleep-a-dropped-anyconnect-session-comes-back-on-the-same-gateway",
  { timeout: 180_000 },
  async () => {
    const c = client;
    assert.ok(c !== null, "runs after the tests before it");
    await c.setPref("race.order", "anyconnect-dtls");
    await c.setPref("standby.mode", "off");
    await c.disconnect();
    await c.connect();
    const before = await waitForStatus(
      c,
      "connected over AnyConnect",
      (s) => s.state === "connected" && s.protocol === "anyconnect-dtls",
      CONNECT_WITHIN_MS,
    );
    // ocserv's dead-peer detection (5 s) drops the session while the client sleeps.
    const traffic = startTraffic();
    const { wokeAt } = await lab.sleepClient(30, ID);
    const back = await firstReplyAfter(traffic.replies, wokeAt, BACK_WITHIN_MS * 2);
    traffic.stop();
    // openconnect notices the dropped session on its own a moment after the wake: what counts is where it ends.
    await new Promise((r) => setTimeout(r, 5000));
    const up = await waitForStatus(c, "connected again after the wake", (s) => s.state === "connected", 20_000);
    assert.ok(reachCorp(), "the tunnel carries traffic after the wake");
    console.log(
      `sleep 30 s over AnyConnect: traffic back ${back === null ? "never" : `${String(back - wokeAt)} ms`} after the wake on ${String(up.gateway)}; last race ${JSON.stringify(up.lastRace?.legs.map((l) => [l.leg.gateway, l.leg.kind, l.outcome]))}; failover ${JSON.stringify(up.lastFailover?.reason ?? null)}`,
    );
    assert.ok(back !== null && back - wokeAt <= BACK_WITHIN_MS, "traffic flows again after the wake");
    assert.equal(up.gateway, before.gateway, "the same gateway first");
    assert.deepEqual(up.lastFailover, before.lastFailover, "no failover recorded against the gateway");
  },
);
