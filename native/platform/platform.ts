/**
 * What detourd needs of the operating system, as one object per system (linux.ts assembles Linux's): the
 * protected routes and each leg's source routing, DNS, the kill switch and the drill's block, the network's
 * identity, the tunnel engines with the spare wireguard-go, and the network monitor. The daemon is given one and
 * reaches the OS only through it, so a unit test runs the real daemon on a fake one and can make any step fail.
 *
 * Times here are epoch ms (the engines' deadlines): the daemon converts from its monotonic clock at this edge.
 */
import type { GatewayEndpoint, KillSwitchRules } from "../../main/core/killswitch.ts";
import type { LinkDns } from "../../main/core/dns-link.ts";
import type { ConnectedRoute } from "../../main/core/net/local-networks.ts";
import type { EngineSpec, TunnelEngine } from "../engines/engine.ts";

/** One entry of the protected table: a prefix and the device that carries it, or a gateway's throw. */
export interface RouteEntry {
  dst: string;
  /** Empty for a throw. */
  dev: string;
  /** Set for a gateway's bypass (a throw out of the table); absent for a route through a device. */
  type?: "throw";
}

/** A leg's source routing: packets from its tunnel address leave through its device (its monitor's probes). */
export interface LegSource {
  ifname: string;
  /** The leg's tunnel address, without prefix length. */
  address: string;
  table: number;
  pref: number;
}

export interface PlatformRoutes {
  /** Puts the protected rule in over the table while it is empty (nothing changes yet); returns the table's content. */
  stageProtectedRule(): Promise<RouteEntry[]>;
  /**
   * Routes the protected networks through `ifname` in one batch (the table then equals `routes`); `present` is
   * the table's content when the caller knows it, so nothing is read first. Safe to repeat.
   */
  applyProtectedRoutes(p: {
    ifname: string;
    routes: readonly string[];
    bypass?: readonly string[];
    present?: readonly RouteEntry[];
    /** Allowed local networks, thrown back to the main table (local network access). */
    local?: readonly string[];
  }): Promise<void>;
  /**
   * Deletes these prefixes (and these gateways' and local networks' throws) from the protected table, and its rule
   * unless `keepRule`.
   */
  clearProtectedRoutes(
    routes: readonly string[],
    opts?: { keepRule?: boolean; bypass?: readonly string[]; local?: readonly string[] },
  ): Promise<void>;
  installLegSource(s: LegSource): Promise<void>;
  removeLegSource(s: LegSource): Promise<void>;
}

export interface DnsSettings {
  servers: string[];
  searchDomains: string[];
}

/** The resolver configuration detourd manages, and where the original is kept while the tunnel's is in force. */
export interface DnsFiles {
  path: string;
  backupPath: string;
}

export interface PlatformDns {
  /** Puts the tunnel's resolvers in force (the original is saved first); throws when it refuses them. */
  apply(settings: DnsSettings, files: DnsFiles): void;
  /** Puts the original back if the tunnel's is in force; whether it did. */
  restore(files: DnsFiles): boolean;
  /**
   * Puts the tunnel's resolvers back if other software replaced them (the replacement is saved as the original);
   * whether it rewrote anything. Throws when it cannot.
   */
  reassert?(settings: DnsSettings, files: DnsFiles): boolean;
  /** Calls `changed` when other software may have rewritten the resolver configuration; returns the stop. */
  watch?(files: DnsFiles, changed: () => void): () => void;
  /** Per-link DNS in a resolver daemon (systemd-resolved on Linux); absent where the system has none. */
  links?: PlatformDnsLinks;
}

export type { LinkDns };

export interface PlatformDnsLinks {
  /**
   * Which backend the host's resolver configuration needs: "resolved" when `files.path` is the daemon's and the
   * daemon answers, "resolv.conf" otherwise. Rejects when the file is the daemon's but the daemon does not answer.
   */
  backend(files: DnsFiles): Promise<"resolved" | "resolv.conf">;
  /** Puts these settings on the device's link; safe to repeat. Rejects when the device or the daemon refuses. */
  apply(ifname: string, settings: LinkDns): Promise<void>;
  /** Drops what was set on the device's link; false when the device is gone (nothing to revert). */
  revert(ifname: string): Promise<boolean>;
  /** What the daemon holds for the device's link now; null when the device is gone. */
  read(ifname: string): Promise<LinkDns | null>;
}

/** The drill's own block of one gateway's endpoints (never the kill switch's rules). */
export interface DrillBlock {
  apply(gateway: string, endpoints: readonly GatewayEndpoint[]): Promise<void>;
  remove(): Promise<void>;
  present(): Promise<boolean>;
}

/** What the firewall watcher tells: something changed the ruleset, or the watcher itself died (and restarts). */
export interface FirewallWatchListener {
  /** The ruleset changed (anyone's table): the caller checks its own. */
  changed(): void;
  watcherDied(reason: string): void;
  /** User traffic went into a tunnel (the kill switch's trace rule, firewall.linux.ts tunnelActivity). */
  activity?(): void;
}

