/**
 * Detour's client configuration format: the gateways a device may use, how to reach and authenticate to each,
 * and which networks the tunnel protects. Pure schema (zod); the daemon, the CLI and the lab all derive from it.
 */
import { z } from "zod";

const ipv4Octet = "(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const ipv4Re = new RegExp(`^${ipv4Octet}(\\.${ipv4Octet}){3}$`);
const hostnameRe = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

export const Ipv4 = z.string().regex(ipv4Re, "expected an IPv4 address such as 198.18.1.2");
export const Ipv4Cidr = z
  .string()
  .refine((v) => {
    const [addr, len, ...rest] = v.split("/");
    if (rest.length > 0 || addr === undefined || len === undefined || !ipv4Re.test(addr)) return false;
    const n = Number(len);
    return /^\d{1,2}$/.test(len) && n >= 0 && n <= 32;
  }, "expected an IPv4 prefix such as 198.19.0.0/24");
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

/**
 * Where a secret comes from. Secrets are never written inline in the configuration, so the file can be
 * shown in diagnostics and logs without redaction of its own.
 */
export const SecretRef = z.union([
  z.object({ file: z.string().min(1).describe("absolute path of a file (mode 0600) holding the secret") }).strict(),
  z.object({ env: z.string().regex(/^[A-Z_][A-Z0-9_]*$/).describe("environment variable of detourd holding the secret") }).strict(),
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
    address: Ipv4.optional().describe("known address; when absent the hostname is resolved"),
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
    ikev2: z.object({ localId: z.string().min(1), psk: SecretRef }).strict().optional(),
    anyconnect: z.object({ username: z.string().min(1), password: SecretRef }).strict().optional(),
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
    portalUrl: z.url().optional(),
  })
  .strict();

export const ProbeTarget = z
  .object({
    address: Ipv4.describe("a host behind the gateways that echoes UDP"),
    port: Port.default(7),
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
    telemetry: z.object({ endpoint: z.url() }).strict().optional(),
  })
  .strict();

export type DetourConfig = z.infer<typeof DetourConfig>;
export type DetourConfigInput = z.input<typeof DetourConfig>;
export type GatewayConfig = z.infer<typeof Gateway>;
export type SecretRef = z.infer<typeof SecretRef>;

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
      path: i.path.length === 0 ? "(root)" : i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, ""),
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
