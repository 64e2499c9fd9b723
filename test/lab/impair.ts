/**
 * Network impairments, applied in the router namespace (the lab's "internet") on the link of one gateway or on
 * the client's uplink: block (silent drop), reject, random loss, and delay with jitter. The whole set is a
 * desired state rendered to one nftables table (applied atomically) plus NFQUEUE rules served by delayq.
 *
 * The underlay is dual-stack, so every impairment covers both IPv4 and IPv6 unless it names one `family`:
 * the nft table is `inet` (its rules match either family), and delays are queued by iptables and ip6tables.
 * A blocked gateway therefore stays blocked over IPv6, and "IPv4 broken, IPv6 fine" is one impairment.
 *
 * The gateways' distances are not impairments: they are delays on the gateways' own links (distance.ts), in other
 * namespaces, so every impairment here (a delay too) adds to them.
 */
import { join } from "node:path";
import { startDelayq } from "./delayq.ts";
import { run, runOk, stopPids } from "./exec.ts";
import { GATEWAY_NAMES, PORTS, type GatewayName, type LabTopology } from "./topology.ts";

export type ImpairTarget = "client" | GatewayName;
export const IMPAIR_TARGETS: readonly ImpairTarget[] = ["client", ...GATEWAY_NAMES];
/** Which traffic an impairment applies to: one tunnel protocol's ports, a transport, or everything. */
export type ImpairProto = "wireguard" | "ike" | "dtls" | "tls" | "udp" | "tcp" | "all";
export const IMPAIR_PROTOS: readonly ImpairProto[] = ["wireguard", "ike", "dtls", "tls", "udp", "tcp", "all"];
/** `up` is client towards gateway, `down` gateway towards client. */
export type Direction = "both" | "up" | "down";
export const DIRECTIONS: readonly Direction[] = ["both", "up", "down"];

/** Which address family an impairment applies to; absent means both. */
export type ImpairFamily = "ipv4" | "ipv6";
export const IMPAIR_FAMILIES: readonly ImpairFamily[] = ["ipv4", "ipv6"];

interface Base {
  target: ImpairTarget;
  proto: ImpairProto;
  dir: Direction;
  family?: ImpairFamily;
}
export type ImpairmentSpec =
  | (Base & { kind: "block" })
  | (Base & { kind: "reject" })
  | (Base & { kind: "loss"; percent: number })
  | (Base & { kind: "delay"; delayMs: number; jitterMs: number });
export type Impairment = ImpairmentSpec & { id: string; origin?: "kill" };

export const NFT_TABLE = "detour_impair";
const IPT_CHAIN = "DETOUR_DELAY";
const QUEUE_BASE = 100;

export function validateSpec(s: ImpairmentSpec): ImpairmentSpec {
  if (!IMPAIR_TARGETS.includes(s.target))
    throw new Error(`impairment target "${s.target}" is unknown: expected ${IMPAIR_TARGETS.join(", ")}`);
  if (!IMPAIR_PROTOS.includes(s.proto))
    throw new Error(`impairment protocol "${s.proto}" is unknown: expected ${IMPAIR_PROTOS.join(", ")}`);
  if (!DIRECTIONS.includes(s.dir))
    throw new Error(`direction "${s.dir}" is unknown: expected ${DIRECTIONS.join(", ")}`);
  if (s.family !== undefined && !IMPAIR_FAMILIES.includes(s.family))
    throw new Error(`family "${s.family}" is unknown: expected ${IMPAIR_FAMILIES.join(", ")}`);
  if (s.kind === "loss" && !(Number.isFinite(s.percent) && s.percent > 0 && s.percent <= 100)) {
    throw new Error(`loss must be a percentage in (0, 100], got ${String(s.percent)}`);
  }
  if (s.kind === "delay") {
    if (!(Number.isInteger(s.delayMs) && s.delayMs >= 0 && s.delayMs <= 10_000))
      throw new Error(`delay must be whole milliseconds 0-10000, got ${String(s.delayMs)}`);
    if (!(Number.isInteger(s.jitterMs) && s.jitterMs >= 0 && s.jitterMs <= 10_000))
      throw new Error(`jitter must be whole milliseconds 0-10000, got ${String(s.jitterMs)}`);
  }
  return s;
}

function directions(d: Direction): ("up" | "down")[] {
  return d === "both" ? ["up", "down"] : [d];
}

/** Interface match in the router: which link, which way. */
function nftIf(target: ImpairTarget, d: "up" | "down"): string {
  if (target === "client") return d === "up" ? 'iifname "to-client"' : 'oifname "to-client"';
  return d === "up" ? `oifname "to-${target}"` : `iifname "to-${target}"`;
}

function nftProto(p: ImpairProto, d: "up" | "down"): string {
  const port = d === "up" ? "dport" : "sport";
  switch (p) {
    case "wireguard":
      return `udp ${port} ${PORTS.wireguard}`;
    case "ike":
      return `udp ${port} { ${PORTS.ike}, ${PORTS.ikeNatT} }`;
    case "dtls":
      return `udp ${port} ${PORTS.anyconnect}`;
    case "tls":
      return `tcp ${port} ${PORTS.anyconnect}`;
    case "udp":
      return "meta l4proto udp";
    case "tcp":
      return "meta l4proto tcp";
    case "all":
      return "";
  }
}

