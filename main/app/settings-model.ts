/**
 * The user's preferences and the managed policy's locks on them: which value is in force, which keys the user
 * may change, and who manages the others. Pure; the store (electron-store, or a file for the dev bridge) and the
 * policy source sit behind small interfaces so the same rules hold in Electron, the browser and tests.
 */
import { z } from "zod";
import {
  PREFERENCE_KEYS,
  type AppResult,
  type ManagedSection,
  type PolicyLock,
  type PreferenceKey,
  type Preferences,
  type SettingsView,
} from "../core/protocol/app-api.ts";

export const PREFERENCE_SCHEMAS = {
  startAtLogin: z.boolean(),
  connectOnLaunch: z.boolean(),
  notifications: z.enum(["all", "errors", "off"]),
  theme: z.enum(["system", "light", "dark"]),
} satisfies { [K in PreferenceKey]: z.ZodType<Preferences[K]> };

/** What a new user gets: start with the session and tell them about failovers and errors. */
export const DEFAULT_PREFERENCES: Readonly<Preferences> = {
  startAtLogin: true,
  connectOnLaunch: false,
  notifications: "all",
  theme: "system",
};

/** Where preferences are kept. */
export interface PreferenceStore {
  read(): Partial<Record<string, unknown>>;
  write<K extends PreferenceKey>(key: K, value: Preferences[K]): void;
}

/** Where the managed policy's locks come from (detourd's policy; a fixture in tests). */
export interface PolicySource {
  /** Locks on the app's own preferences. */
  locks(): readonly PolicyLock[];
  /** detourd's settings the policy sets, shown read-only; null while none are. */
  managed(): ManagedSection | null;
}

/** The user's stored preferences, each checked: a bad or missing value falls back to the default. */
export function readPreferences(raw: Partial<Record<string, unknown>>): Preferences {
  const out: Record<string, unknown> = { ...DEFAULT_PREFERENCES };
  for (const key of PREFERENCE_KEYS) {
    const r = PREFERENCE_SCHEMAS[key].safeParse(raw[key]);
    if (r.success) out[key] = r.data;
  }
  return out as unknown as Preferences;
}

const LockSchema = z.strictObject({
  key: z.enum(PREFERENCE_KEYS as [PreferenceKey, ...PreferenceKey[]]),
  value: z.unknown(),
  managedBy: z.string().min(1).max(200),
});

/**
 * Checks a policy's lock list. A lock whose value does not fit its key is dropped (with the reason), never
 * applied half-way; a key listed twice keeps its first lock.
 */
export function parseLocks(raw: unknown): { locks: PolicyLock[]; problems: string[] } {
  const locks: PolicyLock[] = [];
  const problems: string[] = [];
  if (!Array.isArray(raw)) return { locks, problems: ["expected a list of locks"] };
  raw.forEach((item: unknown, i) => {
    const l = LockSchema.safeParse(item);
    if (!l.success) {
      problems.push(`[${i}]: ${l.error.issues.map((x) => `${x.path.join(".")}: ${x.message}`).join("; ")}`);
      return;
    }
    const v = PREFERENCE_SCHEMAS[l.data.key].safeParse(l.data.value);
    if (!v.success) problems.push(`[${i}] ${l.data.key}: ${v.error.issues.map((x) => x.message).join("; ")}`);
    else if (locks.some((x) => x.key === l.data.key))
      problems.push(`[${i}] ${l.data.key}: locked twice; the first lock holds`);
    else locks.push({ key: l.data.key, value: v.data, managedBy: l.data.managedBy });
  });
  return { locks, problems };
}

/** The values in force: the user's, except where a lock sets the value. */
export function effectivePreferences(prefs: Preferences, locks: readonly PolicyLock[]): Preferences {
  const out: Record<string, unknown> = { ...prefs };
  for (const l of locks) out[l.key] = l.value;
  return out as unknown as Preferences;
}

/** Every setting with its value in force, whether (and by whom) it is locked, and detourd's managed settings. */
export function settingsView(
  prefs: Preferences,
  locks: readonly PolicyLock[],
  managed: ManagedSection | null = null,
): SettingsView {
  const eff = effectivePreferences(prefs, locks);
  return {
    settings: PREFERENCE_KEYS.map((key) => {
      const lock = locks.find((l) => l.key === key);
      return { key, value: eff[key], locked: lock !== undefined, managedBy: lock?.managedBy ?? null };
    }),
    managed,
  };
}

/** Whether the user may set `key` to `value`: refused when the key is locked or the value does not fit. */
export function checkChange<K extends PreferenceKey>(
  key: K,
  value: unknown,
  locks: readonly PolicyLock[],
): AppResult<Preferences[K]> {
  const lock = locks.find((l) => l.key === key);
  if (lock !== undefined)
    return {
      ok: false,
      code: "locked",
      message: `This setting is managed by ${lock.managedBy} and cannot be changed here.`,
    };
  const schema: z.ZodType = PREFERENCE_SCHEMAS[key];
  const r = schema.safeParse(value);
  if (!r.success)
    return { ok: false, code: "invalid", message: `${key}: ${r.error.issues.map((i) => i.message).join("; ")}` };
  // The schema for `key` checks exactly Preferences[K] (PREFERENCE_SCHEMAS satisfies that per key).
  return { ok: true, value: r.data as Preferences[K] };
}

/** Settings bound to a store and a policy: what the host's settings calls run. */
export class Settings {
  readonly #store: PreferenceStore;
  readonly #policy: PolicySource;

  constructor(store: PreferenceStore, policy: PolicySource) {
    this.#store = store;
    this.#policy = policy;
  }

  /** The values in force. */
  current(): Preferences {
    return effectivePreferences(readPreferences(this.#store.read()), this.#policy.locks());
  }

  view(): SettingsView {
    return settingsView(readPreferences(this.#store.read()), this.#policy.locks(), this.#policy.managed());
  }

  set(key: PreferenceKey, value: unknown): AppResult<SettingsView> {
    const c = checkChange(key, value, this.#policy.locks());
    if (!c.ok) return c;
    this.#store.write(key, c.value);
    return { ok: true, value: this.view() };
  }
}

/** A store in memory (tests, and the dev bridge without --prefs). */
export function memoryStore(initial: Partial<Preferences> = {}): PreferenceStore {
  const data: Partial<Record<string, unknown>> = { ...initial };
  return {
    read: () => ({ ...data }),
    write: (key, value) => {
      data[key] = value;
    },
  };
}
