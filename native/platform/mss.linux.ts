/**
 * Path MTU on Linux: the underlay's MTU toward a gateway (`ip route get`), a tunnel device's MTU, echoes of an exact
 * size with DF set through one device (the black-hole probe), and the TCP MSS clamp on the tunnel devices: one
 * nftables table of detourd's own, replaced atomically, that rewrites the MSS option of SYNs leaving or entering
 * a tunnel device to what the route's MTU allows (`tcp option maxseg size set rt mtu`).
 *
 *   table inet detour_mss
 *     chain postrouting  hook postrouting, priority mangle: SYNs out through a tunnel device (local and forwarded)
 *     chain forward      hook forward, priority mangle: SYNs in from a tunnel device toward a forwarded host
 *
 * The clamp matters for traffic the host forwards (containers, VMs, a shared connection): local sockets already
 * take their MSS from the device's MTU, forwarded hosts announce their own link's.
 */
import { spawn } from "node:child_process";
import { noteChild } from "./child-watch.ts";
import { ipArgs, ipJson } from "./ip.linux.ts";
import { CommandError, inNetns, run, runOk } from "./run.ts";

export const MSS_FAMILY = "inet";
export const MSS_TABLE = "detour_mss";
/** nft answers in milliseconds; past this it is hung. */
const NFT_TIMEOUT_MS = 5000;
/** Linux limits interface names to 15 bytes; names go into nft's language, so only these characters. */
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6_RE = /^[0-9a-fA-F:.]{2,45}$/;
/** The smallest and largest MTU a tunnel device is given (IPv6's minimum link MTU; jumbo frames). */
export const MIN_DEVICE_MTU = 576;
export const MAX_DEVICE_MTU = 9216;

function checkIfname(ifname: string): void {
  if (!IFNAME_RE.test(ifname)) throw new Error(`invalid device name ${JSON.stringify(ifname.slice(0, 40))}`);
}

function checkAddress(address: string): void {
  if (!IPV4_RE.test(address) && !(address.includes(":") && IPV6_RE.test(address)))
    throw new Error(`invalid address ${JSON.stringify(address.slice(0, 60))}`);
}

/** The underlay's MTU toward `address`: the route's own (a PMTU learned or a route's `mtu`), else its device's. */
export interface PathMtu {
  mtu: number;
  dev: string;
  /** Where the figure came from: the route (cache or attribute) or the device. */
  source: "route" | "device";
}

/**
 * `ip route get <address>`: its `mtu` when the route carries one (a learned PMTU, a route attribute), else the
 * outgoing device's MTU. Null when there is no route (offline) or the device vanished meanwhile.
 */
export async function pathMtu(address: string, netns?: string): Promise<PathMtu | null> {
  checkAddress(address);
  const routes = await ipJson(netns, ["route", "get", address]);
  const r = routes[0] as { dev?: unknown; metrics?: unknown } | undefined;
  if (r === undefined || typeof r.dev !== "string") return null;
  const metrics = Array.isArray(r.metrics) ? (r.metrics as unknown[]) : [];
  for (const m of metrics) {
    const v = (m as { mtu?: unknown }).mtu;
    if (typeof v === "number" && v >= MIN_DEVICE_MTU) return { mtu: v, dev: r.dev, source: "route" };
  }
  // iproute2 prints a cached PMTU in the text form only on some versions; the JSON has it as "mtu" or not at all.
  const device = await linkMtuOf(r.dev, netns);
  return device === null ? null : { mtu: device, dev: r.dev, source: "device" };
}

/** A device's MTU, or null when it does not exist. */
export async function linkMtuOf(ifname: string, netns?: string): Promise<number | null> {
  checkIfname(ifname);
  const links = await ipJson(netns, ["link", "show", "dev", ifname]);
  const mtu = (links[0] as { mtu?: unknown } | undefined)?.mtu;
  return typeof mtu === "number" ? mtu : null;
}

/** Sets a tunnel device's MTU. */
export async function setLinkMtu(ifname: string, mtu: number, netns?: string): Promise<void> {
  checkIfname(ifname);
  if (!Number.isInteger(mtu) || mtu < MIN_DEVICE_MTU || mtu > MAX_DEVICE_MTU)
    throw new Error(`MTU ${String(mtu)} is not ${String(MIN_DEVICE_MTU)}-${String(MAX_DEVICE_MTU)}`);
  await runOk("ip", ipArgs(netns, ["link", "set", "dev", ifname, "mtu", String(mtu)]));
}

export interface SizeProbe {
  ifname: string;
  target: string;
  /** The whole IPv4 packet's size: ICMP payload + 28 bytes of headers. */
  size: number;
  /** Echoes sent (any reply is a pass), spaced by `intervalMs`. */
  count: number;
  intervalMs: number;
  /** How long to wait for a reply after the last echo. */
  waitMs: number;
  netns?: string;
  signal?: AbortSignal;
}

/** The IPv4 and ICMP headers around an echo's payload. */
export const ECHO_HEADERS = 28;
/** A reply line of iputils ping. */
const REPLY_RE = /bytes from /;

