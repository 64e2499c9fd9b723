/**
 * Drains the telemetry spool to the collector, oldest first, one request at a time: each record is removed only
 * after the collector answered 2xx, so an outage, a slow collector or a daemon restart loses nothing, and the
 * batch header makes the collector's copy exactly-once. Failures back off exponentially up to a cap, with jitter,
 * so a fleet that lost its collector together does not come back in lockstep.
 */
import { backoffMs, type BackoffPolicy, type Random } from "../../core/backoff.ts";
import { BATCH_HEADER } from "../../core/telemetry/names.ts";
import type { Secret } from "../../core/secret.ts";
import type { Spool, SpoolKind } from "./spool.ts";

/** The first retry after a failure: soon enough that a blip costs seconds, not minutes. */
export const RETRY_INITIAL_MS = 1000;
/** Retries back off to at most this: a collector that comes back is noticed within half a minute. */
export const RETRY_MAX_MS = 30_000;
const RETRY: BackoffPolicy = { initialMs: RETRY_INITIAL_MS, maxMs: RETRY_MAX_MS };
/** One request may take this long; a collector slower than this is treated as down for that attempt. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** At most this many records per drain pass, so a large backlog never monopolises the daemon's loop. */
export const DRAIN_BATCH = 200;

export interface PostResult {
  status: number;
  body: string;
}

/** How a request leaves the daemon; the default is fetch, tests pass their own. */
export type Post = (
  url: string,
  body: Buffer,
  headers: Record<string, string>,
  signal: AbortSignal,
) => Promise<PostResult>;

export const fetchPost: Post = async (url, body, headers, signal) => {
  const r = await fetch(url, { method: "POST", body, headers, signal });
  return { status: r.status, body: (await r.text()).slice(0, 500) };
};

export interface SenderOptions {
  spool: Spool;
  /** Base URL; /v1/metrics and /v1/logs are appended. */
  endpoint: string;
  token: Secret | null;
  deviceId: string;
  post?: Post;
  /** The backoff's jitter; Math.random unless a test fixes it. */
  random?: Random;
  onDelivered?(seq: number, kind: SpoolKind): void;
  onProblem?(problem: {
    seq: number;
    kind: SpoolKind;
    status: number | null;
    message: string;
    retryInMs: number | null;
  }): void;
}

export interface SenderStatus {
  delivered: number;
  lastDeliveredAt: number | null;
  lastError: string | null;
  nextAttemptAt: number | null;
}

/** Status codes after which the same bytes can never succeed: the record is set aside (counted), not retried. */
const PERMANENT = new Set([400, 413, 415, 422]);

export class SpoolSender {
  readonly #opts: SenderOptions;
  readonly #post: Post;
  readonly #random: Random;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #stopped = false;
  #failures = 0;
  #abort = new AbortController();
  #status: SenderStatus = { delivered: 0, lastDeliveredAt: null, lastError: null, nextAttemptAt: null };

  constructor(opts: SenderOptions) {
    this.#opts = opts;
    this.#post = opts.post ?? fetchPost;
    this.#random = opts.random ?? Math.random;
  }

  status(): SenderStatus {
    return { ...this.#status };
  }

  /** Something was spooled (or the network changed): drain now unless a backoff is in force. */
  kick(): void {
    if (this.#stopped || this.#running !== null || this.#timer !== null) return;
    this.#running = this.#drain().finally(() => {
      this.#running = null;
    });
  }

  /** Waits for the current pass (bounded by the request timeout) and stops; pending records stay spooled. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#status = { ...this.#status, nextAttemptAt: null };
    this.#abort.abort();
    await this.#running;
  }

  #isStopped(): boolean {
    return this.#stopped;
  }

  /** One pass over the backlog; returns when it is empty, a failure schedules a retry, or the batch is done. */
  async #drain(): Promise<void> {
    const { spool } = this.#opts;
    for (let i = 0; i < DRAIN_BATCH && !this.#stopped; i++) {
      const rec = spool.peek();
      if (rec === null) return;
      const url = `${this.#opts.endpoint.replace(/\/+$/, "")}/v1/${rec.kind}`;
      const headers: Record<string, string> = {
        "content-type": "application/x-protobuf",
        [BATCH_HEADER]: `${this.#opts.deviceId}:${String(rec.seq)}`,
      };
      if (this.#opts.token !== null) headers.authorization = `Bearer ${this.#opts.token.reveal()}`;
      let result: PostResult | null = null;
      let error: string | null = null;
      try {
        result = await this.#post(
          url,
          rec.body,
          headers,
          AbortSignal.any([this.#abort.signal, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]),
        );
      } catch (e) {
        error =
          e instanceof Error ? (e.cause instanceof Error ? `${e.message}: ${e.cause.message}` : e.message) : String(e);
      }
      // stop() may have run while the request was out.
      if (this.#isStopped()) return;
      // 409: the collector already stored this batch id (an earlier attempt got through, its answer did not).
      if (result !== null && ((result.status >= 200 && result.status < 300) || result.status === 409)) {
        spool.ack(rec.seq);
        this.#failures = 0;
        this.#status = {
          delivered: this.#status.delivered + 1,
          lastDeliveredAt: Date.now(),
          lastError: null,
          nextAttemptAt: null,
        };
        this.#opts.onDelivered?.(rec.seq, rec.kind);
        continue;
      }
      if (result !== null && PERMANENT.has(result.status)) {
        spool.reject(rec.seq);
        const message = `collector refused record ${rec.seq} (${rec.kind}) with ${result.status}: ${result.body}`;
        this.#status = { ...this.#status, lastError: message };
        this.#opts.onProblem?.({ seq: rec.seq, kind: rec.kind, status: result.status, message, retryInMs: null });
        continue;
      }
      // 401/403 (a token being rotated), 408, 429, 5xx and network errors: the same record again, later.
      this.#failures += 1;
      const retryInMs = backoffMs(this.#failures, RETRY, this.#random);
      const message =
        result !== null
          ? `collector answered ${result.status}: ${result.body}`
          : `collector unreachable: ${error ?? "unknown error"}`;
      this.#status = { ...this.#status, lastError: message, nextAttemptAt: Date.now() + retryInMs };
      this.#opts.onProblem?.({ seq: rec.seq, kind: rec.kind, status: result?.status ?? null, message, retryInMs });
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#status = { ...this.#status, nextAttemptAt: null };
        this.kick();
      }, retryInMs);
      return;
    }
    // The batch is done and more may wait: continue on the next turn of the loop.
    if (!this.#stopped && spool.stats().pending > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.kick();
      }, 0);
    }
  }
}
