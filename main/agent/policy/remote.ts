/**
 * The remote policy URL: polled with If-None-Match so an unchanged policy costs a 304, and on failure retried with
 * capped exponential backoff and jitter so an outage of the policy server is not hammered by every device at once.
 */
import { backoffMs, type Random } from "../../core/backoff.ts";
import { redactUrlCredentials } from "../../core/diag/redact.ts";
import { BodyTooLargeError, readBoundedBody } from "../../shared/bounded-body.ts";
import type { PolicySource } from "./sources.ts";

/**
 * Policies change rarely (a new gateway, a revoked protocol); every 5 minutes puts a change in force on the whole
 * fleet within minutes for one conditional GET (a 304 of a few hundred bytes) per device.
 */
export const REMOTE_POLL_INTERVAL_MS = 5 * 60_000;
/** First retry after a failure: soon enough to ride out a blip, late enough not to hammer a restarting server. */
export const REMOTE_RETRY_INITIAL_MS = 15_000;
/** Backoff cap: half an hour bounds how stale a device gets after a long outage, at ~50 requests a day. */
export const REMOTE_RETRY_MAX_MS = 30 * 60_000;
/** One fetch: a policy is a few KB; 15 s separates a slow link from a dead server. */
export const REMOTE_FETCH_TIMEOUT_MS = 15_000;
/** A policy is a few KB; anything past 256 KiB is not one and is not read further. */
export const MAX_REMOTE_POLICY_BYTES = 256 * 1024;

/** Delay before the next poll after `failures` consecutive failures (0: the regular interval); `random` jitters retries. */
export function nextPollDelay(failures: number, random: Random = Math.random): number {
  if (failures <= 0) return REMOTE_POLL_INTERVAL_MS;
  return backoffMs(failures, { initialMs: REMOTE_RETRY_INITIAL_MS, maxMs: REMOTE_RETRY_MAX_MS }, random);
}

export type FetchFn = (
  url: string,
  init: { headers: Record<string, string>; signal: AbortSignal },
) => Promise<Response>;

export type PollOutcome =
  | { kind: "document"; text: string; etag: string | null }
  | { kind: "not-modified" }
  | { kind: "absent" }
  | { kind: "failed"; error: string };

/** One conditional GET. Never throws. */
export async function pollOnce(url: string, etag: string | null, fetchFn: FetchFn = fetch): Promise<PollOutcome> {
  try {
    const res = await fetchFn(url, {
      headers: etag === null ? {} : { "if-none-match": etag },
      signal: AbortSignal.timeout(REMOTE_FETCH_TIMEOUT_MS),
    });
    if (res.status === 304) return { kind: "not-modified" };
    if (res.status === 404) return { kind: "absent" };
    if (!res.ok) return { kind: "failed", error: `HTTP ${res.status}` };
    const body = await readBoundedBody(res, MAX_REMOTE_POLICY_BYTES);
    return { kind: "document", text: body.toString("utf8"), etag: res.headers.get("etag") };
  } catch (e) {
    if (e instanceof BodyTooLargeError) return { kind: "failed", error: `the policy is ${e.message}` };
    // Some errors quote the URL ("Failed to parse URL from ..."): its credentials stay out of status and logs.
    return { kind: "failed", error: redactUrlCredentials((e as Error).message).slice(0, 200) };
  }
}

/**
 * The URL as a PolicySource: `read()` does a conditional GET and returns the last document it got when the server
 * says 304, so the manager sees the same text (and recognises it as unchanged). `nextDelay()` says when to poll next.
 */
export function remoteSource(
  url: string,
  fetchFn: FetchFn = fetch,
  random: Random = Math.random,
): PolicySource & { nextDelay(): number; lastError(): string | null } {
  let etag: string | null = null;
  let last: string | null = null;
  let failures = 0;
  let error: string | null = null;
  return {
    // The name shows in status, logs and telemetry: never the URL's credentials.
    name: `url:${redactUrlCredentials(url)}`,
    watchPath: null,
    nextDelay: () => nextPollDelay(failures, random),
    lastError: () => error,
    read: async () => {
      const r = await pollOnce(url, etag, fetchFn);
      switch (r.kind) {
        case "document":
          failures = 0;
          error = null;
          etag = r.etag;
          last = r.text;
          return last;
        case "not-modified":
          failures = 0;
          error = null;
          return last;
        case "absent":
          failures = 0;
          error = null;
          etag = null;
          last = null;
          return null;
        case "failed":
          failures += 1;
          error = r.error;
          throw new Error(`${url}: ${r.error}`);
      }
    },
  };
}
