/**
 * Detour's client configuration format: the gateways a device may use, how to reach and authenticate to each,
 * and which networks the tunnel protects. Pure schema (zod); the daemon, the CLI and the lab all derive from it.
 */
import { z } from "zod";
import { LEG_KINDS } from "../connection/types.ts";
import { isIpv4, isIpv6 } from "../ip-address.ts";
import { LOCAL_NETWORK_ACCESS_MODES } from "../net/local-networks.ts";

const ipv4Octet = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const ipv4Re = new RegExp(`^${ipv4Octet}(\\.${ipv4Octet}){3}$`);
const hostnameRe = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

export const Ipv4 = z.string().regex(ipv4Re, "expected an IPv4 address such as 198.18.1.2");
export const Ipv4Cidr = z.string().refine((v) => {
  const [addr, len, ...rest] = v.split("/");
  if (rest.length > 0 || addr === undefined || len === undefined || !ipv4Re.test(addr)) return false;
  const n = Number(len);
  return /^\d{1,2}$/.test(len) && n >= 0 && n <= 32;
}, "expected an IPv4 prefix such as 198.19.0.0/24");
/**
 * A gateway's underlay address, either family. A union of zod's own formats, so the JSON Schema says
 * `format: ipv4 | ipv6` for editors; the refine keeps the core's parser the single judge (no zone ids).
 */
export const IpAddress = z
  .union([z.ipv4(), z.ipv6()], { error: "expected an IPv4 or IPv6 address such as 198.18.1.2 or 2001:db8:18:1::2" })
  .refine((v) => isIpv4(v) || isIpv6(v), "expected an IPv4 or IPv6 address such as 198.18.1.2 or 2001:db8:18:1::2");
export const Hostname = z.string().regex(hostnameRe, "expected a DNS hostname such as gw1.example.com");
export const Port = z.number().int().min(1).max(65535);

/** A WireGuard key: 32 bytes in standard base64, as `wg genkey` prints it. */
export const WireGuardKey = z
  .string()
  .regex(/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$/, "expected a 32-byte WireGuard key in base64 (44 characters)");

/** A TLS public-key pin as openconnect takes it. */
export const TlsPin = z
  .string()
  .regex(/^pin-sha256:[A-Za-z0-9+/]{43}=$/, "expected pin-sha256:<base64 of the SHA-256 of the server's public key>");

/** The SHA-256 of a server's SubjectPublicKeyInfo, as openconnect and HPKP spell it. */
export const SpkiPin = z
  .string()
  .regex(/^(pin-)?sha256[:/][A-Za-z0-9+/]{43}=$/, "expected sha256/<base64 of the SHA-256 of the server's public key>");

/**
 * Where a secret comes from. Secrets are never written inline in the configuration, so the file can be
 * shown in diagnostics and logs without redaction of its own.
 */
export const SecretRef = z.union([
  z.object({ file: z.string().min(1).describe("absolute path of a file (mode 0600) holding the secret") }).strict(),
  z
    .object({
      env: z
        .string()
        .regex(/^[A-Z_][A-Z0-9_]*$/)
        .describe("environment variable of detourd holding the secret"),
    })
    .strict(),
]);

export const WireGuardGateway = z
  .object({
    port: Port.default(51820),
    publicKey: WireGuardKey.describe("the gateway's public key: the pinned identity"),
    tunnelAddress: Ipv4Cidr.describe("this device's address inside the tunnel, e.g. 198.19.11.2/32"),
    persistentKeepaliveSec: z.number().int().min(0).max(3600).default(25),
  })
  .strict();

export const Ikev2Gateway = z
  .object({
    port: Port.default(500),
    natTraversalPort: Port.default(4500),
    remoteId: z.string().min(1).describe("the IKE identity the gateway must present: the pinned identity"),
    proposals: z.array(z.string().min(1)).min(1).default(["aes256-sha256-x25519"]),
    espProposals: z.array(z.string().min(1)).min(1).default(["aes128-sha256"]),
  })
  .strict();

