/**
 * Codec for the records resources/engines/openconnect/handback.sh appends for each openconnect script call:
 * "detour-handback-1 <hex of NUL-terminated KEY=value entries>\n", decoded into validated, typed values.
 * Every value comes from the gateway, so every field is checked and anything else is a typed error.
 */
import { isIpv6 } from "../../../main/core/ip-address.ts";

export const HANDBACK_MAGIC = "detour-handback-1";
/** The env var that names the record file; the driver sets it in openconnect's (clean) environment. */
export const HANDBACK_ENV = "DETOUR_HANDBACK";

/** A record is a few hundred bytes; 64 split includes at most double that. More is not from our script. */
export const MAX_RECORD_CHARS = 32 * 1024;
/** The script caps split includes at this count; the codec holds it to the same bound. */
export const MAX_SPLIT_INCLUDES = 64;
const MAX_DNS_SERVERS = 16;
/** IPv4's minimum reassembly size up to jumbo frames: anything outside is a broken or hostile push. */
export const MIN_MTU = 576;
export const MAX_MTU = 9216;

export const HANDBACK_REASONS = ["pre-init", "connect", "disconnect", "attempt-reconnect", "reconnect"] as const;
export type HandbackReason = (typeof HANDBACK_REASONS)[number];

export interface Handback {
  reason: HandbackReason;
  tundev: string | null;
  /** The tunnel's inner IPv4 address. */
  address: string | null;
  netmaskLen: number | null;
  mtu: number | null;
  dns: string[];
  /** Networks the gateway routes for us, as CIDR prefixes. */
  splitIncludes: string[];
  /** One or more DNS search domains, space-separated as openconnect passes them. */
  defaultDomain: string | null;
  /** The underlay address openconnect connected to, either family. */
  gateway: string | null;
}

export type HandbackErrorCode = "malformed" | "truncated" | "oversized" | "invalid-field";

export class HandbackError extends Error {
  constructor(
    readonly code: HandbackErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "HandbackError";
  }
}

const KNOWN_KEYS = new Set([
  "reason",
  "TUNDEV",
  "INTERNAL_IP4_ADDRESS",
  "INTERNAL_IP4_NETMASK",
  "INTERNAL_IP4_NETMASKLEN",
  "INTERNAL_IP4_MTU",
  "INTERNAL_IP4_DNS",
  "CISCO_DEF_DOMAIN",
  "VPNGATEWAY",
  "CISCO_SPLIT_INC",
]);
const SPLIT_KEY_RE = /^CISCO_SPLIT_INC_(\d{1,2})_(ADDR|MASKLEN)$/;
const HEX_RE = /^(?:[0-9a-f]{2})*$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const DECIMAL_RE = /^(?:0|[1-9]\d{0,9})$/;
const DOMAIN_LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** Strict dotted quad: four decimal octets 0-255, no leading zeros (which some parsers read as octal). */
export function isIpv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^(?:0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}

export function isIfname(s: string): boolean {
  return IFNAME_RE.test(s) && s !== "." && s !== "..";
}

function ipv4ToInt(s: string): number {
  return s.split(".").reduce((acc, p) => acc * 256 + Number(p), 0);
}

function maskLenOf(netmask: string): number | null {
  const n = ipv4ToInt(netmask);
  for (let len = 0; len <= 32; len++) {
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    if (mask === n) return len;
  }
  return null;
}

function prefixLen(field: string, raw: string): number {
  if (!DECIMAL_RE.test(raw) || Number(raw) > 32)
    throw new HandbackError("invalid-field", `${field} is not a prefix length 0-32`, field);
  return Number(raw);
}

function ipv4(field: string, raw: string): string {
  if (!isIpv4(raw)) throw new HandbackError("invalid-field", `${field} is not an IPv4 address`, field);
  return raw;
}

