/**
 * Diagnostic bundles as the app sees them: the daemon writes a bundle (it can read what the user cannot: its
 * logs, routes, firewall) and the app shows where it went and uploads it. A daemon without the `diag` command
 * (an older one) gets a plain "not available" instead of an error.
 */
import { isControlError, type ControlClient } from "../client/control-client.ts";
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

function failed(e: unknown, daemon: string | null): { ok: false; code: string; message: string } {
  if (isControlError(e) && e.code === "unknown-command")
    return { ok: false, code: "unavailable", message: unavailableMessage(daemon) };
  if (isControlError(e)) return { ok: false, code: e.code, message: e.message };
  return { ok: false, code: "internal", message: e instanceof Error ? e.message : String(e) };
}

/** Bundles made by detourd's `diag` command and delivered by its `diag-upload` (collector and/or SFTP drop). */
export function daemonDiagnostics(
  daemon: () => string | null,
  client: () => Promise<ControlClient>,
): DiagnosticsProvider {
  return {
    async create() {
      try {
        const r = await (await client()).diag();
        return { ok: true, value: { path: r.path, bytes: r.bytes, createdAt: Date.now() } };
      } catch (e) {
        return failed(e, daemon());
      }
    },
    async upload(path: string) {
      try {
        const r = await (await client()).diagUpload();
        const done = r.uploads.filter((u) => u.ok);
        if (r.uploads.length === 0)
          return {
            ok: false,
            code: "unavailable",
            message: "No upload destination is configured; send the file to your helpdesk.",
          };
        if (done.length === 0)
          return {
            ok: false,
            code: "upload-failed",
            message: r.uploads.map((u) => `${u.target}: ${u.error ?? "failed"}`).join("; "),
          };
        const where = done.map((u) => u.location ?? u.target).join(", ");
        return { ok: true, value: { reference: r.path === path ? where : `${where} (latest bundle ${r.path})` } };
      } catch (e) {
        return failed(e, daemon());
      }
    },
  };
}
