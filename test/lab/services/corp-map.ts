/**
 * The corp server's pure half: its configuration (validated field by field, so a bad lab config names the field)
 * and the map from a client's tunnel address to the gateway and protocol it came through.
 */
import { TUNNEL_PROTOCOLS, type TunnelProtocol } from "../topology.ts";

/** An IPv4 prefix as numbers; `network` has no host bits set (validation rejects 198.19.11.5/24). */
export interface Ipv4Prefix {
  readonly text: string;
  readonly network: number;
  readonly length: number;
}

export interface SourceRule {
  readonly cidr: Ipv4Prefix;
  readonly gateway: string;
  readonly protocol: TunnelProtocol;
}

export interface CorpConfig {
  readonly httpAddress: string;
  /** 0 asks the kernel for a free port; the server's start log line reports the port it got. */
  readonly httpPort: number;
  readonly echoAddress: string;
  readonly echoPort: number;
  readonly sources: readonly SourceRule[];
}

/** Where a request came from, as the /whoami endpoint reports it. */
export interface SourceIdentity {
  readonly gateway: string | null;
  readonly protocol: TunnelProtocol | null;
}

export type Validated<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

const OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
const GATEWAY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const CONFIG_KEYS = ["httpAddress", "httpPort", "echoAddress", "echoPort", "sources"] as const;
const SOURCE_KEYS = ["cidr", "gateway", "protocol"] as const;

/** The address as an unsigned 32-bit number, or null if it is not a dotted-quad IPv4 address. */
export function parseIpv4(text: string): number | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0;
  for (const part of parts) {
    if (!OCTET.test(part)) return null;
    value = value * 256 + Number(part);
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join(".");
}

function maskOf(length: number): number {
  return length === 0 ? 0 : (0xffffffff << (32 - length)) >>> 0;
}

export function parseIpv4Prefix(text: string): Validated<Ipv4Prefix> {
  const [addr, len, ...rest] = text.split("/");
  const fail = (why: string): Validated<Ipv4Prefix> => ({ ok: false, error: `${why}, got ${JSON.stringify(text)}` });
  if (addr === undefined || len === undefined || rest.length > 0)
    return fail("expected an IPv4 prefix such as 198.19.11.0/24");
  const address = parseIpv4(addr);
  if (address === null || !/^\d{1,2}$/.test(len) || Number(len) > 32) {
    return fail("expected an IPv4 prefix such as 198.19.11.0/24");
  }
  const length = Number(len);
  const network = (address & maskOf(length)) >>> 0;
  if (network !== address) return fail(`host bits are set (did you mean ${formatIpv4(network)}/${length}?)`);
  return { ok: true, value: { text, network, length } };
}

export function prefixContains(prefix: Ipv4Prefix, address: number): boolean {
  return (address & maskOf(prefix.length)) >>> 0 === prefix.network;
}

/**
 * The IPv4 address a socket reports for its peer: a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
 * Returns null for anything that is not IPv4.
 */
export function peerIpv4(remoteAddress: string | undefined): string | null {
  if (remoteAddress === undefined) return null;
  const plain = remoteAddress.toLowerCase().startsWith("::ffff:") ? remoteAddress.slice(7) : remoteAddress;
  return parseIpv4(plain) === null ? null : plain;
}

