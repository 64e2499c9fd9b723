/**
 * Judges addresses and prefixes that came from the network (DNS answers, the portal, what a gateway pushed)
 * before detourd acts on them: a gateway address becomes a kill-switch allowance and a throw out of the
 * protected table, a pushed resolver gets every lookup, a pushed route captures traffic. Pure: each check takes
 * the networks it compares against as input and answers with a reason to refuse, or null.
 *
 * Both families. An IPv6 address that carries an IPv4 one (IPv4-mapped ::ffff:a.b.c.d, the NAT64 well-known
 * prefix 64:ff9b::/96) is judged as that IPv4 address too, since that is where its packets end up.
 */
import { ipv6Groups, isIpv4, type IpFamily } from "../ip-address.ts";

export interface Prefix {
  family: IpFamily;
  /** The address as an integer (32 or 128 bits), host bits kept as written. */
  value: bigint;
  len: number;
}

const BITS: Record<IpFamily, number> = { ipv4: 32, ipv6: 128 };

function ipv4Value(a: string): bigint {
  return a.split(".").reduce((n, o) => n * 256n + BigInt(Number(o)), 0n);
}

/** An IPv4 or IPv6 address as a /32 or /128 prefix, or null when `a` is not an address literal. */
export function parseAddress(a: string): Prefix | null {
  if (isIpv4(a)) return { family: "ipv4", value: ipv4Value(a), len: 32 };
  const g = ipv6Groups(a);
  if (g === null) return null;
  return { family: "ipv6", value: g.reduce((n, x) => n * 65536n + BigInt(x), 0n), len: 128 };
}

/** "a/len" in either family (a bare address is a host prefix), or null. */
export function parsePrefix(cidr: string): Prefix | null {
  const [addr, lenText, ...rest] = cidr.split("/");
  if (addr === undefined || rest.length > 0) return null;
  const p = parseAddress(addr);
  if (p === null) return null;
  if (lenText === undefined) return p;
  if (!/^\d{1,3}$/.test(lenText)) return null;
  const len = Number(lenText);
  if (len > BITS[p.family]) return null;
  return { ...p, len };
}

function network(p: Prefix, len: number): bigint {
  const shift = BigInt(BITS[p.family] - len);
  return (p.value >> shift) << shift;
}

/** Whether prefix `outer` contains all of `inner` (same family only). */
export function prefixCovers(outer: Prefix, inner: Prefix): boolean {
  return (
    outer.family === inner.family && outer.len <= inner.len && network(outer, outer.len) === network(inner, outer.len)
  );
}

/** Whether the two prefixes share at least one address. */
export function prefixesOverlap(a: Prefix, b: Prefix): boolean {
  return prefixCovers(a, b) || prefixCovers(b, a);
}

/** The IPv4 address an IPv6 one stands for (IPv4-mapped or NAT64 well-known prefix), or null. */
export function embeddedIpv4(p: Prefix): Prefix | null {
  if (p.family !== "ipv6") return null;
  const high = p.value >> 32n;
  const mapped = high === 0xffffn; // ::ffff:0:0/96
  const nat64 = high === 0x0064ff9b0000000000000000n; // 64:ff9b::/96
  return mapped || nat64 ? { family: "ipv4", value: p.value & 0xffffffffn, len: 32 } : null;
}

interface SpecialRange {
  prefix: Prefix;
  reason: string;
}

function range(cidr: string, reason: string): SpecialRange {
  const prefix = parsePrefix(cidr);
  if (prefix === null) throw new Error(`bad built-in prefix ${cidr}`); // a bug
  return { prefix, reason };
}

/**
 * Ranges no gateway or resolver on the underlay can legitimately be in: each would aim an allowance, a throw or
 * every lookup at the machine itself, its link, a group, or nowhere. Most specific first.
 */