export interface PlatformFirewall {
  /** Puts these kill-switch rules in force as one atomic replace; null removes the kill switch. */
  applyKillSwitch(rules: KillSwitchRules | null): Promise<void>;
  /**
   * Puts the minimal blocking table in force instead (loopback, these tunnel devices, the host's underlay upkeep
   * and `ownGroup`'s traffic only): what goes in when applyKillSwitch failed. Built so that nothing can refuse it.
   */
  applyKillSwitchFallback(p: { tunnelDevices: readonly string[]; ownGroup: number | null }): Promise<void>;
  /** The kill switch's table as the kernel holds it (an opaque text, equal between reads of an unchanged table); null when missing. */
  readKillSwitch(): Promise<string | null>;
  /**
   * The second layer, outside the firewall: the protected networks made unroutable except through a tunnel, with
   * these gateways excepted (null: removed). It survives a flushed ruleset.
   */
  applyBackstop(b: { prefixes: readonly string[]; bypass: readonly string[] } | null): Promise<void>;
  /** Watches the ruleset for changes by anyone (restarting its watcher, bounded, if it dies) until stopped. */
  watchFirewall(listener: FirewallWatchListener): { stop(): void };
  drillBlock: DrillBlock;
}

export interface PlatformNetwork {
  /**
   * A key naming the network the device is on, hashed (next hop, address block, resolvers, public path);
   * `resolvConf` describes the network's own resolvers; `signal` cuts the slow part short.
   */
  networkId(input: { towards: string; resolvConf: string; signal?: AbortSignal }): Promise<string>;
  /**
   * The networks the device is on: each address with its prefix length ("192.168.1.7/24") and its device, both
   * families, loopback left out. A gateway address from DNS or the portal inside one is refused. Rejects when
   * they cannot be read.
   */
  localNetworks(): Promise<{ dev: string; prefix: string }[]>;
  /**
   * The directly connected IPv4 networks (the kernel's own `scope link` routes of the main table, links that are
   * up), each with its device and whether that is a bridge: local network access chooses among them. Rejects when
   * they cannot be read; a platform without it allows no local network.
   */
  connectedRoutes?(): Promise<ConnectedRoute[]>;
  /**
   * Binds the captive check to the underlay toward `targets` (one family) until released: resolves with the
   * underlay address its sockets must be bound to, from which they leave on the underlay whatever detourd's tunnel
   * routes are. Rejects when the underlay has no route there. `ifnamePrefix` names detourd's devices (never the
   * underlay). A platform without it sends the check wherever the routes do.
   */
  bindCaptiveCheck?(
    targets: readonly CaptiveTarget[],
    ifnamePrefix: string,
  ): Promise<{ source: string; release(): Promise<void> }>;
}

/** One destination the captive check reaches on the underlay. */
export interface CaptiveTarget {
  address: string;
  protocol: "tcp" | "udp";
  port: number;
}

/** Path MTU upkeep of the tunnel devices: echoes of an exact size, device MTUs, and the TCP MSS clamp. */
export interface PlatformMtu {
  /**
   * Whether an echo of exactly `size` bytes (the whole IPv4 packet) with DF set came back through `ifname` from
   * `target` within `waitMs` (a few are sent; one reply is a pass).
   */
  probeSize(p: {
    ifname: string;
    target: string;
    size: number;
    waitMs: number;
    signal?: AbortSignal;
  }): Promise<boolean>;
  setLinkMtu(ifname: string, mtu: number): Promise<void>;
  /**
   * Clamps the MSS of TCP SYNs through these devices (names, or `prefix*` patterns) to their route's MTU, in a
   * table of detourd's own replaced atomically; null removes it.
   */
  applyMssClamp(devices: readonly string[] | null): Promise<void>;
}

/** A tunnel device and engine process started ahead of a leg (a spare wireguard-go): no address, no peer. */
export interface SpareDevice {
  readonly runtime: { ifname: string; workDir: string };
  /** Started, running, and neither adopted nor stopped. */
  readonly usable: boolean;
  readonly pid: number | null;
  /** Removes it unless a leg adopted it. */
  stop(): Promise<void>;
}

export interface PlatformEngines {
  /** The driver for a spec; a WireGuard spec naming a spare's device adopts that spare. */
  create(spec: EngineSpec, spare?: SpareDevice): TunnelEngine;
  /** Starts a spare wireguard-go for this device name and folder by `deadlineAt`; everything is removed on failure. */
  launchSpare(
    runtime: { ifname: string; workDir: string },
    deadlineAt: number,
    signal?: AbortSignal,
  ): Promise<SpareDevice>;
}

/** The way out toward the gateways: the underlay device, its next hop and the source address the kernel picks. */
export interface NetworkPath {
  dev: string;
  gateway: string | null;
  source: string | null;
}

/**
 * "path-changed": the route toward the gateways now leaves by another device, next hop or source address (a
 * move between networks); "offline": no usable route toward any gateway; "online": a route is there again (or,
 * on the first report, was there from the start).
 */
export type NetworkChangeKind = "online" | "offline" | "path-changed";

