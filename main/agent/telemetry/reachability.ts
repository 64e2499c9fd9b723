/**
 * Application reachability: each configured internal URL is fetched through the tunnel on its own interval,
 * and the result (latency, or why it failed) is handed to the telemetry. Only while connected: a failure while
 * the tunnel is down says nothing about the application.
 */
import type { TelemetryConfig } from "../../core/config/schema.ts";

import type { ReachabilityResult } from "../../core/telemetry/status.ts";

export type { ReachabilityResult };

type Target = TelemetryConfig["reachability"][number];

/** One check: a GET whose status below 500 counts as reachable (a 401 or 404 still proves the path works). */
export async function checkTarget(t: Target): Promise<ReachabilityResult> {
  const started = performance.now();
  try {
    const r = await fetch(t.url, { signal: AbortSignal.timeout(t.timeoutMs), redirect: "manual" });
    await r.arrayBuffer();
    const latencyMs = performance.now() - started;
    return {
      target: t.name,
      ok: r.status < 500,
      latencyMs,
      status: r.status,
      error: r.status < 500 ? null : `HTTP ${r.status}`,
    };
  } catch (e) {
    const msg = e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e);
    return { target: t.name, ok: false, latencyMs: null, status: null, error: msg };
  }
}

export class ReachabilityChecker {
  readonly #targets: readonly Target[];
  readonly #onResult: (r: ReachabilityResult) => void;
  readonly #enabled: () => boolean;
  #timers: NodeJS.Timeout[] = [];
  #last = new Map<string, ReachabilityResult>();

  constructor(targets: readonly Target[], enabled: () => boolean, onResult: (r: ReachabilityResult) => void) {
    this.#targets = targets;
    this.#enabled = enabled;
    this.#onResult = onResult;
  }

  start(): void {
    for (const t of this.#targets) {
      let busy = false;
      const timer = setInterval(() => {
        if (busy || !this.#enabled()) return;
        busy = true;
        void checkTarget(t)
          .then((r) => {
            this.#last.set(t.name, r);
            this.#onResult(r);
          })
          .finally(() => {
            busy = false;
          });
      }, t.intervalMs);
      timer.unref();
      this.#timers.push(timer);
    }
  }

  last(): ReachabilityResult[] {
    return [...this.#last.values()];
  }

  stop(): void {
    for (const t of this.#timers) clearInterval(t);
    this.#timers = [];
  }
}
