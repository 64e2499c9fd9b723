/**
 * Identifies the network the device is on, as a client can see it: the link-layer address of the next hop
 * toward the gateways, the address block the network gave us on the path out (the route's source address,
 * /24 for IPv4 and /64 for IPv6, so a new DHCP lease on the same network keeps the key), and the resolvers and
 * search domains it was given. Hashed: the key names a network without storing its addresses.
 *
 * The public address behind a NAT is not part of it: learning it before connecting means asking a server
 * outside the tunnel, which is exactly what a UDP-hostile or captive network makes slow. Two networks that
 * differ only in their public side (the same home router model, MAC and DHCP defaults) share a key; the cost
 * is one race ordered for the wrong network, which still connects.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { ipJson } from "./ip.linux.ts";

export interface NetworkIdInput {
  /** An address beyond the local network (a gateway's): the route to it tells the next hop. */
  towards: string;
  /** The system's resolv.conf; when Detour's is in force, pass the saved original instead. */
  resolvConf: string;
  netns?: string;
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
    const full = address.includes("::") ? [...groups, ...Array<string>(8).fill("0")].slice(0, 4) : address.split(":").slice(0, 4);
    return `${full.map((g) => g.replace(/^0+(?=.)/, "").toLowerCase()).join(":")}::/64`;
  }
  const octets = address.split(".");
  return octets.length === 4 ? `${octets.slice(0, 3).join(".")}.0/24` : "?";
}
interface Neigh {
  lladdr?: string;
}

export async function networkId(input: NetworkIdInput): Promise<string> {
  const route = (await ipJson(input.netns, ["route", "get", input.towards]))[0] as RouteGet | undefined;
  const hop = route?.gateway ?? input.towards;
  const neigh = (await ipJson(input.netns, ["neigh", "show", hop]))[0] as Neigh | undefined;
  const conf = existsSync(input.resolvConf) ? readFileSync(input.resolvConf, "utf8") : "";
  const dns = conf
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => /^(nameserver|search|domain)\s/.test(l))
    .sort()
    .join(";");
  const material = `hop=${neigh?.lladdr ?? `dev:${route?.dev ?? "?"}`}|src=${sourceBlock(route?.prefsrc)}|dns=${dns}`;
  return createHash("sha256").update(material).digest("hex").slice(0, 16);
}
