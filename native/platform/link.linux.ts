/** Network devices through iproute2: existence, counters, addresses. Works in another namespace with `-n`. */
import { run, runOk } from "./run.ts";
import { ipArgs } from "./ip.linux.ts";

export async function linkExists(ifname: string, netns?: string): Promise<boolean> {
  return (await run("ip", ipArgs(netns, ["link", "show", "dev", ifname]))).code === 0;
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

/** The device's own counters: the same source for every engine, since all three use a TUN device. */
export async function linkCounters(ifname: string, netns?: string): Promise<LinkCounters | null> {
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
  return { rxBytes: s.rx?.bytes ?? 0, txBytes: s.tx?.bytes ?? 0, rxPackets: s.rx?.packets ?? 0, txPackets: s.tx?.packets ?? 0 };
}

export async function addAddress(ifname: string, cidr: string, netns?: string): Promise<void> {
  await runOk("ip", ipArgs(netns, ["addr", "replace", cidr, "dev", ifname]));
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
    return (parsed[0]?.addr_info ?? []).flatMap((a) => (a.local === undefined ? [] : [`${a.local}/${String(a.prefixlen ?? 32)}`]));
  } catch {
    return [];
  }
}
