/**
 * A fake operating system and network for running the real detourd (main/agent/daemon.ts) without root: a
 * Platform that records every change it is asked for in order (and can be told to fail any of them), engines
 * whose start is scripted per gateway (up after a delay, refused, or silent until their deadline), an in-tunnel
 * prober that answers while the leg's gateway is reachable, and a candidate finder that finds what is configured.
 * Everything runs on a FakeClock.
 */
import { domainLabels, type LinkDns } from "../../main/core/dns-link.ts";
import type { DetourConfig } from "../../main/core/config/schema.ts";
import type { Candidate, CandidateProbe } from "../../main/core/connection/types.ts";
import type { ConnectedRoute } from "../../main/core/net/local-networks.ts";
import type { KillSwitchRules } from "../../main/core/killswitch.ts";
import { parsePrefix, prefixCovers } from "../../main/core/net/address-guard.ts";
import type { EngineErrorCode, TunnelEvent, TunnelUp } from "../../main/core/tunnel/engine-types.ts";
import type { CandidateFinder } from "../../main/agent/candidate-refresh.ts";
import { configuredCandidates } from "../../main/agent/discovery.ts";
import type { Monitor, MonitorOptions } from "../../main/agent/monitor.ts";
import {
  EngineError,
  EventHub,
  type EngineSpec,
  type EngineStartHooks,
  type TunnelEngine,
} from "../../native/engines/engine.ts";
import type {
  DnsSettings,
  FirewallWatchListener,
  LegSource,
  NetworkMonitorListener,
  SleepMonitorListener,
  Platform,
  RouteEntry,
  SpareDevice,
} from "../../native/platform/platform.ts";
import type { FakeClock } from "./fake-clock.ts";

/** How a gateway behaves toward new tunnels and the tunnels it carries. */
export interface GatewayScript {
  /** Answers anything at all: false is a gateway that went silent (tunnels hang to their deadline, probes are lost). */
  reachable: boolean;
  /** Time from an engine's start to its first reply through the tunnel. */
  connectMs: number;
  /** Refuses new tunnels after `connectMs` with this code (e.g. "auth-failed", "unreachable"). */
  refuse?: EngineErrorCode;
  /** In-tunnel round trip. */
  rttMs: number;
  /** What the gateway pushes: routes (none by default) and resolvers (198.19.0.53 by default). */
  pushedRoutes?: string[];
  pushedDns?: string[];
}

export type PlatformStep =
  | "routes.stage"
  | "routes.apply"
  | "routes.clear"
  | "routes.legSource"
  | "routes.legSourceRemove"
  | "dns.apply"
  | "dns.restore"
  | "dns.reassert"
  | "dns.linkApply"
  | "dns.linkRevert"
  | "firewall.killSwitch"
  | "firewall.fallback"
  | "firewall.read"
  | "firewall.backstop"
  | "network.id"
  | "engine.start"
  | "engine.stop";

/** One recorded change, e.g. `{ step: "routes.apply", detail: "dfake-l1 198.19.0.0/24" }`. */
export interface PlatformCall {
  step: PlatformStep;
  detail: string;
  at: number;
}

