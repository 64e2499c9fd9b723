/**
 * IP address literals without node:net (the core is pure): which family a string is, and the canonical
 * (RFC 5952) spelling of an IPv6 address, so two spellings of one gateway address compare equal.
 */

export type IpFamily = "ipv4" | "ipv6";

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HEXTET_RE = /^[0-9A-Fa-f]{1,4}$/;

export function isIpv4(s: string): boolean {
  return IPV4_RE.test(s);
}

/** The eight 16-bit groups of an IPv6 literal, or null. Zone ids ("%eth0") and prefixes are not addresses. */
export function ipv6Groups(s: string): number[] | null {
  if (s.length < 2 || s.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(s)) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string, last: boolean): number[] | null => {
    if (part === "") return [];
    const out: number[] = [];
    const items = part.split(":");
    for (const [i, item] of items.entries()) {
      if (last && i === items.length - 1 && item.includes(".")) {
        // An embedded IPv4 address (::ffff:192.0.2.1) stands for the last two groups.
        if (!IPV4_RE.test(item)) return null;
        const [a = 0, b = 0, c = 0, d = 0] = item.split(".").map(Number);
        out.push(a * 256 + b, c * 256 + d);
      } else if (HEXTET_RE.test(item)) out.push(parseInt(item, 16));
      else return null;
    }
    return out;
  };
  const [head = "", tail] = halves;
  const h = parse(head, tail === undefined);
  const t = tail === undefined ? [] : parse(tail, true);
  if (h === null || t === null) return null;
  if (tail === undefined) return h.length === 8 ? h : null;
  // "::" stands for at least one zero group.
  if (h.length + t.length > 7) return null;
  return [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

export function isIpv6(s: string): boolean {
  return ipv6Groups(s) !== null;
}

/** "ipv4", "ipv6" or null when `s` is not an IP address literal. */
export function ipFamily(s: string): IpFamily | null {
  if (isIpv4(s)) return "ipv4";
  if (isIpv6(s)) return "ipv6";
  return null;
}

/**
 * RFC 5952's spelling of an IPv6 address (lowercase, leading zeros dropped, the longest run of two or more zero
 * groups as "::"); an IPv4 address unchanged. Throws on anything else.
 */
export function canonicalIp(s: string): string {
  if (isIpv4(s)) return s;
  const g = ipv6Groups(s);
  if (g === null) throw new Error(`${JSON.stringify(s)} is not an IP address`);
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i += 1;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j += 1;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j;
  }
  const hex = g.map((n) => n.toString(16));
  if (best.len < 2) return hex.join(":");
  return `${hex.slice(0, best.at).join(":")}::${hex.slice(best.at + best.len).join(":")}`;
}

/** `address:port` for IPv4, `[address]:port` for IPv6 (RFC 3986 host syntax, WireGuard's endpoint syntax). */
export function hostPort(address: string, port: number): string {
  return isIpv6(address) ? `[${address}]:${String(port)}` : `${address}:${String(port)}`;
}
