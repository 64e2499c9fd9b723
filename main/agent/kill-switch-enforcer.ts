/**
 * Keeps the kernel's firewall equal to the kill switch detourd wants, and says truthfully whether it is: a rule
 * set counts as in force only after nft applied it; a failed apply puts the minimal blocking table in its place
 * and is retried with backoff; a table someone else removed or changed is put back. Every failure and every
 * restoration is reported (status, an event, telemetry), never only logged.
 *
 * Firewall work runs on its own chain, one step at a time: a check never reads the table in the middle of
 * detourd's own apply (it would take that for tampering), and it never waits behind route changes.
 *
 * Tampering is noticed two ways: the platform's watcher (nft monitor, event-driven, free while nothing
 * changes) asks for a check on every ruleset change, and a slow periodic check catches what a dead or
 * overflowing watcher missed. A check compares the table with what the kernel held right after detourd's own
 * apply; any difference (missing, a rule removed or changed, one added) puts the wanted rules back.
 */
import { backoffMs, type BackoffPolicy, type Random } from "../core/backoff.ts";
import {
  initialKillSwitchStatus,
  isProtected,
  type KillSwitchChange,
  type KillSwitchRules,
  type KillSwitchStatus,
} from "../core/killswitch.ts";
import { ipFamily } from "../core/ip-address.ts";
import type { PlatformFirewall } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/**
 * Retries of a failed apply: nft fails for a passing reason (another program holding the ruleset, a table
 * being replaced) or a lasting one (a bug in the rules, nft missing). The first retry comes quickly, so a
 * passing failure costs a quarter second of fallback; a lasting one is retried twice a minute, not more.
 */
export const KILL_SWITCH_RETRY: BackoffPolicy = { initialMs: 250, maxMs: 30_000 };
/**
 * The safety net behind the watcher: one `nft -s list table` every half minute costs a few milliseconds of
 * CPU, and bounds how long a change the watcher missed (it died, its netlink socket overflowed) can last.
 */
export const KILL_SWITCH_VERIFY_INTERVAL_MS = 30_000;

export interface KillSwitchEnforcerDeps {
  firewall: Pick<
    PlatformFirewall,
    "applyKillSwitch" | "applyKillSwitchFallback" | "readKillSwitch" | "watchFirewall" | "applyBackstop"
  >;
  clock: Clock;
  random: Random;
  /** An event and telemetry for a change; `status` is the status after it. */
  report(change: KillSwitchChange, status: KillSwitchStatus, detail: string): void;
  track(p: Promise<unknown>): void;
  log: Logger;
  /** User traffic went into a tunnel (the table's trace rule, seen by the same watcher). */
  activity?(): void;
}

/**
 * The routing backstop for `rules`: the protected networks of a split tunnel, with every IPv4 gateway inside
 * them excepted; none for a full tunnel (see firewall-backstop.linux.ts) or when no kill switch is wanted.
 */
export function backstopFor(rules: KillSwitchRules | null): { prefixes: string[]; bypass: string[] } | null {
  if (rules === null || rules.fullTunnel || rules.protectedNetworks.length === 0) return null;
  const bypass = new Set<string>();
  for (const e of rules.gatewayEndpoints)
    if (ipFamily(e.address) === "ipv4" && isProtected(rules, e.address)) bypass.add(`${e.address}/32`);
  // An allowed local network is thrown out of the backstop too, or its prohibit would undo the allowance.
  for (const n of rules.localNetworks ?? []) bypass.add(n.prefix);
  return { prefixes: [...rules.protectedNetworks], bypass: [...bypass].sort() };
}

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).slice(0, 500);
}

export class KillSwitchEnforcer {
  readonly #deps: KillSwitchEnforcerDeps;
  readonly #status: KillSwitchStatus = initialKillSwitchStatus();
  #chain: Promise<void> = Promise.resolve();
  /** The rules wanted last (null: none); undefined until the first want. */
  #wanted: KillSwitchRules | null | undefined = undefined;
  /** The table as the kernel held it right after detourd's last successful apply (or fallback); undefined: unknown. */
  #fingerprint: string | null | undefined = undefined;
  /** Failed applies in a row, for the backoff. */
  #failures = 0;
  #retry: Timer | null = null;
  #verify: Timer | null = null;
  #watch: { stop(): void } | null = null;
  #checkQueued = false;
  /** An apply succeeded and its reference is not read yet: a check now would take detourd's own change for tampering. */
  #settling = false;
  #checkDeferred = false;
  #stopped = false;

