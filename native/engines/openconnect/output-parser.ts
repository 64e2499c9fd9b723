/**
 * Codec for openconnect 9's output (run with `--timestamp -v`): one line in, one typed event out. Lines that
 * may carry a cookie, password or key are dropped whole, so no secret can reach an event or a log.
 */

/** openconnect prints short lines; anything longer is cut before matching so a hostile banner costs little. */
export const MAX_LINE_CHARS = 2048;
/** `other` events keep this much text: enough to read, short enough for a log line. */
export const MAX_OTHER_CHARS = 300;

/** "established": handshake done, first packets pending (openconnect then sends over DTLS); "disconnected": given up. */
export type DtlsState = "connected" | "established" | "in-progress" | "disabled" | "disconnected";

export type OcEvent =
  | { kind: "connecting"; target: string }
  | { kind: "tcp-connected"; target: string }
  | { kind: "tls-connected"; ciphersuite: string }
  | { kind: "cstp-connected"; dpdSec: number; keepaliveSec: number }
  | { kind: "dtls-initialised"; dpdSec: number; keepaliveSec: number }
  | { kind: "dtls-established"; ciphersuite: string }
  | { kind: "dtls-handshake-failed"; reason: string }
  | { kind: "dtls-timed-out" }
  | { kind: "dtls-dead-peer" }
  | { kind: "dtls-retry" }
  | { kind: "configured"; address: string; dtls: DtlsState }
  | { kind: "cstp-dead-peer" }
  /** The TLS session broke while up (server closed, reset); openconnect starts reconnecting. */
  | { kind: "cstp-read-error"; reason: string }
  | { kind: "reconnect-failed"; reason: string }
  | { kind: "reconnect-wait"; sleepSec: number; remainingSec: number }
  | { kind: "reconnect-gave-up" }
  /** The pinned fingerprint did not match what the server presented. */
  | { kind: "pin-mismatch"; presented: string }
  /** TLS failed because of the certificate (follows pin-mismatch, or stands alone for other certificate faults). */
  | { kind: "certificate-error"; reason: string }
  | { kind: "login-failed" }
  | { kind: "cookie-rejected" }
  | { kind: "auth-incomplete" }
  | { kind: "connect-refused"; target: string }
  | { kind: "connect-failed"; target: string; reason: string }
  | { kind: "connect-cancelled" }
  | { kind: "session-terminated"; reason: string }
  | { kind: "server-disconnect" }
  | { kind: "user-cancelled" }
  | { kind: "input-required" }
  /** The line may carry a secret (Set-Cookie, STRAP key, password prompt); its text is not kept. */
  | { kind: "redacted" }
  | { kind: "other"; text: string };

export interface ParsedLine {
  /** openconnect's own "[YYYY-MM-DD HH:MM:SS]" stamp, when the line had one (second resolution). */
  stamp: string | null;
  event: OcEvent;
  /** The line without its stamp, cleaned of control characters, safe to log; a placeholder when redacted. */
  text: string;
}

export const REDACTED_TEXT = "[line dropped: may hold a secret]";

const STAMP_RE = /^\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})\] /;
const IPV4 = String.raw`(?:\d{1,3}\.){3}\d{1,3}`;
/** Host and optional port as openconnect prints its target: an address, a name or a bracketed IPv6. */
const TARGET = String.raw`(\[[0-9A-Fa-f:.]{2,45}\](?::\d{1,5})?|[A-Za-z0-9.\-]{1,253}(?::\d{1,5})?)`;

/** Anything here can carry a credential in some openconnect version or verbosity; such lines are dropped. */
const SECRET_RE = /cookie|webvpn|strap|passw|secret|token|authoriz|x-cstp-|x-dtls-/i;

const DTLS_STATES: Record<string, DtlsState> = {
  connected: "connected",
  established: "established",
  "in progress": "in-progress",
  disabled: "disabled",
  disconnected: "disconnected",
};

const COOKIE_REJECTED_RE = /^Cookie was rejected by server; exiting\.$/;

type Rule = [RegExp, (m: RegExpExecArray) => OcEvent];

