/**
 * The lab's topology as data: namespace names, links, addresses, ports and pools, all derived from the lab id.
 * Pure, so the lab, its tests and the selftest agree on every name and number.
 *
 *                         detour-<id>-dns (198.18.53.2, dnsmasq)
 *            "wifi"                |
 *  detour-<id>-client --- detour-<id>-router --- detour-<id>-gw1 --\
 *   ul0 198.18.0.2        ("the internet")   --- detour-<id>-gw2 ---+-- detour-<id>-corp (198.19.0.1: HTTP + UDP echo)
 *       2001:db8:18::2       |     |         --- detour-<id>-gw3 --/
 *   ul1 (down)               |  detour-<id>-collector (198.18.100.2, reserved)
 *      \ "mobile"            | up0 198.18.201.2 (the mobile network's public address: masquerade)
 *       `--- detour-<id>-mob -'  to-client 198.18.200.1 (+ dnsmasq: the mobile network's resolver)
 *
 * The client has two uplinks (NETWORKS): "wifi" (ul0, where `up` leaves the client, with a route to the underlay
 * and no default route) and "mobile" (ul1 through its own router detour-<id>-mob, a carrier-grade NAT with its own
 * resolver; down and without an address until a move). Moving (roam.ts) takes the old link down and its addresses
 * away, then brings the new one up with its address and a default route via that network's router, as DHCP or
 * router advertisements would. The routers have routes only inside the lab, so a default route there reaches
 * nothing beyond it.
 *
 * The wifi network has one of two shapes (WifiShape, chosen at `up`). "direct", the lab's original: ul0 sits on the
 * lab's router itself, and gateways see the client's own address. "nat": a home router detour-<id>-home takes the
 * client's place on the router's to-client link (its up0 is 198.18.0.2, so gateways see the same public address),
 * and the client sits behind its masquerade on 198.18.202.0/24, so both networks are NATed and a gateway sees only
 * the networks' public addresses. The router's side is the same in both shapes (to-client, 198.18.0.1): its
 * impairments and counters see the client's wifi traffic either way, after the home NAT.
 *
 * Underlay: dual-stack. IPv4 198.18.0.0/16 (RFC 2544 benchmarking range); IPv6 2001:db8:18::/48 (RFC 3849
 * documentation range), one /64 per link mirroring the IPv4 /24 (198.18.N.0/24 is 2001:db8:18:N::/64). Inner
 * and corp networks: 198.19.0.0/16 (IPv4 only: the tunnels carry IPv4), the other half of the benchmarking
 * range, so nothing here can collide with a real network of the host. No namespace has a default route in
 * either family, and the root namespace is never a hop. Each gateway's underlay link carries that gateway's
 * distance from the client (USER_DISTANCES, put in force by distance.ts) unless the lab is built without them.
 */

export const NS_PREFIX = "detour-";
export const GATEWAY_NAMES = ["gw1", "gw2", "gw3"] as const;
export type GatewayName = (typeof GATEWAY_NAMES)[number];
export type Role = "client" | "router" | "mob" | "home" | "dns" | "collector" | "corp" | GatewayName;
export const ROLES: readonly Role[] = ["router", "mob", "home", "client", "dns", "collector", "corp", ...GATEWAY_NAMES];

/** The networks a client can sit on; "wifi" is where `lab up` puts it. */
export type NetworkName = "wifi" | "mobile";
export const NETWORK_NAMES: readonly NetworkName[] = ["wifi", "mobile"];
export const DEFAULT_NETWORK: NetworkName = "wifi";

/** How the wifi network reaches the lab's router: the client on it directly, or behind a home router's NAT. */
export type WifiShape = "direct" | "nat";
export const WIFI_SHAPES: readonly WifiShape[] = ["direct", "nat"];

/** What a lab's topology depends on beyond its id. */
export interface TopologyOptions {
  /** Default "direct": every lab test but the roaming ones sees the client as the lab always had it. */
  wifi?: WifiShape;
}

