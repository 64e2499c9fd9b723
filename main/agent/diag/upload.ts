/**
 * Delivers a diagnostic bundle to helpdesk, with bounded retries and capped exponential backoff with jitter:
 *
 * Collector (when telemetry is configured). The contract, which the collector implements:
 *
 *   POST <telemetry.endpoint>/v1/diagnostics
 *   authorization: Bearer <telemetry token>          (omitted when no token is configured)
 *   x-detour-device-id: <device id>                  (the same random id telemetry uses)
 *   x-detour-bundle-name: detour-diag-<time>-<hex>.tar.gz
 *   x-detour-bundle-sha256: <hex SHA-256 of the body>
 *   content-type: application/gzip
 *   body: the bundle (.tar.gz; manifest.json first, then summary.html, ...)
 *
 *   2xx: stored; a JSON body may name it ({"id": "...", "url": "..."}). 400/413/415: refused for good (no retry).
 *   401/403: the token is wrong (no retry). 408/429/5xx or no answer: retried. The collector lists bundles per
 *   device and opens their summary.html.
 *
 * SFTP drop (diagnostics.sftp): ssh2 with public-key authentication and the server's host key pinned by its
 * SHA-256 fingerprint; the bundle is written as <dir>/<name>.partial and renamed, so whoever watches the drop
 * never picks up half a file.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { basename } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, type ConnectConfig, type SFTPWrapper } from "ssh2";
import { backoffMs, type Random } from "../../core/backoff.ts";
import type { DiagnosticsConfig } from "../../core/config/schema.ts";
import type { Secret } from "../../core/secret.ts";
import { fetchPost, type Post } from "../telemetry/sender.ts";

/** At most five attempts: with the backoff below that is about half a minute of trying, then the user is told. */
export const UPLOAD_ATTEMPTS = 5;
/** The first retry comes after a second: a blip (a collector restart, a Wi-Fi handover) costs little. */
export const UPLOAD_RETRY_INITIAL_MS = 1000;
/** Waits double up to this cap, so the last attempts still come within the user's patience. */
export const UPLOAD_RETRY_MAX_MS = 8000;
/** One attempt may take this long: a bundle is a few MiB, and a slow uplink still moves that in a minute. */
export const UPLOAD_ATTEMPT_TIMEOUT_MS = 60_000;
/** SSH connect, key exchange and authentication; a server slower than this is treated as down for the attempt. */
export const SSH_READY_TIMEOUT_MS = 10_000;

export const DIAGNOSTICS_PATH = "/v1/diagnostics";

/** A failed attempt; `retryable` false stops the retries at once (a wrong token will not become right). */
export class UploadError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "UploadError";
  }
}

export interface UploadResult {
  target: "collector" | "sftp";
  ok: boolean;
  attempts: number;
  location: string | null;
  error: string | null;
}

export interface RetryOptions {
  attempts?: number;
  initialMs?: number;
  maxMs?: number;
  /** Tests pass a fake clock. */
  sleep?: (ms: number) => Promise<void>;
  /** The backoff's jitter; Math.random unless a test fixes it. */
  random?: Random;
}

/** Runs `attempt` until it succeeds, fails for good, or the attempts are spent. Never throws. */
export async function withRetry(
  target: UploadResult["target"],
  attempt: () => Promise<string | null>,
  opts: RetryOptions = {},
): Promise<UploadResult> {
  const attempts = opts.attempts ?? UPLOAD_ATTEMPTS;
  const wait = opts.sleep ?? ((ms: number) => sleep(ms));
  let last = "not attempted";
  for (let n = 1; n <= attempts; n++) {
    // Attempt n follows n - 1 failures; the first has no wait.
    const delay = backoffMs(
      n - 1,
      { initialMs: opts.initialMs ?? UPLOAD_RETRY_INITIAL_MS, maxMs: opts.maxMs ?? UPLOAD_RETRY_MAX_MS },
      opts.random ?? Math.random,
    );
    if (delay > 0) await wait(delay);
    try {
      const location = await attempt();
      return { target, ok: true, attempts: n, location, error: null };
    } catch (e) {
      last = e instanceof Error ? e.message : String(e);
      if (e instanceof UploadError && !e.retryable)
        return { target, ok: false, attempts: n, location: null, error: last };
    }
  }
  return { target, ok: false, attempts, location: null, error: `${last} (gave up after ${attempts} attempts)` };
}

export interface CollectorTarget {
  endpoint: string;
  token: Secret | null;
  deviceId: string;
  post?: Post;
}

