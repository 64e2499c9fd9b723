/**
 * The laptop's moves and sleeps in the lab, seen from outside the client: a move gives the gateway another
 * source address (WireGuard follows it), a gap leaves the client with no address and no route, a sleep freezes
 * every process of the client namespace (a frozen engine stops answering the gateway) and the wake thaws them,
 * and `down` leaves nothing, also when the client is asleep on the mobile network.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, test } from "node:test";
import { inNs, isAlive, run, spawnDaemon, stopPids } from "./exec.ts";
import * as lab from "./lab.ts";
import { listNamespaces, namespacePids } from "./netns.ts";
import { plainWireGuard, type PlainTunnel } from "./plain/plain-clients.ts";
import { ProbeClient } from "./probe-client.ts";
import { clientCgroup, clientResolvConf, currentNetwork, isFrozen } from "./roam.ts";
import { CORP_ECHO_PORT, labTopology, PORTS } from "./topology.ts";

const ID = "rlab";
/** Both networks NATed, as a laptop's are: the home router's on wifi, the carrier's on mobile. */
const OPTIONS = { distance: "none", wifi: "nat" } as const;
const topo = labTopology(ID, OPTIONS);
const gw1 = topo.gateways[0] ?? assert.fail("no gw1");
/** WireGuard's first handshake and echo take tens of milliseconds here; 10 s bounds a loaded two-core machine. */
const TUNNEL_UP_WITHIN_MS = 10_000;
/** After a move the next packet carries the new source address; a handshake at most. 10 s bounds a loaded machine. */
const ROAMED_WITHIN_MS = 10_000;
/** The gap the offline test leaves: long enough to look at the offline client, short for the suite. */
const GAP_MS = 1500;
/** A short sleep: far below every gateway's timeout (gateway-engines.ts), so the sessions stay. */
const SHORT_SLEEP_MS = 3000;

let probe: ProbeClient | null = null;
let wg: PlainTunnel | null = null;
const extraPids: number[] = [];

before(async () => {
  await lab.down(ID);
  await lab.up(ID, OPTIONS);
  probe = await ProbeClient.start({ prefix: inNs(topo.client.ns, []) });
  wg = await plainWireGuard(topo, lab.loadState(ID), gw1, "rm");
});

after(async () => {
  await probe?.close().catch(() => undefined);
  await wg?.stop().catch(() => undefined);
  await stopPids(extraPids).catch(() => undefined);
  await lab.down(ID);
});

async function corpEcho(deadlineMs: number): Promise<boolean> {
  if (probe === null) throw new Error("no probe agent");
  const r = await probe.waitReply({ host: topo.corp.address, port: CORP_ECHO_PORT, intervalMs: 20, deadlineMs });
  return r.ok;
}

