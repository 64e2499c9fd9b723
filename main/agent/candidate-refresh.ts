/**
 * Candidate refresh: discovery (DNS, the portal) plus port probes from outside the tunnel, run before the first
 * connect, in the background after one, and whenever the machine asks (resolve-candidates, between races). It
 * keeps the latest candidates and the gateway the user chose, and feeds the machine what it may race.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import { allKindsUnreachable, probedSilent } from "../core/connection/candidates.ts";
import type { Candidate, CandidateProbe, ConnectionStateName, MachineInput } from "../core/connection/types.ts";
import { restrictCandidates } from "../core/policy/apply.ts";
import type { Clock, Timer } from "./clock.ts";
import {
  discoverCandidates,
  gatewayPorts,
  probeCandidates,
  withProbe,
  type DiscoveryProblem,
  type ProbeOptions,
} from "./discovery.ts";
import type { Logger } from "./log.ts";
import { gatewayAddressRefusal } from "../core/net/address-guard.ts";

/** DNS and portal answers are round trips to nearby servers; past this a slow source is skipped. */
const DISCOVERY_TIMEOUT_MS = 2000;
/**
 * With a warm candidate list the race needs nothing new, so the refresh waits this long: DNS lookups and port
 * probes (a dozen processes and sockets) would otherwise compete with the race's engines for the CPU.
 */
const DISCOVERY_AFTER_CONNECT_MS = 2000;
/** Port probes decide ranking, not reachability (the race decides that); a silent port must not stall rechecks. */
const PROBE_TIMEOUT_MS = 1000;
/**
 * While a race runs, an answer older than this is probed again with the silent gateways: a race (a failover after
 * a connected period) plans from results up to the connected recheck interval (30 s) old, and a gateway that
 * stopped answering since is then ranked behind the ones that answer within a probe timeout of the race's start.
 * 2 s re-probes each answering gateway at most once per 2 s of racing, a TCP handshake each.
 */
export const RACE_STALE_ANSWER_MS = 2000;

/** Where candidates come from: the network (discovery.ts) in detourd, a script in tests. */
export interface CandidateFinder {
  discover(
    config: DetourConfig,
    opts: { timeoutMs: number; onProblem(problem: DiscoveryProblem): void; guard(address: string): string | null },
  ): Promise<Candidate[]>;
  probe(candidates: readonly Candidate[], opts: ProbeOptions): Promise<CandidateProbe[]>;
}

export const networkFinder: CandidateFinder = {
  discover: (config, opts) => discoverCandidates(config, opts),
  probe: (candidates, opts) => probeCandidates(candidates, opts),
};

export interface CandidateHost {
  config(): DetourConfig;
  /** The configured gateways, as the machine knows them. */
  configured(): Candidate[];
  stateName(): ConnectionStateName;
  now(): number;
  dispatch(input: MachineInput): void;
  /** Puts the kill switch for the candidates known now in force. */
  refreshKillSwitch(): void;
  /** Throws gateways learned while the protected routes are in force out of the protected table. */
  bypassNewGateways(): void;
  /** Settles once the route changes (and kill switch) asked for so far are done. */
  routesSettled(): Promise<void>;
  /** The device's own networks on the underlay (tunnel devices left out); rejects when they cannot be read. */
  localNetworks(): Promise<string[]>;
  /** Reports a gateway address refused (status shows it); the caller logs a new one. */
  refuse(r: { kind: "gateway-address"; source: string; gateway: string; value: string; reason: string }): void;
  track(p: Promise<unknown>): void;
  log: Logger;
}

export class CandidateRefresh {
  readonly #host: CandidateHost;
  readonly #finder: CandidateFinder;
  readonly #clock: Clock;
  #candidates: Candidate[] = [];
  /** Discovered but not yet probed: the kill switch lets the probes reach them while it blocks. */
  #probing: Candidate[] = [];
  #timer: Timer | null = null;
  /** When (monotonic) each candidate's last probe result came in. */
  readonly #probedAt = new Map<string, number>();
  /** The gateway the user chose (set-gateway), or null for automatic: only it is raced while set. */
  choice: string | null = null;

  constructor(host: CandidateHost, finder: CandidateFinder, clock: Clock) {
    this.#host = host;
    this.#finder = finder;
    this.#clock = clock;
  }

  /** The candidates with their latest probe results, or the configured gateways before any discovery. */
  list(): Candidate[] {
    return this.#candidates.length > 0 ? this.#candidates : this.#host.configured();
  }

