/**
 * Finds and probes the gateways a race may use: the configured gateways, merged with what DNS (SRV, A and
 * AAAA) and the optional portal say about them, then a TCP/TLS and UDP reachability probe of each from outside
 * the tunnel, over both address families when a gateway has both.
 *
 * Trust: the configuration is the only source of pinned identities (WireGuard key, IKE id, TLS pin), so a
 * gateway that only DNS or the portal knows cannot be used; it is left out of the candidates and listed in
 * `unpinned` (and as a problem) for diagnostics. For a configured gateway, DNS and then the portal may fill in a
 * missing address; configured values win otherwise, and kinds come only from the configuration (the same
 * policy as main/core/connection/candidates.ts). A configured address (either family) pins the gateway; a
 * resolved one brings both families, A and AAAA, asked side by side. A failing DNS server or portal degrades to
 * what is known and is reported; discovery never throws.
 *
 * Addresses from the network are judged before use (main/core/net/address-guard.ts, through opts.guard): a gateway
 * address becomes a kill-switch allowance and a throw out of the protected table, so one that is special use
 * (loopback, link-local, multicast, ...), inside a protected network or inside the device's own networks is
 * refused, reported as a problem with `refused` set, and the next acceptable answer (if any) is used instead. The
 * portal is fetched over https only, its certificate verified against the system's CAs or the configured CA file,
 * or its public key pinned; redirects are not followed.
 *
 * Address family (the policy itself is main/core/connection/address-family.ts): before any probe a dual-stack
 * candidate's `address` is its IPv4 one; the probe then tries both addresses at once and reports the chosen one
 * in `probe.address` (IPv6 when it answers and IPv4 is not clearly faster). Fast fallback: as soon as one family
 * has answered and finished, the other gets FAMILY_GRACE_MS (or as long again as the first took) and is then
 * abandoned, so a broken family costs tens of milliseconds, not the probe timeout.
 *
 * What a probe can tell from Node without privileges:
 *  - TCP 443: connect time (one round trip) and a TLS handshake (identity is not checked here: the engine pins
 *    it later). A completed handshake makes anyconnect-tls "yes"; a refusal, a failed handshake or silence "no".
 *  - UDP (WireGuard, IKE, DTLS): servers stay silent to a junk datagram, so silence proves nothing and the kind
 *    is "unknown". Only an ICMP error (port or host unreachable), which Linux reports on a connected UDP
 *    socket as ECONNREFUSED/EHOSTUNREACH, turns it into "no". anyconnect-dtls also needs TLS, so TLS "no" is
 *    DTLS "no". Proving a UDP protocol "yes" needs its real handshake, which is the race's job.
 */
import { connect as netConnect, isIP, type Socket as NetSocket } from "node:net";
import { connect as tlsConnect, TLSSocket } from "node:tls";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { Readable } from "node:stream";
import { createSocket } from "node:dgram";
import { Resolver } from "node:dns/promises";
import { z } from "zod";
import { Hostname, IpAddress, type DetourConfig, type GatewayConfig } from "../core/config/schema.ts";
import { candidateAddresses, chooseFamily, unprobedAddress } from "../core/connection/address-family.ts";
import {
  LEG_KINDS,
  type Candidate,
  type CandidateAddresses,
  type CandidateProbe,
  type CandidateSource,
  type FamilyProbe,
  type LegKind,
} from "../core/connection/types.ts";
import { canonicalIp, ipFamily } from "../core/ip-address.ts";
import { gatewayAddressRefusal } from "../core/net/address-guard.ts";
import { BodyTooLargeError, readBoundedBody } from "../shared/bounded-body.ts";

// ---- timers and bounds ----

/** c-ares tries each query twice: one lost UDP datagram to the resolver must not lose the answer. */
const DNS_TRIES = 2;
/** Floor of c-ares' per-try timeout: a LAN resolver answers in a few ms, a distant one in well under 100 ms. */
const DNS_MIN_TRY_MS = 100;
/** The portal's answer is a short list of gateways; anything larger is not a portal answer. */
export const MAX_PORTAL_BYTES = 64 * 1024;
/** At most this many gateways are taken from the portal, so a broken portal cannot flood the race planner. */
const MAX_PORTAL_GATEWAYS = 256;
/**
 * After TCP got its answer (SYN-ACK or RST), a UDP probe waits this long, or one more such round trip if that is
 * longer, for an ICMP error: it was sent at the same moment, so its error would arrive about as fast.
 */
const UDP_REFUSAL_GRACE_MS = 50;
/**
 * Once one family's probe has answered and finished, the other family's probe runs on for this long, or as long
 * again as the first took if that is longer, then is abandoned: RFC 8305's spirit (it waits 50 ms for a late AAAA
 * answer); a family still silent by then could not have been the clearly faster one.
 */
