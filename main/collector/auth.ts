/**
 * Who may talk to the collector: the tokens file maps bearer tokens to an organisation and a role. "ingest"
 * tokens go on every device and may only post telemetry; "read" tokens (IT staff, Prometheus) may read the
 * dashboard and /metrics, so an employee who copies the token off a laptop cannot read the fleet. Tokens are
 * kept only as SHA-256 digests in memory and never appear in a log line or an error message.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { z } from "zod";
import { IngestError } from "./errors.ts";

export type Role = "ingest" | "read";

export interface Principal {
  org: string;
  role: Role;
}

/** Tokens shorter than this are guessable; the lab and `openssl rand -hex 32` give far longer ones. */
export const MIN_TOKEN_LENGTH = 16;

const ORG_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

const TokensFileSchema = z.strictObject({
  tokens: z
    .array(
      z.union([
        z.strictObject({
          org: z.string().regex(ORG_PATTERN),
          role: z.enum(["ingest", "read"]),
          token: z.string().min(MIN_TOKEN_LENGTH),
        }),
        z.strictObject({
          org: z.string().regex(ORG_PATTERN),
          role: z.enum(["ingest", "read"]),
          sha256: z.string().regex(/^[0-9a-f]{64}$/),
        }),
      ]),
    )
    .min(1),
});

export type TokensFile = z.infer<typeof TokensFileSchema>;

export function sha256Hex(s: string | Uint8Array): string {
  return createHash("sha256").update(s).digest("hex");
}

export class TokenTable {
  readonly #byDigest: Map<string, Principal>;

  constructor(file: TokensFile) {
    this.#byDigest = new Map(
      file.tokens.map((t) => ["token" in t ? sha256Hex(t.token) : t.sha256, { org: t.org, role: t.role }]),
    );
  }

  /** Parses the tokens file's text; errors name the bad entry's path, never a token. */
  static parse(text: string): TokenTable {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw new Error(`tokens file is not JSON: ${(e as Error).message}`);
    }
    const r = TokensFileSchema.safeParse(raw);
    if (!r.success) {
      throw new Error(
        `tokens file is invalid: ${r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`,
      );
    }
    return new TokenTable(r.data);
  }

  /** Reads the tokens file, refusing one that others than its owner may read (it holds credentials). */
  static load(path: string): TokenTable {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0)
      throw new Error(`tokens file ${path} has mode ${mode.toString(8)}; it holds credentials: chmod 600 it`);
    return TokenTable.parse(readFileSync(path, "utf8"));
  }

  get size(): number {
    return this.#byDigest.size;
  }

  lookup(token: string): Principal | undefined {
    return this.#byDigest.get(sha256Hex(token));
  }
}

/** The token of an Authorization header: `Bearer <token>`, or HTTP Basic with the token as password (browsers). */
export function tokenOf(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(authorization);
  if (m === null) return undefined;
  const scheme = (m[1] ?? "").toLowerCase();
  const value = m[2] ?? "";
  if (scheme === "bearer") return value;
  if (scheme === "basic") {
    const decoded = Buffer.from(value, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    return colon < 0 ? undefined : decoded.slice(colon + 1);
  }
  return undefined;
}

/**
 * Authenticates a request for `role`. Under mTLS, `certOrg` is the organisation (subject O) of the verified
 * client certificate, which must be the token's organisation: a token leaked from one organisation is useless
 * with another's certificate.
 */
export function authenticate(
  tokens: TokenTable,
  authorization: string | undefined,
  role: Role,
  mtls: { certOrg: string | null } | null,
): Principal {
  const token = tokenOf(authorization);
  if (token === undefined)
    throw new IngestError(401, "unauthenticated", "missing credentials: send Authorization: Bearer <token>");
  const p = tokens.lookup(token);
  if (p === undefined) throw new IngestError(401, "unauthenticated", "unknown token");
  if (p.role !== role)
    throw new IngestError(
      403,
      "forbidden",
      `this token may ${p.role === "ingest" ? "only send telemetry" : "only read"}; this endpoint needs a ${role} token`,
    );
  if (mtls !== null && mtls.certOrg !== p.org) {
    throw new IngestError(
      403,
      "forbidden",
      `the client certificate belongs to ${mtls.certOrg === null ? "no organisation" : `organisation "${mtls.certOrg}"`}, not to the token's`,
    );
  }
  return p;
}
