/**
 * Trusted network detection and always-on, as detourd runs them: reads what the network hands out (the underlay's
 * resolv.conf), checks each DNS-matching rule's pinned TLS host outside the tunnel, and connects or disconnects per
 * the verdict (main/core/trusted-networks.ts decides). Evaluated at start, before a connect, when the network's
 * identity changes and on a bounded periodic recheck; the trigger is pluggable so a network monitor can drive it.
 */
import { readFileSync } from "node:fs";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import type { DetourConfig, TrustedNetworkRuleConfig } from "../core/config/schema.ts";
import type { ConnectionStateName } from "../core/connection/types.ts";
import type { TrustedStatus } from "../core/protocol/messages.ts";
import {
  candidateRules,
  dnsFactsOf,
  routedIntoTunnel,
  trustedAction,
  verdictOf,
  type NetworkDnsFacts,
  type TlsCheckResult,
  type TrustedVerdict,
} from "../core/trusted-networks.ts";
import type { Clock, Timer } from "./clock.ts";
import { spkiSha256 } from "./discovery.ts";
import type { Logger } from "./log.ts";

/**
 * How often the network's identity (its resolv.conf facts and the network memory's key) is compared with the last
 * one seen: a file read every 2 s notices a move between networks within that, until a network monitor says so.
 */
export const NETWORK_POLL_MS = 2000;
/**
 * Without trusted networks the poll is only the network monitor's backstop (always-on reconnects on the monitor's
 * changes at once): a look a minute costs an idle daemon nothing.
 */
export const UNTRUSTED_POLL_MS = 60_000;

/**
 * Without trusted networks nothing needs rechecking (only always-on's network changes matter, which the poll
 * notices on its own): an hour keeps the recheck from ever doing work that means anything.
 */
export const NO_TRUSTED_RECHECK_MS = 3_600_000;

/** Why an evaluation runs: at start, before a connect, on a network change, or the periodic recheck. */
export type TrustedTriggerReason = "start" | "connect" | "network-change" | "recheck";

/**
 * What re-evaluates the verdict while detourd runs: calls `fire` on a network change or a recheck; returns its
 * stop. The default polls (pollTrigger); a network monitor plugs in here instead.
 */
export type TrustedTrigger = (fire: (why: "network-change" | "recheck") => void) => () => void;

/** Why the control socket refuses a disconnect, or null when it may: always-on (allowDisconnect: false). */
export function disconnectRefusal(config: DetourConfig): string | null {
  if (config.allowDisconnect) return null;
  return "disconnecting is not allowed by your organisation's policy (allowDisconnect: false): Detour stays connected (always-on)";
}

/**
 * One TLS handshake to a rule's host, outside the tunnel, bounded by `timeoutMs`: ok only when the server's public
 * key matches one of the rule's pins. The certificate chain and name are not checked: the pin is the trust anchor.
 * Never rejects; every failure is a reason.
 */
export function checkPinnedTls(host: TrustedNetworkRuleConfig["tlsHost"], timeoutMs: number): Promise<TlsCheckResult> {
  const pins = host.pins.map((p) => p.replace(/^(pin-)?sha256[:/]/, ""));
  const where = `${host.address}:${String(host.port)}`;
  return new Promise<TlsCheckResult>((resolve) => {
    let done = false;
    let sock: TLSSocket | null = null;
    const finish = (r: TlsCheckResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock?.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => {
      finish({ ok: false, reason: `${where} did not complete a TLS handshake within ${String(timeoutMs)} ms` });
    }, timeoutMs);
    try {
      sock = tlsConnect({
        host: host.address,
        port: host.port,
        rejectUnauthorized: false,
        // Certificate chain and name are not the trust anchor here; the pin is, checked below.
        checkServerIdentity: () => undefined,
      });
    } catch (e) {
      finish({ ok: false, reason: `${where}: ${(e as Error).message}` });
      return;
    }
    const s = sock;
    s.once("secureConnect", () => {
      const cert = s.getPeerCertificate();
      if (Object.keys(cert).length === 0) {
        finish({ ok: false, reason: `${where} sent no certificate` });
        return;
      }
      let got: string;
      try {
        got = spkiSha256(cert.raw);
      } catch (e) {
        finish({ ok: false, reason: `${where} sent a certificate that cannot be read: ${(e as Error).message}` });
        return;
      }
      finish(
        pins.includes(got)
          ? { ok: true }
          : { ok: false, reason: `${where} answered with a public key (sha256/${got}) that matches no pin` },
      );
    });
    s.once("error", (e: NodeJS.ErrnoException) => {
      finish({ ok: false, reason: `${where}: ${e.code ?? e.message}` });
    });
  });
}

