/**
 * Which networks go through the tunnel: the configured protected networks plus what the gateway pushed, as far as
 * the configuration allows. A gateway is not trusted with the client's routing: a pushed prefix is taken only when
 * it lies inside the configuration's allow-list (by default the protected networks themselves; "0.0.0.0/0" in it
 * lets the gateway push anything, a full tunnel by the configuration's leave), and never when it would capture a
 * gateway's own address (the engines' traffic would then loop into the tunnel it carries). So a split tunnel cannot
 * be turned into a near-full one with 0.0.0.0/1 + 128.0.0.0/1.
 *
 * Resolvers the gateway pushed are used only through the tunnel: each one gets a host route in the plan (so it is
 * in the protected set the kill switch holds to tunnel devices) unless a planned route already covers it, and one
 * that cannot be reached that way (special use, a gateway's own address, IPv6) is dropped with a reason.
 *
 * A configured network may cover gateways (a full tunnel's 0.0.0.0/0 covers them all): it is kept, and every
 * gateway address inside a planned route is listed as a bypass, which the protected table throws back to the
 * routing rules after it (native/platform/routes.linux.ts), so the engines reach their gateways the way they did
 * before the tunnel came up. A configured route that is exactly a gateway's address gives way to its bypass.
 */

import { parsePrefix as parseAnyPrefix, prefixCovers, pushedDnsRefusal } from "../net/address-guard.ts";

function ipv4ToInt(a: string): number | null {
  const parts = a.split(".");
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

interface Prefix {
  base: number;
  len: number;
}

function parsePrefix(cidr: string): Prefix | null {
  const [addr, lenText, ...rest] = cidr.split("/");
  if (addr === undefined || rest.length > 0) return null;
  const base = ipv4ToInt(addr);
  const len = lenText === undefined ? 32 : Number(lenText);
  if (base === null || !Number.isInteger(len) || len < 0 || len > 32) return null;
  return { base, len };
}

function contains(p: Prefix, addr: number): boolean {
  if (p.len === 0) return true;
  const size = 2 ** (32 - p.len);
  return Math.floor(p.base / size) === Math.floor(addr / size);
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => String(Math.floor(n / 2 ** shift) % 256)).join(".");
}

export interface RoutePlan {
  routes: string[];
  /** Gateway addresses inside `routes`, as /32 prefixes in numeric order: kept out of the tunnel. IPv4 only. */
  bypass: string[];
  rejected: { route: string; reason: string }[];
  /** The pushed resolvers that may be used: each is inside `routes`. */
  dns: string[];
  /** The pushed resolvers that must not be used, each with why. */
  rejectedDns: { server: string; reason: string }[];
}

export interface RouteOptions {
  /**
   * Prefixes a pushed route must lie inside to be taken: the configuration's allow-list, or by default the
   * protected networks. ["0.0.0.0/0"] accepts any push (still never one capturing a gateway).
   */
  allowed?: readonly string[];
  /** Resolvers the gateway pushed, to be reached only through the tunnel. */
  pushedDns?: readonly string[];
}

/**
 * The plan for a leg. `gatewayAddresses`: every gateway address known (configured, resolved, from the portal,
 * the endpoints of live legs), either family; IPv6 ones need no bypass, as the protected routes are IPv4 only.
 */
export function routesForLeg(
  protectedRoutes: readonly string[],
  pushed: readonly string[],
  gatewayAddresses: readonly string[],
  opts: RouteOptions = {},
): RoutePlan {
  const allowed = (opts.allowed ?? protectedRoutes)
    .map(parseAnyPrefix)
    .filter((p): p is NonNullable<typeof p> => p?.family === "ipv4");
  const allowedText = (opts.allowed ?? protectedRoutes).join(", ");
  const gws = [...new Set(gatewayAddresses.map(ipv4ToInt).filter((n): n is number => n !== null))].sort(
    (a, b) => a - b,
  );
  const rejected: RoutePlan["rejected"] = [];
  const routes: string[] = [];
  for (const r of protectedRoutes) {
    const p = parsePrefix(r);
    if (p !== null && p.len === 32 && gws.includes(p.base))
      rejected.push({ route: r, reason: "is a gateway's own address: the tunnel would carry itself" });
    else if (!routes.includes(r)) routes.push(r);
  }
  for (const r of pushed) {
    if (routes.includes(r) || protectedRoutes.includes(r)) continue;
    const p = parsePrefix(r);
    const any = parseAnyPrefix(r);
    const inside = any !== null && allowed.some((a) => prefixCovers(a, any));
    if (p === null) rejected.push({ route: r, reason: "not an IPv4 prefix" });
    else if (p.len === 0 && !inside)
      rejected.push({
        route: r,
        reason: "a pushed default route would make a full tunnel; only the configuration may ask for that",
      });
    else if (gws.some((g) => contains(p, g)))
      rejected.push({ route: r, reason: "covers a gateway's own address: the tunnel would carry itself" });
    else if (!inside)
      rejected.push({
        route: r,
        reason: `outside the prefixes the configuration allows gateways to push (${allowedText})`,
      });
    else routes.push(r);
  }
  const dns: string[] = [];
  const rejectedDns: RoutePlan["rejectedDns"] = [];
  for (const server of new Set(opts.pushedDns ?? [])) {
    const reason = pushedDnsRefusal(server, gatewayAddresses);
    if (reason !== null) {
      rejectedDns.push({ server, reason });
      continue;
    }
    dns.push(server);
    const a = ipv4ToInt(server);
    const covered = routes.some((r) => {
      const p = parsePrefix(r);
      return p !== null && a !== null && contains(p, a);
    });
    if (!covered) routes.push(`${server}/32`);
  }
  const planned = routes.map(parsePrefix).filter((p): p is Prefix => p !== null);
  const bypass = gws.filter((g) => planned.some((p) => contains(p, g))).map((g) => `${intToIpv4(g)}/32`);
  return { routes, bypass, rejected, dns, rejectedDns };
}
