/**
 * The kill switch on Linux: renders main/core/killswitch.ts's rules into one nftables table and applies it as
 * one atomic `nft -f -` transaction that replaces whatever table was there, so every apply states the whole
 * desired state and is safe to repeat.
 *
 * Layout of the table (`inet`, so IPv6 is covered by the same rules; allowances match `ip daddr` or `ip6 daddr`
 * by the address's family, and every drop without an address match drops both families):
 *
 *   set protected4       the protected networks (interval set; 0.0.0.0/0 in full tunnel)
 *   chain output         hook output, priority filter: loopback, tunnel devices and the allowances are
 *                        accepted; protected destinations are dropped; in blocking mode everything else too
 *   chain forward        hook forward, priority filter: the same for routed traffic, without the allowances
 *                        (only this host's engines talk to gateways, only its resolver does discovery) but
 *                        with the allowed local networks (a container reaches the LAN printer too)
 *   chain leak_witness   hook postrouting, after every filter and NAT: counts protected packets that are
 *                        about to leave through neither loopback, a tunnel device nor an allowance. It
 *                        accepts everything; its counter "protected-escaped" must stay 0, and proves it.
 *
 * Every chain has policy accept and every drop is an explicit rule with a counter, for three reasons: each
 * dropped packet is counted under a named purpose (diagnostics tell a blocked leak from a blocked underlay);
 * in blocking mode the last rule drops unconditionally, so the chain fails closed without relying on its
 * policy; and in tunnel-only mode unmatched traffic is not ours to judge, which is what accept means in a
 * base chain (other tables still see the packet, and a drop anywhere is final). Priority filter places the
 * filter chains after any `type route` chain (mangle, -150) that could still change the outgoing device.
 *
 * Counters count since the last apply: replacing the table resets them.
 */
import { isIPv6 } from "node:net";
import type { GatewayEndpoint, KillSwitchRules } from "../../main/core/killswitch.ts";
import { deviceMatches, MIN_LOCAL_PREFIX_LEN } from "../../main/core/net/local-networks.ts";
import { CommandError, inNetns, run } from "./run.ts";

export const KILLSWITCH_FAMILY = "inet";
export const KILLSWITCH_TABLE = "detour_killswitch";
/** After srcnat (100): the witness sees each packet as it leaves, once every other table had its say. */
export const WITNESS_PRIORITY = 300;

/** What a counted rule is for; the first word of its comment. */
export type KillSwitchPurpose =
  | "loopback"
  | "tunnel-device"
  | "gateway-endpoint"
  | "discovery-dns"
  | "own-resolver"
  | "trusted-host"
  | "own-traffic"
  | "underlay-upkeep"
  | "local-network"
  | "protected-outside-tunnel"
  | "underlay-blocked"
  | "protected-escaped";

const PURPOSES: ReadonlySet<string> = new Set<KillSwitchPurpose>([
  "loopback",
  "tunnel-device",
  "gateway-endpoint",
  "discovery-dns",
  "own-resolver",
  "trusted-host",
  "own-traffic",
  "underlay-upkeep",
  "local-network",
  "protected-outside-tunnel",
  "underlay-blocked",
  "protected-escaped",
]);

export interface KillSwitchCounter {
  chain: string;
  purpose: KillSwitchPurpose;
  /** The rest of the comment, e.g. "udp 198.18.1.2:51820" for a gateway endpoint. */
  detail: string;
  packets: number;
  bytes: number;
}

