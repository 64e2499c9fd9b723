/**
 * The tunnels' path MTU while detourd runs: each leg's device MTU is checked with full-size echoes (DF set) as soon
 * as its first small echo came back, and again every PMTU_RECHECK_MS while it carries the traffic, because a hop
 * whose MTU is smaller than the tunnel's and whose ICMP "fragmentation needed" never arrives swallows every
 * full-size packet while the monitor's small probes say all is well (a black hole: SSH and downloads stall).
 * Full-size packets vanishing while small ones pass lowers the device's MTU to the largest size that crosses; when
 * not even MIN_TUNNEL_MTU crosses, the leg is given up (a racing leg fails, the active one fails over). The TCP MSS
 * clamp on the tunnel devices (for traffic the host forwards: containers, VMs) is put in force with the first
 * active leg and removed at exit. Every change is reported: status, an event, telemetry.
 */
import type { Leg, PathMtuChange, PathMtuEvent } from "../core/connection/types.ts";
import type { PathMtuStatus } from "../core/protocol/messages.ts";
import { checkPath, type PathVerdict } from "../core/tunnel/mtu.ts";
import type { TunnelUp } from "../core/tunnel/engine-types.ts";
import type { PlatformMtu } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/**
 * How often the active tunnel is checked with a full-size echo: a path that changes under a connected tunnel (a
 * new hop, a tunnel nested under ours) is found within 10 s, at the cost of two echoes of the tunnel's MTU.
 */
export const PMTU_RECHECK_MS = 10_000;
/**
 * How long a size's echoes are waited for: three of the leg's round trips plus scheduling slack, and at least
 * 300 ms (a busy 2-core laptop), at most 2 s (a search waits this out for every size that does not cross).
 */
export const PMTU_WAIT_MIN_MS = 300;
export const PMTU_WAIT_MAX_MS = 2000;

export function probeWaitMs(rttMs: number | null): number {
  const rtt = rttMs ?? 100;
  return Math.min(PMTU_WAIT_MAX_MS, Math.max(PMTU_WAIT_MIN_MS, Math.round(3 * rtt + 100)));
}

export interface PathMtuHost {
  /** Where the echoes go: the configured probe target behind the gateways. */
  probeTarget(): string;
  /** The clamp covers `<prefix>-*` and kernel-libipsec's `ipsec*` devices. */
  ifnamePrefix: string;
  clock: Clock;
  log: Logger;
  track(p: Promise<unknown>): void;
  /** A change worth an event and telemetry (wall time). */
  report(e: PathMtuEvent): void;
  /** The active leg's path carries no usable size any more: the machine fails over. */
  blackHole(legId: string, reason: string): void;
}

interface Watched {
  leg: Leg;
  ifname: string;
  mtu: number;
  rttMs: number | null;
  timer: Timer | null;
  running: boolean;
}

