/** Waiting on detourd's status from a lab test: polled, bounded in count and time, failing with the last status seen. */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import type { ControlClient } from "../../main/client/control-client.ts";

export type Status = Awaited<ReturnType<ControlClient["status"]>>;

/** Status is cheap to ask for; 100 ms resolves what a user would notice without flooding the socket. */
export const STATUS_POLL_MS = 100;

/** Polls until `pred` holds and returns that status; fails naming `what`, the bound and the last status (plus `context`). */
export async function waitForStatus(
  c: ControlClient,
  what: string,
  pred: (s: Status) => boolean,
  timeoutMs: number,
  opts: { pollMs?: number; context?: () => string } = {},
): Promise<Status> {
  const pollMs = opts.pollMs ?? STATUS_POLL_MS;
  const until = Date.now() + timeoutMs;
  let last: Status | null = null;
  for (let i = 0; i < Math.ceil(timeoutMs / pollMs) + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(pollMs);
  }
  const extra = opts.context === undefined ? "" : `\n${opts.context()}`;
  assert.fail(
    `timed out after ${timeoutMs} ms waiting for ${what}; last status: ${JSON.stringify(last, null, 1).slice(0, 3000)}${extra}`,
  );
}