/** One network the client can join: its link in the client namespace, its router, its resolver, its NAT. */
export interface ClientNetwork {
  name: NetworkName;
  /** The namespace of the network's router (the first hop). */
  routerNs: string;
  /** The client's link to this network (in the client namespace) and the router's end of it. */
  ifname: string;
  routerIfname: string;
  address: string;
  routerAddress: string;
  address6: string;
  routerAddress6: string;
  prefixLen: number;
  prefixLen6: number;
  /** The resolver the network hands out (what resolv.conf of the client namespace names on this network). */
  resolver: string;
  /**
   * What a gateway sees as the client's address on this network: the client's own (no NAT) or the router's
   * public address (masquerade).
   */
  publicAddress: string;
  publicAddress6: string;
  nat: boolean;
}

/**
 * A network's own router in front of the client (the mobile carrier's, or the home router of a NATed wifi): its
 * uplink to the lab's "internet" (the router namespace) and the client-side subnet behind its NAT, both inside the
 * underlay range and apart from every other link.
 */
export interface AccessRouterTopology {
  ns: string;
  uplink: {
    ifname: string;
    address: string;
    address6: string;
    routerIfname: string;
    routerAddress: string;
    routerAddress6: string;
  };
  clientSubnet: string;
  clientSubnet6: string;
}

export const DOMAIN = "lab.detour.test";
export const CORP_ADDRESS = "198.19.0.1";
export const CORP_NETWORK = "198.19.0.0/24";
/** What a full-tunnel client protects and a full-tunnel gateway offers: everything (IPv4). */
export const FULL_TUNNEL = "0.0.0.0/0";
export const CORP_HTTP_PORT = 80;
export const CORP_ECHO_PORT = 7;
export const DNS_ADDRESS = "198.18.53.2";
export const COLLECTOR_ADDRESS = "198.18.100.2";
export const UNDERLAY = "198.18.0.0/16";
/** The IPv6 underlay: the documentation prefix, so no packet of the lab could ever be routed anywhere real. */
export const UNDERLAY6 = "2001:db8:18::/48";
/** The IPv6 twin of 198.18.<subnet>.<host> (subnet and host in decimal, as in the IPv4 address). */
export function underlay6(subnet: number, host: number): string {
  return `2001:db8:18:${String(subnet)}::${String(host)}`;
}
export const UNDERLAY6_PREFIX_LEN = 64;
/** The mobile network: the client-side subnet behind its NAT, and its router's uplink (198.18.<N>.0/24 each). */
export const MOBILE_CLIENT_SUBNET = 200;
export const MOBILE_UPLINK_SUBNET = 201;
/** The client-side subnet behind a NATed wifi's home router (198.18.<N>.0/24). */
export const HOME_CLIENT_SUBNET = 202;

export const PORTS = {
  wireguard: 51820,
  ike: 500,
  ikeNatT: 4500,
  anyconnect: 443,
} as const;

export type TunnelProtocol = "wireguard" | "ikev2" | "anyconnect";
export const TUNNEL_PROTOCOLS: readonly TunnelProtocol[] = ["wireguard", "ikev2", "anyconnect"];

/** Pool index per protocol: gateway N hands out 198.19.<10N + index>.0/24 for that protocol. */
const POOL_INDEX: Record<TunnelProtocol, number> = { wireguard: 1, ikev2: 2, anyconnect: 3 };

export interface GatewayTopology {
  name: GatewayName;
  index: number;
  ns: string;
  hostname: string;
  /** The gateway's public (underlay) IPv4 address. */
  address: string;
  /** The gateway's public (underlay) IPv6 address: the same engines answer on it. */
  address6: string;
  routerSide: { ifname: string; address: string; address6: string };
  /** Transit link to corp: gateway side and corp side. */
  corpLink: { gwIfname: string; gwAddress: string; corpIfname: string; corpAddress: string };
  /**
   * The gateway's own address inside the corp network (on its loopback). kernel-libipsec installs its route
   * with a source address taken from local_ts, so an IKEv2 gateway must own an address there.
   */
  insideAddress: string;
  priority: number;
  region: string;
  pools: Record<TunnelProtocol, string>;
  wireguard: { ifname: string; gatewayAddress: string; clientAddress: string };
  ikev2: { id: string; poolRange: string };
  anyconnect: { network: string; device: string };
}

