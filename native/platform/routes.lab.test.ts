/**
 * Routing for live legs (real WireGuard, AnyConnect and IKEv2): protected routes via one leg, an atomic-looking
 * swap to another, standbys still probed through their own devices, a full tunnel that leaves every gateway
 * outside it, and nothing left behind.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { ProbeSample } from "../../main/core/connection/types.ts";
import type { TunnelUp } from "../../main/core/tunnel/engine-types.ts";
import { labEngineSpec } from "../../test/lab/engine-specs.ts";
import * as lab from "../../test/lab/lab.ts";
import { ProbeClient } from "../../test/lab/probe-client.ts";
import { runInNetns } from "../../test/lab/tools/agent-io-child.ts";
import { CORP_ECHO_PORT, CORP_NETWORK } from "../../test/lab/topology.ts";
import { createEngine } from "../engines/create-engine.ts";
import type { TunnelEngine } from "../engines/engine.ts";
import { ipJson } from "./ip.linux.ts";
import { linkCounters } from "./link.linux.ts";
import {
  PROTECTED_RULE_PREF,
  applyProtectedRoutes,
  clearProtectedRoutes,
  currentProtectedRoutes,
  installLegSource,
  removeLegSource,
  routesIn,
  rulesAt,
  type LegSource,
} from "./routes.linux.ts";

const ID = "rt";
/** Two engines starting together answer within a second here; five leaves room for a loaded CI box. */
const START_DEADLINE_MS = 5000;
/** Corp answers /whoami in a millisecond through a tunnel; two seconds means no route. */
const HTTP_TIMEOUT_MS = 2000;
/** The monitor as detourd runs it by default (50 ms), for one second: about 20 probes per run. */
/** Unused by the lab (no gateway routes it): only there to show that the table follows the asked-for list. */
const EXTRA_PREFIX = "198.19.250.0/24";
const MONITOR = { intervalMs: 50, timeoutMs: 500, durationMs: 1000 } as const;

const topo = lab.topologyOf(ID);
const ns = topo.client.ns;
const engines: TunnelEngine[] = [];
let probe: ProbeClient | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});
after(async () => {
  await probe?.close();
  await Promise.all(engines.map((e) => e.stop()));
  await lab.down(ID);
});

async function whoami(): Promise<{ gateway: string | null; protocol: string | null } | string> {
  if (probe === null) throw new Error("no probe client");
  const r = await probe.http({ url: `http://${topo.corp.address}/whoami`, timeoutMs: HTTP_TIMEOUT_MS });
  if (!r.ok) return `failed: ${r.error}`;
  const { gateway, protocol } = JSON.parse(r.body) as { gateway: string | null; protocol: string | null };
  return { gateway, protocol };
}

async function monitorFrom(address: string): Promise<ProbeSample[]> {
  const r = await runInNetns<{ samples: ProbeSample[]; errors: string[] }>(ns, {
    op: "monitor",
    legId: "lab",
    sourceAddress: address,
    target: { address: topo.corp.address, port: CORP_ECHO_PORT },
    ...MONITOR,
  });
  return r.samples;
}

/** A monitor run from `address`, with the packets each device sent meanwhile. */
async function monitorCounted(
  address: string,
  ifA: string,
  ifB: string,
): Promise<ReturnType<typeof summary> & { txA: number; txB: number }> {
  const [a0, b0] = await Promise.all([linkCounters(ifA, ns), linkCounters(ifB, ns)]);
  const s = summary(await monitorFrom(address));
  const [a1, b1] = await Promise.all([linkCounters(ifA, ns), linkCounters(ifB, ns)]);
  return { ...s, txA: (a1?.txPackets ?? 0) - (a0?.txPackets ?? 0), txB: (b1?.txPackets ?? 0) - (b0?.txPackets ?? 0) };
}

function summary(samples: ProbeSample[]): { sent: number; lost: number; medianMs: number | null } {
  const rtts = samples.flatMap((s) => (s.rttMs === null ? [] : [s.rttMs])).sort((a, b) => a - b);
  return {
    sent: samples.length,
    lost: samples.length - rtts.length,
    medianMs: rtts[Math.floor(rtts.length / 2)] ?? null,
  };
}

function failure(r: Awaited<ReturnType<typeof whoami>>): string {
  return typeof r === "string" ? r : `reached corp: ${JSON.stringify(r)}`;
}

function addressOf(up: TunnelUp): string {
  const a = up.config.addresses[0]?.split("/")[0];
  if (a === undefined) throw new Error(`${up.config.ifname} has no address`);
  return a;
}

