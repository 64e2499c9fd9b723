/**
 * Redaction for diagnostic bundles, pure: every text and JSON value that goes into a bundle passes through one
 * Redactor per bundle. Two kinds of class:
 *
 *   removed (never in a bundle, replaced by "[removed:<class>]"):
 *     private-key    WireGuard private keys (base64 in key contexts, hex after UAPI's private_key=), PEM blocks
 *     preshared-key  WireGuard preshared keys, IKE PSKs (swanctl `secret = ...`)
 *     password       password=, passwd:, pwd= and friends
 *     cookie         openconnect's webvpn cookie, COOKIE=, Cookie: and Set-Cookie: headers
 *     token          Authorization: / Bearer tokens, token=, x-api-key ...
 *     secret-field   a JSON value whose field is named like key/secret/password/token/cookie
 *     known-secret   a value the daemon knows is secret (its SecretRefs, secret-looking environment variables)
 *
 *   pseudonymised (replaced by a token that is the same for the same value within one bundle):
 *     user-name      "alice" -> "user-1" (names the caller lists: /etc/passwd users, $USER, configured user names)
 *     home-path      "/home/alice/x" -> "/home/user-1/x", "/root/x" -> "/home/user-root/x"
 *     public-ip      "203.0.113.9" is documentation, kept; "8.8.8.8" -> "ip-1". Private, shared (RFC 6598),
 *                    benchmarking (RFC 2544, the lab's 198.18.0.0/15), loopback, link-local, multicast and
 *                    documentation ranges are kept: they identify nobody and helpdesk needs them.
 *
 * The report counts replacements per class; it never holds an original value.
 */

export const REMOVED_CLASSES = [
  "private-key",
  "preshared-key",
  "password",
  "cookie",
  "token",
  "secret-field",
  "known-secret",
] as const;
export const PSEUDONYM_CLASSES = ["user-name", "home-path", "public-ip"] as const;
export type RemovedClass = (typeof REMOVED_CLASSES)[number];
export type PseudonymClass = (typeof PSEUDONYM_CLASSES)[number];
export type RedactionClass = RemovedClass | PseudonymClass;

export interface RedactionReport {
  removed: Record<RemovedClass, number>;
  pseudonymised: Record<PseudonymClass, number>;
  /** Distinct values behind the pseudonyms, per class (how many users, addresses; never which). */
  distinct: Record<PseudonymClass, number>;
}

export interface RedactorOptions {
  /** Values that must never appear, wherever they occur (secrets read from SecretRefs and the environment). */
  knownSecrets?: readonly string[];
  /** User names to pseudonymise as whole words (system accounts such as root are only replaced in paths). */
  userNames?: readonly string[];
}

/**
 * Known secrets at least this long are removed wherever they occur; shorter ones (a PIN, a short password) only
 * where they stand as a whole word, so "1234" goes but the "1234" inside a timestamp stays.
 */
const MIN_KNOWN_SECRET_LENGTH = 6;
/** Field names that look secret but hold public identities or flags: kept, since helpdesk needs them. */
const PUBLIC_FIELD =
  /^(public.?key|peer.?public.?key|host.?key.?sha256|has.?preshared.?key|pin|token.?kind|key.?count)$/i;
/** Field names whose values are removed whatever they hold (a Secret serialises as "[redacted]" already). */
const SECRET_FIELD =
  /(private.?key|preshared|psk|password|passwd|secret|cookie|token|api.?key|authorization|credential|^key$|.key$)/i;
const SYSTEM_USERS = new Set([
  "root",
  "daemon",
  "bin",
  "sys",
  "nobody",
  "www-data",
  "systemd-network",
  "messagebus",
  "sshd",
  "_apt",
]);

const B64_KEY = "[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=";
const HEX_KEY = "[0-9a-fA-F]{64}";

interface Rule {
  cls: RemovedClass;
  re: RegExp;
  /** Index of the capture group holding the secret; the rest of the match is kept. Absent: the whole match goes. */
  group?: number;
}

/**
 * Secret patterns in engine output, logs, configs and headers. Each keeps its context ("private_key=") and
 * removes only the value, so a reader still sees that a key was there.
 */