export interface LabTopology {
  id: string;
  prefix: string;
  ns: Record<Role, string>;
  client: {
    ns: string;
    ifname: string;
    address: string;
    routerAddress: string;
    address6: string;
    routerAddress6: string;
  };
  router: { ns: string };
  /** The client's networks by name; `client` above is the wifi one, as the lab always had it. */
  networks: Record<NetworkName, ClientNetwork>;
  /** The wifi network's shape, and its home router (null for "direct": the lab's router is the wifi's). */
  wifiShape: WifiShape;
  homeRouter: AccessRouterTopology | null;
  mobileRouter: AccessRouterTopology;
  dns: { ns: string; address: string; routerAddress: string; address6: string; routerAddress6: string };
  collector: { ns: string; address: string; routerAddress: string; address6: string; routerAddress6: string };
  corp: { ns: string; address: string; network: string };
  gateways: GatewayTopology[];
  clientIkeId: string;
  anyconnectUser: string;
}

const REGIONS: Record<GatewayName, string> = { gw1: "eu-central", gw2: "eu-west", gw3: "us-east" };

/**
 * How far a gateway is from the client: the mean round trip over its underlay link, and the jitter each direction
 * adds on top of its fixed delay (uniform from 0 to `jitterMs`, so the two directions together average `jitterMs`).
 */
export interface GatewayDistance {
  rttMs: number;
  jitterMs: number;
}

/**
 * The round trips users have (`lab up`'s default): the user sits near gw1 (same metro, ~20 ms), gw2 is a
 * neighbouring region (~80 ms) and gw3 is across an ocean (~250 ms). Jitter grows with the path, as longer paths
 * cross more queues. Connect, race and failover timings are only meaningful against these; the benchmarks that
 * compare against stored baselines use the 0 ms world instead (`distance: "none"`).
 */
export const USER_DISTANCES: Readonly<Record<GatewayName, GatewayDistance>> = {
  gw1: { rttMs: 20, jitterMs: 2 },
  gw2: { rttMs: 80, jitterMs: 4 },
  gw3: { rttMs: 250, jitterMs: 6 },
};

/** Which distances a lab has: the users' (USER_DISTANCES), or none (every gateway at the veth's ~0 ms). */
export type DistanceProfile = "user" | "none";
export const DISTANCE_PROFILES: readonly DistanceProfile[] = ["user", "none"];

/** The distance of each gateway in a profile; empty for "none". */
export function gatewayDistances(profile: DistanceProfile): Partial<Record<GatewayName, GatewayDistance>> {
  return profile === "user" ? USER_DISTANCES : {};
}

/**
 * What each direction of the link holds a packet: `delayMs` plus uniform(0, `jitterMs`). Both directions together
 * average 2 * delay + jitter, the distance's round trip.
 */
export function oneWayDelay(d: GatewayDistance): { delayMs: number; jitterMs: number } {
  const delayMs = (d.rttMs - d.jitterMs) / 2;
  if (!Number.isInteger(delayMs) || delayMs < 0) {
    throw new Error(
      `a ${String(d.rttMs)} ms round trip with ${String(d.jitterMs)} ms jitter has no whole one-way delay`,
    );
  }
  return { delayMs, jitterMs: d.jitterMs };
}

/** Lab ids are short so that interface names built from them stay within Linux's 15 characters. */
export function validateLabId(id: string): string {
  if (!/^[a-z][a-z0-9]{0,5}$/.test(id)) {
    throw new Error(`lab id "${id}" is invalid: expected 1-6 lowercase letters or digits, starting with a letter`);
  }
  return id;
}