  /** Configured and discovered candidates: their addresses never go into the tunnel. */
  known(): Candidate[] {
    return [...this.#host.configured(), ...this.#candidates];
  }

  /** Every candidate whose endpoints the kill switch must allow: known ones and those being probed. */
  reachable(): Candidate[] {
    return [...this.known(), ...this.#probing];
  }

  /** The candidate a leg to `gateway` connects to: discovered (probed address) first, else configured. */
  find(gateway: string): Candidate | undefined {
    return this.#candidates.find((c) => c.name === gateway) ?? this.#host.configured().find((c) => c.name === gateway);
  }

  /** The candidates the machine may race: all of them, or only the chosen gateway. */
  allowed(candidates: Candidate[]): Candidate[] {
    const choice = this.choice;
    return choice === null ? candidates : candidates.filter((c) => c.name === choice);
  }

  /** A new configuration: candidates it no longer allows go; a gateway allowed again brings a discovery round. */
  reconfigure(config: DetourConfig): void {
    const known = new Set(this.#candidates.map((c) => c.name));
    this.#candidates = restrictCandidates(this.#candidates, config);
    if (this.#candidates.length > 0 && config.gateways.some((g) => !known.has(g.name)))
      this.#host.track(this.discover());
  }

  /**
   * The device moved to another network (or got one back): what the probes saw from the old one says nothing now,
   * and "no gateway answered" from an offline network would make the next connect wait for a full discovery round.
   * The candidates stay (with their addresses), unranked by probes, until the next round probes them again.
   */
  forgetProbes(): void {
    this.#candidates = this.#candidates.map((c) => ({ ...c, probe: null }));
  }

  stop(): void {
    this.#timer?.cancel();
    this.#timer = null;
  }

  /**
   * Answers resolve-candidates. When connecting and every configured gateway has an address, the race starts
   * at once from the configuration: DNS and port probes on a hostile network can take seconds, and the race
   * itself is the best probe. Discovery then runs in the background for status and later rechecks.
   */
  async resolve(): Promise<void> {
    const host = this.#host;
    const phase = host.stateName();
    const configured = host.configured();
    // Probes that found no way to any gateway (offline, no route) are news from a network that may have come
    // back since: a retry looks again rather than racing nothing on their word.
    const hopeless = this.#candidates.length > 0 && this.#candidates.every(allKindsUnreachable);
    if (phase === "resolving" && configured.every((c) => c.address !== null) && !hopeless) {
      const warm = this.#candidates.length > 0;
      host.dispatch({
        type: "candidates",
        now: host.now(),
        candidates: this.allowed(warm ? this.#candidates : configured),
      });
      if (!warm) {
        host.track(this.discover());
      } else if (this.#timer === null) {
        this.#timer = this.#clock.after(DISCOVERY_AFTER_CONNECT_MS, () => {
          this.#timer = null;
          host.track(this.discover());
        });
      }
      return;
    }
    const silent = this.#candidates.filter(probedSilent);
    const now = host.now();
    const stale = this.#candidates.filter(
      (c) =>
        !probedSilent(c) && c.probe !== null && now - (this.#probedAt.get(c.name) ?? -Infinity) > RACE_STALE_ANSWER_MS,
    );
    if ((phase === "racing" || phase === "failing-over") && silent.length + stale.length > 0) {
      await this.#recheckSilent(silent, stale);
      return;
    }
    const started = host.now();
    const candidates = this.allowed(await this.discover());
    if (phase !== "connected")
      host.log.info("candidates rechecked", {
        phase,
        ms: host.now() - started,
        answered: candidates.filter((c) => c.probe?.answered === true).map((c) => c.name),
        silent: candidates.filter((c) => c.probe?.answered === false).map((c) => c.name),
      });
    // An empty list would make the machine fall back to every configured gateway; the chosen one stays.
    host.dispatch({
      type: "candidates",
      now: host.now(),
      candidates: candidates.length > 0 ? candidates : this.allowed(host.configured()),
    });
  }

  /**
   * While a race runs, the machine asks again every RACE_RECHECK_MS whether a silent gateway came back (it then
   * races it at once) and whether an answering one whose answer is stale went silent (it is then ranked behind the
   * ones that answer). Only those are probed, each on its own; the first silent one that answers is reported at once
   * rather than after the others' timeout; otherwise the round ends when every probe has.
   */
  async #recheckSilent(silent: readonly Candidate[], stale: readonly Candidate[] = []): Promise<void> {
    const host = this.#host;
    const cfg = host.config();
    const started = host.now();
    const answered: string[] = [];
    const report = (): void => {
      host.log.info("silent gateways rechecked", {
        phase: host.stateName(),
        ms: Math.round(host.now() - started),
        answered,
        silent: silent.map((c) => c.name).filter((n) => !answered.includes(n)),
        ...(stale.length > 0 ? { stale: stale.map((c) => c.name) } : {}),
      });
      host.dispatch({ type: "candidates", now: host.now(), candidates: this.allowed(this.#candidates) });
    };
    await new Promise<void>((resolve) => {
      const all = [...silent, ...stale];
      let left = all.length;
      let reported = false;
      const settle = (c: Candidate, probe: CandidateProbe | undefined): void => {
        left -= 1;
        const back = probe?.answered === true && silent.includes(c);
        if (probe !== undefined) {
          this.#candidates = this.#candidates.map((x) => (x.name === c.name ? withProbe(x, probe) : x));
          this.#probedAt.set(c.name, host.now());
          if (back) answered.push(c.name);
        }
        if (!reported && (back || left === 0)) {
          reported = true;
          report();
          resolve();
        }
      };
      for (const c of all) {
        const incumbents = c.address === null ? {} : { [c.name]: c.address };
        this.#finder.probe([c], { timeoutMs: PROBE_TIMEOUT_MS, ports: gatewayPorts(cfg), incumbents }).then(
          (probes) => {
            settle(c, probes[0]);
          },
          (err: unknown) => {
            host.log.warn("probe failed", { gateway: c.name, err });
            settle(c, undefined);
          },
        );
      }
    });
  }

  /** Discovery plus port probes, bounded; never throws (problems are logged, configured gateways remain). */
  async discover(): Promise<Candidate[]> {
    const host = this.#host;
    const cfg = host.config();
    const log = host.log;
    let candidates: Candidate[];
    try {
      // A gateway address from DNS or the portal becomes a kill-switch allowance: none may point at the machine,
      // its LAN or an intranet host. Without the local networks nothing learned can be judged, so it is refused.
      const local = await host.localNetworks().catch((err: unknown) => {
        log.error("the local networks could not be read; addresses from DNS and the portal are refused", { err });
        return null;
      });
      const guard = (a: string): string | null =>
        gatewayAddressRefusal(a, { protectedNetworks: cfg.protectedRoutes, localNetworks: local ?? [] }) ??
        (local === null ? "the device's own networks could not be read, so it cannot be judged" : null);
      candidates = await this.#finder.discover(cfg, {
        timeoutMs: DISCOVERY_TIMEOUT_MS,
        onProblem: (problem) => {
          log.warn("discovery problem", { problem });
          const r = problem.refused;
          if (r !== undefined)
            host.refuse({
              kind: "gateway-address",
              source: problem.source,
              gateway: r.gateway,
              value: r.address,
              reason: r.reason,
            });
        },
        guard,
      });
      // While connecting the kill switch blocks the underlay: the probes need the discovered endpoints (both
      // families) allowed before they are sent, or a silent family would be the kill switch's doing.
      this.#probing = candidates;
      host.refreshKillSwitch();
      // Nor may they (or a leg to a gateway at a new address) go into the tunnel: a full tunnel covers them.
      host.bypassNewGateways();
      await host.routesSettled();
      // The addresses in use now are the incumbents of each gateway's address-family choice (hysteresis).
      const incumbents = Object.fromEntries(
        this.#candidates.flatMap((c) => (c.address === null ? [] : [[c.name, c.address]])),
      );
      const probes = await this.#finder.probe(candidates, {
        timeoutMs: PROBE_TIMEOUT_MS,
        ports: gatewayPorts(cfg),
        incumbents,
      });
      candidates = candidates.map((c, i) => {
        const p = probes[i];
        return p === undefined ? c : withProbe(c, p);
      });
    } catch (err) {
      log.warn("discovery failed; using the configured gateways", { err });
      candidates = host.configured();
    }
    this.#candidates = candidates;
    const at = host.now();
    for (const c of candidates) if (c.probe !== null) this.#probedAt.set(c.name, at);
    this.#probing = [];
    host.refreshKillSwitch();
    // A race that started before these probes came back re-plans its pending legs: gateways that answered go
    // before gateways found silent (a connect at launch, or straight after a network change).
    const offered = this.allowed(candidates);
    if (host.stateName() === "racing" && offered.length > 0)
      host.dispatch({ type: "candidates", now: host.now(), candidates: offered });
    return candidates;
  }
}
