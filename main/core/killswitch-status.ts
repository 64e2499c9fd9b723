/**
 * The kill switch as status and events show it: whether what Detour wants is what the kernel holds, and what
 * happened to it. Apart from killswitch.ts (the policy) so the connection's event types can name it without an
 * import cycle.
 */

/**
 * - blocking: only the allowances below may leave outside the tunnel devices
 * - tunnel-only: protected destinations leave only through the tunnel devices
 */
export type KillSwitchMode = "blocking" | "tunnel-only";

/**
 * Whether the kill switch Detour wants is what the kernel holds:
 * - in-force: the wanted rules were applied and are intact (or none are wanted: see "off")
 * - fallback: applying them failed, and the minimal blocking table (loopback, tunnel devices, the host's underlay
 *   upkeep and detourd's own traffic only) is in force while the real apply is retried
 * - failed: neither could be applied; nothing Detour put in the firewall can be relied on
 * - off: no kill switch is wanted (disconnected without lockdown), and none is in force
 */
export type KillSwitchEnforcement = "in-force" | "fallback" | "failed" | "off";

/** What `detour status` shows of the kill switch. Times are wall ms. */
export interface KillSwitchStatus {
  state: KillSwitchEnforcement;
  /** The mode wanted; null when none is. */
  mode: KillSwitchMode | null;
  /** The group id the underlay allowances are bound to; null: any local process may use them. */
  ownGroup: number | null;
  lastError: string | null;
  lastErrorAt: number | null;
  /** Applies (or removals) that failed since detourd started. */
  applyFailures: number;
  /** Times the fallback table was put in. */
  fallbacks: number;
  /** Times the table was found missing or altered by someone else and put back. */
  restorations: number;
  lastRestoredAt: number | null;
  /** Times the firewall watcher (nft monitor) died and was restarted. */
  watcherRestarts: number;
  /** When the next retry of a failed apply runs; null when none is pending. */
  nextRetryAt: number | null;
}

/** What happened to the kill switch, as an event. */
export type KillSwitchChange =
  "apply-failed" | "fallback" | "failed" | "in-force" | "restored" | "remove-failed" | "watcher-restarted";

export const KILL_SWITCH_CHANGES: readonly KillSwitchChange[] = [
  "apply-failed",
  "fallback",
  "failed",
  "in-force",
  "restored",
  "remove-failed",
  "watcher-restarted",
];
export const KILL_SWITCH_ENFORCEMENTS: readonly KillSwitchEnforcement[] = ["in-force", "fallback", "failed", "off"];

export function initialKillSwitchStatus(): KillSwitchStatus {
  return {
    state: "off",
    mode: null,
    ownGroup: null,
    lastError: null,
    lastErrorAt: null,
    applyFailures: 0,
    fallbacks: 0,
    restorations: 0,
    lastRestoredAt: null,
    watcherRestarts: 0,
    nextRetryAt: null,
  };
}
