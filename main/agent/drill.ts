/**
 * Failover drills in detourd: makes the active gateway unusable for this host only (its own nftables table,
 * native/platform/drill-firewall.linux.ts), watches the daemon detect the failure and users' traffic come back
 * through another gateway, lifts the block whatever happened, and returns the verdict (main/core/drill.ts).
 *
 * Measurements start when the block is requested and are the drill's own: detection is when detourd left the
 * connected state (its state and failover events), restoration is the first reply to the drill's probes sent
 * over the host's ordinary routes, the way applications' packets travel, not through a chosen leg.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import type {
  Candidate,
  ConnectionEvent,
  ConnectionSnapshot,
  DrillResult,
  FailoverRecord,
  LegKind,
  ProbeSample,
} from "../core/connection/types.ts";
import { failoverAtWall } from "../core/connection/wall-time.ts";
import {
  evaluateDrill,
  observeWindowMs,
  parseSlaMs,
  refusalReason,
  refusedDrill,
  type DrillObservation,
} from "../core/drill.ts";
import { legEndpoints, type GatewayEndpoint } from "../core/killswitch.ts";
import type { DrillBlock } from "../../native/platform/platform.ts";
import { systemClock, wallOffset, type Clock } from "./clock.ts";
import type { Logger } from "./log.ts";
import { startMonitor, type Monitor, type MonitorOptions } from "./monitor.ts";

/** The drill's probes over the host's routes: every 20 ms resolves restoration to 20 ms at 50 small packets a second. */
export const DRILL_PROBE_INTERVAL_MS = 20;
/** A reply later than this counts as lost; a round trip through a tunnel takes milliseconds. */
export const DRILL_PROBE_TIMEOUT_MS = 1000;
/**
 * Before blocking, one reply over the host's routes proves the tunnel carries traffic (a healthy one answers
 * within milliseconds); without it there is nothing to measure an outage against.
 */
export const FIRST_REPLY_TIMEOUT_MS = 2000;
/** Lifting the block is retried this many times: a gateway left blocked is the one outcome a drill must not have. */
const LIFT_ATTEMPTS = 3;

/** What the runner needs of the daemon. */
export interface DrillHost {
  config: DetourConfig;
  log: Logger;
  status(): ConnectionSnapshot;
  candidates(): Candidate[];
  /** Connection events, called synchronously as the machine emits them (instants on the monotonic clock). */
  subscribe(listener: (e: ConnectionEvent) => void): () => void;
  /** Puts the drill's event into the flight recorder and out to subscribers. */
  record(event: ConnectionEvent): void;
}

export interface DrillDeps {
  /** The block itself: the platform's (an nftables table of its own on Linux); tests pass a fake. */
  block: DrillBlock;
  startProbe?: (opts: MonitorOptions) => Monitor;
  /** The drill measures on its monotonic time (a wall-clock step cannot stretch an outage) and reports in wall time. */
  clock?: Clock;
}

