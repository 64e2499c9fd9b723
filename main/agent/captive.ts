/**
 * detourd's captive-network handling: checks the network (the check URL fetched outside the tunnel, its host looked
 * up with the network's resolvers), says "Sign in to this network" with the reason, opens the kill switch's bounded
 * sign-in exception while the user signs in, and closes it (and connects) once the check answers normally again.
 * The verdicts are core's (main/core/captive.ts); this module owns the I/O's order, the timers and the status.
 *
 *   check() --captive--> sign-in-required, exception open --poll every CAPTIVE_POLL_MS--+
 *      |                      |                                                          |
 *      |                      +-- exceptionMs elapsed: exception closed ("timed out")    |
 *      +--open--> open  <----- check answers normally: exception closed ("signed in"), reconnect
 */
import { isIP } from "node:net";
import type { CaptiveConfig } from "../core/config/schema.ts";
import {
  initialCaptiveStatus,
  judgeCheckAnswer,
  judgeCheckHostAnswer,
  type CaptiveStatus,
  type CaptiveVerdict,
  type CheckAnswer,
} from "../core/captive.ts";
import type { CaptiveExceptionInput } from "../core/killswitch.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/** One fetch of the check URL: a portal answers on the first round trip, and a check must not hold a connect up. */
export const CAPTIVE_CHECK_TIMEOUT_MS = 3000;
/** How often the check runs while the user signs in: a sign-in shows as "connected" within this much. */
export const CAPTIVE_POLL_MS = 2000;
/** Checks triggered by failed connects at most this often: a retry loop on a dead network must not hammer it. */
export const CAPTIVE_RECHECK_MIN_MS = 10_000;

/** What the monitor needs from the network: resolving with the network's resolvers and a plain HTTP GET. */
export interface CaptiveProbe {
  /** A and AAAA of `host` from `servers`, the network's own resolvers (outside the tunnel); [] without an answer. */
  resolve(host: string, servers: readonly string[], timeoutMs: number): Promise<string[]>;
  /** GET `url` from `address` without following redirects; rejects on no answer within `timeoutMs`. */
  fetch(url: URL, address: string, timeoutMs: number): Promise<CheckAnswer>;
}

export interface CaptiveHost {
  config(): { captive: CaptiveConfig };
  probe: CaptiveProbe;
  /** The network's resolvers (the sign-in exception lets the browser's lookups reach them). */
  networkResolvers(): string[];
  /** Puts the kill switch's captive inputs (killSwitchInputs()) in force; resolves once applied. */
  applyKillSwitch(): Promise<void>;
  /** The network lets traffic through again after a sign-in: connect, if a connection is wanted. */
  reconnect(): void;
  /** A change worth an event and telemetry. */
  report(change: "sign-in-required" | "exception-opened" | "exception-closed" | "open", status: CaptiveStatus): void;
  clock: Clock;
  log: Logger;
  track(p: Promise<unknown>): void;
}

export type CaptiveTrigger = "start" | "connect-failed" | "network-change" | "poll" | "request";

export class CaptiveMonitor {
  readonly #host: CaptiveHost;
  #status: CaptiveStatus = initialCaptiveStatus();
  #checkAddresses: string[] = [];
  #exception: CaptiveExceptionInput | null = null;
  #inFlight: Promise<CaptiveVerdict> | null = null;
  /** Counts checks begun: only the latest one's verdict is acted on. */
  #generation = 0;
  #closeTimer: Timer | null = null;
  #pollTimer: Timer | null = null;
  #lastTriggeredAt = -Infinity;
  #stopped = false;
  /**
   * The last exception ran out of time: the machine's own retries must not reopen it (the bound would then mean
   * nothing); the user's next connect does.
   */
  #expired = false;

  constructor(host: CaptiveHost) {
    this.#host = host;
  }

