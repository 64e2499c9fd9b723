/**
 * Builds and invokes `delayq`, the lab's NFQUEUE latency tool (this kernel has no netem): compiles the C source on
 * demand into .build/, turns a delay/jitter request into a validated command line and starts it in a namespace.
 */
import { execFile } from "node:child_process";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { promisify } from "node:util";
import { inNs, isAlive, readIfExists, spawnDaemon, stopPids, waitFor } from "./exec.ts";

const execFileAsync = promisify(execFile);

/** Compiling delayq takes well under a second; 60 s leaves room for a loaded CI box yet still fails a hung `cc`. */
const COMPILE_TIMEOUT_MS = 60_000;

/** delayq binds its queue in a few milliseconds; the bound only catches a broken build. */
const DELAYQ_READY_TIMEOUT_MS = 5_000;

/** The largest delay or jitter delayq accepts; the C program enforces the same bound. */
export const DELAYQ_MAX_MS = 10_000;
export const DELAYQ_MAX_QUEUE = 65_535;

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const sourcePath = join(repoRoot, "test", "lab", "delayq", "delayq.c");
const binaryDir = join(repoRoot, ".build", "delayq");
const binaryPath = join(binaryDir, "delayq");

async function mtimeMs(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Turns a failed `cc` run into an error that names what to install when that is the cause. */
function compileError(err: unknown): Error {
  const e = err as NodeJS.ErrnoException & { stderr?: string; killed?: boolean; signal?: string | null };
  const output = typeof e.stderr === "string" ? e.stderr.trim() : "";
  if (e.code === "ENOENT") {
    return new Error("delayq: cannot compile: `cc` not found; install the `gcc` package", { cause: err });
  }
  if (e.killed === true || e.signal != null) {
    return new Error(`delayq: cc did not finish within ${COMPILE_TIMEOUT_MS} ms (signal ${e.signal ?? "?"})`, {
      cause: err,
    });
  }
  if (/lib(netfilter_queue|nfnetlink)\/\S*\.h: No such file|cannot find -l(netfilter_queue|nfnetlink)/.test(output)) {
    return new Error(
      `delayq: cannot compile: libnetfilter_queue is missing; install \`libnetfilter-queue-dev\`\n${output}`,
      {
        cause: err,
      },
    );
  }
  if (/cannot find crt|stdio\.h: No such file|cannot execute 'cc1'/.test(output)) {
    return new Error(`delayq: cannot compile: the C toolchain is incomplete; install \`gcc\`\n${output}`, {
      cause: err,
    });
  }
  return new Error(`delayq: compiling ${sourcePath} failed\n${output}`, { cause: err });
}

/**
 * Returns the absolute path of the delayq binary, compiling it first when it is missing or older than its source.
 * The compiler writes a private temporary file that is then renamed into place, so concurrent callers never run a
 * half-written binary.
 */
export async function ensureDelayqBinary(): Promise<string> {
  const sourceMtime = await mtimeMs(sourcePath);
  if (sourceMtime === undefined) throw new Error(`delayq: source not found at ${sourcePath}`);
  const binaryMtime = await mtimeMs(binaryPath);
  if (binaryMtime !== undefined && binaryMtime >= sourceMtime) return binaryPath;

  await mkdir(binaryDir, { recursive: true });
  const tmpPath = `${binaryPath}.tmp-${process.pid}-${Date.now()}`;
  const args = ["-O2", "-Wall", "-Wextra", "-Werror", "-o", tmpPath, sourcePath, "-lnetfilter_queue", "-lnfnetlink"];
  try {
    await execFileAsync("cc", args, { timeout: COMPILE_TIMEOUT_MS, encoding: "utf8" });
    await rename(tmpPath, binaryPath);
  } catch (err) {
    await rm(tmpPath, { force: true });
    throw compileError(err);
  }
  return binaryPath;
}

function checkInteger(name: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`delayq: ${name} must be an integer from 0 to ${max}, got ${String(value)}`);
  }
}

/**
 * The argv that runs delayq on NFQUEUE `queueNum`, holding each packet `delayMs` plus uniform(0, `jitterMs`) ms.
 * Prefix it with `ip netns exec <ns>` to run it inside a lab namespace.
 */
export function delayqArgv(binary: string, queueNum: number, delayMs: number, jitterMs: number): string[] {
  if (binary === "") throw new Error("delayq: binary path is empty");
  checkInteger("queue number", queueNum, DELAYQ_MAX_QUEUE);
  checkInteger("delay (ms)", delayMs, DELAYQ_MAX_MS);
  checkInteger("jitter (ms)", jitterMs, DELAYQ_MAX_MS);
  return [binary, String(queueNum), String(delayMs), String(jitterMs)];
}

/**
 * Starts delayq on NFQUEUE `queueNum` inside namespace `ns` (queues are per namespace) and returns its PID once it
 * holds the queue, so rules that send packets there take effect at once. Logs to `logFile`.
 */
export async function startDelayq(
  ns: string,
  queueNum: number,
  delayMs: number,
  jitterMs: number,
  logFile: string,
): Promise<number> {
  const bin = await ensureDelayqBinary();
  const pid = spawnDaemon(inNs(ns, delayqArgv(bin, queueNum, delayMs, jitterMs)), { logFile });
  try {
    await waitFor(
      `delayq on queue ${queueNum} in ${ns}`,
      () => {
        if (!isAlive(pid)) throw new Error(`delayq exited: ${readIfExists(logFile).slice(-1000)}`);
        return readIfExists(logFile).includes("ready");
      },
      { timeoutMs: DELAYQ_READY_TIMEOUT_MS },
    );
  } catch (e) {
    await stopPids([pid]);
    throw e;
  }
  return pid;
}