/**
 * A client network behind an access router's NAT: the client at .2 of 198.18.<subnet>.0/24 (and its IPv6 twin), the
 * router at .1, and what gateways see is the router's uplink address.
 */
function natNetwork(
  name: NetworkName,
  router: AccessRouterTopology,
  ifname: string,
  subnet: number,
  resolver: string,
): ClientNetwork {
  return {
    name,
    routerNs: router.ns,
    ifname,
    routerIfname: "to-client",
    address: `198.18.${String(subnet)}.2`,
    routerAddress: `198.18.${String(subnet)}.1`,
    address6: underlay6(subnet, 2),
    routerAddress6: underlay6(subnet, 1),
    prefixLen: 24,
    prefixLen6: UNDERLAY6_PREFIX_LEN,
    resolver,
    publicAddress: router.uplink.address,
    publicAddress6: router.uplink.address6,
    nat: true,
  };
}

/** The client-side subnets of an access router, 198.18.<subnet>.0/24 and its IPv6 twin. */
function accessSubnets(subnet: number): { clientSubnet: string; clientSubnet6: string } {
  return {
    clientSubnet: `198.18.${String(subnet)}.0/24`,
    clientSubnet6: `2001:db8:18:${String(subnet)}::/${String(UNDERLAY6_PREFIX_LEN)}`,
  };
}