/** A change of the network the device is on (link, address, default route), as the monitor reports it. */
export interface NetworkChange {
  /** Epoch ms. */
  at: number;
  kind: NetworkChangeKind;
  /** The first report after subscribing: how the network was found, not a change. */
  initial: boolean;
  path: NetworkPath | null;
  previous: NetworkPath | null;
  /** One sentence for logs and status: what changed. */
  reason: string;
}

export interface NetworkMonitorListener {
  change(c: NetworkChange): void;
  /** The monitor's watcher died (it restarts with backoff; a look runs once it is back). */
  watcherDied?(reason: string): void;
}

export interface NetworkMonitorOptions {
  /** detourd's tunnel devices are named `<ifnamePrefix>-*`: their changes are not the underlay's. */
  ifnamePrefix: string;
  /** The underlay addresses whose route decides (the gateways'); empty: the default routes decide. */
  targets(): string[];
}

/** Watches links, addresses and routes of the underlay; a platform without one reports nothing. */
export interface NetworkMonitor {
  subscribe(listener: NetworkMonitorListener, opts: NetworkMonitorOptions): { stop(): void; recheck(): void };
}

/**
 * Where the system's own word on sleep can be heard: "listening" (logind's PrepareForSleep from login1's owner),
 * "no-logind" (the bus answers, nobody owns login1), "unavailable" (no system bus, or the watcher cannot listen),
 * "starting" (not known yet).
 */
export type SleepSourceState = "starting" | "listening" | "no-logind" | "unavailable";

export interface SleepMonitorListener {
  /** The system is about to sleep (`sleeping` true) or resumed (false); `at` epoch ms. Only from the real logind. */
  prepareForSleep(s: { at: number; sleeping: boolean }): void;
  /** Whether the signal can be heard now; `detail` says why not (or who sends it). Called on every change. */
  state(s: SleepSourceState, detail: string | null): void;
  /** The watcher died while listening (it restarts with backoff). */
  watcherDied(reason: string): void;
  /** A PrepareForSleep sent by someone who does not own login1: ignored. */
  ignored(reason: string): void;
}

/** The system's sleep and resume announcements (logind on Linux); a platform without one has only the clocks. */
export interface SleepMonitor {
  subscribe(listener: SleepMonitorListener): { stop(): void };
}

/** An engine process the platform started (or saw exit), as the ownership record keeps it. */
export interface EngineProcessInfo {
  pid: number;
  argv: readonly string[];
}

/** A process that a previous detourd started: its PID and what /proc said of it then, so a reused PID is never hit. */
export interface OwnedProcess {
  pid: number;
  /** /proc/<pid>/stat's start time (clock ticks since boot), with the boot id: together unique for the process. */
  startTime: string;
  bootId: string;
  /** The program, for messages (wireguard-go, charon-systemd, openconnect). */
  exe: string;
}

/** A routing rule of detourd's: its preference and table (both families are removed). */
export interface OwnedRule {
  pref: number;
  table: number;
}

/** Everything a detourd owns on the host, as its ownership record lists it (main/agent/ownership.ts). */
export interface OwnedState {
  processes: OwnedProcess[];
  devices: string[];
  rules: OwnedRule[];
  /** Routing tables whose routes (throws included) are detourd's, emptied in both families. */
  tables: number[];
  /** nftables tables by symbol: "kill-switch" (replaced at start, not reclaimed), "drill-block", "mss-clamp". */
  nftTables: string[];
  /** Devices whose per-link DNS detourd set in the resolver daemon (reverted while the device lives). */
  resolvedLinks?: string[];
}

/** What a reclaim did: each item removed, and each one that could not be (with why). */
export interface ReclaimReport {
  removed: string[];
  failed: string[];
}

/** Taking back what a previous detourd left behind after a crash or kill -9 (reclaim.linux.ts). */
export interface PlatformReclaim {
  /** Who a live PID is (start time and boot id), or null when it is gone. */
  identify(pid: number): { startTime: string; bootId: string } | null;
  /**
   * Removes what `owned` lists, plus the devices named `<ifnamePrefix>-*` and the rules of IKE instances'
   * private tables when it lists a charon: processes only if PID, start time and boot id all still match.
   */
  reclaim(owned: OwnedState, naming: { ifnamePrefix: string; workDir?: string }): Promise<ReclaimReport>;
  /** Engine processes are reported as they are spawned and as they exit; returns the unsubscribe function. */
  watchEngineProcesses(listener: {
    spawned(p: EngineProcessInfo): void;
    exited(p: EngineProcessInfo): void;
  }): () => void;
}

export interface Platform {
  readonly name: string;
  readonly routes: PlatformRoutes;
  readonly dns: PlatformDns;
  readonly firewall: PlatformFirewall;
  readonly network: PlatformNetwork;
  readonly engines: PlatformEngines;
  readonly netmon: NetworkMonitor;
  /** Path MTU checks and the MSS clamp; a platform without it leaves the engines' MTUs as they are. */
  readonly mtu?: PlatformMtu;
  /** Crash recovery; a platform without it reclaims nothing. */
  readonly reclaim?: PlatformReclaim;
  /** The system's sleep announcements; without it the clocks alone tell a sleep. */
  readonly sleep?: SleepMonitor;
}
