/**
 * Diagnostic bundles as the app sees them: the daemon writes a bundle (it can read what the user cannot: its
 * logs, routes, firewall) and the app shows where it went and uploads it. Behind an interface, because the
 * daemon's `diag` command is built elsewhere; until a daemon offers it, the app says so instead of pretending.
 */
import type { AppResult, DiagnosticsBundle } from "../core/protocol/app-api.ts";

export interface DiagnosticsProvider {
  /** Asks for a bundle and says where it was written. */
  create(): Promise<AppResult<DiagnosticsBundle>>;
  /** Uploads a bundle written by create() and returns the reference to give the helpdesk. */
  upload(path: string): Promise<AppResult<{ reference: string }>>;
}

/** The words shown when the daemon cannot make bundles; the UI and the tests look for "not available in this daemon". */
export function unavailableMessage(daemon: string | null): string {
  return `Diagnostic bundles are not available in this daemon${daemon === null ? "" : ` (${daemon})`}. Ask your IT helpdesk to update Detour.`;
}

/**
 * The provider for a daemon whose control protocol has no `diag` command (every daemon of protocol 1 so far).
 * `daemon` names the daemon that answered, for the message.
 */
export function unavailableDiagnostics(daemon: () => string | null): DiagnosticsProvider {
  return {
    create: () => Promise.resolve({ ok: false, code: "unavailable", message: unavailableMessage(daemon()) }),
    upload: () => Promise.resolve({ ok: false, code: "unavailable", message: unavailableMessage(daemon()) }),
  };
}
