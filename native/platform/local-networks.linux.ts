/** The device's own networks, as `ip -j address` lists them: the prefix of every address but loopback's. */
import { ipArgs } from "./ip.linux.ts";
import { run } from "./run.ts";

interface AddrInfo {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}

interface Link {
  ifname?: string;
  addr_info?: AddrInfo[];
}

/** The address prefixes in `ip -j address` output (the address with its prefix length; host bits kept). */
export function parseLocalNetworks(json: string): { dev: string; prefix: string }[] {
  const parsed: unknown = JSON.parse(json);
  if (!Array.isArray(parsed)) throw new Error("ip -j address: expected a list");
  const out: { dev: string; prefix: string }[] = [];
  for (const link of parsed as Link[]) {
    const dev = link.ifname ?? "";
    for (const a of link.addr_info ?? []) {
      if (a.scope === "host" || a.local === undefined || a.prefixlen === undefined) continue;
      if (a.family !== "inet" && a.family !== "inet6") continue;
      out.push({ dev, prefix: `${a.local}/${String(a.prefixlen)}` });
    }
  }
  return out;
}

/** Reads the networks of the namespace detourd runs in; rejects when `ip` fails (the caller fails closed). */
export async function localNetworks(netns?: string): Promise<{ dev: string; prefix: string }[]> {
  const r = await run("ip", ipArgs(netns, ["-j", "address", "show"]));
  if (r.code !== 0) throw new Error(`ip address show failed: ${r.stderr.trim() || `exit ${String(r.code)}`}`);
  return parseLocalNetworks(r.stdout);
}
