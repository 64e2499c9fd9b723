/**
 * The kill switch against a real WireGuard leg in the client namespace: a leak path to corp over the underlay
 * is opened on purpose (a route via the router, which counts what reaches it on a dummy sink), and the kill
 * switch must keep it shut in every state while the gateway endpoints and the tunnel keep working.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  killSwitchPolicy,
  legEndpoints,
  type KillSwitchInput,
  type KillSwitchRules,
} from "../../main/core/killswitch.ts";
import { labEngineSpec } from "../../test/lab/engine-specs.ts";
import * as lab from "../../test/lab/lab.ts";
import { ProbeClient } from "../../test/lab/probe-client.ts";
import { CORP_ECHO_PORT, CORP_HTTP_PORT, CORP_NETWORK, PORTS, gatewayByName } from "../../test/lab/topology.ts";
import { createEngine } from "../engines/create-engine.ts";
import type { TunnelEngine } from "../engines/engine.ts";
import {
  applyKillSwitch,
  countedPackets,
  killSwitchCounters,
  removeKillSwitch,
  type KillSwitchCounter,
} from "./firewall.linux.ts";
import { linkCounters } from "./link.linux.ts";
import { applyProtectedRoutes, clearProtectedRoutes } from "./routes.linux.ts";
import { run, runOk } from "./run.ts";

const ID = "ks";
/** A WireGuard leg answers its first echo within a second here; five leaves room for a loaded CI box. */
const START_DEADLINE_MS = 5000;
/** Corp answers in a millisecond through the tunnel; a second means no path. */
const HTTP_TIMEOUT_MS = 1000;
/** A lab TCP handshake takes well under a millisecond; a second without one means the SYN went nowhere. */
const TCP_CONNECT_TIMEOUT_MS = 1000;
/** Enough UDP probes that a single leaked packet could not hide among them; 10 ms apart keeps a burst short. */
const UDP_PROBES = { count: 20, intervalMs: 10, timeoutMs: 300 } as const;
/**
 * The router's sink for corp over the underlay: one end of a veth pair whose peer stays unaddressed in the same
 * namespace, ARP off so each packet is sent (and counted) at once; the peer discards it, addressed to another MAC.
 */
const LEAK_SINK = "ksleak0";
const LEAK_SINK_PEER = "ksleak1";
const WG_IFNAME = "dks-wg";

const topo = lab.topologyOf(ID);
const ns = topo.client.ns;
const routerNs = topo.router.ns;
const gw1 = gatewayByName(topo, "gw1");
const gw2 = gatewayByName(topo, "gw2");
const gatewayPorts = { wireguard: { port: PORTS.wireguard }, anyconnect: { port: PORTS.anyconnect } };
let probe: ProbeClient | null = null;
let wg: TunnelEngine | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", ns] });
  // The leak path: corp via the underlay's router, which routes it into a counting sink (no namespace is reached).
  await runOk("ip", ["-n", routerNs, "link", "add", LEAK_SINK, "type", "veth", "peer", "name", LEAK_SINK_PEER]);
  // Without IPv6 the sink sends nothing of its own (router solicitations, MLD reports) that its counter would show.
  for (const dev of [LEAK_SINK, LEAK_SINK_PEER])
    await runOk("ip", ["netns", "exec", routerNs, "sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
  await runOk("ip", ["-n", routerNs, "link", "set", LEAK_SINK, "arp", "off", "up"]);
  await runOk("ip", ["-n", routerNs, "link", "set", LEAK_SINK_PEER, "up"]);
  await runOk("ip", ["-n", routerNs, "route", "replace", CORP_NETWORK, "dev", LEAK_SINK]);
  await runOk("ip", ["-n", ns, "route", "replace", CORP_NETWORK, "via", topo.client.routerAddress]);
});

after(async () => {
  await probe?.close();
  await wg?.stop();
  await removeKillSwitch({ netns: ns }).catch(() => undefined);
  await lab.down(ID);
});

