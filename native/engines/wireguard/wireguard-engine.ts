/**
 * The WireGuard driver: runs one wireguard-go in the foreground, configures it through its UAPI socket only (the
 * private key never touches a command line, file or log), proves the tunnel with an echo through the device,
 * reports its exit, and leaves no process, device, socket or file behind when stopped. WireGuard itself never
 * says a peer is gone: whether a tunnel that is up still works is the caller's in-tunnel monitor's call.
 *
 *   start: validate ─► spawn wireguard-go -f ─► socket + link ─► address, MTU, up ─► UAPI set ─► echo reply
 *                      └─► path MTU toward the gateway (beside the spawn) ─┘
 *              │   (each step raced against the deadline, the caller's abort, stop() and the process's exit)
 *              └─► any failure: stop everything started, then reject with an EngineError (see start-guard.ts)
 */
import { existsSync } from "node:fs";
import { isAbsolute } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { TunnelEvent, TunnelStats, TunnelUp } from "../../../main/core/tunnel/engine-types.ts";
import { configureLink, linkCounters } from "../../platform/link.linux.ts";
import { pathMtu, MIN_DEVICE_MTU, type PathMtu } from "../../platform/mss.linux.ts";
import { ipFamily } from "../../../main/core/ip-address.ts";
import { wireguardMtu } from "../../../main/core/tunnel/mtu.ts";
import { pingThrough, type EchoResult } from "../../platform/probe.linux.ts";
import { CommandError } from "../../platform/run.ts";
import type { EngineProcess, ProcessExit } from "../engine-process.ts";
import {
  SpareError,
  claimDeviceName,
  removeWireGuardGo,
  spawnWireGuardGo,
  waitDeviceReady,
  type WireGuardSpare,
} from "./wireguard-spare.ts";
import {
  EngineError,
  EventHub,
  type EngineDiagnostics,
  type EngineStartHooks,
  type TunnelEngine,
  type WireGuardSpec,
} from "../engine.ts";
import { StartGuard, type StartAttempt } from "../start-guard.ts";
import { hostPort } from "../../../main/core/ip-address.ts";
import type { Secret } from "../../../main/core/secret.ts";
import {
  UapiError,
  encodeEndpointUpdate,
  encodeSet,
  isCidr,
  isIpAddress,
  lastHandshakeMs,
  type UapiDump,
} from "./uapi-codec.ts";
import { UapiClient, uapiSocketPath } from "./uapi-client.ts";

/**
 * wireguard-go's own default and WireGuard's usual inner MTU: 1500 minus the 80 bytes of IPv6 + UDP + WireGuard
 * headers. Used only when the path toward the gateway cannot be read; otherwise the MTU is derived from it.
 */
export const WIREGUARD_MTU = 1420;

/** The device MTU for a path: the path's MTU less WireGuard's overhead for the gateway's family. */
export function wireguardDeviceMtu(path: PathMtu | null, gatewayAddress: string): number {
  if (path === null) return WIREGUARD_MTU;
  return Math.max(MIN_DEVICE_MTU, wireguardMtu(path.mtu, ipFamily(gatewayAddress) === "ipv6" ? 6 : 4));
}
/** A UAPI get is a local socket round trip; every 10 ms resolves the handshake time finely at no real cost. */
const HANDSHAKE_POLL_MS = 10;
/** The endpoint update after a path change is one local socket exchange; one that takes this long is hung. */
const ROAM_UAPI_TIMEOUT_MS = 2_000;
/** When ping ends early (device not yet routable), a short pause before the next one avoids a spawn loop. */
const PROBE_RETRY_GAP_MS = 50;
/**
 * Echoes every 5 ms until the first reply: the reply follows the handshake by one round trip, and at 20 ms the
 * wait for the next echo was most of a fast connect. A start lasts a few dozen echoes.
 */
const FIRST_REPLY_INTERVAL_MS = 5;
/** A send failure wireguard-go logs when the path to the gateway does not exist at all (not a silent drop). */
const UNREACHABLE_RE = /Failed to send handshake initiation:.*(network is unreachable|no route to host)/i;
/** Linux limits interface names to 15 bytes; the name also becomes a path, so no slashes or dots-only names. */
const IFNAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

