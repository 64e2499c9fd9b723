/**
 * Identifies the network the device is on, as a client can see it: the link-layer address of the next hop
 * toward the gateways, the address block the network gave us on the path out (the route's source address,
 * /24 for IPv4 and /64 for IPv6, so a new DHCP lease on the same network keeps the key), the resolvers and
 * search domains it was given, and the public-facing path: the router one hop beyond the local one, as a
 * TTL-2 echo toward the gateway reveals it (its "time exceeded", or the gateway's own reply when it is that
 * close). That last part tells apart a travel router carried between hotels (same MAC, same DHCP defaults,
 * itself as the resolver) whose upstream networks differ. Hashed: the key names a network without storing
 * its addresses.
 *
 * The public address behind a NAT is not part of it: learning it before connecting means asking a server
 * outside the tunnel, which is exactly what a UDP-hostile or captive network makes slow. The hop-2 probe is
 * one ICMP echo that waits at most PATH_PROBE_MS; when nothing answers (a network that drops it, or the kill
 * switch while it is in force) the path is left out of the key, and recall then matches on the rest.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { ipJson } from "./ip.linux.ts";
import { inNetns, run } from "./run.ts";

/** The hop-2 probe's whole budget: a connect waits at most ~200 ms for the key, and the probe runs beside the rest. */
export const PATH_PROBE_MS = 150;

export interface NetworkIdInput {
  /** An address beyond the local network (a gateway's): the route to it tells the next hop. */
  towards: string;
  /** The system's resolv.conf; when Detour's is in force, pass the saved original instead. */
  resolvConf: string;
  netns?: string;
  /** Cuts the path probe short (a connect that cannot wait): the key then leaves the path out. */
  signal?: AbortSignal;
}

interface RouteGet {
  gateway?: string;
  dev?: string;
  prefsrc?: string;
}

/** The block a source address belongs to: /24 for IPv4, /64 for IPv6 (what one network hands out). */
export function sourceBlock(address: string | undefined): string {
  if (address === undefined || address === "") return "?";
  if (address.includes(":")) {
    const groups = address.split("::")[0]?.split(":") ?? [];
    const full = address.includes("::")
      ? [...groups, ...Array<string>(8).fill("0")].slice(0, 4)
      : address.split(":").slice(0, 4);
    return `${full.map((g) => g.replace(/^0+(?=.)/, "").toLowerCase()).join(":")}::/64`;
  }
  const octets = address.split(".");
  return octets.length === 4 ? `${octets.slice(0, 3).join(".")}.0/24` : "?";
}
interface Neigh {
  lladdr?: string;
}

/** The address that answered a TTL-2 echo (time exceeded or the echo reply itself) in ping's output, or "?". */
export function hopFromPing(output: string): string {
  const m =
    /^From ([0-9a-fA-F.:]+)(?: icmp_seq=\d+)? Time to live exceeded/m.exec(output) ??
    /^\d+ bytes from ([0-9a-fA-F.:]+?):? icmp_seq=/m.exec(output);
  return m?.[1] ?? "?";
}

/** The router beyond the local one toward `towards` (see the module comment); "?" when nothing answers in time. */
export async function publicPath(towards: string, netns?: string, signal?: AbortSignal): Promise<string> {
  if (signal?.aborted === true) return "?";
  const [file, ...args] = inNetns(netns, ["ping", "-n", "-c", "1", "-t", "2", "-W", "1", towards]);
  const r = await run(file, args, { timeoutMs: PATH_PROBE_MS, ...(signal === undefined ? {} : { signal }) }).catch(
    () => null,
  );
  return r === null ? "?" : hopFromPing(r.stdout);
}

export async function networkId(input: NetworkIdInput): Promise<string> {
  const route = (await ipJson(input.netns, ["route", "get", input.towards]))[0] as RouteGet | undefined;
  const hop = route?.gateway ?? input.towards;
  // The echo goes out through the next hop first, so its link-layer address is resolved (not a stale or
  // missing neighbour entry) by the time it is read.
  const path = await publicPath(input.towards, input.netns, input.signal);
  const neigh = (await ipJson(input.netns, ["neigh", "show", hop]))[0] as Neigh | undefined;
  const conf = existsSync(input.resolvConf) ? readFileSync(input.resolvConf, "utf8") : "";
  const dns = conf
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /^(nameserver|search|domain)\s/.test(l))
    .sort()
    .join(";");
  const material = `hop=${neigh?.lladdr ?? `dev:${route?.dev ?? "?"}`}|src=${sourceBlock(route?.prefsrc)}|dns=${dns}`;
  const local = createHash("sha256").update(material).digest("hex").slice(0, 16);
  // "<local>.<path>" (see core/connection/network-memory.ts): an unanswered probe leaves the path out.
  return path === "?" ? local : `${local}.${createHash("sha256").update(`path=${path}`).digest("hex").slice(0, 8)}`;
}
