/** Creates and destroys the lab's namespaces, links, addresses and routes (see topology.ts for the picture). */
import { rmSync } from "node:fs";
import { run, runOk, stopPids } from "./exec.ts";
import {
  NS_PREFIX,
  UNDERLAY,
  UNDERLAY6,
  UNDERLAY6_PREFIX_LEN,
  labNamespaces,
  type AccessRouterTopology,
  type ClientNetwork,
  type GatewayTopology,
  type LabTopology,
} from "./topology.ts";

/** Runs `ip` commands in one namespace as a single batch (one process instead of dozens). */
async function ipBatch(ns: string, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  await runOk("ip", ["-n", ns, "-batch", "-"], { input: lines.join("\n") + "\n" });
}

async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await runOk("ip", ["netns", "exec", ns, "sysctl", "-q", "-w", `${key}=${value}`]);
}

export async function createNetwork(topo: LabTopology): Promise<void> {
  for (const [, ns] of labNamespaces(topo)) {
    await runOk("ip", ["netns", "add", ns]);
    // No duplicate address detection on links created from here on: it holds each new link-local address
    // "tentative" for about a second, and the first IPv6 packets after `up` waited for it (nothing else on a
    // point-to-point veth could ever claim an address).
    await sysctl(ns, "net.ipv6.conf.default.accept_dad", "0");
  }
  const r = topo.router.ns;
  const routerLines: string[] = ["link set lo up"];
  // The router's wifi link: to the client itself, or to its home router's uplink (the same addresses either way).
  const wifiLink = topo.homeRouter?.uplink ?? topo.networks.wifi;
  const edges: {
    ifname: string;
    peerNs: string;
    peerIfname: string;
    routerAddr: string;
    peerAddr: string;
    routerAddr6: string;
    peerAddr6: string;
  }[] = [
    {
      ifname: wifiLink.routerIfname,
      peerNs: topo.homeRouter?.ns ?? topo.client.ns,
      peerIfname: wifiLink.ifname,
      routerAddr: wifiLink.routerAddress,
      peerAddr: wifiLink.address,
      routerAddr6: wifiLink.routerAddress6,
      peerAddr6: wifiLink.address6,
    },
    {
      ifname: "to-dns",
      peerNs: topo.dns.ns,
      peerIfname: "ul0",
      routerAddr: topo.dns.routerAddress,
      peerAddr: topo.dns.address,
      routerAddr6: topo.dns.routerAddress6,
      peerAddr6: topo.dns.address6,
    },
    {
      ifname: "to-collector",
      peerNs: topo.collector.ns,
      peerIfname: "ul0",
      routerAddr: topo.collector.routerAddress,
      peerAddr: topo.collector.address,
      routerAddr6: topo.collector.routerAddress6,
      peerAddr6: topo.collector.address6,
    },
    ...topo.gateways.map((g) => ({
      ifname: g.routerSide.ifname,
      peerNs: g.ns,
      peerIfname: "ul0",
      routerAddr: g.routerSide.address,
      peerAddr: g.address,
      routerAddr6: g.routerSide.address6,
      peerAddr6: g.address6,
    })),
  ];
  // Each veth pair is created inside the router with its peer sent straight into the other namespace,
  // so no lab interface ever exists in the root namespace.
  for (const e of edges) {
    routerLines.push(`link add ${e.ifname} type veth peer name ${e.peerIfname} netns ${e.peerNs}`);
    routerLines.push(`addr add ${e.routerAddr}/24 dev ${e.ifname}`);
    // nodad: duplicate address detection would hold the address "tentative" (unusable) for about a second,
    // and nothing else on a point-to-point veth could ever claim it.
    routerLines.push(`addr add ${e.routerAddr6}/${UNDERLAY6_PREFIX_LEN} dev ${e.ifname} nodad`);
    routerLines.push(`link set ${e.ifname} up`);
  }
  await ipBatch(r, routerLines);
  await sysctl(r, "net.ipv4.ip_forward", "1");
  await sysctl(r, "net.ipv6.conf.all.forwarding", "1");

  for (const e of edges) {
    await ipBatch(e.peerNs, [
      "link set lo up",
      ...uplinkLines(e.peerIfname, e.peerAddr, e.peerAddr6, e.routerAddr, e.routerAddr6, 24),
    ]);
  }

  const corpLines = ["link set lo up", `addr add ${topo.corp.address}/32 dev lo`];
  for (const g of topo.gateways) {
    await ipBatch(g.ns, [
      `link add ${g.corpLink.gwIfname} type veth peer name ${g.corpLink.corpIfname} netns ${topo.corp.ns}`,
      `addr add ${g.corpLink.gwAddress}/24 dev ${g.corpLink.gwIfname}`,
      `link set ${g.corpLink.gwIfname} up`,
      `route add ${topo.corp.network} via ${g.corpLink.corpAddress} dev ${g.corpLink.gwIfname}`,
      `addr add ${g.insideAddress}/32 dev lo`,
    ]);
    await sysctl(g.ns, "net.ipv4.ip_forward", "1");
    corpLines.push(`addr add ${g.corpLink.corpAddress}/24 dev ${g.corpLink.corpIfname}`);
    corpLines.push(`link set ${g.corpLink.corpIfname} up`);
    for (const pool of Object.values(g.pools)) {
      corpLines.push(`route add ${pool} via ${g.corpLink.gwAddress} dev ${g.corpLink.corpIfname}`);
    }
  }
  await ipBatch(topo.corp.ns, corpLines);
  await createAccessNetworks(topo);
}

