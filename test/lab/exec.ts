/** Running commands for the lab: bounded in time, with the command named in every error. */
import { execFile, spawn } from "node:child_process";
import { openSync, closeSync, readFileSync, existsSync, readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** A command that needed longer than this is hung, not slow: lab commands are all local. */
const DEFAULT_COMMAND_TIMEOUT_MS = 20_000;

export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, env: opts.env ?? process.env, cwd: opts.cwd, maxBuffer: 64 * 1024 * 1024, killSignal: "SIGKILL" },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
        const code = e === null ? 0 : typeof e.code === "number" ? e.code : null;
        const spawnError = e !== null && typeof e.code === "string" ? `${e.code}: ${e.message}` : "";
        resolve({ code, signal: e?.signal ?? null, stdout, stderr: stderr + spawnError });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: RunResult,
  ) {
    const why = result.signal !== null ? `killed by ${result.signal} (timed out?)` : `exit ${String(result.code)}`;
    super(`command failed (${why}): ${argv.join(" ")}\n${(result.stderr || result.stdout).trim().slice(0, 2000)}`);
    this.name = "CommandError";
  }
}

/** Runs a command and returns its stdout; throws a CommandError naming the command if it fails. */
export async function runOk(file: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new CommandError([file, ...args], r);
  return r.stdout;
}

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

/** True if the PID is a live process (a zombie counts as dead). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** The PID and all its descendants, found through /proc (children first). */
export function processTree(pid: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const entry of safeReaddir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = byParent.get(ppid) ?? [];
      list.push(Number(entry));
      byParent.set(ppid, list);
    } catch {
      // the process exited while we looked
    }
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

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** How long an orderly shutdown may take before the lab uses SIGKILL: engines send BYE/DELETE first. */
export const STOP_GRACE_MS = 3000;

/**
 * Stops processes by PID: `signal` first, SIGKILL for whatever is still alive after graceMs. Waits until all
 * are gone (bounded). Never uses pkill or killall.
 */
export async function stopPids(pids: readonly number[], signal: NodeJS.Signals = "SIGTERM", graceMs = STOP_GRACE_MS): Promise<void> {
  const live = pids.filter(isAlive);
  for (const p of live) trySignal(p, signal);
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && live.some(isAlive)) await sleep(20);
  for (const p of live.filter(isAlive)) trySignal(p, "SIGKILL");
  const hardDeadline = Date.now() + 2000;
  while (Date.now() < hardDeadline && live.some(isAlive)) await sleep(20);
}

function trySignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export function readIfExists(path: string): string {
  return existsSync(path) ? readFileSync(path, "utf8") : "";
}
