/**
 * A fake daemon for the connection machine's scenario tests: a numeric clock, timers, scripted engines and
 * in-tunnel monitors, run as one discrete-event loop. Holds no tests itself.
 */
import { HealthPolicy, RacePolicy, RetryPolicy, StandbyPolicy } from "../config/schema.ts";
import type { EngineErrorCode, TunnelConfig } from "../tunnel/engine-types.ts";
import { initialState, snapshot, step, type MachineContext, type MachineState } from "./machine.ts";
import { paceIntervalMs } from "./pace.ts";
import type {
  Candidate,
  CandidateProbe,
  ConnectionEvent,
  ConnectionStateName,
  ConnectionSnapshot,
  Effect,
  FailoverRecord,
  Leg,
  LegKind,
  MachineInput,
  ProbeSample,
  RaceRecord,
  TimerId,
} from "./types.ts";

export const ALL_KINDS: LegKind[] = ["wireguard", "ikev2", "anyconnect-tls", "anyconnect-dtls"];

export function gateway(name: string, priority: number, opts: Partial<Candidate> = {}): Candidate {
  return {
    name,
    hostname: `${name}.vpn.example.com`,
    address: null,
    priority,
    region: "eu",
    kinds: ALL_KINDS,
    sources: ["config"],
    probe: null,
    ...opts,
  };
}

export function probe(latencyMs: number | null, reachable: CandidateProbe["reachable"] = {}, at = 0): CandidateProbe {
  return { at, latencyMs, reachable };
}

/** The warm standby is off unless a test turns it on: most scenarios count legs and are about the race itself. */
export function context(
  gateways: Candidate[],
  overrides: {
    race?: Partial<RacePolicy>;
    health?: Partial<HealthPolicy>;
    retry?: Partial<RetryPolicy>;
    standby?: Partial<StandbyPolicy>;
  } = {},
): MachineContext {
  return {
    policy: {
      race: { ...RacePolicy.parse({}), ...overrides.race },
      // The scenarios' exact figures were worked out for a 50 ms monitor and a 600 ms dead window, at one pace
      // (the idle pace is pace.test.ts's subject, which turns it on).
      health: {
        ...HealthPolicy.parse({ probeIntervalMs: 50, deadAfterMs: 600, idleProbeIntervalMs: null }),
        ...overrides.health,
      },
      retry: { ...RetryPolicy.parse({}), ...overrides.retry },
      standby: { ...StandbyPolicy.parse({}), mode: "off", ...overrides.standby },
    },
    gateways,
  };
}

export function tunnelConfig(leg: Leg): TunnelConfig {
  return { ifname: `dt-${leg.id.toLowerCase()}`, addresses: ["198.19.11.2/32"], routes: [], dns: [], mtu: 1420 };
}

/** How a scripted engine behaves: up after `up` ms (first reply `replyBeforeUp` ms before that), fails, or hangs to its deadline. */
export type LegScript =
  { up: number; replyBeforeUp?: number } | { fail: number; code: EngineErrorCode; message?: string } | "hang";

export interface SimOptions {
  gateways: Candidate[];
  ctx?: MachineContext;
  /** Engine behaviour per leg; default: every leg up after 100 ms. */
  legs?: (leg: Leg, sim: Sim) => LegScript;
  /** In-tunnel path per leg at send time: an RTT, or null for a lost probe. Default 20 ms. */
  path?: (leg: Leg, sentAt: number) => number | null;
  /** What discovery returns; default the configured gateways. */
  candidates?: (sim: Sim) => Candidate[];
  /** How long discovery takes. */
  resolveMs?: number;
}

interface Scheduled {
  at: number;
  seq: number;
  run: () => void;
}

export class Sim {
  now = 0;
  state: MachineState = initialState();
  readonly ctx: MachineContext;
  readonly effects: { at: number; effect: Effect }[] = [];
  readonly inputs: MachineInput[] = [];
  readonly legsById = new Map<string, Leg>();
  /** Legs started and not stopped or failed: what the daemon would have running. */
  readonly running = new Set<string>();
  /** The most legs `running` ever held at once. */
  peakRunning = 0;
  readonly stopped: { at: number; legId: string }[] = [];
  readonly monitors = new Set<string>();
  routes: string | null = null;
  readonly routeLog: { at: number; legId: string | null }[] = [];
  readonly races: RaceRecord[] = [];
  readonly failovers: FailoverRecord[] = [];
  readonly events: ConnectionEvent[] = [];
  readonly timers = new Map<TimerId, { at: number; token: number }>();
  #queue: Scheduled[] = [];
  #monitorGen = new Map<string, number>();
  #roles = new Map<string, "active" | "standby">();
  /** The probes' pace the machine last asked for, and every in-tunnel probe sent so far. */
  pace: "fast" | "slow" = "fast";
  probesSent = 0;
  #seq = 0;
  #opts: SimOptions;