test("protected-routes-swap-between-live-legs-and-the-standby-stays-probeable", { timeout: 90_000 }, async () => {
  const state = lab.loadState(ID);
  const wg = createEngine(labEngineSpec(topo, state, "gw1", "wireguard", { ifname: "drt-wg" }));
  const oc = createEngine(labEngineSpec(topo, state, "gw2", "anyconnect-tls", { ifname: "drt-oc" }));
  engines.push(wg, oc);
  const t0 = Date.now();
  const [upA, upB] = await Promise.all([wg.start(t0 + START_DEADLINE_MS), oc.start(t0 + START_DEADLINE_MS)]);
  const a: LegSource = { ifname: upA.config.ifname, address: addressOf(upA), table: 5101, pref: 101, netns: ns };
  const b: LegSource = { ifname: upB.config.ifname, address: addressOf(upB), table: 5102, pref: 102, netns: ns };
  console.log(
    `legs up after ${Date.now() - t0} ms: A ${a.ifname} ${a.address} (gw1 wireguard), B ${b.ifname} ${b.address} (gw2 anyconnect)`,
  );
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", ns] });

  assert.match(
    failure(await whoami()),
    /^failed/,
    "before any route corp is unreachable: the client has no path to it",
  );

  await installLegSource(a);
  await installLegSource(b);
  await installLegSource(a); // desired state: repeating changes nothing
  assert.deepEqual(
    (await rulesAt(101, ns)).map((r) => `${r.src} ${r.table}`),
    [`${a.address} 5101`],
    "one rule per leg, even after a repeat",
  );

  // A second prefix that the swap below no longer asks for: the table must end up exactly what is asked.
  const routesA = [CORP_NETWORK, EXTRA_PREFIX];
  let t = performance.now();
  await applyProtectedRoutes({ ifname: a.ifname, routes: routesA, netns: ns });
  const applyMs = performance.now() - t;
  await applyProtectedRoutes({ ifname: a.ifname, routes: routesA, netns: ns });
  assert.deepEqual(await currentProtectedRoutes({ netns: ns }), {
    ruleInstalled: true,
    routes: [
      { dst: CORP_NETWORK, dev: a.ifname },
      { dst: EXTRA_PREFIX, dev: a.ifname },
    ],
  });
  assert.equal((await rulesAt(PROTECTED_RULE_PREF, ns)).length, 1, "applying twice adds no second rule");
  assert.deepEqual(await whoami(), { gateway: "gw1", protocol: "wireguard" }, "protected traffic goes through leg A");

  t = performance.now();
  await applyProtectedRoutes({ ifname: b.ifname, routes: [CORP_NETWORK], netns: ns });
  const swapMs = performance.now() - t;
  assert.deepEqual(
    (await currentProtectedRoutes({ netns: ns })).routes,
    [{ dst: CORP_NETWORK, dev: b.ifname }],
    "swapped, and the prefix no longer asked for is gone",
  );
  assert.deepEqual(await whoami(), { gateway: "gw2", protocol: "anyconnect" }, "after the swap corp sees leg B");

  // The standby leg A, probed the way detourd's monitor does: a UDP socket bound to A's tunnel address.
  const viaA = await monitorCounted(a.address, a.ifname, b.ifname);
  const viaB = await monitorCounted(b.address, a.ifname, b.ifname);
  console.log(
    `apply ${applyMs.toFixed(1)} ms, swap ${swapMs.toFixed(1)} ms; monitor from A (standby): ${JSON.stringify(viaA)}; from B (active): ${JSON.stringify(viaB)}`,
  );
  assert.ok(viaA.sent >= 10 && viaA.lost === 0, `probes from A's address come back: ${JSON.stringify(viaA)}`);
  assert.ok(
    viaA.txA >= viaA.sent && viaA.txB < viaA.sent,
    `they leave through A's device, not B's: ${JSON.stringify(viaA)}`,
  );
  assert.ok(
    viaB.sent >= 10 && viaB.lost === 0 && viaB.txB >= viaB.sent && viaB.txA < viaB.sent,
    `probes from B's address go through B: ${JSON.stringify(viaB)}`,
  );

  // Without its source rule, A's probes follow the protected route out of B's device instead.
  await removeLegSource(a);
  const orphan = await monitorCounted(a.address, a.ifname, b.ifname);
  console.log(`monitor from A without its source rule: ${JSON.stringify(orphan)}`);
  assert.ok(
    orphan.txA < orphan.sent && orphan.txB >= orphan.sent,
    `the source rule is what sends the standby's probes through it: ${JSON.stringify(orphan)}`,
  );

  await clearProtectedRoutes([CORP_NETWORK], { netns: ns });
  await clearProtectedRoutes([CORP_NETWORK], { netns: ns });
  await removeLegSource(a);
  await removeLegSource(b);
  assert.deepEqual(await currentProtectedRoutes({ netns: ns }), { ruleInstalled: false, routes: [] });
  assert.deepEqual(
    (await rulesAt(undefined, ns)).map((r) => r.priority),
    [0, 32766, 32767],
    "only the kernel's own rules are left",
  );
  assert.deepEqual([...(await routesIn(5101, ns)), ...(await routesIn(5102, ns))], [], "the legs' tables are empty");
  assert.match(
    failure(await whoami()),
    /^failed/,
    "after clearing, corp is unreachable again: nothing falls back outside the tunnel",
  );

  await Promise.all([wg.stop(), oc.stop()]);
});

