/**
 * Reads `summary.html` out of an uploaded diagnostic bundle (.tar.gz) in memory, with node-tar's parser (the tar
 * reader behind npm) rather than a hand-written one. Bounded: entries are skipped unread except the summary,
 * which may be at most MAX_SUMMARY_BYTES.
 */
import { gunzipSync } from "node:zlib";
import { Parser } from "tar";

/** A summary page is tens of kilobytes; anything far larger is not one of ours. */
export const MAX_SUMMARY_BYTES = 4 * 1024 * 1024;
/** The bundle unpacked may be at most this large (a bundle is at most 1 MiB packed, and text packs ~10x). */
export const MAX_UNPACKED_BYTES = 32 * 1024 * 1024;

/** The bundle's summary.html, or an error naming what is wrong with the upload. */
export function bundleSummary(gz: Uint8Array): { ok: true; html: string } | { ok: false; message: string } {
  let tarBytes: Buffer;
  try {
    tarBytes = gunzipSync(gz, { maxOutputLength: MAX_UNPACKED_BYTES });
  } catch (e) {
    return {
      ok: false,
      message: `not a gzip file within ${MAX_UNPACKED_BYTES} bytes unpacked: ${(e as Error).message}`,
    };
  }
  // Set from the parser's callbacks; a holder object, because the checker cannot see callbacks run synchronously.
  const found: { html: string | null; problem: string | null } = { html: null, problem: null };
  const p = new Parser({
    onReadEntry: (entry) => {
      if (found.html === null && /^[^/]+\/summary\.html$/.test(entry.path) && entry.size <= MAX_SUMMARY_BYTES) {
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => chunks.push(c));
        entry.on("end", () => {
          found.html = Buffer.concat(chunks).toString("utf8");
        });
      } else {
        entry.resume();
      }
    },
  });
  p.on("warn", (_code: string, message: string) => {
    found.problem ??= message;
  });
  // node-tar's parser works synchronously on a buffer written in one go.
  p.end(tarBytes);
  if (found.html !== null) return { ok: true, html: found.html };
  return { ok: false, message: found.problem ?? "the bundle has no <folder>/summary.html" };
}
