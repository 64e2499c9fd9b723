/**
 * Host facts for a diagnostic bundle: OS, CPU, load and memory from systeminformation, the interfaces, routing
 * tables and rules from `ip -j`, the DNS servers from resolv.conf, and the nftables ruleset. Each fact is bounded
 * in time and a fact that cannot be read is recorded as an error, never a failed bundle. systeminformation is held
 * to the rules in ../telemetry/host-facts.ts: osInfo(), cpu(), currentLoad() and mem(), no argument, each with a
 * timeout; interfaces come from `ip -j address` because its networkInterfaces() blocks the daemon's event loop.
 */
import { readFileSync } from "node:fs";
import si from "systeminformation";
import { run } from "../../../native/platform/run.ts";
import { withTimeout } from "../../shared/with-timeout.ts";

/** systeminformation shells out for some facts (lsb_release, dmidecode); past this a fact is given up. */
export const HOST_FACT_TIMEOUT_MS = 5000;
/** `ip` and `nft` answer from the kernel in milliseconds; this only catches a wedged netlink. */
export const HOST_COMMAND_TIMEOUT_MS = 5000;

type Fact<T> = T | { error: string };

async function fact<T>(what: string, p: () => Promise<T>, ms = HOST_FACT_TIMEOUT_MS): Promise<Fact<T>> {
  try {
    return await withTimeout(p, ms, what);
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}

async function command(argv: readonly string[]): Promise<{ ok: true; stdout: string } | { ok: false; error: string }> {
  const [file, ...args] = argv;
  if (file === undefined) return { ok: false, error: "empty command" };
  const r = await run(file, args, { timeoutMs: HOST_COMMAND_TIMEOUT_MS });
  return r.code === 0
    ? { ok: true, stdout: r.stdout }
    : { ok: false, error: `${argv.join(" ")}: exit ${String(r.code)} ${r.stderr.trim().slice(0, 500)}` };
}

async function ipJson(args: readonly string[]): Promise<unknown> {
  const r = await command(["ip", "-j", ...args]);
  if (!r.ok) return { error: r.error };
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    return { error: `ip ${args.join(" ")} printed no JSON` };
  }
}

export function dnsServers(
  resolvConf: string,
): { path: string; servers: string[]; search: string[] } | { path: string; error: string } {
  let text: string;
  try {
    text = readFileSync(resolvConf, "utf8");
  } catch (e) {
    return { path: resolvConf, error: (e as NodeJS.ErrnoException).code ?? "unreadable" };
  }
  const servers: string[] = [];
  const search: string[] = [];
  for (const line of text.split("\n")) {
    const [key, ...rest] = line.trim().split(/\s+/);
    if (key === "nameserver" && rest[0] !== undefined) servers.push(rest[0]);
    if (key === "search") search.push(...rest);
  }
  return { path: resolvConf, servers, search };
}

interface IpLink {
  ifname?: string;
  flags?: string[];
  operstate?: string;
  mtu?: number;
  address?: string;
  link_type?: string;
  addr_info?: { local?: string; prefixlen?: number }[];
}

/** `ip -j address show` as one record per interface: name, state, MTU, link address and type, addresses. */
export function interfacesOf(ipJsonOut: unknown): unknown {
  if (!Array.isArray(ipJsonOut)) return ipJsonOut;
  return (ipJsonOut as IpLink[]).map((l) => ({
    name: l.ifname ?? null,
    // Administratively up; tunnel devices report their operstate as UNKNOWN, so that is given as it is.
    up: l.flags?.includes("UP") === true,
    state: l.operstate ?? null,
    mtu: l.mtu ?? null,
    mac: l.address ?? null,
    type: l.link_type ?? null,
    addresses: (l.addr_info ?? []).flatMap((a) =>
      a.local === undefined ? [] : [`${a.local}/${String(a.prefixlen ?? "")}`],
    ),
  }));
}

export interface HostFactsBundle {
  host: Record<string, unknown>;
  nftables: string;
}

export async function collectHostFacts(resolvConf: string): Promise<HostFactsBundle> {
  const [os, cpu, load, mem, ifaces, routes4, routes6, rules, nft] = await Promise.all([
    fact("systeminformation osInfo", () => si.osInfo()),
    fact("systeminformation cpu", () => si.cpu()),
    fact("systeminformation currentLoad", () => si.currentLoad()),
    fact("systeminformation mem", () => si.mem()),
    ipJson(["address", "show"]),
    ipJson(["-4", "route", "show", "table", "all"]),
    ipJson(["-6", "route", "show", "table", "all"]),
    ipJson(["rule", "show"]),
    command(["nft", "list", "ruleset"]),
  ]);
  const cpuOut =
    "error" in cpu
      ? cpu
      : {
          manufacturer: cpu.manufacturer,
          brand: cpu.brand,
          cores: cpu.cores,
          physicalCores: cpu.physicalCores,
          speedGHz: cpu.speed,
        };
  const loadOut = "error" in load ? load : { currentLoadPct: load.currentLoad, avgLoad: load.avgLoad };
  return {
    host: {
      os:
        "error" in os
          ? os
          : {
              platform: os.platform,
              distro: os.distro,
              release: os.release,
              kernel: os.kernel,
              arch: os.arch,
              hostname: os.hostname,
            },
      cpu: cpuOut,
      load: loadOut,
      memory:
        "error" in mem
          ? mem
          : {
              totalBytes: mem.total,
              availableBytes: mem.available,
              activeBytes: mem.active,
              swapUsedBytes: mem.swapused,
            },
      interfaces: interfacesOf(ifaces),
      routes: { ipv4: routes4, ipv6: routes6, rules },
      dns: dnsServers(resolvConf),
    },
    nftables: nft.ok ? nft.stdout : `# ${nft.error}\n`,
  };
}