/** Separates the network memory's key from the resolv.conf facts in an identity. */
const KEY_SEPARATOR = "|";
/** The network memory's key before its first lookup (or after one that failed). */
const UNKNOWN_KEY = "?";

/**
 * Whether two identities name the same network: the resolv.conf facts are equal, and so are the keys where both
 * are known. A key looked up for the first time (or lost to a failed lookup) is not a move between networks.
 */
export function sameNetwork(a: string, b: string): boolean {
  const split = (x: string): [string, string] => {
    const i = x.indexOf(KEY_SEPARATOR);
    return i < 0 ? [UNKNOWN_KEY, x] : [x.slice(0, i), x.slice(i + 1)];
  };
  const [ka, fa] = split(a);
  const [kb, fb] = split(b);
  return fa === fb && (ka === UNKNOWN_KEY || kb === UNKNOWN_KEY || ka === kb);
}

/** The default trigger: the network's identity every `pollMs` (NETWORK_POLL_MS), a recheck every `recheckMs`. */
export function pollTrigger(
  clock: Clock,
  identity: () => string,
  recheckMs: () => number,
  pollMs: () => number = () => NETWORK_POLL_MS,
): TrustedTrigger {
  return (fire) => {
    let last = identity();
    let sinceRecheck = 0;
    let timer: Timer | null = null;
    let stopped = false;
    let every = pollMs();
    const tick = (): void => {
      if (stopped) return;
      sinceRecheck += every;
      const now = identity();
      const changed = !sameNetwork(now, last);
      last = now;
      if (changed) {
        sinceRecheck = 0;
        fire("network-change");
      } else if (sinceRecheck >= recheckMs()) {
        sinceRecheck = 0;
        fire("recheck");
      }
      every = pollMs();
      timer = clock.after(every, tick, { background: true });
    };
    timer = clock.after(every, tick, { background: true });
    return () => {
      stopped = true;
      timer?.cancel();
    };
  };
}

export interface TrustedNetworksHost {
  /** The configuration in force (policy applied). */
  config(): DetourConfig;
  /** Policy's autoConnect: always-on. */
  autoConnect(): boolean;
  state(): ConnectionStateName;
  /** Path of the resolv.conf that describes the network (the original while the tunnel's is in force). */
  resolvConfPath(): string;
  /** The network memory's key for the network (null: not known yet). */
  networkKey(): string | null;
  connect(): Promise<unknown>;
  disconnect(): void;
  /** Reports a changed verdict or an action taken (telemetry event). */
  report(name: string, body: Record<string, unknown>, attrs: Record<string, string | number | boolean>): void;
  log: Logger;
  /** The TLS check (tests replace it). */
  check?: (host: TrustedNetworkRuleConfig["tlsHost"], timeoutMs: number) => Promise<TlsCheckResult>;
}

/** The verdict on the network, the action it leads to, and what status shows of both. */
export class TrustedNetworks {
  readonly #host: TrustedNetworksHost;
  readonly #clock: Clock;
  #verdict: TrustedVerdict | null = null;
  #checkedAt: number | null = null;
  #checkedKey: string | null = null;
  /** detourd keeps the tunnel down because the network is trusted, while a connection is otherwise wanted. */
  #heldDown = false;
  #running: Promise<TrustedVerdict> | null = null;
  #acting: Promise<unknown> = Promise.resolve();
  /** Why the network's resolv.conf could not be read at the last look (null: it was read). */
  #readError: string | null = null;
  #stopTrigger: (() => void) | null = null;

