/**
 * A typed client for the probe agent (tools/probe-agent.ts): spawns it behind a command prefix such as
 * `ip netns exec <ns>`, matches results to commands by id, and bounds every call and the shutdown in time.
 * Probe results, including failed probes, resolve as values; only a dead agent, a timeout or close() rejects.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import {
  idKey,
  operationBudgetMs,
  validateCommand,
  type HttpCommand,
  type HttpOutcome,
  type ProbeId,
  type ProbeResult,
  type StreamCommand,
  type StreamOutcome,
  type UdpCommand,
  type UdpOutcome,
  type WaitReplyCommand,
  type WaitReplyOutcome,
} from "./tools/probe-commands.ts";

/** Starting node with the tsx loader takes about a second; ten allows for a loaded CI machine. */
export const READY_TIMEOUT_MS = 10_000;
/** Added to an operation's own budget for the pipe round trip and the agent's start-up of the operation. */
const CALL_SLACK_MS = 3000;
/** How long close() waits after asking nicely (exit command), and again after SIGTERM, before escalating. */
const CLOSE_GRACE_MS = 2000;
/** After SIGKILL the kernel reaps at once; this only bounds the wait for the exit event. */
const KILL_WAIT_MS = 2000;
/** The agent's stderr kept for error messages. */
const STDERR_TAIL_CHARS = 4096;

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const agentPath = fileURLToPath(new URL("./tools/probe-agent.ts", import.meta.url));

