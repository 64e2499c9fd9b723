/**
 * When the tray app raises a desktop notification, and with which text: on failover and on errors that need the
 * user, one text per cause, and never a storm while a network flaps. Pure: the host feeds every status it sees
 * (and null while the daemon is unreachable) with the time, and calls again at `nextDeadline()`.
 *
 * Rules, each against a specific annoyance:
 * - failover: the first one is told at once; more within FAILOVER_QUIET_MS are counted and told once, as a
 *   summary, when that quiet period ends (a flapping network yields one notice per period, not one per flap).
 * - error: told only once the error has lasted ERROR_SETTLE_MS (a retry that succeeds quickly is not news),
 *   at once when the daemon will not retry by itself (wrong credentials: only the user can act). Each cause is
 *   told once per episode; an episode ends after RECOVERY_SETTLE_MS connected, and the same cause is not told
 *   again within ERROR_REPEAT_MS even so.
 * - daemon unreachable: told once it has lasted DAEMON_SETTLE_MS (the service restarting is not news).
 * - offline (detourd waiting for a network, or its network monitor saying offline): nothing at all. The user knows,
 *   the tray says it, and detourd connects by itself; the errors and failovers of a vanished network are not news,
 *   and an error episode restarts its settle time once the network is back.
 * - a network that wants a sign-in: told once as "Sign in to this network" (the user must act), in place of the
 *   "cannot connect" its blocked legs would otherwise cause; again only after SIGN_IN_REPEAT_MS.
 */
import type { StatusPayload } from "../core/protocol/messages.ts";
import type { Preferences } from "../core/protocol/app-api.ts";

/** Long enough that a flapping uplink (every few seconds) gives one notice, short enough that a new problem later is told. */
export const FAILOVER_QUIET_MS = 120_000;
/** The first retries back off 1, 2, 4 s: an error still there after 10 s is one the user will feel. */
export const ERROR_SETTLE_MS = 10_000;
/** Connected this long means the episode is over; a shorter recovery is part of the same flap. */
export const RECOVERY_SETTLE_MS = 30_000;
/** The same error cause is not told twice within 15 minutes: the tray sentence keeps saying it meanwhile. */
export const ERROR_REPEAT_MS = 15 * 60_000;
/** detourd restarts (an upgrade, systemd's restart) in a few seconds; 10 s without it is a real outage. */
export const DAEMON_SETTLE_MS = 10_000;
/** A portal that asks again (some hotels every hour, or after a short idle) is told again, but not within 15 min. */
export const SIGN_IN_REPEAT_MS = 15 * 60_000;

export type NoticeCause =
  | "failover"
  | "failover-repeated"
  | "no-gateway"
  | "credentials"
  | "identity"
  | "configuration"
  | "refused"
  | "sign-in"
  | "daemon-unreachable";

export interface Notice {
  cause: NoticeCause;
  title: string;
  body: string;
}

type ErrorCause = Extract<NoticeCause, "no-gateway" | "credentials" | "identity" | "configuration" | "refused">;

/** Maps the daemon's error sentence (main/core's error catalogue) to the cause a user acts on. */
export function errorCause(reason: string): ErrorCause {
  if (/credentials/i.test(reason)) return "credentials";
  if (/pinned identity|identity/i.test(reason)) return "identity";
  if (/configuration/i.test(reason)) return "configuration";
  if (/refused/i.test(reason)) return "refused";
  return "no-gateway";
}