/** One POST of the bundle to the collector; resolves with where it was stored, or throws an UploadError. */
export async function postBundle(file: string, t: CollectorTarget): Promise<string | null> {
  const body = readFileSync(file);
  const url = t.endpoint.replace(/\/+$/, "") + DIAGNOSTICS_PATH;
  const headers: Record<string, string> = {
    "content-type": "application/gzip",
    "x-detour-device-id": t.deviceId,
    "x-detour-bundle-name": basename(file),
    "x-detour-bundle-sha256": createHash("sha256").update(body).digest("hex"),
  };
  if (t.token !== null) headers.authorization = `Bearer ${t.token.reveal()}`;
  const signal = AbortSignal.timeout(UPLOAD_ATTEMPT_TIMEOUT_MS);
  let r;
  try {
    r = await (t.post ?? fetchPost)(url, body, headers, signal);
  } catch (e) {
    throw new UploadError(`no answer from ${url}: ${e instanceof Error ? e.message : String(e)}`, true, { cause: e });
  }
  if (r.status >= 200 && r.status < 300) {
    try {
      const j = JSON.parse(r.body) as { url?: unknown; id?: unknown };
      return typeof j.url === "string" ? j.url : typeof j.id === "string" ? j.id : url;
    } catch {
      return url;
    }
  }
  const retryable = r.status === 408 || r.status === 429 || r.status >= 500;
  const why = r.status === 401 || r.status === 403 ? "the collector refused the token" : `HTTP ${r.status}`;
  throw new UploadError(`${url}: ${why}${r.body === "" ? "" : `: ${r.body.slice(0, 200)}`}`, retryable);
}

export function uploadToCollector(file: string, t: CollectorTarget, retry: RetryOptions = {}): Promise<UploadResult> {
  return withRetry("collector", () => postBundle(file, t), retry);
}

export type SftpTarget = Omit<NonNullable<DiagnosticsConfig["sftp"]>, "privateKey"> & { privateKey: Secret };

/** OpenSSH's fingerprint form: SHA256:<base64 without padding>. */
export function hostKeyFingerprint(key: Buffer): string {
  return `SHA256:${createHash("sha256").update(key).digest("base64").replace(/=+$/, "")}`;
}

function normaliseFingerprint(f: string): string {
  return (f.startsWith("SHA256:") ? f : `SHA256:${f}`).replace(/=+$/, "");
}

function sftpOf(conn: Client): Promise<SFTPWrapper> {
  return new Promise((resolve, reject) => {
    conn.sftp((err, sftp) => {
      if (err !== undefined) reject(new UploadError(`SFTP subsystem refused: ${err.message}`, false, { cause: err }));
      else resolve(sftp);
    });
  });
}

function call(what: string, f: (cb: (err: Error | null | undefined) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    f((err) => {
      if (err == null) resolve();
      else reject(new UploadError(`${what}: ${err.message}`, true, { cause: err }));
    });
  });
}

/** One SFTP upload: connect, check the pinned host key, authenticate, write <dir>/<name>.partial, rename. */
export async function sftpPut(file: string, t: SftpTarget): Promise<string> {
  const name = basename(file);
  const dir = t.dir.replace(/\/+$/, "");
  const remote = `${dir}/${name}`;
  const want = normaliseFingerprint(t.hostKeySha256);
  let seen: string | null = null;
  const conn = new Client();
  const attemptTimer = setTimeout(() => conn.destroy(), UPLOAD_ATTEMPT_TIMEOUT_MS);
  try {
    await new Promise<void>((resolve, reject) => {
      conn.once("ready", () => {
        resolve();
      });
      conn.once("error", (err: Error & { level?: string }) => {
        if (seen !== null && seen !== want)
          reject(
            new UploadError(`${t.host}:${t.port} presented host key ${seen}, not the pinned ${want}`, false, {
              cause: err,
            }),
          );
        else if (err.level === "client-authentication")
          reject(new UploadError(`${t.user}@${t.host} refused the key`, false, { cause: err }));
        else reject(new UploadError(`cannot reach ${t.host}:${t.port}: ${err.message}`, true, { cause: err }));
      });
      conn.once("close", () => {
        reject(new UploadError(`${t.host}:${t.port} closed the connection before it was ready`, true));
      });
      const cfg: ConnectConfig = {
        host: t.host,
        port: t.port,
        username: t.user,
        privateKey: t.privateKey.reveal(),
        readyTimeout: SSH_READY_TIMEOUT_MS,
        hostVerifier: (key: Buffer) => {
          seen = hostKeyFingerprint(key);
          return seen === want;
        },
      };
      // Errors after "ready" reach the pending SFTP call's callback; this keeps them from crashing the daemon.
      conn.on("error", () => undefined);
      conn.connect(cfg);
    });
    const sftp = await sftpOf(conn);
    const size = statSync(file).size;
    await call(`writing ${remote}.partial`, (cb) => {
      sftp.fastPut(file, `${remote}.partial`, { mode: 0o600 }, cb);
    });
    // A rename over an existing name fails in SFTP v3; names carry a random suffix, so that is a real conflict.
    await call(`renaming to ${remote}`, (cb) => {
      sftp.rename(`${remote}.partial`, remote, cb);
    });
    const st = await new Promise<{ size: number }>((resolve, reject) => {
      sftp.stat(remote, (err, s) => {
        if (err !== undefined) reject(new UploadError(`stat ${remote}: ${err.message}`, true, { cause: err }));
        else resolve(s);
      });
    });
    if (st.size !== size) throw new UploadError(`${remote} has ${st.size} bytes on the server, not ${size}`, true);
    return `sftp://${t.user}@${t.host}:${t.port}${remote}`;
  } finally {
    clearTimeout(attemptTimer);
    conn.end();
    conn.destroy();
  }
}

export function uploadToSftp(file: string, t: SftpTarget, retry: RetryOptions = {}): Promise<UploadResult> {
  return withRetry("sftp", () => sftpPut(file, t), retry);
}