/** The UAPI endpoint of a gateway: `address:port`, or `[address]:port` for IPv6 (wireguard-go's syntax). */
export function wireguardEndpoint(address: string, port: number): string {
  return hostPort(address, port);
}

export class WireGuardEngine implements TunnelEngine {
  readonly protocol = "wireguard" as const;
  readonly #spec: WireGuardSpec;
  readonly #events = new EventHub();
  readonly #uapi: UapiClient;
  readonly #socket: string;
  readonly #guard: StartGuard;
  #proc: EngineProcess | null = null;
  /** Set before any shutdown this driver causes, so the exit event says it was expected. */
  #expectExit = false;
  #handshakeAt: number | null = null;
  /** The last time traffic from the gateway was seen (probe reply or rx counter movement), for stats(). */
  #rxMovedAt: number | null = null;
  #rxMark: number | null = null;

  readonly #spare: WireGuardSpare | null;

  /** `spare`: a wireguard-go already running for this spec's device and work folder, adopted by start(). */
  constructor(spec: WireGuardSpec, opts: { spare?: WireGuardSpare } = {}) {
    this.#spec = spec;
    this.#guard = new StartGuard(`WireGuard start to ${spec.gateway.name}`, () => this.#teardown());
    this.#spare = opts.spare ?? null;
    this.#socket = uapiSocketPath(spec.runtime.ifname);
    this.#uapi = new UapiClient(this.#socket);
  }

  /** The wireguard-go PID once spawned (for diagnostics and crash drills), else null. */
  get pid(): number | null {
    return this.#proc !== null && this.#proc.pid > 0 ? this.#proc.pid : null;
  }

  onEvent(listener: (e: TunnelEvent) => void): () => void {
    return this.#events.on(listener);
  }