/** The network the fake engines and prober see, and the record of what the daemon did to the host. */
export class FakeWorld {
  readonly clock: FakeClock;
  readonly gateways = new Map<string, GatewayScript>();
  /** The device's own networks (null: they cannot be read). */
  localNetworks: string[] | null = ["192.168.1.7/24"];
  /** The connected routes local network access reads (null: they cannot be read). */
  connectedRoutes: ConnectedRoute[] | null = [];
  /** The local networks' throws in the protected table (local network access). */
  readonly localThrows = new Set<string>();
  readonly calls: PlatformCall[] = [];
  /** Steps that throw (or reject) when the daemon asks for them. */
  readonly failing = new Set<PlatformStep>();
  readonly engines: FakeEngine[] = [];
  /** The protected table: prefix -> device. */
  readonly routes = new Map<string, string>();
  /** The kernel's leg source rules: preference -> the rule there (one rule per preference, as installLegSource keeps it). */
  readonly legRules = new Map<number, { address: string; table: number; ifname: string }>();
  killSwitch: KillSwitchRules | null = null;
  /** Prefixes put in the protected table while the kill switch in force did not protect them. */
  routedUnprotected = new Set<string>();
  /** In-tunnel probes sent by every fake monitor, and each running monitor's interval by leg (its pace). */
  probesSent = 0;
  readonly probeIntervals = new Map<string, number>();
  /**
   * What the kernel holds in the kill switch's table: the rules' JSON, "fallback", or null (no table). Tests
   * change it behind the daemon's back to play other software rewriting the firewall.
   */
  firewallTable: string | null = null;
  /** The routing backstop: prefixes made unroutable outside a tunnel, and the gateways excepted. */
  backstop: { prefixes: string[]; bypass: string[] } | null = null;
  /** The daemon's firewall watcher, while it watches: tests call changed() as nft monitor would. */
  firewallWatch: FirewallWatchListener | null = null;
  dnsServers: string[] | null = null;
  /**
   * systemd-resolved's per-link DNS by device (null: the host has no resolved, resolv.conf is written). Tests
   * change it behind the daemon's back to play resolved restarting or a network manager reverting a link.
   */
  resolvedLinks: Map<string, LinkDns> | null = null;
  /** The daemon's network monitor subscription: tests report network changes through it. */
  netmon: NetworkMonitorListener | null = null;
  /** The daemon's sleep monitor subscription (logind): tests announce sleep and resume through it. */
  sleepWatch: SleepMonitorListener | null = null;
  /** The daemon's watch on resolv.conf while the tunnel's resolvers are in force: tests call it as inotify would. */
  dnsWatch: (() => void) | null = null;
  #addresses = new Map<string, string>();
  #nextAddress = 1;

  constructor(clock: FakeClock, gateways: Record<string, Partial<GatewayScript>>) {
    this.clock = clock;
    for (const [name, g] of Object.entries(gateways))
      this.gateways.set(name, { reachable: true, connectMs: 100, rttMs: 20, ...g });
  }

  set(gateway: string, change: Partial<GatewayScript>): void {
    const g = this.gateways.get(gateway);
    if (g === undefined) throw new Error(`no gateway ${gateway}`);
    this.gateways.set(gateway, { ...g, ...change });
  }

  record(step: PlatformStep, detail = ""): void {
    this.calls.push({ step, detail, at: this.clock.monotonic() });
    if (this.failing.has(step)) throw new Error(`${step} failed (fake)`);
  }

  /** A tunnel address for a new tunnel to `gateway`; the prober finds the gateway by it. */
  addressFor(gateway: string): string {
    const a = `10.77.${String(this.#nextAddress++)}.2`;
    this.#addresses.set(a, gateway);
    return a;
  }

  gatewayOf(address: string): string | undefined {
    return this.#addresses.get(address);
  }

  /** The engines of a gateway that are up and not stopped. */
  running(gateway?: string): FakeEngine[] {
    return this.engines.filter(
      (e) => e.upAt !== null && !e.stopped && (gateway === undefined || e.spec.gateway.name === gateway),
    );
  }

  /** The device the protected networks go through now, or null. */
  routedVia(): string | null {
    const devs = [...new Set(this.routes.values())];
    return devs.length === 1 ? (devs[0] ?? null) : null;
  }
}

export class FakeEngine implements TunnelEngine {
  readonly protocol: TunnelEngine["protocol"];
  readonly spec: EngineSpec;
  readonly adoptedSpare: boolean;
  readonly #world: FakeWorld;
  readonly #hub = new EventHub();
  upAt: number | null = null;
  stopped = false;
  #cancel: (() => void) | null = null;

  constructor(world: FakeWorld, spec: EngineSpec, adoptedSpare: boolean) {
    this.#world = world;
    this.spec = spec;
    this.protocol = spec.protocol;
    this.adoptedSpare = adoptedSpare;
  }

  get pid(): number | null {
    return this.stopped ? null : 4242;
  }