function policy(over: Partial<KillSwitchInput>): KillSwitchRules {
  const r = killSwitchPolicy({
    state: "racing",
    lockdown: false,
    protectedNetworks: [CORP_NETWORK],
    gatewayEndpoints: legEndpoints("wireguard", gw1.address, gatewayPorts),
    tunnelDevices: [WG_IFNAME],
    dnsServers: [topo.dns.address],
    ...over,
  });
  if (r === null) throw new Error("the policy wants no rules");
  return r;
}

async function sinkPackets(): Promise<number> {
  const c = await linkCounters(LEAK_SINK, routerNs);
  if (c === null) throw new Error(`no ${LEAK_SINK} in ${routerNs}`);
  return c.txPackets;
}

async function counters(): Promise<KillSwitchCounter[]> {
  const c = await killSwitchCounters({ netns: ns });
  if (c === null) throw new Error("the kill switch table is missing");
  return c;
}

/** UDP echo probes to corp: how many came back, and how many reached the router's leak sink meanwhile. */
async function udpToCorp(): Promise<{ sent: number; received: number; leaked: number }> {
  if (probe === null) throw new Error("no probe client");
  const start = await sinkPackets();
  const r = await probe.udp({ host: topo.corp.address, port: CORP_ECHO_PORT, ...UDP_PROBES });
  if (!r.ok) throw new Error(`udp probe failed to run: ${r.error}`);
  return { sent: r.sent, received: r.received, leaked: (await sinkPackets()) - start };
}

async function whoami(): Promise<string> {
  if (probe === null) throw new Error("no probe client");
  const r = await probe.http({
    url: `http://${topo.corp.address}:${String(CORP_HTTP_PORT)}/whoami`,
    timeoutMs: HTTP_TIMEOUT_MS,
  });
  if (!r.ok) return `failed: ${r.error}`;
  const { gateway, protocol } = JSON.parse(r.body) as { gateway: string | null; protocol: string | null };
  return `${String(gateway)}/${String(protocol)}`;
}

async function tcpConnects(host: string, port: number): Promise<boolean> {
  const r = await run("ip", ["netns", "exec", ns, "bash", "-c", `exec 3<>/dev/tcp/${host}/${String(port)}`], {
    timeoutMs: TCP_CONNECT_TIMEOUT_MS,
  });
  return r.code === 0;
}

function show(c: readonly KillSwitchCounter[]): string {
  return c
    .filter((x) => x.packets > 0 || x.purpose === "protected-escaped")
    .map((x) => `${x.chain}/${x.purpose}${x.detail === "" ? "" : ` ${x.detail}`}=${String(x.packets)}`)
    .join(", ");
}