  /**
   * The underlay moved: the peer's endpoint is set again, so wireguard-go drops its cached source address and its
   * next packet (the monitor's probes follow at once) leaves from the new one; the gateway roams to it on receipt.
   */
  roam(): void {
    const { gateway, params } = this.#spec;
    let tx: Secret;
    try {
      tx = encodeEndpointUpdate(params.publicKey, wireguardEndpoint(gateway.address, params.port));
    } catch {
      return; // validated at start: cannot happen for a running tunnel
    }
    this.#uapi.set(tx, { deadlineAt: Date.now() + ROAM_UAPI_TIMEOUT_MS }).catch((err: unknown) => {
      this.#events.emit({
        type: "degraded",
        at: Date.now(),
        reason: `could not point the tunnel at the new network: ${err instanceof Error ? err.message : String(err)}`,
      });
    });
  }

  async start(deadlineAt: number, signal?: AbortSignal, startHooks: EngineStartHooks = {}): Promise<TunnelUp> {
    const hooks = {
      timeoutError: () => this.#timeoutError(),
      classify: (e: unknown) => this.#classify(e),
      tail: () => this.#proc?.tail() ?? "",
    };
    const up = await this.#guard.run(deadlineAt, signal, hooks, (attempt) =>
      this.#bringUp(deadlineAt, attempt, startHooks),
    );
    this.#events.emit({ type: "up", at: Date.now() });
    return up;
  }

  async #bringUp(deadlineAt: number, attempt: StartAttempt, startHooks: EngineStartHooks): Promise<TunnelUp> {
    const { runtime, params } = this.#spec;
    const tx = this.#validate();
    // A spare wireguard-go started ahead of this connect (same device and work folder) is adopted as it is.
    const spare = this.#spare;
    const adopt =
      spare !== null &&
      spare.usable &&
      spare.runtime.ifname === runtime.ifname &&
      spare.runtime.workDir === runtime.workDir &&
      spare.runtime.netns === runtime.netns;
    let proc: EngineProcess;
    if (adopt) {
      proc = spare.adopt();
    } else {
      await attempt.race(this.#claimName(deadlineAt, attempt.signal));
      attempt.check();
      proc = spawnWireGuardGo(runtime);
    }
    this.#proc = proc;
    void proc.exited.then((exit) => {
      this.#onExit(exit);
    });
    // An adopted process was launched long before; this start's clock runs from the adoption.
    const spawnedAt = adopt ? Date.now() : proc.spawnedAt;
    // The route toward the gateway is read while wireguard-go starts; an unreadable one leaves the usual 1420.
    const pathP = pathMtu(this.#spec.gateway.address, runtime.netns).catch(() => null);

    if (!adopt) await attempt.race(this.#waitReady(proc, deadlineAt, attempt.signal));
    const path = await attempt.race(pathP);
    const mtu = wireguardDeviceMtu(path, this.#spec.gateway.address);
    await attempt.race(configureLink(runtime.ifname, params.tunnelAddress, mtu, runtime.netns));

    const probing = new AbortController();
    const stopProbing = (): void => {
      probing.abort();
    };
    attempt.signal.addEventListener("abort", stopProbing, { once: true });
    try {
      // The echo probe starts while the peer is configured: starting ping costs about as much as the UAPI set,
      // and echoes sent before the peer exists are dropped by wireguard-go and simply repeated. The caller's
      // source routing (see EngineStartHooks) goes in beside the UAPI set too, and the first echo waits for it.
      const routed =
        startHooks.beforeProbe === undefined
          ? Promise.resolve()
          : startHooks.beforeProbe({ ifname: runtime.ifname, address: params.tunnelAddress.split("/")[0] ?? "" });
      const replyP = routed.then(() => this.#probeUntilReply(deadlineAt, probing.signal));
      // Awaited below (raced); a failure of the UAPI set first must not leave this rejection unheard.
      replyP.catch(() => undefined);
      await attempt.race(this.#uapi.set(tx, { deadlineAt, signal: attempt.signal }));
      const handshake = this.#watchHandshake(deadlineAt, probing.signal);
      const reply = await attempt.race(replyP);
      probing.abort();
      await attempt.race(handshake);
      if (reply === null) throw this.#timeoutError();
      if (this.#handshakeAt === null) await attempt.race(this.#readHandshake(deadlineAt));
      this.#rxMovedAt = reply.at;
      return {
        config: {
          ifname: runtime.ifname,
          addresses: [params.tunnelAddress],
          routes: [...params.allowedIps],
          dns: [],
          mtu,
        },
        timings: { spawnedAt, handshakeAt: this.#handshakeAt, firstReplyAt: reply.at, firstReplyRttMs: reply.rttMs },
        detail: path === null ? {} : { pathMtu: `${String(path.mtu)} (${path.source} of ${path.dev})` },
      };
    } finally {
      probing.abort();
      attempt.signal.removeEventListener("abort", stopProbing);
    }
  }

  /** Everything a spec can get wrong, refused before anything is spawned; returns the UAPI transaction. */
  #validate(): Secret {
    const { runtime, gateway, params, probe } = this.#spec;
    const bad = (why: string): EngineError =>
      new EngineError("bad-config", `WireGuard spec for ${gateway.name}: ${why}`);
    if (!IFNAME_RE.test(runtime.ifname))
      throw bad(`device name "${runtime.ifname.slice(0, 40)}" is not 1-15 letters, digits, '_', '.' or '-'`);
    if (!isAbsolute(runtime.workDir)) throw bad("the work folder must be an absolute path");
    if (!isCidr(params.tunnelAddress) || params.tunnelAddress.includes(":"))
      throw bad(`tunnel address "${params.tunnelAddress.slice(0, 60)}" is not an IPv4 prefix`);
    if (!isIpAddress(gateway.address))
      throw bad(`gateway address "${gateway.address.slice(0, 60)}" is not an IP address`);
    if (!Number.isInteger(params.port) || params.port < 1 || params.port > 65535)
      throw bad(`port ${String(params.port)} is not 1-65535`);
    if (!isIpAddress(probe.address)) throw bad(`probe address "${probe.address.slice(0, 60)}" is not an IP address`);
    const endpoint = wireguardEndpoint(gateway.address, params.port);
    try {
      return encodeSet({
        privateKey: this.#spec.credentials.privateKey,
        peer: {
          publicKey: params.publicKey,
          endpoint,
          persistentKeepaliveSec: params.persistentKeepaliveSec,
          allowedIps: params.allowedIps,
        },
      });
    } catch (e) {
      if (e instanceof UapiError)
        throw new EngineError("bad-config", `WireGuard spec for ${gateway.name}: ${e.message}`, "", { cause: e });
      throw e;
    }
  }

  /** The device name must be free (see claimDeviceName); a taken one is a configuration error. */
  async #claimName(deadlineAt: number, signal: AbortSignal): Promise<void> {
    try {
      await claimDeviceName(this.#spec.runtime, deadlineAt, signal);
    } catch (e) {
      throw e instanceof SpareError && e.code === "name-taken" ? new EngineError("bad-config", e.message) : e;
    }
  }

  async #waitReady(proc: EngineProcess, deadlineAt: number, signal: AbortSignal): Promise<void> {
    try {
      await waitDeviceReady(this.#spec.runtime, proc, deadlineAt, signal);
    } catch (e) {
      if (!(e instanceof SpareError)) throw e;
      throw e.code === "timeout"
        ? this.#timeoutError()
        : new EngineError(e.code === "cancelled" ? "cancelled" : "engine-crashed", e.message);
    }
  }

  /** Echoes through the device until one comes back (its result) or the deadline (null). */
  async #probeUntilReply(deadlineAt: number, signal: AbortSignal): Promise<(EchoResult & { ok: true }) | null> {
    const { runtime, probe } = this.#spec;
    const tries = Math.ceil(Math.max(0, deadlineAt - Date.now()) / PROBE_RETRY_GAP_MS) + 1;
    for (let i = 0; i < tries && !signal.aborted && Date.now() < deadlineAt; i++) {
      const r = await pingThrough({
        ifname: runtime.ifname,
        target: probe.address,
        netns: runtime.netns,
        deadlineAt,
        signal,
        intervalMs: FIRST_REPLY_INTERVAL_MS,
      });
      if (r.ok) return r;
      if (Date.now() + PROBE_RETRY_GAP_MS >= deadlineAt) break;
      await sleep(PROBE_RETRY_GAP_MS, undefined, { signal }).catch(() => undefined);
    }
    return null;
  }

  /** Polls the peer's last handshake time until it is set (recorded in #handshakeAt), aborted or past the deadline. */
  async #watchHandshake(deadlineAt: number, signal: AbortSignal): Promise<void> {
    const tries = Math.ceil(Math.max(0, deadlineAt - Date.now()) / HANDSHAKE_POLL_MS) + 1;
    for (let i = 0; i < tries && !signal.aborted && Date.now() < deadlineAt; i++) {
      if (await this.#readHandshake(deadlineAt, signal)) return;
      await sleep(HANDSHAKE_POLL_MS, undefined, { signal }).catch(() => undefined);
    }
  }

  async #readHandshake(deadlineAt: number, signal?: AbortSignal): Promise<boolean> {
    const dump = await this.#uapi.get({ deadlineAt, signal }).catch(() => null);
    const at = dump === null ? null : (this.#peerOf(dump)?.handshakeAt ?? null);
    if (at !== null) this.#handshakeAt = at;
    return at !== null;
  }

  #peerOf(dump: UapiDump): { handshakeAt: number | null; rxBytes: number } | null {
    const peer = dump.peers.find((p) => p.publicKey === this.#spec.params.publicKey);
    return peer === undefined ? null : { handshakeAt: lastHandshakeMs(peer), rxBytes: peer.rxBytes };
  }

  #onExit(exit: ProcessExit): void {
    const expected = this.#expectExit;
    this.#events.emit({ type: "engine-exit", at: exit.at, code: exit.code, signal: exit.signal, expected });
    if (!expected) {
      const how = exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${String(exit.code)}`;
      this.#guard.fail(
        new EngineError(
          "engine-crashed",
          `wireguard-go for ${this.#spec.gateway.name} ${how} during start`,
          this.#proc?.tail() ?? "",
        ),
      );
    }
  }

  #timeoutError(): EngineError {
    const { gateway, params, probe, runtime } = this.#spec;
    const tail = this.#proc?.tail() ?? "";
    const target = `${gateway.name} (${gateway.address}:${params.port})`;
    if (this.#proc === null)
      return new EngineError("timeout", `the deadline passed before wireguard-go for ${target} was started`, tail);
    if (!existsSync(this.#socket))
      return new EngineError(
        "timeout",
        `wireguard-go for ${target} did not create ${this.#socket} before the deadline`,
        tail,
      );
    if (this.#handshakeAt === null) {
      if (UNREACHABLE_RE.test(tail))
        return new EngineError("unreachable", `cannot send to ${target}: no path to the gateway`, tail);
      // WireGuard answers nothing to a blocked path, a dead gateway or a wrong key alike: silence is all there is.
      return new EngineError("timeout", `no WireGuard handshake with ${target} before the deadline`, tail);
    }
    return new EngineError(
      "timeout",
      `handshake with ${target} done, but no echo reply from ${probe.address} through ${runtime.ifname} before the deadline`,
      tail,
    );
  }

  /** The driver's own errors as EngineErrors: UAPI replies and the `ip` commands that configure the device. */
  #classify(e: unknown): EngineError | null {
    const gateway = this.#spec.gateway.name;
    const tail = this.#proc?.tail() ?? "";
    if (e instanceof UapiError) {
      if (e.code === "errno")
        return new EngineError(
          "bad-config",
          `wireguard-go for ${gateway} refused its configuration (errno=${String(e.errno)})`,
          tail,
          { cause: e },
        );
      if (e.code === "timeout") return this.#timeoutError();
      return new EngineError(
        "engine-crashed",
        `wireguard-go for ${gateway} misbehaved on its UAPI socket: ${e.message}`,
        tail,
        { cause: e },
      );
    }
    if (e instanceof CommandError)
      return new EngineError(
        "engine-crashed",
        `could not configure the WireGuard device for ${gateway}: ${e.message}`,
        tail,
        { cause: e },
      );
    return null;
  }

  async stats(): Promise<TunnelStats> {
    const { runtime } = this.#spec;
    const c = (await linkCounters(runtime.ifname, runtime.netns)) ?? {
      rxBytes: 0,
      txBytes: 0,
      rxPackets: 0,
      txPackets: 0,
    };
    let handshakeAt: number | null = null;
    if (this.#proc?.running === true && !this.#expectExit) {
      const peer = await this.#uapi.get().then(
        (d) => this.#peerOf(d),
        () => null,
      );
      if (peer !== null) {
        handshakeAt = peer.handshakeAt;
        if (this.#rxMark !== null && peer.rxBytes > this.#rxMark) this.#rxMovedAt = Date.now();
        this.#rxMark = peer.rxBytes;
      }
    }
    const heard = Math.max(handshakeAt ?? -Infinity, this.#rxMovedAt ?? -Infinity);
    return { ...c, lastRxAgoMs: Number.isFinite(heard) ? Math.max(0, Date.now() - heard) : null, subState: null };
  }

  /** The UAPI dump (the codec drops the private and preshared keys while parsing) and wireguard-go's output. */
  async diagnostics(): Promise<EngineDiagnostics> {
    const state =
      this.#proc?.running === true
        ? await this.#uapi.get().catch((e: unknown) => ({ error: e instanceof Error ? e.message : String(e) }))
        : { running: false };
    return { engine: "wireguard-go", state, log: this.#proc?.tail(200) ?? "" };
  }

  stop(): Promise<void> {
    this.#expectExit = true;
    return this.#guard.stop();
  }

  /**
   * SIGTERM (wireguard-go then removes its device and socket), SIGKILL after the grace time; then whatever a
   * killed wireguard-go leaves (its socket, rarely its device) and the work folder. Only names this instance
   * created are removed: without a spawned process, the socket and device were never ours.
   */
  async #teardown(): Promise<void> {
    const { runtime } = this.#spec;
    this.#expectExit = true;
    const left = await removeWireGuardGo(runtime, this.#proc);
    // A spare handed over but never adopted (the start failed before) goes with this engine; adopted, it is a no-op.
    await this.#spare?.stop().catch((e: unknown) => left.push(e instanceof Error ? e.message : String(e)));
    if (left.length > 0) throw new Error(`WireGuard engine ${runtime.ifname} could not remove: ${left.join(", ")}`);
  }
}