/** What a drill has seen so far; mutated by its callbacks. */
interface Watch {
  blockedAt: number | null;
  inForceAt: number | null;
  detectedAt: number | null;
  restoredAt: number | null;
  to: DrillObservation["to"];
  failover: FailoverRecord | null;
  errorReason: string | null;
  interrupted: string | null;
  answeredDuringBlock: boolean;
  lastSeqBeforeBlock: number | null;
  probesSent: number;
  probesLost: number;
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export class DrillRunner {
  readonly #host: DrillHost;
  readonly #block: DrillBlock;
  readonly #startProbe: (opts: MonitorOptions) => Monitor;
  readonly #clock: Clock;
  #seq = 0;
  #last: DrillResult | null = null;
  #running: Promise<DrillResult> | null = null;
  /** Ends the current drill's wait early with this reason (shutdown). */
  #interrupt: ((reason: string) => void) | null = null;

  constructor(host: DrillHost, deps: DrillDeps) {
    this.#host = host;
    this.#block = deps.block;
    this.#startProbe = deps.startProbe ?? startMonitor;
    this.#clock = deps.clock ?? systemClock;
  }

  /** The last drill that ran (refused ones are not kept), for status. */
  get last(): DrillResult | null {
    return this.#last;
  }

  /** Runs one drill; a refusal or a failure is a result, never a rejection. The block is always lifted before this resolves. */
  async run(request: { slaMs?: number | undefined }): Promise<DrillResult> {
    const id = `D${String(++this.#seq)}`;
    const log = this.#host.log;
    const sla = parseSlaMs(request.slaMs);
    const slaMs = sla.ok ? sla.slaMs : Number(request.slaMs);
    const s = this.#host.status();
    const from =
      s.state === "connected" && s.gateway !== null && s.protocol !== null
        ? { gateway: s.gateway, kind: s.protocol }
        : null;
    const others = [
      ...new Set(
        this.#host
          .candidates()
          .filter((c) => c.name !== s.gateway && c.address !== null)
          .map((c) => c.name),
      ),
    ];
    const endpoints = from === null ? [] : this.#endpointsOf(from.gateway);
    const why = !sla.ok
      ? sla.message
      : (refusalReason({
          state: s.state,
          gateway: s.gateway,
          otherGateways: others,
          running: this.#running !== null,
        }) ??
        (endpoints.length === 0 && from !== null
          ? `no endpoint of ${from.gateway} is known, so it cannot be blocked`
          : null));
    if (why !== null || from === null) {
      const refused = refusedDrill(id, this.#clock.wall(), slaMs, from, why ?? "not connected");
      log.warn("drill refused", { drill: refused });
      return refused;
    }
    const drill = this.#drill(id, slaMs, from, endpoints);
    this.#running = drill;
    let result: DrillResult;
    try {
      result = await drill;
    } finally {
      this.#running = null;
      this.#interrupt = null;
    }
    if (result.verdict === "refused") {
      log.warn("drill refused", { drill: result });
      return result;
    }
    this.#last = result;
    this.#host.record({ type: "drill", at: result.endedAt, drill: result });
    if (result.verdict === "pass") log.info("drill", { drill: result });
    else log.warn("drill", { drill: result });
    return result;
  }

  /** Ends a drill under way (its block is lifted) and removes any block left; for shutdown. Never rejects. */
  async stop(): Promise<void> {
    this.#interrupt?.("detourd is shutting down");
    await this.#running?.catch(() => undefined);
    await this.#block.remove().catch((err: unknown) => {
      this.#host.log.error("removing the drill block failed", { err });
    });
  }