/** One text per cause: what happened, and what the user can do about it. */
export function errorNotice(cause: ErrorCause): Notice {
  switch (cause) {
    case "no-gateway":
      return {
        cause,
        title: "Detour cannot connect",
        body: "No gateway is reachable from this network. Check your internet connection; Detour keeps trying.",
      };
    case "credentials":
      return {
        cause,
        title: "Detour cannot sign in",
        body: "The gateways refused this device's credentials. Contact your IT helpdesk.",
      };
    case "identity":
      return {
        cause,
        title: "Detour stopped for your safety",
        body: "No gateway proved its identity, so Detour did not connect. This network may be intercepting traffic; contact your IT helpdesk.",
      };
    case "configuration":
      return {
        cause,
        title: "Detour is misconfigured",
        body: "This device's VPN configuration cannot work. Contact your IT helpdesk and create a diagnostic bundle.",
      };
    case "refused":
      return {
        cause,
        title: "Detour cannot connect",
        body: "Every gateway refused the connection. Contact your IT helpdesk if this persists.",
      };
  }
}

export function failoverNotice(s: StatusPayload): Notice {
  const f = s.lastFailover;
  const from = f?.from.gateway ?? "the gateway";
  const to = f?.to?.gateway ?? s.gateway;
  const why =
    f === null
      ? "it failed"
      : /dead|no reply|stopped/i.test(f.reason)
        ? "it stopped answering"
        : "its connection got worse";
  return {
    cause: "failover",
    title: "Detour switched gateways",
    body:
      to === null
        ? `${from} failed (${why}); looking for another gateway.`
        : `Now on ${to}: ${from} ${why === "it failed" ? "failed" : why.replace(/^it /, "")}.`,
  };
}

/** An error episode: from the first error until RECOVERY_SETTLE_MS connected; each cause is told once in it. */
interface ErrorEpisode {
  cause: ErrorCause;
  told: boolean;
}

/** No route to any gateway: detourd waits for a network, or its monitor already says the network is gone. */
function offline(s: StatusPayload): boolean {
  return s.state === "waiting-for-network" || (s.state !== "connected" && s.network?.monitor?.online === false);
}

/** The network shows a sign-in page and no tunnel is up. */
function signingIn(s: StatusPayload): boolean {
  return s.captive?.state === "sign-in-required" && s.state !== "connected";
}

export class NotifyRules {
  #lastFailoverAt: number | null = null;
  #quietUntil: number | null = null;
  #suppressed = 0;
  #latest: StatusPayload | null = null;
  #error: ErrorEpisode | null = null;
  /** When the daemon entered its current error state (null while not in error). */
  #errorSince: number | null = null;
  #connectedSince: number | null = null;
  #lastTold = new Map<NoticeCause, number>();
  #unreachableSince: number | null = null;
  #unreachableTold = false;
  #started = false;
  /** The network wants a sign-in and this episode of it was told (or needs no telling). */
  #signInTold = false;

  /** Feeds one observation (null: the daemon is unreachable) and returns the notices to show now. */
  observe(s: StatusPayload | null, now: number, level: Preferences["notifications"] = "all"): Notice[] {
    const out: Notice[] = [];
    this.#daemon(s, now, out);
    if (s !== null) {
      this.#latest = s;
      if (offline(s) || signingIn(s)) this.#quiet(s, now, out);
      else {
        this.#signInTold = false;
        this.#failover(s, now, out);
        this.#errors(s, now, out);
      }
    }
    this.#quietEnd(now, out);
    this.#started = true;
    for (const n of out) this.#lastTold.set(n.cause, now);
    if (level === "off") return [];
    return level === "errors" ? out.filter((n) => n.cause !== "failover" && n.cause !== "failover-repeated") : out;
  }