export const AnyConnectGateway = z
  .object({
    port: Port.default(443),
    pin: TlsPin.describe("pin of the gateway's TLS public key: the pinned identity"),
    dtls: z.boolean().default(true).describe("whether DTLS (UDP) may be tried; TLS-only legs are raced regardless"),
  })
  .strict();

export const Gateway = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, "expected a short lowercase name such as gw1 or fra-1"),
    hostname: Hostname,
    address: IpAddress.optional().describe(
      "known address (IPv4 or IPv6); when absent the hostname is resolved (A and AAAA)",
    ),
    priority: z.number().int().min(0).max(1000).describe("lower is preferred"),
    region: z.string().min(1).max(64),
    protocols: z
      .object({
        wireguard: WireGuardGateway.optional(),
        ikev2: Ikev2Gateway.optional(),
        anyconnect: AnyConnectGateway.optional(),
      })
      .strict()
      .refine((p) => p.wireguard !== undefined || p.ikev2 !== undefined || p.anyconnect !== undefined, {
        message: "a gateway needs at least one protocol",
      }),
  })
  .strict();

export const Identity = z
  .object({
    wireguard: z.object({ privateKey: SecretRef }).strict().optional(),
    ikev2: z
      .object({ localId: z.string().min(1), psk: SecretRef })
      .strict()
      .optional(),
    anyconnect: z
      .object({ username: z.string().min(1), password: SecretRef })
      .strict()
      .optional(),
  })
  .strict();