const RULES: readonly Rule[] = [
  { cls: "private-key", re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----/g },
  { cls: "private-key", re: new RegExp(`(private_key=)(${HEX_KEY})`, "g"), group: 2 },
  { cls: "preshared-key", re: new RegExp(`(preshared_key=)(${HEX_KEY})`, "g"), group: 2 },
  { cls: "private-key", re: new RegExp(`(private.?key["']?\\s*[:=]\\s*["']?)(${B64_KEY})`, "gi"), group: 2 },
  { cls: "preshared-key", re: new RegExp(`(preshared.?key["']?\\s*[:=]\\s*["']?)(${B64_KEY})`, "gi"), group: 2 },
  { cls: "preshared-key", re: /(\b(?:psk|secret)["']?\s*[:=]\s*["']?)([^\s"',;{}[\]]{1,})/gi, group: 2 },
  { cls: "password", re: /(\b(?:password|passwd|passphrase|pwd)["']?\s*[:=]\s*["']?)([^\s"',;{}[\]]{1,})/gi, group: 2 },
  { cls: "cookie", re: /(\bwebvpn=)([^\s;"',]+)/gi, group: 2 },
  { cls: "cookie", re: /(\b(?:COOKIE|webvpn_cookie)["']?\s*[:=]\s*["']?)([^\s"';,]+)/g, group: 2 },
  { cls: "cookie", re: /(\b(?:set-)?cookie:\s*)([^\r\n]+)/gi, group: 2 },
  { cls: "token", re: /(\bauthorization["']?\s*[:=]\s*["']?)([^\r\n"']+)/gi, group: 2 },
  { cls: "token", re: /(\bbearer\s+)([A-Za-z0-9._~+/=-]{8,})/gi, group: 2 },
  {
    cls: "token",
    re: /(\b(?:[a-z_]*token|api[_-]?key|x-api-key)["']?\s*[:=]\s*["']?)([^\s"',;{}[\]]{1,})/gi,
    group: 2,
  },
];

function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const k of keys) out[k] = 0;
  return out;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

const B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** Lower-case hex of a standard base64 string, or null if it is not one (UAPI spells WireGuard keys in hex). */
export function base64ToHex(b64: string): string | null {
  const s = b64.replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]+$/.test(s) || s.length % 4 === 1) return null;
  let bits = 0;
  let acc = 0;
  let hex = "";
  for (const ch of s) {
    acc = (acc << 6) | B64_ALPHABET.indexOf(ch);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      hex += ((acc >> bits) & 0xff).toString(16).padStart(2, "0");
    }
  }
  return hex;
}

// ---- IP addresses ----

function ipv4Octets(s: string): number[] | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

/** True for an IPv4 address on the public internet, i.e. one that can identify a person or a site. */
export function isPublicIpv4(s: string): boolean {
  const o = ipv4Octets(s);
  if (o === null) return false;
  const [a = 0, b = 0, c = 0] = o;
  if (a === 0 || a === 10 || a === 127 || a >= 224) return false; // this-network, private, loopback, multicast + reserved
  if (a === 100 && b >= 64 && b <= 127) return false; // RFC 6598 shared (CGNAT)
  if (a === 169 && b === 254) return false; // link-local
  if (a === 172 && b >= 16 && b <= 31) return false; // private
  if (a === 192 && b === 168) return false; // private
  if (a === 192 && b === 0 && (c === 0 || c === 2)) return false; // IETF protocol assignments, TEST-NET-1
  if (a === 198 && (b === 18 || b === 19)) return false; // RFC 2544 benchmarking (the lab)
  if (a === 198 && b === 51 && c === 100) return false; // TEST-NET-2
  if (a === 203 && b === 0 && c === 113) return false; // TEST-NET-3
  return true;
}

/** Expands an IPv6 address to 8 groups, or null if it is not one. */
function ipv6Groups(s: string): number[] | null {
  if (!/^[0-9a-fA-F:]+$/.test(s) || s.length < 2) return null;
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const parse = (h: string): number[] | null => {
    if (h === "") return [];
    const gs = h.split(":");
    const out: number[] = [];
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0] ?? "");
  const tail = halves.length === 2 ? parse(halves[1] ?? "") : [];
  if (head === null || tail === null) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  if (head.length + tail.length > 7) return null;
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/** True for a global unicast IPv6 address (2000::/3) outside the documentation prefixes. */
export function isPublicIpv6(s: string): boolean {
  const g = ipv6Groups(s);
  if (g === null) return false;
  const [g0 = 0, g1 = 0] = g;
  if ((g0 & 0xe000) !== 0x2000) return false;
  if (g0 === 0x2001 && g1 === 0x0db8) return false; // RFC 3849 documentation
  if (g0 === 0x3fff && g1 <= 0x0fff) return false; // RFC 9637 documentation
  return true;
}

