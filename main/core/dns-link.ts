/**
 * The tunnel's DNS as a resolver daemon (systemd-resolved) keeps it per link: which servers, which domains are routed
 * to them, and whether they are the default route. Pure: the daemon computes it, native/ puts it on the link.
 */

/** What a resolver daemon holds for one link: its servers and domains (`routeOnly`: resolvectl's "~name"). */
export interface LinkDns {
  servers: string[];
  domains: { name: string; routeOnly: boolean }[];
  /** Whether lookups outside every link's domains may go to this link's servers. */
  defaultRoute: boolean;
}

/**
 * The link settings for the tunnel: "all" routes every name to the tunnel ("~." and the default route), "split" only
 * the routing and search domains (the rest stays with the network's resolvers).
 */
export function linkDnsFor(s: {
  servers: readonly string[];
  searchDomains: readonly string[];
  mode: "all" | "split";
  routingDomains: readonly string[];
}): LinkDns {
  const domains: LinkDns["domains"] = [];
  const add = (name: string, routeOnly: boolean): void => {
    const n = name.toLowerCase().replace(/\.$/, "") || ".";
    if (!domains.some((d) => d.name === n)) domains.push({ name: n, routeOnly });
  };
  for (const d of s.searchDomains) add(d, false);
  for (const d of s.routingDomains) add(d, true);
  if (s.mode === "all") add(".", true);
  return { servers: [...s.servers], domains, defaultRoute: s.mode === "all" };
}

/** resolvectl's spelling of the domains: "name" for a search domain, "~name" for a routing-only one. */
export function domainLabels(l: LinkDns): string[] {
  return l.domains.map((d) => `${d.routeOnly ? "~" : ""}${d.name}`);
}

/** Whether a link holds what detourd put there (servers in order; IPv6 compared by value, domains as a set). */
export function sameLinkDns(a: LinkDns, b: LinkDns, canonical: (ip: string) => string): boolean {
  const key = (l: LinkDns): string =>
    JSON.stringify([l.servers.map(canonical), domainLabels(l).sort(), l.defaultRoute]);
  return key(a) === key(b);
}