  /** A previous detourd that died mid-drill left its block in place: lift it. Never rejects. */
  async clearLeftover(): Promise<void> {
    try {
      if (!(await this.#block.present())) return;
      await this.#block.remove();
      this.#host.log.warn("removed the drill block a previous detourd left in place");
    } catch (err) {
      this.#host.log.error("could not check for or remove a leftover drill block", { err });
    }
  }

  /** Every endpoint of the gateway (all its protocols, at every address it is known by), so no leg of it works. */
  #endpointsOf(gateway: string): GatewayEndpoint[] {
    const gw = this.#host.config.gateways.find((g) => g.name === gateway);
    if (gw === undefined) return [];
    const known = this.#host.candidates().filter((c) => c.name === gateway);
    const addresses = new Set(
      [...known.map((c) => c.address), gw.address ?? null].filter((a): a is string => a !== null),
    );
    const kinds = new Set<LegKind>(known.flatMap((c) => c.kinds));
    if (gw.protocols.wireguard !== undefined) kinds.add("wireguard");
    if (gw.protocols.ikev2 !== undefined) kinds.add("ikev2");
    if (gw.protocols.anyconnect !== undefined)
      kinds.add(gw.protocols.anyconnect.dtls ? "anyconnect-dtls" : "anyconnect-tls");
    const out: GatewayEndpoint[] = [];
    for (const address of addresses) {
      for (const kind of kinds) {
        try {
          out.push(...legEndpoints(kind, address, gw.protocols));
        } catch {
          // a kind without its port in the configuration has no endpoint to block
        }
      }
    }
    return out;
  }

  async #drill(
    id: string,
    slaMs: number,
    from: { gateway: string; kind: LegKind },
    endpoints: GatewayEndpoint[],
  ): Promise<DrillResult> {
    const host = this.#host;
    const log = host.log;
    const clock = this.#clock;
    const startedAt = clock.monotonic();
    const observeMs = observeWindowMs(slaMs);
    // Written by the probe, event and interrupt callbacks below, read after each wait.
    const w: Watch = {
      blockedAt: null,
      inForceAt: null,
      detectedAt: null,
      restoredAt: null,
      to: null,
      failover: null,
      errorReason: null,
      interrupted: null,
      answeredDuringBlock: false,
      lastSeqBeforeBlock: null,
      probesSent: 0,
      probesLost: 0,
    };
    let wake: () => void = () => undefined;
    let firstReply: () => void = () => undefined;

    this.#interrupt = (reason) => {
      w.interrupted ??= reason;
      firstReply();
      wake();
    };
    const onSample = (sample: ProbeSample): void => {
      const arrivedAt = sample.rttMs === null ? null : sample.sentAt + sample.rttMs;
      if (w.blockedAt === null || sample.sentAt < w.blockedAt) {
        if (arrivedAt !== null) {
          w.lastSeqBeforeBlock = Math.max(w.lastSeqBeforeBlock ?? 0, sample.seq);
          firstReply();
        }
        return;
      }
      // Probes sent while the block was being applied say nothing either way; restoration is the first reply after.
      if (arrivedAt === null || w.inForceAt === null || sample.sentAt < w.inForceAt || w.restoredAt !== null) return;
      w.restoredAt = Math.round(arrivedAt);
      if (w.detectedAt === null) w.answeredDuringBlock = true;
      w.probesSent = w.lastSeqBeforeBlock === null ? 1 : Math.max(1, sample.seq - w.lastSeqBeforeBlock);
      w.probesLost = w.probesSent - 1;
      wake();
    };
    const onEvent = (e: ConnectionEvent): void => {
      if (w.blockedAt === null || e.at < w.blockedAt) return;
      if (e.type === "state") {
        if ((e.state === "failing-over" || e.state === "error") && w.detectedAt === null) w.detectedAt = e.at;
        if (e.state === "error") {
          w.errorReason = e.detail;
          wake();
        }
        if (e.state === "disconnected" || e.state === "resolving") {
          w.interrupted ??= `detourd left the connection (${e.state}) during the drill`;
          wake();
        }
      } else if (e.type === "failover" && e.failover.from.gateway === from.gateway) {
        w.failover = e.failover;
        w.detectedAt = Math.min(w.detectedAt ?? e.failover.detectedAt, e.failover.detectedAt);
        w.to = e.failover.to;
        wake();
      }
    };

