/**
 * The sequential fallback baseline: the way Mullvad and GlobalProtect walk their lists, one protocol at a time,
 * each given its usual timeout before the next starts (WireGuard, then IPsec, then SSL with DTLS).
 */
import { startPlain, type PlainLeg, type PlainTunnel } from "../../lab/plain/plain-clients.ts";
import { firstReplyThrough, type BaselineContext } from "./common.ts";

export interface FallbackStep {
  leg: PlainLeg;
  timeoutMs: number;
}

/**
 * Mullvad's per-attempt establish timeout, min(15 s, 4 s x 2^attempt) (talpid-wireguard check.rs), applied to
 * the attempts in the order GlobalProtect and Mullvad try them: UDP tunnel first, the SSL/TLS one last.
 */
export const FALLBACK_STEPS: readonly FallbackStep[] = [
  { leg: "wireguard", timeoutMs: 4_000 },
  { leg: "ikev2", timeoutMs: 8_000 },
  { leg: "anyconnect-dtls", timeoutMs: 15_000 },
];

export const FALLBACK_SETTINGS = FALLBACK_STEPS.map((s) => `${s.leg} ${s.timeoutMs / 1000} s`).join(", then ");

/** Walks FALLBACK_STEPS against the primary gateway; returns the first tunnel that answers, or null. Failed steps are stopped. */
export async function sequentialConnect(ctx: BaselineContext): Promise<PlainTunnel | null> {
  for (const step of FALLBACK_STEPS) {
    const t = await startPlain(step.leg, ctx.topo, ctx.state, ctx.primary, "sq");
    if ((await firstReplyThrough(ctx.topo, t.ifname, t.launchedAt + step.timeoutMs)) !== null) return t;
    await t.stop();
  }
  return null;
}