export const Discovery = z
  .object({
    dns: z
      .object({
        servers: z.array(Ipv4).min(1).describe("resolvers to ask; the system's when absent").optional(),
        srv: z.array(Hostname.or(z.string().regex(/^_[a-z0-9-]+\._(udp|tcp)\..+$/i))).default([]),
      })
      .strict()
      .optional(),
    /**
     * The portal's answer names gateway addresses, which become kill-switch allowances: it is fetched over https
     * only, with the server's certificate verified against the system's CAs (or `portalTls.caFile`) or its public
     * key pinned (`portalTls.pins`).
     */
    portalUrl: z
      .url({ protocol: /^https$/, error: "expected an https URL: the portal is never fetched in clear" })
      .optional(),
    portalTls: z
      .object({
        caFile: z
          .string()
          .regex(/^\//, "expected an absolute path")
          .optional()
          .describe("PEM file of the CA that signs the portal's certificate; the system's CAs when absent"),
        pins: z
          .array(SpkiPin)
          .min(1)
          .optional()
          .describe("SHA-256 pins of the portal's public key: when set, a server whose key matches none is refused"),
      })
      .strict()
      .optional(),
  })
  .strict();

export const ProbeTarget = z
  .object({
    address: Ipv4.describe("a host behind the gateways that echoes UDP"),
    port: Port.default(7),
  })
  .strict();

/**
 * How legs are raced. The stagger is RFC 8305's Connection Attempt Delay: 250 ms recommended, never under
 * 100 ms (a leg gets a fair chance before the next competes for CPU and the gateway) nor over 2 s.
 */
export const RacePolicy = z
  .object({
    staggerMs: z.number().int().min(100).max(2000).default(250),
    /** A leg with no verdict by then counts as failed; WireGuard never reports failure by itself. */
    legDeadlineMs: z.number().int().min(500).max(60_000).default(5000),
    /**
     * Protocol order within a gateway. Transports interleave the way RFC 8305 interleaves address families:
     * WireGuard (UDP), then AnyConnect over TLS (TCP), then IKEv2 and DTLS (UDP again), so a network that drops
     * all UDP costs one stagger, not two, before a leg that can work starts; on a healthy network WireGuard has
     * answered long before the second leg would start.
     */
    order: z.array(z.enum(LEG_KINDS)).min(1).default(["wireguard", "anyconnect-tls", "ikev2", "anyconnect-dtls"]),
    /**
     * How many of the best-ranked gateways a race plans every protocol of from the start; every other gateway's
     * first protocol is raced after the best one's first two, and its others once those are spent
     * (core/connection/race.ts: planLegs, and MAX_LEGS_IN_FLIGHT for how many run at once).
     */
    maxGateways: z.number().int().min(1).max(16).default(3),
  })
  .strict();

/** How the connected tunnel is watched from inside, and when it counts as failed. */
export const HealthPolicy = z
  .object({
    /**
     * In-tunnel echo probes to `probe`. 25 ms gives 12 chances inside the default dead window for ~3 KB/s each
     * way: a lossy link must lose twelve in a row to look dead.
     */
    probeIntervalMs: z.number().int().min(10).max(5000).default(25),
    /**
     * The pace while no user traffic goes into the tunnel (core/connection/pace.ts): one echo every two seconds
     * keeps the path known for ~25 B/s instead of 40 echoes a second, and an idle daemon's wake-ups low; the first
     * user packet brings the fast pace back at once, and so does a slow probe left unanswered, before anything is
     * judged dead. Null: always at `probeIntervalMs`.
     */
    idleProbeIntervalMs: z.number().int().min(100).max(10_000).nullable().default(2000),
    /** A reply later than this counts as lost. */
    probeTimeoutMs: z.number().int().min(50).max(10_000).default(1000),
    /**
     * No reply at all for this long: the tunnel is dead. 300 ms keeps a failover's outage under half a second; with
     * 5 % loss each way (~10 % per round trip) twelve misses in a row happen ~1 in 1e12 probes. On a slow path the
     * window stretches to a multiple of the measured RTT (see health.ts), so queueing spikes are not deaths.
     */
    deadAfterMs: z.number().int().min(100).max(60_000).default(300),
    brownout: z
      .object({
        /** Loss above this over `windowMs`... */
        lossPct: z.number().min(1).max(100).default(25),
        /** ...or a median RTT above this (null: RTT alone never triggers)... */
        rttMs: z.number().int().min(1).max(60_000).nullable().default(null),
        windowMs: z.number().int().min(500).max(300_000).default(5000),
        /** ...held this long, while another candidate is healthy, moves the tunnel. */
        holdMs: z.number().int().min(0).max(300_000).default(3000),
      })
      .strict()
      .default({ lossPct: 25, rttMs: null, windowMs: 5000, holdMs: 3000 }),
  })
  .strict();

/**
 * The warm standby: a second tunnel, to another gateway, kept up and probed slowly so that a failover is a route
 * change instead of a race. "off" saves the second tunnel (a gateway licence, a little traffic) at the cost of a
 * slower failover.
 */
export const StandbyPolicy = z
  .object({
    mode: z.enum(["on", "off"]).default("on"),
    /** Probes through the standby: 250 ms keeps NAT and engine state warm for ~0.3 KB/s and proves the path. */
    probeIntervalMs: z.number().int().min(50).max(10_000).default(250),
    /**
     * The standby's pace while the tunnel is idle: every 4 s keeps NAT and engine state warm (a NAT keeps a UDP
     * mapping for 30 s or more) for ~12 B/s; it speeds up with the active tunnel's probes, so it is fresh again
     * long before a failover could be decided. Null: always at `probeIntervalMs`.
     */
    idleProbeIntervalMs: z.number().int().min(100).max(30_000).nullable().default(4000),
    /** The standby is trusted for a failover only if it answered this recently (three probe intervals). */
    freshMs: z.number().int().min(100).max(60_000).default(750),
  })
  .strict();

/** An internal URL whose reachability through the tunnel is measured (success rate and latency). */
export const ReachabilityTarget = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "expected a short lowercase name such as intranet"),
    url: z.url({ protocol: /^https?$/ }),
    /** One request every 15 s per target: a user-visible trend within a minute for a few requests a minute. */
    intervalMs: z.number().int().min(1000).max(3_600_000).default(15_000),
    timeoutMs: z.number().int().min(100).max(60_000).default(5000),
  })
  .strict();

