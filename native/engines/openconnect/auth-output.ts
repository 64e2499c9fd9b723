/**
 * Codec for `openconnect --authenticate`'s stdout (shell-style KEY='value' lines): the session cookie and what
 * is needed to open the tunnel with it later. The cookie becomes a Secret at once.
 */
import { Secret } from "../../../main/core/secret.ts";

/** A certificate pin as openconnect's --servercert takes it. */
export const PIN_RE = /^(?:pin-sha256:[A-Za-z0-9+/]{43}=|sha1:[0-9a-fA-F]{40}|sha256:[0-9a-fA-F]{64})$/;

/** What `openconnect --authenticate` returns: enough to open the tunnel later without the password. */
export interface AnyConnectSession {
  /** The session cookie (with openconnect 9 it also carries the STRAP private key): a Secret, never logged. */
  cookie: Secret;
  /** The gateway's certificate pin as openconnect saw it; equal to the spec's pin or authenticate rejects. */
  fingerprint: string;
  connectUrl: string;
  /** host:address for --resolve, so the tunnel connects to the address that was authenticated. */
  resolve: string | null;
  obtainedAt: number;
}

/** Reads `openconnect --authenticate`'s shell-style output (KEY='value' lines) into a session; null if incomplete. */
export function parseAuthOutput(stdout: string): Omit<AnyConnectSession, "obtainedAt"> | null {
  const vars = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const m = /^([A-Z_]{1,20})='((?:[^']|'\\'')*)'$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined && !vars.has(m[1])) vars.set(m[1], m[2].replaceAll("'\\''", "'"));
  }
  const cookie = vars.get("COOKIE");
  const fingerprint = vars.get("FINGERPRINT");
  const connectUrl = vars.get("CONNECT_URL");
  const resolve = vars.get("RESOLVE") ?? null;
  if (cookie === undefined || cookie === "" || /[\n\r\0]/.test(cookie)) return null;
  if (fingerprint === undefined || !PIN_RE.test(fingerprint)) return null;
  if (connectUrl === undefined || !/^https:\/\/[A-Za-z0-9.\-[\]:]{1,260}(?:\/\S{0,200})?$/.test(connectUrl))
    return null;
  // host:address for --resolve; the address may be IPv6 (openconnect splits at the first colon).
  if (resolve !== null && !/^[A-Za-z0-9.-]{1,253}:(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f:.]{2,45})$/.test(resolve))
    return null;
  return { cookie: new Secret(cookie), fingerprint, connectUrl, resolve };
}
