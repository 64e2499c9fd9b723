/** Process liveness and orderly stopping by PID, through /proc: never pkill or killall. */
import { readdirSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** True if the PID is a live process; a zombie counts as dead. */
export function isAlive(pid: number): boolean {
  const f = statFields(pid);
  return f !== null && f[0] !== "Z" && f[0] !== "X";
}

/** The PID and all its descendants (children first), found through /proc. */
export function processTree(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [pid];
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const ppid = Number(statFields(Number(entry))?.[1]);
    if (!Number.isFinite(ppid)) continue;
    const list = byParent.get(ppid) ?? [];
    list.push(Number(entry));
    byParent.set(ppid, list);
  }
  const out: number[] = [];
  const visit = (p: number, depth: number): void => {
    if (depth > 32) return;
    for (const c of byParent.get(p) ?? []) visit(c, depth + 1);
    out.push(p);
  };
  visit(pid, 0);
  return out;
}

/** How long an orderly shutdown may take before SIGKILL: engines send BYE or IKE DELETE first. */
export const STOP_GRACE_MS = 3000;
/** After SIGKILL the kernel needs only a moment; waiting longer means the process is stuck in the kernel. */
const KILL_WAIT_MS = 2000;
const POLL_MS = 20;

/** Sends `signal`, then SIGKILL to whatever is alive after graceMs; resolves once all are gone (bounded). */
export async function stopPids(
  pids: readonly number[],
  signal: NodeJS.Signals = "SIGTERM",
  graceMs = STOP_GRACE_MS,
): Promise<void> {
  const live = pids.filter(isAlive);
  for (const p of live) trySignal(p, signal);
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && live.some(isAlive)) await sleep(POLL_MS);
  for (const p of live.filter(isAlive)) trySignal(p, "SIGKILL");
  const hardDeadline = Date.now() + KILL_WAIT_MS;
  while (Date.now() < hardDeadline && live.some(isAlive)) await sleep(POLL_MS);
}

export function trySignal(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
