/**
 * The chaos soak's fault schedule: a seeded PRNG (test/fakes/seeded-random.ts) and a pure planner, so a run's faults are printed up
 * front and the same seed always gives the same schedule. Targets such as "the active gateway" are resolved when
 * the fault fires (the schedule is reproducible; which gateway was active depends on the run).
 */
import { seededRandom } from "../fakes/seeded-random.ts";
import { GATEWAY_NAMES, type GatewayName } from "./topology.ts";

/** mulberry32, the project's one seeded generator: the same seed always gives the same schedule. */
export const prng = seededRandom;

/** A gateway by name, or the one detourd is connected to when the fault fires. */
export type GatewayTarget = GatewayName | "active";
/** What a protocol block covers: one tunnel protocol's ports or a whole transport. */
export type BlockedProto = "wireguard" | "ike" | "dtls" | "tls" | "udp";

export type Fault =
  | { kind: "kill-gateway"; gateway: GatewayTarget; forMs: number }
  | { kind: "block-protocol"; target: "client" | GatewayTarget; proto: BlockedProto; forMs: number }
  | { kind: "loss-burst"; target: "client" | GatewayTarget; percent: number; forMs: number }
  | { kind: "delay-burst"; target: "client" | GatewayTarget; delayMs: number; jitterMs: number; forMs: number }
  | { kind: "flap-gateway"; gateway: GatewayTarget; periodMs: number; forMs: number }
  | { kind: "kill-engine"; pick: number }
  | { kind: "kill-detourd"; downMs: number }
  | { kind: "flush-firewall" }
  | { kind: "overwrite-resolv-conf" };

export type FaultKind = Fault["kind"];

export interface ScheduledFault {
  /** Milliseconds after the soak's start (the first connect). */
  atMs: number;
  fault: Fault;
}

/**
 * How often each fault comes up. Gateway kills dominate because failovers are what the soak must produce (at
 * least 50 in 30 minutes); the process and tamper faults are rarer because each one costs a restart or a race.
 */
export const FAULT_WEIGHTS: Readonly<Record<FaultKind, number>> = {
  "kill-gateway": 5,
  "block-protocol": 3,
  "loss-burst": 2,
  "delay-burst": 2,
  "flap-gateway": 1,
  "kill-engine": 2,
  "kill-detourd": 1,
  "flush-firewall": 1,
  "overwrite-resolv-conf": 1,
};

/** Between two faults: long enough for a failover to settle on a loaded 2-core machine, short enough for 50+ in 30 min. */
export const GAP_MIN_MS = 5_000;
export const GAP_MAX_MS = 12_000;
/** No fault in the first moments after the first connect: the warm standby and the spare come up then. */
export const LEAD_IN_MS = 8_000;
/** No fault starts in the last stretch, and every timed fault ends before it: the end state is judged on a calm lab. */
export const QUIET_END_MS = 20_000;

function pick<T>(r: () => number, items: readonly T[]): T {
  const v = items[Math.floor(r() * items.length)];
  if (v === undefined) throw new Error("pick from an empty list");
  return v;
}

function between(r: () => number, lo: number, hi: number): number {
  return Math.round(lo + r() * (hi - lo));
}

function gatewayTarget(r: () => number): GatewayTarget {
  // Mostly the active gateway: a fault on a gateway nobody uses tests little.
  return r() < 0.7 ? "active" : pick(r, GATEWAY_NAMES);
}

function anyTarget(r: () => number): "client" | GatewayTarget {
  return r() < 0.3 ? "client" : gatewayTarget(r);
}

function weightedKind(r: () => number): FaultKind {
  const entries = Object.entries(FAULT_WEIGHTS) as [FaultKind, number][];
  const total = entries.reduce((s, [, w]) => s + w, 0);
  let x = r() * total;
  for (const [k, w] of entries) {
    if (x < w) return k;
    x -= w;
  }
  return entries[entries.length - 1]?.[0] ?? "kill-gateway";
}

