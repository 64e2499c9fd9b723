/**
 * Which networks go through the tunnel: the configured protected networks plus what the gateway pushed, minus
 * any pushed prefix that would capture the gateways' own addresses (the engines' traffic would then loop into
 * the tunnel it carries) or that is the default route (a full tunnel is a configuration decision, not a push).
 */

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

export interface RoutePlan {
  routes: string[];
  rejected: { route: string; reason: string }[];
}

export function routesForLeg(protectedRoutes: readonly string[], pushed: readonly string[], gatewayAddresses: readonly string[]): RoutePlan {
  const gws = gatewayAddresses.map(ipv4ToInt).filter((n): n is number => n !== null);
  const routes = [...protectedRoutes];
  const rejected: RoutePlan["rejected"] = [];
  for (const r of pushed) {
    if (routes.includes(r)) continue;
    const p = parsePrefix(r);
    if (p === null) rejected.push({ route: r, reason: "not an IPv4 prefix" });
    else if (p.len === 0) rejected.push({ route: r, reason: "a pushed default route would make a full tunnel; only the configuration may ask for that" });
    else if (gws.some((g) => contains(p, g))) rejected.push({ route: r, reason: "covers a gateway's own address: the tunnel would carry itself" });
    else routes.push(r);
  }
  return { routes, rejected };
}
