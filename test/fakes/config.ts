/**
 * Client configurations for unit tests, built through parseConfig so a test runs on exactly what detourd would load:
 * by default two WireGuard gateways (gw1, gw2) in front of 198.19.0.0/24 with the probe at 198.19.0.1:7; a test
 * names only what it varies.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig, type DetourConfig, type DetourConfigInput } from "../../main/core/config/schema.ts";

type GatewayInput = DetourConfigInput["gateways"][number];

/** A WireGuard private key that parses; tests write it to a file because the configuration names one. */
export const TEST_WG_PRIVATE_KEY = "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=";
/** A gateway public key that parses; no handshake ever uses it. */
export const TEST_WG_PUBLIC_KEY = `${"A".repeat(43)}=`;

/** Writes TEST_WG_PRIVATE_KEY to `dir`/wg.key, readable by its owner only (as detourd requires), and returns the path. */
export function writeTestKey(dir: string): string {
  const keyFile = join(dir, "wg.key");
  writeFileSync(keyFile, `${TEST_WG_PRIVATE_KEY}\n`, { mode: 0o600 });
  return keyFile;
}

/**
 * Gateway n of the fake platform's world: gw<n> at 198.18.<n>.2, priority n, region eu, WireGuard only, with the
 * tunnel address 198.19.<n>1.2/32.
 */
export function wireguardGateway(n: number): GatewayInput {
  return {
    name: `gw${String(n)}`,
    hostname: `gw${String(n)}.vpn.example.com`,
    address: `198.18.${String(n)}.2`,
    priority: n,
    region: "eu",
    protocols: { wireguard: { publicKey: TEST_WG_PUBLIC_KEY, tunnelAddress: `198.19.${String(n)}1.2/32` } },
  };
}

export type TestConfigOptions = Partial<Omit<DetourConfigInput, "gateways">> & {
  /** The WireGuard private key file: identity becomes `{ wireguard: { privateKey: { file } } }` unless identity is given. */
  keyFile?: string;
  /** Each number n is wireguardGateway(n); anything else is taken as it is. Default [1, 2]. */
  gateways?: (number | GatewayInput)[];
};

/** A parsed configuration: the defaults above with `options` laid over them; one that does not parse throws. */
export function testConfig(options: TestConfigOptions = {}): DetourConfig {
  const { keyFile, gateways = [1, 2], ...rest } = options;
  const parsed = parseConfig({
    version: 1,
    organisation: "example",
    identity: keyFile === undefined ? {} : { wireguard: { privateKey: { file: keyFile } } },
    gateways: gateways.map((g) => (typeof g === "number" ? wireguardGateway(g) : g)),
    protectedRoutes: ["198.19.0.0/24"],
    probe: { address: "198.19.0.1", port: 7 },
    ...rest,
  });
  if (!parsed.ok) throw new Error(`test configuration does not parse: ${JSON.stringify(parsed.issues)}`);
  return parsed.config;
}