/**
 * Where telemetry goes: OTLP/HTTP (protobuf) to `endpoint` (/v1/metrics and /v1/logs are appended), through
 * an on-disk spool so an outage of the collector loses nothing.
 */
export const Telemetry = z
  .object({
    endpoint: z.url({ protocol: /^https?$/ }),
    /** Bearer token of the organisation at the collector. */
    token: SecretRef.optional(),
    /** Metrics are exported every 10 s: fine enough for a latency chart, ~8 KB a minute per device. */
    intervalMs: z.number().int().min(1000).max(3_600_000).default(10_000),
    spool: z
      .object({
        /** 64 MiB holds about a week of ten-second exports; past it the oldest records go first. */
        maxBytes: z
          .number()
          .int()
          .min(64 * 1024)
          .max(4 * 1024 ** 3)
          .default(64 * 1024 * 1024),
        maxRecords: z.number().int().min(10).max(1_000_000).default(100_000),
      })
      .strict()
      .default({ maxBytes: 64 * 1024 * 1024, maxRecords: 100_000 }),
    reachability: z.array(ReachabilityTarget).max(16).default([]),
  })
  .strict();

/**
 * Diagnostic bundles (`detour diag`): where detourd writes them, how much log they carry, and an optional SFTP
 * drop they can be uploaded to (besides the collector, when telemetry is configured). The SFTP server's host key
 * is pinned by its SHA-256 fingerprint as `ssh-keygen -lf` prints it.
 */
export const Diagnostics = z
  .object({
    dir: z
      .string()
      .regex(/^\//, "expected an absolute path")
      .optional()
      .describe("where bundles are written; <state-dir>/diag when absent"),
    /** 4 MiB of log tail is about a day of a busy daemon's JSON lines, and keeps a bundle small enough to mail. */
    maxLogBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(256 * 1024 * 1024)
      .default(4 * 1024 * 1024),
    sftp: z
      .object({
        host: Hostname.or(Ipv4),
        port: Port.default(22),
        user: z.string().regex(/^[a-z_][a-z0-9_.-]{0,31}$/i, "expected a user name"),
        privateKey: SecretRef.describe("the client's private key (OpenSSH or PEM format)"),
        hostKeySha256: z
          .string()
          .regex(
            /^(SHA256:)?[A-Za-z0-9+/]{43}=?$/,
            "expected the host key fingerprint as ssh-keygen -lf prints it: SHA256:<43 base64 characters>",
          ),
        dir: z.string().min(1).describe("folder on the server the bundle is put into"),
      })
      .strict()
      .optional(),
  })
  .strict();

/**
 * Trusted network detection (as AnyConnect's): a rule names what the network hands out (its DNS domain and/or
 * resolvers, read from the underlay's resolv.conf) and a host on it that must answer over TLS with a pinned public
 * key. A name or a resolver alone is spoofable by any network, so the pinned TLS host is required: an impostor
 * handing out the same domain never counts as trusted. The check runs outside the tunnel, bounded by `timeoutMs`.
 */
export const TrustedNetworkRule = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "expected a short lowercase name such as office"),
    dnsDomains: z
      .array(Hostname)
      .max(16)
      .default([])
      .describe("the network's DNS domain (resolv.conf domain or search) must be one of these"),
    dnsServers: z
      .array(IpAddress)
      .max(16)
      .default([])
      .describe("one of the network's resolvers (resolv.conf nameserver) must be one of these"),
    tlsHost: z
      .object({
        address: IpAddress.describe("a host on the trusted network, reached outside the tunnel"),
        port: Port.default(443),
        pins: z.array(SpkiPin).min(1).describe("SHA-256 pins of its public key: a key matching none is untrusted"),
      })
      .strict()
      .describe("required: without a pinned host a network could claim to be trusted by naming the domain"),
  })
  .strict()
  .refine((r) => r.dnsDomains.length > 0 || r.dnsServers.length > 0, {
    message: "a trusted network rule needs dnsDomains or dnsServers (what the network hands out)",
  });