/** Decodes one record line (without its newline). Throws a HandbackError; never anything else. */
export function decodeHandback(line: string): Handback {
  if (line.length > MAX_RECORD_CHARS)
    throw new HandbackError("oversized", `record of ${line.length} characters exceeds ${MAX_RECORD_CHARS}`);
  const sp = line.indexOf(" ");
  if (sp < 0 || line.slice(0, sp) !== HANDBACK_MAGIC)
    throw new HandbackError("malformed", `record does not start with "${HANDBACK_MAGIC} "`);
  const hex = line.slice(sp + 1);
  if (!HEX_RE.test(hex))
    throw new HandbackError(
      hex.length % 2 === 1 && /^[0-9a-f]*$/.test(hex) ? "truncated" : "malformed",
      "record body is not lowercase hex",
    );
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(hex, "hex"));
  } catch {
    throw new HandbackError("malformed", "record body is not UTF-8");
  }
  if (text === "") throw new HandbackError("truncated", "record is empty");
  if (!text.endsWith("\0")) throw new HandbackError("truncated", "last entry is not terminated");
  const vars = new Map<string, string>();
  for (const entry of text.slice(0, -1).split("\0")) {
    const eq = entry.indexOf("=");
    if (eq <= 0) throw new HandbackError("malformed", "entry without KEY=");
    const key = entry.slice(0, eq);
    if (!KNOWN_KEYS.has(key) && !SPLIT_KEY_RE.test(key))
      throw new HandbackError("malformed", `unknown key ${key.slice(0, 40)}`);
    if (vars.has(key)) throw new HandbackError("malformed", `duplicate key ${key}`, key);
    vars.set(key, entry.slice(eq + 1));
  }
  return fromVars(vars);
}

function fromVars(vars: Map<string, string>): Handback {
  const get = (k: string): string | null => {
    const v = vars.get(k);
    return v === undefined || v === "" ? null : v;
  };
  const reasonRaw = vars.get("reason");
  if (reasonRaw === undefined) throw new HandbackError("truncated", "record has no reason", "reason");
  const reason = HANDBACK_REASONS.find((r) => r === reasonRaw);
  if (reason === undefined) throw new HandbackError("invalid-field", "reason is not one openconnect uses", "reason");

  const tundevRaw = get("TUNDEV");
  if (tundevRaw !== null && !isIfname(tundevRaw))
    throw new HandbackError("invalid-field", "TUNDEV is not an interface name", "TUNDEV");
  const addrRaw = get("INTERNAL_IP4_ADDRESS");
  const address = addrRaw === null ? null : ipv4("INTERNAL_IP4_ADDRESS", addrRaw);

  const lenRaw = get("INTERNAL_IP4_NETMASKLEN");
  const maskRaw = get("INTERNAL_IP4_NETMASK");
  let netmaskLen = lenRaw === null ? null : prefixLen("INTERNAL_IP4_NETMASKLEN", lenRaw);
  if (maskRaw !== null) {
    const fromMask = maskLenOf(ipv4("INTERNAL_IP4_NETMASK", maskRaw));
    if (fromMask === null)
      throw new HandbackError("invalid-field", "INTERNAL_IP4_NETMASK is not a contiguous mask", "INTERNAL_IP4_NETMASK");
    if (netmaskLen !== null && netmaskLen !== fromMask)
      throw new HandbackError(
        "invalid-field",
        "INTERNAL_IP4_NETMASK and INTERNAL_IP4_NETMASKLEN disagree",
        "INTERNAL_IP4_NETMASKLEN",
      );
    netmaskLen = fromMask;
  }

  const mtuRaw = get("INTERNAL_IP4_MTU");
  let mtu: number | null = null;
  if (mtuRaw !== null) {
    if (!DECIMAL_RE.test(mtuRaw) || Number(mtuRaw) < MIN_MTU || Number(mtuRaw) > MAX_MTU) {
      throw new HandbackError("invalid-field", `INTERNAL_IP4_MTU is not in ${MIN_MTU}-${MAX_MTU}`, "INTERNAL_IP4_MTU");
    }
    mtu = Number(mtuRaw);
  }

  const dnsRaw = get("INTERNAL_IP4_DNS");
  const dns = dnsRaw === null ? [] : dnsRaw.split(" ").filter((s) => s !== "");
  if (dns.length > MAX_DNS_SERVERS)
    throw new HandbackError("invalid-field", `more than ${MAX_DNS_SERVERS} DNS servers`, "INTERNAL_IP4_DNS");
  for (const d of dns) ipv4("INTERNAL_IP4_DNS", d);

  const domainRaw = get("CISCO_DEF_DOMAIN");
  if (domainRaw !== null) {
    const domains = domainRaw.split(" ").filter((s) => s !== "");
    const valid =
      domainRaw.length <= 1024 &&
      domains.length > 0 &&
      domains.every(
        (d) =>
          d.length <= 253 &&
          d
            .replace(/\.$/, "")
            .split(".")
            .every((l) => DOMAIN_LABEL_RE.test(l)),
      );
    if (!valid)
      throw new HandbackError("invalid-field", "CISCO_DEF_DOMAIN is not a list of domain names", "CISCO_DEF_DOMAIN");
  }

  const gwRaw = get("VPNGATEWAY");
  // The underlay address: IPv6 when openconnect connected over IPv6 (the tunnel's inner address stays IPv4).
  const gateway = gwRaw === null ? null : isIpv6(gwRaw) ? gwRaw : ipv4("VPNGATEWAY", gwRaw);

  const countRaw = get("CISCO_SPLIT_INC");
  let count = 0;
  if (countRaw !== null) {
    if (!DECIMAL_RE.test(countRaw))
      throw new HandbackError("invalid-field", "CISCO_SPLIT_INC is not a count", "CISCO_SPLIT_INC");
    // The script hands back at most MAX_SPLIT_INCLUDES; a larger count means the rest were cut, on purpose.
    count = Math.min(Number(countRaw), MAX_SPLIT_INCLUDES);
  }
  const splitIncludes: string[] = [];
  for (let i = 0; i < count; i++) {
    const a = get(`CISCO_SPLIT_INC_${i}_ADDR`);
    const m = get(`CISCO_SPLIT_INC_${i}_MASKLEN`);
    if (a === null || m === null)
      throw new HandbackError("truncated", `split include ${i} of ${count} is missing`, `CISCO_SPLIT_INC_${i}_ADDR`);
    const addr = ipv4(`CISCO_SPLIT_INC_${i}_ADDR`, a);
    const len = prefixLen(`CISCO_SPLIT_INC_${i}_MASKLEN`, m);
    const hostBits = len === 32 ? 0 : ipv4ToInt(addr) % 2 ** (32 - len);
    if (hostBits !== 0)
      throw new HandbackError("invalid-field", `split include ${i} has host bits set`, `CISCO_SPLIT_INC_${i}_ADDR`);
    splitIncludes.push(`${addr}/${len}`);
  }
  for (const k of vars.keys()) {
    const m = SPLIT_KEY_RE.exec(k);
    if (m !== null && Number(m[1]) >= count)
      throw new HandbackError("malformed", `split include ${m[1]} beyond CISCO_SPLIT_INC`, k);
  }

  if (reason === "connect" && (tundevRaw === null || address === null)) {
    throw new HandbackError(
      "truncated",
      "connect record without TUNDEV or INTERNAL_IP4_ADDRESS",
      tundevRaw === null ? "TUNDEV" : "INTERNAL_IP4_ADDRESS",
    );
  }
  return { reason, tundev: tundevRaw, address, netmaskLen, mtu, dns, splitIncludes, defaultDomain: domainRaw, gateway };
}