  constructor(deps: KillSwitchEnforcerDeps) {
    this.#deps = deps;
  }

  status(): KillSwitchStatus {
    return { ...this.#status };
  }

  /** Starts watching the ruleset (and the periodic check). */
  startWatching(): void {
    if (this.#watch !== null || this.#stopped) return;
    this.#watch = this.#deps.firewall.watchFirewall({
      changed: () => {
        this.check("ruleset changed");
      },
      activity: () => {
        this.#deps.activity?.();
      },
      watcherDied: (reason) => {
        this.#status.watcherRestarts++;
        this.#deps.log.warn("firewall watcher died; restarting it", { reason });
        this.#deps.report("watcher-restarted", this.status(), reason);
      },
    });
    this.#armVerify();
  }

  /** Stops watching and retrying (at exit); the table stays as it is. */
  stop(): void {
    this.#stopped = true;
    this.#watch?.stop();
    this.#watch = null;
    this.#retry?.cancel();
    this.#retry = null;
    this.#verify?.cancel();
    this.#verify = null;
  }

  /** Puts `rules` in force (null: none); resolves once it is done, whatever the outcome (see status()). */
  apply(rules: KillSwitchRules | null): Promise<void> {
    this.#wanted = rules;
    return this.#run(() => this.#apply(rules));
  }

