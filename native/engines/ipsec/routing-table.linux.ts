/**
 * The host state one charon instance leaves in a namespace besides its process: the rules and routes of its
 * private routing table, and its TUN device's address and MTU. Read and removed through iproute2.
 */
import { run } from "../../platform/run.ts";
import { ipArgs, ipJson } from "../../platform/ip.linux.ts";

type Family = "4" | "6";
const FAMILIES: readonly Family[] = ["4", "6"];

export interface TableRule {
  family: Family;
  priority: number;
}

/** Rules that look up `table` (charon adds one per address family at start-up). */
export async function rulesForTable(table: number, netns?: string): Promise<TableRule[]> {
  const out: TableRule[] = [];
  for (const family of FAMILIES) {
    for (const r of await ipJson(netns, [`-${family}`, "rule", "show", "table", String(table)])) {
      const rule = r as { priority?: number; table?: string };
      if (rule.table === String(table) && typeof rule.priority === "number")
        out.push({ family, priority: rule.priority });
    }
  }
  return out;
}

export async function deleteRule(rule: TableRule, table: number, netns?: string): Promise<void> {
  await run(
    "ip",
    ipArgs(netns, [`-${rule.family}`, "rule", "del", "priority", String(rule.priority), "table", String(table)]),
  );
}

/** Routes in `table`, as "dst dev ifname" strings. */
export async function routesInTable(table: number, netns?: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of FAMILIES) {
    for (const r of await ipJson(netns, [`-${family}`, "route", "show", "table", String(table)])) {
      const route = r as { dst?: string; dev?: string };
      out.push(`${route.dst ?? "?"} dev ${route.dev ?? "?"}`);
    }
  }
  return out;
}

export async function flushTable(table: number, netns?: string): Promise<void> {
  for (const family of FAMILIES)
    await run("ip", ipArgs(netns, [`-${family}`, "route", "flush", "table", String(table)]));
}

/** The device that holds an IPv4 address, e.g. the TUN device carrying a virtual IP. */
export async function deviceWithAddress(address: string, netns?: string): Promise<string | null> {
  for (const l of await ipJson(netns, ["-4", "addr", "show"])) {
    const link = l as { ifname?: string; addr_info?: { local?: string }[] };
    if (link.ifname !== undefined && (link.addr_info ?? []).some((a) => a.local === address)) return link.ifname;
  }
  return null;
}

export async function linkMtu(ifname: string, netns?: string): Promise<number | null> {
  const [link] = await ipJson(netns, ["link", "show", "dev", ifname]);
  const mtu = (link as { mtu?: number } | undefined)?.mtu;
  return typeof mtu === "number" ? mtu : null;
}
