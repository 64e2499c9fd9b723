/**
 * Allow local network access, kept current: reads the device's connected networks (at start, on every change the
 * network monitor reports, and every LOCAL_NETWORKS_RECHECK_MS for bridges that appear without a path change, such
 * as a container runtime starting), lets the pure planner (core/net/local-networks.ts) choose, and tells the data
 * plane when the allowed set changed so the protected table's throws and the kill switch follow. A failure to
 * read them allows none (fail closed) and is reported.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import {
  localNetworkAccessEnabled,
  planLocalNetworks,
  samePlan,
  type ConnectedRoute,
  type LocalNetwork,
  type LocalNetworkPlan,
} from "../core/net/local-networks.ts";
import type { LocalNetworksStatus } from "../core/protocol/messages.ts";
import type { PlatformNetwork } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/**
 * The backstop look at the connected networks: a bridge a container runtime adds is no path change, so the monitor
 * says nothing; 10 s is one `ip` run per look, and a new container network usable within seconds.
 */
export const LOCAL_NETWORKS_RECHECK_MS = 10_000;

export interface LocalNetworkAccessHost {
  config(): DetourConfig;
  /** The protected networks in force (configured and pushed). */
  protectedNetworks(): string[];
  /** Addresses reached only through the tunnel (its resolvers, the probe target): a network covering one is refused. */
  tunnelAddresses(): string[];
  /** Tunnel devices (names or `prefix*`): never local. */
  tunnelDevices: readonly string[];
  /** The allowed set changed: the protected table and the kill switch follow. */
  changed(): void;
  /** Telemetry: the allowed or refused set changed, or the connected networks could not be read. */
  report(name: "detour.local-networks.changed" | "detour.local-networks.failed", body: object): void;
  clock: Clock;
  log: Logger;
  track(p: Promise<unknown>): void;
}

const EMPTY: LocalNetworkPlan = { allowed: [], refused: [] };

export class LocalNetworkAccess {
  readonly #host: LocalNetworkAccessHost;
  readonly #network: Pick<PlatformNetwork, "connectedRoutes">;
  #routes: ConnectedRoute[] = [];
  #reported: LocalNetworkPlan = EMPTY;
  #changedAt: number | null = null;
  #changes = 0;
  #lastError: string | null = null;
  #timer: Timer | null = null;
  #running: Promise<void> | null = null;
  #again = false;
  #stopped = false;

  constructor(host: LocalNetworkAccessHost, network: Pick<PlatformNetwork, "connectedRoutes">) {
    this.#host = host;
    this.#network = network;
  }

  /** First look now, then the backstop looks. */
  start(): void {
    this.#stopped = false;
    this.refresh("start");
    this.#arm();
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = null;
  }

  /** Looks at the connected networks again (one look at a time; a request meanwhile runs once after it). */
  refresh(why: string): void {
    if (this.#running !== null) {
      this.#again = true;
      return;
    }
    const run = (async (): Promise<void> => {
      try {
        for (let more = true; more; more = this.#takeAgain()) await this.#look(why);
      } finally {
        this.#running = null;
      }
    })();
    this.#running = run;
    this.#host.track(run);
  }

  /** Whether another look was asked for meanwhile (and clears the request). */
  #takeAgain(): boolean {
    const again = this.#again && !this.#stopped;
    this.#again = false;
    return again;
  }

  /** Settles once the look under way (if any) is done. */
  settled(): Promise<void> {
    return this.#running ?? Promise.resolve();
  }

  /** Whether the setting is in force for the configuration and protected networks now. */
  enabled(): boolean {
    const cfg = this.#host.config();
    return localNetworkAccessEnabled({
      mode: cfg.localNetworkAccess,
      fullTunnel: this.#host.protectedNetworks().some((p) => p.endsWith("/0")),
      lockdown: cfg.lockdown,
    });
  }

  /**
   * The plan for the connected networks last read and the protected networks now (empty when off); `alsoInside`:
   * more addresses that must stay in the tunnel (a leg's pushed resolvers before its routes are in).
   */
  plan(alsoInside: readonly string[] = []): LocalNetworkPlan {
    if (!this.enabled()) return EMPTY;
    return planLocalNetworks({
      routes: this.#routes,
      protectedNetworks: this.#host.protectedNetworks(),
      tunnelDevices: this.#host.tunnelDevices,
      tunnelAddresses: [...this.#host.tunnelAddresses(), ...alsoInside],
    });
  }

  /** The local networks allowed now: what the protected table throws and the kill switch lets out. */
  allowed(alsoInside: readonly string[] = []): LocalNetwork[] {
    return this.plan(alsoInside).allowed;
  }

  status(): LocalNetworksStatus {
    const p = this.plan();
    return {
      mode: this.#host.config().localNetworkAccess,
      enabled: this.enabled(),
      allowed: p.allowed.map((n) => ({ ...n })),
      refused: p.refused.map((n) => ({ ...n })),
      changedAt: this.#changedAt,
      changes: this.#changes,
      lastError: this.#lastError,
    };
  }

  /**
   * Something the plan depends on besides the connected networks changed (the configuration, the protected
   * networks, the tunnel's resolvers): reports and applies a different plan.
   */
  reconsider(why: string): void {
    this.#compare(why);
  }

  async #look(why: string): Promise<void> {
    const read = this.#network.connectedRoutes;
    if (read === undefined) return;
    try {
      this.#routes = await read();
      if (this.#lastError !== null) this.#host.log.info("connected networks readable again", { why });
      this.#lastError = null;
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      // Fail closed: nothing is allowed while the connected networks are unknown.
      this.#routes = [];
      if (this.#lastError !== message) {
        this.#host.log.error("connected networks could not be read; no local network is allowed", { err, why });
        this.#host.report("detour.local-networks.failed", { reason: message, why });
      }
      this.#lastError = message;
    }
    this.#compare(why);
  }

  #compare(why: string): void {
    const now = this.plan();
    if (samePlan(now, this.#reported)) return;
    const before = this.#reported;
    this.#reported = now;
    this.#changes += 1;
    this.#changedAt = this.#host.clock.wall();
    const fmt = (ns: readonly LocalNetwork[]): string[] => ns.map((n) => `${n.prefix} dev ${n.dev}`);
    const body = {
      why,
      allowed: fmt(now.allowed),
      refused: now.refused.map((n) => `${n.prefix} dev ${n.dev}: ${n.reason}`),
      added: fmt(now.allowed.filter((n) => !before.allowed.some((b) => b.prefix === n.prefix && b.dev === n.dev))),
      removed: fmt(before.allowed.filter((b) => !now.allowed.some((n) => n.prefix === b.prefix && n.dev === b.dev))),
    };
    const newlyRefused = now.refused.filter(
      (n) => !before.refused.some((b) => b.prefix === n.prefix && b.dev === n.dev && b.reason === n.reason),
    );
    if (newlyRefused.length > 0) this.#host.log.warn("local networks refused", { refused: body.refused, why });
    this.#host.log.info("local networks allowed outside the tunnel changed", body);
    this.#host.report("detour.local-networks.changed", body);
    this.#host.changed();
  }

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = this.#host.clock.after(
      LOCAL_NETWORKS_RECHECK_MS,
      () => {
        this.refresh("recheck");
        this.#arm();
      },
      { background: true },
    );
  }
}