  start(deadlineAt: number, _signal?: AbortSignal, hooks: EngineStartHooks = {}): Promise<TunnelUp> {
    const world = this.#world;
    const clock = world.clock;
    world.record("engine.start", `${this.spec.gateway.name} ${this.spec.runtime.ifname}`);
    const gw = world.gateways.get(this.spec.gateway.name);
    return new Promise<TunnelUp>((resolve, reject) => {
      const startedWall = clock.wall();
      // The engine's deadline is epoch ms, as real engines take it: the wait is measured from the wall clock now.
      const untilDeadline = Math.max(0, deadlineAt - startedWall);
      const fail = (code: EngineErrorCode, message: string): void => {
        reject(new EngineError(code, message));
      };
      if (gw === undefined || !gw.reachable || gw.connectMs >= untilDeadline) {
        const t = clock.after(untilDeadline, () => {
          fail("timeout", `no reply from ${this.spec.gateway.name} before the deadline`);
        });
        this.#cancel = () => {
          t.cancel();
          fail("cancelled", "stopped while starting");
        };
        return;
      }
      const t = clock.after(gw.connectMs, () => {
        const now = world.gateways.get(this.spec.gateway.name);
        if (now?.refuse !== undefined) {
          fail(now.refuse, `${this.spec.gateway.name} refused the tunnel`);
          return;
        }
        if (now?.reachable !== true) {
          fail("timeout", `${this.spec.gateway.name} went silent`);
          return;
        }
        const address = world.addressFor(this.spec.gateway.name);
        const routed = hooks.beforeProbe?.({ ifname: this.spec.runtime.ifname, address }) ?? Promise.resolve();
        routed.then(
          () => {
            if (this.stopped) {
              fail("cancelled", "stopped while starting");
              return;
            }
            this.upAt = clock.monotonic();
            resolve(this.#up(address, startedWall, gw.rttMs, now));
          },
          (err: unknown) => {
            fail("engine-crashed", `before the first probe: ${String(err)}`);
          },
        );
      });
      this.#cancel = () => {
        t.cancel();
        fail("cancelled", "stopped while starting");
      };
    });
  }

  #up(
    address: string,
    startedWall: number,
    rttMs: number,
    push: { pushedRoutes?: string[]; pushedDns?: string[] },
  ): TunnelUp {
    const clock = this.#world.clock;
    return {
      config: {
        ifname: this.spec.runtime.ifname,
        addresses: [`${address}/32`],
        routes: push.pushedRoutes ?? [],
        dns: push.pushedDns ?? ["198.19.0.53"],
        mtu: 1420,
      },
      timings: {
        spawnedAt: startedWall,
        handshakeAt: clock.wall(),
        firstReplyAt: clock.wall(),
        firstReplyRttMs: rttMs,
      },
      detail: {},
    };
  }

  stop(): Promise<void> {
    if (!this.stopped) this.#world.record("engine.stop", `${this.spec.gateway.name} ${this.spec.runtime.ifname}`);
    this.stopped = true;
    this.#cancel?.();
    this.#cancel = null;
    return Promise.resolve();
  }

  stats(): Promise<{
    rxBytes: number;
    txBytes: number;
    rxPackets: number;
    txPackets: number;
    lastRxAgoMs: number | null;
    subState: string | null;
  }> {
    return Promise.resolve({ rxBytes: 0, txBytes: 0, rxPackets: 0, txPackets: 0, lastRxAgoMs: null, subState: null });
  }

  onEvent(listener: (e: TunnelEvent) => void): () => void {
    return this.#hub.on(listener);
  }

  /** The engine process dies under the daemon. */
  crash(): void {
    this.#hub.emit({
      type: "engine-exit",
      at: this.#world.clock.wall(),
      code: null,
      signal: "SIGKILL",
      expected: false,
    });
  }
}

class FakeSpare implements SpareDevice {
  readonly runtime: { ifname: string; workDir: string };
  usable = true;
  readonly pid = 4243;
  constructor(runtime: { ifname: string; workDir: string }) {
    this.runtime = runtime;
  }
  stop(): Promise<void> {
    this.usable = false;
    return Promise.resolve();
  }
}

