/**
 * The kill switch's policy: from the connection state and what is being raced or is up, the firewall state
 * Detour wants (native/platform/firewall.*.ts renders and applies it). Pure: the same input always gives the
 * same, normalised rules, so the daemon can compare two results and skip an apply that would change nothing.
 *
 * Semantics, per state:
 *
 *   disconnected            no rules (null), unless lockdown is on; then as "blocking"
 *   resolving | racing |    with lockdown or a full tunnel, "blocking": traffic leaves the underlay only towards
 *   failing-over | error    the gateway endpoints being raced or in use, and to the discovery DNS servers (port
 *                           53); everything else must leave through a tunnel device or loopback; protected
 *                           destinations never leave except through a tunnel device. A split tunnel without
 *                           lockdown is "tunnel-only" here too: only the protected networks are held back, and
 *                           every other application keeps the Internet while Detour connects or retries (a
 *                           gateway outage or a hotel's sign-in page must not take the whole machine offline)
 *   connected               "tunnel-only": protected destinations leave only through tunnel devices (active
 *                           and standbys); other traffic is none of the kill switch's business, unless the
 *                           protected networks include 0.0.0.0/0 (full tunnel): then everything is protected
 *                           and the underlay carries only the gateway endpoints (no discovery DNS)
 *
 * Families: gateway endpoints and discovery resolvers may be IPv4 or IPv6 (a gateway is reached over whichever
 * family its probe chose); the protected networks are IPv4, as the tunnels carry IPv4 only. Blocking drops all
 * other IPv6 too, and a full tunnel lets no IPv6 leave except to a gateway endpoint.
 *
 * Captive networks: wherever the underlay is blocked, detourd's own check of the network (`checkAddresses`: TCP 80
 * and 443, detourd's group only) may leave, and while the user signs in to a captive portal a bounded exception
 * (`captiveException`) lets any process reach the network's resolvers (53) and the portal's addresses (TCP 80 and
 * 443), nothing else. Neither ever opens a protected destination (outside a full tunnel) or a special-use address:
 * those are dropped here, so a hostile portal cannot name an intranet host or loopback as "its" address.
 *
 * Local networks (local network access, core/net/local-networks.ts): in every mode, each allowed connected network
 * may be reached by any process through its own device only; the same prefix through any other device (a tunnel's
 * included, which the routes take care of) is judged as before.
 *
 * Loopback is always allowed. Wherever the underlay is blocked, the host's own upkeep of its underlay address
 * (DHCP, IPv6 neighbour and router discovery) is allowed too: an error state can last for minutes of retry
 * backoff, and a lease that lapses meanwhile leaves nothing for the next attempt to connect over.
 */
import type { ConnectionStateName, LegKind } from "./connection/types.ts";
import { canonicalIp, ipFamily } from "./ip-address.ts";
import type { KillSwitchMode } from "./killswitch-status.ts";
import { specialUseReason } from "./net/address-guard.ts";
import { deviceMatches, MIN_LOCAL_PREFIX_LEN } from "./net/local-networks.ts";

export type EndpointProtocol = "udp" | "tcp";

/** One gateway endpoint a leg talks to over the underlay. */
export interface GatewayEndpoint {
  /** IPv4 or IPv6 (normalised to RFC 5952's spelling). */
  address: string;
  protocol: EndpointProtocol;
  port: number;
}