export class PathMtuGuard {
  readonly #host: PathMtuHost;
  readonly #platform: PlatformMtu;
  /** Each leg's device MTU as this guard last set or confirmed it. */
  readonly #mtus = new Map<string, number>();
  #watched: Watched | null = null;
  /** The probes' idle pace (core/connection/pace.ts): no user traffic, so no full-size rechecks either. */
  #idle = false;
  /** When the last periodic check of the watched leg ran (monotonic); a resumed recheck keeps its rhythm. */
  #lastRecheckAt = Number.NEGATIVE_INFINITY;
  #clamp: "in-force" | "off" | "failed" = "off";
  readonly #status: PathMtuStatus = {
    ifname: null,
    mtu: null,
    mssClamp: "off",
    lastCheckAt: null,
    lastVerdict: null,
    lowered: 0,
    blackHoles: 0,
    lastError: null,
  };

  constructor(host: PathMtuHost, platform: PlatformMtu) {
    this.#host = host;
    this.#platform = platform;
  }

  status(): PathMtuStatus {
    const w = this.#watched;
    return {
      ...this.#status,
      ifname: w?.ifname ?? null,
      mtu: w === null ? null : (this.#mtus.get(w.leg.id) ?? w.mtu),
      mssClamp: this.#clamp,
    };
  }

  /**
   * A leg's first check, once its first small echo came back: its device's MTU crosses, or is lowered to what
   * does. Resolves the verdict (null when the engine did not report an MTU, or the probe could not run). Never
   * rejects.
   */
  async checkNew(leg: Leg, up: TunnelUp, rttMs: number | null, alive: () => boolean): Promise<PathVerdict | null> {
    const mtu = up.config.mtu;
    if (mtu === null) return null;
    return this.#check(leg, up.config.ifname, mtu, rttMs, alive);
  }

  /** The active leg: periodic checks of its device and the MSS clamp in force. Replaces the leg watched before. */
  watch(leg: Leg, up: TunnelUp, rttMs: number | null): void {
    if (this.#watched?.leg.id === leg.id) return;
    this.unwatch();
    this.#ensureClamp();
    const mtu = this.#mtus.get(leg.id) ?? up.config.mtu;
    if (mtu === null) return;
    this.#watched = { leg, ifname: up.config.ifname, mtu, rttMs, timer: null, running: false };
    this.#arm();
  }

  /** The device MTU this guard last set or confirmed for a leg, if any. */
  mtuOf(legId: string): number | null {
    return this.#mtus.get(legId) ?? null;
  }

  /** Stops the periodic checks if `legId` (any leg when absent) is the one watched: it is no longer active. */
  unwatch(legId?: string): void {
    const w = this.#watched;
    if (w !== null && (legId === undefined || w.leg.id === legId)) {
      w.timer?.cancel();
      this.#watched = null;
    }
  }

  /** The leg stopped: no more checks, and its MTU is forgotten. */
  forget(legId: string): void {
    this.unwatch(legId);
    this.#mtus.delete(legId);
  }

  /** Removes the MSS clamp (exit). Throws when it could not. */
  async shutdown(): Promise<void> {
    this.unwatch();
    if (this.#clamp === "off") return;
    await this.#platform.applyMssClamp(null);
    this.#clamp = "off";
  }

  /**
   * The probes' pace: while the tunnel is idle a black hole hurts nobody, so the full-size rechecks (two echoes of
   * the tunnel's MTU every 10 s, most of an idle tunnel's bytes) pause; with traffic they resume, at once when the
   * last one is older than PMTU_RECHECK_MS.
   */
  setPace(pace: "fast" | "slow"): void {
    this.#idle = pace === "slow";
    const w = this.#watched;
    if (w === null) return;
    if (this.#idle) {
      w.timer?.cancel();
      w.timer = null;
    } else if (w.timer === null && !w.running) {
      this.#arm(Math.max(0, this.#lastRecheckAt + PMTU_RECHECK_MS - this.#host.clock.monotonic()));
    }
  }

  #arm(afterMs: number = PMTU_RECHECK_MS): void {
    const w = this.#watched;
    if (w === null || this.#idle) return;
    w.timer = this.#host.clock.after(afterMs, () => {
      w.timer = null;
      if (this.#watched !== w || w.running || this.#idle) return;
      w.running = true;
      this.#lastRecheckAt = this.#host.clock.monotonic();
      this.#host.track(
        this.#check(w.leg, w.ifname, this.#mtus.get(w.leg.id) ?? w.mtu, w.rttMs, () => this.#watched === w).then(
          (v) => {
            w.running = false;
            if (this.#watched !== w) return;
            if (v?.kind === "black-hole") {
              this.#host.blackHole(w.leg.id, blackHoleReason(w.leg, v.from));
              return;
            }
            if (this.#clamp === "failed") this.#ensureClamp();
            this.#arm();
          },
        ),
      );
    });
  }

  /** Checks one device's MTU, lowers it when a smaller size crosses, and reports what changed. Never rejects. */
  async #check(
    leg: Leg,
    ifname: string,
    mtu: number,
    rttMs: number | null,
    alive: () => boolean,
  ): Promise<PathVerdict | null> {
    const target = this.#host.probeTarget();
    const waitMs = probeWaitMs(rttMs);
    const failed: { error: string | null } = { error: null };
    const probe = (size: number): Promise<boolean> =>
      Promise.resolve()
        .then(() => this.#platform.probeSize({ ifname, target, size, waitMs }))
        .catch((err: unknown) => {
          failed.error = err instanceof Error ? err.message : String(err);
          return false;
        });
    const verdict = await checkPath(mtu, probe);
    if (failed.error !== null) {
      // A probe that cannot run says nothing about the path: nothing is changed or failed, and status says why.
      this.#status.lastError = `path MTU probe failed: ${failed.error}`;
      this.#host.log.error("path MTU probe failed", { leg, ifname, err: failed.error });
      return null;
    }
    // A leg stopped meanwhile (a race's loser, a failover): its device is gone and nothing is worth reporting.
    if (!alive()) return verdict;
    this.#status.lastCheckAt = this.#host.clock.wall();
    this.#status.lastVerdict = verdict.kind;
    const log = this.#host.log;
    switch (verdict.kind) {
      case "ok":
        this.#mtus.set(leg.id, mtu);
        return verdict;
      case "silent":
        // Not a size problem: the in-tunnel monitor decides whether the tunnel is dead.
        return verdict;
      case "lowered":
        try {
          await this.#platform.setLinkMtu(ifname, verdict.mtu);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          this.#status.lastError = message;
          log.error("path MTU: could not lower the tunnel's MTU", { leg, ifname, to: verdict.mtu, err });
          this.#report(leg, ifname, "lower-failed", mtu, verdict.mtu, message);
          return verdict;
        }
        this.#mtus.set(leg.id, verdict.mtu);
        this.#status.lowered += 1;
        this.#status.lastError = null;
        log.warn("path MTU black hole: tunnel MTU lowered", { leg, ifname, from: mtu, to: verdict.mtu });
        this.#report(
          leg,
          ifname,
          "lowered",
          mtu,
          verdict.mtu,
          `packets of ${String(mtu)} bytes vanish on the path to ${leg.gateway} while ${String(verdict.mtu)} cross`,
        );
        return verdict;
      case "black-hole":
        this.#status.blackHoles += 1;
        log.warn("path MTU black hole: no usable size crosses", { leg, ifname, from: mtu });
        this.#report(leg, ifname, "black-hole", mtu, null, blackHoleReason(leg, mtu));
        return verdict;
    }
  }

  #ensureClamp(): void {
    if (this.#clamp === "in-force") return;
    const devices = [`${this.#host.ifnamePrefix}-*`, "ipsec*"];
    this.#host.track(
      this.#platform.applyMssClamp(devices).then(
        () => {
          const was = this.#clamp;
          this.#clamp = "in-force";
          if (was === "failed") this.#status.lastError = null;
        },
        (err: unknown) => {
          const message = err instanceof Error ? err.message : String(err);
          const first = this.#clamp !== "failed";
          this.#clamp = "failed";
          this.#status.lastError = message;
          this.#host.log.error("TCP MSS clamp could not be applied", { err });
          const w = this.#watched;
          if (first && w !== null) this.#report(w.leg, w.ifname, "clamp-failed", null, null, message);
        },
      ),
    );
  }

  #report(
    leg: Leg,
    ifname: string,
    change: PathMtuChange,
    from: number | null,
    to: number | null,
    detail: string,
  ): void {
    this.#host.report({
      type: "path-mtu",
      at: this.#host.clock.wall(),
      legId: leg.id,
      gateway: leg.gateway,
      protocol: leg.kind,
      ifname,
      change,
      from,
      to,
      detail,
    });
  }
}

function blackHoleReason(leg: Leg, from: number): string {
  return `path MTU black hole: packets of ${String(from)} bytes vanish on the path to ${leg.gateway} while small ones pass, and nothing of 1280 bytes crosses`;
}
