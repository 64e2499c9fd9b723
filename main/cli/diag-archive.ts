/**
 * Reads a diagnostic bundle offline (no daemon, no network): every file of the .tar.gz into memory, bounded in
 * count and size, then the manifest checked against the SHA-256 of what is really there.
 */
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import * as tar from "tar";
import {
  MANIFEST_FILE,
  ManifestSchema,
  verifyManifest,
  type Manifest,
  type ManifestCheck,
} from "../core/diag/manifest.ts";

/** A bundle holds a few dozen files; thousands means this is not one. */
export const MAX_ENTRIES = 2000;
/** Uncompressed bytes read at most: bundles are a few MiB (logs are capped at 256 MiB by the schema). */
export const MAX_UNPACKED_BYTES = 512 * 1024 * 1024;

export class BundleReadError extends Error {
  override readonly name = "BundleReadError";
}

export interface OpenedBundle {
  manifest: Manifest;
  /** Files by their path inside the bundle's folder (manifest.json included). */
  files: Map<string, Buffer>;
  check: ManifestCheck;
}

export async function readBundle(file: string): Promise<OpenedBundle> {
  try {
    if (!statSync(file).isFile()) throw new BundleReadError(`${file} is not a file`);
  } catch (e) {
    if (e instanceof BundleReadError) throw e;
    throw new BundleReadError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const raw = new Map<string, Buffer>();
  let total = 0;
  let problem: string | null = null;
  try {
    await tar.t({
      file,
      strict: true,
      onReadEntry: (entry) => {
        if (problem !== null) {
          entry.resume();
          return;
        }
        if (raw.size >= MAX_ENTRIES) problem = `more than ${MAX_ENTRIES} entries: not a Detour bundle`;
        if (entry.type !== "File") {
          entry.resume();
          return;
        }
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => {
          total += c.length;
          if (total > MAX_UNPACKED_BYTES)
            problem = `more than ${MAX_UNPACKED_BYTES} bytes unpacked: not a Detour bundle`;
          else chunks.push(c);
        });
        entry.on("end", () => {
          raw.set(entry.path, Buffer.concat(chunks));
        });
      },
    });
  } catch (e) {
    throw new BundleReadError(`${file} is not a readable .tar.gz: ${(e as Error).message}`);
  }
  // Set inside the entry callbacks, which the compiler's narrowing does not follow.
  const tooBig = problem as string | null;
  if (tooBig !== null) throw new BundleReadError(tooBig);
  const manifestEntry = [...raw.keys()].find((p) => p.endsWith(`/${MANIFEST_FILE}`) && p.split("/").length === 2);
  if (manifestEntry === undefined)
    throw new BundleReadError(`${file} has no ${MANIFEST_FILE}: not a Detour diagnostic bundle`);
  let manifest: Manifest;
  try {
    const parsed = ManifestSchema.safeParse(JSON.parse((raw.get(manifestEntry) ?? Buffer.alloc(0)).toString("utf8")));
    if (!parsed.success)
      throw new Error(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
    manifest = parsed.data;
  } catch (e) {
    throw new BundleReadError(`${MANIFEST_FILE} is not valid: ${(e as Error).message}`);
  }
  const prefix = `${manifest.root}/`;
  const files = new Map<string, Buffer>();
  for (const [p, b] of raw) {
    files.set(p.startsWith(prefix) ? p.slice(prefix.length) : p, b);
  }
  const found = new Map<string, { sha256: string; bytes: number }>();
  for (const [p, b] of files) found.set(p, { sha256: createHash("sha256").update(b).digest("hex"), bytes: b.length });
  return { manifest, files, check: verifyManifest(manifest, found) };
}
