/**
 * What a new effective configuration means for legs and candidates the daemon already has: which legs may stay,
 * and the candidate list cut down to what is still allowed. Pure; the daemon acts on the answers.
 */
import type { DetourConfig } from "../config/schema.ts";
import type { Candidate, Leg, LegKind } from "../connection/types.ts";

function offers(config: DetourConfig, gateway: string, kind: LegKind): boolean {
  const p = config.gateways.find((g) => g.name === gateway)?.protocols;
  if (p === undefined) return false;
  switch (kind) {
    case "wireguard":
      return p.wireguard !== undefined;
    case "ikev2":
      return p.ikev2 !== undefined;
    case "anyconnect-tls":
      return p.anyconnect !== undefined;
    case "anyconnect-dtls":
      return p.anyconnect?.dtls === true;
  }
}

/** Whether a leg may keep running: its gateway is still configured (allowed) and still offers its protocol. */
export function legAllowed(config: DetourConfig, leg: Pick<Leg, "gateway" | "kind">): boolean {
  return offers(config, leg.gateway, leg.kind);
}

/** Candidates cut down to the allowed gateways and protocols, with the configuration's (possibly preferred) priorities. */
export function restrictCandidates(candidates: readonly Candidate[], config: DetourConfig): Candidate[] {
  return candidates.flatMap((c) => {
    const gw = config.gateways.find((g) => g.name === c.name);
    if (gw === undefined) return [];
    const kinds = c.kinds.filter((k) => offers(config, c.name, k));
    return kinds.length === 0 ? [] : [{ ...c, priority: gw.priority, kinds }];
  });
}
