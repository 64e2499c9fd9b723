/**
 * A laptop with no route to any gateway (offline, an IPv6-only gateway on an IPv4-only network, a bad DNS
 * answer): detourd must stay up, say why it cannot connect, and connect once a route is there again.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentRunning, agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";
import { UNDERLAY, UNDERLAY6 } from "./topology.ts";

const ID = "offl";
/**
 * Long enough for several races, their pre-connect probes and at least two retries to run into the missing
 * route: the crash this guards against came within seconds of the first connect.
 */
const OFFLINE_FOR_MS = 8_000;
/** Once the route is back the next retry connects; the retry backoff (1, 2, 4, 8 s) bounds when that is. */
const RECONNECT_WITHIN_MS = 30_000;
const POLL_MS = 100;

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

function clientRoutes(op: "add" | "del"): void {
  const topo = lab.topologyOf(ID);
  for (const [family, dst, via] of [
    ["-4", UNDERLAY, topo.client.routerAddress],
    ["-6", UNDERLAY6, topo.client.routerAddress6],
  ] as const) {
    const r = spawnSync("ip", ["-n", topo.client.ns, family, "route", op, dst, "via", via, "dev", topo.client.ifname], {
      encoding: "utf8",
      timeout: 5000,
    });
    assert.equal(r.status, 0, `ip route ${op} ${dst}: ${r.stderr}`);
  }
}

function waitFor(c: ControlClient, what: string, pred: (s: Status) => boolean, timeoutMs: number): Promise<Status> {
  return waitForStatus(c, what, pred, timeoutMs);
}

test(
  "no-route-to-any-gateway-detourd-stays-up-says-why-and-connects-when-a-route-appears",
  { timeout: 120_000 },
  async () => {
    clientRoutes("del");
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await c.connect();
    const t0 = Date.now();
    const states = new Set<string>();
    while (Date.now() - t0 < OFFLINE_FOR_MS) {
      assert.ok(agentRunning(ID) !== null, `detourd exited while offline, ${Date.now() - t0} ms after connect`);
      const s = await c.status();
      states.add(s.state);
      await sleep(POLL_MS * 2);
    }
    // The network monitor (issue 16) finds no route toward any gateway: "Waiting for a network", with no race or
    // retry churn; a platform without a monitor ends in the error state with the same reason.
    const s = await waitFor(
      c,
      "waiting for a network (or the error state)",
      (x) => x.state === "waiting-for-network" || x.state === "error",
      10_000,
    );
    console.log(
      `offline: states seen ${[...states].join(", ")}; ${s.state} says: ${s.summary}; legs: ${JSON.stringify(s.lastRace?.legs.map((l) => [l.leg.gateway, l.leg.kind, l.outcome, l.error?.code, l.error?.message.slice(0, 120)]))}`,
    );
    assert.match(s.summary, /no route to any gateway/i, "the state says why");
    for (const l of s.lastRace?.legs ?? [])
      if (l.outcome === "failed")
        assert.ok(
          l.error !== null && l.error.message.length > 0,
          `leg ${l.leg.gateway}/${l.leg.kind} says why it failed`,
        );

    clientRoutes("add");
    const t1 = Date.now();
    const up = await waitFor(
      c,
      "connected after the route came back",
      (x) => x.state === "connected",
      RECONNECT_WITHIN_MS,
    );
    console.log(
      `route back: connected to ${String(up.gateway)} over ${String(up.protocol)} ${Date.now() - t1} ms later`,
    );
    assert.ok(agentRunning(ID) !== null);
  },
);