  constructor(host: TrustedNetworksHost, clock: Clock) {
    this.#host = host;
    this.#clock = clock;
  }

  /** Starts re-evaluating on the trigger's calls until stop(). */
  start(trigger: TrustedTrigger): void {
    this.#stopTrigger?.();
    this.#stopTrigger = trigger((why) => {
      void this.evaluate(why);
    });
  }

  stop(): void {
    this.#stopTrigger?.();
    this.#stopTrigger = null;
  }

  /** What `detour status` shows. */
  status(): TrustedStatus {
    const c = this.#host.config();
    const t = c.trustedNetworks;
    return {
      configured: t !== undefined,
      policy: t?.policy ?? null,
      trusted: this.#verdict?.trusted ?? false,
      rule: this.#verdict?.rule ?? null,
      reason: this.#verdict?.reason ?? (t === undefined ? "no trusted networks configured" : "not checked yet"),
      checkedAt: this.#checkedAt,
      heldDown: this.#heldDown,
      alwaysOn: this.#host.autoConnect(),
      allowDisconnect: c.allowDisconnect,
    };
  }

  /**
   * The user disconnected (allowed by policy): nothing is held down for them any more; a later network change
   * still connects under always-on.
   */
  userDisconnected(): void {
    this.#heldDown = false;
  }

  /**
   * Before a connect: refused (the reason) when this is a trusted network and policy keeps Detour disconnected on
   * it, else null. A verdict for the same network from within the recheck interval is reused.
   */
  async connectRefusal(): Promise<string | null> {
    const t = this.#host.config().trustedNetworks;
    if (t === undefined) return null;
    const fresh =
      this.#verdict !== null &&
      this.#checkedAt !== null &&
      this.#checkedKey !== null &&
      sameNetwork(this.#checkedKey, this.identity()) &&
      this.#clock.wall() - this.#checkedAt < t.recheckMs;
    const v = fresh && this.#verdict !== null ? this.#verdict : await this.#evaluateOnly();
    if (!v.trusted || t.policy !== "disconnect") return null;
    this.#heldDown = true;
    return `${v.reason}; your organisation's policy keeps Detour disconnected on a trusted network (trustedNetworkPolicy: disconnect)`;
  }

  /**
   * Evaluates and acts: on a trusted network with policy "disconnect" a tunnel goes down; off it, a connection
   * starts where always-on wants one (at start and on a network change) or where one was held down by trust.
   */
  evaluate(why: TrustedTriggerReason, opts: { wanted?: boolean } = {}): Promise<TrustedVerdict> {
    // One evaluation and its action at a time: two triggers at once must not both see "idle" and connect twice.
    const next = this.#acting.then(() => this.#evaluateAndAct(why, opts));
    this.#acting = next.catch(() => undefined);
    return next;
  }

  async #evaluateAndAct(why: TrustedTriggerReason, opts: { wanted?: boolean }): Promise<TrustedVerdict> {
    const v = await this.#evaluateOnly();
    const t = this.#host.config().trustedNetworks;
    const state = this.#host.state();
    const idle = state === "disconnected";
    const alwaysOn = this.#host.autoConnect() && (why === "start" || why === "network-change");
    // On a trusted network a connection is held down; leaving it connects, as AnyConnect's detection does.
    if (v.trusted && t?.policy === "disconnect") this.#heldDown = true;
    const action = trustedAction({
      verdict: v,
      policy: t?.policy ?? "disconnect",
      idle,
      autoConnect: alwaysOn || opts.wanted === true,
      heldDownByTrust: this.#heldDown,
    });
    switch (action.type) {
      case "none":
        break;
      case "disconnect":
        this.#host.log.info("trusted network: disconnecting", { rule: v.rule, why });
        this.#heldDown = true;
        this.#host.disconnect();
        this.#host.report(
          "detour.trusted.action",
          { action: "disconnect", rule: v.rule, reason: v.reason, why },
          { action: "disconnect", why },
        );
        break;
      case "connect":
        this.#host.log.info("connecting on an untrusted network", { why, heldDown: this.#heldDown, reason: v.reason });
        this.#heldDown = false;
        this.#host.report(
          "detour.trusted.action",
          { action: "connect", rule: v.rule, reason: v.reason, why },
          { action: "connect", why },
        );
        // Resolves once the machine is connecting, so the next evaluation sees it busy.
        await this.#host.connect().catch((err: unknown) => {
          this.#host.log.error("connect after a trusted-network check failed", { err });
          this.#host.report(
            "detour.trusted.action",
            { action: "connect-failed", reason: String(err), why },
            { action: "connect-failed", why },
          );
        });
        break;
    }
    return v;
  }

  /** The network's identity as far as trust goes: the network memory's key and what its resolv.conf hands out. */
  identity(): string {
    return `${this.#host.networkKey() ?? UNKNOWN_KEY}${KEY_SEPARATOR}${JSON.stringify(this.#facts())}`;
  }

  #facts(): NetworkDnsFacts {
    const path = this.#host.resolvConfPath();
    try {
      const facts = dnsFactsOf(readFileSync(path, "utf8"));
      this.#readError = null;
      return facts;
    } catch (e) {
      // Nothing read, nothing matches: untrusted (closed), and status says why.
      this.#readError = `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
      return { domains: [], servers: [] };
    }
  }

  /** One evaluation at a time: a second caller shares the one running. */
  #evaluateOnly(): Promise<TrustedVerdict> {
    if (this.#running !== null) return this.#running;
    const p = this.#run().finally(() => {
      if (this.#running === p) this.#running = null;
    });
    this.#running = p;
    return p;
  }

  async #run(): Promise<TrustedVerdict> {
    const config = this.#host.config();
    const t = config.trustedNetworks;
    const key = this.identity();
    let v: TrustedVerdict;
    if (t === undefined) {
      v = { trusted: false, rule: null, reason: "no trusted networks configured" };
    } else {
      const facts = this.#facts();
      const tunnelNets = [...config.protectedRoutes, ...(config.pushedRoutes?.allow ?? [])];
      const tunnelUp = this.#host.state() !== "disconnected";
      const check = this.#host.check ?? checkPinnedTls;
      const results = new Map<string, TlsCheckResult>();
      await Promise.all(
        candidateRules(t, facts).map(async (r) => {
          // Through a tunnel the organisation's own host would answer on any network: no proof of this one.
          if (tunnelUp && routedIntoTunnel(r.tlsHost.address, tunnelNets)) {
            results.set(r.name, {
              ok: false,
              reason: `${r.tlsHost.address} lies in a network the tunnel carries and cannot be checked outside it while connected`,
            });
            return;
          }
          results.set(r.name, await check(r.tlsHost, t.timeoutMs));
        }),
      );
      v = verdictOf(t, facts, results);
      if (this.#readError !== null && !v.trusted) v = { ...v, reason: `${v.reason}; ${this.#readError}` };
    }
    const changed = this.#verdict?.trusted !== v.trusted || this.#verdict.rule !== v.rule;
    this.#verdict = v;
    this.#checkedAt = this.#clock.wall();
    this.#checkedKey = key;
    if (changed) {
      this.#host.log.info("trusted network verdict", { trusted: v.trusted, rule: v.rule, reason: v.reason });
      if (t !== undefined)
        this.#host.report(
          "detour.trusted.verdict",
          { trusted: v.trusted, rule: v.rule, reason: v.reason },
          { trusted: v.trusted, ...(v.rule === null ? {} : { rule: v.rule }) },
        );
    }
    return v;
  }
}
