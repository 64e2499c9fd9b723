/**
 * The data plane: protected routes, the tunnel's DNS and the kill switch, applied together and in order through
 * one chain. Route changes run one after another in the order the machine asked for them, so a late clear never
 * undoes a newer apply, and the kill switch for a state goes in behind the route change that led to it.
 */
import { join } from "node:path";
import { existsSync, readFileSync } from "node:fs";
import type { DetourConfig } from "../core/config/schema.ts";
import { candidateAddresses } from "../core/connection/address-family.ts";
import { canonicalIp, ipFamily } from "../core/ip-address.ts";
import { parsePrefix, prefixCovers } from "../core/net/address-guard.ts";
import { domainLabels, linkDnsFor, sameLinkDns, type LinkDns } from "../core/dns-link.ts";
import { routesForLeg } from "../core/connection/route-policy.ts";
import type { Candidate, ConnectionStateName, Leg } from "../core/connection/types.ts";
import {
  killSwitchPolicy,
  type CaptiveExceptionInput,
  legEndpoints,
  type GatewayEndpoint,
  type KillSwitchChange,
  type KillSwitchRules,
  type KillSwitchStatus,
} from "../core/killswitch.ts";
import type { TunnelUp } from "../core/tunnel/engine-types.ts";
import type { LocalNetwork } from "../core/net/local-networks.ts";
import type { DnsFiles, DnsSettings, Platform, RouteEntry } from "../../native/platform/platform.ts";
import type { DnsStatus } from "../core/protocol/messages.ts";
import type { Clock, Timer } from "./clock.ts";
import { KillSwitchEnforcer } from "./kill-switch-enforcer.ts";
import type { Logger } from "./log.ts";

export interface DataPlaneHost {
  config(): DetourConfig;
  /** Tunnel devices are named `<prefix>-*`; the kill switch lets them through. */
  ifnamePrefix: string;
  /** The running leg, for its device, pushed routes and DNS; undefined once it stopped. */
  leg(legId: string): { leg: Leg; up: TunnelUp | null } | undefined;
  /**
   * Every candidate whose endpoints the kill switch must allow (configured, discovered, being probed): their
   * addresses never go into the tunnel either.
   */
  reachable(): Candidate[];
  stateName(): ConnectionStateName;
  track(p: Promise<unknown>): void;
  /** Reports what was refused from a gateway's push (status shows it); the caller logs a new one. */
  refuse(r: { kind: "pushed-route" | "pushed-dns"; gateway: string; value: string; reason: string }): void;
  log: Logger;
  clock: Clock;
  /**
   * The group id detourd and its engines run as (detourd.ts switches to it at start): the kill switch's underlay
   * allowances are bound to it. Null or absent: unbound (tests on a fake platform).
   */
  ownGroup?: number | null;
  /** A kill-switch failure, recovery or restoration: the daemon turns it into an event and telemetry. */
  reportKillSwitch?(change: KillSwitchChange, status: KillSwitchStatus, detail: string): void;
  /** User traffic went into a tunnel: the probes speed up (the connection machine's probe pace). */
  tunnelActivity?(): void;
  /** The captive check's addresses and the sign-in exception (captive.ts); absent: none. */
  captive?(): { checkAddresses: string[]; captiveException: CaptiveExceptionInput | null };
  /** The tunnel's resolvers were put back after other software rewrote them, or could not be: telemetry. */
  reportDns?(change: "reasserted" | "failed", status: DnsStatus, detail: string): void;
  /**
   * The local networks allowed outside the tunnel (local-network-access.ts), given more addresses that must stay
   * inside it; absent: none.
   */
  localNetworks?(alsoInside: readonly string[]): LocalNetwork[];
}

/** The backstop check of the tunnel's resolv.conf, should its watch miss a rewrite (a file replaced by a rename). */
export const DNS_VERIFY_MS = 10_000;