/**
 * Sends `count` echoes of exactly `size` bytes with DF set (`ping -M do`) through `ifname` and says whether any came
 * back: the echo request crosses the path outbound and its reply, of the same size, inbound, so a pass proves the
 * size both ways. A size the device itself refuses (larger than its MTU) is a failure too.
 */
export function probeSize(p: SizeProbe): Promise<boolean> {
  checkIfname(p.ifname);
  checkAddress(p.target);
  const payload = p.size - ECHO_HEADERS;
  if (!Number.isInteger(payload) || payload < 0 || p.size > MAX_DEVICE_MTU)
    throw new Error(`probe size ${String(p.size)} is not ${String(ECHO_HEADERS)}-${String(MAX_DEVICE_MTU)}`);
  const totalMs = p.intervalMs * Math.max(0, p.count - 1) + p.waitMs;
  const argv = inNetns(p.netns, [
    "ping",
    "-n",
    "-M",
    "do",
    "-s",
    String(payload),
    "-c",
    String(p.count),
    "-i",
    (Math.max(2, p.intervalMs) / 1000).toFixed(3),
    // -w: ping ends on its own even if detourd is killed; the timer below ends it on time.
    "-w",
    String(Math.max(1, Math.ceil(totalMs / 1000))),
    "-I",
    p.ifname,
    p.target,
  ]);
  return new Promise<boolean>((resolve) => {
    if (p.signal?.aborted === true) {
      resolve(false);
      return;
    }
    const [file, ...args] = argv;
    const child = spawn(file, args, {
      stdio: ["ignore", "pipe", "ignore"],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
    });
    const watched = { pid: child.pid ?? -1, argv };
    noteChild("spawned", watched);
    let out = "";
    let settled = false;
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      p.signal?.removeEventListener("abort", onAbort);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      resolve(ok);
    };
    const onAbort = (): void => {
      finish(false);
    };
    p.signal?.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => {
      finish(false);
    }, totalMs);
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      if (out.length < 8192) out += d;
      // The first reply is the verdict: a leg's check costs one round trip, not the whole count.
      if (REPLY_RE.test(out)) finish(true);
    });
    child.on("error", () => {
      finish(false);
    });
    child.on("close", () => {
      noteChild("exited", watched);
      const m = /(\d+) (?:packets )?received/.exec(out);
      finish(REPLY_RE.test(out) || (m !== null && Number(m[1]) > 0));
    });
  });
}

/** A device name, or a prefix of one followed by `*` (nft's wildcard): what the clamp matches. */
const DEVICE_PATTERN_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\*?$/;

/** The clamp table in nft's language for these tunnel devices or `prefix*` patterns (pure); none: an empty table. */
export function renderMssClamp(devices: readonly string[]): string {
  for (const d of devices)
    if (!DEVICE_PATTERN_RE.test(d)) throw new Error(`invalid device pattern ${JSON.stringify(d.slice(0, 40))}`);
  const set = [...new Set(devices)].sort().map((d) => `"${d}"`);
  const rules = (dir: "oifname" | "iifname"): string[] =>
    set.length === 0 ? [] : [`\t\t${dir} { ${set.join(", ")} } tcp flags syn tcp option maxseg size set rt mtu`];
  return [
    `add table ${MSS_FAMILY} ${MSS_TABLE}`,
    `delete table ${MSS_FAMILY} ${MSS_TABLE}`,
    `table ${MSS_FAMILY} ${MSS_TABLE} {`,
    `\tcomment "detour: TCP MSS clamped to the tunnel's MTU"`,
    "\tchain postrouting {",
    "\t\ttype filter hook postrouting priority mangle; policy accept;",
    ...rules("oifname"),
    "\t}",
    "\tchain forward {",
    "\t\ttype filter hook forward priority mangle; policy accept;",
    ...rules("iifname"),
    "\t}",
    "}",
    "",
  ].join("\n");
}

const REMOVE = `add table ${MSS_FAMILY} ${MSS_TABLE}\ndelete table ${MSS_FAMILY} ${MSS_TABLE}\n`;

async function nft(input: string, netns?: string): Promise<void> {
  const argv = inNetns(netns, ["nft", "-f", "-"]);
  const [file, ...rest] = argv;
  const r = await run(file, rest, { input, timeoutMs: NFT_TIMEOUT_MS });
  if (r.code !== 0) throw new CommandError(argv, r);
}

/** Clamps SYNs through these tunnel devices to their route's MTU (one atomic replace); null removes the table. */
export async function applyMssClamp(devices: readonly string[] | null, netns?: string): Promise<void> {
  await nft(devices === null ? REMOVE : renderMssClamp(devices), netns);
}

/** The clamp table as the kernel holds it, or null when it is absent (tests, diagnostics). */
export async function readMssClamp(netns?: string): Promise<string | null> {
  const argv = inNetns(netns, ["nft", "list", "table", MSS_FAMILY, MSS_TABLE]);
  const [file, ...rest] = argv;
  const r = await run(file, rest, { timeoutMs: NFT_TIMEOUT_MS });
  if (r.code === 0) return r.stdout;
  if (/No such file or directory/.test(r.stderr)) return null;
  throw new CommandError(argv, r);
}