const FAMILY_GRACE_MS = 50;

// ---- types ----

/** What discovery needs from a DNS resolver (node:dns/promises' Resolver, or a fake in tests). */
export interface DnsResolver {
  resolveSrv(name: string): Promise<{ name: string; port: number; priority: number; weight: number }[]>;
  resolve4(name: string): Promise<string[]>;
  resolve6(name: string): Promise<string[]>;
  /** Cancels every outstanding query (called at the deadline). */
  cancel(): void;
}

/** A GET of the portal: httpsGet (certificate verified or pinned) in production, injectable for tests. */
export type FetchLike = (
  url: string,
  init: { signal: AbortSignal; headers: Record<string, string> },
) => Promise<Response>;

/** How the portal's certificate is trusted: the system's CAs, a CA file's (PEM text), or pinned public keys. */
export interface PortalTrust {
  /** PEM CA certificates; the system's when absent. */
  ca?: string;
  /** SHA-256 of the server's SubjectPublicKeyInfo ("sha256/<base64>" or "pin-sha256:<base64>"); replaces the CA check. */
  pins?: readonly string[];
}

export interface DiscoveryProblem {
  source: "dns" | "portal";
  message: string;
  /** Set when an address was refused (main/core/net/address-guard.ts): which gateway, which address, why. */
  refused?: { gateway: string; address: string; reason: string };
}

/** A gateway that DNS or the portal names but the configuration does not pin: never raced, only reported. */
export interface UnpinnedGateway {
  hostname: string;
  name: string | null;
  /** Its IPv4 address when known, else its IPv6 one. */
  address: string | null;
  priority: number | null;
  /** The kinds its SRV records offer. */
  kinds: LegKind[];
  sources: CandidateSource[];
}

export interface DiscoveryResult {
  candidates: Candidate[];
  unpinned: UnpinnedGateway[];
  problems: DiscoveryProblem[];
}

export interface DiscoveryOptions {
  /** Bound on the whole discovery (DNS and portal run side by side). */
  timeoutMs: number;
  /** Defaults to a node:dns Resolver asking config.discovery.dns.servers (the system's when absent). */
  resolver?: DnsResolver;
  fetch?: FetchLike;
  /** Each problem as it is found (for the log); the same list is in DiscoveryResult.problems. */
  onProblem?: (p: DiscoveryProblem) => void;
  /**
   * Judges each address DNS or the portal gives (configured ones are trusted): a reason refuses it, and it is
   * then never a candidate's address, so never a kill-switch allowance. Without one, special-use addresses and
   * the protected networks are still refused (the local networks are the caller's to know).
   */
  guard?: (address: string) => string | null;
}

// ---- the portal document ----

export const PortalGateway = z.object({
  name: z.string().min(1).max(64),
  hostname: Hostname,
  address: IpAddress.optional(),
  priority: z.number().int().min(0).max(1000),
  region: z.string().min(1).max(64),
});
/** What the portal returns; unknown fields are ignored so the portal can grow. */
export const PortalDocument = z.object({ gateways: z.array(PortalGateway).max(MAX_PORTAL_GATEWAYS) });
export type PortalGateway = z.infer<typeof PortalGateway>;

// ---- configured gateways ----

/** The kinds a configured gateway offers and the device has an identity for, in LEG_KINDS order. */
export function configuredKinds(config: DetourConfig, gw: GatewayConfig): LegKind[] {
  const p = gw.protocols;
  const id = config.identity;
  const has: Record<LegKind, boolean> = {
    wireguard: p.wireguard !== undefined && id.wireguard !== undefined,
    ikev2: p.ikev2 !== undefined && id.ikev2 !== undefined,
    "anyconnect-tls": p.anyconnect !== undefined && id.anyconnect !== undefined,
    "anyconnect-dtls": p.anyconnect?.dtls === true && id.anyconnect !== undefined,
  };
  return LEG_KINDS.filter((k) => has[k]);
}

/** The candidates the configuration alone gives (what is known when DNS and the portal are unreachable). */
export function configuredCandidates(config: DetourConfig): Candidate[] {
  return config.gateways.map((g) => ({
    name: g.name,
    hostname: normalizeHost(g.hostname),
    address: g.address === undefined ? null : canonicalIp(g.address),
    priority: g.priority,
    region: g.region,
    kinds: configuredKinds(config, g),
    sources: ["config"],
    probe: null,
  }));
}

/** SRV owner name to the kinds it announces: `_detour-<protocol>._<transport>.<domain>`. */
export function kindsOfSrvName(name: string): LegKind[] | null {
  const service = /^_detour-(wireguard|ikev2|anyconnect)\._(udp|tcp)\./i.exec(name)?.[1]?.toLowerCase();
  if (service === "wireguard") return ["wireguard"];
  if (service === "ikev2") return ["ikev2"];
  if (service === "anyconnect") return ["anyconnect-tls", "anyconnect-dtls"];
  return null;
}