export interface FirewallOptions {
  /** Namespace to act in (lab tests); unset inside detourd, which already runs where its tunnels are. */
  netns?: string;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IFNAME_OR_PATTERN_RE = /^(?:[A-Za-z0-9._-]{1,15}|[A-Za-z0-9._-]{1,14}\*)$/;
const IFNAME_RE = /^[A-Za-z0-9._-]{1,15}$/;
const ENDPOINT_PROTOCOLS: ReadonlySet<string> = new Set(["udp", "tcp"]);

/** Rules are interpolated into nft's language: everything is checked again here, whoever built them. */
function check(rules: KillSwitchRules): void {
  const bad = (what: string, v: unknown): never => {
    throw new Error(`kill switch: invalid ${what} ${JSON.stringify(v)}`);
  };
  for (const p of rules.protectedNetworks) {
    const [addr, len, ...rest] = p.split("/");
    if (
      rest.length > 0 ||
      addr === undefined ||
      !IPV4_RE.test(addr) ||
      len === undefined ||
      !/^\d{1,2}$/.test(len) ||
      Number(len) > 32
    )
      bad("protected network", p);
  }
  for (const d of rules.tunnelDevices) if (!IFNAME_OR_PATTERN_RE.test(d) || d === "lo") bad("tunnel device", d);
  for (const a of [...rules.dnsServers, ...rules.ownResolvers, ...(rules.captiveException?.resolvers ?? [])])
    if (!IPV4_RE.test(a) && !isIPv6(a)) bad("DNS server", a);
  for (const a of [...(rules.checkAddresses ?? []), ...(rules.captiveException?.portalAddresses ?? [])])
    if (!IPV4_RE.test(a) && !isIPv6(a)) bad("captive address", a);
  if (rules.ownGroup !== null && !validGid(rules.ownGroup)) bad("own group id", rules.ownGroup);
  for (const n of rules.localNetworks ?? []) {
    const [addr, len, ...rest] = n.prefix.split("/");
    if (rest.length > 0 || addr === undefined || !IPV4_RE.test(addr) || len === undefined || !/^\d{1,2}$/.test(len))
      bad("local network", n.prefix);
    if (Number(len) < MIN_LOCAL_PREFIX_LEN || Number(len) > 32) bad("local network", n.prefix);
    if (!IFNAME_RE.test(n.dev) || n.dev === "lo") bad("local network device", n.dev);
    if (rules.tunnelDevices.some((t) => deviceMatches(t, n.dev))) bad("local network on a tunnel device", n.dev);
  }
  for (const e of [...rules.gatewayEndpoints, ...rules.trustedHosts]) {
    if (!IPV4_RE.test(e.address) && !isIPv6(e.address)) bad("gateway address", e.address);
    if (!ENDPOINT_PROTOCOLS.has(e.protocol)) bad("endpoint protocol", e.protocol);
    if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535) bad("endpoint port", e.port);
  }
}

/** A group id nft can match with `meta skgid`: 0 (root) would bind nothing to detourd. */
function validGid(g: number): boolean {
  return Number.isInteger(g) && g > 0 && g < 2 ** 32 - 1;
}

/** A rule's match part and its comment; rendered as an accept (filter chains) or a return (the witness). */
interface Allowance {
  match: string;
  comment: string;
}

/** nft's destination match for one address: `ip daddr` or `ip6 daddr` (checked addresses only). */
function daddr(address: string): string {
  return `${isIPv6(address) ? "ip6" : "ip"} daddr ${address}`;
}

/**
 * The match that binds an allowance to detourd and its engines: sockets whose owner's group is detourd's own
 * (detourd switches to it at start, and its engines inherit it). Empty when unbound.
 */
function own(rules: Pick<KillSwitchRules, "ownGroup">): string {
  return rules.ownGroup === null ? "" : `meta skgid ${String(rules.ownGroup)} `;
}

function endpointAllowance(e: GatewayEndpoint, bind: string): Allowance {
  const where = isIPv6(e.address) ? `[${e.address}]:${String(e.port)}` : `${e.address}:${String(e.port)}`;
  return {
    match: `${bind}${daddr(e.address)} ${e.protocol} dport ${String(e.port)}`,
    comment: `gateway-endpoint ${e.protocol} ${where}`,
  };
}

/**
 * The host's own upkeep of its underlay address, limited to what each protocol needs: a DHCPv4 client (port
 * 68, which only root can bind) to a server (67), a DHCPv6 client (546) to the all-servers-and-relays group, and
 * the neighbour/router discovery messages a host sends. The DHCP clients are the system's, not detourd's, so
 * these cannot be bound to detourd's group.
 */
const UPKEEP: readonly Allowance[] = [
  { match: "meta nfproto ipv4 udp sport 68 udp dport 67", comment: "underlay-upkeep dhcpv4" },
  { match: "ip6 daddr ff02::1:2 udp sport 546 udp dport 547", comment: "underlay-upkeep dhcpv6" },
  {
    match: "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }",
    comment: "underlay-upkeep ipv6-nd",
  },
];

/** HTTP and HTTPS to one address (the captive check's and the portal's). */
function web(a: string, bind: string, purpose: string): Allowance {
  return { match: `${bind}${daddr(a)} tcp dport { 80, 443 }`, comment: `${purpose} ${a}` };
}