export interface ProbeClientOptions {
  /** Command run in front of the agent, e.g. ["ip", "netns", "exec", "detour-lab-client"]; [] runs it here. */
  readonly prefix: readonly string[];
  readonly readyTimeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

export interface CallOptions {
  /** Aborting sends a cancel: the operation ends early and resolves with its result so far (`cancelled: true`). */
  readonly signal?: AbortSignal;
  /** Overrides the default bound: the operation's own budget plus CALL_SLACK_MS. */
  readonly overallTimeoutMs?: number;
}

type Fields<C> = Omit<C, "op" | "id">;
export type UdpOptions = Fields<UdpCommand> & CallOptions;
export type WaitReplyOptions = Fields<WaitReplyCommand> & CallOptions;
export type HttpOptions = Fields<HttpCommand> & CallOptions;
export type StreamOptions = Omit<Fields<StreamCommand>, "timeoutMs"> & { readonly timeoutMs?: number } & CallOptions;

export type ProbeClientErrorCode = "start-failed" | "invalid-options" | "timeout" | "agent-exited" | "closed";

export class ProbeClientError extends Error {
  constructor(
    readonly code: ProbeClientErrorCode,
    message: string,
    /** The agent's PID when one was started, so a caller can check that a failed start left nothing behind. */
    readonly pid?: number,
  ) {
    super(message);
    this.name = "ProbeClientError";
  }
}

export interface AgentExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface Pending {
  /** Registered by sendRaw, which also wants the answers to cancel commands. */
  readonly raw: boolean;
  readonly resolve: (result: ProbeResult) => void;
  readonly reject: (err: ProbeClientError) => void;
}

export class ProbeClient {
  /** Resolves when the agent process has exited. */
  readonly exited: Promise<AgentExit>;
  private exit: AgentExit | null = null;
  private readonly pending = new Map<string, Pending>();
  /** Callers waiting for a result without an id (a command too malformed to carry one), oldest first. */
  private readonly idless: Pending[] = [];
  private nextId = 1;
  private stderr = "";
  private closing: Promise<void> | null = null;
  private onReady: (() => void) | null = null;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly pid: number,
  ) {
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      this.stderr = (this.stderr + text).slice(-STDERR_TAIL_CHARS);
    });
    // Writing to an agent that already exited fails with EPIPE, and a failed signal is an `error` event; the exit
    // itself is reported through `exited`.
    child.stdin.on("error", () => undefined);
    child.on("error", () => undefined);
    const lines = createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => {
      this.onLine(line);
    });
    child.on("close", () => {
      this.failAll(
        new ProbeClientError(
          "agent-exited",
          `probe agent ${pid} exited (${this.describeExit()})${this.stderrSuffix()}`,
        ),
      );
    });
  }

  /** Spawns the agent and waits (at most readyTimeoutMs) for its ready line. */
  static async start(opts: ProbeClientOptions): Promise<ProbeClient> {
    const agentArgv = [process.execPath, "--import", "tsx", agentPath];
    const [file, ...args] = [...opts.prefix, ...agentArgv];
    if (file === undefined) throw new ProbeClientError("start-failed", "empty command line");
    const child = spawn(file, args, { cwd: repoRoot, env: opts.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    const pid = child.pid;
    if (pid === undefined) {
      const why = await new Promise<string>((resolve) => {
        child.once("error", (err) => {
          resolve(err.message);
        });
      });
      throw new ProbeClientError("start-failed", `cannot start ${file}: ${why}`);
    }
    const client = new ProbeClient(child, pid);
    const timeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS;
    const ready = new Promise<boolean>((resolve) => {
      client.onReady = () => {
        resolve(true);
      };
      void client.exited.then(() => {
        resolve(false);
      });
    });
    const timer = new AbortController();
    const outcome = await Promise.race([ready, delay(timeoutMs, "timeout" as const, { signal: timer.signal })]);
    timer.abort();
    if (outcome === true) return client;
    const why = outcome === "timeout" ? `no ready line within ${timeoutMs} ms` : `it exited (${client.describeExit()})`;
    await client.close();
    throw new ProbeClientError(
      "start-failed",
      `probe agent ${[file, ...args].join(" ")}: ${why}${client.stderrSuffix()}`,
      pid,
    );
  }

  /** Sends `count` probes `intervalMs` apart; loss, RTT percentiles, duplicates and late replies. */
  udp(opts: UdpOptions): Promise<UdpOutcome> {
    const { signal, overallTimeoutMs, ...fields } = opts;
    return this.call({ op: "udp", ...fields }, { signal, overallTimeoutMs }) as Promise<UdpOutcome>;
  }

  /** Probes every intervalMs until the first reply or the deadline; ok:false when none came. */
  waitReply(opts: WaitReplyOptions): Promise<WaitReplyOutcome> {
    const { signal, overallTimeoutMs, ...fields } = opts;
    return this.call({ op: "wait-reply", ...fields }, { signal, overallTimeoutMs }) as Promise<WaitReplyOutcome>;
  }

  /** One GET on a fresh connection. */
  http(opts: HttpOptions): Promise<HttpOutcome> {
    const { signal, overallTimeoutMs, ...fields } = opts;
    return this.call({ op: "http", ...fields }, { signal, overallTimeoutMs }) as Promise<HttpOutcome>;
  }

  /** A steady probe stream with gap (outage) detection; abort the signal to end it early. */
  stream(opts: StreamOptions): Promise<StreamOutcome> {
    const { signal, overallTimeoutMs, ...fields } = opts;
    return this.call({ op: "stream", ...fields }, { signal, overallTimeoutMs }) as Promise<StreamOutcome>;
  }

  /**
   * Writes one line as is, for tests of the agent's input handling. The answer is matched by `expectId` when the
   * line carries a readable id, otherwise it is the next result without an id.
   */
  sendRaw(line: string, opts: { expectId?: ProbeId; timeoutMs: number }): Promise<ProbeResult> {
    if (line.includes("\n"))
      return Promise.reject(new ProbeClientError("invalid-options", "a raw command is one line"));
    return this.register(opts.expectId, opts.timeoutMs, line, true);
  }

  /** The last lines the agent wrote to stderr. */
  stderrTail(): string {
    return this.stderr;
  }

  /**
   * Stops the agent: the exit command, then SIGTERM to its PID after CLOSE_GRACE_MS, then SIGKILL. Safe to call
   * more than once; every call resolves when the process is gone (or the bounded wait ran out).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.failAll(new ProbeClientError("closed", "probe client closed"));
    if (this.exit !== null) return;
    this.child.stdin.end(`${JSON.stringify({ op: "exit" })}\n`);
    if (await this.exitedWithin(CLOSE_GRACE_MS)) return;
    this.signal("SIGTERM");
    if (await this.exitedWithin(CLOSE_GRACE_MS)) return;
    this.signal("SIGKILL");
    await this.exitedWithin(KILL_WAIT_MS);
  }

  private signal(signal: NodeJS.Signals): void {
    // Only while our child is alive: after its exit the PID may belong to someone else.
    if (this.exit !== null) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // exited between the check and the signal
    }
  }

  private async exitedWithin(ms: number): Promise<boolean> {
    if (this.exit !== null) return true;
    const timer = new AbortController();
    const result = await Promise.race([
      this.exited.then(() => true),
      delay(ms, false, { signal: timer.signal }).catch(() => false),
    ]);
    timer.abort();
    return result;
  }

  private call(command: Record<string, unknown>, opts: CallOptions): Promise<ProbeResult> {
    const id = this.nextId++;
    const checked = validateCommand({ ...command, id });
    if (!checked.ok) return Promise.reject(new ProbeClientError("invalid-options", checked.error));
    const cmd = checked.command;
    if (cmd.op === "cancel" || cmd.op === "exit")
      return Promise.reject(new ProbeClientError("invalid-options", `${cmd.op} is not an operation`));
    const timeoutMs = opts.overallTimeoutMs ?? operationBudgetMs(cmd) + CALL_SLACK_MS;
    const result = this.register(id, timeoutMs, JSON.stringify(cmd), false);
    const signal = opts.signal;
    if (signal !== undefined) {
      const cancel = (): void => {
        this.write(JSON.stringify({ op: "cancel", id }));
      };
      if (signal.aborted) cancel();
      else signal.addEventListener("abort", cancel, { once: true });
      void result
        .finally(() => {
          signal.removeEventListener("abort", cancel);
        })
        .catch(() => undefined);
    }
    return result;
  }

  private register(id: ProbeId | undefined, timeoutMs: number, line: string, raw: boolean): Promise<ProbeResult> {
    if (this.closing !== null || this.exit !== null) {
      return Promise.reject(new ProbeClientError("closed", "probe client closed"));
    }
    return new Promise<ProbeResult>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        if (id !== undefined) this.pending.delete(idKey(id));
        else this.idless.splice(this.idless.indexOf(entry), 1);
      };
      const entry: Pending = {
        raw,
        resolve: (r) => {
          finish();
          resolve(r);
        },
        reject: (e) => {
          finish();
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        // Free the agent's sockets too; a late result is then dropped as unmatched.
        if (id !== undefined) this.write(JSON.stringify({ op: "cancel", id }));
        entry.reject(
          new ProbeClientError(
            "timeout",
            `no result for ${line.slice(0, 200)} within ${timeoutMs} ms${this.stderrSuffix()}`,
          ),
        );
      }, timeoutMs);
      if (id !== undefined) this.pending.set(idKey(id), entry);
      else this.idless.push(entry);
      this.write(line);
    });
  }

  private write(line: string): void {
    if (this.exit === null && this.child.stdin.writable) this.child.stdin.write(`${line}\n`);
  }

  private onLine(line: string): void {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return; // not a protocol line (a stray print); the agent's protocol lines are always JSON
    }
    if (typeof value !== "object" || value === null) return;
    const msg = value as Partial<Record<string, unknown>>;
    if (msg.ready === true) {
      this.onReady?.();
      this.onReady = null;
      return;
    }
    const id = msg.id;
    const entry = typeof id === "number" || typeof id === "string" ? this.pending.get(idKey(id)) : this.idless[0];
    // A cancel that raced the operation's end is answered with the operation's id, after its result went out.
    if (msg.op === "cancel" && entry?.raw !== true) return;
    entry?.resolve(value as ProbeResult);
  }

  private failAll(err: ProbeClientError): void {
    for (const entry of [...this.pending.values(), ...this.idless]) entry.reject(err);
  }

  private describeExit(): string {
    if (this.exit === null) return "still running";
    return this.exit.signal !== null ? `signal ${this.exit.signal}` : `code ${String(this.exit.code)}`;
  }

  private stderrSuffix(): string {
    const tail = this.stderr.trim();
    return tail === "" ? "" : `; agent stderr: ${tail.slice(-1000)}`;
  }
}
