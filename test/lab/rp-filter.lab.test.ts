/**
 * A strict reverse-path filter (rp_filter=1, the default on hardened laptops) in the client namespace: every
 * protocol's first echo comes back once the leg's source rule is in before it (and is dropped without it, which
 * shows the filter is really in force), and detourd connects, keeps a warm standby and fails over to it, under
 * the strict filter and under the default one.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { ControlClient } from "../../main/client/control-client.ts";
import { createEngine } from "../../native/engines/create-engine.ts";
import type { TunnelEngine } from "../../native/engines/engine.ts";
import { installLegSource, removeLegSource, rulesAt, type LegSource } from "../../native/platform/routes.linux.ts";
import { agentStart, agentStop } from "./agent.ts";
import { labEngineSpec, type LabLeg } from "./engine-specs.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "irpf";
/** One engine alone answers within a second or two here; ten leaves room for a loaded 2-core machine. */
const START_DEADLINE_MS = 10_000;
/** Without its source rule a leg never answers under rp_filter=1: 4 s is enough to show it without waiting long. */
const UNROUTED_DEADLINE_MS = 4_000;
/** A healthy lab connects and raises its standby within a second or two; 20 s bounds a loaded machine. */
const STANDBY_WITHIN_MS = 20_000;
/** The promotion takes the dead window (0.3 s); 10 s only bounds a hung test. */
const FAILOVER_WITHIN_MS = 10_000;
/** Engines take up to their stop budget (a few seconds) to go after disconnect. */
const DISCONNECT_WITHIN_MS = 15_000;
/** A table and preference of their own, far from detourd's slots (5100-5189, 100-189). */
const TEST_SLOT = { table: 5290, pref: 190 } as const;

const topo = lab.topologyOf(ID);
const ns = topo.client.ns;
const engines: TunnelEngine[] = [];
let client: ControlClient | null = null;

async function setRpFilter(value: 0 | 1): Promise<void> {
  await nsRun(ns, [
    "sysctl",
    "-q",
    "-w",
    `net.ipv4.conf.all.rp_filter=${String(value)}`,
    `net.ipv4.conf.default.rp_filter=${String(value)}`,
  ]);
  const seen = (await nsRun(ns, ["sysctl", "-n", "net.ipv4.conf.all.rp_filter"])).trim();
  assert.equal(seen, String(value), "the client namespace's rp_filter is set");
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await Promise.all(engines.map((e) => e.stop().catch(() => undefined)));
  await lab.down(ID);
});

const LEGS: readonly { leg: LabLeg; gateway: string; ifname: string }[] = [
  { leg: "wireguard", gateway: "gw1", ifname: `d${ID}-wg` },
  { leg: "ikev2", gateway: "gw2", ifname: `d${ID}-ike` },
  { leg: "anyconnect-dtls", gateway: "gw3", ifname: `d${ID}-dtls` },
  { leg: "anyconnect-tls", gateway: "gw1", ifname: `d${ID}-tls` },
];

test("under-rp-filter-1-every-protocol-answers-once-its-source-rule-is-in-before-the-first-echo", async () => {
  await setRpFilter(1);
  const state = lab.loadState(ID);
  // The control: without a source rule the strict filter drops the echo's reply, so the start times out.
  const bare = createEngine(labEngineSpec(topo, state, "gw1", "wireguard", { ifname: `d${ID}-bare` }));
  engines.push(bare);
  const err = await bare.start(Date.now() + UNROUTED_DEADLINE_MS).then(
    () => null,
    (e: unknown) => (e instanceof Error ? e : new Error(JSON.stringify(e))),
  );
  assert.ok(err !== null, "without its source rule the leg never answers under rp_filter=1");
  console.log(`without a source rule: ${err.message.split("\n")[0] ?? ""}`);

  for (const l of LEGS) {
    const e = createEngine(labEngineSpec(topo, state, l.gateway, l.leg, { ifname: l.ifname }));
    engines.push(e);
    const routed: LegSource[] = [];
    const t0 = Date.now();
    try {
      const up = await e.start(t0 + START_DEADLINE_MS, undefined, {
        beforeProbe: async (dev) => {
          const s = { ...dev, ...TEST_SLOT, netns: ns };
          routed.push(s);
          await installLegSource(s);
        },
      });
      console.log(`${l.leg}: up on ${up.config.ifname} after ${String(up.timings.firstReplyAt - t0)} ms`);
      assert.deepEqual(
        routed.map((s) => s.ifname),
        [up.config.ifname],
        `${l.leg}: the engine asked once for its device's source routing`,
      );
    } finally {
      await e.stop();
      for (const s of routed) await removeLegSource(s);
    }
    assert.deepEqual(await rulesAt(TEST_SLOT.pref, ns), [], `${l.leg}: no source rule left`);
  }
});

async function standbyAndFailover(rpFilter: 0 | 1): Promise<void> {
  await setRpFilter(rpFilter);
  await lab.heal(ID);
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  try {
    await c.connect();
    const s0 = await waitForStatus(
      c,
      `connected with a standby (rp_filter=${String(rpFilter)})`,
      (x) => x.state === "connected" && x.standby !== null && x.standby.lastReplyAt !== null,
      STANDBY_WITHIN_MS,
    );
    const sb = s0.standby;
    assert.ok(sb !== null);
    console.log(
      `rp_filter=${String(rpFilter)}: active ${String(s0.gateway)}/${String(s0.protocol)}, standby ${sb.gateway}/${sb.protocol}`,
    );
    const active = String(s0.gateway);
    await lab.kill(active, "all", ID);
    const s1 = await waitForStatus(
      c,
      `failover away from ${active}`,
      (x) => x.state === "connected" && x.gateway !== active && x.lastFailover?.restoredAt != null,
      FAILOVER_WITHIN_MS,
    );
    const f = s1.lastFailover;
    assert.ok(f !== null);
    console.log(
      `rp_filter=${String(rpFilter)}: failover ${f.from.gateway} -> ${f.to?.gateway ?? "-"} via ${f.via}, restored after ${String(Math.round(f.restoredAfterMs ?? -1))} ms`,
    );
    assert.equal(f.via, "standby", "the standby was promoted: its probes came back through its own device");
    const s2 = await waitForStatus(
      c,
      "a new standby that answers",
      (x) => x.standby !== null && x.standby.legId !== sb.legId && x.standby.lastReplyAt !== null,
      STANDBY_WITHIN_MS,
    );
    assert.ok(s2.standby !== null);
    await c.disconnect();
    await waitForStatus(c, "disconnected", (x) => x.state === "disconnected", DISCONNECT_WITHIN_MS);
  } finally {
    c.close();
    client = null;
    await agentStop(ID);
    await lab.heal(ID);
  }
}

test("under-rp-filter-1-detourd-connects-keeps-a-warm-standby-and-fails-over-to-it", { timeout: 120_000 }, async () => {
  await standbyAndFailover(1);
});

test("under-the-default-rp-filter-the-same-holds", { timeout: 120_000 }, async () => {
  await standbyAndFailover(0);
});
