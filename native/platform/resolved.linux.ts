/**
 * The tunnel's DNS through systemd-resolved: per-link servers and routing domains on the tunnel device, set and
 * reverted through resolved's D-Bus API (org.freedesktop.resolve1.Manager) with `busctl`, the bus client that ships
 * with systemd wherever resolved runs. busctl rather than a D-Bus library: no new dependency in the root daemon, each
 * call is a bounded child process that cannot wedge the daemon's event loop, and its argv is plain data (no shell).
 * The bus is the system bus, or DBUS_SYSTEM_BUS_ADDRESS's (the lab's private one).
 */
import { lstatSync, readFileSync, readlinkSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { ipFamily, ipv6Groups } from "../../main/core/ip-address.ts";
import type { LinkDns } from "../../main/core/dns-link.ts";
import { CommandError, run } from "./run.ts";

/** resolv.conf as resolved manages it is a symbolic link into this folder (stub-resolv.conf, resolv.conf). */
export const RESOLVED_RUN_DIR = "/run/systemd/resolve/";
/** resolved answers in milliseconds; a call this slow means it is hung or the bus is, and the step fails. */
export const RESOLVED_CALL_TIMEOUT_MS = 3000;

const SERVICE = "org.freedesktop.resolve1";
const MANAGER_PATH = "/org/freedesktop/resolve1";
const MANAGER = "org.freedesktop.resolve1.Manager";
const LINK = "org.freedesktop.resolve1.Link";
const AF_INET = 2;
const AF_INET6 = 10;
/** A routing domain is a host name or "." (every name); busctl reads its arguments, so nothing else passes. */
const DOMAIN_RE = /^(\.|(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)$/i;
const IFNAME_RE = /^[A-Za-z0-9._-]{1,15}$/;

export class ResolvedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ResolvedError";
  }
}

/** The bytes of an address as resolved's `(iay)` takes it. */
function addressArgs(a: string): string[] {
  const fam = ipFamily(a);
  if (fam === "ipv4") return [String(AF_INET), "4", ...a.split(".")];
  const g = fam === "ipv6" ? ipv6Groups(a) : null;
  if (g === null) throw new ResolvedError(`not an IP address: ${a.slice(0, 60)}`);
  return [String(AF_INET6), "16", ...g.flatMap((x) => [String(x >> 8), String(x & 0xff)])];
}

/** The busctl `call` arguments (after the method name) that put `l` on link `ifindex`, in order. */
export function setLinkCalls(ifindex: number, l: LinkDns): { method: string; args: string[] }[] {
  if (!Number.isInteger(ifindex) || ifindex <= 0) throw new ResolvedError(`not an interface index: ${String(ifindex)}`);
  const bad = l.domains.find((d) => !DOMAIN_RE.test(d.name));
  if (bad !== undefined) throw new ResolvedError(`not a domain name: ${bad.name.slice(0, 60)}`);
  const idx = String(ifindex);
  return [
    { method: "SetLinkDNS", args: ["ia(iay)", idx, String(l.servers.length), ...l.servers.flatMap(addressArgs)] },
    {
      method: "SetLinkDomains",
      args: ["ia(sb)", idx, String(l.domains.length), ...l.domains.flatMap((d) => [d.name, String(d.routeOnly)])],
    },
    { method: "SetLinkDefaultRoute", args: ["ib", idx, String(l.defaultRoute)] },
  ];
}

/** Reads busctl's `--json=short get-property` lines for DNS, Domains and DefaultRoute. */
export function parseLinkProperties(stdout: string): LinkDns {
  const lines = stdout
    .split("\n")
    .map((x) => x.trim())
    .filter((x) => x !== "");
  if (lines.length !== 3)
    throw new ResolvedError(`expected three properties from resolved, got ${String(lines.length)}`);
  const [dns, domains, def] = lines.map((x) => (JSON.parse(x) as { data: unknown }).data);
  const servers: string[] = [];
  for (const entry of Array.isArray(dns) ? (dns as unknown[]) : []) {
    const [fam, bytes] = entry as [number, number[]];
    if (fam === AF_INET && bytes.length === 4) servers.push(bytes.join("."));
    else if (fam === AF_INET6 && bytes.length === 16) {
      const groups = [];
      for (let i = 0; i < 16; i += 2) groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
      servers.push(groups.join(":"));
    }
  }
  const doms = (Array.isArray(domains) ? (domains as [string, boolean][]) : []).map(([name, routeOnly]) => ({
    name,
    routeOnly,
  }));
  return { servers, domains: doms, defaultRoute: def === true };
}

