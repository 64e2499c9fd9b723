/**
 * IT's offline tools for managed policies (node:crypto Ed25519): generate a signing key pair, sign a policy into
 * its envelope, and tell why a device would refuse a document. Private keys are read only to sign and never
 * printed. The daemon has its own copy of the key-id rule (main/agent/policy/keys.ts), since the CLI may not
 * import daemon code; test/policy/policy-tools.test.ts keeps the two in step.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  sign,
  verify,
  type KeyObject,
} from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfigText } from "../core/config/schema.ts";
import { ENVELOPE_FORMAT, type Envelope } from "../core/policy/document.ts";
import { layer } from "../core/policy/layers.ts";
import { verifyEnvelope, type SignatureCheck, type Verified } from "../core/policy/verify.ts";

/** 16 hex digits of the SHA-256 of the raw 32-byte Ed25519 public key. */
export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ format: "der", type: "spki" });
  return createHash("sha256")
    .update(der.subarray(der.length - 32))
    .digest("hex")
    .slice(0, 16);
}

/** Writes `<dir>/policy-signing.key` (PKCS#8 PEM, 0600) and `<dir>/<keyId>.pem` (SPKI PEM, 0644); refuses to overwrite. */
export function keygen(dir: string): { keyId: string; privatePath: string; publicPath: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const keyId = keyIdOf(publicKey);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const privatePath = join(dir, "policy-signing.key");
  const publicPath = join(dir, `${keyId}.pem`);
  if (existsSync(privatePath)) throw new Error(`${privatePath} exists; refusing to overwrite a signing key`);
  writeFileSync(privatePath, privateKey.export({ format: "pem", type: "pkcs8" }), { mode: 0o600, flag: "wx" });
  chmodSync(privatePath, 0o600);
  writeFileSync(publicPath, publicKey.export({ format: "pem", type: "spki" }), { mode: 0o644 });
  return { keyId, privatePath, publicPath };
}

/** Reads an Ed25519 private key; the error names the file, never its content. */
export function loadPrivateKey(path: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(readFileSync(path));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${path} is not a readable PEM private key${code === undefined ? "" : ` (${code})`}`);
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw new Error(
      `${path} holds a ${String(key.asymmetricKeyType)} key; policies are signed with Ed25519 (detour policy keygen)`,
    );
  return key;
}

/** Signs the exact bytes given; the envelope carries them in base64. */
export function signPolicy(policyBytes: Uint8Array, privateKey: KeyObject): Envelope {
  return {
    format: ENVELOPE_FORMAT,
    keyId: keyIdOf(createPublicKey(privateKey)),
    policy: Buffer.from(policyBytes).toString("base64"),
    signature: sign(null, policyBytes, privateKey).toString("base64"),
  };
}

/** The Ed25519 public keys (*.pem) in a folder by key id; unreadable files are listed, not fatal. */
export function loadPublicKeys(dir: string): { keys: Map<string, SignatureCheck>; problems: string[] } {
  const keys = new Map<string, SignatureCheck>();
  const problems: string[] = [];
  for (const name of readdirSync(dir)
    .filter((n) => n.endsWith(".pem"))
    .sort()) {
    try {
      const pub = createPublicKey(readFileSync(join(dir, name)));
      if (pub.asymmetricKeyType !== "ed25519") throw new Error(`a ${String(pub.asymmetricKeyType)} key`);
      keys.set(keyIdOf(pub), (m, s) => verify(null, m, pub, s));
    } catch (e) {
      problems.push(`${join(dir, name)}: not an Ed25519 public key (${(e as Error).message.slice(0, 100)})`);
    }
  }
  return { keys, problems };
}

/**
 * What a device would decide about the envelope in `file`: with `configPath`, also the organisation and whether
 * the settings fit that configuration; with `currentVersion`, the downgrade check.
 */
export function verifyFile(
  file: string,
  opts: { keysDir: string; configPath?: string; currentVersion?: number; now?: number },
): { verdict: Verified; problems: string[] } {
  const { keys, problems } = loadPublicKeys(opts.keysDir);
  let organisation: string | null = null;
  let check: Parameters<typeof verifyEnvelope>[1]["check"];
  if (opts.configPath !== undefined) {
    const parsed = parseConfigText(readFileSync(opts.configPath, "utf8"));
    if (!parsed.ok)
      throw new Error(
        `${opts.configPath} is not a valid configuration: ${parsed.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`,
      );
    organisation = parsed.config.organisation;
    const base = parsed.config;
    check = (doc) => {
      const r = layer(base, {}, doc);
      return r.ok ? null : r.rejection;
    };
  }
  const current = opts.currentVersion === undefined ? null : { version: opts.currentVersion, policyBase64: "" };
  const verdict = verifyEnvelope(readFileSync(file, "utf8"), {
    keys,
    current,
    now: opts.now ?? Date.now(),
    organisation,
    ...(check === undefined ? {} : { check }),
  });
  return { verdict, problems };
}