  /** Checks (once, soon) that the table is still what detourd put in; restores it if not. */
  check(reason: string): void {
    if (this.#checkQueued || this.#stopped) return;
    this.#checkQueued = true;
    this.#deps.track(
      this.#run(async () => {
        this.#checkQueued = false;
        await this.#check(reason);
      }),
    );
  }

  /** Settles once every step queued so far, and the steps they queued, are done (exit). */
  async settled(): Promise<void> {
    for (let i = 0; i < 10; i++) {
      const chain = this.#chain;
      await chain;
      if (chain === this.#chain) return;
    }
  }

  #run(step: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(step).catch((err: unknown) => {
      this.#deps.log.error("kill switch step failed", { err });
    });
    this.#chain = next;
    return next;
  }

  #armVerify(): void {
    this.#verify?.cancel();
    this.#verify = this.#deps.clock.after(
      KILL_SWITCH_VERIFY_INTERVAL_MS,
      () => {
        this.#verify = null;
        if (this.#stopped) return;
        this.check("periodic check");
        this.#armVerify();
      },
      { background: true },
    );
  }

  async #read(): Promise<string | null | undefined> {
    try {
      return await this.#deps.firewall.readKillSwitch();
    } catch (err) {
      this.#deps.log.warn("reading the kill switch's table failed", { err });
      return undefined;
    }
  }

  async #apply(rules: KillSwitchRules | null): Promise<void> {
    const s = this.#status;
    s.mode = rules?.mode ?? null;
    s.ownGroup = rules?.ownGroup ?? null;
    try {
      await this.#deps.firewall.applyKillSwitch(rules);
    } catch (err) {
      await this.#failed(rules, err);
      return;
    }
    // Only now is it in force. What follows (reading the reference for later checks, the routing backstop) is a
    // step of its own: a connect's answer and the route changes behind it wait for the firewall rules only.
    s.state = rules === null ? "off" : "in-force";
    this.#settling = true;
    this.#deps.track(this.#run(() => this.#settle(rules)));
  }

  /** After a successful apply: the reference for later checks, the backstop, and the end of a failure streak. */
  async #settle(rules: KillSwitchRules | null): Promise<void> {
    const s = this.#status;
    this.#fingerprint = rules === null ? null : await this.#read();
    this.#settling = false;
    if (this.#checkDeferred) {
      // Something changed the ruleset while the reference was not read yet: look again once it is.
      this.#checkDeferred = false;
      this.check("ruleset changed during an apply");
    }
    if (!(await this.#backstop(rules))) return;
    const recovered = this.#failures > 0;
    this.#failures = 0;
    this.#retry?.cancel();
    this.#retry = null;
    s.nextRetryAt = null;
    this.#deps.log.info("kill switch", { mode: rules?.mode ?? "off" });
    if (recovered) this.#deps.report("in-force", this.status(), `kill switch ${rules?.mode ?? "off"} in force again`);
  }

  /**
   * Puts the routing backstop for `rules` in; a failure is reported and retried like a failed apply, but the
   * kill switch itself is in force (state unchanged). Whether it went in.
   */
  async #backstop(rules: KillSwitchRules | null): Promise<boolean> {
    try {
      await this.#deps.firewall.applyBackstop(backstopFor(rules));
      return true;
    } catch (err) {
      const s = this.#status;
      this.#failures++;
      s.applyFailures++;
      s.lastError = `routing backstop: ${message(err)}`;
      s.lastErrorAt = this.#deps.clock.wall();
      s.state = rules === null ? "off" : "in-force";
      this.#deps.log.error("applying the kill switch's routing backstop failed", { err });
      this.#deps.report("apply-failed", this.#scheduleRetry(), s.lastError);
      return false;
    }
  }

  async #failed(rules: KillSwitchRules | null, err: unknown): Promise<void> {
    const s = this.#status;
    const deps = this.#deps;
    this.#failures++;
    s.applyFailures++;
    s.lastError = message(err);
    s.lastErrorAt = deps.clock.wall();
    deps.log.error(rules === null ? "removing the kill switch failed" : "applying the kill switch failed", { err });
    if (rules === null) {
      // The table that stays blocks more than wanted, never less: fail closed, say so, retry.
      deps.report("remove-failed", this.#scheduleRetry(), s.lastError);
      return;
    }
    deps.report("apply-failed", this.status(), s.lastError);
    const before = s.state;
    try {
      await deps.firewall.applyKillSwitchFallback({ tunnelDevices: rules.tunnelDevices, ownGroup: rules.ownGroup });
      this.#fingerprint = await this.#read();
      s.state = "fallback";
      // The backstop holds the protected networks back whatever nft does; its own failure is only worth a log here.
      await deps.firewall.applyBackstop(backstopFor(rules)).catch((e: unknown) => {
        deps.log.error("applying the kill switch's routing backstop failed", { err: e });
      });
      if (before !== "fallback") {
        s.fallbacks++;
        deps.report("fallback", this.#scheduleRetry(), `fallback table in force: ${s.lastError}`);
        return;
      }
    } catch (err2) {
      this.#fingerprint = undefined;
      s.state = "failed";
      s.lastError = `${s.lastError}; the fallback table failed too: ${message(err2)}`;
      deps.log.error("the kill switch's fallback table failed", { err: err2 });
      if (before !== "failed") {
        deps.report("failed", this.#scheduleRetry(), s.lastError);
        return;
      }
    }
    this.#scheduleRetry();
  }

  /** Arms the retry of the wanted rules (the newest by then) and returns the status with its time. */
  #scheduleRetry(): KillSwitchStatus {
    const deps = this.#deps;
    this.#retry?.cancel();
    this.#retry = null;
    if (this.#stopped) {
      this.#status.nextRetryAt = null;
      return this.status();
    }
    const wait = backoffMs(this.#failures, KILL_SWITCH_RETRY, deps.random);
    this.#status.nextRetryAt = deps.clock.wall() + wait;
    this.#retry = deps.clock.after(wait, () => {
      this.#retry = null;
      if (this.#stopped || this.#wanted === undefined) return;
      const wanted = this.#wanted;
      deps.track(this.#run(() => this.#apply(wanted)));
    });
    return this.status();
  }

  async #check(reason: string): Promise<void> {
    const s = this.#status;
    // Nothing wanted, or a failed apply whose retry is armed: nothing to compare with.
    if (this.#stopped || this.#wanted == null || s.state === "off" || s.state === "failed") return;
    if (this.#settling) {
      this.#checkDeferred = true;
      return;
    }
    const now = await this.#read();
    if (now === undefined || now === this.#fingerprint) return;
    const what = now === null ? "missing" : "altered";
    s.restorations++;
    s.lastRestoredAt = this.#deps.clock.wall();
    this.#deps.log.warn("the kill switch's table was changed by someone else; restoring it", { what, reason });
    if (s.state === "fallback") {
      try {
        await this.#deps.firewall.applyKillSwitchFallback({
          tunnelDevices: this.#wanted.tunnelDevices,
          ownGroup: this.#wanted.ownGroup,
        });
        this.#fingerprint = await this.#read();
      } catch (err) {
        await this.#failed(this.#wanted, err);
      }
    } else {
      await this.#apply(this.#wanted);
    }
    this.#deps.report("restored", this.status(), `table ${what} (${reason}); put back as ${s.state}`);
  }
}
