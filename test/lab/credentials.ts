/**
 * Per-run lab credentials: WireGuard keys, IKE pre-shared key, the AnyConnect user's password and one TLS
 * certificate per gateway. Secret files are written with mode 0600; public parts are returned for the configs.
 */
import { createHash, generateKeyPairSync, randomBytes, X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runOk } from "./exec.ts";
import type { GatewayTopology } from "./topology.ts";

export interface WireGuardKeyPair {
  privateKey: string;
  publicKey: string;
}

function b64urlToB64(s: string): string {
  const b = s.replace(/-/g, "+").replace(/_/g, "/");
  return b + "=".repeat((4 - (b.length % 4)) % 4);
}

/** A Curve25519 key pair in the base64 form `wg` uses. */
export function wireGuardKeyPair(): WireGuardKeyPair {
  const { privateKey } = generateKeyPairSync("x25519");
  const jwk = privateKey.export({ format: "jwk" });
  if (jwk.d === undefined || jwk.x === undefined) throw new Error("x25519 key export lacks d or x");
  return { privateKey: b64urlToB64(jwk.d), publicKey: b64urlToB64(jwk.x) };
}

/** The pin openconnect's --servercert takes: SHA-256 of the certificate's SubjectPublicKeyInfo. */
export function tlsPin(certPem: string): string {
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return `pin-sha256:${createHash("sha256").update(spki).digest("base64")}`;
}

export function writeSecret(path: string, value: string): string {
  writeFileSync(path, value, { mode: 0o600 });
  return path;
}

export function randomSecret(bytes = 24): string {
  return randomBytes(bytes).toString("base64url");
}

export interface GatewayCert {
  certFile: string;
  keyFile: string;
  pin: string;
}

/** A self-signed ECDSA server certificate for one gateway, named by its hostname and underlay addresses. */
export async function gatewayCertificate(
  dir: string,
  gw: Pick<GatewayTopology, "hostname" | "address"> & { address6?: string },
  label = "server",
): Promise<GatewayCert> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyFile = join(dir, `${label}-key.pem`);
  const certFile = join(dir, `${label}-cert.pem`);
  const tmpl = join(dir, `${label}.tmpl`);
  writeFileSync(
    tmpl,
    [
      `cn = "${gw.hostname}"`,
      'organization = "Detour lab"',
      `dns_name = "${gw.hostname}"`,
      `ip_address = "${gw.address}"`,
      ...(gw.address6 === undefined ? [] : [`ip_address = "${gw.address6}"`]),
      "expiration_days = 30",
      "signing_key",
      "encryption_key",
      "tls_www_server",
      "",
    ].join("\n"),
  );
  await runOk("certtool", ["--generate-privkey", "--key-type=ecdsa", "--outfile", keyFile]);
  await runOk("certtool", [
    "--generate-self-signed",
    "--load-privkey",
    keyFile,
    "--template",
    tmpl,
    "--outfile",
    certFile,
  ]);
  return { certFile, keyFile, pin: tlsPin(readFileSync(certFile, "utf8")) };
}

/** An ocserv password file holding one user (ocpasswd reads the password twice on stdin). */
export async function ocservPasswordFile(path: string, user: string, password: string): Promise<void> {
  await runOk("ocpasswd", ["-c", path, user], { input: `${password}\n${password}\n` });
}
