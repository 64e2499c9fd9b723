/**
 * A diagnostic bundle's manifest (manifest.json, the first file of the archive): who made the bundle, when, and
 * the SHA-256 of every other file, so `detour diag inspect` can tell a complete bundle from a damaged or edited
 * one. Pure: hashes are computed by the caller.
 */
import { z } from "zod";

export const BUNDLE_FORMAT = "detour-diag/1";
export const MANIFEST_FILE = "manifest.json";
export const SUMMARY_HTML = "summary.html";
export const SUMMARY_JSON = "summary.json";
export const REDACTION_REPORT = "redaction-report.json";

export const ManifestSchema = z.looseObject({
  format: z.literal(BUNDLE_FORMAT),
  createdAt: z.string(),
  agentVersion: z.string(),
  deviceId: z.string(),
  policyHash: z.string(),
  /** Folder all files sit in inside the archive. */
  root: z.string().regex(/^[A-Za-z0-9._-]+$/),
  files: z.array(
    z.strictObject({ path: z.string().min(1), bytes: z.int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  ),
});
export type Manifest = z.infer<typeof ManifestSchema>;

export interface ManifestCheck {
  ok: boolean;
  problems: string[];
  verified: number;
}

/** Compares the manifest with what the archive holds (path -> sha256 and size of each file found). */
export function verifyManifest(
  m: Manifest,
  found: ReadonlyMap<string, { sha256: string; bytes: number }>,
): ManifestCheck {
  const problems: string[] = [];
  let verified = 0;
  const listed = new Set<string>();
  for (const f of m.files) {
    listed.add(f.path);
    const got = found.get(f.path);
    if (got === undefined) problems.push(`${f.path}: listed in the manifest but missing`);
    else if (got.sha256 !== f.sha256 || got.bytes !== f.bytes)
      problems.push(`${f.path}: SHA-256 or size differs from the manifest (damaged or edited)`);
    else verified++;
  }
  for (const p of found.keys())
    if (p !== MANIFEST_FILE && !listed.has(p)) problems.push(`${p}: in the archive but not in the manifest`);
  return { ok: problems.length === 0, problems, verified };
}
