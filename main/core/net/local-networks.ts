/**
 * "Allow local network access" (AnyConnect's "Allow local LAN access", Mullvad's "local network sharing"): which
 * of the device's directly connected networks stay reachable outside the tunnel although a protected network
 * covers them (the home LAN under 192.168.0.0/16, Docker's 172.17.0.0/16 under 172.16.0.0/12). Pure: the agent
 * reads the connected routes, this module decides, routes.linux.ts throws the allowed prefixes out of the
 * protected table and the kill switch lets them out on their own device only.
 *
 * What counts as local: a connected route (the kernel's own, scope link, no next hop) on a device that is not a
 * tunnel's. Nothing is ever widened beyond that prefix, and a prefix is refused (and reported) when it
 *   - is wider than /8 (MIN_LOCAL_PREFIX_LEN): a hostile DHCP server or a typo must not open a quarter of the
 *     Internet outside the tunnel;
 *   - covers a whole protected network: the protected network would then be nothing but local;
 *   - covers an address that must be reached through the tunnel (the tunnel's resolvers, the in-tunnel probe
 *     target): a network that claims the intranet's DNS server is an impostor, not a LAN;
 *   - lies inside a protected network that is not a catch-all (CATCH_ALL_NETWORKS: everything, or a whole private
 *     block, as an organisation protects "whatever is private" and the home LAN happens to fall in it). A specific
 *     network is the organisation's own: a hotel's DHCP server that hands out 10.20.5.0/24 inside the intranet's
 *     10.20.0.0/16 would otherwise receive that subnet's intranet traffic outside the tunnel (TunnelCrack's
 *     "LocalNet" attack, USENIX Security 2023).
 * Connected networks that overlap no protected network need nothing: the main table routes them already.
 */
import { parsePrefix, prefixCovers, type Prefix } from "./address-guard.ts";

/** "auto": on for a split tunnel without lockdown, off for a full tunnel or under lockdown. */
export const LOCAL_NETWORK_ACCESS_MODES = ["auto", "on", "off"] as const;
export type LocalNetworkAccessMode = (typeof LOCAL_NETWORK_ACCESS_MODES)[number];

/** The widest connected prefix taken as local: a /8 is a large campus at most; wider is refused. */
export const MIN_LOCAL_PREFIX_LEN = 8;

/**
 * The protected networks a local network may be carved out of: everything (a full tunnel) and whole private or
 * link-local blocks. Any other protected network is taken for the organisation's own, and never gives way.
 */
export const CATCH_ALL_NETWORKS: readonly string[] = [
  "0.0.0.0/0",
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "169.254.0.0/16",
];

/** One connected route of the main table, as the platform reads it. */
export interface ConnectedRoute {
  /** IPv4 prefix, e.g. "172.17.0.0/16". */
  prefix: string;
  dev: string;
  /** The device is a bridge (docker0, br-*, virbr*, cni*, podman*, or a bridge by its link kind). */
  bridge: boolean;
}

/** A local network allowed outside the tunnel: its prefix (host bits cleared) and the only device it may leave by. */
export interface LocalNetwork {
  prefix: string;
  dev: string;
  kind: "connected" | "bridge";
}

export interface RefusedLocalNetwork extends LocalNetwork {
  reason: string;
}

export interface LocalNetworkPlan {
  /** Sorted by prefix, then device; only those a protected network overlaps. */
  allowed: LocalNetwork[];
  refused: RefusedLocalNetwork[];
}

export interface LocalNetworkInput {
  routes: readonly ConnectedRoute[];
  /** IPv4 prefixes; "0.0.0.0/0" in a full tunnel. */
  protectedNetworks: readonly string[];
  /** Tunnel devices: exact names or a prefix followed by "*"; their routes are never local. */
  tunnelDevices: readonly string[];
  /** Addresses that must stay inside the tunnel (its resolvers, the probe target); a prefix covering one is refused. */
  tunnelAddresses: readonly string[];
}

/** Whether the setting is in force for this configuration. */
export function localNetworkAccessEnabled(p: {
  mode: LocalNetworkAccessMode;
  fullTunnel: boolean;
  lockdown: boolean;
}): boolean {
  switch (p.mode) {
    case "on":
      return true;
    case "off":
      return false;
    case "auto":
      return !p.fullTunnel && !p.lockdown;
  }
}