/** The most specific rule containing the address (longest prefix wins), or nulls when none does. */
export function identifySource(sources: readonly SourceRule[], address: string | null): SourceIdentity {
  const value = address === null ? null : parseIpv4(address);
  let best: SourceRule | undefined;
  if (value !== null) {
    for (const rule of sources) {
      if (prefixContains(rule.cidr, value) && (best === undefined || rule.cidr.length > best.cidr.length)) best = rule;
    }
  }
  return best === undefined ? { gateway: null, protocol: null } : { gateway: best.gateway, protocol: best.protocol };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function unknownKey(record: Record<string, unknown>, allowed: readonly string[]): string | undefined {
  return Object.keys(record).find((k) => !allowed.includes(k));
}

class FieldError extends Error {
  constructor(
    readonly field: string,
    why: string,
  ) {
    super(`${field}: ${why}`);
  }
}

function shown(value: unknown): string {
  return value === undefined ? "nothing" : JSON.stringify(value);
}

function ipv4Field(record: Record<string, unknown>, field: string): string {
  const value = record[field];
  if (typeof value !== "string" || parseIpv4(value) === null) {
    throw new FieldError(field, `expected an IPv4 address such as 198.19.0.1, got ${shown(value)}`);
  }
  return value;
}

function portField(record: Record<string, unknown>, field: string): number {
  const value = record[field];
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 65535) {
    throw new FieldError(field, `expected a port number 0..65535 (0: any free port), got ${shown(value)}`);
  }
  return value;
}

function sourceRule(value: unknown, index: number): SourceRule {
  const at = `sources[${index}]`;
  if (!isRecord(value))
    throw new FieldError(at, `expected an object with cidr, gateway and protocol, got ${shown(value)}`);
  const extra = unknownKey(value, SOURCE_KEYS);
  if (extra !== undefined) throw new FieldError(`${at}.${extra}`, `unknown field (allowed: ${SOURCE_KEYS.join(", ")})`);
  const cidrText = value.cidr;
  if (typeof cidrText !== "string")
    throw new FieldError(`${at}.cidr`, `expected an IPv4 prefix such as 198.19.11.0/24, got ${shown(cidrText)}`);
  const cidr = parseIpv4Prefix(cidrText);
  if (!cidr.ok) throw new FieldError(`${at}.cidr`, cidr.error);
  const gateway = value.gateway;
  if (typeof gateway !== "string" || !GATEWAY_NAME.test(gateway)) {
    throw new FieldError(`${at}.gateway`, `expected a gateway name such as "gw1", got ${shown(gateway)}`);
  }
  const protocol = value.protocol;
  const known = TUNNEL_PROTOCOLS.find((p) => p === protocol);
  if (known === undefined) {
    throw new FieldError(`${at}.protocol`, `expected one of ${TUNNEL_PROTOCOLS.join(", ")}, got ${shown(protocol)}`);
  }
  return { cidr: cidr.value, gateway, protocol: known };
}

/** Checks a parsed JSON config; the error names the first bad field, e.g. `sources[1].cidr: ...`. */
export function validateCorpConfig(raw: unknown): Validated<CorpConfig> {
  try {
    if (!isRecord(raw)) throw new FieldError("config", `expected a JSON object, got ${shown(raw)}`);
    const extra = unknownKey(raw, CONFIG_KEYS);
    if (extra !== undefined) throw new FieldError(extra, `unknown field (allowed: ${CONFIG_KEYS.join(", ")})`);
    const httpAddress = ipv4Field(raw, "httpAddress");
    const httpPort = portField(raw, "httpPort");
    const echoAddress = ipv4Field(raw, "echoAddress");
    const echoPort = portField(raw, "echoPort");
    const list = raw.sources;
    if (!Array.isArray(list))
      throw new FieldError("sources", `expected an array of {cidr, gateway, protocol}, got ${shown(list)}`);
    const sources = list.map((entry: unknown, i) => sourceRule(entry, i));
    const seen = new Map<string, number>();
    sources.forEach((rule, i) => {
      const key = `${rule.cidr.network}/${rule.cidr.length}`;
      const first = seen.get(key);
      if (first !== undefined)
        throw new FieldError(`sources[${i}].cidr`, `${rule.cidr.text} is already mapped by sources[${first}]`);
      seen.set(key, i);
    });
    return { ok: true, value: { httpAddress, httpPort, echoAddress, echoPort, sources } };
  } catch (err) {
    if (err instanceof FieldError) return { ok: false, error: err.message };
    throw err;
  }
}
