/**
 * Decides whether a signed policy envelope may be put in force: pure (the signature check is passed in, time is
 * an input), and every refusal carries a stable code, the field at fault where there is one, and a sentence.
 *
 * Checks, in order (the first failure is the answer):
 *   malformed      the envelope is not JSON of the envelope format, or the policy is not base64 of UTF-8 JSON
 *   unsigned       a bare policy document, or an envelope without a key id or signature
 *   unknown-key    signed by a key this device does not trust
 *   bad-signature  the signature does not match the policy bytes (a tampered or re-encoded document)
 *   invalid-field  a field is wrong (path named), or the organisation is not this device's
 *   expired        now is at or past expiresAt
 *   downgrade      the version is not higher than the policy in force (the same version is accepted only
 *                  when it is the very same document, so re-reading a file is not a rejection)
 *   invalid-field  the settings cannot work with this device's configuration (e.g. none of the allowed
 *                  gateways is configured; the check is passed in)
 */
import type { z } from "zod";
import { decodeBase64, decodeUtf8, Envelope, ENVELOPE_FORMAT, PolicyDocument } from "./document.ts";

export const REJECTION_CODES = [
  "malformed",
  "unsigned",
  "unknown-key",
  "bad-signature",
  "invalid-field",
  "expired",
  "downgrade",
] as const;
export type RejectionCode = (typeof REJECTION_CODES)[number];

export interface Rejection {
  code: RejectionCode;
  /** Dotted path of the offending field for invalid-field (and the envelope field for malformed ones). */
  field?: string;
  message: string;
}

/** Checks an Ed25519 signature; the agent supplies node:crypto's, the core never touches crypto. */
export type SignatureCheck = (message: Uint8Array, signature: Uint8Array) => boolean;

export interface VerifyContext {
  /** Trusted keys by key id. */
  keys: ReadonlyMap<string, SignatureCheck>;
  /** The policy in force: its version and the exact bytes (to tell a re-read from a replay). */
  current: { version: number; policyBase64: string } | null;
  now: number;
  /** The device's configured organisation; a policy for another one is refused (null: not checked, for offline tools). */
  organisation: string | null;
  /** Further checks against the device's configuration (layers.ts), reported as invalid-field. */
  check?: (doc: PolicyDocument) => Rejection | null;
}

export type Verified =
  | { ok: true; policy: PolicyDocument; keyId: string; envelope: Envelope; unchanged: boolean }
  | { ok: false; rejection: Rejection };

function reject(code: RejectionCode, message: string, field?: string): { ok: false; rejection: Rejection } {
  return { ok: false, rejection: field === undefined ? { code, message } : { code, field, message } };
}

export function pathOf(path: readonly PropertyKey[]): string {
  if (path.length === 0) return "(root)";
  return path
    .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
    .join("")
    .replace(/^\./, "");
}

function firstIssue(issues: readonly z.core.$ZodIssue[]): { field: string; message: string } {
  const i = issues[0];
  if (i === undefined) return { field: "(root)", message: "invalid" };
  const field = pathOf(i.path);
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? "s" : ""})` : "";
  return { field, message: `${field}: ${i.message}${more}` };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function verifyEnvelope(text: string, ctx: VerifyContext): Verified {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    return reject("malformed", `not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (!isObject(raw)) return reject("malformed", "expected a JSON object (a signed policy envelope)");
  if (raw.format === undefined && "version" in raw && "settings" in raw) {
    return reject(
      "unsigned",
      "this is a bare policy document; sign it with `detour policy sign` so the agent can trust it",
    );
  }
  if (raw.format !== ENVELOPE_FORMAT) return reject("malformed", `format: expected "${ENVELOPE_FORMAT}"`, "format");
  if (raw.signature === undefined || raw.signature === "" || raw.keyId === undefined || raw.keyId === "") {
    return reject(
      "unsigned",
      "the envelope carries no signature or key id; sign it with `detour policy sign`",
      raw.signature === undefined || raw.signature === "" ? "signature" : "keyId",
    );
  }
  const env = Envelope.safeParse(raw);
  if (!env.success) {
    const f = firstIssue(env.error.issues);
    return reject("malformed", f.message, f.field);
  }
  const check = ctx.keys.get(env.data.keyId);
  if (check === undefined)
    return reject(
      "unknown-key",
      `signed by key ${env.data.keyId}, which this device does not trust (trusted: ${[...ctx.keys.keys()].join(", ") || "none"})`,
      "keyId",
    );
  const bytes = decodeBase64(env.data.policy);
  if (bytes === null) return reject("malformed", "policy: expected standard base64 of the policy bytes", "policy");
  const sig = decodeBase64(env.data.signature);
  if (sig?.length !== 64)
    return reject("bad-signature", "signature: expected base64 of a 64-byte Ed25519 signature", "signature");
  let good: boolean;
  try {
    good = check(bytes, sig);
  } catch {
    good = false;
  }
  if (!good)
    return reject(
      "bad-signature",
      `the signature does not match the policy bytes for key ${env.data.keyId}: the document was changed after signing, or signed by another key`,
      "signature",
    );
  const policyText = decodeUtf8(bytes);
  if (policyText === null) return reject("malformed", "policy: the signed bytes are not UTF-8 text", "policy");
  let policyValue: unknown;
  try {
    policyValue = JSON.parse(policyText);
  } catch (e) {
    return reject(
      "malformed",
      `policy: the signed bytes are not valid JSON: ${(e as Error).message.slice(0, 200)}`,
      "policy",
    );
  }
  const doc = PolicyDocument.safeParse(policyValue);
  if (!doc.success) {
    const f = firstIssue(doc.error.issues);
    return reject("invalid-field", f.message, f.field);
  }
  const policy = doc.data;
  if (ctx.organisation !== null && policy.organisation !== ctx.organisation) {
    return reject(
      "invalid-field",
      `organisation: this policy is for "${policy.organisation}"; this device belongs to "${ctx.organisation}"`,
      "organisation",
    );
  }
  // A policy already in force is re-verified on restart with now = -Infinity: it stays in force after it expires,
  // so restrictions are never lifted by the clock alone; expiry stops an old document from being (re)installed.
  if (ctx.now >= Date.parse(policy.expiresAt))
    return reject("expired", `expiresAt: the policy expired at ${policy.expiresAt}`, "expiresAt");
  const cur = ctx.current;
  const same =
    cur !== null &&
    policy.version === cur.version &&
    env.data.policy.replace(/\s+/g, "") === cur.policyBase64.replace(/\s+/g, "");
  if (cur !== null && !same && policy.version <= cur.version) {
    return reject(
      "downgrade",
      `version: ${policy.version} is not newer than the policy in force (version ${cur.version}); every new policy needs a higher version`,
      "version",
    );
  }
  const extra = ctx.check?.(policy) ?? null;
  if (extra !== null) return { ok: false, rejection: extra };
  return { ok: true, policy, keyId: env.data.keyId, envelope: env.data, unchanged: same };
}
