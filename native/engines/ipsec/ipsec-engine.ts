/**
 * The IKEv2 driver: one charon-systemd (kernel-libipsec: userspace ESP over its own TUN device) per tunnel,
 * configured and watched only over its private VICI socket, proven by an echo through its device, and stopped
 * leaving nothing behind. Several instances can share a namespace (random IKE ports, private routing tables).
 */
import { randomInt } from "node:crypto";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { TunnelEvent, TunnelStats, TunnelUp } from "../../../main/core/tunnel/engine-types.ts";
import { isAlive } from "../../platform/process-tree.linux.ts";
import { linkAddresses, linkCounters, linkExists } from "../../platform/link.linux.ts";
import { pingThrough } from "../../platform/probe.linux.ts";
import { linkMtuOf, pathMtu, setLinkMtu, MIN_DEVICE_MTU } from "../../platform/mss.linux.ts";
import { ipFamily } from "../../../main/core/ip-address.ts";
import { espInnerMtu } from "../../../main/core/tunnel/mtu.ts";
import { EngineProcess, type ProcessExit } from "../engine-process.ts";
import {
  EngineError,
  EventHub,
  type EngineDiagnostics,
  type EngineStartHooks,
  type Ikev2Spec,
  type TunnelEngine,
} from "../engine.ts";
import { StartGuard, type StartAttempt } from "../start-guard.ts";
import {
  CHILD_NAME,
  CONN_NAME,
  ROUTING_TABLE_MAX,
  ROUTING_TABLE_MIN,
  connMessage,
  retransmitGiveUpMs,
  sharedKeyMessage,
  specProblems,
  strongswanConf,
} from "./charon-config.ts";
import { classifyIkeFailure } from "./ike-failure.ts";
import {
  deleteRule,
  deviceWithAddress,
  flushTable,
  linkMtu,
  routesInTable,
  rulesForTable,
} from "./routing-table.linux.ts";
import { viciSection, type ViciSection, type ViciValue } from "./vici-codec.ts";
import { ViciClient, isViciClientError } from "./vici-client.ts";

/** Debian's path; charon-systemd (unlike /usr/lib/ipsec/charon) writes no pid file, so instances can coexist. */
export const CHARON_BIN = "/usr/sbin/charon-systemd";

/** charon-systemd opens its VICI socket 25-30 ms after launch; five seconds only passes on a broken install. */
const VICI_READY_TIMEOUT_MS = 5000;
/** How often the start-up waits look again: small against the 25-30 ms they usually take. */
const POLL_MS = 10;
/** kernel-netlink adds the table's rule before the vici plugin opens its socket; this bounds a late one. */
const RULE_WAIT_MS = 1000;
/**
 * Kept back from `initiate`'s timeout: terminating the half-open IKE_SA and stopping charon take well under
 * a second, so a failed start still rejects by its deadline.
 */
const TEARDOWN_RESERVE_MS = 1000;
/** With less time than this left, an IKE exchange cannot complete, even on a LAN; fail without trying. */
const MIN_INITIATE_MS = 100;
/** charon answers `initiate` right when its own timeout fires; this covers the reply's way back. */
const INITIATE_REPLY_SLACK_MS = 1000;
/** `terminate` with force returns once the DELETE is sent, without waiting for the (maybe dead) gateway. */
const TERMINATE_WAIT_MS = 500;
const TERMINATE_REQUEST_TIMEOUT_MS = 2000;
/** kernel-netlink installs the virtual IP on the TUN before the CHILD_SA is up; this bounds a slow netlink. */
const VIP_WAIT_MS = 2000;
/** A TUN device goes with its process; after that the kernel needs only moments to remove it. */
const DEVICE_GONE_TIMEOUT_MS = 2000;
/** stats() asks charon for SA counters; a busy charon must not hold up the caller for longer than this. */
const STATS_TIMEOUT_MS = 1000;
/** Tries at picking an unused private routing table before giving up (collisions are ~1 in 2^31). */
const TABLE_PICK_TRIES = 8;
/**
 * An SA that went down is checked against charon's own list before the tunnel is called down: a rekeyed CHILD_SA
 * or the IKE_SA a reauthentication replaced goes down while its successor carries on. A successor still being
 * negotiated (CONNECTING) gets the retransmit give-up time (plus a second for the exchange itself) to become
 * established.
 */
