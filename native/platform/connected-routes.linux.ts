/**
 * The directly connected IPv4 networks of the main table, for local network access (main/core/net/local-networks.ts):
 * only the kernel's own routes of an address (`proto kernel scope link`, no next hop, link not down), each with its
 * device and whether that device is a bridge (by its link kind, or a container bridge's usual name). A route via a
 * router (`10.0.0.0/8 via 192.168.1.1`) is never one of them, whatever it covers.
 */
import { isBridgeName, type ConnectedRoute } from "../../main/core/net/local-networks.ts";
import { ipArgs } from "./ip.linux.ts";
import { run } from "./run.ts";

interface RouteJson {
  dst?: unknown;
  dev?: unknown;
  gateway?: unknown;
  protocol?: unknown;
  scope?: unknown;
  type?: unknown;
  flags?: unknown;
}

function parseList(json: string, what: string): unknown[] {
  if (json.trim() === "") return [];
  const parsed: unknown = JSON.parse(json);
  if (!Array.isArray(parsed)) throw new Error(`${what}: expected a list`);
  return parsed;
}

/**
 * The connected routes in `ip -j -4 route show table main` output; `bridges` names the bridge devices (from
 * `ip -j link show type bridge`). Throws on output that is not a list.
 */
export function parseConnectedRoutes(routesJson: string, bridges: ReadonlySet<string>): ConnectedRoute[] {
  const out: ConnectedRoute[] = [];
  for (const row of parseList(routesJson, "ip -j route") as RouteJson[]) {
    if (typeof row.dst !== "string" || typeof row.dev !== "string" || row.dst === "default") continue;
    if (row.protocol !== "kernel" || row.scope !== "link" || row.gateway !== undefined) continue;
    if (row.type !== undefined && row.type !== "unicast") continue;
    // A link that went down (the laptop left that network) keeps its route, flagged: it is no network to allow.
    if (Array.isArray(row.flags) && row.flags.includes("linkdown")) continue;
    const prefix = row.dst.includes("/") ? row.dst : `${row.dst}/32`;
    out.push({ prefix, dev: row.dev, bridge: bridges.has(row.dev) || isBridgeName(row.dev) });
  }
  return out;
}

/** The bridge device names in `ip -j link show type bridge` output. */
export function parseBridgeNames(linksJson: string): Set<string> {
  const names = new Set<string>();
  for (const l of parseList(linksJson, "ip -j link") as { ifname?: unknown }[])
    if (typeof l.ifname === "string") names.add(l.ifname);
  return names;
}

async function ipOut(netns: string | undefined, args: string[]): Promise<string> {
  const r = await run("ip", ipArgs(netns, args));
  if (r.code !== 0) throw new Error(`ip ${args.join(" ")} failed: ${r.stderr.trim() || `exit ${String(r.code)}`}`);
  return r.stdout;
}

/** Reads the connected routes of the namespace detourd runs in (`netns` for lab tests); rejects when `ip` fails. */
export async function connectedRoutes(netns?: string): Promise<ConnectedRoute[]> {
  const [routes, links] = await Promise.all([
    ipOut(netns, ["-j", "-4", "route", "show", "table", "main"]),
    ipOut(netns, ["-j", "link", "show", "type", "bridge"]),
  ]);
  return parseConnectedRoutes(routes, parseBridgeNames(links));
}