/** What may leave outside the tunnel devices from this host, in rule order. */
function allowances(rules: KillSwitchRules): Allowance[] {
  const bind = own(rules);
  const dns = (a: string, purpose: string): Allowance => ({
    match: `${bind}${daddr(a)} meta l4proto { tcp, udp } th dport 53`,
    comment: `${purpose} ${a}`,
  });
  return [
    ...rules.gatewayEndpoints.map((e) => endpointAllowance(e, bind)),
    ...rules.dnsServers.map((a) => dns(a, "discovery-dns")),
    ...rules.ownResolvers.map((a) => dns(a, "own-resolver")),
    // A trusted network's pinned TLS host, for detourd's check only (the core leaves out protected ones).
    ...rules.trustedHosts.map((e) => ({
      match: `${bind}${daddr(e.address)} tcp dport ${String(e.port)}`,
      comment: `trusted-host tcp ${isIPv6(e.address) ? `[${e.address}]` : e.address}:${String(e.port)}`,
    })),
    // detourd's own check of the network, and the sign-in exception (any process: the user's browser signs in).
    ...(rules.checkAddresses ?? []).map((a) => web(a, bind, "captive-check")),
    ...(rules.captiveException?.resolvers ?? []).map((a) => ({
      match: `${daddr(a)} meta l4proto { tcp, udp } th dport 53`,
      comment: `captive-dns ${a}`,
    })),
    ...(rules.captiveException?.portalAddresses ?? []).map((a) => web(a, "", "captive-portal")),
    ...(rules.underlayUpkeep ? UPKEEP : []),
  ];
}

function deviceAllowances(rules: KillSwitchRules): Allowance[] {
  return [
    { match: 'oifname "lo"', comment: "loopback" },
    ...rules.tunnelDevices.map((d) => ({ match: `oifname "${d}"`, comment: `tunnel-device ${d}` })),
  ];
}

/** Local network access: each allowed connected network through its own device only (any process, every mode). */
function localAllowances(rules: KillSwitchRules): Allowance[] {
  return (rules.localNetworks ?? []).map((n) => ({
    match: `oifname "${n.dev}" ip daddr ${n.prefix}`,
    comment: `local-network ${n.dev} ${n.prefix}`,
  }));
}

function line(match: string, verdict: string, comment: string): string {
  return `\t\t${match === "" ? "" : `${match} `}counter ${verdict === "" ? "" : `${verdict} `}comment "${comment}"`.trimEnd();
}

/**
 * IKE from detourd's group anywhere but an allowed endpoint, in every mode: with MOBIKE, charon also tries the
 * addresses a gateway announces (ADDITIONAL_IP*_ADDRESS, often its inside ones) when the path to it falters, and
 * those would leave on the underlay toward whatever the network routes there. Only the gateway endpoints above
 * (and the tunnels, loopback, local networks) are accepted first.
 */
function ikeOffGateway(rules: KillSwitchRules): string[] {
  return rules.ownGroup === null
    ? []
    : [line(`meta skgid ${String(rules.ownGroup)} udp dport { 500, 4500 }`, "drop", "ike-off-gateway")];
}

/** The comment of the rule that marks user traffic into a tunnel for `nft monitor` (see tunnelActivity). */
export const TUNNEL_ACTIVITY_MARK = "tunnel-activity";
/**
 * At most this many packets a second are traced: the first packet after a quiet spell is what matters (the
 * probes speed up at once); while traffic flows, one a second keeps them fast, and `nft monitor` prints little.
 */
export const TUNNEL_ACTIVITY_TRACE_PER_S = 1;

/**
 * User traffic into a tunnel, told to detourd without polling: the first packet (then at most one a second) that
 * leaves through a tunnel device and is not detourd's own (its probes run in its group) gets nftrace set, and
 * `nft monitor`, which detourd already runs for the ruleset (firewall-watch.linux.ts), prints its trace. Nothing
 * is traced while the tunnel is idle, so this costs nothing then. First in the chain: it only marks (verdict
 * continue) and must see the packet before any accept. Without detourd's group the probes cannot be told apart,
 * so there is no rule (and detourd keeps probing at the fast pace).
 */
function tunnelActivity(rules: KillSwitchRules): string[] {
  if (rules.ownGroup === null || rules.tunnelDevices.length === 0) return [];
  // One rule per device (a name may be a wildcard, which nft takes in a match but not in every set).
  return rules.tunnelDevices.map(
    (d) =>
      `\t\toifname "${d}" meta skgid != ${String(rules.ownGroup)} limit rate ${String(TUNNEL_ACTIVITY_TRACE_PER_S)}/second burst 1 packets meta nftrace set 1 comment "${TUNNEL_ACTIVITY_MARK}"`,
  );
}