  constructor(opts: SimOptions) {
    this.#opts = opts;
    this.ctx = opts.ctx ?? context(opts.gateways);
  }

  schedule(at: number, run: () => void): void {
    this.#queue.push({ at, seq: this.#seq++, run });
  }

  dispatch(input: MachineInput): Effect[] {
    this.inputs.push(input);
    const r = step(this.state, input, this.ctx);
    this.state = r.state;
    for (const e of r.effects) this.#run(e);
    return r.effects;
  }

  /** Shorthand: dispatch an input at the current time. */
  send(input: DistributiveOmit<MachineInput, "now">): Effect[] {
    return this.dispatch({ ...input, now: this.now });
  }

  /** The state's name; a method, so that assertions on it do not narrow the field for later reads. */
  phase(): ConnectionStateName {
    return this.state.name;
  }

  snapshot(): ConnectionSnapshot {
    return snapshot(this.state, this.now);
  }

  runUntil(t: number): void {
    for (;;) {
      let best: Scheduled | undefined;
      for (const s of this.#queue)
        if (s.at <= t && (best === undefined || s.at < best.at || (s.at === best.at && s.seq < best.seq))) best = s;
      if (best === undefined) break;
      this.#queue.splice(this.#queue.indexOf(best), 1);
      this.now = Math.max(this.now, best.at);
      best.run();
    }
    this.now = Math.max(this.now, t);
  }

  runFor(ms: number): void {
    this.runUntil(this.now + ms);
  }

  /** Runs until the predicate holds (checked after every event) or `limitMs` passes; returns whether it held. */
  runUntilTrue(pred: () => boolean, limitMs: number): boolean {
    const end = this.now + limitMs;
    while (!pred()) {
      const next = this.#queue
        .filter((s) => s.at <= end)
        .reduce<Scheduled | undefined>(
          (a, s) => (a === undefined || s.at < a.at || (s.at === a.at && s.seq < a.seq) ? s : a),
          undefined,
        );
      if (next === undefined) {
        this.now = end;
        return pred();
      }
      this.runUntil(next.at);
    }
    return true;
  }

  effectsOf<T extends Effect["type"]>(type: T): Extract<Effect, { type: T }>[] {
    return this.effects.map((e) => e.effect).filter((e): e is Extract<Effect, { type: T }> => e.type === type);
  }

  #run(e: Effect): void {
    this.effects.push({ at: this.now, effect: e });
    switch (e.type) {
      case "resolve-candidates": {
        const cands = this.#opts.candidates ?? (() => this.#opts.gateways);
        this.schedule(this.now + (this.#opts.resolveMs ?? 10), () =>
          this.dispatch({ type: "candidates", now: this.now, candidates: cands(this) }),
        );
        return;
      }
      case "start-leg": {
        const leg = e.leg;
        this.legsById.set(leg.id, leg);
        this.running.add(leg.id);
        this.peakRunning = Math.max(this.peakRunning, this.running.size);
        const script = this.#opts.legs?.(leg, this) ?? { up: 100 };
        if (script === "hang") {
          this.schedule(e.deadlineAt, () => {
            if (!this.running.delete(leg.id)) return;
            this.dispatch({
              type: "leg-failed",
              now: this.now,
              legId: leg.id,
              code: "timeout",
              message: "no handshake before the deadline",
            });
          });
        } else if ("up" in script) {
          this.schedule(this.now + script.up, () => {
            if (!this.running.has(leg.id)) return;
            // The engine's proof of life measured the path as the monitor will find it.
            const pathRttMs = (this.#opts.path ?? (() => 20))(leg, this.now);
            this.dispatch({
              type: "leg-up",
              now: this.now,
              legId: leg.id,
              config: tunnelConfig(leg),
              firstReplyAt: this.now - (script.replyBeforeUp ?? 0),
              pathRttMs,
            });
          });
        } else {
          this.schedule(this.now + script.fail, () => {
            if (!this.running.delete(leg.id)) return;
            this.dispatch({
              type: "leg-failed",
              now: this.now,
              legId: leg.id,
              code: script.code,
              message: script.message ?? script.code,
            });
          });
        }
        return;
      }
      case "stop-leg":
        this.running.delete(e.legId);
        this.monitors.delete(e.legId);
        this.stopped.push({ at: this.now, legId: e.legId });
        return;
      case "start-monitor": {
        // A restart (a standby promoted to active) replaces the running loop, as the daemon's monitor does.
        const gen = (this.#monitorGen.get(e.legId) ?? 0) + 1;
        this.#monitorGen.set(e.legId, gen);
        this.monitors.add(e.legId);
        this.#roles.set(e.legId, e.role);
        this.#probeLoop(e.legId, gen * 1_000_000, gen);
        return;
      }
      case "probe-pace": {
        // As the daemon's monitors do: every loop takes the new interval; a faster one probes at once.
        if (e.pace === this.pace) return;
        const faster = e.pace === "fast";
        this.pace = e.pace;
        for (const legId of this.monitors) {
          const gen = (this.#monitorGen.get(legId) ?? 0) + 1;
          this.#monitorGen.set(legId, gen);
          if (faster) this.#probeLoop(legId, gen * 1_000_000, gen);
          else
            this.schedule(this.now + this.#intervalOf(legId), () => {
              this.#probeLoop(legId, gen * 1_000_000, gen);
            });
        }
        return;
      }
      case "stop-monitor":
        this.monitors.delete(e.legId);
        return;
      case "recheck-leg": {
        // As the daemon does: the leg's monitor starts over at the active rate, so a probe goes out at once.
        if (!this.monitors.has(e.legId)) return;
        const gen = (this.#monitorGen.get(e.legId) ?? 0) + 1;
        this.#monitorGen.set(e.legId, gen);
        this.#probeLoop(e.legId, gen * 1_000_000, gen);
        return;
      }
      case "apply-routes":
        this.routes = e.legId;
        this.routeLog.push({ at: this.now, legId: e.legId });
        return;
      case "clear-routes":
        this.routes = null;
        this.routeLog.push({ at: this.now, legId: null });
        return;
      case "set-timer": {
        const token = this.#seq;
        const timer = e.timer;
        this.timers.set(timer, { at: e.at, token });
        this.schedule(e.at, () => {
          if (this.timers.get(timer)?.token !== token) return;
          this.timers.delete(timer);
          this.dispatch({ type: "timer", now: this.now, timer });
        });
        return;
      }
      case "cancel-timer":
        this.timers.delete(e.timer);
        return;
      case "record-race":
        this.races.push(e.race);
        return;
      case "record-failover":
        this.failovers.push(e.failover);
        return;
      case "notify":
        this.events.push(e.event);
        return;
    }
  }

  #intervalOf(legId: string): number {
    return paceIntervalMs(
      this.pace,
      this.#roles.get(legId) ?? "active",
      this.ctx.policy.health,
      this.ctx.policy.standby,
    );
  }

  #probeLoop(legId: string, seq: number, gen: number): void {
    if (!this.monitors.has(legId) || this.#monitorGen.get(legId) !== gen) return;
    this.probesSent++;
    const intervalMs = this.#intervalOf(legId);
    const leg = this.legsById.get(legId);
    if (leg === undefined) return;
    const sentAt = this.now;
    const rtt = (this.#opts.path ?? (() => 20))(leg, sentAt);
    const h = this.ctx.policy.health;
    const deliver = (at: number, sample: ProbeSample): void => {
      this.schedule(at, () => {
        if (this.monitors.has(legId) && this.#monitorGen.get(legId) === gen)
          this.dispatch({ type: "probe", now: this.now, legId, sample });
      });
    };
    // As the monitor does: a reply after the timeout is a loss at the timeout, then the same probe answered late.
    if (rtt !== null && rtt > h.probeTimeoutMs) {
      deliver(sentAt + h.probeTimeoutMs, { seq, sentAt, rttMs: null });
      deliver(sentAt + rtt, { seq, sentAt, rttMs: rtt, late: true });
    } else deliver(sentAt + (rtt ?? h.probeTimeoutMs), { seq, sentAt, rttMs: rtt });
    this.schedule(sentAt + intervalMs, () => {
      this.#probeLoop(legId, seq + 1, gen);
    });
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