  /** When observe() should run again even without a new status: the end of a quiet period or a settle time. */
  nextDeadline(): number | null {
    const ds: number[] = [];
    if (this.#quietUntil !== null) ds.push(this.#quietUntil);
    if (this.#errorSince !== null && this.#error !== null && !this.#error.told)
      ds.push(this.#errorSince + ERROR_SETTLE_MS);
    if (this.#unreachableSince !== null && !this.#unreachableTold) ds.push(this.#unreachableSince + DAEMON_SETTLE_MS);
    return ds.length === 0 ? null : Math.min(...ds);
  }

  #daemon(s: StatusPayload | null, now: number, out: Notice[]): void {
    if (s !== null) {
      this.#unreachableSince = null;
      this.#unreachableTold = false;
      return;
    }
    this.#unreachableSince ??= now;
    if (!this.#unreachableTold && now - this.#unreachableSince >= DAEMON_SETTLE_MS) {
      this.#unreachableTold = true;
      out.push({
        cause: "daemon-unreachable",
        title: "Detour is not running",
        body: "Detour's background service stopped, so your connection is not protected. Restart the computer or contact your IT helpdesk.",
      });
    }
  }

  #failover(s: StatusPayload, now: number, out: Notice[]): void {
    const at = s.lastFailover?.detectedAt ?? null;
    if (at === null || at === this.#lastFailoverAt) return;
    const first = this.#lastFailoverAt === null && !this.#started;
    this.#lastFailoverAt = at;
    // A failover that happened before the app started is history, not news.
    if (first) return;
    if (this.#quietUntil !== null && now < this.#quietUntil) {
      this.#suppressed += 1;
      return;
    }
    out.push(failoverNotice(s));
    this.#quietUntil = now + FAILOVER_QUIET_MS;
    this.#suppressed = 0;
  }

  /**
   * Offline or behind a sign-in page: failovers seen now are history, an error's settle time starts again later, and
   * only a sign-in is told, once per episode.
   */
  #quiet(s: StatusPayload, now: number, out: Notice[]): void {
    this.#lastFailoverAt = s.lastFailover?.detectedAt ?? this.#lastFailoverAt;
    this.#errorSince = null;
    this.#connectedSince = null;
    if (!signingIn(s) || this.#signInTold) return;
    this.#signInTold = true;
    const last = this.#lastTold.get("sign-in");
    if (last !== undefined && now - last < SIGN_IN_REPEAT_MS) return;
    out.push({
      cause: "sign-in",
      title: "Sign in to this network",
      body: "This network shows a sign-in page before it lets traffic through. Choose “Open sign-in page” in Detour's menu; Detour connects by itself once you have signed in.",
    });
  }

  #quietEnd(now: number, out: Notice[]): void {
    if (this.#quietUntil === null || now < this.#quietUntil) return;
    const n = this.#suppressed;
    this.#quietUntil = null;
    this.#suppressed = 0;
    const s = this.#latest;
    // Flaps before the network went away are not worth a notice once it has: the tray says offline.
    if (n === 0 || s === null || offline(s) || signingIn(s)) return;
    const where = s.state === "connected" && s.gateway !== null ? `now on ${s.gateway}` : "reconnecting";
    out.push({
      cause: "failover-repeated",
      title: "Your connection is unstable",
      body: `Detour switched gateways ${n + 1} times in ${Math.round(FAILOVER_QUIET_MS / 60_000)} minutes and kept you connected (${where}). The network you are on may be unreliable.`,
    });
    // The summary opens a new quiet period, so a network that keeps flapping yields one summary per period.
    this.#quietUntil = now + FAILOVER_QUIET_MS;
  }

  #errors(s: StatusPayload, now: number, out: Notice[]): void {
    if (s.state !== "error" || s.error === null) {
      this.#errorSince = null;
      if (s.state !== "connected") this.#connectedSince = null;
      else {
        this.#connectedSince ??= now;
        if (this.#error !== null && now - this.#connectedSince >= RECOVERY_SETTLE_MS) this.#error = null;
      }
      return;
    }
    this.#connectedSince = null;
    this.#errorSince ??= now;
    const cause = errorCause(s.error.reason);
    if (this.#error?.cause !== cause) this.#error = { cause, told: false };
    const e = this.#error;
    if (e.told) return;
    const needsUser = s.error.nextRetryAt === null;
    if (!needsUser && now - this.#errorSince < ERROR_SETTLE_MS) return;
    const last = this.#lastTold.get(cause);
    e.told = true;
    if (last !== undefined && now - last < ERROR_REPEAT_MS) return;
    out.push(errorNotice(cause));
  }
}
