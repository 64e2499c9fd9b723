/**
 * A new effective configuration put in force (a managed policy or a preference changed): candidates, the race,
 * health, standby and retry policies, lockdown and telemetry follow at once. The tunnel is touched only when its
 * gateway or protocol is no longer allowed; then it moves make-before-break.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import type { MachineContext, MachineState } from "../core/connection/machine.ts";
import type { Candidate, MachineInput } from "../core/connection/types.ts";
import { legAllowed } from "../core/policy/apply.ts";
import type { CandidateRefresh } from "./candidate-refresh.ts";
import type { DataPlane } from "./data-plane.ts";
import { configuredCandidates } from "./discovery.ts";
import type { Logger } from "./log.ts";
import type { TelemetryHandle } from "./telemetry/factory.ts";

/** The machine as the policy change sees it: its state, its context, and the input queue. */
export interface MachineAccess {
  state(): MachineState;
  readonly ctx: MachineContext;
  now(): number;
  dispatch(input: MachineInput): void;
  track(p: Promise<unknown>): void;
  /** Whether user traffic into a tunnel is seen (the kill switch's trace needs detourd's own group): see machinePolicy. */
  readonly seesTunnelTraffic: boolean;
}

export interface PolicyChangeParts {
  machine: MachineAccess;
  candidates: CandidateRefresh;
  dataPlane: DataPlane;
  telemetry: TelemetryHandle;
  log: Logger;
}

/**
 * The machine's policies from a configuration. The probes slow down when the tunnel is idle only where detourd
 * sees user traffic going into it (core/connection/pace.ts), otherwise the first packet after an idle spell would
 * meet slow probes: without that, they keep the fast pace.
 */
export function machinePolicy(config: DetourConfig, seesTunnelTraffic: boolean): MachineContext["policy"] {
  const health = seesTunnelTraffic ? config.health : { ...config.health, idleProbeIntervalMs: null };
  return { race: config.race, health, retry: config.retry, standby: config.standby };
}

/** Puts `config` in force after `before`; returns whether a leg was moved off. */
export function applyConfiguration(p: PolicyChangeParts, before: DetourConfig, config: DetourConfig): boolean {
  const m = p.machine;
  m.ctx.policy = machinePolicy(config, m.seesTunnelTraffic);
  m.ctx.gateways = configuredCandidates(config);
  // A gateway allowed again comes back into the candidates with a discovery round, started now.
  p.candidates.reconfigure(config);
  // In resolving, a candidate list starts the race; the resolve under way delivers the restricted one anyway.
  if (m.state().name !== "resolving") m.dispatch({ type: "candidates", now: m.now(), candidates: p.candidates.list() });
  p.dataPlane.refreshKillSwitch();
  if (JSON.stringify(before.telemetry) !== JSON.stringify(config.telemetry)) m.track(p.telemetry.restart(config));
  return moveOffDisallowed(m, config, p.log);
}

/**
 * Legs the configuration no longer allows are reported down to the machine, the standby first: a standby that
 * is still allowed then takes over by a route change, otherwise a failover race runs over the allowed
 * candidates while the forbidden leg keeps carrying traffic until the winner is up. Returns whether the active
 * leg was moved off.
 */
export function moveOffDisallowed(
  m: Pick<MachineAccess, "state" | "now" | "dispatch">,
  cfg: DetourConfig,
  log: Logger,
): boolean {
  let moved = false;
  const s = m.state();
  if (s.name !== "connected") return false;
  const sb = s.standby.leg?.leg;
  if (sb !== undefined && !legAllowed(cfg, sb)) {
    log.info("standby leg no longer allowed; replacing it", { leg: sb });
    m.dispatch({
      type: "leg-down",
      now: m.now(),
      legId: sb.id,
      reason: `policy: ${sb.gateway} over ${sb.kind} is no longer allowed`,
    });
  }
  const after = m.state();
  if (after.name === "connected" && !legAllowed(cfg, after.active.leg)) {
    const a = after.active.leg;
    log.info("active leg no longer allowed; moving the tunnel", { leg: a });
    m.dispatch({
      type: "leg-down",
      now: m.now(),
      legId: a.id,
      reason: `policy: ${a.gateway} over ${a.kind} is no longer allowed`,
    });
    moved = true;
  }
  return moved;
}

/** The configured gateways the machine starts with, every protocol each offers. */
export function startupGateways(config: DetourConfig): Candidate[] {
  return config.gateways.map((g) => ({
    name: g.name,
    hostname: g.hostname,
    address: g.address ?? null,
    priority: g.priority,
    region: g.region,
    kinds: [
      ...(g.protocols.wireguard !== undefined ? (["wireguard"] as const) : []),
      ...(g.protocols.ikev2 !== undefined ? (["ikev2"] as const) : []),
      ...(g.protocols.anyconnect !== undefined ? (["anyconnect-tls"] as const) : []),
      ...(g.protocols.anyconnect?.dtls === true ? (["anyconnect-dtls"] as const) : []),
    ],
    sources: ["config"],
    probe: null,
  }));
}