const REPLACEMENT_WAIT_MS = retransmitGiveUpMs() + 1000;
/** How often a pending replacement is looked at again: small against the ~1 s an exchange takes at worst here. */
const REPLACEMENT_POLL_MS = 250;
/** charon's lines kept from one start attempt, to decide why it failed. */
const START_LINES_KEPT = 400;

const TUN_CREATED_RE = /created TUN device: (\S+)/;

type State = "idle" | "starting" | "up" | "down" | "stopping" | "stopped";

export class IpsecEngine implements TunnelEngine {
  readonly protocol = "ikev2";
  readonly #spec: Ikev2Spec;
  readonly #hub = new EventHub();
  readonly #viciPath: string;
  readonly #confPath: string;
  readonly #guard: StartGuard;
  #state: State = "idle";
  #proc: EngineProcess | null = null;
  #vici: ViciClient | null = null;
  #table: number | null = null;
  /** The TUN device kernel-libipsec created, from charon's "created TUN device" line. */
  #tunName: string | null = null;
  /** The device that carries the tunnel (holds the virtual IP); set once start succeeded. */
  #ifname: string | null = null;
  #startLines: string[] = [];
  #childUpAt: number | null = null;
  /** While `initiate` streams control-log events, those carry charon's words; its stderr would repeat them. */
  #initiating = false;
  #stopping = false;
  #lastRx: { bytesIn: number; at: number | null } | null = null;
  /** The virtual IP the tunnel came up with: a replacement SA must keep it, as the leg is routed by it. */
  #vip: string | null = null;
  /** A down event is being checked against charon's list (see REPLACEMENT_WAIT_MS). */
  #confirming = false;

  constructor(spec: Ikev2Spec) {
    this.#spec = spec;
    this.#viciPath = join(spec.runtime.workDir, "charon.vici");
    this.#confPath = join(spec.runtime.workDir, "strongswan.conf");
    this.#guard = new StartGuard(`IKEv2 start to ${spec.gateway.name}`, () => this.#teardown());
  }

  /** charon's PID while it runs (for diagnostics and crash drills); null before start. */
  get pid(): number | null {
    return this.#proc === null || this.#proc.pid < 0 ? null : this.#proc.pid;
  }

  onEvent(listener: (e: TunnelEvent) => void): () => void {
    return this.#hub.on(listener);
  }

