/**
 * Reads `summary.json` out of an uploaded diagnostic bundle (.tar.gz) in memory, with node-tar's parser (the tar
 * reader behind npm) rather than a hand-written one, and checks it against the summary model. The collector
 * renders the page itself from that data (every string escaped): the `summary.html` a device sent is never
 * served, since a compromised or hostile device could put anything in it. Bounded: entries are skipped unread
 * except the summary, which may be at most MAX_SUMMARY_BYTES.
 */
import { gunzipSync } from "node:zlib";
import { Parser } from "tar";
import { z } from "zod";
import type { SummaryModel } from "../core/diag/summary.ts";

/** A summary is tens of kilobytes; anything far larger is not one of ours. */
export const MAX_SUMMARY_BYTES = 4 * 1024 * 1024;
/** The bundle unpacked may be at most this large (a bundle is at most 1 MiB packed, and text packs ~10x). */
export const MAX_UNPACKED_BYTES = 32 * 1024 * 1024;

/** Longest text field accepted: a failure reason or a sentence is a line; 4096 is far above and still bounded. */
const MAX_TEXT = 4096;
/** Rows per table: the agent writes at most a few dozen failures and races and an hour of ten-second samples. */
const MAX_ROWS = 5000;

const text = z.string().max(MAX_TEXT);
const num = z.number();
const counts = z.record(z.string().regex(/^[a-z][a-z-]{0,39}$/), z.number().int().nonnegative());

/** The summary model (main/core/diag/summary.ts) as a device may send it: every field typed, every size bounded. */
const SummarySchema = z.object({
  generatedAt: num,
  agentVersion: text,
  deviceId: text,
  policyHash: text,
  state: text,
  sentence: text,
  failures: z.array(z.object({ at: num, what: text, reason: text })).max(MAX_ROWS),
  chart: z.array(z.object({ at: num, rttP50Ms: num.nullable(), rttP95Ms: num.nullable(), lossPct: num })).max(MAX_ROWS),
  chartResolution: z.enum(["10s", "1s"]),
  gateways: z
    .array(
      z.object({
        name: text,
        hostname: text,
        address: text.nullable(),
        region: text,
        priority: num,
        protocols: text,
        latencyMs: num.nullable(),
        role: z.enum(["active", "standby", ""]),
      }),
    )
    .max(MAX_ROWS),
  races: z
    .array(
      z.object({
        id: text,
        reason: text,
        startedAt: num,
        durationMs: num.nullable(),
        winner: text.nullable(),
        legs: z.array(z.object({ leg: text, outcome: text, ms: num.nullable(), error: text.nullable() })).max(64),
      }),
    )
    .max(MAX_ROWS),
  redactions: z.object({ removed: counts, pseudonymised: counts, distinct: counts }).nullable(),
});

/** The bundle's summary model, or an error naming what is wrong with the upload. */
export function bundleSummary(gz: Uint8Array): { ok: true; model: SummaryModel } | { ok: false; message: string } {
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
  const found: { json: string | null; problem: string | null } = { json: null, problem: null };
  const p = new Parser({
    onReadEntry: (entry) => {
      if (found.json === null && /^[^/]+\/summary\.json$/.test(entry.path) && entry.size <= MAX_SUMMARY_BYTES) {
        const chunks: Buffer[] = [];
        entry.on("data", (c: Buffer) => chunks.push(c));
        entry.on("end", () => {
          found.json = Buffer.concat(chunks).toString("utf8");
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
  if (found.json === null) return { ok: false, message: found.problem ?? "the bundle has no <folder>/summary.json" };
  let raw: unknown;
  try {
    raw = JSON.parse(found.json);
  } catch (e) {
    return { ok: false, message: `summary.json is not JSON: ${(e as Error).message.slice(0, 200)}` };
  }
  const r = SummarySchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    return {
      ok: false,
      message: `summary.json is not a summary: ${issue === undefined ? "invalid" : `${issue.path.join(".") || "(root)"}: ${issue.message}`}`,
    };
  }
  return { ok: true, model: r.data };
}