/** The client's address and port as gw1's WireGuard sees them (`wg show endpoints`). */
async function endpointSeenByGateway(): Promise<string> {
  const r = await run("ip", ["netns", "exec", gw1.ns, "wg", "show", gw1.wireguard.ifname, "endpoints"]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split(/\s+/)[1] ?? "";
}

/**
 * Re-sets the tunnel's endpoint after a move, as a roaming-aware client does. wireguard-go 0.0.20220316 keeps
 * sending from the address it used before (its sticky source) and fails with "network is unreachable" until its
 * own handshake timer gives up on it 15 s later (keepalive + rekey timeout); a new endpoint has no sticky source.
 */
async function reEndpoint(): Promise<void> {
  const pub = lab.loadState(ID).secrets.gateways[gw1.name]?.wgPublicKey ?? assert.fail("no gw1 key");
  if (wg === null) throw new Error("no tunnel");
  const r = await run("ip", [
    "netns",
    "exec",
    topo.client.ns,
    "wg",
    "set",
    wg.ifname,
    "peer",
    pub,
    "endpoint",
    `${gw1.address}:${String(PORTS.wireguard)}`,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

/** One echo from gw1's inside address to the client's WireGuard address: answered only by a running wireguard-go. */
async function gatewayReachesClientThroughTunnel(): Promise<boolean> {
  const r = await run("ip", [
    "netns",
    "exec",
    gw1.ns,
    "ping",
    "-c1",
    "-W1",
    "-I",
    gw1.insideAddress,
    gw1.wireguard.clientAddress,
  ]);
  return r.code === 0;
}

test("a-move-to-mobile-shows-the-gateway-another-nat-address-and-wireguard-follows", { timeout: 60_000 }, async () => {
  const { wifi, mobile } = topo.networks;
  assert.ok(wifi.nat && mobile.nat, "both networks are NATed");
  assert.ok(await corpEcho(TUNNEL_UP_WITHIN_MS), "the WireGuard tunnel carries corp echoes on wifi");
  const onWifi = await endpointSeenByGateway();
  assert.ok(
    onWifi.startsWith(`${wifi.publicAddress}:`),
    `gw1 sees the home router's address ${wifi.publicAddress}, not the client's own ${wifi.address}: ${onWifi}`,
  );
  assert.equal(await currentNetwork(topo), "wifi");

  const r = await lab.move("mobile", {}, ID);
  await reEndpoint();
  assert.deepEqual([r.from, r.to, r.resolverChanged], ["wifi", "mobile", true]);
  assert.equal(await currentNetwork(topo), "mobile");
  assert.match(clientResolvConf(topo), new RegExp(`nameserver ${topo.networks.mobile.resolver}\n`), "DNS follows");
  assert.equal((await lab.status(ID)).network, "mobile");
  assert.ok(await corpEcho(ROAMED_WITHIN_MS), "traffic flows again from the mobile network");
  const seen = await endpointSeenByGateway();
  assert.ok(
    seen.startsWith(`${mobile.publicAddress}:`),
    `gw1 sees the mobile network's NAT address ${mobile.publicAddress}, not the client's own ${mobile.address}: ${seen}`,
  );
  const source = (endpoint: string): string => endpoint.slice(0, endpoint.lastIndexOf(":"));
  console.log(`gw1 saw the client as ${onWifi} on wifi, ${seen} on mobile`);
  assert.notEqual(source(seen), source(onWifi), "the move shows the gateway another source address");
  for (const own of [wifi.address, mobile.address])
    assert.ok(![source(seen), source(onWifi)].includes(own), `the client's own ${own} never reaches gw1`);

  const back = await lab.move("wifi", {}, ID);
  await reEndpoint();
  assert.equal(back.from, "mobile");
  assert.ok(await corpEcho(ROAMED_WITHIN_MS), "and back on wifi");
  assert.ok((await endpointSeenByGateway()).startsWith(`${topo.networks.wifi.publicAddress}:`));
  assert.match(clientResolvConf(topo), new RegExp(`nameserver ${topo.networks.wifi.resolver}\n`));
});

test(
  "a-move-with-a-gap-leaves-the-client-without-address-or-route-until-the-new-network-is-up",
  { timeout: 60_000 },
  async () => {
    const offline: { addresses: string; route: number; echo: boolean }[] = [];
    const r = await lab.move(
      "mobile",
      {
        gapMs: GAP_MS,
        onOffline: async () => {
          const addrs = await run("ip", ["-n", topo.client.ns, "-o", "addr", "show", "scope", "global"]);
          const route = await run("ip", ["-n", topo.client.ns, "route", "get", gw1.address]);
          offline.push({
            // Only the tunnel's own address may remain: the underlay links have none.
            addresses: addrs.stdout
              .split("\n")
              .filter((l) => /\bul[01]\b/.test(l))
              .join("\n"),
            route: route.code ?? -1,
            echo: await corpEcho(300),
          });
        },
      },
      ID,
    );
    const o = offline[0] ?? assert.fail("onOffline did not run");
    assert.equal(o.addresses, "", "no underlay address while offline");
    assert.notEqual(o.route, 0, "no route to the gateway while offline");
    assert.equal(o.echo, false, "no traffic while offline");
    assert.ok(r.onlineAt - r.offlineAt >= GAP_MS, `offline for ${String(r.onlineAt - r.offlineAt)} ms`);
    await reEndpoint();
    assert.ok(await corpEcho(ROAMED_WITHIN_MS), "online again after the gap");
    await lab.move("wifi", {}, ID);
    await reEndpoint();
  },
);

test(
  "a-sleep-freezes-every-client-process-and-a-wake-thaws-them-with-the-session-kept",
  { timeout: 60_000 },
  async () => {
    if (wg === null) throw new Error("no tunnel");
    const idle = spawnDaemon(inNs(topo.client.ns, ["sleep", "600"]), { logFile: "/dev/null" });
    extraPids.push(idle);
    assert.ok(await corpEcho(TUNNEL_UP_WITHIN_MS));
    assert.ok(await gatewayReachesClientThroughTunnel(), "awake: the gateway reaches the client through the tunnel");

    const frozen = await lab.freeze(ID);
    try {
      const pids = await namespacePids(topo.client.ns);
      for (const p of [wg.pid, idle, probe?.pid ?? 0]) assert.ok(pids.includes(p), `pid ${String(p)} is in the client`);
      for (const p of pids) assert.ok(isFrozen(p, frozen), `pid ${String(p)} is frozen (${frozen.method})`);
      assert.equal((await lab.status(ID)).asleep?.method, frozen.method);
      assert.equal(
        await gatewayReachesClientThroughTunnel(),
        false,
        "asleep: the frozen wireguard-go does not answer the gateway",
      );
      await new Promise((resolve) => setTimeout(resolve, SHORT_SLEEP_MS));
    } finally {
      await lab.wake(ID);
    }
    for (const p of [wg.pid, idle]) assert.ok(isAlive(p) && !isFrozen(p, frozen), `pid ${String(p)} runs again`);
    assert.equal((await lab.status(ID)).asleep, null);
    assert.ok(await corpEcho(ROAMED_WITHIN_MS), "after a short sleep the same tunnel carries traffic again");
    assert.ok(await gatewayReachesClientThroughTunnel());

    // The timed form, as the CLI runs it: freezes, waits, wakes.
    const s = await lab.sleepClient(0.5, ID);
    assert.ok(s.wokeAt - s.frozen.at >= 500);
    assert.ok(!isFrozen(idle, s.frozen));
    await assert.rejects(lab.sleepClient(0, ID), /more than 0/);
    await assert.rejects(lab.move("lte", {}, ID), /unknown network "lte"/);
  },
);

test("down-leaves-nothing-even-with-the-client-asleep-on-the-mobile-network", { timeout: 60_000 }, async () => {
  await lab.move("mobile", {}, ID);
  await reEndpoint();
  const frozen = await lab.freeze(ID);
  const pids = await namespacePids(topo.client.ns);
  assert.ok(pids.length >= 3, `the client runs processes (${String(pids.length)})`);
  await probe?.close().catch(() => undefined);
  probe = null;
  wg = null; // down takes the frozen engine with its namespace; its stop() would find nothing.
  const r = await lab.down(ID);
  assert.ok(r.namespaces.includes(topo.ns.mob), "the mobile router went too");
  assert.ok(r.namespaces.includes(topo.ns.home), "and the home router");
  for (const p of pids) assert.equal(isAlive(p), false, `pid ${String(p)} is gone`);
  assert.deepEqual(await lab.leftovers(ID), [], "nothing of the lab is left");
  assert.deepEqual(await listNamespaces(topo.prefix), []);
  const cg = frozen.cgroup ?? clientCgroup(topo);
  if (cg !== null) assert.equal(existsSync(cg), false, `the cgroup ${cg} is removed`);
  assert.equal(existsSync(`/run/wireguard/wc-${ID}-rm.sock`), false, "no wireguard-go socket left");
});