async function busctl(args: readonly string[]): Promise<string> {
  const argv = ["--system", `--timeout=${String(RESOLVED_CALL_TIMEOUT_MS / 1000)}`, ...args];
  const r = await run("busctl", argv, { timeoutMs: RESOLVED_CALL_TIMEOUT_MS + 1000 });
  if (r.code !== 0) throw new ResolvedError(new CommandError(["busctl", ...argv], r).message);
  return r.stdout;
}

/** A device's index, or null when there is no such device (in this network namespace). */
export function ifindexOf(ifname: string): number | null {
  if (!IFNAME_RE.test(ifname) || ifname === "." || ifname === "..")
    throw new ResolvedError(`not an interface name: ${ifname}`);
  try {
    const n = Number(readFileSync(`/sys/class/net/${ifname}/ifindex`, "utf8").trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

function requireIndex(ifname: string): number {
  const idx = ifindexOf(ifname);
  if (idx === null) throw new ResolvedError(`device ${ifname} does not exist; resolved cannot hold its DNS`);
  return idx;
}

/** Whether `path` (the host's resolv.conf) is resolved's: a symbolic link into RESOLVED_RUN_DIR. */
export function resolvConfIsResolveds(path: string): boolean {
  try {
    if (!lstatSync(path).isSymbolicLink()) return false;
    return resolve(dirname(path), readlinkSync(path)).startsWith(RESOLVED_RUN_DIR);
  } catch {
    return false;
  }
}

/**
 * Which backend the host's DNS needs: "resolved" when resolv.conf is resolved's and resolved answers on the bus,
 * "resolv.conf" otherwise. Throws when resolv.conf is resolved's but resolved does not answer (nothing could
 * take the tunnel's resolvers: the caller reports it).
 */
export async function dnsBackend(resolvConf: string): Promise<"resolved" | "resolv.conf"> {
  if (!resolvConfIsResolveds(resolvConf)) return "resolv.conf";
  try {
    await busctl(["call", SERVICE, MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping"]);
  } catch (err) {
    throw new ResolvedError(
      `${resolvConf} is systemd-resolved's but resolved does not answer on the bus: ${(err as Error).message}`,
    );
  }
  return "resolved";
}

/** Puts `l` on the device's link in resolved (servers, then domains, then the default route); safe to repeat. */
export async function applyLinkDns(ifname: string, l: LinkDns): Promise<void> {
  for (const c of setLinkCalls(requireIndex(ifname), l))
    await busctl(["call", SERVICE, MANAGER_PATH, MANAGER, c.method, ...c.args]);
}

/**
 * resolved's refusal of a link it does not track: a device being removed (resolved drops the link and its settings
 * on the kernel's RTM_DELLINK, a moment before /sys/class/net forgets the device), so nothing of it is left there.
 */
export function isUnknownLinkError(message: string): boolean {
  return /\bLink \d+ not known\b/.test(message);
}

/** Drops everything detourd set on the device's link; false when the device is gone (resolved forgot it then). */
export async function revertLinkDns(ifname: string): Promise<boolean> {
  const idx = ifindexOf(ifname);
  if (idx === null) return false;
  try {
    await busctl(["call", SERVICE, MANAGER_PATH, MANAGER, "RevertLink", "i", String(idx)]);
  } catch (err) {
    // A disconnect reverts while the engine's device is going away: resolved forgot the link with its settings.
    if (err instanceof ResolvedError && isUnknownLinkError(err.message)) return false;
    throw err;
  }
  return true;
}

/** What resolved holds for the device's link now; null when the device is gone. */
export async function readLinkDns(ifname: string): Promise<LinkDns | null> {
  const idx = ifindexOf(ifname);
  if (idx === null) return null;
  const out = await busctl(["call", SERVICE, MANAGER_PATH, MANAGER, "GetLink", "i", String(idx)]);
  const m = /^o "(\/org\/freedesktop\/resolve1\/link\/[A-Za-z0-9_]+)"$/.exec(out.trim());
  if (m?.[1] === undefined) throw new ResolvedError(`resolved named no link object for ${ifname}: ${out.slice(0, 80)}`);
  return parseLinkProperties(
    await busctl(["--json=short", "get-property", SERVICE, m[1], LINK, "DNS", "Domains", "DefaultRoute"]),
  );
}
