/**
 * The spare wireguard-go: one is kept started ahead of the next WireGuard leg (device and socket, no address, no
 * peer), which adopts it and only configures it. It is prepared when WireGuard is offered and the daemon is not
 * racing (its start would compete with the race for the CPU); failing starts are retried a few times, further
 * apart each time, then left (connects simply start their own).
 */
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import type { DetourConfig } from "../core/config/schema.ts";
import type { Leg } from "../core/connection/types.ts";
import { legAllowed } from "../core/policy/apply.ts";
import type { PlatformEngines, SpareDevice } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import { spareIfname } from "./engine-spec.ts";
import type { Logger } from "./log.ts";

/** The first spare waits this long after start-up, so a connect at launch has the CPU to itself. */
export const SPARE_FIRST_DELAY_MS = 1000;
/** After a leg adopts the spare, the next one is prepared this much later (after the race and route change). */
export const SPARE_REFILL_DELAY_MS = 1500;
/** While racing, a spare's start waits; also the base of the backoff after a failed start. */
export const SPARE_BUSY_RETRY_MS = 1000;
/** After this many failed starts in a row no spare is prepared any more; connects start their own wireguard-go. */
export const SPARE_MAX_FAILURES = 4;
/** A spare's start (claim, spawn, device and socket) past this is given up. */
export const SPARE_START_BUDGET_MS = 5000;

export interface SparePoolHost {
  config(): DetourConfig;
  /** The device has a WireGuard identity: without one no WireGuard leg can run. */
  hasWireGuardIdentity: boolean;
  /** Racing or failing over: a spare's start waits. */
  busy(): boolean;
  workDir: string;
  ifnamePrefix: string;
  track(p: Promise<unknown>): void;
  log: Logger;
}

export class WireGuardSparePool {
  readonly #host: SparePoolHost;
  readonly #engines: PlatformEngines;
  readonly #clock: Clock;
  #spare: SpareDevice | null = null;
  #launch: AbortController | null = null;
  #timer: Timer | null = null;
  #failures = 0;
  #count = 0;
  #stopped = false;

  constructor(host: SparePoolHost, engines: PlatformEngines, clock: Clock) {
    this.#host = host;
    this.#engines = engines;
    this.#clock = clock;
  }

  /** Prepares the first spare, a little after start-up. */
  warmUp(): void {
    this.#schedule(SPARE_FIRST_DELAY_MS);
  }

  /** The spare a starting leg adopts (a WireGuard leg, when one is ready), or null; a WireGuard leg also orders the next. */
  forLeg(leg: Leg): SpareDevice | null {
    if (leg.kind !== "wireguard") return null;
    const spare = this.#spare?.usable === true ? this.#spare : null;
    // The engine adopts it (or, if it never starts, removes it with itself); a new one is prepared later.
    if (spare !== null) this.#spare = null;
    this.#schedule(SPARE_REFILL_DELAY_MS);
    return spare;
  }

  /** No spare any more: the timer, a start under way and a ready spare all go. */
  async shutdown(): Promise<void> {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = null;
    this.#launch?.abort();
    const spare = this.#spare;
    this.#spare = null;
    await spare?.stop().catch((err: unknown) => {
      this.#host.log.error("wireguard spare stop failed", { err });
    });
  }

  /**
   * Prepares a spare wireguard-go after `delayMs`, when none is ready or starting: WireGuard is offered by some
   * gateway, and the daemon is not racing.
   */
  #schedule(delayMs: number): void {
    if (this.#stopped || this.#timer !== null || this.#launch !== null || this.#spare?.usable === true) return;
    if (this.#failures >= SPARE_MAX_FAILURES) return;
    const cfg = this.#host.config();
    if (
      !cfg.gateways.some((g) => legAllowed(cfg, { gateway: g.name, kind: "wireguard" })) ||
      !this.#host.hasWireGuardIdentity
    )
      return;
    this.#timer = this.#clock.after(
      delayMs,
      () => {
        this.#timer = null;
        this.#host.track(this.#start());
      },
      { background: true },
    );
  }

  async #start(): Promise<void> {
    if (this.#host.busy()) {
      this.#schedule(SPARE_BUSY_RETRY_MS);
      return;
    }
    if (this.#spare !== null) {
      // Its process died while it waited: remove what is left, then start another.
      const dead = this.#spare;
      this.#spare = null;
      await dead.stop().catch(() => undefined);
    }
    this.#count = (this.#count % 99) + 1;
    const ac = new AbortController();
    this.#launch = ac;
    let ifname: string | null = null;
    try {
      ifname = spareIfname(this.#host.ifnamePrefix, this.#count);
      const workDir = mkdtempSync(join(this.#host.workDir, "spare-"));
      const spare = await this.#engines.launchSpare(
        { ifname, workDir },
        this.#clock.wall() + SPARE_START_BUDGET_MS,
        ac.signal,
      );
      if (this.#stopped) {
        await spare.stop();
        return;
      }
      this.#spare = spare;
      this.#failures = 0;
      this.#host.log.info("wireguard spare ready", { ifname, pid: spare.pid });
    } catch (err) {
      this.#failures += 1;
      if (!this.#stopped)
        this.#host.log.warn("wireguard spare could not start", { ifname, err, failures: this.#failures });
      this.#launch = null;
      this.#schedule(SPARE_BUSY_RETRY_MS * 2 ** this.#failures);
    } finally {
      this.#launch = null;
    }
  }
}