function normalizeHost(h: string): string {
  return h.toLowerCase().replace(/\.$/, "");
}

// ---- deadline ----

interface Deadline {
  readonly at: number;
  /** Resolves with undefined once the deadline passes. */
  readonly passed: Promise<undefined>;
  clear(): void;
}

function deadlineIn(ms: number, onPass?: () => void): Deadline {
  let timer: NodeJS.Timeout | undefined;
  const passed = new Promise<undefined>((resolve) => {
    timer = setTimeout(
      () => {
        onPass?.();
        resolve(undefined);
      },
      Math.max(0, ms),
    );
  });
  return {
    at: Date.now() + ms,
    passed,
    clear: () => {
      clearTimeout(timer);
    },
  };
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: string };

async function settleBy<T>(p: Promise<T>, d: Deadline): Promise<Settled<T>> {
  try {
    const v = await Promise.race([p, d.passed]);
    return v === undefined ? { ok: false, error: "timed out" } : { ok: true, value: v };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return { ok: false, error: err.code ?? err.message };
  }
}

// ---- DNS ----

/** A node:dns resolver with bounded tries; `servers` may carry a port ("127.0.0.1:5353") for tests. */
export function createResolver(servers: readonly string[] | undefined, timeoutMs: number): DnsResolver {
  const r = new Resolver({
    timeout: Math.max(DNS_MIN_TRY_MS, Math.floor(timeoutMs / (2 * DNS_TRIES - 1))),
    tries: DNS_TRIES,
  });
  if (servers !== undefined && servers.length > 0) r.setServers([...servers]);
  return r;
}

interface DnsFindings {
  /** hostname -> kinds and best (lowest) SRV priority */
  srv: Map<string, { kinds: Set<LegKind>; priority: number }>;
  /** hostname -> first A and first AAAA record (at least one of them) */
  addresses: Map<string, CandidateAddresses>;
}

async function dnsStage(
  config: DetourConfig,
  resolver: DnsResolver,
  d: Deadline,
  problem: (p: DiscoveryProblem) => void,
  guard: (address: string) => string | null,
): Promise<DnsFindings> {
  const nameOf = new Map(config.gateways.map((g) => [normalizeHost(g.hostname), g.name]));
  /** The first address of the family the guard accepts; each refused one is a problem. */
  const firstAccepted = (host: string, family: "ipv4" | "ipv6", found: string[]): string | undefined =>
    found
      .filter((a) => ipFamily(a) === family)
      .find((a) => {
        const reason = guard(a);
        if (reason === null) return true;
        const gateway = nameOf.get(host) ?? host;
        problem({
          source: "dns",
          message: `${gateway}: ${a} from DNS (${family === "ipv4" ? "A" : "AAAA"} ${host}) refused: ${reason}; not used`,
          refused: { gateway, address: canonicalIp(a), reason },
        });
        return false;
      });
  const srv = new Map<string, { kinds: Set<LegKind>; priority: number }>();
  const addresses = new Map<string, CandidateAddresses>();
  const asked = new Set<string>();
  // A and AAAA side by side: a name with only one of them is normal, a name with neither is a problem.
  const resolveA = async (host: string): Promise<void> => {
    if (asked.has(host)) return;
    asked.add(host);
    const [r4, r6] = await Promise.all([settleBy(resolver.resolve4(host), d), settleBy(resolver.resolve6(host), d)]);
    const v4 = r4.ok ? firstAccepted(host, "ipv4", r4.value) : undefined;
    const v6 = r6.ok ? firstAccepted(host, "ipv6", r6.value) : undefined;
    if (v4 !== undefined || v6 !== undefined)
      addresses.set(host, { ipv4: v4 ?? null, ipv6: v6 === undefined ? null : canonicalIp(v6) });
    else
      problem({
        source: "dns",
        message: `A ${host}: ${r4.ok ? "no address" : r4.error}; AAAA: ${r6.ok ? "no address" : r6.error}`,
      });
  };
  const srvNames = config.discovery.dns?.srv ?? [];
  const unaddressed = config.gateways.filter((g) => g.address === undefined).map((g) => normalizeHost(g.hostname));
  // Hosts whose A records change nothing: configured gateways with a pinned address.
  const wanted = new Set([
    ...unaddressed,
    ...config.gateways.filter((g) => g.address !== undefined).map((g) => normalizeHost(g.hostname)),
  ]);
  await Promise.all([
    ...srvNames.map(async (name) => {
      const kinds = kindsOfSrvName(name);
      if (kinds === null) {
        problem({
          source: "dns",
          message: `SRV ${name}: not a _detour-<wireguard|ikev2|anyconnect> service name; ignored`,
        });
        return;
      }
      const r = await settleBy(resolver.resolveSrv(name), d);
      if (!r.ok) {
        problem({ source: "dns", message: `SRV ${name}: ${r.error}` });
        return;
      }
      const targets: string[] = [];
      for (const rec of r.value) {
        const host = normalizeHost(rec.name);
        if (host === "") continue; // "." is RFC 2782's "service not available here"
        const entry = srv.get(host) ?? { kinds: new Set<LegKind>(), priority: rec.priority };
        for (const k of kinds) entry.kinds.add(k);
        entry.priority = Math.min(entry.priority, rec.priority);
        srv.set(host, entry);
        if (!wanted.has(host)) targets.push(host);
      }
      for (const t of targets) wanted.add(t);
      await Promise.all(targets.map(resolveA));
    }),
    ...unaddressed.map(resolveA),
  ]);
  return { srv, addresses };
}