/** The nftables rules of one impairment (delay has none: it is served through iptables and NFQUEUE). */
export function nftRules(i: Impairment): string[] {
  if (i.kind === "delay") return [];
  return directions(i.dir).map((d) => {
    const family = i.family === undefined ? "" : `meta nfproto ${i.family}`;
    const match = [nftIf(i.target, d), family, nftProto(i.proto, d)].filter((s) => s !== "").join(" ");
    let action: string;
    switch (i.kind) {
      case "block":
        action = "counter drop";
        break;
      case "reject":
        action = i.proto === "tls" || i.proto === "tcp" ? "counter reject with tcp reset" : "counter reject";
        break;
      case "loss":
        action = `numgen random mod 10000 < ${Math.round(i.percent * 100)} counter drop`;
        break;
    }
    return `${match} ${action} comment "${i.id}"`;
  });
}

/** The complete nft script: replaces the lab's table in one atomic transaction. */
export function nftScript(impairments: readonly Impairment[]): string {
  const rules = impairments.flatMap(nftRules);
  return [
    `table inet ${NFT_TABLE}`,
    `delete table inet ${NFT_TABLE}`,
    `table inet ${NFT_TABLE} {`,
    "  chain forward {",
    "    type filter hook forward priority 0; policy accept;",
    ...rules.map((r) => `    ${r}`),
    "  }",
    "}",
    "",
  ].join("\n");
}

function iptProto(p: ImpairProto, d: "up" | "down"): string[] {
  const port = d === "up" ? "--dport" : "--sport";
  switch (p) {
    case "wireguard":
      return ["-p", "udp", port, String(PORTS.wireguard)];
    case "ike":
      return ["-p", "udp", "-m", "multiport", d === "up" ? "--dports" : "--sports", `${PORTS.ike},${PORTS.ikeNatT}`];
    case "dtls":
      return ["-p", "udp", port, String(PORTS.anyconnect)];
    case "tls":
      return ["-p", "tcp", port, String(PORTS.anyconnect)];
    case "udp":
      return ["-p", "udp"];
    case "tcp":
      return ["-p", "tcp"];
    case "all":
      return [];
  }
}

function iptIf(target: ImpairTarget, d: "up" | "down"): string[] {
  if (target === "client") return d === "up" ? ["-i", "to-client"] : ["-o", "to-client"];
  return d === "up" ? ["-o", `to-${target}`] : ["-i", `to-${target}`];
}

/** The iptables flavour per family: IPv4 packets are queued by iptables, IPv6 ones by ip6tables. */
export type IptablesCommand = "iptables" | "ip6tables";
const IPTABLES_OF: Record<ImpairFamily, IptablesCommand> = { ipv4: "iptables", ipv6: "ip6tables" };

export interface DelayPlan {
  impairmentId: string;
  queue: number;
  delayMs: number;
  jitterMs: number;
  /** Argument lists (after `-t mangle -A DETOUR_DELAY`), each for the command it names. */
  rules: { command: IptablesCommand; args: string[] }[];
}

export function delayPlans(impairments: readonly Impairment[]): DelayPlan[] {
  return impairments
    .filter((i): i is Impairment & { kind: "delay" } => i.kind === "delay")
    .map((i, n) => {
      const queue = QUEUE_BASE + n;
      return {
        impairmentId: i.id,
        queue,
        delayMs: i.delayMs,
        jitterMs: i.jitterMs,
        rules: (i.family === undefined ? IMPAIR_FAMILIES : [i.family]).flatMap((f) =>
          directions(i.dir).map((d) => ({
            command: IPTABLES_OF[f],
            args: [
              ...iptIf(i.target, d),
              ...iptProto(i.proto, d),
              "-j",
              "NFQUEUE",
              "--queue-num",
              String(queue),
              "--queue-bypass",
            ],
          })),
        ),
      };
    });
}

/**
 * Makes the router's impairments exactly `impairments`: replaces the nft table, stops the previous delayq
 * processes and starts one per delay. Returns the new delayq PIDs.
 */
export async function applyImpairments(
  topo: LabTopology,
  labDir: string,
  impairments: readonly Impairment[],
  oldDelayqPids: readonly number[],
): Promise<number[]> {
  const ns = topo.router.ns;
  await runOk("ip", ["netns", "exec", ns, "nft", "-f", "-"], { input: nftScript(impairments) });

  const ipt = (command: IptablesCommand, args: string[]): Promise<string> =>
    runOk("ip", ["netns", "exec", ns, command, "-w", "5", "-t", "mangle", ...args]);
  for (const command of Object.values(IPTABLES_OF)) {
    const exists = await run("ip", ["netns", "exec", ns, command, "-w", "5", "-t", "mangle", "-n", "-L", IPT_CHAIN]);
    if (exists.code !== 0) {
      await ipt(command, ["-N", IPT_CHAIN]);
      await ipt(command, ["-A", "FORWARD", "-j", IPT_CHAIN]);
    }
    await ipt(command, ["-F", IPT_CHAIN]);
  }
  await stopPids(oldDelayqPids, "SIGTERM");

  const pids: number[] = [];
  for (const plan of delayPlans(impairments)) {
    pids.push(
      await startDelayq(ns, plan.queue, plan.delayMs, plan.jitterMs, join(labDir, "logs", `delayq-${plan.queue}.log`)),
    );
    for (const r of plan.rules) await ipt(r.command, ["-A", IPT_CHAIN, ...r.args]);
  }
  return pids;
}

/** One line per impairment for status output. */
export function describeImpairment(i: Impairment): string {
  const what =
    i.kind === "loss"
      ? `loss ${i.percent}%`
      : i.kind === "delay"
        ? `delay ${i.delayMs} ms${i.jitterMs > 0 ? ` +0-${i.jitterMs} ms jitter` : ""}`
        : i.kind;
  const family = i.family === undefined ? "" : ` ${i.family} only`;
  return `${i.id}: ${i.target} ${what} ${i.proto}${family} (${i.dir === "both" ? "both ways" : i.dir})${i.origin === "kill" ? " [gateway killed]" : ""}`;
}