function makeFault(kind: FaultKind, r: () => number, maxForMs: number): Fault {
  const forMs = (lo: number, hi: number): number => Math.min(between(r, lo, hi), maxForMs);
  switch (kind) {
    case "kill-gateway":
      return { kind, gateway: gatewayTarget(r), forMs: forMs(5_000, 25_000) };
    case "block-protocol":
      return {
        kind,
        target: anyTarget(r),
        proto: pick(r, ["wireguard", "ike", "dtls", "tls", "udp"] as const),
        forMs: forMs(5_000, 20_000),
      };
    case "loss-burst":
      return { kind, target: anyTarget(r), percent: between(r, 10, 40), forMs: forMs(3_000, 10_000) };
    case "delay-burst":
      return {
        kind,
        target: anyTarget(r),
        delayMs: between(r, 50, 300),
        jitterMs: between(r, 0, 50),
        forMs: forMs(3_000, 10_000),
      };
    case "flap-gateway":
      return { kind, gateway: gatewayTarget(r), periodMs: between(r, 1_000, 3_000), forMs: forMs(6_000, 16_000) };
    case "kill-engine":
      return { kind, pick: r() };
    case "kill-detourd":
      return { kind, downMs: between(r, 200, 2_000) };
    case "flush-firewall":
    case "overwrite-resolv-conf":
      return { kind };
  }
}

/** The faults of a run of `durationMs`, in time order; the same seed and duration always give the same list. */
export function planSchedule(seed: number, durationMs: number): ScheduledFault[] {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw new Error(`the seed must be a whole number 0-4294967295, got ${String(seed)}`);
  if (!Number.isFinite(durationMs) || durationMs < LEAD_IN_MS + QUIET_END_MS)
    throw new Error(`a soak must last at least ${(LEAD_IN_MS + QUIET_END_MS) / 1000} s, got ${String(durationMs)} ms`);
  const r = prng(seed);
  const out: ScheduledFault[] = [];
  const lastEnd = durationMs - QUIET_END_MS;
  // Bounded: every step advances by at least GAP_MIN_MS.
  for (let at = LEAD_IN_MS; at < lastEnd; at += between(r, GAP_MIN_MS, GAP_MAX_MS)) {
    out.push({ atMs: at, fault: makeFault(weightedKind(r), r, lastEnd - at) });
  }
  return out;
}

function targetName(t: "client" | GatewayTarget): string {
  return t === "active" ? "the active gateway" : t;
}

/** One line per fault, as printed before the run. */
export function describeFault(f: Fault): string {
  switch (f.kind) {
    case "kill-gateway":
      return `kill ${targetName(f.gateway)} (power off) for ${f.forMs} ms`;
    case "block-protocol":
      return `block ${f.proto} at ${targetName(f.target)} for ${f.forMs} ms`;
    case "loss-burst":
      return `${f.percent} % loss at ${targetName(f.target)} for ${f.forMs} ms`;
    case "delay-burst":
      return `delay ${f.delayMs} ms (+0-${f.jitterMs} ms) at ${targetName(f.target)} for ${f.forMs} ms`;
    case "flap-gateway":
      return `flap ${targetName(f.gateway)} every ${f.periodMs} ms for ${f.forMs} ms`;
    case "kill-engine":
      return `SIGKILL one of detourd's engines (pick ${f.pick.toFixed(3)})`;
    case "kill-detourd":
      return `SIGKILL detourd, restart it after ${f.downMs} ms, connect again`;
    case "flush-firewall":
      return "other software runs `nft flush ruleset` in the client namespace";
    case "overwrite-resolv-conf":
      return "a network manager overwrites resolv.conf";
  }
}

export function formatSchedule(seed: number, schedule: readonly ScheduledFault[]): string {
  const lines = schedule.map((s) => `  t+${(s.atMs / 1000).toFixed(1).padStart(7)} s  ${describeFault(s.fault)}`);
  return [`chaos schedule, seed ${seed}: ${schedule.length} faults`, ...lines].join("\n");
}