/**
 * `ip -batch` lines for a link that reaches the lab's underlay through a router: up, with its addresses and the
 * underlay's routes via the router (never a default route: see topology.ts).
 */
function uplinkLines(
  ifname: string,
  address: string,
  address6: string,
  via: string,
  via6: string,
  prefixLen: number,
): string[] {
  return [
    `addr add ${address}/${String(prefixLen)} dev ${ifname}`,
    `addr add ${address6}/${UNDERLAY6_PREFIX_LEN} dev ${ifname} nodad`,
    `link set ${ifname} up`,
    `route add ${UNDERLAY} via ${via} dev ${ifname}`,
    `route add ${UNDERLAY6} via ${via6} dev ${ifname}`,
  ];
}

/** The nftables table of an access router's NAT (the mobile carrier's, a NATed wifi's home router). */
export const ACCESS_NAT_TABLE = "detour_lab_access_nat";

/**
 * An access router's NAT: everything from its client subnet leaves the uplink behind the router's address, in both
 * families, as a carrier-grade NAT or a home router does (and a NAT66, which few run, so that a gateway sees another
 * IPv6 source too after a move). Only what leaves the uplink is rewritten: the router's client-side link sees the
 * client's own addresses (a leak witness there counts what left the client outside a tunnel).
 */
export function accessNatRuleset(m: AccessRouterTopology): string {
  return [
    `table inet ${ACCESS_NAT_TABLE} {`,
    "\tchain postrouting {",
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    `\t\toifname "${m.uplink.ifname}" ip saddr ${m.clientSubnet} counter masquerade`,
    `\t\toifname "${m.uplink.ifname}" ip6 saddr ${m.clientSubnet6} counter masquerade`,
    "\t}",
    "}",
    "",
  ].join("\n");
}

/**
 * A network with its own router: the router's namespace hangs off the lab's router by an uplink (made here for the
 * mobile network; a home router's is the router's to-client link, made with the others) and routes only the
 * underlay through it; its client-side link ends in the client namespace.
 */
async function createAccessNetwork(
  topo: LabTopology,
  m: AccessRouterTopology,
  net: ClientNetwork,
  withUplink: boolean,
): Promise<void> {
  if (withUplink) {
    await ipBatch(topo.router.ns, [
      `link add ${m.uplink.routerIfname} type veth peer name ${m.uplink.ifname} netns ${m.ns}`,
      `addr add ${m.uplink.routerAddress}/24 dev ${m.uplink.routerIfname}`,
      `addr add ${m.uplink.routerAddress6}/${UNDERLAY6_PREFIX_LEN} dev ${m.uplink.routerIfname} nodad`,
      `link set ${m.uplink.routerIfname} up`,
    ]);
    await ipBatch(m.ns, [
      "link set lo up",
      ...uplinkLines(
        m.uplink.ifname,
        m.uplink.address,
        m.uplink.address6,
        m.uplink.routerAddress,
        m.uplink.routerAddress6,
        24,
      ),
    ]);
  }
  await ipBatch(m.ns, [
    `link add ${net.routerIfname} type veth peer name ${net.ifname} netns ${topo.client.ns}`,
    `addr add ${net.routerAddress}/${String(net.prefixLen)} dev ${net.routerIfname}`,
    `addr add ${net.routerAddress6}/${String(net.prefixLen6)} dev ${net.routerIfname} nodad`,
    `link set ${net.routerIfname} up`,
  ]);
  await sysctl(m.ns, "net.ipv4.ip_forward", "1");
  await sysctl(m.ns, "net.ipv6.conf.all.forwarding", "1");
  await runOk("ip", ["netns", "exec", m.ns, "nft", "-f", "-"], { input: accessNatRuleset(m) });
}