export const TrustedNetworks = z
  .object({
    /** On a trusted network: stay disconnected (the default, as AnyConnect's), or connect anyway. */
    policy: z.enum(["disconnect", "connect"]).default("disconnect"),
    rules: z.array(TrustedNetworkRule).min(1),
    /**
     * The verdict is checked again this often (besides at start, before a connect and when the network's identity
     * changes): 30 s notices a network left without a change detourd saw, for one TLS handshake a minute.
     */
    recheckMs: z.number().int().min(1000).max(3_600_000).default(30_000),
    /** One TLS check's bound: a host on the local network answers in milliseconds; 2 s allows a slow Wi-Fi. */
    timeoutMs: z.number().int().min(200).max(30_000).default(2000),
  })
  .strict()
  .refine((t) => new Set(t.rules.map((r) => r.name)).size === t.rules.length, {
    message: "trusted network rule names must be unique",
  });

/** Retrying when every gateway failed: capped exponential backoff. */
export const RetryPolicy = z
  .object({
    initialMs: z.number().int().min(100).max(60_000).default(1000),
    maxMs: z.number().int().min(1000).max(600_000).default(30_000),
  })
  .strict();

/**
 * Captive networks (hotel and airport sign-in pages). The check URL is fetched outside the tunnel: a 204 (or an
 * empty 200) means the network lets traffic through; a redirect or other content means a portal is in the way.
 * While the user signs in, the kill switch lets DNS and HTTP(S) to the portal through for `exceptionMs` at most.
 */
export const CaptivePolicy = z
  .object({
    /** Plain http on purpose: a portal can only intercept (and so reveal itself on) an unencrypted request. */
    checkUrl: z
      .url()
      .refine((u) => u.startsWith("http://"), { message: "the captive check URL must be an http:// URL" })
      .default("http://connectivitycheck.gstatic.com/generate_204"),
    /** How long one sign-in exception stays open: five minutes is a typical portal's form plus a payment page. */
    exceptionMs: z.number().int().min(1000).max(3_600_000).default(300_000),
    /** Whether the sign-in exception may be opened at all (a locked-down fleet's policy may forbid it). */
    allowException: z.boolean().default(true),
  })
  .strict();

