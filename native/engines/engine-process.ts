/**
 * One supervised engine process: spawned (optionally inside a network namespace) with a clean environment,
 * its output kept as a bounded tail and streamed line by line to the driver, its exit observed, and stopped
 * orderly then by PID together with any children it forked.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { processTree, stopPids, STOP_GRACE_MS } from "../platform/process-tree.linux.ts";
import { noteChild } from "../platform/child-watch.ts";
import { inNetns } from "../platform/run.ts";

export interface EngineProcessOptions {
  argv: readonly string[];
  netns?: string;
  /** The complete environment: engines never inherit the daemon's (openconnect passes it on to its script). */
  env: Record<string, string>;
  /** Written to stdin, which is then closed (openconnect's --passwd-on-stdin). */
  stdin?: string;
  /** Every output line is appended here too. */
  logFile?: string;
  onLine?: (line: string, at: number) => void;
}

export interface ProcessExit {
  code: number | null;
  signal: string | null;
  at: number;
}

/** How many output lines to keep for error messages and diagnostics. */
const TAIL_LINES = 200;
/** A single line longer than this is cut: engines print short lines, so a long one is garbage. */
const MAX_LINE = 4096;

export class EngineProcess {
  readonly pid: number;
  readonly spawnedAt: number;
  readonly exited: Promise<ProcessExit>;
  #child: ChildProcess;
  #tail: string[] = [];
  #exit: ProcessExit | null = null;
  #log: WriteStream | null;

  private constructor(opts: EngineProcessOptions) {
    const [file, ...args] = inNetns(opts.netns, opts.argv);
    this.#log = opts.logFile === undefined ? null : createWriteStream(opts.logFile, { flags: "a", mode: 0o600 });
    // A vanished work folder or a full disk must cost the log, not the daemon.
    this.#log?.on("error", () => {
      this.#log = null;
    });
    this.spawnedAt = Date.now();
    this.#child = spawn(file, args, {
      stdio: [opts.stdin === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: opts.env,
    });
    if (this.#child.pid === undefined) {
      // spawn reports ENOENT asynchronously; a missing pid means it could not start at all
      this.pid = -1;
    } else {
      this.pid = this.#child.pid;
      noteChild("spawned", { pid: this.pid, argv: [file, ...args] });
    }
    let told = false;
    const toldExit = (): void => {
      if (told || this.pid < 0) return;
      told = true;
      noteChild("exited", { pid: this.pid, argv: [file, ...args] });
    };
    if (opts.stdin !== undefined) {
      // An engine that exits before reading its input (a bad argument, a missing library) closes the pipe; the
      // write then fails with EPIPE, which without a listener would be thrown at the top of the daemon. Its exit
      // and output say what went wrong; the broken pipe is only noted in its tail.
      this.#child.stdin?.on("error", (err: NodeJS.ErrnoException) => {
        this.#line(`(its input could not be written: ${err.code ?? err.message})`, undefined);
      });
      this.#child.stdin?.end(opts.stdin);
    }
    const onData = (stream: NodeJS.ReadableStream): void => {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (d: string) => {
        buf += d;
        let nl = buf.indexOf("\n");
        while (nl >= 0) {
          this.#line(buf.slice(0, nl), opts.onLine);
          buf = buf.slice(nl + 1);
          nl = buf.indexOf("\n");
        }
        if (buf.length > MAX_LINE) {
          this.#line(buf.slice(0, MAX_LINE), opts.onLine);
          buf = "";
        }
      });
      stream.on("end", () => {
        if (buf !== "") this.#line(buf, opts.onLine);
      });
    };
    if (this.#child.stdout !== null) onData(this.#child.stdout);
    if (this.#child.stderr !== null) onData(this.#child.stderr);
    this.exited = new Promise((resolve) => {
      this.#child.on("error", (e) => {
        this.#line(`spawn failed: ${e.message}`, opts.onLine);
        this.#exit ??= { code: null, signal: null, at: Date.now() };
        toldExit();
        resolve(this.#exit);
      });
      // "close" comes after the output streams are drained, so every line is in before the exit is reported.
      this.#child.on("close", (code, signal) => {
        this.#exit ??= { code, signal, at: Date.now() };
        this.#log?.end();
        toldExit();
        resolve(this.#exit);
      });
    });
  }

  static spawn(opts: EngineProcessOptions): EngineProcess {
    return new EngineProcess(opts);
  }

  #line(raw: string, onLine: EngineProcessOptions["onLine"]): void {
    const line = raw.length > MAX_LINE ? raw.slice(0, MAX_LINE) : raw;
    this.#tail.push(line);
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    this.#log?.write(line + "\n");
    onLine?.(line, Date.now());
  }

  get running(): boolean {
    return this.#exit === null;
  }

  get exit(): ProcessExit | null {
    return this.#exit;
  }

  /** The last `n` output lines, for error messages. */
  tail(n = 20): string {
    return this.#tail.slice(-n).join("\n");
  }

  /** Orderly stop with `signal`, SIGKILL after graceMs; children the engine forked go the same way. */
  async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = STOP_GRACE_MS): Promise<void> {
    if (this.pid > 0 && this.#exit === null) {
      const tree = processTree(this.pid);
      await stopPids(tree, signal, graceMs);
    }
    await this.exited;
  }
}