  async start(deadlineAt: number, signal?: AbortSignal, startHooks: EngineStartHooks = {}): Promise<TunnelUp> {
    const hooks = {
      timeoutError: () => this.#timeoutError(),
      classify: (e: unknown) =>
        isViciClientError(e)
          ? new EngineError("engine-crashed", `VICI: ${e.message}`, this.#tail(), { cause: e })
          : null,
      tail: () => this.#tail(),
    };
    const up = await this.#guard.run(deadlineAt, signal, hooks, (attempt) => {
      this.#state = "starting";
      return this.#bringUp(deadlineAt, attempt, startHooks);
    });
    this.#state = "up";
    this.#hub.emit({ type: "up", at: Date.now() });
    return up;
  }

  async #bringUp(deadlineAt: number, attempt: StartAttempt, startHooks: EngineStartHooks): Promise<TunnelUp> {
    const spec = this.#spec;
    const signal = attempt.signal;
    const netns = spec.runtime.netns;
    const problems = specProblems(spec);
    if (problems.length > 0) throw new EngineError("bad-config", `the IKEv2 spec cannot work: ${problems.join("; ")}`);

    mkdirSync(spec.runtime.workDir, { recursive: true, mode: 0o700 });
    rmSync(this.#viciPath, { force: true });
    this.#table = await attempt.race(this.#pickTable());
    try {
      writeFileSync(this.#confPath, strongswanConf({ viciSocket: this.#viciPath, routingTable: this.#table }), {
        mode: 0o600,
      });
    } catch (e) {
      throw new EngineError("bad-config", `cannot write charon's config: ${(e as Error).message}`, "", { cause: e });
    }
    attempt.check();

    const proc = EngineProcess.spawn({
      argv: [CHARON_BIN],
      netns,
      env: { STRONGSWAN_CONF: this.#confPath, PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      logFile: join(spec.runtime.workDir, "charon.log"),
      onLine: (line) => {
        this.#onLine(line);
      },
    });
    this.#proc = proc;
    void proc.exited.then((exit) => {
      this.#onExit(exit);
    });
    if (proc.pid < 0) {
      await proc.exited;
      throw new EngineError("engine-crashed", `${CHARON_BIN} could not be started`, proc.tail());
    }

    await this.#until(
      "charon's VICI socket",
      () => (existsSync(this.#viciPath) ? true : null),
      Math.min(deadlineAt, Date.now() + VICI_READY_TIMEOUT_MS),
      signal,
    );
    await this.#disarmRoutingRule(this.#table, signal);

    const vici = await attempt.race(ViciClient.connect(this.#viciPath), (c) => {
      c.close();
    });
    this.#vici = vici;
    await vici.register("ike-updown", (m) => {
      this.#onUpdown("IKE_SA", m);
    });
    await vici.register("child-updown", (m) => {
      this.#onUpdown("CHILD_SA", m);
    });
    await this.#load("load-shared", sharedKeyMessage(spec));
    await this.#load("load-conn", connMessage(spec));

    const budget = deadlineAt - Date.now() - TEARDOWN_RESERVE_MS;
    if (budget < MIN_INITIATE_MS)
      throw new EngineError("timeout", `only ${Math.max(0, budget)} ms left to negotiate IKE before the deadline`);
    this.#initiating = true;
    const init = await attempt
      .race(
        vici.stream(
          "initiate",
          viciSection({ child: CHILD_NAME, ike: CONN_NAME, timeout: String(budget), loglevel: "1" }),
          "control-log",
          {
            timeoutMs: budget + INITIATE_REPLY_SLACK_MS,
            onEvent: (m) => {
              this.#keepLine(`[${str(m, "group")}] ${str(m, "msg")}`);
            },
          },
        ),
        () => {
          vici.close();
        },
      )
      .finally(() => {
        this.#initiating = false;
      });
    if (init.response.get("success") !== "yes") {
      const errmsg = str(init.response, "errmsg");
      const f = classifyIkeFailure({
        errmsg,
        lines: this.#startLines,
        deadlineHit: false,
        remoteId: spec.params.remoteId,
      });
      throw new EngineError(f.code, f.message, f.evidence.join("\n"));
    }
    const handshakeAt = this.#childUpAt ?? Date.now();
    // once more now that routes exist: a rule charon added late would make them live
    await this.#disarmRoutingRule(this.#table, signal, 0);

    const sa = await this.#ikeSa(vici);
    const vip = firstOf(sa?.get("local-vips"));
    const child = sa === null ? null : installedChild(sa);
    if (vip === null || child === null) {
      throw new EngineError(
        "engine-crashed",
        `charon reports the tunnel up but ${vip === null ? "no virtual IP" : "no installed CHILD_SA"}`,
        this.#tail(),
      );
    }
    const routes = listOf(child.get("remote-ts"));

    const ifname = await this.#deviceFor(vip, Math.min(deadlineAt, Date.now() + VIP_WAIT_MS), signal);
    this.#ifname = ifname;
    this.#vip = vip;
    const mtu = await attempt.race(this.#fitMtu(ifname));
    if (startHooks.beforeProbe !== undefined) await attempt.race(startHooks.beforeProbe({ ifname, address: vip }));
    const echo = await attempt.race(pingThrough({ ifname, target: spec.probe.address, netns, deadlineAt, signal }));
    if (!echo.ok) throw new EngineError("timeout", `IKEv2 tunnel established, but ${echo.error}`, this.#tail());

    return {
      // dns stays empty: charon asks the gateway for DNS only when an attribute handler such as the `resolve`
      // plugin is loaded, and that plugin rewrites the host's resolv.conf
      config: { ifname, addresses: [`${vip}/32`], routes, dns: [], mtu: mtu ?? (await linkMtu(ifname, netns)) },
      timings: { spawnedAt: proc.spawnedAt, handshakeAt, firstReplyAt: echo.at, firstReplyRttMs: echo.rttMs },
      detail: {
        routingTable: String(this.#table),
        localPort: str(sa ?? new Map(), "local-port"),
        encapsulation: "udp",
      },
    };
  }

  /**
   * kernel-libipsec gives its device a fixed MTU (1400 by default): lowered to what ESP in UDP leaves of the path
   * toward the gateway when that is less, never raised (libipsec reads packets into buffers of its own size). The
   * device's MTU afterwards, or null when it cannot be read.
   */
  async #fitMtu(ifname: string): Promise<number | null> {
    const netns = this.#spec.runtime.netns;
    const [path, current] = await Promise.all([
      pathMtu(this.#spec.gateway.address, netns).catch(() => null),
      linkMtuOf(ifname, netns).catch(() => null),
    ]);
    if (path === null || current === null) return current;
    const fit = Math.max(
      MIN_DEVICE_MTU,
      espInnerMtu(path.mtu, ipFamily(this.#spec.gateway.address) === "ipv6" ? 6 : 4),
    );
    if (fit >= current) return current;
    await setLinkMtu(ifname, fit, netns);
    return fit;
  }

  /** A routing table for this instance that no rule or route uses yet. */
  async #pickTable(): Promise<number> {
    const netns = this.#spec.runtime.netns;
    for (let i = 0; i < TABLE_PICK_TRIES; i++) {
      const t = randomInt(ROUTING_TABLE_MIN, ROUTING_TABLE_MAX + 1);
      if ((await rulesForTable(t, netns)).length === 0 && (await routesInTable(t, netns)).length === 0) return t;
    }
    throw new EngineError("engine-crashed", `no unused routing table found in ${TABLE_PICK_TRIES} tries`);
  }

  /** Deletes the rule charon added for its private table, so the routes it installs there stay inert. */
  async #disarmRoutingRule(table: number, signal: AbortSignal, waitMs = RULE_WAIT_MS): Promise<void> {
    const netns = this.#spec.runtime.netns;
    const until = Date.now() + waitMs;
    let rules = await rulesForTable(table, netns);
    while (!rules.some((r) => r.family === "4") && Date.now() < until) {
      signal.throwIfAborted();
      await sleep(POLL_MS);
      rules = await rulesForTable(table, netns);
    }
    for (const r of rules) await deleteRule(r, table, netns);
    const left = await rulesForTable(table, netns);
    if (left.length > 0)
      throw new EngineError("engine-crashed", `cannot delete charon's routing rule for table ${table}`, this.#tail());
  }

  async #load(command: "load-shared" | "load-conn", message: ViciSection): Promise<void> {
    const vici = this.#vici;
    if (vici === null) throw new EngineError("engine-crashed", "no VICI connection");
    try {
      await vici.requestOk(command, message);
    } catch (e) {
      if (isViciClientError(e) && e.code === "command-failed")
        throw new EngineError("bad-config", `charon refused ${command}: ${e.errmsg}`, this.#tail(), { cause: e });
      throw e;
    }
  }

  /** The tunnel's IKE_SA: the established one with an installed CHILD_SA when there are several (a reauthentication). */
  async #ikeSa(vici: ViciClient, timeoutMs?: number): Promise<ViciSection | null> {
    const sas = await this.#ikeSas(vici, timeoutMs);
    return sas.find((sa) => str(sa, "state") === "ESTABLISHED" && installedChild(sa) !== null) ?? sas[0] ?? null;
  }

  /** Every IKE_SA of the tunnel's connection charon lists (two while a reauthentication overlaps). */
  async #ikeSas(vici: ViciClient, timeoutMs?: number): Promise<ViciSection[]> {
    const { events } = await vici.stream(
      "list-sas",
      viciSection({ ike: CONN_NAME, noblock: "yes" }),
      "list-sa",
      timeoutMs === undefined ? {} : { timeoutMs },
    );
    return events.flatMap((e) => {
      const sa = e.get(CONN_NAME);
      return sa instanceof Map ? [sa] : [];
    });
  }

  /** The device holding the virtual IP: normally the TUN charon announced; any device that holds it otherwise. */
  async #deviceFor(vip: string, until: number, signal: AbortSignal): Promise<string> {
    const netns = this.#spec.runtime.netns;
    return this.#until(
      `virtual IP ${vip} on a device`,
      async () => {
        const tun = this.#tunName;
        return tun !== null && (await linkAddresses(tun, netns)).includes(`${vip}/32`)
          ? tun
          : await deviceWithAddress(vip, netns);
      },
      until,
      signal,
    );
  }

  /** Polls `check` until it returns a value; rejects at `until`, on abort, or when charon exits meanwhile. */
  async #until<T>(
    what: string,
    check: () => T | null | Promise<T | null>,
    until: number,
    signal: AbortSignal,
  ): Promise<T> {
    for (;;) {
      signal.throwIfAborted();
      if (this.#proc !== null && !this.#proc.running) throw this.#crashed(`charon exited while waiting for ${what}`);
      const v = await check();
      if (v !== null) return v;
      if (Date.now() >= until)
        throw new EngineError("engine-crashed", `charon did not provide ${what} in time`, this.#tail());
      await sleep(POLL_MS);
    }
  }

  #onLine(line: string): void {
    const m = TUN_CREATED_RE.exec(line);
    if (m?.[1] !== undefined) this.#tunName ??= m[1];
    if (this.#state === "starting" && !this.#initiating) this.#keepLine(line);
  }

  #keepLine(line: string): void {
    this.#startLines.push(line);
    if (this.#startLines.length > START_LINES_KEPT) this.#startLines.shift();
  }

  #onUpdown(kind: "IKE_SA" | "CHILD_SA", m: ViciSection): void {
    const sa = m.get(CONN_NAME);
    if (!(sa instanceof Map)) return;
    if (m.get("up") === "yes") {
      if (kind === "CHILD_SA") this.#childUpAt ??= Date.now();
      return;
    }
    const state = str(sa, "state");
    if (this.#state === "starting") this.#keepLine(`[VICI] ${kind} down (${state})`);
    else void this.#confirmDown(`${kind} went down (${state === "" ? "deleted" : state})`);
  }

  /**
   * An SA went down: the tunnel is down unless charon still has (or is about to have) an established IKE_SA with
   * an installed CHILD_SA and the same virtual IP, as after a CHILD_SA rekey or a make-before-break
   * reauthentication. Whatever cannot be confirmed (charon unreachable, no successor in time) is a down.
   */
  async #confirmDown(reason: string): Promise<void> {
    if (this.#notUp() || this.#confirming) return;
    this.#confirming = true;
    try {
      const until = Date.now() + REPLACEMENT_WAIT_MS;
      for (let i = 0; i <= Math.ceil(REPLACEMENT_WAIT_MS / REPLACEMENT_POLL_MS); i++) {
        const look = await this.#lookForLiveSa();
        if (this.#notUp() || look.kind === "live") return;
        if (look.kind === "gone" || Date.now() >= until) {
          this.#markDown(look.kind === "gone" && look.why !== null ? look.why : reason);
          return;
        }
        await sleep(REPLACEMENT_POLL_MS);
      }
      this.#markDown(reason);
    } finally {
      this.#confirming = false;
    }
  }

  /** The tunnel is no longer up as far as this driver is concerned (stopping, stopped or already down). */
  #notUp(): boolean {
    return this.#state !== "up" || this.#stopping;
  }

  /**
   * charon's IKE_SAs of this tunnel: one is established with an installed CHILD_SA on the tunnel's virtual IP
   * ("live"), one is still being negotiated ("pending"), or none can carry the tunnel ("gone", and why when it
   * is not simply that none is left).
   */
  async #lookForLiveSa(): Promise<{ kind: "live" } | { kind: "pending" } | { kind: "gone"; why: string | null }> {
    let vici: ViciClient | null = null;
    try {
      vici = await ViciClient.connect(this.#viciPath, STATS_TIMEOUT_MS);
      const sas = await this.#ikeSas(vici, STATS_TIMEOUT_MS);
      let pending = false;
      for (const sa of sas) {
        const state = str(sa, "state");
        if (state === "ESTABLISHED" && installedChild(sa) !== null) {
          const vip = firstOf(sa.get("local-vips"));
          if (vip === this.#vip) return { kind: "live" };
          return {
            kind: "gone",
            why: `the IKE_SA that replaced the tunnel's has virtual IP ${String(vip)}, not ${String(this.#vip)}`,
          };
        }
        // A reauthentication's new IKE_SA is negotiated with its CHILD_SA in one exchange: until it is
        // established the old one may already be gone (break-before-make, when the gateway forces it).
        if (state === "CONNECTING") pending = true;
      }
      return pending ? { kind: "pending" } : { kind: "gone", why: null };
    } catch (e) {
      return {
        kind: "gone",
        why: `charon could not be asked whether the tunnel lives on: ${e instanceof Error ? e.message : String(e)}`,
      };
    } finally {
      vici?.close();
    }
  }

  #onExit(exit: ProcessExit): void {
    const expected = this.#stopping;
    this.#hub.emit({ type: "engine-exit", at: exit.at, code: exit.code, signal: exit.signal, expected });
    if (expected) return;
    this.#guard.fail(this.#crashed("charon exited during start"));
    if (this.#state === "up") this.#state = "down";
  }

  #markDown(reason: string): void {
    if (this.#state !== "up" || this.#stopping) return;
    this.#state = "down";
    this.#hub.emit({ type: "down", at: Date.now(), reason });
  }

  async stats(): Promise<TunnelStats> {
    const netns = this.#spec.runtime.netns;
    const c = this.#ifname === null ? null : await linkCounters(this.#ifname, netns);
    return {
      rxBytes: c?.rxBytes ?? 0,
      txBytes: c?.txBytes ?? 0,
      rxPackets: c?.rxPackets ?? 0,
      txPackets: c?.txPackets ?? 0,
      lastRxAgoMs: await this.#lastRxAgoMs(),
      subState: null,
    };
  }

  /** From charon's CHILD_SA counters: bytes-in changing since the last look, or use-in (seconds, coarse). */
  async #lastRxAgoMs(): Promise<number | null> {
    if ((this.#state !== "up" && this.#state !== "down") || this.#proc?.running !== true) return null;
    let child: ViciSection | null = null;
    // A connection of its own: a timed-out request spends its connection, and the main one carries the events.
    let vici: ViciClient | null = null;
    try {
      vici = await ViciClient.connect(this.#viciPath, STATS_TIMEOUT_MS);
      const sa = await this.#ikeSa(vici, STATS_TIMEOUT_MS);
      child = sa === null ? null : installedChild(sa);
    } catch {
      return null;
    } finally {
      vici?.close();
    }
    if (child === null) return null;
    const now = Date.now();
    const bytesIn = Number(str(child, "bytes-in"));
    const useIn = str(child, "use-in");
    const usedAt = useIn === "" || !Number.isFinite(Number(useIn)) ? null : now - Number(useIn) * 1000;
    // bytes-in moving since the last look dates the last packet to now; the first look only has use-in
    if (this.#lastRx === null || !Number.isFinite(bytesIn)) this.#lastRx = { bytesIn, at: usedAt };
    else if (bytesIn !== this.#lastRx.bytesIn) this.#lastRx = { bytesIn, at: now };
    const at = Math.max(this.#lastRx.at ?? -Infinity, usedAt ?? -Infinity);
    return Number.isFinite(at) ? Math.max(0, now - at) : null;
  }

  /** VICI list-sas (every SA of this charon, as plain JSON) and charon's output. */
  async diagnostics(): Promise<EngineDiagnostics> {
    let state: unknown = { running: false };
    if (this.#proc?.running === true) {
      let vici: ViciClient | null = null;
      try {
        vici = await ViciClient.connect(this.#viciPath, STATS_TIMEOUT_MS);
        const { events } = await vici.stream("list-sas", viciSection({ noblock: "yes" }), "list-sa", {
          timeoutMs: STATS_TIMEOUT_MS,
        });
        state = { "list-sas": events.map(viciToJson) };
      } catch (e) {
        state = { error: e instanceof Error ? e.message : String(e) };
      } finally {
        vici?.close();
      }
    }
    return { engine: "charon", state, log: this.#proc?.tail(200) ?? "" };
  }

  stop(): Promise<void> {
    this.#stopping = true;
    return this.#guard.stop();
  }

  /** IKE DELETE through charon, then SIGTERM (SIGKILL after the grace), then remove and verify every trace. */
  async #teardown(): Promise<void> {
    this.#stopping = true;
    this.#state = "stopping";
    try {
      await this.#removeAll();
    } finally {
      this.#state = "stopped";
    }
  }

  async #removeAll(): Promise<void> {
    const netns = this.#spec.runtime.netns;
    const proc = this.#proc;
    if (proc?.running === true && existsSync(this.#viciPath)) {
      // A connection of its own: the main one may be stuck behind an `initiate` that is being abandoned.
      try {
        const c = await ViciClient.connect(this.#viciPath);
        try {
          await c.request(
            "terminate",
            viciSection({ ike: CONN_NAME, force: "yes", timeout: String(TERMINATE_WAIT_MS) }),
            { timeoutMs: TERMINATE_REQUEST_TIMEOUT_MS },
          );
        } finally {
          c.close();
        }
      } catch {
        // charon may be on its way out; SIGTERM below deletes any SA it still has
      }
    }
    this.#vici?.close();
    if (proc !== null) await proc.stop("SIGTERM");

    const tun = this.#tunName;
    if (tun !== null) {
      const until = Date.now() + DEVICE_GONE_TIMEOUT_MS;
      while ((await linkExists(tun, netns)) && Date.now() < until) await sleep(POLL_MS);
    }
    // charon does not unlink its VICI socket on exit
    rmSync(this.#viciPath, { force: true });
    if (this.#table !== null) {
      for (const r of await rulesForTable(this.#table, netns)) await deleteRule(r, this.#table, netns);
      if ((await routesInTable(this.#table, netns)).length > 0) await flushTable(this.#table, netns);
    }
    rmSync(this.#spec.runtime.workDir, { recursive: true, force: true });
    const left = await this.leftovers();
    if (left.length > 0)
      throw new EngineError("engine-crashed", `stopping the IKEv2 engine left ${left.join("; ")}`, this.#tail());
  }

  /** What of this instance is still on the host: empty after a clean stop. */
  async leftovers(): Promise<string[]> {
    const netns = this.#spec.runtime.netns;
    const out: string[] = [];
    const pid = this.pid;
    if (pid !== null && isAlive(pid)) out.push(`process ${pid}`);
    if (this.#tunName !== null && (await linkExists(this.#tunName, netns))) out.push(`device ${this.#tunName}`);
    if (existsSync(this.#viciPath)) out.push(`socket ${this.#viciPath}`);
    if (this.#table !== null) {
      for (const r of await rulesForTable(this.#table, netns))
        out.push(`rule ${r.priority} (IPv${r.family}) for table ${this.#table}`);
      for (const r of await routesInTable(this.#table, netns)) out.push(`route ${r} in table ${this.#table}`);
    }
    if (existsSync(this.#spec.runtime.workDir)) out.push(`folder ${this.#spec.runtime.workDir}`);
    return out;
  }

  /** The deadline passed: charon's own lines say whether the gateway was silent, refused or never reached. */
  #timeoutError(): EngineError {
    const f = classifyIkeFailure({
      errmsg: "",
      lines: this.#startLines,
      deadlineHit: true,
      remoteId: this.#spec.params.remoteId,
    });
    return new EngineError(f.code === "engine-crashed" ? "timeout" : f.code, f.message, f.evidence.join("\n"));
  }

  #crashed(what: string): EngineError {
    const exit = this.#proc?.exit;
    const how =
      exit === null || exit === undefined ? "" : ` (code ${String(exit.code)}, signal ${String(exit.signal)})`;
    return new EngineError("engine-crashed", `${what}${how}`, this.#tail());
  }

  #tail(): string {
    return this.#proc?.tail() ?? "";
  }
}

function str(s: ViciSection, key: string): string {
  const v = s.get(key);
  return typeof v === "string" ? v : "";
}

function listOf(v: ViciValue | undefined): string[] {
  return Array.isArray(v) ? [...(v as readonly string[])] : [];
}

function firstOf(v: ViciValue | undefined): string | null {
  return listOf(v)[0] ?? null;
}

/** The driver's CHILD_SA in an IKE_SA entry of list-sas, if installed. */
function installedChild(sa: ViciSection): ViciSection | null {
  const children = sa.get("child-sas");
  if (!(children instanceof Map)) return null;
  for (const c of children.values()) {
    if (c instanceof Map && c.get("name") === CHILD_NAME && c.get("state") === "INSTALLED") return c;
  }
  return null;
}

/** A VICI section as plain JSON (sections become objects, lists arrays), for diagnostics. */
export function viciToJson(section: ViciSection): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of section)
    out[k] =
      typeof v === "string" ? v : Array.isArray(v) ? [...(v as readonly string[])] : viciToJson(v as ViciSection);
  return out;
}
