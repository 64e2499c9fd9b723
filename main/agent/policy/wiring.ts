/**
 * Connects the policy manager to detourd: which sources to read (flags or the platform's defaults), what the
 * control API answers for policy and preferences, and what a new effective configuration or a refusal does.
 */
import type { DetourConfig } from "../../core/config/schema.ts";
import type { PolicyEvent, PolicyStatus, PrefsPayload } from "../../core/policy/status.ts";
import { ATTR, EVENT } from "../../core/telemetry/names.ts";
import { CommandRefused } from "../control-server.ts";
import type { Logger } from "../log.ts";
import { PolicyManager, PrefRefused } from "./policy-manager.ts";
import { readSecretFile, SecretError } from "../secrets.ts";
import { remoteSource } from "./remote.ts";
import { LINUX_TRUSTED_KEYS_DIR, platformSource, type PolicySource } from "./sources.ts";

export interface PolicyFlags {
  /** The managed-policy file (Linux, macOS); the platform's location when absent. */
  policyFile?: string;
  trustedKeysDir?: string;
  /**
   * A root-owned file (mode 0600) holding the remote policy URL. Never the URL itself on the command line: every
   * local user can read a process's argv, and the URL may carry credentials or a signed query.
   */
  policyUrlFile?: string;
}

/** The remote policy URL out of its file; throws an error naming the file (never the URL) when it is unusable. */
export function readPolicyUrl(file: string): string {
  const text = readSecretFile(file, "--policy-url-file");
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new SecretError("--policy-url-file", `${file} does not hold a URL (one line: https://...)`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:")
    throw new SecretError(
      "--policy-url-file",
      `${file}: the policy URL must be https:// (or http://), not ${url.protocol}`,
    );
  return text;
}

export function createPolicyManager(
  base: DetourConfig,
  stateDir: string,
  flags: PolicyFlags,
  log: Logger,
): PolicyManager {
  const sources: PolicySource[] = [platformSource(process.platform, flags.policyFile)];
  if (flags.policyUrlFile !== undefined) sources.push(remoteSource(readPolicyUrl(flags.policyUrlFile)));
  return new PolicyManager({
    base,
    stateDir,
    trustedKeysDir: flags.trustedKeysDir ?? LINUX_TRUSTED_KEYS_DIR,
    sources,
    log,
  });
}

/** What the daemon exposes to the wiring: live reconfiguration and telemetry events. */
export interface Reconfigurable {
  reconfigure(config: DetourConfig): boolean;
  emitTelemetry(name: string, body: unknown, attrs?: Record<string, string | number | boolean>): void;
}

/** Starts reading policies; every new effective configuration goes to the daemon, every event to telemetry. */
export function startPolicy(manager: PolicyManager, daemon: Reconfigurable): void {
  manager.subscribe((e) => {
    daemon.emitTelemetry(EVENT.policy, e, {
      [ATTR.outcome]: e.change,
      ...(e.change === "rejected" ? { [ATTR.code]: e.code } : {}),
    });
  });
  manager.start((effective) => daemon.reconfigure(effective.config));
}

/** The control API's policy and preference handlers. */
export function policyHandlers(manager: PolicyManager): {
  policy(): Promise<PolicyStatus>;
  prefs(): Promise<PrefsPayload>;
  prefsSet(key: string, value: string | null): Promise<PrefsPayload>;
  subscribePolicy(listener: (e: PolicyEvent) => void): () => void;
} {
  return {
    policy: () => Promise.resolve(manager.status()),
    prefs: () => Promise.resolve(manager.prefs()),
    prefsSet: (key, value) => {
      try {
        return Promise.resolve(manager.setPref(key, value));
      } catch (e) {
        if (e instanceof PrefRefused) return Promise.reject(new CommandRefused(e.message));
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    },
    subscribePolicy: (listener) => manager.subscribe(listener),
  };
}
