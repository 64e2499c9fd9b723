/** Creates and destroys the lab's namespaces, links, addresses and routes (see topology.ts for the picture). */
import { rmSync } from "node:fs";
import { run, runOk, stopPids } from "./exec.ts";
import {
  NS_PREFIX,
  UNDERLAY,
  UNDERLAY6,
  UNDERLAY6_PREFIX_LEN,
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
  for (const ns of Object.values(topo.ns)) {
    await runOk("ip", ["netns", "add", ns]);
    // No duplicate address detection on links created from here on: it holds each new link-local address
    // "tentative" for about a second, and the first IPv6 packets after `up` waited for it (nothing else on a
    // point-to-point veth could ever claim an address).
    await sysctl(ns, "net.ipv6.conf.default.accept_dad", "0");
  }
  const r = topo.router.ns;
  const routerLines: string[] = ["link set lo up"];
  const edges: {
    ifname: string;
    peerNs: string;
    routerAddr: string;
    peerAddr: string;
    routerAddr6: string;
    peerAddr6: string;
  }[] = [
    {
      ifname: "to-client",
      peerNs: topo.client.ns,
      routerAddr: topo.client.routerAddress,
      peerAddr: topo.client.address,
      routerAddr6: topo.client.routerAddress6,
      peerAddr6: topo.client.address6,
    },
    {
      ifname: "to-dns",
      peerNs: topo.dns.ns,
      routerAddr: topo.dns.routerAddress,
      peerAddr: topo.dns.address,
      routerAddr6: topo.dns.routerAddress6,
      peerAddr6: topo.dns.address6,
    },
    {
      ifname: "to-collector",
      peerNs: topo.collector.ns,
      routerAddr: topo.collector.routerAddress,
      peerAddr: topo.collector.address,
      routerAddr6: topo.collector.routerAddress6,
      peerAddr6: topo.collector.address6,
    },
    ...topo.gateways.map((g) => ({
      ifname: g.routerSide.ifname,
      peerNs: g.ns,
      routerAddr: g.routerSide.address,
      peerAddr: g.address,
      routerAddr6: g.routerSide.address6,
      peerAddr6: g.address6,
    })),
  ];
  // Each veth pair is created inside the router with its peer sent straight into the other namespace,
  // so no lab interface ever exists in the root namespace.
  for (const e of edges) {
    routerLines.push(`link add ${e.ifname} type veth peer name ul0 netns ${e.peerNs}`);
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
      `addr add ${e.peerAddr}/24 dev ul0`,
      `addr add ${e.peerAddr6}/${UNDERLAY6_PREFIX_LEN} dev ul0 nodad`,
      "link set ul0 up",
      `route add ${UNDERLAY} via ${e.routerAddr} dev ul0`,
      `route add ${UNDERLAY6} via ${e.routerAddr6} dev ul0`,
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
  await createMobileNetwork(topo);
}

/** The nftables table of the mobile network's NAT (in its router's namespace). */
export const MOBILE_NAT_TABLE = "detour_lab_mobile_nat";

/**
 * The mobile network's NAT: everything from its client subnet leaves the uplink behind the router's address, in
 * both families, as a carrier-grade NAT does (and a NAT66, which few carriers run, so that a gateway sees another
 * IPv6 source too after a move).
 */
export function mobileNatRuleset(topo: LabTopology): string {
  const m = topo.mobileRouter;
  return [
    `table inet ${MOBILE_NAT_TABLE} {`,
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
 * The mobile network: its router namespace hangs off the lab's router by an uplink and routes only the underlay
 * through it; its client-side link ends in the client namespace as a second uplink, down and without an address
 * until the client moves there (roam.ts).
 */
async function createMobileNetwork(topo: LabTopology): Promise<void> {
  const m = topo.mobileRouter;
  const net = topo.networks.mobile;
  await ipBatch(topo.router.ns, [
    `link add ${m.uplink.routerIfname} type veth peer name ${m.uplink.ifname} netns ${m.ns}`,
    `addr add ${m.uplink.routerAddress}/24 dev ${m.uplink.routerIfname}`,
    `addr add ${m.uplink.routerAddress6}/${UNDERLAY6_PREFIX_LEN} dev ${m.uplink.routerIfname} nodad`,
    `link set ${m.uplink.routerIfname} up`,
  ]);
  await ipBatch(m.ns, [
    "link set lo up",
    `addr add ${m.uplink.address}/24 dev ${m.uplink.ifname}`,
    `addr add ${m.uplink.address6}/${UNDERLAY6_PREFIX_LEN} dev ${m.uplink.ifname} nodad`,
    `link set ${m.uplink.ifname} up`,
    `route add ${UNDERLAY} via ${m.uplink.routerAddress} dev ${m.uplink.ifname}`,
    `route add ${UNDERLAY6} via ${m.uplink.routerAddress6} dev ${m.uplink.ifname}`,
    `link add ${net.routerIfname} type veth peer name ${net.ifname} netns ${topo.client.ns}`,
    `addr add ${net.routerAddress}/${String(net.prefixLen)} dev ${net.routerIfname}`,
    `addr add ${net.routerAddress6}/${String(net.prefixLen6)} dev ${net.routerIfname} nodad`,
    `link set ${net.routerIfname} up`,
  ]);
  await sysctl(m.ns, "net.ipv4.ip_forward", "1");
  await sysctl(m.ns, "net.ipv6.conf.all.forwarding", "1");
  await runOk("ip", ["netns", "exec", m.ns, "nft", "-f", "-"], { input: mobileNatRuleset(topo) });
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