/** Builds a record line the way handback.sh does (without the newline): for tests and fakes. */
export function encodeHandback(entries: readonly (readonly [string, string])[]): string {
  const body = entries.map(([k, v]) => `${k}=${v}\0`).join("");
  return `${HANDBACK_MAGIC} ${Buffer.from(body, "utf8").toString("hex")}`;
}

export type HandbackResult = { ok: true; record: Handback } | { ok: false; error: HandbackError };

/**
 * Splits the growing record file into lines, holding back a partial last line until its newline arrives;
 * a line that grows past MAX_RECORD_CHARS is reported once and skipped up to its newline.
 */
export class HandbackReader {
  #partial = "";
  #skipping = false;

  feed(chunk: string): HandbackResult[] {
    const out: HandbackResult[] = [];
    let rest = this.#partial + chunk;
    this.#partial = "";
    let nl = rest.indexOf("\n");
    while (nl >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (this.#skipping) {
        this.#skipping = false;
      } else {
        out.push(decodeSafely(line));
      }
      nl = rest.indexOf("\n");
    }
    if (this.#skipping) return out;
    if (rest.length > MAX_RECORD_CHARS) {
      out.push({
        ok: false,
        error: new HandbackError("oversized", `record longer than ${MAX_RECORD_CHARS} characters`),
      });
      this.#skipping = true;
    } else {
      this.#partial = rest;
    }
    return out;
  }

  /** True while a record has started but its newline has not arrived. */
  get pending(): boolean {
    return this.#partial !== "";
  }
}

function decodeSafely(line: string): HandbackResult {
  try {
    return { ok: true, record: decodeHandback(line) };
  } catch (e) {
    if (e instanceof HandbackError) return { ok: false, error: e };
    throw e;
  }
}