/** A lab's whole topology; `opts.wifi` picks the wifi network's shape (see the header). */
export function labTopology(id: string, opts: TopologyOptions = {}): LabTopology {
  validateLabId(id);
  const wifiShape = opts.wifi ?? "direct";
  const prefix = `${NS_PREFIX}${id}-`;
  const ns = Object.fromEntries(ROLES.map((r) => [r, `${prefix}${r}`])) as Record<Role, string>;
  const gateways = GATEWAY_NAMES.map((name, i): GatewayTopology => {
    const n = i + 1;
    const pool = (p: TunnelProtocol): string => `198.19.${10 * n + POOL_INDEX[p]}.0/24`;
    return {
      name,
      index: n,
      ns: ns[name],
      hostname: `${name}.${DOMAIN}`,
      address: `198.18.${n}.2`,
      address6: underlay6(n, 2),
      routerSide: { ifname: `to-${name}`, address: `198.18.${n}.1`, address6: underlay6(n, 1) },
      corpLink: {
        gwIfname: "corp0",
        gwAddress: `198.19.${200 + n}.1`,
        corpIfname: `to-${name}`,
        corpAddress: `198.19.${200 + n}.2`,
      },
      insideAddress: `198.19.0.${10 + n}`,
      priority: 10 * n,
      region: REGIONS[name],
      pools: { wireguard: pool("wireguard"), ikev2: pool("ikev2"), anyconnect: pool("anyconnect") },
      // wireguard-go's UAPI socket lives in the host-wide /run/wireguard, so the name carries the lab id.
      wireguard: {
        ifname: `wg-${id}-${name}`,
        gatewayAddress: `198.19.${10 * n + 1}.1`,
        clientAddress: `198.19.${10 * n + 1}.2`,
      },
      ikev2: { id: `${name}.${DOMAIN}`, poolRange: `198.19.${10 * n + 2}.10-198.19.${10 * n + 2}.250` },
      anyconnect: { network: `198.19.${10 * n + 3}.0`, device: "vpns" },
    };
  });
  // The router's end of the wifi link is the same in both shapes; with "nat" the home router's uplink takes the
  // address the client has in "direct", so a gateway sees the same public address.
  const wifiUplink = {
    routerIfname: "to-client",
    routerAddress: "198.18.0.1",
    routerAddress6: underlay6(0, 1),
    address: "198.18.0.2",
    address6: underlay6(0, 2),
  };
  const homeRouter: AccessRouterTopology | null =
    wifiShape === "nat"
      ? {
          ns: ns.home,
          uplink: { ifname: "up0", ...wifiUplink },
          ...accessSubnets(HOME_CLIENT_SUBNET),
        }
      : null;
  const wifi: ClientNetwork =
    homeRouter === null
      ? {
          name: "wifi",
          routerNs: ns.router,
          ifname: "ul0",
          routerIfname: wifiUplink.routerIfname,
          address: wifiUplink.address,
          routerAddress: wifiUplink.routerAddress,
          address6: wifiUplink.address6,
          routerAddress6: wifiUplink.routerAddress6,
          prefixLen: 24,
          prefixLen6: UNDERLAY6_PREFIX_LEN,
          resolver: DNS_ADDRESS,
          publicAddress: wifiUplink.address,
          publicAddress6: wifiUplink.address6,
          nat: false,
        }
      : // The home router hands out the provider's resolver (the lab's), as many do.
        natNetwork("wifi", homeRouter, "ul0", HOME_CLIENT_SUBNET, DNS_ADDRESS);
  const mobileRouter: AccessRouterTopology = {
    ns: ns.mob,
    uplink: {
      ifname: "up0",
      address: `198.18.${MOBILE_UPLINK_SUBNET}.2`,
      address6: underlay6(MOBILE_UPLINK_SUBNET, 2),
      routerIfname: "to-mob",
      routerAddress: `198.18.${MOBILE_UPLINK_SUBNET}.1`,
      routerAddress6: underlay6(MOBILE_UPLINK_SUBNET, 1),
    },
    ...accessSubnets(MOBILE_CLIENT_SUBNET),
  };
  // The carrier's own resolver on its router: a move changes the resolver as it does on a real phone network.
  const mobile = natNetwork("mobile", mobileRouter, "ul1", MOBILE_CLIENT_SUBNET, `198.18.${MOBILE_CLIENT_SUBNET}.1`);
  return {
    id,
    prefix,
    ns,
    networks: { wifi, mobile },
    wifiShape,
    homeRouter,
    mobileRouter,
    client: {
      ns: ns.client,
      ifname: wifi.ifname,
      address: wifi.address,
      routerAddress: wifi.routerAddress,
      address6: wifi.address6,
      routerAddress6: wifi.routerAddress6,
    },
    router: { ns: ns.router },
    dns: {
      ns: ns.dns,
      address: DNS_ADDRESS,
      routerAddress: "198.18.53.1",
      address6: underlay6(53, 2),
      routerAddress6: underlay6(53, 1),
    },
    collector: {
      ns: ns.collector,
      address: COLLECTOR_ADDRESS,
      routerAddress: "198.18.100.1",
      address6: underlay6(100, 2),
      routerAddress6: underlay6(100, 1),
    },
    corp: { ns: ns.corp, address: CORP_ADDRESS, network: CORP_NETWORK },
    gateways,
    clientIkeId: `client@${DOMAIN}`,
    anyconnectUser: "alice",
  };
}

/** The namespaces a lab of this topology has: the home router's only with a NATed wifi. */
export function labNamespaces(topo: LabTopology): [Role, string][] {
  return (Object.entries(topo.ns) as [Role, string][]).filter(([r]) => r !== "home" || topo.homeRouter !== null);
}

/** Maps a network name given on the command line to the network. */
export function networkByName(topo: LabTopology, name: string): ClientNetwork {
  if (!(NETWORK_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown network "${name}": expected one of ${NETWORK_NAMES.join(", ")}`);
  }
  return topo.networks[name as NetworkName];
}

export function gatewayByName(topo: LabTopology, name: string): GatewayTopology {
  const gw = topo.gateways.find((g) => g.name === name);
  if (gw === undefined) throw new Error(`unknown gateway "${name}": expected one of ${GATEWAY_NAMES.join(", ")}`);
  return gw;
}

/** Maps a role name given on the command line ("client", "gw2", ...) to its namespace. */
export function namespaceOf(topo: LabTopology, role: string): string {
  if (!(ROLES as readonly string[]).includes(role)) {
    throw new Error(`unknown namespace "${role}": expected one of ${ROLES.join(", ")}`);
  }
  return topo.ns[role as Role];
}