/** The table's definition in nft's language (pure; what `nft list table` shows, give or take formatting). */
export function renderKillSwitch(rules: KillSwitchRules): string {
  check(rules);
  const drops = [
    line("ip daddr @protected4", "drop", "protected-outside-tunnel"),
    ...(rules.blockUnderlay ? [line("", "drop", "underlay-blocked")] : []),
  ];
  const witnessCounts = [
    line("ip daddr @protected4", "", "protected-escaped"),
    // Full tunnel protects everything, and the tunnels carry IPv4 only: IPv6 must not leave at all.
    ...(rules.fullTunnel ? [line("meta nfproto ipv6", "", "protected-escaped")] : []),
  ];
  const own = [...deviceAllowances(rules), ...localAllowances(rules), ...allowances(rules)];
  const elements =
    rules.protectedNetworks.length === 0 ? [] : [`\t\telements = { ${rules.protectedNetworks.join(", ")} }`];
  return [
    `table ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE} {`,
    `\tcomment "detour kill switch: ${rules.mode} (${rules.state})"`,
    "\tset protected4 {",
    "\t\ttype ipv4_addr",
    "\t\tflags interval",
    ...elements,
    "\t}",
    "\tchain output {",
    "\t\ttype filter hook output priority filter; policy accept;",
    ...tunnelActivity(rules),
    ...own.map((a) => line(a.match, "accept", a.comment)),
    ...ikeOffGateway(rules),
    ...drops,
    "\t}",
    "\tchain forward {",
    "\t\ttype filter hook forward priority filter; policy accept;",
    ...[...deviceAllowances(rules).slice(1), ...localAllowances(rules)].map((a) => line(a.match, "accept", a.comment)),
    ...drops,
    "\t}",
    "\tchain leak_witness {",
    `\t\ttype filter hook postrouting priority ${String(WITNESS_PRIORITY)}; policy accept;`,
    ...own.map((a) => `\t\t${a.match} return`),
    ...witnessCounts,
    "\t}",
    "}",
    "",
  ].join("\n");
}

/**
 * The whole transaction: `add` then `delete` makes the delete succeed whether or not the table existed, and
 * the new definition follows in the same batch, so no packet ever sees the table missing or half-built.
 */
export function renderApplyTransaction(rules: KillSwitchRules): string {
  return `add table ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE}\ndelete table ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE}\n${renderKillSwitch(rules)}`;
}

/**
 * The table that goes in when the real one cannot be applied: loopback, the tunnel devices, the host's underlay
 * upkeep and detourd's own traffic (so it can still reach gateways and get out of this state) leave; nothing
 * else does, protected or not. It is built from constants and checked names and numbers only, so nft has
 * nothing in it to refuse: whatever made the real apply fail (a bad address, an unsupported expression), this
 * one still goes in. Invalid devices or group are left out rather than rendered.
 */
export function renderFallbackTransaction(p: { tunnelDevices: readonly string[]; ownGroup: number | null }): string {
  const devices = p.tunnelDevices.filter((d) => IFNAME_OR_PATTERN_RE.test(d) && d !== "lo");
  const tunnels = devices.map((d) => line(`oifname "${d}"`, "accept", `tunnel-device ${d}`));
  const ownTraffic =
    p.ownGroup !== null && validGid(p.ownGroup)
      ? [line(`meta skgid ${String(p.ownGroup)}`, "accept", "own-traffic")]
      : [];
  return [
    renderRemoveTransaction().trimEnd(),
    `table ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE} {`,
    `\tcomment "${FALLBACK_COMMENT}"`,
    "\tchain output {",
    "\t\ttype filter hook output priority filter; policy drop;",
    line('oifname "lo"', "accept", "loopback"),
    ...tunnels,
    ...ownTraffic,
    ...UPKEEP.map((a) => line(a.match, "accept", a.comment)),
    line("", "drop", "underlay-blocked"),
    "\t}",
    "\tchain forward {",
    "\t\ttype filter hook forward priority filter; policy drop;",
    ...tunnels,
    line("", "drop", "underlay-blocked"),
    "\t}",
    "}",
    "",
  ].join("\n");
}

