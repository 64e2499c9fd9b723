/**
 * The failover drill's block on Linux: one nftables table of its own (never the kill switch's) that drops this
 * host's traffic to and from one gateway's endpoints, both directions, applied and removed as atomic
 * `nft -f -` transactions that are safe to repeat (removing an absent table is not an error).
 *
 *   chain output  hook output, priority filter - 10: drops packets to each endpoint (address, protocol, port)
 *   chain input   hook input, priority filter - 10: drops packets from each endpoint
 *
 * A drop in any base chain is final, so the kill switch's accepts cannot undo the block; the lower priority
 * only makes the drill's counters see the packets first.
 */
import type { GatewayEndpoint } from "../../main/core/killswitch.ts";
import { CommandError, inNetns, run } from "./run.ts";

export const DRILL_FAMILY = "inet";
export const DRILL_TABLE = "detour_drill";
/** nft answers in milliseconds; a drill must never wait long to put the gateway back. */
const NFT_TIMEOUT_MS = 5000;

export interface DrillFirewallOptions {
  /** Namespace to act in (lab tests); unset inside detourd, which already runs where its tunnels are. */
  netns?: string;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** Checked at run time too: endpoints are built from data, and the type alone proves nothing there. */
const PROTOCOLS: ReadonlySet<string> = new Set(["udp", "tcp"]);
const GATEWAY_NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** The endpoints are interpolated into nft's language: checked again here, whoever built them. */
function check(gateway: string, endpoints: readonly GatewayEndpoint[]): void {
  if (!GATEWAY_NAME_RE.test(gateway)) throw new Error(`drill block: invalid gateway name ${JSON.stringify(gateway)}`);
  if (endpoints.length === 0) throw new Error(`drill block: no endpoints of ${gateway} to block`);
  for (const e of endpoints) {
    if (!IPV4_RE.test(e.address)) throw new Error(`drill block: invalid address ${JSON.stringify(e.address)}`);
    if (!PROTOCOLS.has(e.protocol)) throw new Error(`drill block: invalid protocol ${JSON.stringify(e.protocol)}`);
    if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535)
      throw new Error(`drill block: invalid port ${String(e.port)}`);
  }
}

/** The table in nft's language (pure). */
export function renderDrillBlock(gateway: string, endpoints: readonly GatewayEndpoint[]): string {
  check(gateway, endpoints);
  const uniq = [...new Map(endpoints.map((e) => [`${e.protocol} ${e.address}:${String(e.port)}`, e])).entries()].sort(
    ([a], [b]) => a.localeCompare(b),
  );
  const rules = (dir: "daddr" | "saddr", port: "dport" | "sport", what: string): string[] =>
    uniq.map(
      ([key, e]) =>
        `\t\tip ${dir} ${e.address} ${e.protocol} ${port} ${String(e.port)} counter drop comment "drill-block ${what} ${key}"`,
    );
  return [
    `table ${DRILL_FAMILY} ${DRILL_TABLE} {`,
    `\tcomment "detour failover drill: ${gateway} blocked"`,
    "\tchain output {",
    "\t\ttype filter hook output priority filter - 10; policy accept;",
    ...rules("daddr", "dport", "to"),
    "\t}",
    "\tchain input {",
    "\t\ttype filter hook input priority filter - 10; policy accept;",
    ...rules("saddr", "sport", "from"),
    "\t}",
    "}",
    "",
  ].join("\n");
}

const REMOVE = `add table ${DRILL_FAMILY} ${DRILL_TABLE}\ndelete table ${DRILL_FAMILY} ${DRILL_TABLE}\n`;

/** `add` then `delete` succeeds whether or not the table existed; the new one follows in the same batch. */
export function renderDrillApply(gateway: string, endpoints: readonly GatewayEndpoint[]): string {
  return REMOVE + renderDrillBlock(gateway, endpoints);
}

async function nft(opts: DrillFirewallOptions, input: string): Promise<void> {
  const argv = inNetns(opts.netns, ["nft", "-f", "-"]);
  const [file, ...rest] = argv;
  const r = await run(file, rest, { input, timeoutMs: NFT_TIMEOUT_MS });
  if (r.code !== 0) throw new CommandError(argv, r);
}

/** Blocks `gateway`'s endpoints for this host, both directions, in one transaction. Safe to repeat. */
export async function applyDrillBlock(
  gateway: string,
  endpoints: readonly GatewayEndpoint[],
  opts: DrillFirewallOptions = {},
): Promise<void> {
  await nft(opts, renderDrillApply(gateway, endpoints));
}

/** Lifts the block; its absence is not an error. */
export async function removeDrillBlock(opts: DrillFirewallOptions = {}): Promise<void> {
  await nft(opts, REMOVE);
}

/** Whether the drill's table exists (diagnostics, tests). */
export async function drillBlockPresent(opts: DrillFirewallOptions = {}): Promise<boolean> {
  const argv = inNetns(opts.netns, ["nft", "list", "table", DRILL_FAMILY, DRILL_TABLE]);
  const [file, ...rest] = argv;
  const r = await run(file, rest, { timeoutMs: NFT_TIMEOUT_MS });
  if (r.code === 0) return true;
  if (/No such file or directory/.test(r.stderr)) return false;
  throw new CommandError(argv, r);
}