/** Whole-line patterns, so a value an attacker controls in a longer line cannot impersonate one. */
const RULES: Rule[] = [
  [
    new RegExp(String.raw`^Attempting to connect to server ${TARGET}$`),
    (m) => ({ kind: "connecting", target: m[1] ?? "" }),
  ],
  [new RegExp(String.raw`^Connected to ${TARGET}$`), (m) => ({ kind: "tcp-connected", target: m[1] ?? "" })],
  [
    /^Connected to HTTPS on \S{1,255} with ciphersuite (\S{1,160})$/,
    (m) => ({ kind: "tls-connected", ciphersuite: m[1] ?? "" }),
  ],
  [
    /^CSTP connected\. DPD (\d{1,5}), Keepalive (\d{1,5})$/,
    (m) => ({ kind: "cstp-connected", dpdSec: Number(m[1]), keepaliveSec: Number(m[2]) }),
  ],
  [
    /^DTLS initialised\. DPD (\d{1,5}), Keepalive (\d{1,5})$/,
    (m) => ({ kind: "dtls-initialised", dpdSec: Number(m[1]), keepaliveSec: Number(m[2]) }),
  ],
  [
    /^Established DTLS connection \(using \w+\)\. Ciphersuite (\S{1,120})\.$/,
    (m) => ({ kind: "dtls-established", ciphersuite: m[1] ?? "" }),
  ],
  [/^DTLS handshake failed: (.{0,200})$/, (m) => ({ kind: "dtls-handshake-failed", reason: m[1] ?? "" })],
  [/^DTLS handshake timed out$/, () => ({ kind: "dtls-timed-out" })],
  [/^DTLS Dead Peer Detection detected dead peer!$/, () => ({ kind: "dtls-dead-peer" })],
  [/^Attempt new DTLS connection$/, () => ({ kind: "dtls-retry" })],
  [
    // openconnect 9.01: "Configured as %s%s%s, with SSL%s%s %s and %s%s%s %s" (compression after SSL/DTLS when used)
    new RegExp(
      String.raw`^Configured as (${IPV4})(?:[^,]{0,80}), with SSL(?: \+ [\w-]{1,20})?(?: disconnected| connected) and DTLS(?: \+ [\w-]{1,20})? (connected|established|in progress|disabled|disconnected)$`,
    ),
    (m) => ({ kind: "configured", address: m[1] ?? "", dtls: DTLS_STATES[m[2] ?? ""] ?? "disconnected" }),
  ],
  [/^CSTP Dead Peer Detection detected dead peer!$/, () => ({ kind: "cstp-dead-peer" })],
  [/^Read error on SSL session: (.{0,200})$/, (m) => ({ kind: "cstp-read-error", reason: m[1] ?? "" })],
  [
    new RegExp(String.raw`^Failed to reconnect to host ${TARGET}: (.{0,200})$`),
    (m) => ({ kind: "reconnect-failed", reason: m[2] ?? "" }),
  ],
  [
    /^sleep (\d{1,6})s, remaining timeout (\d{1,7})s$/,
    (m) => ({ kind: "reconnect-wait", sleepSec: Number(m[1]), remainingSec: Number(m[2]) }),
  ],
  [/^Reconnect failed$/, () => ({ kind: "reconnect-gave-up" })],
  [
    /^None of the \d{1,3} fingerprint\(s\) specified via --servercert match server's certificate: (pin-sha256:[A-Za-z0-9+/=]{1,64}|sha\d{1,3}:[0-9a-fA-F]{1,128})$/,
    (m) => ({ kind: "pin-mismatch", presented: m[1] ?? "" }),
  ],
  [/^SSL connection failure: (.{0,200})$/, (m) => ({ kind: "certificate-error", reason: m[1] ?? "" })],
  [/^Login failed\.$/, () => ({ kind: "login-failed" })],
  [/^Failed to complete authentication$/, () => ({ kind: "auth-incomplete" })],
  [
    new RegExp(String.raw`^Failed to connect to ${TARGET}: Connection refused$`),
    (m) => ({ kind: "connect-refused", target: m[1] ?? "" }),
  ],
  [
    new RegExp(String.raw`^Failed to connect to ${TARGET}: (.{0,200})$`),
    (m) => ({ kind: "connect-failed", target: m[1] ?? "", reason: m[2] ?? "" }),
  ],
  [/^Socket connect cancelled$/, () => ({ kind: "connect-cancelled" })],
  [/^Session terminated by server; reason: (.{0,200})$/, (m) => ({ kind: "session-terminated", reason: m[1] ?? "" })],
  [/^Session terminated by server; exiting\.$/, () => ({ kind: "session-terminated", reason: "" })],
  [/^Received server disconnect(?:: .{0,200})?$/, () => ({ kind: "server-disconnect" })],
  [/^User cancelled \(SIGINT\/SIGTERM\); exiting\.$/, () => ({ kind: "user-cancelled" })],
  [/^User input required in non-interactive mode$/, () => ({ kind: "input-required" })],
];

/** Removes control characters so an `other` line is one clean printable line. */
function clean(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, "?");
}

/** Parses one output line; total: any string in, an event out. */
export function parseLine(raw: string): ParsedLine {
  let line = raw.length > MAX_LINE_CHARS ? raw.slice(0, MAX_LINE_CHARS) : raw;
  if (line.endsWith("\r")) line = line.slice(0, -1);
  const sm = STAMP_RE.exec(line);
  const stamp = sm?.[1] ?? null;
  const body = clean(sm === null ? line : line.slice(sm[0].length));
  // Checked first, so no captured field of any event can carry a secret; one fixed line is known harmless.
  if (SECRET_RE.test(body)) {
    return COOKIE_REJECTED_RE.test(body)
      ? { stamp, event: { kind: "cookie-rejected" }, text: body }
      : { stamp, event: { kind: "redacted" }, text: REDACTED_TEXT };
  }
  for (const [re, make] of RULES) {
    const m = re.exec(body);
    if (m !== null) return { stamp, event: make(m), text: body.slice(0, MAX_OTHER_CHARS) };
  }
  const text = body.slice(0, MAX_OTHER_CHARS);
  return { stamp, event: { kind: "other", text }, text };
}
