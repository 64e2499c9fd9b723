/**
 * The network monitor's pure part: which lines of `ip monitor link address route` concern the underlay (not
 * detourd's own tunnel devices, routing tables or rules), the path the kernel takes toward the gateways (from
 * `ip -json route get`), and how a new path compares with the last one: changed, gone (offline) or back (online).
 */
import type { NetworkChangeKind, NetworkPath } from "./platform.ts";

/** One line of `ip monitor` (iproute2 prints text there even with -json), reduced to what filtering needs. */
export interface MonitorEvent {
  kind: "link" | "address" | "route";
  dev: string | null;
  /** The routing table a route line names; null for the main table (iproute2 leaves it out) and other kinds. */
  table: string | null;
  deleted: boolean;
}

/** A route line's type keywords that never make a path: the kernel's local and broadcast bookkeeping. */
const NON_PATH_ROUTE = /^(local|broadcast|multicast|anycast|unreachable|prohibit|blackhole|throw|nat)\s/;

/**
 * Parses one line of `ip monitor link address route`; null for continuation lines (they start with white space)
 * and for anything it does not recognise.
 */
export function parseMonitorLine(line: string): MonitorEvent | null {
  if (line === "" || /^\s/.test(line)) return null;
  const deleted = line.startsWith("Deleted ");
  const body = deleted ? line.slice("Deleted ".length) : line;
  // "3: ul0@ul1: <BROADCAST,...> mtu 1500 ..." (a link) and "3: ul0    inet 198.18.0.2/24 ..." (an address)
  const link = /^\d+:\s+([^\s:@]+)(?:@[^\s:]+)?:\s+</.exec(body);
  if (link !== null) return { kind: "link", dev: link[1] ?? null, table: null, deleted };
  const addr = /^\d+:\s+(\S+)\s+inet6?\s/.exec(body);
  if (addr !== null) return { kind: "address", dev: addr[1] ?? null, table: null, deleted };
  if (NON_PATH_ROUTE.test(body)) {
    const table = / table (\S+)/.exec(body)?.[1] ?? null;
    return { kind: "route", dev: / dev (\S+)/.exec(body)?.[1] ?? null, table: table ?? "local", deleted };
  }
  const dev = / dev (\S+)/.exec(body);
  if (dev === null) return null;
  return { kind: "route", dev: dev[1] ?? null, table: / table (\S+)/.exec(body)?.[1] ?? null, deleted };
}

/** detourd's own devices and loopback: their changes are detourd's doing (or nobody's path), never the underlay's. */
export function isOwnOrLoopback(dev: string, ifnamePrefix: string): boolean {
  return dev === "lo" || dev.startsWith(`${ifnamePrefix}-`) || /^ipsec\d+$/.test(dev);
}

/**
 * Whether an event may change the underlay's path: links and addresses of other devices, and routes in the main
 * table (detourd's own tables, kernel-libipsec's 220 and the local table are not the underlay's paths).
 */
export function concernsUnderlay(ev: MonitorEvent, ifnamePrefix: string): boolean {
  if (ev.dev !== null && isOwnOrLoopback(ev.dev, ifnamePrefix)) return false;
  if (ev.kind === "route") return ev.table === null || ev.table === "main";
  return ev.dev !== null;
}

/**
 * The path in one `ip -json route get` answer (an array of one route), or null when it is not an underlay path:
 * no device, or one of detourd's tunnel devices (a full tunnel's route toward a gateway not yet thrown out).
 */
export function pathFromRouteGet(json: unknown, ifnamePrefix: string): NetworkPath | null {
  const first: unknown = Array.isArray(json) ? json[0] : json;
  if (typeof first !== "object" || first === null) return null;
  const r = first as Record<string, unknown>;
  const dev = typeof r.dev === "string" ? r.dev : null;
  if (dev === null || isOwnOrLoopback(dev, ifnamePrefix)) return null;
  const type = typeof r.type === "string" ? r.type : "unicast";
  if (type !== "unicast") return null;
  return {
    dev,
    gateway: typeof r.gateway === "string" ? r.gateway : null,
    source: typeof r.prefsrc === "string" ? r.prefsrc : null,
  };
}

/** The default route in one `ip -json route show default` answer (the lowest metric first), or null. */
export function pathFromDefaultRoutes(json: unknown, ifnamePrefix: string): NetworkPath | null {
  if (!Array.isArray(json)) return null;
  const routes = json
    .filter((r): r is Record<string, unknown> => typeof r === "object" && r !== null)
    .filter((r) => (r.type ?? "unicast") === "unicast" && !(Array.isArray(r.flags) && r.flags.includes("linkdown")))
    .sort((a, b) => (typeof a.metric === "number" ? a.metric : 0) - (typeof b.metric === "number" ? b.metric : 0));
  for (const r of routes) {
    const p = pathFromRouteGet([r], ifnamePrefix);
    if (p !== null) return p;
  }
  return null;
}

export function samePath(a: NetworkPath | null, b: NetworkPath | null): boolean {
  if (a === null || b === null) return a === b;
  return a.dev === b.dev && a.gateway === b.gateway && a.source === b.source;
}

export function describePath(p: NetworkPath | null): string {
  if (p === null) return "no route";
  return `${p.gateway === null ? "" : `via ${p.gateway} `}dev ${p.dev}${p.source === null ? "" : ` from ${p.source}`}`;
}

/**
 * How the path toward the gateways changed: `previous` undefined means nothing was known yet (the first look).
 * Null: nothing a connection cares about.
 */
export function classifyPath(
  previous: NetworkPath | null | undefined,
  next: NetworkPath | null,
): NetworkChangeKind | null {
  if (previous === undefined) return next === null ? "offline" : "online";
  if (previous === null) return next === null ? null : "online";
  if (next === null) return "offline";
  return samePath(previous, next) ? null : "path-changed";
}

/**
 * Collects a burst of events into one look: the look runs once nothing new came for `settleMs`, or `maxMs` after
 * the first event of the burst at the latest (an OS changing address, route and link in one go is one change).
 */
export class Debounce {
  #first: number | null = null;
  #last: number | null = null;

  constructor(
    readonly settleMs: number,
    readonly maxMs: number,
  ) {}

  /** An event at `now`; returns when the look is due. */
  note(now: number): number {
    this.#first ??= now;
    this.#last = now;
    return this.dueAt() ?? now;
  }

  /** When the look is due, or null when nothing is pending. */
  dueAt(): number | null {
    if (this.#first === null || this.#last === null) return null;
    return Math.min(this.#last + this.settleMs, this.#first + this.maxMs);
  }

  /** The look ran (or is about to): a new burst starts with the next event. */
  clear(): void {
    this.#first = null;
    this.#last = null;
  }
}
