/**
 * The managed policy's locks on the app's own preferences, as detourd reports them: a daemon setting that
 * the policy sets and that has an app counterpart is shown in Settings as locked, with who manages it.
 * Today one key has a counterpart: the policy's `autoConnect` is the app's "connect when Detour starts".
 */
import type { PolicyLock } from "../core/protocol/app-api.ts";
import type { PrefsPayload } from "../core/policy/status.ts";
import type { PolicySource } from "./settings-model.ts";

/** Daemon setting -> the app preference it decides. */
const COUNTERPARTS = { autoConnect: "connectOnLaunch" } as const;

/** The app locks a daemon's prefs answer implies (pure). */
export function locksFromPrefs(p: PrefsPayload): PolicyLock[] {
  const locks: PolicyLock[] = [];
  for (const e of p.entries) {
    if (!e.locked || !(e.key in COUNTERPARTS)) continue;
    const key = COUNTERPARTS[e.key as keyof typeof COUNTERPARTS];
    if (typeof e.value !== "boolean") continue;
    locks.push({ key, value: e.value, managedBy: `${p.organisation ?? "your organisation"}'s policy` });
  }
  return locks;
}

/** A PolicySource fed by the app host after each status refresh; empty until a daemon with policy answers. */
export class DaemonPolicyLocks implements PolicySource {
  #locks: PolicyLock[] = [];

  locks(): readonly PolicyLock[] {
    return this.#locks;
  }

  update(p: PrefsPayload | null): void {
    this.#locks = p === null ? [] : locksFromPrefs(p);
  }
}