export interface KillSwitchInput {
  state: ConnectionStateName;
  lockdown: boolean;
  /** IPv4 prefixes; "0.0.0.0/0" among them means full tunnel. */
  protectedNetworks: readonly string[];
  /** The endpoints of every leg being raced or up (active and standbys): see legEndpoints(). */
  gatewayEndpoints: readonly GatewayEndpoint[];
  /**
   * Tunnel devices: exact names, or a prefix followed by "*" for devices whose names are only known once
   * they exist (kernel-libipsec names its own "ipsec<N>"). A leg's engine proves its tunnel with an echo to
   * a protected host through its device before it reports up, so a leg being raced must be covered here.
   */
  tunnelDevices: readonly string[];
  /** Resolvers asked for the gateways' addresses while connecting (UDP and TCP 53); IPv4 or IPv6. */
  dnsServers: readonly string[];
  /**
   * The network's own resolvers (from the resolv.conf that describes the network): detourd's own lookups of
   * gateways by hostname and of the portal go there while the kill switch blocks. Loopback ones are dropped here
   * (loopback is always allowed).
   */
  ownResolvers?: readonly string[];
  /**
   * The pinned TLS hosts of the trusted network rules (TCP): detourd's check of each is allowed on the underlay
   * while blocking, so lockdown does not make every network untrusted. One inside a protected network is never
   * allowed: protected traffic never leaves outside a tunnel, and such a host fails its check instead (closed).
   */
  trustedHosts?: readonly { address: string; port: number }[];
  /**
   * The group id detourd and its engines run as: the underlay allowances (gateway endpoints, discovery and own
   * resolvers) match only sockets of this group, so no other local process can use them. Absent: unbound.
   */
  ownGroup?: number;
  /** Where detourd's captive-network check connects (TCP 80 and 443, detourd's group only); only while blocking. */
  checkAddresses?: readonly string[];
  /** The sign-in exception while the user signs in to a captive portal (captive.ts); absent or null: none. */
  captiveException?: CaptiveExceptionInput | null;
  /**
   * Allowed local networks (core/net/local-networks.ts): each prefix may leave by its own device only, for any
   * process, in every mode. One on a tunnel device, on loopback or wider than MIN_LOCAL_PREFIX_LEN is dropped here.
   */
  localNetworks?: readonly { prefix: string; dev: string }[];
}

/** The narrow hole a captive portal's sign-in needs, for any process (the user's browser). */
export interface CaptiveExceptionInput {
  /** The portal's addresses (from the check's redirect target): TCP 80 and 443. */
  portalAddresses: readonly string[];
  /** The network's resolvers: UDP and TCP 53. */
  resolvers: readonly string[];
}

export type { KillSwitchMode } from "./killswitch-status.ts";
export {
  initialKillSwitchStatus,
  KILL_SWITCH_CHANGES,
  KILL_SWITCH_ENFORCEMENTS,
  type KillSwitchChange,
  type KillSwitchEnforcement,
  type KillSwitchStatus,
} from "./killswitch-status.ts";

/** The desired firewall state, normalised: sorted, without duplicates, prefixes without host bits. */
export interface KillSwitchRules {
  mode: KillSwitchMode;
  /** The state these rules were derived for (diagnostics). */
  state: ConnectionStateName;
  fullTunnel: boolean;
  /** Non-overlapping IPv4 prefixes; exactly ["0.0.0.0/0"] in full tunnel. */
  protectedNetworks: string[];
  tunnelDevices: string[];
  /** Allowed on the underlay in every mode: in tunnel-only mode they matter when a gateway lies in a protected network. */
  gatewayEndpoints: GatewayEndpoint[];
  /** Allowed on the underlay (UDP and TCP 53); empty unless blocking. */
  dnsServers: string[];
  /** The network's own resolvers, allowed like dnsServers (UDP and TCP 53) for detourd's own lookups; empty unless blocking. */
  ownResolvers: string[];
  /** Trusted networks' TLS hosts (TCP), outside the protected networks, allowed like ownResolvers; empty unless blocking. */
  trustedHosts: GatewayEndpoint[];
  /** Gateway endpoints, discovery and own resolvers match only sockets of this group id; null: any process. */
  ownGroup: number | null;
  /** Drop everything that leaves through neither loopback nor a tunnel device and is not allowed above. */
  blockUnderlay: boolean;
  /** Allow DHCPv4, DHCPv6 and IPv6 neighbour/router discovery on the underlay (set wherever blockUnderlay is). */
  underlayUpkeep: boolean;
  /** Present only while blocking with check addresses: TCP 80 and 443 to them, bound to ownGroup. */
  checkAddresses?: string[];
  /** Present only while blocking with an open sign-in exception: for any process, never a protected address. */
  captiveException?: { portalAddresses: string[]; resolvers: string[] };
  /** Present only when local network access allows some: prefix (host bits cleared) and the one device it leaves by. */
  localNetworks?: { prefix: string; dev: string }[];
}