/** Whether `name` is `pattern`, or starts with it when the pattern ends in "*". */
export function deviceMatches(pattern: string, name: string): boolean {
  return pattern.endsWith("*") ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

/** Container and VM bridges by their usual names (Docker, libvirt, CNI, Podman, LXD/LXC). */
const BRIDGE_NAME_RE = /^(?:docker\d+|br-[0-9a-f]+|virbr\d+|cni\d+|cni-podman\d+|podman\d+|lxdbr\d+|lxcbr\d+)$/;

/** Whether a device is a container or VM bridge by its name alone (the platform also asks the link's kind). */
export function isBridgeName(dev: string): boolean {
  return BRIDGE_NAME_RE.test(dev);
}

function formatIpv4Prefix(p: Prefix): string {
  const shift = BigInt(32 - p.len);
  const n = Number((p.value >> shift) << shift);
  const a = [24, 16, 8, 0].map((s) => String(Math.floor(n / 2 ** s) % 256)).join(".");
  return `${a}/${String(p.len)}`;
}

function ipv4Prefix(cidr: string): Prefix | null {
  const p = parsePrefix(cidr);
  return p === null || p.family !== "ipv4" || !cidr.includes("/") ? null : p;
}

const IFNAME_RE = /^[A-Za-z0-9._-]{1,15}$/;

const CATCH_ALL_PREFIXES: Prefix[] = CATCH_ALL_NETWORKS.map(ipv4Prefix).filter((p): p is Prefix => p !== null);

function isCatchAll(q: Prefix): boolean {
  return CATCH_ALL_PREFIXES.some((c) => c.len === q.len && c.value === q.value);
}

/** Decides which connected networks are allowed outside the tunnel and which are refused, and why. */
export function planLocalNetworks(input: LocalNetworkInput): LocalNetworkPlan {
  const protectedNets = input.protectedNetworks.map(ipv4Prefix).filter((p): p is Prefix => p !== null);
  const inside = input.tunnelAddresses
    .map((a) => ({ a, p: parsePrefix(a) }))
    .filter((x): x is { a: string; p: Prefix } => x.p !== null && x.p.family === "ipv4");
  const allowed = new Map<string, LocalNetwork>();
  const refused = new Map<string, RefusedLocalNetwork>();
  for (const r of input.routes) {
    if (!IFNAME_RE.test(r.dev) || r.dev === "lo") continue;
    // A tunnel's own connected route is the tunnel's inside, never a local network.
    if (input.tunnelDevices.some((t) => deviceMatches(t, r.dev))) continue;
    const p = ipv4Prefix(r.prefix);
    if (p === null) continue;
    const net: LocalNetwork = { prefix: formatIpv4Prefix(p), dev: r.dev, kind: r.bridge ? "bridge" : "connected" };
    const key = `${net.prefix} ${net.dev}`;
    if (!protectedNets.some((q) => prefixCovers(q, p) || prefixCovers(p, q))) continue;
    const refuse = (reason: string): void => {
      refused.set(key, { ...net, reason });
    };
    const covered = protectedNets.find((q) => prefixCovers(p, q));
    const tunnelOnly = inside.find((x) => prefixCovers(p, x.p));
    const own = protectedNets.find((q) => prefixCovers(q, p) && !isCatchAll(q));
    if (p.len < MIN_LOCAL_PREFIX_LEN)
      refuse(`a connected network wider than /${String(MIN_LOCAL_PREFIX_LEN)} is not taken as local`);
    else if (covered !== undefined)
      refuse(`it covers the whole protected network ${formatIpv4Prefix(covered)}, which stays in the tunnel`);
    else if (tunnelOnly !== undefined) refuse(`it covers ${tunnelOnly.a}, which is reached only through the tunnel`);
    else if (own !== undefined)
      refuse(
        `it lies inside the protected network ${formatIpv4Prefix(own)}, which is not a catch-all (${CATCH_ALL_NETWORKS.join(", ")}): a network handing out part of the organisation's own addresses gets none of their traffic`,
      );
    else allowed.set(key, net);
  }
  const order = (a: LocalNetwork, b: LocalNetwork): number => {
    const pa = ipv4Prefix(a.prefix);
    const pb = ipv4Prefix(b.prefix);
    const va = pa?.value ?? 0n;
    const vb = pb?.value ?? 0n;
    return va < vb ? -1 : va > vb ? 1 : (pa?.len ?? 0) - (pb?.len ?? 0) || a.dev.localeCompare(b.dev);
  };
  return { allowed: [...allowed.values()].sort(order), refused: [...refused.values()].sort(order) };
}

/** Whether two plans allow and refuse the same networks (for reporting a change once). */
export function samePlan(a: LocalNetworkPlan, b: LocalNetworkPlan): boolean {
  const key = (p: LocalNetworkPlan): string =>
    JSON.stringify([
      p.allowed.map((n) => [n.prefix, n.dev, n.kind]),
      p.refused.map((n) => [n.prefix, n.dev, n.reason]),
    ]);
  return key(a) === key(b);
}