// ---- portal ----

export type PortalResult = { ok: true; gateways: PortalGateway[] } | { ok: false; error: string };

/** GETs the portal's gateway list within `timeoutMs` and MAX_PORTAL_BYTES; failures come back as values. */
export async function fetchPortal(
  url: string,
  opts: { timeoutMs: number; fetch?: FetchLike; trust?: PortalTrust },
): Promise<PortalResult> {
  if (!url.startsWith("https://"))
    return { ok: false, error: "not an https URL: the portal is never fetched in clear" };
  const ac = new AbortController();
  const timer = setTimeout(() => {
    ac.abort(new Error(`no complete answer within ${opts.timeoutMs} ms`));
  }, opts.timeoutMs);
  const doFetch: FetchLike = opts.fetch ?? ((u, init) => httpsGet(u, { ...init, trust: opts.trust ?? {} }));
  try {
    const res = await doFetch(url, { signal: ac.signal, headers: { accept: "application/json" } });
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      // Redirects are not followed: one to http, or to a host the trust was not set up for, would be a downgrade.
      return {
        ok: false,
        error: `HTTP ${res.status}${res.status >= 300 && res.status < 400 ? " (redirects are not followed)" : ""}`,
      };
    }
    const text = (await readBoundedBody(res, MAX_PORTAL_BYTES)).toString("utf8");
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return { ok: false, error: "answer is not JSON" };
    }
    const parsed = PortalDocument.safeParse(json);
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      return {
        ok: false,
        error: `answer does not match the portal format: ${i === undefined ? "invalid" : `${i.path.map(String).join(".") || "(root)"}: ${i.message}`}`,
      };
    }
    return { ok: true, gateways: parsed.data.gateways };
  } catch (e) {
    if (e instanceof BodyTooLargeError) return { ok: false, error: `answer is ${e.message}` };
    const reason: unknown = ac.signal.aborted ? ac.signal.reason : e;
    // fetch says only "fetch failed"; the reason (ECONNREFUSED, a TLS error, ...) is in its cause.
    const c = (e as { cause?: { code?: string; message?: string } }).cause;
    const cause =
      c?.code !== undefined && c.message !== undefined ? `${c.code}: ${c.message}` : (c?.code ?? c?.message);
    return {
      ok: false,
      error: reason instanceof Error ? `${reason.message}${cause === undefined ? "" : ` (${cause})`}` : String(reason),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** The SHA-256 of a certificate's SubjectPublicKeyInfo, base64: what a pin names. */
export function spkiSha256(certDer: Buffer): string {
  const spki = new X509Certificate(certDer).publicKey.export({ type: "spki", format: "der" });
  return createHash("sha256").update(spki).digest("base64");
}

function pinValue(pin: string): string {
  return pin.replace(/^(pin-)?sha256[:/]/, "");
}

/**
 * GET over https with the server's certificate checked: by a pin when pins are given (the pin is the trust anchor,
 * as openconnect's), else against `trust.ca` or the system's CAs with the host name. The pin is checked as soon as
 * the handshake is done, so the answer of a server whose key matches no pin is never read.
 */
export function httpsGet(
  url: string,
  init: { signal: AbortSignal; headers: Record<string, string>; trust: PortalTrust },
): Promise<Response> {
  const pins = init.trust.pins?.map(pinValue);
  return new Promise<Response>((resolve, reject) => {
    const req = httpsRequest(url, {
      method: "GET",
      headers: init.headers,
      signal: init.signal,
      agent: false,
      ...(pins === undefined ? { rejectUnauthorized: true } : { rejectUnauthorized: false }),
      ...(init.trust.ca === undefined ? {} : { ca: init.trust.ca }),
    });
    /** Null when the peer's key matches a pin (or no pins are set), else why not. */
    const pinFailure = (sock: unknown): string | null => {
      if (pins === undefined) return null;
      if (!(sock instanceof TLSSocket)) return "the portal's connection is not TLS";
      const cert = sock.getPeerCertificate();
      if (Object.keys(cert).length === 0) return "the portal sent no certificate";
      const got = spkiSha256(cert.raw);
      return pins.includes(got) ? null : `the portal's public key (sha256/${got}) matches no configured pin`;
    };
    req.once("socket", (sock) => {
      sock.once("secureConnect", () => {
        const failure = pinFailure(sock);
        if (failure !== null) req.destroy(Object.assign(new Error(failure), { code: "ERR_PORTAL_PIN_MISMATCH" }));
      });
    });
    req.once("response", (res) => {
      const failure = pinFailure(res.socket);
      if (failure !== null) {
        res.destroy();
        reject(
          Object.assign(new Error("fetch failed"), {
            cause: Object.assign(new Error(failure), { code: "ERR_PORTAL_PIN_MISMATCH" }),
          }),
        );
        return;
      }
      const headers = new Headers();
      for (const [k, v] of Object.entries(res.headers))
        if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
      const status = res.statusCode ?? 0;
      resolve(
        new Response(status === 204 || status === 304 ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), {
          status,
          headers,
        }),
      );
    });
    req.once("error", (e) => {
      reject(Object.assign(new Error("fetch failed"), { cause: e }));
    });
    req.end();
  });
}

// ---- merge ----

const SOURCE_ORDER: readonly CandidateSource[] = ["config", "dns", "portal"];

/**
 * Discovers candidates and says what went wrong on the way. Bounded by opts.timeoutMs (plus a few ms);
 * never throws: with DNS and the portal both down it returns the configured gateways.
 */
export async function discover(config: DetourConfig, opts: DiscoveryOptions): Promise<DiscoveryResult> {
  const problems: DiscoveryProblem[] = [];
  const problem = (p: DiscoveryProblem): void => {
    problems.push(p);
    try {
      opts.onProblem?.(p);
    } catch {
      // a logging bug must not break discovery
    }
  };
  const resolver = opts.resolver ?? createResolver(config.discovery.dns?.servers, opts.timeoutMs);
  const d = deadlineIn(opts.timeoutMs, () => {
    resolver.cancel();
  });
  const url = config.discovery.portalUrl;
  const guard =
    opts.guard ??
    ((a: string) => gatewayAddressRefusal(a, { protectedNetworks: config.protectedRoutes, localNetworks: [] }));
  try {
    const [dns, portal] = await Promise.all([
      dnsStage(config, resolver, d, problem, guard),
      url === undefined
        ? Promise.resolve<PortalResult>({ ok: true, gateways: [] })
        : portalTrust(config).then((trust) =>
            "error" in trust
              ? { ok: false as const, error: trust.error }
              : fetchPortal(url, {
                  timeoutMs: opts.timeoutMs,
                  trust,
                  ...(opts.fetch === undefined ? {} : { fetch: opts.fetch }),
                }),
          ),
    ]);
    if (!portal.ok) problem({ source: "portal", message: `${url ?? "portal"}: ${portal.error}` });
    return merge(config, dns, portal.ok ? portal.gateways : [], problem, problems, guard);
  } finally {
    d.clear();
  }
}

/** The portal's trust from the configuration; a CA file that cannot be read fails the portal closed. */
function portalTrust(config: DetourConfig): Promise<PortalTrust | { error: string }> {
  const tls = config.discovery.portalTls;
  const trust: PortalTrust = tls?.pins === undefined ? {} : { pins: tls.pins };
  if (tls?.caFile === undefined) return Promise.resolve(trust);
  try {
    return Promise.resolve({ ...trust, ca: readFileSync(tls.caFile, "utf8") });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return Promise.resolve({ error: `discovery.portalTls.caFile ${tls.caFile}: ${err.code ?? err.message}` });
  }
}

/** The candidates only; problems go to opts.onProblem. */
export async function discoverCandidates(config: DetourConfig, opts: DiscoveryOptions): Promise<Candidate[]> {
  return (await discover(config, opts)).candidates;
}

function merge(
  config: DetourConfig,
  dns: DnsFindings,
  portal: PortalGateway[],
  problem: (p: DiscoveryProblem) => void,
  problems: DiscoveryProblem[],
  guard: (address: string) => string | null,
): DiscoveryResult {
  /** The portal's address for a gateway, or null when the guard refuses it (a problem says why). */
  const portalAccepted = (gateway: string, address: string | undefined): string | null => {
    if (address === undefined) return null;
    const reason = guard(address);
    if (reason === null) return canonicalIp(address);
    problem({
      source: "portal",
      message: `${gateway}: ${address} from the portal refused: ${reason}; not used`,
      refused: { gateway, address: canonicalIp(address), reason },
    });
    return null;
  };
  const candidates = configuredCandidates(config);
  const byHost = new Map(candidates.map((c) => [c.hostname, c]));
  const byName = new Map(candidates.map((c) => [c.name, c]));
  const addSource = (c: Candidate, s: CandidateSource): void => {
    if (!c.sources.includes(s)) c.sources.push(s);
  };
  const portalAddress = new Map<Candidate, string>();
  const unpinned = new Map<string, UnpinnedGateway>();
  const unpinnedOf = (hostname: string): UnpinnedGateway => {
    const u = unpinned.get(hostname) ?? { hostname, name: null, address: null, priority: null, kinds: [], sources: [] };
    unpinned.set(hostname, u);
    return u;
  };

  for (const [host, s] of dns.srv) {
    const c = byHost.get(host);
    if (c !== undefined) {
      addSource(c, "dns");
      continue;
    }
    const u = unpinnedOf(host);
    u.kinds = LEG_KINDS.filter((k) => s.kinds.has(k) || u.kinds.includes(k));
    u.priority = s.priority;
    const a = dns.addresses.get(host);
    u.address = a === undefined ? null : unprobedAddress(a);
    if (!u.sources.includes("dns")) u.sources.push("dns");
  }
  for (const p of portal) {
    const host = normalizeHost(p.hostname);
    const c = byName.get(p.name) ?? byHost.get(host);
    if (c !== undefined) {
      addSource(c, "portal");
      const accepted = portalAccepted(c.name, p.address);
      if (accepted !== null) portalAddress.set(c, accepted);
      continue;
    }
    const u = unpinnedOf(host);
    u.name = p.name;
    u.priority ??= p.priority;
    u.address ??= portalAccepted(host, p.address);
    if (!u.sources.includes("portal")) u.sources.push("portal");
  }
  // Address precedence: configured, then DNS (both families), then the portal's.
  for (const c of candidates) {
    if (c.address === null) {
      const fromDns = dns.addresses.get(c.hostname);
      const fromPortal = portalAddress.get(c);
      if (fromDns !== undefined) {
        c.address = unprobedAddress(fromDns);
        if (fromDns.ipv4 !== null && fromDns.ipv6 !== null) c.addresses = fromDns;
        addSource(c, "dns");
      } else if (fromPortal !== undefined) c.address = canonicalIp(fromPortal);
      else
        problem({
          source: "dns",
          message: `${c.name}: no address configured, from DNS or from the portal for ${c.hostname}`,
        });
    }
    c.sources = SOURCE_ORDER.filter((s) => c.sources.includes(s));
  }
  for (const u of unpinned.values()) {
    problem({
      source: u.sources.includes("portal") ? "portal" : "dns",
      message: `${u.hostname} is not in the configuration (no pinned identity); not used`,
    });
  }
  return { candidates, unpinned: [...unpinned.values()], problems };
}

// ---- probing ----

/** Ports probed per gateway; defaults are the protocols' standard ports. */
export interface GatewayPorts {
  anyconnect: number;
  wireguard: number;
  ikev2: number;
}

export const DEFAULT_PORTS: GatewayPorts = { anyconnect: 443, wireguard: 51820, ikev2: 500 };

/** The configured ports of every gateway, keyed by name, for probeCandidates. */
export function gatewayPorts(config: DetourConfig): Record<string, GatewayPorts> {
  return Object.fromEntries(
    config.gateways.map((g) => [
      g.name,
      {
        anyconnect: g.protocols.anyconnect?.port ?? DEFAULT_PORTS.anyconnect,
        wireguard: g.protocols.wireguard?.port ?? DEFAULT_PORTS.wireguard,
        ikev2: g.protocols.ikev2?.port ?? DEFAULT_PORTS.ikev2,
      },
    ]),
  );
}

export interface ProbeOptions {
  /** Bound on each candidate's probe; all candidates are probed at once. */
  timeoutMs: number;
  /** Per gateway name; DEFAULT_PORTS otherwise. */
  ports?: Record<string, GatewayPorts>;
  /** Per gateway name, the address in use now: the incumbent of the address-family choice (hysteresis). */
  incumbents?: Record<string, string>;
}

/** How the TCP + TLS probe of port 443 (or the configured AnyConnect port) ended. */
export type TlsOutcome = "handshake" | "refused" | "unreachable" | "tls-failed" | "timeout" | "error";

export interface TlsProbeResult {
  outcome: TlsOutcome;
  /** TCP connect time (SYN to SYN-ACK). */
  connectMs: number | null;
  /** Connect plus TLS handshake. */
  handshakeMs: number | null;
  /** Time to the first answer of any kind (SYN-ACK or RST); null after silence. */
  answeredMs: number | null;
  error: string | null;
}

/**
 * One TCP connect and TLS handshake, timed; identity is not checked (the engine pins it). An abort (the other
 * address family won) ends it at once as a timeout, keeping the connect time if TCP had answered.
 */
export function probeTls(
  address: string,
  port: number,
  servername: string | null,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<TlsProbeResult> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const since = (): number => Math.round((performance.now() - t0) * 10) / 10;
    let connectMs: number | null = null;
    let sock: NetSocket | null = null;
    let done = false;
    const finish = (
      outcome: TlsOutcome,
      handshakeMs: number | null,
      error: string | null,
      answered: number | null = connectMs,
    ): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock?.destroy();
      resolve({ outcome, connectMs, handshakeMs, answeredMs: answered, error });
    };
    const timer = setTimeout(() => {
      finish("timeout", null, `no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    signal?.addEventListener(
      "abort",
      () => {
        finish("timeout", null, "abandoned: the other address family answered first");
      },
      { once: true },
    );
    const tcp = netConnect({ host: address, port });
    sock = tcp;
    tcp.on("error", (e: NodeJS.ErrnoException) => {
      if (connectMs !== null) return; // after connect, the TLS socket reports
      const refused = e.code === "ECONNREFUSED";
      const unreachable = e.code === "EHOSTUNREACH" || e.code === "ENETUNREACH";
      finish(
        refused ? "refused" : unreachable ? "unreachable" : "error",
        null,
        e.code ?? e.message,
        refused || unreachable ? since() : null,
      );
    });
    tcp.once("connect", () => {
      connectMs = since();
      const tls = tlsConnect({
        socket: tcp,
        rejectUnauthorized: false,
        ...(servername === null || isIP(servername) !== 0 ? {} : { servername }),
      });
      sock = tls;
      tls.once("secureConnect", () => {
        finish("handshake", since(), null);
      });
      tls.on("error", (e: NodeJS.ErrnoException) => {
        finish("tls-failed", null, e.code ?? e.message);
      });
      tls.once("close", () => {
        finish("tls-failed", null, "closed during the handshake");
      });
    });
  });
}

export type UdpRefusal = "refused" | "silent" | "error";

/** An ICMP error or a missing route says the port cannot be reached from here; anything else says nothing. */
function refusal(e: unknown): UdpRefusal {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === "ECONNREFUSED" || code === "EHOSTUNREACH" || code === "ENETUNREACH" ? "refused" : "error";
}

/**
 * Sends one junk datagram (a single zero byte, which WireGuard, IKE and DTLS servers drop) from a connected
 * socket and listens for an ICMP error until `until` resolves.
 */
export function probeUdpRefusal(address: string, port: number, until: Promise<unknown>): Promise<UdpRefusal> {
  return new Promise((resolve) => {
    const s = createSocket(ipFamily(address) === "ipv6" ? "udp6" : "udp4");
    let done = false;
    const finish = (r: UdpRefusal): void => {
      if (done) return;
      done = true;
      try {
        s.close();
      } catch {
        // already closed
      }
      resolve(r);
    };
    s.on("error", (e: Error) => {
      finish(refusal(e));
    });
    s.on("message", () => undefined); // an answer is fine: not refused
    // A failed connect (no route to the address: an offline laptop, an IPv6 gateway on an IPv4-only network)
    // still calls back, with the error: a send on the unconnected socket would then throw out of the callback.
    s.connect(port, address, (err?: Error) => {
      if (err !== undefined) {
        finish(refusal(err));
        return;
      }
      if (done) return;
      try {
        s.send(Buffer.alloc(1), (e) => {
          if (e !== null) finish(refusal(e));
        });
      } catch (e) {
        finish(refusal(e));
      }
    });
    void until.then(() => {
      finish("silent");
    });
  });
}

/** One address's probe: the candidate's results as if it had only this address, and what it says of the family. */
interface AddressProbe {
  probe: CandidateProbe;
  family: FamilyProbe;
}

async function probeAddress(
  c: Candidate,
  address: string,
  ports: GatewayPorts,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<AddressProbe> {
  const at = Date.now();
  const reachable: CandidateProbe["reachable"] = {};
  const hard = deadlineIn(timeoutMs);
  let graceTimer: NodeJS.Timeout | undefined;
  const tlsP = probeTls(address, ports.anyconnect, c.hostname, timeoutMs, signal);
  const aborted = new Promise<void>((resolve) => {
    if (signal?.aborted === true) resolve();
    signal?.addEventListener(
      "abort",
      () => {
        resolve();
      },
      { once: true },
    );
  });
  // The UDP window closes a little after TCP got any answer, or at the deadline after silence (or on abort).
  const window = Promise.race([
    hard.passed,
    aborted,
    tlsP.then(
      (t) =>
        new Promise<void>((resolve) => {
          if (t.answeredMs === null) return;
          graceTimer = setTimeout(resolve, Math.max(UDP_REFUSAL_GRACE_MS, t.answeredMs));
        }),
    ),
  ]);
  const udpPort: Partial<Record<LegKind, number>> = {
    wireguard: ports.wireguard,
    ikev2: ports.ikev2,
    "anyconnect-dtls": ports.anyconnect,
  };
  const udpKinds = c.kinds.filter((k) => udpPort[k] !== undefined);
  try {
    const [tls, ...udp] = await Promise.all([
      tlsP,
      ...udpKinds.map((k) => probeUdpRefusal(address, udpPort[k] ?? 0, window)),
    ]);
    const tlsOk = tls.outcome === "handshake";
    for (const k of c.kinds) {
      if (k === "anyconnect-tls") reachable[k] = tlsOk ? "yes" : "no";
      else if (k === "anyconnect-dtls" && !tlsOk) reachable[k] = "no";
      else reachable[k] = udp[udpKinds.indexOf(k)] === "refused" ? "no" : "unknown";
    }
    const times = [tls.connectMs, tls.handshakeMs].filter((t): t is number => t !== null);
    // A SYN-ACK or a RST came from the gateway's host: this family's path works (an ICMP error is no answer).
    const works = tls.connectMs !== null || tls.outcome === "refused";
    return {
      probe: { at, latencyMs: times.length === 0 ? null : Math.min(...times), reachable, address, answered: works },
      family: {
        address,
        works,
        latencyMs: tls.connectMs ?? (tls.outcome === "refused" ? tls.answeredMs : null),
        usableKinds: c.kinds.filter((k) => reachable[k] !== "no").length,
      },
    };
  } finally {
    hard.clear();
    clearTimeout(graceTimer);
  }
}

/**
 * Probes a candidate over each address it has. With both families, both run at once; once one has answered and
 * finished, the other gets FAMILY_GRACE_MS (or as long again) before it is abandoned; then the family policy
 * picks, and the result is the chosen address's, with both families' outcomes alongside.
 */
async function probeOne(
  c: Candidate,
  ports: GatewayPorts,
  timeoutMs: number,
  incumbent: string | null,
): Promise<CandidateProbe> {
  const { ipv4, ipv6 } = candidateAddresses(c);
  if (ipv4 === null || ipv6 === null) {
    const only = ipv4 ?? ipv6;
    if (only === null) {
      const reachable: CandidateProbe["reachable"] = {};
      for (const k of c.kinds) reachable[k] = "unknown";
      return { at: Date.now(), latencyMs: null, reachable };
    }
    return (await probeAddress(c, only, ports, timeoutMs)).probe;
  }
  const t0 = performance.now();
  const stop = { ipv4: new AbortController(), ipv6: new AbortController() };
  const done: { ipv4?: AddressProbe; ipv6?: AddressProbe } = {};
  let grace: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    const settle = (family: "ipv4" | "ipv6", r: AddressProbe): void => {
      done[family] = r;
      if (done.ipv4 !== undefined && done.ipv6 !== undefined) {
        resolve();
        return;
      }
      if (r.family.works && grace === undefined) {
        const other = family === "ipv4" ? stop.ipv6 : stop.ipv4;
        grace = setTimeout(
          () => {
            other.abort();
          },
          Math.max(FAMILY_GRACE_MS, performance.now() - t0),
        );
      }
    };
    void probeAddress(c, ipv6, ports, timeoutMs, stop.ipv6.signal).then((r) => {
      settle("ipv6", r);
    });
    void probeAddress(c, ipv4, ports, timeoutMs, stop.ipv4.signal).then((r) => {
      settle("ipv4", r);
    });
  });
  clearTimeout(grace);
  const v6 = done.ipv6;
  const v4 = done.ipv4;
  if (v6 === undefined || v4 === undefined) throw new Error("both family probes settle before the choice"); // a bug
  const chosen = chooseFamily(v6.family, v4.family, incumbent) === "ipv6" ? v6 : v4;
  return {
    ...chosen.probe,
    families: { ipv6: v6.family, ipv4: v4.family },
    answered: v6.family.works || v4.family.works,
  };
}

/**
 * Probes every candidate at once from outside the tunnel; one CandidateProbe per candidate, same order.
 * Takes about one round trip when every gateway answers, and at most timeoutMs (plus a few ms) otherwise.
 */
export async function probeCandidates(candidates: readonly Candidate[], opts: ProbeOptions): Promise<CandidateProbe[]> {
  return Promise.all(
    candidates.map((c) =>
      probeOne(c, opts.ports?.[c.name] ?? DEFAULT_PORTS, opts.timeoutMs, opts.incumbents?.[c.name] ?? null),
    ),
  );
}

/** The candidate with a probe applied: its results, and the address the probe chose to connect to. */
export function withProbe(c: Candidate, probe: CandidateProbe): Candidate {
  return { ...c, probe, address: probe.address ?? c.address };
}