/** The ports of one gateway, per protocol, as the configuration holds them. */
export interface GatewayPorts {
  wireguard?: { port: number };
  ikev2?: { port: number; natTraversalPort: number };
  anyconnect?: { port: number };
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** Linux interface names: at most 15 bytes of [A-Za-z0-9._-]; a pattern is a shorter prefix plus "*". */
const IFNAME_OR_PATTERN_RE = /^(?:[A-Za-z0-9._-]{1,15}|[A-Za-z0-9._-]{1,14}\*)$/;
const IFNAME_RE = /^[A-Za-z0-9._-]{1,15}$/;
/** Loopback is always allowed on its own; as a "tunnel device" it would only blur the rules. */
const LOOPBACK = "lo";
const FULL_TUNNEL = "0.0.0.0/0";
/** Checked at run time too: the daemon builds endpoints from data, and the type alone proves nothing there. */
const ENDPOINT_PROTOCOLS: ReadonlySet<string> = new Set<EndpointProtocol>(["udp", "tcp"]);

/** The endpoints a leg of `kind` uses at `address`. AnyConnect DTLS starts with TLS (CSTP) on TCP, then adds UDP. */
export function legEndpoints(kind: LegKind, address: string, ports: GatewayPorts): GatewayEndpoint[] {
  const need = <T>(p: T | undefined, what: string): T => {
    if (p === undefined) throw new Error(`a ${kind} leg to ${address} needs the gateway's ${what} port`);
    return p;
  };
  switch (kind) {
    case "wireguard":
      return [{ address, protocol: "udp", port: need(ports.wireguard, "WireGuard").port }];
    case "ikev2": {
      const ike = need(ports.ikev2, "IKE");
      return [
        { address, protocol: "udp", port: ike.port },
        { address, protocol: "udp", port: ike.natTraversalPort },
      ];
    }
    case "anyconnect-tls":
      return [{ address, protocol: "tcp", port: need(ports.anyconnect, "AnyConnect").port }];
    case "anyconnect-dtls": {
      const port = need(ports.anyconnect, "AnyConnect").port;
      return [
        { address, protocol: "tcp", port },
        { address, protocol: "udp", port },
      ];
    }
  }
}

/** The kill switch's desired state for `input`, or null when it wants no rules at all. Invalid input throws (a bug). */
export function killSwitchPolicy(input: KillSwitchInput): KillSwitchRules | null {
  const networks = normalisePrefixes(input.protectedNetworks);
  const tunnelDevices = normaliseDevices(input.tunnelDevices);
  const gatewayEndpoints = normaliseEndpoints(input.gatewayEndpoints);
  const dnsServers = normaliseAddresses(input.dnsServers, "DNS server");
  // A resolver already allowed for discovery needs no second rule; loopback ones need none at all.
  const ownResolvers = normaliseAddresses(input.ownResolvers ?? [], "resolver").filter(
    (a) => !dnsServers.includes(a) && !isLoopback(a),
  );
  const ownGroup = input.ownGroup ?? null;
  const trustedHosts = normaliseEndpoints(
    (input.trustedHosts ?? []).map((h) => ({ address: h.address, protocol: "tcp" as const, port: h.port })),
  ).filter((h) => !isLoopback(h.address) && !insideAny(h.address, networks));
  if (ownGroup !== null && !(Number.isInteger(ownGroup) && ownGroup > 0 && ownGroup < 2 ** 32 - 1))
    throw new Error(`invalid own group id ${String(ownGroup)} (a group id other than 0)`);
  const fullTunnel = networks.some((p) => p.len === 0);
  const protectedNetworks = fullTunnel ? [FULL_TUNNEL] : networks.map(formatPrefix);
  const local = normaliseLocalNetworks(input.localNetworks ?? [], tunnelDevices);
  const base = {
    state: input.state,
    fullTunnel,
    protectedNetworks,
    tunnelDevices,
    gatewayEndpoints,
    ownGroup,
    ...(local.length > 0 ? { localNetworks: local } : {}),
  };
  const captive = captiveAllowances(input, networks, fullTunnel);
  // Waiting for a network holds like connecting: the first route must not let protected traffic out in clear.
  switch (input.state) {
    case "disconnected":
      return input.lockdown ? blocking(base, dnsServers, ownResolvers, trustedHosts, captive) : null;
    case "resolving":
    case "racing":
    case "failing-over":
    case "error":
    case "waiting-for-network":
      return input.lockdown || fullTunnel
        ? blocking(base, dnsServers, ownResolvers, trustedHosts, captive)
        : tunnelOnly(base);
    case "connected":
      // Discovery rechecks while connected go through the tunnel (full tunnel) or are not ours to police (split).
      return fullTunnel && ownGroup !== null
        ? {
            ...tunnelOnly(base),
            // Discovery's resolvers are no rule of their own here, so none is left out of the check's.
            ...ownCheck(
              normaliseAddresses(input.ownResolvers ?? [], "resolver").filter((a) => !isLoopback(a)),
              captive,
            ),
          }
        : tunnelOnly(base);
  }
}

/**
 * Protected destinations leave only through the tunnel devices. In a split tunnel the underlay is not ours to
 * police; a full tunnel protects everything, so the underlay carries only the gateway endpoints (and upkeep).
 */
type RulesBase = Omit<
  KillSwitchRules,
  "mode" | "dnsServers" | "ownResolvers" | "trustedHosts" | "blockUnderlay" | "underlayUpkeep"
>;

function tunnelOnly(base: RulesBase): KillSwitchRules {
  return {
    ...base,
    mode: "tunnel-only",
    dnsServers: [],
    ownResolvers: [],
    trustedHosts: [],
    blockUnderlay: base.fullTunnel,
    underlayUpkeep: base.fullTunnel,
  };
}

function blocking(
  base: RulesBase,
  dnsServers: string[],
  ownResolvers: string[],
  trustedHosts: GatewayEndpoint[],
  captive: Pick<KillSwitchRules, "checkAddresses" | "captiveException">,
): KillSwitchRules {
  return {
    ...base,
    mode: "blocking",
    dnsServers,
    ownResolvers,
    trustedHosts,
    blockUnderlay: true,
    underlayUpkeep: true,
    ...captive,
  };
}

/**
 * What a full tunnel that is up still lets detourd's group (never another process: only with an own group) send on
 * the underlay: its captive check (TCP 80/443 to the check host) and the check's lookups with the network's
 * resolvers. A network change is checked at once while connected, bound to the underlay (agent/captive-probe.ts);
 * detourd's other lookups go into the tunnel by its routes, so this opens nothing else. The sign-in exception
 * stays out: a tunnel that is up proves the network open.
 */
function ownCheck(
  ownResolvers: string[],
  captive: Pick<KillSwitchRules, "checkAddresses" | "captiveException">,
): Pick<KillSwitchRules, "ownResolvers" | "checkAddresses"> {
  if (captive.checkAddresses === undefined) return { ownResolvers: [] };
  return { ownResolvers, checkAddresses: captive.checkAddresses };
}

/**
 * The captive allowances, normalised and judged: a protected destination (outside a full tunnel), loopback or
 * another special-use address is dropped, so neither the check nor a portal's answer can open an intranet host.
 * Empty parts are left out, so rules without them compare equal to rules from before they existed.
 */
function captiveAllowances(
  input: KillSwitchInput,
  networks: Prefix[],
  fullTunnel: boolean,
): Pick<KillSwitchRules, "checkAddresses" | "captiveException"> {
  const usable = (a: string): boolean => {
    if (specialUseReason(a) !== null) return false;
    if (fullTunnel || ipFamily(a) !== "ipv4") return true;
    const n = ipv4ToInt(a);
    return !networks.some((p) => n >= p.base && n < p.base + 2 ** (32 - p.len));
  };
  const out: Pick<KillSwitchRules, "checkAddresses" | "captiveException"> = {};
  const check = normaliseAddresses(input.checkAddresses ?? [], "captive check").filter(usable);
  if (check.length > 0) out.checkAddresses = check;
  const ex = input.captiveException;
  if (ex != null) {
    const portalAddresses = normaliseAddresses(ex.portalAddresses, "captive portal").filter(usable);
    const resolvers = normaliseAddresses(ex.resolvers, "captive resolver").filter(usable);
    if (portalAddresses.length > 0 || resolvers.length > 0) out.captiveException = { portalAddresses, resolvers };
  }
  return out;
}

/**
 * Local networks as the kill switch takes them: valid IPv4 prefixes no wider than /MIN_LOCAL_PREFIX_LEN, each on a
 * plain device that is neither loopback nor a tunnel device; sorted, without duplicates. The planner already
 * refused the others and said why; this is the rule set's own guard against a caller that did not.
 */
function normaliseLocalNetworks(
  nets: readonly { prefix: string; dev: string }[],
  tunnelDevices: readonly string[],
): { prefix: string; dev: string }[] {
  const out = new Map<string, { prefix: string; dev: string; p: Prefix }>();
  for (const n of nets) {
    if (!IFNAME_RE.test(n.dev) || n.dev === LOOPBACK) continue;
    if (tunnelDevices.some((t) => deviceMatches(t, n.dev))) continue;
    let p: Prefix;
    try {
      p = parsePrefix(n.prefix);
    } catch {
      continue;
    }
    if (!n.prefix.includes("/") || p.len < MIN_LOCAL_PREFIX_LEN) continue;
    const prefix = formatPrefix(p);
    out.set(`${prefix} ${n.dev}`, { prefix, dev: n.dev, p });
  }
  return [...out.values()]
    .sort((a, b) => a.p.base - b.p.base || a.p.len - b.p.len || a.dev.localeCompare(b.dev))
    .map(({ prefix, dev }) => ({ prefix, dev }));
}

/** 127.0.0.0/8 and ::1 (canonical spelling): always allowed through loopback, never an underlay rule. */
function isLoopback(a: string): boolean {
  return a === "::1" || a.startsWith("127.");
}

interface Prefix {
  base: number;
  len: number;
}

function ipv4ToInt(a: string): number {
  return a.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
}

function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => String(Math.floor(n / 2 ** shift) % 256)).join(".");
}

