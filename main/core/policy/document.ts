/**
 * The managed-policy document and the signed envelope it travels in.
 *
 * Envelope (JSON; the same fields come from a macOS plist or the Windows registry, see main/agent/policy):
 *
 *   { "format": "detour-policy-envelope/1",
 *     "keyId": "<first 16 hex digits of the SHA-256 of the raw 32-byte Ed25519 public key>",
 *     "policy": "<base64 of the exact policy bytes>",
 *     "signature": "<base64 of the Ed25519 signature over exactly those bytes>" }
 *
 * The policy travels as base64 of its bytes, not as nested JSON, so the bytes that were signed are the bytes
 * that are verified: no canonical JSON form is needed and no re-serialisation can break a signature. The policy
 * itself is UTF-8 JSON: { version, issuedAt, expiresAt, organisation, settings } (see PolicyDocument).
 */
import { z } from "zod";
import { Settings } from "./settings.ts";

export const ENVELOPE_FORMAT = "detour-policy-envelope/1";

/** A key id: 16 lowercase hex digits (64 bits of the key's SHA-256; a name for a key, not a security boundary). */
export const KeyId = z
  .string()
  .regex(/^[0-9a-f]{16}$/, "expected 16 lowercase hex digits (detour policy keygen prints it)");

const isoTime = z.iso.datetime({ offset: true, message: "expected an ISO 8601 time such as 2025-01-31T12:00:00Z" });

export const PolicyDocument = z
  .object({
    /** Every new policy carries a higher version; a lower (or a re-used) one is a downgrade and is refused. */
    version: z.int().min(1).max(Number.MAX_SAFE_INTEGER),
    issuedAt: isoTime,
    /** A document is refused once past this time, so an old signed policy cannot be replayed forever. */
    expiresAt: isoTime,
    /** Must be the organisation the device is configured for. */
    organisation: z.string().min(1).max(128),
    settings: Settings,
  })
  .strict()
  .refine((p) => Date.parse(p.expiresAt) > Date.parse(p.issuedAt), {
    message: "expiresAt must be after issuedAt",
    path: ["expiresAt"],
  });
export type PolicyDocument = z.infer<typeof PolicyDocument>;

export const Envelope = z
  .object({
    format: z.literal(ENVELOPE_FORMAT),
    keyId: KeyId,
    policy: z.string().min(1),
    signature: z.string().min(1),
  })
  .strict();
export type Envelope = z.infer<typeof Envelope>;

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Map(Array.from({ length: B64.length }, (_, i) => [B64.charAt(i), i]));

/** Standard base64 with padding, strictly: anything else (whitespace aside) is null, never a guess. */
export function decodeBase64(text: string): Uint8Array | null {
  const s = text.replace(/\s+/g, "");
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  const pad = s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((s.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < s.length; i += 4) {
    const n = [0, 1, 2, 3].map((k) => B64_INDEX.get(s[i + k] ?? "=") ?? 0);
    const v = ((n[0] ?? 0) << 18) | ((n[1] ?? 0) << 12) | ((n[2] ?? 0) << 6) | (n[3] ?? 0);
    for (const [shift, ok] of [
      [16, true],
      [8, s[i + 2] !== "="],
      [0, s[i + 3] !== "="],
    ] as const) {
      if (ok && o < out.length) out[o++] = (v >> shift) & 0xff;
    }
  }
  return out;
}

export function encodeBase64(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i] ?? 0;
    const b = bytes[i + 1];
    const c = bytes[i + 2];
    const v = (a << 16) | ((b ?? 0) << 8) | (c ?? 0);
    out += (B64[(v >> 18) & 63] ?? "") + (B64[(v >> 12) & 63] ?? "");
    out += b === undefined ? "=" : (B64[(v >> 6) & 63] ?? "");
    out += c === undefined ? "=" : (B64[v & 63] ?? "");
  }
  return out;
}

/** Strict UTF-8 (no overlongs, surrogates or truncated sequences): a policy that is not valid text is malformed. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  let out = "";
  for (let i = 0; i < bytes.length;) {
    const b0 = bytes[i] ?? 0;
    let need: number;
    let cp: number;
    let min: number;
    if (b0 < 0x80) [need, cp, min] = [0, b0, 0];
    else if (b0 >= 0xc2 && b0 < 0xe0) [need, cp, min] = [1, b0 & 0x1f, 0x80];
    else if (b0 >= 0xe0 && b0 < 0xf0) [need, cp, min] = [2, b0 & 0x0f, 0x800];
    else if (b0 >= 0xf0 && b0 < 0xf5) [need, cp, min] = [3, b0 & 0x07, 0x10000];
    else return null;
    for (let k = 1; k <= need; k++) {
      const b = bytes[i + k];
      if (b === undefined || (b & 0xc0) !== 0x80) return null;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return null;
    out += String.fromCodePoint(cp);
    i += need + 1;
  }
  return out;
}

/** UTF-8 bytes of a string (what `detour policy sign` signs when given text). */
export function encodeUtf8(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 63));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
    else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
  }
  return Uint8Array.from(out);
}
