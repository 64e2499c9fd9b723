/** What every baseline of `npm run bench -- compare` shares: its context, its handle, and a reply check bound to one device. */
import { setTimeout as sleep } from "node:timers/promises";
import { pingThrough } from "../../../native/platform/probe.linux.ts";
import type { LabState } from "../../lab/lab.ts";
import type { GatewayTopology, LabTopology } from "../../lab/topology.ts";

/** A device that does not exist yet makes ping exit at once; retry this often until it appears. */
const NO_DEVICE_RETRY_MS = 5;
/** Each ping attempt runs at most this long, so a device that is replaced mid-wait is picked up again. */
const PING_ATTEMPT_MS = 1000;
/** 20 ms between echoes finds a fresh tunnel quickly without flooding it (as the engines bench does). */
const FIRST_REPLY_INTERVAL_MS = 20;

export interface BaselineContext {
  topo: LabTopology;
  state: LabState;
  /** Where the tunnel goes first, and where a failover should take it. */
  primary: GatewayTopology;
  secondary: GatewayTopology;
}

/** A running baseline: a tunnel plus whatever the admin wired around it to move it to the other gateway. */
export interface Baseline {
  readonly name: string;
  /** The settings the table prints next to the numbers. */
  readonly settings: string;
  /** How many times it moved the tunnel to the other gateway so far. */
  failovers(): number;
  /** Stops the watchdog or hook first, then the tunnel; by PID; idempotent. */
  stop(): Promise<void>;
}

/** Epoch ms of the first echo reply through `ifname` from corp, or null if none came before `deadline`. */
export async function firstReplyThrough(
  topo: LabTopology,
  ifname: string,
  deadline: number,
  signal?: AbortSignal,
): Promise<number | null> {
  const maxAttempts = Math.ceil((deadline - Date.now()) / NO_DEVICE_RETRY_MS) + 1;
  for (let i = 0; i < maxAttempts && Date.now() < deadline && signal?.aborted !== true; i++) {
    const r = await pingThrough({
      ifname,
      target: topo.corp.address,
      netns: topo.client.ns,
      deadlineAt: Math.min(deadline, Date.now() + PING_ATTEMPT_MS),
      intervalMs: FIRST_REPLY_INTERVAL_MS,
      signal,
    });
    if (r.ok) return r.at;
    await sleep(NO_DEVICE_RETRY_MS);
  }
  return null;
}
