/** What the daemon reports about the managed policy and the user's preferences: status, prefs and events. */
import type { IgnoredPref, SettingSource } from "./layers.ts";
import type { SettingKey } from "./settings.ts";
import type { RejectionCode } from "./verify.ts";

export interface PolicyRejectionRecord {
  at: number;
  code: RejectionCode;
  field?: string;
  message: string;
  /** Which source offered the refused document. */
  source: string;
}

export interface PolicyStatus {
  /** The policy in force; all null when none is. */
  version: number | null;
  organisation: string | null;
  source: string | null;
  keyId: string | null;
  issuedAt: string | null;
  expiresAt: string | null;
  appliedAt: number | null;
  /** Keys the policy sets: shown as managed, refused by `detour prefs set`. */
  locked: SettingKey[];
  lastRejection: PolicyRejectionRecord | null;
  /** Stored preferences not applied because they would loosen the configuration, each with why. */
  ignoredPrefs?: IgnoredPref[];
}

export interface PrefEntry {
  key: SettingKey;
  value: unknown;
  source: SettingSource;
  locked: boolean;
  /** "managed": only a policy (or the configuration file) may set it. */
  scope: "user" | "managed";
  /** Set when the user's stored value for this key is not applied: why (it would loosen the configuration). */
  ignored?: string;
}

export interface PrefsPayload {
  /** The organisation whose policy locks keys (null: no policy in force). */
  organisation: string | null;
  entries: PrefEntry[];
}

/** Sent to subscribers when a policy is put in force or a document is refused. */
export type PolicyEvent =
  | {
      type: "policy";
      at: number;
      change: "applied";
      version: number;
      source: string;
      locked: SettingKey[];
      moved: boolean;
    }
  | {
      type: "policy";
      at: number;
      change: "rejected";
      source: string;
      code: RejectionCode;
      field?: string;
      message: string;
    };
