/** Running OS commands from the native layer: bounded in time, output captured, the command named in errors. */
import { execFile } from "node:child_process";

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
  /** Kills the command (SIGKILL) when aborted; the result then has code null. */
  signal?: AbortSignal;
}

/** Local OS commands answer in milliseconds; one that takes this long is hung. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 20_000;

export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    let stdinError = "";
    const child = execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        maxBuffer: 64 * 1024 * 1024,
        killSignal: "SIGKILL",
        ...(opts.signal === undefined ? {} : { signal: opts.signal }),
      },
      (err, stdout, stderr) => {
        const e = err as (NodeJS.ErrnoException & { code?: number | string; signal?: string }) | null;
        const code = e === null ? 0 : typeof e.code === "number" ? e.code : null;
        const spawnError = e !== null && typeof e.code === "string" ? `${e.code}: ${e.message}` : "";
        resolve({ code, signal: e?.signal ?? null, stdout, stderr: stderr + spawnError + stdinError });
      },
    );
    if (opts.input !== undefined) {
      // A command that exits before reading its input (an `nft` that fails at once) closes the pipe: the write
      // then fails with EPIPE, which without a listener would be thrown at the top of the daemon. The command's
      // own exit status says what went wrong; the broken pipe is only noted beside it.
      child.stdin?.on("error", (err: NodeJS.ErrnoException) => {
        stdinError = `\n(its input could not be written: ${err.code ?? err.message})`;
      });
      child.stdin?.end(opts.input);
    }
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

/** argv that runs a command inside a network namespace, or as is when `netns` is undefined. */
export function inNetns(netns: string | undefined, argv: readonly string[]): [string, ...string[]] {
  const [file, ...rest] = argv;
  if (file === undefined) throw new Error("inNetns: empty argv");
  return netns === undefined ? [file, ...rest] : ["ip", "netns", "exec", netns, file, ...rest];
}