/** The Platform the daemon is given: every change goes through FakeWorld.record, in the order asked for. */
export function fakePlatform(world: FakeWorld): Platform {
  const later = <T>(step: PlatformStep, detail: string, apply: () => T): Promise<T> => {
    try {
      world.record(step, detail);
      return Promise.resolve(apply());
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  };
  const routes = {
    stageProtectedRule: (): Promise<RouteEntry[]> =>
      later("routes.stage", "", () => [...world.routes].map(([dst, dev]) => ({ dst, dev }))),
    applyProtectedRoutes: (p: {
      ifname: string;
      routes: readonly string[];
      local?: readonly string[];
    }): Promise<void> =>
      later("routes.apply", `${p.ifname} ${p.routes.join(",")}`, () => {
        world.routes.clear();
        for (const r of p.routes) world.routes.set(r, p.ifname);
        // A prefix sent into a tunnel before the kill switch protects it would leave in clear if the tunnel went.
        const shields = (world.killSwitch?.protectedNetworks ?? []).map(parsePrefix);
        for (const r of p.routes) {
          const route = parsePrefix(r);
          const shielded = route !== null && shields.some((s) => s !== null && prefixCovers(s, route));
          if (world.killSwitch != null && !shielded) world.routedUnprotected.add(r);
        }
        world.localThrows.clear();
        for (const l of p.local ?? []) world.localThrows.add(l);
      }),
    clearProtectedRoutes: (prefixes: readonly string[], opts?: { local?: readonly string[] }): Promise<void> =>
      later("routes.clear", prefixes.join(","), () => {
        for (const r of prefixes) world.routes.delete(r);
        for (const l of opts?.local ?? []) world.localThrows.delete(l);
      }),
    // As routes.linux.ts does: an install replaces whatever rule holds its preference; a removal deletes only
    // the rule that matches address, table and preference.
    installLegSource: (s: LegSource): Promise<void> =>
      later("routes.legSource", `${s.ifname} ${s.address} table ${String(s.table)} pref ${String(s.pref)}`, () => {
        world.legRules.set(s.pref, { address: s.address, table: s.table, ifname: s.ifname });
      }),
    removeLegSource: (s: LegSource): Promise<void> =>
      later(
        "routes.legSourceRemove",
        `${s.ifname} ${s.address} table ${String(s.table)} pref ${String(s.pref)}`,
        () => {
          const r = world.legRules.get(s.pref);
          if (r?.address === s.address && r.table === s.table) world.legRules.delete(s.pref);
        },
      ),
  };
  return {
    name: "fake",
    routes,
    dns: {
      apply: (settings: DnsSettings) => {
        if (settings.servers.length === 0) return;
        world.record("dns.apply", settings.servers.join(","));
        world.dnsServers = settings.servers;
      },
      restore: () => {
        if (world.dnsServers === null) return false;
        world.record("dns.restore");
        world.dnsServers = null;
        return true;
      },
      reassert: (settings: DnsSettings) => {
        if (world.dnsServers !== null && world.dnsServers.join() === settings.servers.join()) return false;
        world.record("dns.reassert", settings.servers.join(","));
        world.dnsServers = settings.servers;
        return true;
      },
      watch: (_files, changed) => {
        world.dnsWatch = changed;
        return () => {
          world.dnsWatch = null;
        };
      },
      links: {
        backend: () => Promise.resolve(world.resolvedLinks === null ? "resolv.conf" : "resolved"),
        apply: (ifname, l) =>
          Promise.resolve().then(() => {
            world.record("dns.linkApply", `${ifname} ${l.servers.join(",")} ${domainLabels(l).join(",")}`);
            world.resolvedLinks?.set(ifname, structuredClone(l));
          }),
        revert: (ifname) =>
          Promise.resolve().then(() => {
            world.record("dns.linkRevert", ifname);
            return world.resolvedLinks?.delete(ifname) ?? false;
          }),
        read: (ifname) =>
          Promise.resolve(world.resolvedLinks?.get(ifname) ?? { servers: [], domains: [], defaultRoute: false }),
      },
    },
    firewall: {
      applyKillSwitch: (rules) =>
        later("firewall.killSwitch", rules?.mode ?? "off", () => {
          world.killSwitch = rules;
          world.firewallTable = rules === null ? null : JSON.stringify(rules);
        }),
      applyKillSwitchFallback: (p) =>
        later("firewall.fallback", `${p.tunnelDevices.join(",")} gid ${String(p.ownGroup)}`, () => {
          world.killSwitch = null;
          world.firewallTable = "fallback";
        }),
      readKillSwitch: () => later("firewall.read", "", () => world.firewallTable),
      applyBackstop: (b) =>
        later("firewall.backstop", b === null ? "off" : `${b.prefixes.join(",")} bypass ${b.bypass.join(",")}`, () => {
          world.backstop = b === null ? null : { prefixes: [...b.prefixes], bypass: [...b.bypass] };
        }),
      watchFirewall: (listener) => {
        world.firewallWatch = listener;
        return {
          stop: () => {
            if (world.firewallWatch === listener) world.firewallWatch = null;
          },
        };
      },
      drillBlock: {
        apply: () => Promise.resolve(),
        remove: () => Promise.resolve(),
        present: () => Promise.resolve(false),
      },
    },
    network: {
      networkId: () => later("network.id", "", () => "fake-network"),
      localNetworks: () =>
        world.localNetworks === null
          ? Promise.reject(new Error("ip address show failed (fake)"))
          : Promise.resolve(world.localNetworks.map((prefix) => ({ dev: "eth0", prefix }))),
      connectedRoutes: () =>
        world.connectedRoutes === null
          ? Promise.reject(new Error("ip route show failed (fake)"))
          : Promise.resolve(world.connectedRoutes.map((r) => ({ ...r }))),
    },
    engines: {
      create: (spec, spare) => {
        const e = new FakeEngine(world, spec, spare !== undefined);
        world.engines.push(e);
        return e;
      },
      launchSpare: (runtime) => Promise.resolve(new FakeSpare(runtime)),
    },
    netmon: {
      subscribe: (listener) => {
        world.netmon = listener;
        return {
          stop: () => {
            if (world.netmon === listener) world.netmon = null;
          },
          recheck: () => undefined,
        };
      },
    },
    sleep: {
      subscribe: (listener) => {
        world.sleepWatch = listener;
        return {
          stop: () => {
            if (world.sleepWatch === listener) world.sleepWatch = null;
          },
        };
      },
    },
  };
}

/** The in-tunnel prober: a probe through a leg is answered after its gateway's RTT while the gateway is reachable. */
export function fakeProber(world: FakeWorld): (opts: MonitorOptions) => Monitor {
  return (opts) => {
    const clock = world.clock;
    const gateway = world.gatewayOf(opts.sourceAddress);
    const inFlight = new Map<number, number>();
    let newestAnswered = Number.NEGATIVE_INFINITY;
    let seq = 0;
    let stopped = false;
    let intervalMs = opts.intervalMs;
    let next: { cancel(): void } | null = null;
    world.probeIntervals.set(opts.legId, intervalMs);
    const tick = (): void => {
      if (stopped) return;
      world.probesSent++;
      const s = ++seq;
      const sentAt = clock.monotonic();
      inFlight.set(s, sentAt);
      const gw = gateway === undefined ? undefined : world.gateways.get(gateway);
      if (gw?.reachable === true) {
        clock.after(gw.rttMs, () => {
          if (stopped || !inFlight.delete(s)) return;
          newestAnswered = Math.max(newestAnswered, sentAt);
          opts.onSample({ seq: s, sentAt, rttMs: gw.rttMs });
        });
      }
      clock.after(opts.timeoutMs, () => {
        if (stopped || !inFlight.delete(s)) return;
        opts.onSample({ seq: s, sentAt, rttMs: null });
      });
      next = clock.after(intervalMs, tick);
    };
    tick();
    return {
      stop: () => {
        stopped = true;
        next?.cancel();
        inFlight.clear();
        if (world.probeIntervals.get(opts.legId) === intervalMs) world.probeIntervals.delete(opts.legId);
      },
      setInterval: (ms) => {
        if (stopped || ms === intervalMs) return;
        const faster = ms < intervalMs;
        intervalMs = ms;
        world.probeIntervals.set(opts.legId, ms);
        next?.cancel();
        if (faster) tick();
        else next = clock.after(ms, tick);
      },
      get outstanding() {
        return inFlight.size;
      },
      pendingSince: () => {
        for (const sentAt of inFlight.values()) if (sentAt > newestAnswered) return sentAt;
        return null;
      },
    };
  };
}

/** Discovery finds the configured gateways; each probe answers when the gateway is reachable. */
export function fakeFinder(world: FakeWorld): CandidateFinder {
  return {
    discover: (config: DetourConfig) => Promise.resolve(configuredCandidates(config)),
    probe: (candidates: readonly Candidate[]) =>
      Promise.resolve(
        candidates.map((c): CandidateProbe => {
          const gw = world.gateways.get(c.name);
          const ok = gw?.reachable === true;
          return {
            at: world.clock.wall(),
            latencyMs: ok ? gw.rttMs : null,
            reachable: {},
            ...(c.address === null ? {} : { address: c.address }),
            answered: ok,
          };
        }),
      ),
  };
}
