/**
 * The early-boot step under lockdown (resources/systemd/detour-early-block.service, before network-pre.target):
 * reads the persisted lockdown state and, if lockdown was on (or the state cannot be read: fail closed), puts the
 * blocking kill-switch table in force before any network is configured. detourd later replaces that same table
 * in one transaction, so no packet ever sees the host without it. early-block-main.ts is the process around it.
 */
import { earlyBlockDecision, type EarlyBlockDecision } from "../core/lockdown-state.ts";
import type { KillSwitchRules } from "../core/killswitch.ts";
import { readLockdownState } from "./lockdown-state-store.ts";
import type { Logger } from "./log.ts";

export interface EarlyBlockOptions {
  statePath: string;
  /** The platform's kill-switch apply (one atomic replace of detourd's table). */
  apply: (rules: KillSwitchRules) => Promise<void>;
  log: Logger;
}

/** Decides and applies; resolves with the decision, rejects only when a block was due and could not be applied. */
export async function earlyBlock(opts: EarlyBlockOptions): Promise<EarlyBlockDecision> {
  const decision = earlyBlockDecision(readLockdownState(opts.statePath));
  if (decision.action === "none") {
    opts.log.info("early block: nothing to block", { reason: decision.reason, state: opts.statePath });
    return decision;
  }
  await opts.apply(decision.rules);
  const fields = { reason: decision.reason, state: opts.statePath, protected: decision.rules.protectedNetworks };
  if (decision.failClosed) opts.log.warn("early block: blocking", fields);
  else opts.log.info("early block: blocking", fields);
  return decision;
}