/**
 * The mobile network (its client link ul1 stays down and without an address until the client moves there:
 * roam.ts) and, with a NATed wifi, the home router, behind which the client starts as it would on the direct wifi:
 * its link up with the address and routes to the underlay.
 */
async function createAccessNetworks(topo: LabTopology): Promise<void> {
  await createAccessNetwork(topo, topo.mobileRouter, topo.networks.mobile, true);
  const home = topo.homeRouter;
  if (home === null) return;
  const wifi = topo.networks.wifi;
  await createAccessNetwork(topo, home, wifi, false);
  await ipBatch(topo.client.ns, [
    "link set lo up",
    ...uplinkLines(wifi.ifname, wifi.address, wifi.address6, wifi.routerAddress, wifi.routerAddress6, wifi.prefixLen),
  ]);
}

/** The nftables table a full-tunnel gateway masquerades its tunnel clients with. */
export const GATEWAY_NAT_TABLE = "detour_lab_nat";

/**
 * A full-tunnel gateway's NAT: its tunnel clients' traffic to anything but corp leaves on the underlay behind the
 * gateway's own address, as it would towards the internet (the router has no route back to the tunnel pools).
 * Corp keeps seeing the clients' own addresses: it routes the pools back to their gateway.
 */
export function gatewayNatRuleset(gw: GatewayTopology): string {
  const pools = Object.values(gw.pools).join(", ");
  return [
    `table ip ${GATEWAY_NAT_TABLE} {`,
    "\tchain postrouting {",
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    `\t\toifname "ul0" ip saddr { ${pools} } counter masquerade`,
    "\t}",
    "}",
    "",
  ].join("\n");
}

/** Lets every gateway carry full-tunnel clients to the underlay (forwarding is on already; see createNetwork). */
export async function enableFullTunnelGateways(topo: LabTopology): Promise<void> {
  for (const g of topo.gateways)
    await runOk("ip", ["netns", "exec", g.ns, "nft", "-f", "-"], { input: gatewayNatRuleset(g) });
}

/** Every namespace on the host whose name starts with the given prefix. */
export async function listNamespaces(prefix: string = NS_PREFIX): Promise<string[]> {
  const out = await run("ip", ["netns", "list"]);
  return out.stdout
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(prefix));
}

/** PIDs of every process whose network namespace is `ns`. */
export async function namespacePids(ns: string): Promise<number[]> {
  const r = await run("ip", ["netns", "pids", ns]);
  if (r.code !== 0) return [];
  return r.stdout
    .split("\n")
    .filter((l) => /^\d+$/.test(l.trim()))
    .map(Number)
    .filter((p) => p !== process.pid);
}

/**
 * Removes namespaces with the prefix and everything in them: processes (TERM, then KILL, by PID), then the
 * namespace (which takes its veths and any TUN device left by a killed engine with it), then the per-namespace
 * resolv.conf folder. Works without any state file, so it also cleans up after a crash or `kill -9`.
 */
export async function destroyNamespaces(prefix: string): Promise<string[]> {
  const namespaces = await listNamespaces(prefix);
  const pids = (await Promise.all(namespaces.map(namespacePids))).flat();
  await stopPids(pids, "SIGTERM");
  for (const ns of namespaces) {
    const r = await run("ip", ["netns", "del", ns]);
    if (r.code !== 0 && !/No such file/.test(r.stderr))
      throw new Error(`could not delete namespace ${ns}: ${r.stderr.trim()}`);
    rmSync(`/etc/netns/${ns}`, { recursive: true, force: true });
  }
  return namespaces;
}