test(
  "connecting-under-lockdown-lets-the-raced-handshake-through-and-nothing-for-corp-leaves-the-underlay",
  { timeout: 30_000 },
  async () => {
    const open = await udpToCorp();
    assert.ok(
      open.leaked >= UDP_PROBES.count,
      `without the kill switch the leak path carries corp's traffic to the router: ${JSON.stringify(open)}`,
    );

    // Lockdown: a split tunnel without it holds back only the protected networks while connecting.
    await applyKillSwitch(policy({ state: "racing", lockdown: true }), { netns: ns });
    await applyKillSwitch(policy({ state: "racing", lockdown: true }), { netns: ns }); // desired state: repeating is harmless

    const state = lab.loadState(ID);
    wg = createEngine(labEngineSpec(topo, state, "gw1", "wireguard", { ifname: WG_IFNAME }));
    const t0 = Date.now();
    const up = await wg.start(t0 + START_DEADLINE_MS);
    console.log(
      `wireguard leg to gw1 up through the kill switch after ${String(Date.now() - t0)} ms on ${up.config.ifname}`,
    );

    const udp = await udpToCorp();
    const tcpCorp = await whoami();
    const tcpGw1Tls = await tcpConnects(gw1.address, PORTS.anyconnect);
    const c = await counters();
    console.log(
      `racing: udp ${JSON.stringify(udp)}, tcp to corp ${tcpCorp}, tcp to gw1:443 ${String(tcpGw1Tls)}; counters: ${show(c)}`,
    );
    assert.ok(countedPackets(c, "gateway-endpoint") > 0, "the handshake went out through the endpoint allowance");
    assert.ok(countedPackets(c, "tunnel-device") > 0, "the leg's start echo went through its device");
    assert.deepEqual([udp.received, udp.leaked], [0, 0], "no UDP probe reached corp or even the router");
    assert.match(tcpCorp, /^failed/, "no TCP connection to corp over the underlay");
    assert.ok(
      countedPackets(c, "protected-outside-tunnel", "output") >= UDP_PROBES.count + 1,
      "every UDP probe and the SYN were dropped as protected traffic",
    );
    assert.equal(tcpGw1Tls, false, "an endpoint not being raced (gw1's TLS port) is blocked too");
    assert.ok(countedPackets(c, "underlay-blocked") >= 1);
    assert.equal(
      countedPackets(c, "protected-escaped"),
      0,
      "the witness saw nothing protected leave outside the tunnel",
    );
  },
);

test(
  "connected-protected-traffic-flows-in-the-tunnel-and-is-dropped-when-its-route-falls-back-to-the-underlay",
  { timeout: 30_000 },
  async () => {
    assert.ok(wg !== null, "the leg from the connecting scenario");
    await applyProtectedRoutes({ ifname: WG_IFNAME, routes: [CORP_NETWORK], netns: ns });
    await applyKillSwitch(policy({ state: "connected" }), { netns: ns });

    const via = await whoami();
    const udp = await udpToCorp();
    const splitTunnelOpen = await tcpConnects(gw1.address, PORTS.anyconnect);
    const c1 = await counters();
    console.log(
      `connected: whoami ${via}, udp ${JSON.stringify(udp)}, tcp to gw1:443 ${String(splitTunnelOpen)}; counters: ${show(c1)}`,
    );
    assert.equal(via, "gw1/wireguard", "protected traffic goes through the tunnel");
    assert.deepEqual([udp.received, udp.leaked], [UDP_PROBES.count, 0]);
    assert.equal(splitTunnelOpen, true, "split tunnel: other underlay traffic is not the kill switch's business");
    assert.equal(countedPackets(c1, "protected-outside-tunnel"), 0);

    // The protected route disappears (a crashed route change, a flushed table): corp now follows the leak route.
    await clearProtectedRoutes([CORP_NETWORK], { netns: ns });
    const fallen = await udpToCorp();
    const viaFallen = await whoami();
    const c2 = await counters();
    console.log(
      `connected, protected route gone: udp ${JSON.stringify(fallen)}, whoami ${viaFallen}; counters: ${show(c2)}`,
    );
    assert.deepEqual([fallen.received, fallen.leaked], [0, 0], "nothing reached corp or the router");
    assert.match(viaFallen, /^failed/);
    assert.ok(
      countedPackets(c2, "protected-outside-tunnel", "output") >= UDP_PROBES.count + 1,
      "the fallen-back traffic was dropped, and counted",
    );
    assert.equal(countedPackets(c2, "protected-escaped"), 0, "zero protected packets left outside the tunnel");
  },
);

