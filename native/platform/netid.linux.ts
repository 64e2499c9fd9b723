/**
 * Identifies the network the device is on, as a client can see it: the link-layer address of the next hop
 * toward the gateways, and the resolvers and search domains it was given. Hashed: the key names a network
 * without storing its addresses.
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
  const material = `hop=${neigh?.lladdr ?? `dev:${route?.dev ?? "?"}`}|dns=${dns}`;
  return createHash("sha256").update(material).digest("hex").slice(0, 16);
}