const SPECIAL_RANGES: readonly SpecialRange[] = [
  range("255.255.255.255/32", "the limited broadcast address"),
  range("0.0.0.0/8", "unspecified (0.0.0.0/8, this host on this network)"),
  range("127.0.0.0/8", "loopback"),
  range("169.254.0.0/16", "link-local"),
  range("224.0.0.0/4", "multicast"),
  range("240.0.0.0/4", "reserved (240.0.0.0/4)"),
  range("::/128", "unspecified"),
  range("::1/128", "loopback"),
  range("fe80::/10", "link-local"),
  range("fec0::/10", "site-local (deprecated)"),
  range("ff00::/8", "multicast"),
  range("::/96", "IPv4-compatible (deprecated)"),
];

/** Why `a` can never be a remote host on the underlay (loopback, link-local, multicast, ...), or null. */
export function specialUseReason(a: string): string | null {
  const p = parseAddress(a);
  if (p === null) return "not an IP address";
  for (const r of SPECIAL_RANGES) if (prefixCovers(r.prefix, p)) return r.reason;
  const v4 = embeddedIpv4(p);
  if (v4 !== null) {
    for (const r of SPECIAL_RANGES) if (prefixCovers(r.prefix, v4)) return `${r.reason} (carried in IPv6)`;
  }
  return null;
}

/** The first of `prefixes` that contains `p` (or the IPv4 address it carries), or undefined. */
function coveringPrefix(p: Prefix, prefixes: readonly string[]): string | undefined {
  const v4 = embeddedIpv4(p);
  return prefixes.find((text) => {
    const q = parsePrefix(text);
    return q !== null && (prefixCovers(q, p) || (v4 !== null && prefixCovers(q, v4)));
  });
}

export interface AddressContext {
  /** The configured protected networks (and anything else that only travels inside a tunnel). */
  protectedNetworks: readonly string[];
  /** The client's own networks on the underlay: the prefixes of its connected routes / addresses. */
  localNetworks: readonly string[];
}

/**
 * Why a gateway address learned from DNS or the portal must not be used, or null when it may. Refused: special
 * use, inside a protected network (an allowance there is a hole to an intranet host), or inside the client's own
 * local network (a hostile resolver pointing the kill switch's allowances at the LAN's hosts). A full tunnel's
 * 0.0.0.0/0 is not an intranet: it would refuse every gateway, and its gateways are thrown out of the tunnel.
 */
export function gatewayAddressRefusal(a: string, ctx: AddressContext): string | null {
  const special = specialUseReason(a);
  if (special !== null) return special;
  const p = parseAddress(a);
  if (p === null) return "not an IP address";
  // A full tunnel's 0.0.0.0/0 names no intranet (it would refuse every gateway); its other networks still count.
  const prot = coveringPrefix(
    p,
    ctx.protectedNetworks.filter((n) => parsePrefix(n)?.len !== 0),
  );
  if (prot !== undefined) return `inside the protected network ${prot}`;
  const local = coveringPrefix(p, ctx.localNetworks);
  if (local !== undefined) return `inside the local network ${local}`;
  return null;
}

/**
 * Why a resolver a gateway pushed must not be used, or null when it may (it is then routed through the tunnel
 * and protected). Refused: special use (loopback would answer from the machine itself, outside any tunnel), a
 * gateway's own address (its route cannot go through the tunnel it carries), or an IPv6 resolver (the tunnels
 * carry IPv4 only, so it would be asked in clear).
 */
export function pushedDnsRefusal(a: string, gatewayAddresses: readonly string[]): string | null {
  const special = specialUseReason(a);
  if (special !== null) return special;
  const p = parseAddress(a);
  if (p === null) return "not an IP address";
  if (p.family !== "ipv4") return "an IPv6 resolver: the tunnels carry IPv4 only, so it would be asked in clear";
  if (coveringPrefix(p, gatewayAddresses) !== undefined)
    return "a gateway's own address: it cannot be reached through the tunnel it carries";
  return null;
}
