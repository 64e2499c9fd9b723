/**
 * The public keys a device trusts for managed policies (Ed25519 through node:crypto), by key id. Signing lives in
 * the CLI (main/cli/policy-tools.ts): the daemon never holds a private key.
 */
import { createHash, createPublicKey, verify, type KeyObject } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { SignatureCheck } from "../../core/policy/verify.ts";

/** The key id: 16 hex digits of the SHA-256 of the raw 32-byte public key (what `keyId` in an envelope names). */
export function keyIdOf(publicKey: KeyObject): string {
  const der = publicKey.export({ format: "der", type: "spki" });
  return createHash("sha256")
    .update(der.subarray(der.length - 32))
    .digest("hex")
    .slice(0, 16);
}

export interface TrustedKeys {
  keys: Map<string, SignatureCheck>;
  /** Files in the folder that are not Ed25519 public keys, with why: reported, never fatal. */
  problems: { file: string; message: string }[];
}

/** Every `*.pem` in the folder that holds an Ed25519 public key, by key id. A missing folder trusts nothing. */
export function loadTrustedKeys(dir: string): TrustedKeys {
  const keys = new Map<string, SignatureCheck>();
  const problems: TrustedKeys["problems"] = [];
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => n.endsWith(".pem"))
      .sort();
  } catch (e) {
    return {
      keys,
      problems: [
        {
          file: dir,
          message: `cannot read the trusted-keys folder: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        },
      ],
    };
  }
  for (const name of names) {
    const file = join(dir, name);
    try {
      const pub = createPublicKey(readFileSync(file));
      if (pub.asymmetricKeyType !== "ed25519") throw new Error(`a ${String(pub.asymmetricKeyType)} key, not Ed25519`);
      keys.set(keyIdOf(pub), (message, signature) => verify(null, message, pub, signature));
    } catch (e) {
      problems.push({ file, message: (e as Error).message.slice(0, 200) });
    }
  }
  return { keys, problems };
}