export const DetourConfig = z
  .object({
    version: z.literal(1),
    organisation: z.string().min(1).max(128),
    identity: Identity,
    gateways: z
      .array(Gateway)
      .min(1)
      .refine((gs) => new Set(gs.map((g) => g.name)).size === gs.length, { message: "gateway names must be unique" }),
    protectedRoutes: z.array(Ipv4Cidr).min(1).describe("networks that only ever travel inside the tunnel"),
    probe: ProbeTarget,
    discovery: Discovery.default({}),
    telemetry: Telemetry.optional(),
    /**
     * Resolvers while connected; when absent, the ones the winning gateway pushed (if any). `mode` says which
     * lookups go to them where systemd-resolved keeps per-link DNS: "all" (routing domain "~.", the default, as a
     * written resolv.conf does) or "split" (only `routingDomains` and `searchDomains`; the rest stays with the
     * network's resolvers). A plain resolv.conf cannot split: there every lookup goes to the tunnel's resolvers.
     */
    tunnelDns: z
      .object({
        servers: z.array(IpAddress).max(3, "glibc reads at most three nameservers").default([]),
        searchDomains: z.array(Hostname).max(6).default([]),
        mode: z.enum(["all", "split"]).default("all"),
        routingDomains: z.array(Hostname).max(32).default([]),
      })
      .strict()
      .refine(
        (d) => d.mode !== "split" || d.routingDomains.length + d.searchDomains.length > 0,
        'tunnelDns.mode "split" needs routingDomains or searchDomains: which names go to the tunnel\'s resolvers',
      )
      .optional(),
    race: RacePolicy.default({
      staggerMs: 250,
      legDeadlineMs: 5000,
      order: ["wireguard", "anyconnect-tls", "ikev2", "anyconnect-dtls"],
      maxGateways: 3,
    }),
    health: HealthPolicy.default({
      probeIntervalMs: 25,
      idleProbeIntervalMs: 2000,
      probeTimeoutMs: 1000,
      deadAfterMs: 300,
      brownout: { lossPct: 25, rttMs: null, windowMs: 5000, holdMs: 3000 },
    }),
    standby: StandbyPolicy.default({ mode: "on", probeIntervalMs: 250, idleProbeIntervalMs: 4000, freshMs: 750 }),
    retry: RetryPolicy.default({ initialMs: 1000, maxMs: 30_000 }),
    diagnostics: Diagnostics.optional(),
    /**
     * Which routes a gateway may push: a pushed prefix is taken only inside one of these (the protected networks
     * when absent). ["0.0.0.0/0"] lets gateways push anything, a full tunnel included; a push capturing a gateway's
     * own address is refused regardless.
     */
    pushedRoutes: z
      .object({
        allow: z
          .array(Ipv4Cidr)
          .min(1)
          .describe("prefixes a pushed route must lie inside; the protected networks when absent"),
      })
      .strict()
      .optional(),
    /** Block protected traffic outside the tunnel even while disconnected. */
    lockdown: z.boolean().default(false),
    /** Networks on which Detour stays disconnected (or connects, per their policy); none when absent. */
    trustedNetworks: TrustedNetworks.optional(),
    /** Whether the user may disconnect (false: always-on, the control socket refuses a disconnect). */
    allowDisconnect: z.boolean().default(true),
    captive: CaptivePolicy.default({
      checkUrl: "http://connectivitycheck.gstatic.com/generate_204",
      exceptionMs: 300_000,
      allowException: true,
    }),
    /**
     * Allow local network access: the device's directly connected networks (its LAN, container and VM bridges)
     * stay reachable outside the tunnel where a protected network covers them. "auto" (the default): on for a split
     * tunnel, off for a full tunnel and under lockdown; "on" and "off" decide regardless (core/net/local-networks.ts).
     */
    localNetworkAccess: z.enum(LOCAL_NETWORK_ACCESS_MODES).default("auto"),
  })
  .strict();

export type DetourConfig = z.infer<typeof DetourConfig>;
export type DetourConfigInput = z.input<typeof DetourConfig>;
export type GatewayConfig = z.infer<typeof Gateway>;
export type SecretRef = z.infer<typeof SecretRef>;
export type RacePolicy = z.infer<typeof RacePolicy>;
export type HealthPolicy = z.infer<typeof HealthPolicy>;
export type RetryPolicy = z.infer<typeof RetryPolicy>;
export type StandbyPolicy = z.infer<typeof StandbyPolicy>;
export type TelemetryConfig = z.infer<typeof Telemetry>;
export type DiagnosticsConfig = z.infer<typeof Diagnostics>;
export type TrustedNetworksConfig = z.infer<typeof TrustedNetworks>;
export type TrustedNetworkRuleConfig = z.infer<typeof TrustedNetworkRule>;
export type CaptiveConfig = z.infer<typeof CaptivePolicy>;

/** One problem in a configuration document: where it is and what was expected. */
export interface ConfigIssue {
  path: string;
  message: string;
}

export type ParseResult = { ok: true; config: DetourConfig } | { ok: false; issues: ConfigIssue[] };

/** Validates an already-decoded JSON value; every problem is reported with its path. */
export function parseConfig(value: unknown): ParseResult {
  const r = DetourConfig.safeParse(value);
  if (r.success) return { ok: true, config: r.data };
  return {
    ok: false,
    issues: r.error.issues.map((i) => ({
      path:
        i.path.length === 0
          ? "(root)"
          : i.path
              .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
              .join("")
              .replace(/^\./, ""),
      message: i.message,
    })),
  };
}

/** Decodes and validates configuration text; a JSON syntax error is reported like any other issue. */
export function parseConfigText(text: string): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (e) {
    return { ok: false, issues: [{ path: "(root)", message: `not valid JSON: ${(e as Error).message}` }] };
  }
  return parseConfig(value);
}