export class DataPlane {
  readonly #host: DataPlaneHost;
  readonly #platform: Pick<Platform, "routes" | "dns" | "firewall">;
  readonly #dns: DnsFiles;
  #routeChain: Promise<void> = Promise.resolve();
  #routesOn: string | null = null;
  /** Every prefix put in the protected table since the last clear, pushed ones included. */
  #appliedRoutes = new Set<string>();
  /** Prefixes the kill switch protects ahead of the protected table (see #protectFirst); cleared with it. */
  #protectAhead = new Set<string>();
  /** Every gateway address (either family) known since the protected routes were last cleared. */
  #gatewaysSeen = new Set<string>();
  /** Every gateway throw put in the protected table since the last clear (see route-policy.ts' bypass). */
  #appliedBypass = new Set<string>();
  /** Every local network's throw put in the protected table since the last clear (local network access). */
  #appliedLocal = new Set<string>();
  /**
   * The protected table's content as this daemon last left it, with its rule in place (staged while a connect
   * races, kept by every apply): the winner's route change is then one iproute2 run. Null when unknown.
   */
  #stagedRoutes: RouteEntry[] | null = null;
  /** The kill switch last asked for (JSON), so an unchanged policy is not re-applied (that resets counters). */
  #killSwitch: string | undefined = undefined;
  /** Applies it, says whether it is in force, retries, falls back and restores (kill-switch-enforcer.ts). */
  readonly #enforcer: KillSwitchEnforcer;
  /** The kill switch was removed at exit: nothing may put it back behind the exit's back. */
  #removed = false;
  /** Connects between their kill switch and the machine's "connect" (whileConnectPending). */
  #connectPending = 0;
  /** The tunnel's resolvers while they are in force (null: the network's own), watched for rewrites by others. */
  #dnsInForce: DnsSettings | null = null;
  #dnsUnwatch: (() => void) | null = null;
  #dnsVerify: Timer | null = null;
  #dnsCheckQueued = false;
  readonly #dnsStatus: DnsStatus = {
    managed: false,
    reassertions: 0,
    lastReassertAt: null,
    lastError: null,
    backend: null,
    link: null,
    servers: [],
    domains: [],
  };
  /** The device whose resolved link holds the tunnel's DNS, and what it holds (backend "resolved"). */
  #dnsLink: { ifname: string; settings: LinkDns } | null = null;
  #dnsRestoreError: string | null = null;

  constructor(
    host: DataPlaneHost,
    platform: Pick<Platform, "routes" | "dns" | "firewall">,
    files: { resolvConf: string; stateDir: string },
  ) {
    this.#host = host;
    this.#platform = platform;
    this.#dns = { path: files.resolvConf, backupPath: join(files.stateDir, "resolv.conf.orig") };
    this.#enforcer = new KillSwitchEnforcer({
      firewall: platform.firewall,
      clock: host.clock,
      random: Math.random,
      report: (change, status, detail) => {
        host.reportKillSwitch?.(change, status, detail);
      },
      track: (p) => {
        host.track(p);
      },
      log: host.log,
      activity: () => {
        host.tunnelActivity?.();
      },
    });
    // A daemon that died while connected left the tunnel's resolvers in place: put the original back first.
    try {
      if (platform.dns.restore(this.#dns))
        host.log.warn("restored the resolv.conf a previous detourd left in place", { path: files.resolvConf });
    } catch (err) {
      this.#dnsRestoreError = err instanceof Error ? err.message : String(err);
      host.log.error("the resolv.conf a previous detourd left in place could not be restored", { err });
    }
  }

  /** Why the original resolv.conf could not be put back (a damaged backup, a write that failed), for status. */
  get dnsRestoreError(): string | null {
    return this.#dnsRestoreError;
  }

  /** Settles once every change asked for so far is done (failed ones are logged). */
  settled(): Promise<void> {
    return this.#routeChain;
  }

  /** The resolv.conf that describes the network: while Detour's is in force, the saved original. */
  networkResolvConf(): string {
    return existsSync(this.#dns.backupPath) ? this.#dns.backupPath : this.#dns.path;
  }

  /** Route changes run one after another in the order the machine asked for them: a late clear must never undo a newer apply. */
  op(op: () => Promise<void>): void {
    const next = this.#routeChain.then(op).catch((err: unknown) => {
      this.#host.log.error("route change failed", { err });
    });
    this.#routeChain = next;
    this.#host.track(next);
  }

  /**
   * Prepares the route change a connect's winner needs (at start-up, and again at a connect if it was lost), so
   * it is one iproute2 run then: the protected rule goes in over the still empty table, and its content is known.
   */
  stage(): void {
    if (this.#stagedRoutes !== null) return;
    this.op(async () => {
      if (this.#stagedRoutes === null) this.#stagedRoutes = await this.#platform.routes.stageProtectedRule();
    });
  }

  /** The machine's apply-routes: the protected networks (and the leg's DNS) move to this leg. */
  applyRoutes(legId: string): void {
    this.op(() => this.#applyRoutes(legId));
  }

  /** The machine's clear-routes: the protected table empties and the original resolv.conf comes back. */
  clearRoutes(): void {
    this.#routesOn = null;
    this.op(() => this.#clearRoutes());
  }

  /**
   * Puts the kill switch for the current state in force: while connecting, failing over, in error (and while
   * disconnected under lockdown) only the candidates' gateway endpoints and the discovery resolvers may be
   * reached on the underlay, and protected networks only ever leave through a tunnel device.
   */
  refreshKillSwitch(stateOverride?: ConnectionStateName): void {
    if (this.#removed) return;
    const next = this.#nextKillSwitch(stateOverride);
    if (next === null) return;
    // The enforcer says whether it went in (status), falls back and retries on failure: this op never rejects.
    this.op(() => this.#enforcer.apply(next.rules));
  }

  /**
   * Makes the kill switch protect `routes` before the protected table sends them into a tunnel (a leg's pushed
   * prefixes and resolvers): otherwise they would leave in clear should the tunnel go before the next refresh.
   * Runs inside a route op, so it awaits the enforcer directly; a no-op when every prefix is already protected.
   */
  async #protectFirst(routes: readonly string[]): Promise<void> {
    if (this.#removed) return;
    const shields = this.#protectedPrefixes().map(parsePrefix);
    const bare = routes.filter((r) => {
      const p = parsePrefix(r);
      return p === null || !shields.some((s) => s !== null && prefixCovers(s, p));
    });
    if (bare.length === 0) return;
    for (const r of bare) this.#protectAhead.add(r);
    const next = this.#nextKillSwitch();
    if (next !== null) await this.#enforcer.apply(next.rules);
  }

  /** The protected networks the kill switch guards: configured, in the table, and about to go in. */
  #protectedPrefixes(): string[] {
    return [...new Set([...this.#host.config().protectedRoutes, ...this.#appliedRoutes, ...this.#protectAhead])];
  }

  /** The kill switch the current state needs, or null when it is the one already put in force (or cannot be had). */
  #nextKillSwitch(stateOverride?: ConnectionStateName): { rules: KillSwitchRules | null } | null {
    const cfg = this.#host.config();
    const machineState = this.#host.stateName();
    // A connect that is about to reach the machine (it waits briefly for the network's identity) already holds
    // the connecting kill switch: a refresh meanwhile (a discovery round ending) must not lift it.
    const state =
      stateOverride ?? (this.#connectPending > 0 && machineState === "disconnected" ? "resolving" : machineState);
    let rules: KillSwitchRules | null;
    try {
      const endpoints: GatewayEndpoint[] = [];
      for (const c of this.#host.reachable()) {
        const gw = cfg.gateways.find((g) => g.name === c.name);
        if (gw === undefined) continue;
        // Both families of a dual-stack gateway: a leg keeps its endpoint when a recheck moves the gateway's address.
        for (const address of knownAddresses(c))
          for (const kind of c.kinds) endpoints.push(...legEndpoints(kind, address, gw.protocols));
      }
      rules = killSwitchPolicy({
        state,
        lockdown: cfg.lockdown,
        protectedNetworks: this.#protectedPrefixes(),
        gatewayEndpoints: endpoints,
        // Legs are proven through their device before they are up, and kernel-libipsec names its own devices.
        tunnelDevices: [`${this.#host.ifnamePrefix}-*`, "ipsec*"],
        dnsServers: cfg.discovery.dns?.servers ?? [],
        // detourd's own lookups (gateways by hostname, the portal) use the network's resolvers.
        ownResolvers: this.networkResolvers(),
        // Trusted network detection's TLS checks (trusted-networks.ts) must work under lockdown too.
        trustedHosts: (cfg.trustedNetworks?.rules ?? []).map((r) => ({
          address: r.tlsHost.address,
          port: r.tlsHost.port,
        })),
        ...(this.#host.ownGroup == null ? {} : { ownGroup: this.#host.ownGroup }),
        ...(this.#host.captive?.() ?? {}),
        // Local network access: each allowed connected network through its own device only.
        localNetworks: this.#host.localNetworks?.([]) ?? [],
      });
    } catch (err) {
      this.#host.log.error("kill switch policy failed", { err });
      return null;
    }
    // The state only labels the rules: resolving -> racing must not rebuild an identical table (each apply costs
    // tens of milliseconds that the race's route change would wait behind).
    const key = rules === null ? "off" : JSON.stringify(Object.entries(rules).filter(([k]) => k !== "state"));
    if (key === this.#killSwitch) return null;
    this.#killSwitch = key;
    return { rules };
  }

  /**
   * Runs a connect's lead-in (from its kill switch to the machine's "connect"): refreshes meanwhile keep the
   * connecting kill switch instead of the disconnected one.
   */
  async whileConnectPending<T>(lead: () => Promise<T>): Promise<T> {
    this.#connectPending += 1;
    try {
      return await lead();
    } finally {
      this.#connectPending -= 1;
    }
  }

  /** Whether the kill switch is in force, and its failures and restorations (status, connect's answer). */
  killSwitchStatus(): KillSwitchStatus {
    return this.#enforcer.status();
  }

  /** Starts noticing other software's changes to the firewall (detourd's start; the watcher is a child process). */
  watchKillSwitch(): void {
    this.#enforcer.startWatching();
  }

  /** Stops the watcher and retries at exit; the table itself is left to removeKillSwitch (or kept, under lockdown). */
  stopKillSwitchWatch(): void {
    this.#enforcer.stop();
  }

  /**
   * The resolvers of the network (IPv4 or IPv6 `nameserver` lines of the resolv.conf that describes it), for the
   * kill switch's own-resolver allowance; an unreadable file gives none (detourd's lookups then fail closed).
   */
  networkResolvers(): string[] {
    let text: string;
    try {
      text = readFileSync(this.networkResolvConf(), "utf8");
    } catch {
      return [];
    }
    return parseNameservers(text);
  }

  /** At exit, after every leg stopped: the protected routes and their rule go. Throws when they could not. */
  async clearRoutesForExit(): Promise<void> {
    await this.#routeChain;
    await this.#revertDnsLink();
    if (this.#dnsLink !== null)
      throw new Error(
        `resolved's DNS settings on ${this.#dnsLink.ifname} could not be reverted: ${this.#dnsStatus.lastError ?? "?"}`,
      );
    // The disconnect's clear kept the staged rule over the emptied table; it goes now, with anything left.
    if (this.#routesOn !== null || this.#appliedRoutes.size > 0 || this.#stagedRoutes !== null) {
      await this.#platform.routes.clearProtectedRoutes(
        [...this.#appliedRoutes, ...this.#host.config().protectedRoutes],
        {
          bypass: [...this.#appliedBypass],
          local: [...this.#appliedLocal],
        },
      );
    }
  }

  /** At exit: the original resolv.conf comes back (resolved's link was reverted with the routes). Throws when it could not. */
  restoreDnsForExit(): void {
    this.#restoreDns();
    if (this.#dnsRestoreError !== null) throw new Error(this.#dnsRestoreError);
  }

  /** Removes the kill switch (the last step of an exit without lockdown). Throws when it could not. */
  async removeKillSwitch(): Promise<void> {
    this.#removed = true;
    this.#killSwitch = undefined;
    this.#enforcer.stop();
    await this.#enforcer.apply(null);
    await this.#enforcer.settled();
    const s = this.#enforcer.status();
    if (s.state !== "off") throw new Error(`the kill switch could not be removed: ${s.lastError ?? s.state}`);
  }

  /**
   * The last step of an exit under lockdown: the blocking table of a disconnected, locked-down host is put in force
   * (it usually is already) and nothing may change it afterwards. Throws when it is not in force.
   */
  async keepKillSwitch(): Promise<void> {
    this.refreshKillSwitch("disconnected");
    this.#removed = true;
    await this.#routeChain;
    this.#enforcer.stop();
    await this.#enforcer.settled();
    if (this.#killSwitch === undefined) throw new Error("the kill switch policy could not be computed");
    const s = this.#enforcer.status();
    if (s.state === "fallback")
      throw new Error(`only the fallback table is in force: ${s.lastError ?? "apply failed"}`);
    if (s.state !== "in-force") throw new Error(`the kill switch is not in force: ${s.lastError ?? s.state}`);
  }

  async #clearRoutes(): Promise<void> {
    const log = this.#host.log;
    // The rule stays while detourd runs (the table is empty, lookups fall through it); shutdown removes it.
    const ruleIn = this.#stagedRoutes !== null;
    this.#stagedRoutes = null;
    await this.#platform.routes.clearProtectedRoutes([...this.#appliedRoutes], {
      keepRule: ruleIn,
      bypass: [...this.#appliedBypass],
      local: [...this.#appliedLocal],
    });
    this.#stagedRoutes = ruleIn ? [] : null;
    this.#appliedRoutes.clear();
    this.#protectAhead.clear();
    this.#appliedBypass.clear();
    this.#appliedLocal.clear();
    this.#gatewaysSeen.clear();
    log.info("protected routes cleared");
    this.#restoreDns();
    await this.#revertDnsLink();
  }

  /** The tunnel's DNS as detourd keeps it: in force or not, and how often other software's rewrite was undone. */
  dnsStatus(): DnsStatus {
    return {
      ...this.#dnsStatus,
      managed: this.#dnsInForce !== null,
      servers: [...(this.#dnsStatus.servers ?? [])],
      domains: [...(this.#dnsStatus.domains ?? [])],
    };
  }

  /**
   * While the tunnel's resolvers are in force, a rewrite by other software (a network manager renewing a lease,
   * a DHCP hook) is noticed at once by a watch on the file, and by a check every DNS_VERIFY_MS should the watch
   * miss one, and undone: otherwise every lookup, intranet names included, would go in clear to the network's
   * resolver until the next failover.
   */
  #watchDns(settings: DnsSettings): void {
    this.#dnsInForce = settings;
    if (this.#platform.dns.reassert === undefined && this.#dnsLink === null) return;
    // resolved's link has no file to watch (resolv.conf stays its stub): the periodic check reads the link.
    if (this.#dnsLink === null)
      this.#dnsUnwatch ??=
        this.#platform.dns.watch?.(this.#dns, () => {
          this.#queueDnsCheck();
        }) ?? null;
    if (this.#dnsVerify === null) {
      const tick = (): void => {
        this.#dnsVerify = this.#host.clock.after(DNS_VERIFY_MS, tick);
        this.#queueDnsCheck();
      };
      this.#dnsVerify = this.#host.clock.after(DNS_VERIFY_MS, tick);
    }
  }

  #unwatchDns(): void {
    this.#dnsInForce = null;
    this.#dnsUnwatch?.();
    this.#dnsUnwatch = null;
    this.#dnsVerify?.cancel();
    this.#dnsVerify = null;
  }

  /** One check at a time, in order with the route changes (a disconnect's restore must not be undone). */
  #queueDnsCheck(): void {
    if (this.#dnsCheckQueued || this.#dnsInForce === null) return;
    this.#dnsCheckQueued = true;
    this.op(async () => {
      this.#dnsCheckQueued = false;
      await this.#reassertDns();
    });
  }

  /** resolved's link lost what detourd put there (resolved restarted, a network manager reverted it): put it back. */
  async #reassertDnsLink(link: { ifname: string; settings: LinkDns }): Promise<boolean> {
    const links = this.#platform.dns.links;
    if (links === undefined) return false;
    const now = await links.read(link.ifname);
    // A device that is gone took its settings with it: the failover that follows moves them to the next one.
    if (now === null || sameLinkDns(now, link.settings, canonicalIp)) return false;
    await links.apply(link.ifname, link.settings);
    return true;
  }

  async #reassertDns(): Promise<void> {
    const settings = this.#dnsInForce;
    if (settings === null || this.#removed) return;
    const link = this.#dnsLink;
    let redone = false;
    let failure: unknown = null;
    try {
      redone =
        link !== null ? await this.#reassertDnsLink(link) : this.#platform.dns.reassert?.(settings, this.#dns) === true;
    } catch (err) {
      failure = err;
      // dns.linux.ts's DnsBackupError: the file was rewritten, only saving the network's newer original failed.
      redone = (err as { reasserted?: unknown } | null)?.reasserted === true;
    }
    try {
      if (redone) {
        this.#dnsStatus.reassertions += 1;
        this.#dnsStatus.lastReassertAt = this.#host.clock.wall();
        const what = link !== null ? `systemd-resolved's settings on ${link.ifname}` : this.#dns.path;
        const detail = `${what} were changed by other software; the tunnel's resolvers are back`;
        this.#host.log.warn("tunnel DNS changed by other software; put the tunnel's back", {
          what,
          reassertions: this.#dnsStatus.reassertions,
        });
        this.#host.reportDns?.("reasserted", this.dnsStatus(), detail);
      }
      if (failure === null) this.#dnsStatus.lastError = null;
    } catch (err) {
      failure ??= err;
    }
    if (failure !== null)
      this.#dnsFailed(
        failure,
        redone
          ? "the tunnel's resolvers are back, but the network's newer resolv.conf was not saved"
          : "the tunnel's resolvers could not be put back",
      );
  }

  /** A DNS step failed: status and an event say why (once per distinct reason), never only the log. */
  #dnsFailed(err: unknown, what: string): void {
    const message = err instanceof Error ? err.message : String(err);
    if (this.#dnsStatus.lastError !== message) {
      this.#host.log.error(what, { err });
      this.#host.reportDns?.("failed", { ...this.dnsStatus(), lastError: message }, `${what}: ${message}`);
    }
    this.#dnsStatus.lastError = message;
  }

  /**
   * Drops detourd's settings from resolved's link (disconnect, exit); a failure is kept in status and reported, and
   * the link stays listed (here and in the ownership record) so a later clear or a successor tries again.
   */
  async #revertDnsLink(): Promise<void> {
    const link = this.#dnsLink;
    if (link === null || !(await this.#revertLinkOf(link.ifname)) || this.#dnsLink !== link) return;
    this.#dnsLink = null;
    Object.assign(this.#dnsStatus, { backend: null, link: null, servers: [], domains: [] });
  }

  /** Reverts one device's resolved link; whether it is clean now (a failure is reported). */
  async #revertLinkOf(ifname: string): Promise<boolean> {
    const links = this.#platform.dns.links;
    if (links === undefined) return true;
    try {
      if (await links.revert(ifname)) this.#host.log.info("resolved link DNS reverted", { ifname });
      return true;
    } catch (err) {
      this.#dnsFailed(err, `resolved's DNS settings on ${ifname} could not be reverted`);
      return false;
    }
  }

  /** Puts the original resolv.conf back; a failure is kept for status and logged, never thrown. */
  #restoreDns(): void {
    this.#unwatchDns();
    try {
      if (this.#platform.dns.restore(this.#dns)) this.#host.log.info("resolv.conf restored", { path: this.#dns.path });
      this.#dnsRestoreError = null;
    } catch (err) {
      this.#dnsRestoreError = err instanceof Error ? err.message : String(err);
      this.#host.log.error("restoring resolv.conf failed", { err });
    }
  }

  /** Whether a packet to `address` goes into the tunnel: a route of the protected table covers it, no throw does. */
  #tunnelCarries(address: string): boolean {
    const a = parsePrefix(address);
    if (a === null) return false;
    const covers = (r: RouteEntry): boolean => {
      const p = parsePrefix(r.dst);
      return p !== null && prefixCovers(p, a);
    };
    const table = this.#stagedRoutes ?? [];
    return table.some((r) => r.type !== "throw" && covers(r)) && !table.some((r) => r.type === "throw" && covers(r));
  }

  async #applyRoutes(legId: string): Promise<void> {
    const applied = await this.#writeProtectedTable(legId);
    if (applied === null) return;
    await this.#applyDns(applied.up.config.ifname, applied.dns);
  }

  /**
   * Puts the tunnel's resolvers in force for the leg on `ifname`: on its link in systemd-resolved where resolved
   * manages the host's resolv.conf (the previous leg's link reverted once the new one holds them), else in
   * resolv.conf. A failure does not cost the connection (the protected networks are reachable by address) but is
   * reported: lookups then still go to the network's resolvers.
   */
  async #applyDns(ifname: string, pushed: string[]): Promise<void> {
    const td = this.#host.config().tunnelDns;
    // Configured resolvers win; pushed ones only as far as the plan routes them through the tunnel.
    const wanted = td !== undefined && td.servers.length > 0 ? td.servers : pushed;
    if (wanted.length === 0) return;
    // A resolver the tunnel does not carry would be asked in clear on the local network: only those inside the
    // protected table go in (IPv6 ones wait for IPv6 protected networks; pushed ones got their host route).
    const servers = wanted.filter((a) => this.#tunnelCarries(a));
    const uncarried = wanted.filter((a) => !servers.includes(a));
    const settings = { servers, searchDomains: td?.searchDomains ?? [] };
    if (servers.length === 0) {
      this.#dnsFailed(
        new Error(`the tunnel carries none of its resolvers (${uncarried.join(", ")})`),
        "tunnel DNS not applied",
      );
      return;
    }
    const links = this.#platform.dns.links;
    try {
      const backend = links === undefined ? "resolv.conf" : await links.backend(this.#dns);
      if (backend === "resolved" && links !== undefined) {
        const l = linkDnsFor({
          ...settings,
          mode: td?.mode ?? "all",
          routingDomains: td?.routingDomains ?? [],
        });
        await links.apply(ifname, l);
        const previous = this.#dnsLink;
        this.#dnsLink = { ifname, settings: l };
        // A failover moved the link: the old device (gone, or kept as the standby) loses the tunnel's DNS.
        if (previous !== null && previous.ifname !== ifname) await this.#revertLinkOf(previous.ifname);
        Object.assign(this.#dnsStatus, { backend, link: ifname, servers, domains: domainLabels(l) });
      } else {
        await this.#revertDnsLink();
        this.#platform.dns.apply(settings, this.#dns);
        // A written resolv.conf cannot split: every lookup goes to the tunnel's resolvers ("~.").
        Object.assign(this.#dnsStatus, { backend, link: null, servers, domains: [...settings.searchDomains, "~."] });
      }
      this.#dnsStatus.lastError = null;
      this.#host.log.info("tunnel DNS applied", { servers, backend, ifname, path: this.#dns.path });
      this.#watchDns(settings);
      if (uncarried.length > 0)
        this.#dnsFailed(
          new Error(`left out resolvers the tunnel does not carry (asked in clear otherwise): ${uncarried.join(", ")}`),
          "tunnel DNS applied in part",
        );
    } catch (err) {
      this.#dnsFailed(err, "tunnel DNS not applied");
    }
  }

  /**
   * Points the protected table at the leg: its routes, and a throw for every known gateway inside them, in one
   * batch, so the engines' own packets (the active leg's, the standby's, a race's) never enter a tunnel. Returns
   * what the leg's tunnel reported, or null when the leg is gone.
   */
  async #writeProtectedTable(legId: string): Promise<{ up: TunnelUp; dns: string[] } | null> {
    const rt = this.#host.leg(legId);
    if (rt?.up == null) return null;
    const plan = this.#plan(rt.up);
    const gateway = rt.leg.gateway;
    for (const r of plan.rejected)
      this.#host.refuse({ kind: "pushed-route", gateway, value: r.route, reason: r.reason });
    for (const r of plan.rejectedDns)
      this.#host.refuse({ kind: "pushed-dns", gateway, value: r.server, reason: r.reason });
    // The batch makes the table equal to the plan, so routes of the previous leg that this one lacks go too.
    const ifname = rt.up.config.ifname;
    const local = this.#localThrows(plan.dns);
    const known = this.#stagedRoutes;
    this.#stagedRoutes = null; // unknown until this apply has succeeded
    await this.#protectFirst(plan.routes);
    await this.#platform.routes.applyProtectedRoutes({
      ifname,
      routes: plan.routes,
      bypass: plan.bypass,
      ...(known === null ? {} : { present: known }),
      ...(local.length === 0 ? {} : { local }),
    });
    const routed = new Set(plan.routes);
    this.#stagedRoutes = [
      ...plan.bypass.map((dst) => ({ dst, dev: "", type: "throw" as const })),
      ...local.filter((dst) => !routed.has(dst)).map((dst) => ({ dst, dev: "", type: "throw" as const })),
      ...plan.routes.map((dst) => ({ dst, dev: ifname })),
    ];
    for (const r of plan.routes) this.#appliedRoutes.add(r);
    for (const b of plan.bypass) this.#appliedBypass.add(b);
    for (const l of local) this.#appliedLocal.add(l);
    this.#routesOn = legId;
    this.refreshKillSwitch();
    this.#host.log.info("protected routes applied", { leg: rt.leg, ifname, routes: plan.routes, bypass: plan.bypass });
    return { up: rt.up, dns: plan.dns };
  }

  /**
   * The leg's route plan: the protected networks, what its gateway pushed within the configuration's allow-list,
   * and a host route for each pushed resolver in use (none when the configuration names the tunnel's resolvers).
   */
  #plan(up: TunnelUp): ReturnType<typeof routesForLeg> {
    const cfg = this.#host.config();
    const configuredDns = cfg.tunnelDns !== undefined && cfg.tunnelDns.servers.length > 0;
    return routesForLeg(cfg.protectedRoutes, up.config.routes, this.#gatewayAddresses(), {
      ...(cfg.pushedRoutes === undefined ? {} : { allowed: cfg.pushedRoutes.allow }),
      pushedDns: configuredDns ? [] : up.config.dns,
    });
  }

  /**
   * Every gateway address known since the protected routes were last cleared: configured, resolved, from the
   * portal, being probed. Kept across discovery rounds, so a live leg whose gateway a recheck moved elsewhere
   * still reaches its own endpoint outside the tunnel until the next clear.
   */
  #gatewayAddresses(): string[] {
    for (const c of this.#host.reachable()) for (const a of knownAddresses(c)) this.#gatewaysSeen.add(a);
    return [...this.#gatewaysSeen];
  }

  /**
   * The allowed local networks' prefixes for the protected table, with `pushedDns` (the leg's resolvers, about to be
   * used) kept inside the tunnel as well.
   */
  #localThrows(pushedDns: readonly string[]): string[] {
    return [...new Set((this.#host.localNetworks?.(pushedDns) ?? []).map((n) => n.prefix))].sort();
  }

  /** The protected networks in force: configured, and every prefix put in the table since the last clear. */
  protectedNetworks(): string[] {
    return [...new Set([...this.#host.config().protectedRoutes, ...this.#appliedRoutes])];
  }

  /**
   * Addresses reached only through the tunnel: the configured resolvers (or the active leg's pushed ones) and the
   * in-tunnel probe target. A local network covering one is refused.
   */
  tunnelAddresses(): string[] {
    const cfg = this.#host.config();
    const configured = cfg.tunnelDns?.servers ?? [];
    const pushed = this.#routesOn === null ? [] : (this.#host.leg(this.#routesOn)?.up?.config.dns ?? []);
    return [...new Set([...configured, ...pushed, cfg.probe.address])];
  }

  /**
   * The allowed local networks changed (a move, a bridge that appeared, a refusal): the kill switch follows, and the
   * protected table's throws too while routes are in force.
   */
  localNetworksChanged(): void {
    this.refreshKillSwitch();
    if (this.#routesOn === null) return;
    this.op(async () => {
      const legId = this.#routesOn;
      const up = legId === null ? null : this.#host.leg(legId)?.up;
      if (legId === null || up == null) return;
      const want = this.#localThrows(this.#plan(up).dns);
      const have = (this.#stagedRoutes ?? [])
        .filter((r) => r.type === "throw" && this.#appliedLocal.has(r.dst))
        .map((r) => r.dst)
        .sort();
      if (this.#stagedRoutes !== null && JSON.stringify(want) === JSON.stringify(have)) return;
      await this.#writeProtectedTable(legId);
    });
  }

  /** A gateway address learned while the protected routes are in force gets its throw before anything is sent to it. */
  bypassNewGateways(): void {
    const known = this.#gatewaysSeen.size;
    this.#gatewayAddresses();
    if (this.#gatewaysSeen.size === known || this.#routesOn === null) return;
    this.op(async () => {
      const legId = this.#routesOn;
      const up = legId === null ? null : this.#host.leg(legId)?.up;
      if (legId === null || up == null) return;
      // Only a missing throw is worth a table write: most new addresses are outside a split tunnel's networks.
      const thrown = new Set((this.#stagedRoutes ?? []).filter((r) => r.type === "throw").map((r) => r.dst));
      const plan = this.#plan(up);
      if (this.#stagedRoutes !== null && plan.bypass.every((b) => thrown.has(b))) return;
      await this.#writeProtectedTable(legId);
    });
  }
}

/** Every underlay address known for a candidate, either family. */
export function knownAddresses(c: Candidate): string[] {
  const a = candidateAddresses(c);
  return [a.ipv4, a.ipv6].filter((x): x is string => x !== null);
}

/** The `nameserver` addresses of a resolv.conf, IPv4 or IPv6 without a zone, at most resolv.conf's three. */
export function parseNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)\s*$/.exec(line);
    const a = m?.[1];
    if (a !== undefined && ipFamily(a) !== null && !out.includes(a)) out.push(a);
  }
  return out.slice(0, MAX_RESOLVERS);
}

/** The resolver library uses the first three nameserver lines only (resolv.conf(5) MAXNS). */
const MAX_RESOLVERS = 3;