  status(): CaptiveStatus {
    return structuredClone(this.#status);
  }

  /** What the kill switch lets through for captive networks (killswitch.ts' checkAddresses and captiveException). */
  killSwitchInputs(): { checkAddresses: string[]; captiveException: CaptiveExceptionInput | null } {
    return { checkAddresses: [...this.#checkAddresses], captiveException: this.#exception };
  }

  /** The user asked to connect: a sign-in exception that ran out may open once more. */
  userConnected(): void {
    this.#expired = false;
  }

  /** A connect found no gateway that answered at all: the typical sign of a portal. Rate-limited. */
  connectFailed(): void {
    const now = this.#host.clock.monotonic();
    if (this.#exception !== null || now - this.#lastTriggeredAt < CAPTIVE_RECHECK_MIN_MS) return;
    this.#lastTriggeredAt = now;
    this.#host.track(this.check("connect-failed"));
  }

  /** The tunnel is up: the network is evidently open; an exception still open closes. */
  connected(): void {
    if (this.#status.state === "sign-in-required") this.#set({ state: "open", reason: "a tunnel came up" });
    if (this.#exception !== null) this.#closeException("connected");
  }

  /**
   * Checks the network now (one check at a time: a second caller shares the first's answer). A network change
   * starts a check of its own at once: one still running answers for the network before, and its verdict is
   * dropped (it may wait seconds for an answer that network never gives).
   */
  check(trigger: CaptiveTrigger): Promise<CaptiveVerdict> {
    if (this.#inFlight !== null && trigger !== "network-change") return this.#inFlight;
    const generation = ++this.#generation;
    const p: Promise<CaptiveVerdict> = this.#check(trigger, generation).finally(() => {
      if (this.#inFlight === p) this.#inFlight = null;
    });
    this.#inFlight = p;
    return p;
  }

  /** detourd's exit: timers go, and the exception with them (the kill switch is removed or kept by the exit). */
  stop(): void {
    this.#stopped = true;
    this.#closeTimer?.cancel();
    this.#pollTimer?.cancel();
    this.#closeTimer = null;
    this.#pollTimer = null;
    this.#exception = null;
    this.#checkAddresses = [];
  }

  async #check(trigger: CaptiveTrigger, generation: number): Promise<CaptiveVerdict> {
    const cfg = this.#host.config().captive;
    const url = new URL(cfg.checkUrl);
    const host = url.hostname.replace(/^\[|\]$/g, "");
    if (trigger !== "poll") this.#set({ state: this.#status.state === "unknown" ? "checking" : this.#status.state });
    let verdict: CaptiveVerdict;
    try {
      const addresses =
        isIP(host) !== 0
          ? [host]
          : await this.#host.probe.resolve(host, this.#host.networkResolvers(), CAPTIVE_CHECK_TIMEOUT_MS);
      const fromDns = isIP(host) !== 0 ? null : judgeCheckHostAnswer(host, addresses);
      const first = addresses[0];
      if (fromDns !== null) verdict = fromDns;
      else if (first === undefined)
        verdict = { kind: "unknown", reason: `the network's DNS gave no address for ${host}` };
      else {
        // The kill switch lets detourd's own check out (TCP 80/443 to the check host only) before it runs.
        if (!sameList(this.#checkAddresses, addresses)) {
          this.#checkAddresses = [...addresses];
          await this.#host.applyKillSwitch();
        }
        const answer = await this.#host.probe.fetch(url, first, CAPTIVE_CHECK_TIMEOUT_MS);
        verdict = judgeCheckAnswer(url.toString(), answer);
      }
    } catch (err) {
      verdict = {
        kind: "unknown",
        reason: `the check URL gave no answer: ${err instanceof Error ? err.message : String(err)}`,
      };
    }
    if (this.#stopped || generation !== this.#generation) return verdict;
    this.#status.checks += 1;
    this.#status.checkedAt = this.#host.clock.wall();
    this.#host.log.info("captive check", { trigger, verdict });
    await this.#act(verdict);
    return verdict;
  }

  async #act(v: CaptiveVerdict): Promise<void> {
    switch (v.kind) {
      case "open": {
        const wasCaptive = this.#status.state === "sign-in-required";
        this.#set({ state: "open", reason: "the check URL answered normally", portalUrl: null });
        if (!wasCaptive) return;
        this.#host.report("open", this.status());
        if (this.#exception !== null) this.#closeException("signed in");
        this.#host.reconnect();
        return;
      }
      case "unknown":
        // No exception is opened on a guess; one already open keeps running to its bound.
        if (this.#status.state === "checking") this.#set({ state: "unknown" });
        this.#status.reason = v.reason;
        return;
      case "captive": {
        const first = this.#status.state !== "sign-in-required";
        this.#set({ state: "sign-in-required", reason: v.reason, portalUrl: v.portalUrl ?? this.#status.portalUrl });
        if (first) this.#host.report("sign-in-required", this.status());
        if (this.#exception === null && !this.#expired) await this.#openException(v.portalUrl);
        return;
      }
    }
  }

  async #openException(portalUrl: string | null): Promise<void> {
    const cfg = this.#host.config().captive;
    if (!cfg.allowException) {
      this.#status.exception.state = "forbidden";
      return;
    }
    const portalAddresses = portalUrl === null ? [] : await this.#portalAddresses(new URL(portalUrl));
    const resolvers = this.#host.networkResolvers();
    if (portalAddresses.length === 0 && resolvers.length === 0) return;
    this.#exception = { portalAddresses, resolvers };
    const now = this.#host.clock.wall();
    this.#status.exception = {
      ...this.#status.exception,
      state: "open",
      openedAt: now,
      closesAt: now + cfg.exceptionMs,
      portalAddresses,
      resolvers,
      closedReason: null,
      opened: this.#status.exception.opened + 1,
    };
    this.#closeTimer = this.#host.clock.after(cfg.exceptionMs, () => {
      this.#closeTimer = null;
      this.#expired = true;
      this.#closeException("timed out");
    });
    this.#schedulePoll();
    await this.#host.applyKillSwitch();
    this.#host.report("exception-opened", this.status());
  }

  async #portalAddresses(u: URL): Promise<string[]> {
    const host = u.hostname.replace(/^\[|\]$/g, "");
    if (isIP(host) !== 0) return [host];
    try {
      return await this.#host.probe.resolve(host, this.#host.networkResolvers(), CAPTIVE_CHECK_TIMEOUT_MS);
    } catch {
      return [];
    }
  }

  #schedulePoll(): void {
    this.#pollTimer?.cancel();
    this.#pollTimer = this.#host.clock.after(CAPTIVE_POLL_MS, () => {
      this.#pollTimer = null;
      if (this.#exception === null || this.#stopped) return;
      this.#host.track(
        this.check("poll").finally(() => {
          if (this.#exception !== null && !this.#stopped) this.#schedulePoll();
        }),
      );
    });
  }

  #closeException(reason: string): void {
    this.#closeTimer?.cancel();
    this.#pollTimer?.cancel();
    this.#closeTimer = null;
    this.#pollTimer = null;
    this.#exception = null;
    this.#status.exception = {
      ...this.#status.exception,
      state: "closed",
      closesAt: null,
      portalAddresses: [],
      resolvers: [],
      closedReason: reason,
    };
    this.#host.track(this.#host.applyKillSwitch());
    this.#host.report("exception-closed", this.status());
  }

  #set(p: Partial<Omit<CaptiveStatus, "exception">>): void {
    this.#status = { ...this.#status, ...p };
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