const IPV4_IN_TEXT = /(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)/g;
const IPV6_IN_TEXT = /(?<![0-9A-Za-z:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}(?![0-9A-Za-z:])/g;

export class Redactor {
  readonly #known: { value: string; re: RegExp }[];
  readonly #userWords: RegExp | null;
  readonly #removed = zeroCounts(REMOVED_CLASSES);
  readonly #pseudo = zeroCounts(PSEUDONYM_CLASSES);
  readonly #tokens: Record<"user" | "ip", Map<string, string>> = { user: new Map(), ip: new Map() };

  constructor(opts: RedactorOptions = {}) {
    const known = new Set<string>();
    const short = new Set<string>();
    for (const raw of opts.knownSecrets ?? []) {
      const v = raw.trim();
      if (v.length === 0) continue;
      if (v.length < MIN_KNOWN_SECRET_LENGTH) {
        short.add(v);
        continue;
      }
      known.add(v);
      // A WireGuard key is read in base64 but crosses UAPI in hex; a JSON writer escapes slashes and quotes.
      const hex = /^[A-Za-z0-9+/]{43}=$/.test(v) ? base64ToHex(v) : null;
      if (hex !== null) known.add(hex);
      const json = JSON.stringify(v).slice(1, -1);
      if (json !== v) known.add(json);
      // Multi-line secrets (PEM keys) also go line by line, in case only a part of one is printed.
      for (const line of v.split(/\r?\n/)) if (line.trim().length >= 16) known.add(line.trim());
    }
    // Longest first, so a value containing a shorter secret is removed whole.
    this.#known = [
      ...[...known]
        .sort((a, b) => b.length - a.length)
        .map((value) => ({ value, re: new RegExp(escapeRe(value), "gi") })),
      ...[...short]
        .sort((a, b) => b.length - a.length)
        .map((value) => ({ value, re: new RegExp(`(?<![A-Za-z0-9])${escapeRe(value)}(?![A-Za-z0-9])`, "g") })),
    ];
    const users = [
      ...new Set(
        (opts.userNames ?? [])
          .map((u) => u.trim())
          .filter((u) => u.length >= 2 && !SYSTEM_USERS.has(u) && /^[A-Za-z0-9._@-]+$/.test(u)),
      ),
    ];
    users.sort((a, b) => b.length - a.length);
    this.#userWords =
      users.length === 0
        ? null
        : new RegExp(`(?<![A-Za-z0-9_-])(${users.map(escapeRe).join("|")})(?![A-Za-z0-9_-])`, "g");
  }

  /** The pseudonym of a value in a class: "user-3", "ip-1". Stable within this Redactor (one bundle). */
  #token(kind: "user" | "ip", value: string): string {
    const map = this.#tokens[kind];
    let t = map.get(value);
    if (t === undefined) {
      t = `${kind}-${map.size + 1}`;
      map.set(value, t);
    }
    return t;
  }

  #userToken(name: string): string {
    return name === "root" ? "user-root" : this.#token("user", name);
  }

  /** Redacts one text: secrets removed first (they may contain anything), then pseudonyms. */
  text(input: string): string {
    let s = redactUrlCredentials(input, () => {
      this.#removed.token += 1;
    });
    for (const k of this.#known) {
      s = s.replace(k.re, () => {
        this.#removed["known-secret"] += 1;
        return "[removed:known-secret]";
      });
    }
    for (const rule of RULES) {
      s = s.replace(rule.re, (...m: unknown[]) => {
        const whole = String(m[0]);
        if (rule.group === undefined) {
          this.#removed[rule.cls] += 1;
          return `[removed:${rule.cls}]`;
        }
        const value = String(m[rule.group]);
        if (value.startsWith("[removed:") || value === "[redacted]") return whole;
        this.#removed[rule.cls] += 1;
        const prefix = rule.group === 2 ? String(m[1]) : "";
        return `${prefix}[removed:${rule.cls}]`;
      });
    }
    s = s.replace(/\/home\/([A-Za-z0-9._-]+)|\/root(?=\/|\b)/g, (whole: string, user: string | undefined) => {
      if (user?.startsWith("user-") === true) return whole;
      this.#pseudo["home-path"] += 1;
      return `/home/${this.#userToken(user ?? "root")}`;
    });
    if (this.#userWords !== null) {
      s = s.replace(this.#userWords, (name: string) => {
        this.#pseudo["user-name"] += 1;
        return this.#userToken(name);
      });
    }
    s = s.replace(IPV4_IN_TEXT, (ip: string) => {
      if (!isPublicIpv4(ip)) return ip;
      this.#pseudo["public-ip"] += 1;
      return this.#token("ip", ip);
    });
    s = s.replace(IPV6_IN_TEXT, (ip: string) => {
      if (!isPublicIpv6(ip)) return ip;
      this.#pseudo["public-ip"] += 1;
      return this.#token("ip", ip.toLowerCase());
    });
    return s;
  }

  /**
   * Redacts a JSON-shaped value: fields named like secrets lose their value (a SecretRef, which only says where a
   * secret lives, is kept), every string is redacted as text, and keys are redacted too (they can hold paths).
   */
  json(value: unknown, depth = 0): unknown {
    if (depth > 64) return "[removed:too-deep]";
    if (typeof value === "string") return this.text(value);
    if (value === null || typeof value !== "object") return value;
    if (Array.isArray(value)) return value.map((v) => this.json(v, depth + 1));
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const key = this.text(k);
      if (
        SECRET_FIELD.test(k) &&
        !PUBLIC_FIELD.test(k) &&
        !isSecretRef(v) &&
        typeof v !== "boolean" &&
        v !== null &&
        v !== "[redacted]" &&
        !(typeof v === "string" && v.startsWith("[removed:"))
      ) {
        this.#removed["secret-field"] += 1;
        out[key] = "[removed:secret-field]";
        continue;
      }
      out[key] = this.json(v, depth + 1);
    }
    return out;
  }

  report(): RedactionReport {
    return {
      removed: { ...this.#removed },
      pseudonymised: { ...this.#pseudo },
      distinct: {
        "user-name": this.#tokens.user.size,
        "home-path": this.#tokens.user.size,
        "public-ip": this.#tokens.ip.size,
      },
    };
  }
}

// ---- URLs ----

/** A URL in free text: scheme, "://", then everything up to white space, a quote or an angle bracket. */
const URL_IN_TEXT = /\b[A-Za-z][A-Za-z0-9+.-]{0,31}:\/\/[^\s"'<>`]+/g;
/**
 * Query parameters that carry credentials: signed-URL signatures and credentials (S3's X-Amz-*, GCS's X-Goog-*,
 * Azure SAS's sig), tokens, keys, passwords, OAuth codes. Matched on the whole name, case-insensitively.
 */
const SECRET_QUERY_PARAM =
  /^(x-amz-(signature|credential|security-token)|x-goog-(signature|credential)|sig|signature|.*token|.*secret|(api|access|private|client)?[_-]?key|apikey|auth|authorization|pass(word)?|pwd|code|credentials?|session(id)?|sid)$/i;

/** One URL with its user info and secret query values replaced by "[redacted]"; `onHit` counts replacements. */
function redactOneUrl(url: string, onHit: () => void): string {
  let out = url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#@]*)@/, (_whole, scheme: string) => {
    onHit();
    return `${scheme}[redacted]@`;
  });
  const q = out.search(/[?#]/);
  if (q < 0) return out;
  const head = out.slice(0, q);
  const tail = out
    .slice(q)
    .replace(/([?&#;])([^=&#;]+)=([^&#;]*)/g, (whole, sep: string, name: string, value: string) => {
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // a malformed escape: judge the name as written
      }
      if (!SECRET_QUERY_PARAM.test(decoded) || value === "" || value === "[redacted]") return whole;
      onHit();
      return `${sep}${name}=[redacted]`;
    });
  out = head + tail;
  return out;
}

/**
 * Removes credentials from every URL in `text`: user info ("https://user:pass@host" becomes
 * "https://[redacted]@host") and the values of query parameters that carry them (X-Amz-Signature, sig, token,
 * key, ...). Used for logs, status, telemetry and bundles alike. `onHit` is called once per replacement.
 */
export function redactUrlCredentials(text: string, onHit: () => void = () => undefined): string {
  if (!text.includes("://")) return text;
  return text.replace(URL_IN_TEXT, (url) => redactOneUrl(url, onHit));
}

/**
 * A JSON-shaped value with redactUrlCredentials applied to every string in it (keys included), for what crosses a
 * boundary as data: control replies and events (status shows endpoints and errors), telemetry records. Values
 * without a URL are returned as they are; past `MAX_URL_SCRUB_DEPTH` levels a value is replaced, not walked.
 */
export function redactUrlsDeep(value: unknown, depth = 0): unknown {
  if (typeof value === "string") return redactUrlCredentials(value);
  if (value === null || typeof value !== "object") return value;
  if (depth > MAX_URL_SCRUB_DEPTH) return "[removed:too-deep]";
  if (Array.isArray(value)) return value.map((v) => redactUrlsDeep(v, depth + 1));
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return value; // a Secret prints as [redacted]
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>))
    out[redactUrlCredentials(k)] = redactUrlsDeep(v, depth + 1);
  return out;
}
/** Control replies and telemetry records are a few levels deep; 64 is far past them and bounds the walk. */
const MAX_URL_SCRUB_DEPTH = 64;

/** `{file}` or `{env}` alone: where a secret lives, not the secret. */
function isSecretRef(v: unknown): boolean {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const keys = Object.keys(v);
  return (
    keys.length === 1 &&
    (keys[0] === "file" || keys[0] === "env") &&
    typeof (v as Record<string, unknown>)[keys[0]] === "string"
  );
}

/** Environment variable names whose values are treated as secrets. */
export const SECRET_ENV_NAME = /(key|secret|pass|pwd|token|cookie|psk|auth|credential|session)/i;

/** The values of secret-looking variables of an environment (to pass as knownSecrets). */
export function secretEnvValues(env: Readonly<Record<string, string | undefined>>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined && SECRET_ENV_NAME.test(k)) out.push(v);
  return out;
}
