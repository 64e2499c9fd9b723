/**
 * Where a managed policy comes from on each platform, behind one interface: every source yields the signed
 * envelope's text (or nothing), and verification is the same whatever the source.
 *
 *   Linux    /etc/detour/policy.json: the envelope as JSON (`detour policy sign` writes it)
 *   macOS    /Library/Managed Preferences/com.detour.agent.plist (an MDM configuration profile for the
 *            preference domain com.detour.agent): string keys Policy (base64 of the policy bytes, or a <data>
 *            element holding them), Signature (base64) and KeyId
 *   Windows  HKLM\SOFTWARE\Policies\Detour (Group Policy): REG_SZ values Policy, Signature and KeyId, read with
 *            `reg export` (see reg-export.ts)
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ENVELOPE_FORMAT } from "../../core/policy/document.ts";
import { parsePlist, type PlistValue } from "./plist.ts";
import { decodeRegFile, parseRegExport } from "./reg-export.ts";

export interface PolicySource {
  /** Says where the policy came from, in status and logs: "file:/etc/detour/policy.json", "url:https://...". */
  readonly name: string;
  /** A file whose folder may be watched for changes (null: only polling notices changes). */
  readonly watchPath: string | null;
  /** The envelope text, or null when this source holds no policy. Rejects on I/O trouble other than "absent". */
  read(): Promise<string | null>;
}

export const LINUX_POLICY_PATH = "/etc/detour/policy.json";
export const LINUX_TRUSTED_KEYS_DIR = "/etc/detour/trusted-keys";
export const MACOS_POLICY_DOMAIN = "com.detour.agent";
export const MACOS_POLICY_PATH = `/Library/Managed Preferences/${MACOS_POLICY_DOMAIN}.plist`;
export const WINDOWS_POLICY_KEY = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Detour";
/** `reg export` of one small key returns within milliseconds; 10 s bounds a wedged registry or antivirus hook. */
const REG_EXPORT_TIMEOUT_MS = 10_000;

/** The envelope's fields as a platform store holds them; absent fields stay absent (verification names them). */
export function envelopeFromFields(fields: { policy?: string; signature?: string; keyId?: string }): string {
  return JSON.stringify({
    format: ENVELOPE_FORMAT,
    ...(fields.keyId === undefined ? {} : { keyId: fields.keyId }),
    ...(fields.policy === undefined ? {} : { policy: fields.policy }),
    ...(fields.signature === undefined ? {} : { signature: fields.signature }),
  });
}

function readIfPresent(path: string): Buffer | null {
  try {
    return readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

export function fileSource(path: string = LINUX_POLICY_PATH): PolicySource {
  return {
    name: `file:${path}`,
    watchPath: path,
    read: () => Promise.resolve(readIfPresent(path)?.toString("utf8") ?? null),
  };
}

/** The envelope out of a managed-preferences plist; null when the domain holds none of the policy keys. */
export function envelopeFromPlist(xml: string): string | null {
  const root = parsePlist(xml);
  if (typeof root !== "object" || root instanceof Date || root instanceof Uint8Array || Array.isArray(root))
    throw new Error("the plist's root is not a <dict>");
  const str = (v: PlistValue | undefined, key: string): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v === "string") return v;
    if (v instanceof Uint8Array && key === "Policy") return Buffer.from(v).toString("base64");
    throw new Error(`${key} must be a <string>${key === "Policy" ? " or <data>" : ""}`);
  };
  const policy = str(root.Policy, "Policy");
  const signature = str(root.Signature, "Signature");
  const keyId = str(root.KeyId, "KeyId");
  if (policy === undefined && signature === undefined && keyId === undefined) return null;
  return envelopeFromFields({ policy, signature, keyId });
}

export function macosSource(path: string = MACOS_POLICY_PATH): PolicySource {
  return {
    name: `macos:${MACOS_POLICY_DOMAIN}`,
    watchPath: path,
    read: () => {
      const bytes = readIfPresent(path);
      return Promise.resolve(bytes === null ? null : envelopeFromPlist(bytes.toString("utf8")));
    },
  };
}

/** The envelope out of `reg export` output of the policy key; null when the key or its values are absent. */
export function envelopeFromRegExport(bytes: Uint8Array, key: string = WINDOWS_POLICY_KEY): string | null {
  const keys = parseRegExport(decodeRegFile(bytes));
  const values = [...keys].find(([k]) => k.toLowerCase() === key.toLowerCase())?.[1];
  if (values === undefined) return null;
  const str = (name: string): string | undefined => {
    const v = values.get(name);
    if (v === undefined) return undefined;
    if (v.type === "sz" || v.type === "expand-sz") return v.value;
    if (v.type === "multi-sz") return v.value.join("");
    throw new Error(`${key}\\${name} must be a string value (REG_SZ), not ${v.type}`);
  };
  const policy = str("Policy");
  const signature = str("Signature");
  const keyId = str("KeyId");
  if (policy === undefined && signature === undefined && keyId === undefined) return null;
  return envelopeFromFields({ policy, signature, keyId });
}

/** Runs `reg export <key> <file> /y`; resolves to the file's bytes, or null when the key does not exist. */
function regExport(key: string): Promise<Uint8Array | null> {
  const dir = mkdtempSync(join(tmpdir(), "detour-reg-"));
  const file = join(dir, "policy.reg");
  return new Promise<Uint8Array | null>((resolve, reject) => {
    execFile("reg.exe", ["export", key, file, "/y"], { timeout: REG_EXPORT_TIMEOUT_MS, windowsHide: true }, (err) => {
      try {
        if (err !== null) {
          // reg.exe exits 1 when the key does not exist: no policy deployed.
          if (typeof err.code === "number" && err.code === 1) resolve(null);
          else reject(new Error(`reg export ${key} failed: ${err.message}`));
          return;
        }
        resolve(readFileSync(file));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

export function windowsSource(
  key: string = WINDOWS_POLICY_KEY,
  exporter: (key: string) => Promise<Uint8Array | null> = regExport,
): PolicySource {
  return {
    name: `windows:${key}`,
    watchPath: null,
    read: async () => {
      const bytes = await exporter(key);
      return bytes === null ? null : envelopeFromRegExport(bytes, key);
    },
  };
}

/** The platform's managed-policy source; `path` overrides the file (Linux, macOS) for the lab and tests. */
export function platformSource(platform: NodeJS.Platform, path?: string): PolicySource {
  if (platform === "darwin") return macosSource(path);
  if (platform === "win32") return windowsSource();
  return fileSource(path);
}
