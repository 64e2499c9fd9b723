/** Network devices through iproute2: existence, counters, addresses. Works in another namespace with `-n`. */
import { readFileSync } from "node:fs";
import { run, runOk } from "./run.ts";
import { ipArgs } from "./ip.linux.ts";

/**
 * Whether the device exists. In the daemon's own namespace this reads /proc/self/net/dev (the calling thread's
 * namespace, whatever /sys shows) instead of starting `ip`: a connect polls for a new device, and every `ip`
 * process costs ~10 ms on a small machine. Another namespace, or no /proc, asks iproute2.
 */
export async function linkExists(ifname: string, netns?: string): Promise<boolean> {
  if (netns === undefined) {
    const own = devicesHere();
    if (own !== null) return own.has(ifname);
  }
  return (await run("ip", ipArgs(netns, ["link", "show", "dev", ifname]))).code === 0;
}

/** Device names in /proc/self/net/dev ("  name: counters..." after two header lines); null if unreadable. */
export function devicesHere(): Set<string> | null {
  let text: string;
  try {
    text = readFileSync("/proc/self/net/dev", "utf8");
  } catch {
    return null;
  }
  return parseNetDev(text);
}

/** The device names of a /proc/net/dev text (exported for tests). */
export function parseNetDev(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon > 0) names.add(line.slice(0, colon).trim());
  }
  return names;
}

export interface LinkCounters {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
}

interface IpLinkJson {
  stats64?: { rx?: { bytes?: number; packets?: number }; tx?: { bytes?: number; packets?: number } };
}

/** A Linux interface name (IFNAMSIZ, no slash or whitespace): the only thing put into a sysfs path here. */
const IFNAME = /^(?!\.{1,2}$)[A-Za-z0-9_.:-]{1,15}$/;

/**
 * The device's counters from sysfs, in the daemon's own namespace: four small reads instead of an `ip` process
 * (a fork, two pipes and a SIGCHLD each time telemetry samples the tunnel; issue 17's idle wake-ups). Null when the
 * device or its statistics are not there.
 */
export function sysfsLinkCounters(ifname: string, root = "/sys/class/net"): LinkCounters | null {
  if (!IFNAME.test(ifname)) return null;
  const read = (name: string): number | null => {
    try {
      const n = Number(readFileSync(`${root}/${ifname}/statistics/${name}`, "utf8").trim());
      return Number.isSafeInteger(n) && n >= 0 ? n : null;
    } catch {
      return null;
    }
  };
  const rxBytes = read("rx_bytes");
  const txBytes = read("tx_bytes");
  const rxPackets = read("rx_packets");
  const txPackets = read("tx_packets");
  if (rxBytes === null || txBytes === null || rxPackets === null || txPackets === null) return null;
  return { rxBytes, txBytes, rxPackets, txPackets };
}

/**
 * The device's own counters: the same source for every engine, since all three use a TUN device. In the daemon's
 * namespace from sysfs; in another one (engines started elsewhere, tests) through `ip -s link`.
 */
export async function linkCounters(ifname: string, netns?: string): Promise<LinkCounters | null> {
  if (netns === undefined) {
    const c = sysfsLinkCounters(ifname);
    if (c !== null) return c;
  }
  const r = await run("ip", ipArgs(netns, ["-j", "-s", "link", "show", "dev", ifname]));
  if (r.code !== 0) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.stdout);
  } catch {
    return null;
  }
  const link = Array.isArray(parsed) ? (parsed[0] as IpLinkJson | undefined) : undefined;
  const s = link?.stats64;
  if (s === undefined) return null;
  return {
    rxBytes: s.rx?.bytes ?? 0,
    txBytes: s.tx?.bytes ?? 0,
    rxPackets: s.rx?.packets ?? 0,
    txPackets: s.tx?.packets ?? 0,
  };
}

export async function addAddress(ifname: string, cidr: string, netns?: string): Promise<void> {
  await runOk("ip", ipArgs(netns, ["addr", "replace", cidr, "dev", ifname]));
}

/**
 * Gives the device its address and brings it up with the MTU in one iproute2 run (the two steps every tunnel
 * device needs before it carries traffic; one process instead of two is ~10 ms off every connect).
 */
export async function configureLink(ifname: string, cidr: string, mtu: number | null, netns?: string): Promise<void> {
  if (/[\s;]/.test(ifname) || /[\s;]/.test(cidr))
    throw new Error(`configureLink: bad device or address: ${JSON.stringify({ ifname, cidr })}`);
  const batch = `addr replace ${cidr} dev ${ifname}\nlink set dev ${ifname}${mtu === null ? "" : ` mtu ${String(mtu)}`} up\n`;
  await runOk("ip", ipArgs(netns, ["-batch", "-"]), { input: batch });
}

export async function setLinkUp(ifname: string, mtu: number | null, netns?: string): Promise<void> {
  await runOk("ip", ipArgs(netns, ["link", "set", "dev", ifname, ...(mtu === null ? [] : ["mtu", String(mtu)]), "up"]));
}

/** IPv4 prefixes on the device, e.g. ["198.19.12.10/32"]. */
export async function linkAddresses(ifname: string, netns?: string): Promise<string[]> {
  const r = await run("ip", ipArgs(netns, ["-j", "-4", "addr", "show", "dev", ifname]));
  if (r.code !== 0) return [];
  try {
    const parsed = JSON.parse(r.stdout) as { addr_info?: { local?: string; prefixlen?: number }[] }[];
    return (parsed[0]?.addr_info ?? []).flatMap((a) =>
      a.local === undefined ? [] : [`${a.local}/${String(a.prefixlen ?? 32)}`],
    );
  } catch {
    return [];
  }
}
