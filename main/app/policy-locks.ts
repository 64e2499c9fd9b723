/**
 * The managed policy as the app shows it, from detourd's prefs answer: every daemon setting the policy sets is
 * listed read-only in Settings' "Managed by <organisation>'s policy" section, and one that has an app counterpart
 * also locks that preference (the policy's `autoConnect` is the app's "connect when Detour starts").
 */
import type { ManagedSection, PolicyLock } from "../core/protocol/app-api.ts";
import type { PrefsPayload } from "../core/policy/status.ts";
import { managedByText, managedSection } from "./daemon-settings.ts";
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
    locks.push({ key, value: e.value, managedBy: managedByText(p.organisation) });
  }
  return locks;
}

/** A PolicySource fed by the app host after each status refresh; empty until a daemon with policy answers. */
export class DaemonPolicyLocks implements PolicySource {
  #locks: PolicyLock[] = [];
  #managed: ManagedSection | null = null;

  locks(): readonly PolicyLock[] {
    return this.#locks;
  }

  managed(): ManagedSection | null {
    return this.#managed;
  }

  update(p: PrefsPayload | null): void {
    this.#locks = p === null ? [] : locksFromPrefs(p);
    this.#managed = p === null ? null : managedSection(p);
  }
}