function parsePrefix(cidr: string): Prefix {
  const [addr, len, ...rest] = cidr.split("/");
  if (
    rest.length > 0 ||
    addr === undefined ||
    !IPV4_RE.test(addr) ||
    len === undefined ||
    !/^\d{1,2}$/.test(len) ||
    Number(len) > 32
  ) {
    throw new Error(`invalid IPv4 prefix ${JSON.stringify(cidr)} (expected e.g. 198.19.0.0/24)`);
  }
  const n = Number(len);
  const size = 2 ** (32 - n);
  // Host bits are dropped: 198.19.0.1/24 protects the same network as 198.19.0.0/24.
  return { base: Math.floor(ipv4ToInt(addr) / size) * size, len: n };
}

function formatPrefix(p: Prefix): string {
  return `${intToIpv4(p.base)}/${String(p.len)}`;
}

function covers(outer: Prefix, inner: Prefix): boolean {
  const size = 2 ** (32 - outer.len);
  return outer.len <= inner.len && Math.floor(inner.base / size) * size === outer.base;
}

/** Whether an address lies in a protected network: any address in full tunnel (IPv6 included), else IPv4 ones inside. */
function insideAny(address: string, networks: readonly Prefix[]): boolean {
  if (networks.some((p) => p.len === 0)) return true;
  if (!IPV4_RE.test(address)) return false;
  const host = { base: ipv4ToInt(address), len: 32 };
  return networks.some((p) => covers(p, host));
}