test(
  "lockdown-while-disconnected-drops-protected-traffic-and-allows-the-gateway-endpoints",
  { timeout: 30_000 },
  async () => {
    await wg?.stop();
    wg = null;
    const endpoints = [
      ...legEndpoints("wireguard", gw1.address, gatewayPorts),
      ...legEndpoints("anyconnect-tls", gw1.address, gatewayPorts),
    ];
    assert.equal(
      killSwitchPolicy({
        state: "disconnected",
        lockdown: false,
        protectedNetworks: [CORP_NETWORK],
        gatewayEndpoints: endpoints,
        tunnelDevices: [],
        dnsServers: [],
      }),
      null,
    );
    await applyKillSwitch(
      policy({ state: "disconnected", lockdown: true, gatewayEndpoints: endpoints, tunnelDevices: [] }),
      { netns: ns },
    );

    const udp = await udpToCorp();
    const tcpCorp = await whoami();
    const gw1Tls = await tcpConnects(gw1.address, PORTS.anyconnect);
    const gw2Tls = await tcpConnects(gw2.address, PORTS.anyconnect);
    const c = await counters();
    console.log(
      `lockdown: udp ${JSON.stringify(udp)}, tcp to corp ${tcpCorp}, gw1:443 ${String(gw1Tls)}, gw2:443 ${String(gw2Tls)}; counters: ${show(c)}`,
    );
    assert.deepEqual([udp.received, udp.leaked], [0, 0]);
    assert.match(tcpCorp, /^failed/);
    assert.equal(gw1Tls, true, "a listed gateway endpoint is reachable");
    assert.equal(gw2Tls, false, "an unlisted one is not");
    assert.ok(countedPackets(c, "gateway-endpoint") > 0 && countedPackets(c, "underlay-blocked") > 0);
    assert.ok(countedPackets(c, "protected-outside-tunnel") >= UDP_PROBES.count + 1);
    assert.equal(countedPackets(c, "protected-escaped"), 0);
  },
);

test("a-hole-punched-in-the-rules-shows-in-the-witness-and-the-next-apply-closes-it", { timeout: 30_000 }, async () => {
  const lockdown = policy({ state: "disconnected", lockdown: true, tunnelDevices: [] });
  await applyKillSwitch(lockdown, { netns: ns });
  // A stand-in for a wrong rule (ours or anyone's in this table): corp's echo port accepted ahead of the drops.
  await runOk("ip", [
    "netns",
    "exec",
    ns,
    "nft",
    "insert",
    "rule",
    "inet",
    "detour_killswitch",
    "output",
    "ip",
    "daddr",
    topo.corp.address,
    "udp",
    "dport",
    String(CORP_ECHO_PORT),
    "accept",
  ]);
  const holed = await udpToCorp();
  const escaped = countedPackets(await counters(), "protected-escaped");
  await applyKillSwitch(lockdown, { netns: ns });
  const closed = await udpToCorp();
  const reapplied = await counters();
  console.log(
    `hole: udp ${JSON.stringify(holed)}, witness ${String(escaped)}; re-applied: udp ${JSON.stringify(closed)}; counters: ${show(reapplied)}`,
  );
  assert.ok(holed.leaked >= UDP_PROBES.count, `the hole leaks to the router: ${JSON.stringify(holed)}`);
  assert.equal(escaped, holed.leaked, "the witness counted every escaped packet the router received");
  assert.equal(closed.leaked, 0, "applying the desired state again replaced the table, hole and all");
  assert.equal(countedPackets(reapplied, "protected-escaped"), 0);
});

test("remove-leaves-no-table-and-the-leak-path-is-open-again", { timeout: 30_000 }, async () => {
  await removeKillSwitch({ netns: ns });
  await removeKillSwitch({ netns: ns });
  const tables = await runOk("ip", ["netns", "exec", ns, "nft", "list", "tables"]);
  assert.doesNotMatch(tables, /detour_killswitch/);
  assert.equal(await killSwitchCounters({ netns: ns }), null);
  const open = await udpToCorp();
  assert.ok(
    open.leaked >= UDP_PROBES.count,
    `the leak path was shut by the kill switch alone: ${JSON.stringify(open)}`,
  );
  await runOk("ip", ["-n", ns, "route", "del", CORP_NETWORK, "via", topo.client.routerAddress]);
  await runOk("ip", ["-n", routerNs, "link", "del", LEAK_SINK]);
});
