/** Running commands for the lab: bounded in time, with the command named in every error. */
import { spawn } from "node:child_process";
import { openSync, closeSync, readFileSync, existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { runOk, type RunOptions } from "../../native/platform/run.ts";

export { CommandError, run, runOk, type RunOptions, type RunResult } from "../../native/platform/run.ts";
export { isAlive, processTree, stopPids, STOP_GRACE_MS } from "../../native/platform/process-tree.linux.ts";

/** argv that runs a command inside a network namespace. */
export function inNs(ns: string, argv: readonly string[]): [string, ...string[]] {
  return ["ip", "netns", "exec", ns, ...argv];
}

export async function nsRun(ns: string, argv: readonly string[], opts: RunOptions = {}): Promise<string> {
  const [file, ...args] = inNs(ns, argv);
  return runOk(file, args, opts);
}

/** Polls `probe` until it returns a value other than undefined/false, or throws after timeoutMs naming `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false> | T | undefined | false,
  opts: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const interval = opts.intervalMs ?? 20;
  const maxTries = Math.ceil(opts.timeoutMs / interval) + 1;
  for (let i = 0; i < maxTries; i++) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() >= deadline) break;
    await sleep(interval);
  }
  throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${what}`);
}

export interface DaemonOptions {
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Text written to the daemon's stdin, which is then closed. */
  input?: string;
}

/**
 * Starts a long-running process detached from the caller (the lab CLI exits while gateways keep running) and
 * returns its PID. `ip netns exec` execs the command, so the PID is the daemon's own.
 */
export function spawnDaemon(argv: readonly string[], opts: DaemonOptions): number {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error("spawnDaemon: empty argv");
  const fd = openSync(opts.logFile, "a", 0o600);
  try {
    const child = spawn(file, args, {
      detached: true,
      stdio: [opts.input === undefined ? "ignore" : "pipe", fd, fd],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    if (child.pid === undefined) throw new Error(`could not start ${argv.join(" ")}`);
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    child.on("error", () => undefined);
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

export function readIfExists(path: string): string {
  return existsSync(path) ? readFileSync(path, "utf8") : "";
}