/** The device the namespace routes `address` through now. */
async function routeDev(address: string): Promise<string> {
  const [row] = await ipJson(ns, ["-4", "route", "get", address]);
  return (row as { dev?: string } | undefined)?.dev ?? "none";
}

test(
  "a-full-tunnel-throws-every-gateway-out-so-all-three-engines-keep-their-tunnels",
  { timeout: 90_000 },
  async () => {
    const state = lab.loadState(ID);
    const wg = createEngine(labEngineSpec(topo, state, "gw1", "wireguard", { ifname: "drt-fwg" }));
    const ike = createEngine(labEngineSpec(topo, state, "gw2", "ikev2", { ifname: "drt-fike" }));
    const oc = createEngine(labEngineSpec(topo, state, "gw3", "anyconnect-dtls", { ifname: "drt-foc" }));
    engines.push(wg, ike, oc);
    const t0 = Date.now();
    const [upA, upB, upC] = await Promise.all([
      wg.start(t0 + START_DEADLINE_MS),
      ike.start(t0 + START_DEADLINE_MS),
      oc.start(t0 + START_DEADLINE_MS),
    ]);
    const legs: LegSource[] = [upA, upB, upC].map((up, i) => ({
      ifname: up.config.ifname,
      address: addressOf(up),
      table: 5111 + i,
      pref: 111 + i,
      netns: ns,
    }));
    const [a, b, c] = legs as [LegSource, LegSource, LegSource];
    for (const l of legs) await installLegSource(l);
    probe ??= await ProbeClient.start({ prefix: ["ip", "netns", "exec", ns] });
    const gateways = topo.gateways.map((g) => g.address);
    const bypass = gateways.map((g) => `${g}/32`);

    // Everything through the WireGuard leg, except the gateways themselves.
    await applyProtectedRoutes({ ifname: a.ifname, routes: ["0.0.0.0/0"], bypass, netns: ns });
    assert.deepEqual((await currentProtectedRoutes({ netns: ns })).routes, [
      { dst: "0.0.0.0/0", dev: a.ifname },
      ...gateways.map((g) => ({ dst: g, dev: "", type: "throw" })),
    ]);
    for (const g of gateways)
      assert.equal(await routeDev(g), topo.client.ifname, `the engines reach ${g} on the underlay`);
    assert.equal(await routeDev(topo.dns.address), a.ifname, "everything else goes through the tunnel");
    assert.deepEqual(
      await whoami(),
      { gateway: "gw1", protocol: "wireguard" },
      "WireGuard carries the full tunnel: its own packets do not loop into it",
    );
    // The other two, standing by, answer their monitors through their own devices: their engines' packets too
    // went to their gateways outside the tunnel.
    for (const l of [b, c]) {
      const s = await monitorCounted(l.address, l.ifname, a.ifname);
      assert.ok(
        s.sent >= 10 && s.lost === 0 && s.txA >= s.sent,
        `the standby ${l.ifname} answers through its own device: ${JSON.stringify(s)}`,
      );
    }
    const rules = (await rulesAt(undefined, ns)).map((r) => r.priority);
    assert.deepEqual(
      rules,
      [0, 111, 112, 113, PROTECTED_RULE_PREF, 32766, 32767],
      "kernel-libipsec's own rule is gone: only the legs' rules sit before the protected table",
    );

    // A swap to IKEv2 keeps the throws; WireGuard, now standing by, still answers.
    await applyProtectedRoutes({ ifname: b.ifname, routes: ["0.0.0.0/0"], bypass, netns: ns });
    assert.deepEqual(await whoami(), { gateway: "gw2", protocol: "ikev2" });
    const viaA = await monitorCounted(a.address, a.ifname, b.ifname);
    assert.ok(
      viaA.sent >= 10 && viaA.lost === 0 && viaA.txA >= viaA.sent,
      `the former active leg answers through its device: ${JSON.stringify(viaA)}`,
    );
    await applyProtectedRoutes({ ifname: c.ifname, routes: ["0.0.0.0/0"], bypass, netns: ns });
    assert.deepEqual(await whoami(), { gateway: "gw3", protocol: "anyconnect" });

    await clearProtectedRoutes(["0.0.0.0/0"], { bypass, netns: ns });
    assert.deepEqual(
      await currentProtectedRoutes({ netns: ns }),
      { ruleInstalled: false, routes: [] },
      "the throws go with the routes, and then the rule",
    );
    for (const l of legs) await removeLegSource(l);
    await Promise.all([wg.stop(), ike.stop(), oc.stop()]);
  },
);