/** The fallback table's comment: `nft list tables` and diagnostics tell it from the real one. */
export const FALLBACK_COMMENT = "detour kill switch: fallback (blocking)";

/** Deletes the table, present or not. */
export function renderRemoveTransaction(): string {
  return `add table ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE}\ndelete table ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE}\n`;
}

async function nft(args: readonly string[], opts: FirewallOptions, input?: string): Promise<string> {
  const argv = inNetns(opts.netns, ["nft", ...args]);
  const [file, ...rest] = argv;
  const r = await run(file, rest, input === undefined ? {} : { input });
  if (r.code !== 0) throw new CommandError(argv, r);
  return r.stdout;
}

/** Puts `rules` in force in one transaction (null: no kill switch, the table is removed). Safe to repeat. */
export async function applyKillSwitch(rules: KillSwitchRules | null, opts: FirewallOptions = {}): Promise<void> {
  if (rules === null) return removeKillSwitch(opts);
  await nft(["-f", "-"], opts, renderApplyTransaction(rules));
}

/** Puts the fallback table in force (renderFallbackTransaction). */
export async function applyKillSwitchFallback(
  p: { tunnelDevices: readonly string[]; ownGroup: number | null },
  opts: FirewallOptions = {},
): Promise<void> {
  await nft(["-f", "-"], opts, renderFallbackTransaction(p));
}

/**
 * The table as the kernel holds it, without counters (`nft -s`), or null when it is missing: two reads are
 * equal exactly when nobody changed the table in between, whatever nft's formatting.
 */
export async function readKillSwitch(opts: FirewallOptions = {}): Promise<string | null> {
  const argv = inNetns(opts.netns, ["nft", "-s", "list", "table", KILLSWITCH_FAMILY, KILLSWITCH_TABLE]);
  const [file, ...rest] = argv;
  const r = await run(file, rest);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return null;
    throw new CommandError(argv, r);
  }
  return r.stdout;
}

/** Removes the kill switch's table; its absence is not an error. */
export async function removeKillSwitch(opts: FirewallOptions = {}): Promise<void> {
  await nft(["-f", "-"], opts, renderRemoveTransaction());
}

/** Every counted rule of the table with its purpose, or null when the kill switch is not in force. */
export async function killSwitchCounters(opts: FirewallOptions = {}): Promise<KillSwitchCounter[] | null> {
  const argv = inNetns(opts.netns, ["nft", "-j", "list", "table", KILLSWITCH_FAMILY, KILLSWITCH_TABLE]);
  const [file, ...rest] = argv;
  const r = await run(file, rest);
  if (r.code !== 0) {
    if (/No such file or directory/.test(r.stderr)) return null;
    throw new CommandError(argv, r);
  }
  return parseCounters(r.stdout);
}

interface NftRule {
  chain?: unknown;
  comment?: unknown;
  expr?: unknown;
}

/** The counted rules in `nft -j list table` output; rules without a known purpose are skipped. */
export function parseCounters(json: string): KillSwitchCounter[] {
  const doc = JSON.parse(json) as { nftables?: unknown };
  if (!Array.isArray(doc.nftables)) throw new Error("nft -j output without an nftables array");
  return doc.nftables.flatMap((item: unknown): KillSwitchCounter[] => {
    const rule = (item as { rule?: NftRule }).rule;
    if (
      rule === undefined ||
      typeof rule.comment !== "string" ||
      typeof rule.chain !== "string" ||
      !Array.isArray(rule.expr)
    )
      return [];
    const [purpose = "", ...detail] = rule.comment.split(" ");
    if (!PURPOSES.has(purpose)) return [];
    const counter = (rule.expr as unknown[])
      .map((e) => (e as { counter?: { packets?: unknown; bytes?: unknown } }).counter)
      .find((c) => c !== undefined);
    if (counter === undefined) return [];
    return [
      {
        chain: rule.chain,
        purpose: purpose as KillSwitchPurpose,
        detail: detail.join(" "),
        packets: typeof counter.packets === "number" ? counter.packets : 0,
        bytes: typeof counter.bytes === "number" ? counter.bytes : 0,
      },
    ];
  });
}

/** Packets counted under `purpose` (in one chain, or all). */
export function countedPackets(
  counters: readonly KillSwitchCounter[],
  purpose: KillSwitchPurpose,
  chain?: string,
): number {
  return counters
    .filter((c) => c.purpose === purpose && (chain === undefined || c.chain === chain))
    .reduce((n, c) => n + c.packets, 0);
}