/** Sorted, host bits cleared, and without prefixes inside another: an nftables interval set refuses overlaps. */
function normalisePrefixes(cidrs: readonly string[]): Prefix[] {
  const sorted = cidrs.map(parsePrefix).sort((a, b) => a.base - b.base || a.len - b.len);
  const out: Prefix[] = [];
  for (const p of sorted) {
    if (!out.some((o) => covers(o, p))) out.push(p);
  }
  return out;
}

function normaliseDevices(names: readonly string[]): string[] {
  for (const n of names) {
    if (!IFNAME_OR_PATTERN_RE.test(n))
      throw new Error(
        `invalid tunnel device ${JSON.stringify(n)} (a Linux interface name, or a prefix followed by "*")`,
      );
    if (n === LOOPBACK) throw new Error(`"${LOOPBACK}" is not a tunnel device (loopback is always allowed)`);
  }
  return [...new Set(names)].sort();
}

function checkAddress(a: string, what: string): void {
  if (!IPV4_RE.test(a)) throw new Error(`invalid ${what} address ${JSON.stringify(a)} (expected IPv4)`);
}

/** An underlay address of either family, in canonical spelling so one address is one rule. */
function checkAnyAddress(a: string, what: string): string {
  if (ipFamily(a) === null) throw new Error(`invalid ${what} address ${JSON.stringify(a)} (expected IPv4 or IPv6)`);
  return canonicalIp(a);
}