    let probe: Monitor | null = null;
    const unsubscribe = host.subscribe(onEvent);
    try {
      probe = this.#startProbe({
        legId: `drill-${id}`,
        // Unbound: the kernel routes each probe as it routes applications' packets, through whichever tunnel holds the routes.
        sourceAddress: "0.0.0.0",
        target: { address: host.config.probe.address, port: host.config.probe.port },
        intervalMs: DRILL_PROBE_INTERVAL_MS,
        timeoutMs: DRILL_PROBE_TIMEOUT_MS,
        clock,
        onSample,
        onError: (m) => {
          log.debug("drill probe", { id, problem: m });
        },
      });
      await this.#until(
        FIRST_REPLY_TIMEOUT_MS,
        (f) => (firstReply = f),
        () => w.interrupted !== null || w.lastSeqBeforeBlock !== null,
      );
      const answered = w.lastSeqBeforeBlock !== null;
      const now = host.status();
      if (w.interrupted !== null || !answered || now.state !== "connected" || now.gateway !== from.gateway) {
        const reason =
          w.interrupted ??
          (!answered
            ? `the probe target ${host.config.probe.address}:${String(host.config.probe.port)} did not answer over the tunnel within ${FIRST_REPLY_TIMEOUT_MS} ms, so there is nothing to measure an outage against; nothing was blocked`
            : `the connection changed before the block (now ${now.state}${now.gateway === null ? "" : ` on ${now.gateway}`}); nothing was blocked`);
        return refusedDrill(id, clock.wall(), slaMs, from, reason);
      }
      log.info("drill blocking gateway", { id, gateway: from.gateway, kind: from.kind, endpoints, slaMs, observeMs });
      w.blockedAt = clock.monotonic();
      try {
        await this.#block.apply(from.gateway, endpoints);
        w.inForceAt = clock.monotonic();
      } catch (err) {
        w.interrupted = `${from.gateway} could not be blocked: ${message(err)}`;
      }
      if (w.interrupted === null) {
        await this.#until(
          observeMs,
          (f) => (wake = f),
          () =>
            w.interrupted !== null ||
            w.answeredDuringBlock ||
            w.errorReason !== null ||
            (w.to !== null && w.restoredAt !== null),
        );
      }
    } finally {
      probe?.stop();
      unsubscribe();
    }
    // Only a drill that got as far as blocking reaches this point: every earlier exit returned or threw above.
    const liftedAt = await this.#lift(id);
    if (liftedAt === null)
      w.interrupted = `the block of ${from.gateway} could not be lifted; restart detourd to remove it`;
    const obs: DrillObservation = {
      id,
      startedAt,
      endedAt: clock.monotonic(),
      slaMs,
      observeMs,
      from,
      to: w.to,
      blockedAt: w.blockedAt,
      liftedAt,
      detectedAt: w.detectedAt,
      restoredAt: w.restoredAt,
      probesSent: w.probesSent,
      probesLost: w.probesLost,
      failover: w.failover,
      answeredDuringBlock: w.answeredDuringBlock,
      interrupted: w.interrupted,
      errorReason: w.errorReason,
    };
    return evaluateDrill(observationAtWall(obs, wallOffset(clock)));
  }

  /** Lifts the block, retrying; the time it was lifted, or null if it could not be. */
  async #lift(id: string): Promise<number | null> {
    for (let i = 1; i <= LIFT_ATTEMPTS; i++) {
      try {
        await this.#block.remove();
        this.#host.log.info("drill block lifted", { id });
        return this.#clock.monotonic();
      } catch (err) {
        this.#host.log.error("lifting the drill block failed", { id, attempt: i, err });
      }
    }
    return null;
  }

  /** Waits until `done()` holds (checked whenever the waker is called) or `ms` pass; true if it holds. */
  async #until(ms: number, setWaker: (wake: () => void) => void, done: () => boolean): Promise<boolean> {
    if (done()) return true;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      setWaker(() => {
        if (done()) resolve();
      });
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    setWaker(() => undefined);
    return done();
  }
}

/** The observation's instants in wall time; its durations stay as measured. */
function observationAtWall(o: DrillObservation, offset: number): DrillObservation {
  const at = (t: number): number => Math.round(t + offset);
  const shift = (t: number | null): number | null => (t === null ? null : at(t));
  return {
    ...o,
    startedAt: at(o.startedAt),
    endedAt: at(o.endedAt),
    blockedAt: at(o.blockedAt),
    liftedAt: shift(o.liftedAt),
    detectedAt: shift(o.detectedAt),
    restoredAt: shift(o.restoredAt),
    failover: o.failover === null ? null : failoverAtWall(o.failover, offset),
  };
}