/** IPv4 first in numeric order, then IPv6 in text order: any fixed order will do, as long as it is total. */
function compareAddresses(a: string, b: string): number {
  const fa = ipFamily(a);
  const fb = ipFamily(b);
  if (fa !== fb) return fa === "ipv4" ? -1 : 1;
  return fa === "ipv4" ? ipv4ToInt(a) - ipv4ToInt(b) : a < b ? -1 : a > b ? 1 : 0;
}

function normaliseAddresses(addresses: readonly string[], what: string): string[] {
  return [...new Set(addresses.map((a) => checkAnyAddress(a, what)))].sort(compareAddresses);
}

function normaliseEndpoints(endpoints: readonly GatewayEndpoint[]): GatewayEndpoint[] {
  const byKey = new Map<string, GatewayEndpoint>();
  for (const e of endpoints) {
    const address = checkAnyAddress(e.address, "gateway");
    if (!ENDPOINT_PROTOCOLS.has(e.protocol)) throw new Error(`invalid endpoint protocol ${JSON.stringify(e.protocol)}`);
    if (!Number.isInteger(e.port) || e.port < 1 || e.port > 65535)
      throw new Error(`invalid endpoint port ${String(e.port)}`);
    byKey.set(`${address} ${e.protocol} ${String(e.port)}`, { address, protocol: e.protocol, port: e.port });
  }
  return [...byKey.values()].sort(
    (a, b) => compareAddresses(a.address, b.address) || a.protocol.localeCompare(b.protocol) || a.port - b.port,
  );
}

/** Whether `address` falls in one of the (normalised) protected networks. Diagnostics and tests use it. */
export function isProtected(rules: Pick<KillSwitchRules, "protectedNetworks">, address: string): boolean {
  checkAddress(address, "destination");
  const a = ipv4ToInt(address);
  return rules.protectedNetworks.map(parsePrefix).some((p) => a >= p.base && a < p.base + 2 ** (32 - p.len));
}
