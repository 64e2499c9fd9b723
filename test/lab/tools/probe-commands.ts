/**
 * The probe agent's wire protocol, defined once for the agent and its client: one JSON command per line in, one
 * JSON result per line out, with runtime validation of commands whose errors name the offending field.
 */
import type { Gap, RttSummary } from "./probe-stats.ts";

/** Chosen by the sender; the result of a command carries the same id. */
export type ProbeId = number | string;

export interface UdpCommand {
  readonly op: "udp";
  readonly id: ProbeId;
  readonly host: string;
  readonly port: number;
  readonly count: number;
  readonly intervalMs: number;
  /** Per-probe reply timeout, and how long the agent waits after the last send. */
  readonly timeoutMs: number;
}

export interface WaitReplyCommand {
  readonly op: "wait-reply";
  readonly id: ProbeId;
  readonly host: string;
  readonly port: number;
  readonly intervalMs: number;
  readonly deadlineMs: number;
}

export interface HttpCommand {
  readonly op: "http";
  readonly id: ProbeId;
  readonly url: string;
  readonly timeoutMs: number;
}

export interface StreamCommand {
  readonly op: "stream";
  readonly id: ProbeId;
  readonly host: string;
  readonly port: number;
  readonly ratePerSec: number;
  readonly durationMs: number;
  /** A reply later than this after its probe counts as lost; defaults to STREAM_REPLY_TIMEOUT_MS. */
  readonly timeoutMs: number;
}

/** Ends the running operation with this id early; its result (so far) is the answer. */
export interface CancelCommand {
  readonly op: "cancel";
  readonly id: ProbeId;
}

export interface ExitCommand {
  readonly op: "exit";
}

export type OperationCommand = UdpCommand | WaitReplyCommand | HttpCommand | StreamCommand;
export type ProbeCommand = OperationCommand | CancelCommand | ExitCommand;
export type OperationName = OperationCommand["op"];
export const COMMAND_OPS = [
  "udp",
  "wait-reply",
  "http",
  "stream",
  "cancel",
  "exit",
] as const satisfies readonly ProbeCommand["op"][];

/** Sent once, before any result, when the agent is ready for commands. */
export interface ReadyLine {
  readonly ready: true;
  readonly pid: number;
}

/** A command that could not run: malformed, unknown id for cancel, or an I/O error before any probe was sent. */
export interface ErrorResult {
  readonly id?: ProbeId;
  readonly op?: OperationName | "cancel";
  readonly ok: false;
  readonly error: string;
}

interface SendStats {
  /** Sends the kernel refused (ENETUNREACH while the tunnel route is missing, ...); those probes count as lost. */
  readonly sendErrors: number;
  readonly lastSendError: string | null;
}

interface Window {
  readonly startedAt: number;
  readonly endedAt: number;
  /** True when a cancel command ended the operation early. */
  readonly cancelled: boolean;
}

export interface UdpResult extends SendStats, Window {
  readonly id: ProbeId;
  readonly op: "udp";
  readonly ok: true;
  readonly sent: number;
  readonly received: number;
  readonly duplicates: number;
  readonly late: number;
  readonly stray: number;
  readonly lossPct: number;
  readonly rttMs: RttSummary | null;
  readonly firstReplyAt: number | null;
}

export interface WaitReplySuccess extends SendStats {
  readonly id: ProbeId;
  readonly op: "wait-reply";
  readonly ok: true;
  readonly startedAt: number;
  readonly firstReplyAt: number;
  readonly probesSent: number;
  /** Round trip of the probe whose reply came first. */
  readonly rttMs: number;
}

export interface WaitReplyFailure extends SendStats {
  readonly id: ProbeId;
  readonly op: "wait-reply";
  readonly ok: false;
  readonly error: string;
  readonly startedAt: number;
  readonly probesSent: number;
  readonly cancelled: boolean;
}

export interface HttpSuccess {
  readonly id: ProbeId;
  readonly op: "http";
  readonly ok: true;
  readonly status: number;
  /** The body as UTF-8, cut at HTTP_BODY_TEXT_LIMIT bytes so a throughput download does not flood the pipe. */
  readonly body: string;
  readonly bodyBytes: number;
  readonly bodyTruncated: boolean;
  readonly startedAt: number;
  /** From the start of the request to the last byte of the body. */
  readonly elapsedMs: number;
}

export interface HttpFailure {
  readonly id: ProbeId;
  readonly op: "http";
  readonly ok: false;
  readonly error: string;
  readonly startedAt: number;
  readonly elapsedMs: number;
  readonly cancelled: boolean;
}

export interface StreamResult extends SendStats, Window {
  readonly id: ProbeId;
  readonly op: "stream";
  readonly ok: true;
  readonly sent: number;
  readonly received: number;
  /** sent - received: no reply, or only a late one. */
  readonly lost: number;
  readonly duplicates: number;
  readonly late: number;
  readonly stray: number;
  readonly lossPct: number;
  readonly longestGapMs: number;
  /** The first MAX_REPORTED_GAPS gaps; gapCount counts them all. */
  readonly gaps: readonly Gap[];
  readonly gapCount: number;
  readonly rttMs: RttSummary | null;
  readonly firstReplyAt: number | null;
}

export type UdpOutcome = UdpResult | ErrorResult;
export type WaitReplyOutcome = WaitReplySuccess | WaitReplyFailure | ErrorResult;
export type HttpOutcome = HttpSuccess | HttpFailure | ErrorResult;
export type StreamOutcome = StreamResult | ErrorResult;
export type ProbeResult =
  UdpResult | WaitReplySuccess | WaitReplyFailure | HttpSuccess | HttpFailure | StreamResult | ErrorResult;

/** Longer lines are refused before parsing: a command is a few hundred bytes. */
export const MAX_COMMAND_LINE_CHARS = 16 * 1024;
/** Every operation must fit in this; longer soak tests run several streams. */
export const MAX_OPERATION_MS = 15 * 60 * 1000;
/** Beyond the operation's own timing: the agent's bookkeeping and a loaded event loop. */
export const OPERATION_SLACK_MS = 2000;
/** A stream probe answered later than this is lost: a voice or video call would have dropped it already. */
export const STREAM_REPLY_TIMEOUT_MS = 1000;
/** A timer-driven sender cannot honestly go faster than one probe per millisecond. */
export const MAX_RATE_PER_SEC = 1000;
export const MAX_PROBE_COUNT = 100_000;
/** Longest per-probe or HTTP timeout; a reply slower than a minute is not a reply. */
export const MAX_TIMEOUT_MS = 60_000;
/** The part of an HTTP body returned as text (corp answers are ~100 bytes); bodyBytes always counts all of it. */
export const HTTP_BODY_TEXT_LIMIT = 4096;
/** Gaps listed in a stream result; a flapping link could otherwise produce a result of megabytes. */
export const MAX_REPORTED_GAPS = 1000;

export type ParsedCommand = { readonly ok: true; readonly command: ProbeCommand } | ErrorResult;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const MAX_ID_LENGTH = 128;

class FieldError extends Error {}

function shown(value: unknown): string {
  if (value === undefined) return "nothing";
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isProbeId(value: unknown): value is ProbeId {
  return (
    (typeof value === "number" && Number.isFinite(value)) ||
    (typeof value === "string" && value.length > 0 && value.length <= MAX_ID_LENGTH)
  );
}

/** Reads the fields of one command, naming `op.field` in every complaint and refusing fields it does not know. */
class Fields {
  private readonly used = new Set<string>(["op", "id"]);

  constructor(
    private readonly op: string,
    private readonly record: Record<string, unknown>,
  ) {}

  private fail(field: string, why: string): never {
    throw new FieldError(`${this.op}.${field}: ${why}, got ${shown(this.record[field])}`);
  }

  number(
    field: string,
    min: number,
    max: number,
    opts: { integer?: boolean; exclusiveMin?: boolean; fallback?: number } = {},
  ): number {
    this.used.add(field);
    const value = this.record[field] ?? opts.fallback;
    const kind = opts.integer === true ? "an integer" : "a number";
    const range = opts.exclusiveMin === true ? `greater than ${min} and at most ${max}` : `${min}..${max}`;
    if (typeof value !== "number" || !Number.isFinite(value)) this.fail(field, `expected ${kind} ${range}`);
    if (opts.integer === true && !Number.isInteger(value)) this.fail(field, `expected ${kind} ${range}`);
    if (value > max || value < min || (opts.exclusiveMin === true && value === min))
      this.fail(field, `expected ${kind} ${range}`);
    return value;
  }

  host(field: string): string {
    this.used.add(field);
    const value = this.record[field];
    // A name whose last label is all digits is a mistyped address (198.19.0.256), never a hostname.
    if (typeof value !== "string" || !(IPV4.test(value) || (HOSTNAME.test(value) && !/(^|\.)\d+$/.test(value)))) {
      this.fail(field, "expected an IPv4 address or a hostname");
    }
    return value;
  }

  port(field: string): number {
    return this.number(field, 1, 65535, { integer: true });
  }

  httpUrl(field: string): string {
    this.used.add(field);
    const value = this.record[field];
    let url: URL | null = null;
    if (typeof value === "string") {
      try {
        url = new URL(value);
      } catch {
        url = null;
      }
    }
    if (typeof value !== "string" || url?.protocol !== "http:" || url.hostname === "") {
      this.fail(field, "expected an http:// URL such as http://198.19.0.1/whoami");
    }
    return value;
  }

  /** Refuses fields nobody read, so a typo such as "intervalMS" fails instead of silently taking a default. */
  done(): void {
    const extra = Object.keys(this.record).find((k) => !this.used.has(k));
    if (extra !== undefined) throw new FieldError(`${this.op}.${extra}: unknown field`);
  }
}

function operation(op: ProbeCommand["op"], id: ProbeId | undefined, record: Record<string, unknown>): ProbeCommand {
  if (op === "exit") {
    const f = new Fields(op, record);
    f.done();
    return { op };
  }
  if (id === undefined)
    throw new FieldError(`${op}.id: expected a number or a non-empty string, got ${shown(record.id)}`);
  const f = new Fields(op, record);
  let command: ProbeCommand;
  switch (op) {
    case "cancel":
      command = { op, id };
      break;
    case "udp": {
      const host = f.host("host");
      const port = f.port("port");
      const count = f.number("count", 1, MAX_PROBE_COUNT, { integer: true });
      const intervalMs = f.number("intervalMs", 0, MAX_TIMEOUT_MS);
      const timeoutMs = f.number("timeoutMs", 0, MAX_TIMEOUT_MS, { exclusiveMin: true });
      if ((count - 1) * intervalMs + timeoutMs > MAX_OPERATION_MS) {
        throw new FieldError(
          `udp.count: ${count} probes every ${intervalMs} ms take longer than the ${MAX_OPERATION_MS} ms an operation may run`,
        );
      }
      command = { op, id, host, port, count, intervalMs, timeoutMs };
      break;
    }
    case "wait-reply":
      command = {
        op,
        id,
        host: f.host("host"),
        port: f.port("port"),
        intervalMs: f.number("intervalMs", 0, MAX_TIMEOUT_MS, { exclusiveMin: true }),
        deadlineMs: f.number("deadlineMs", 0, MAX_OPERATION_MS, { exclusiveMin: true }),
      };
      break;
    case "http":
      command = {
        op,
        id,
        url: f.httpUrl("url"),
        timeoutMs: f.number("timeoutMs", 0, MAX_TIMEOUT_MS, { exclusiveMin: true }),
      };
      break;
    case "stream": {
      const host = f.host("host");
      const port = f.port("port");
      const ratePerSec = f.number("ratePerSec", 0, MAX_RATE_PER_SEC, { exclusiveMin: true });
      const durationMs = f.number("durationMs", 0, MAX_OPERATION_MS - MAX_TIMEOUT_MS, { exclusiveMin: true });
      const timeoutMs = f.number("timeoutMs", 0, MAX_TIMEOUT_MS, {
        exclusiveMin: true,
        fallback: STREAM_REPLY_TIMEOUT_MS,
      });
      command = { op, id, host, port, ratePerSec, durationMs, timeoutMs };
      break;
    }
  }
  f.done();
  return command;
}

/** Validates a decoded command. On failure the id is echoed when it was readable, so the sender can match it. */
export function validateCommand(value: unknown): ParsedCommand {
  if (!isRecord(value)) return { ok: false, error: `command: expected a JSON object, got ${shown(value)}` };
  const id = isProbeId(value.id) ? value.id : undefined;
  const withId = (error: string): ErrorResult => (id === undefined ? { ok: false, error } : { id, ok: false, error });
  const op = COMMAND_OPS.find((o) => o === value.op);
  if (op === undefined) return withId(`op: expected one of ${COMMAND_OPS.join(", ")}, got ${shown(value.op)}`);
  try {
    return { ok: true, command: operation(op, id, value) };
  } catch (err) {
    if (err instanceof FieldError) return withId(err.message);
    throw err;
  }
}

/** Parses and validates one input line. */
export function parseCommandLine(line: string): ParsedCommand {
  if (line.length > MAX_COMMAND_LINE_CHARS) {
    return { ok: false, error: `command: line of ${line.length} characters exceeds ${MAX_COMMAND_LINE_CHARS}` };
  }
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    return { ok: false, error: `command: invalid JSON (${(err as Error).message})` };
  }
  return validateCommand(value);
}

/** The longest an operation can take by its own parameters; the agent's watchdog and the client build on it. */
export function operationBudgetMs(command: OperationCommand): number {
  switch (command.op) {
    case "udp":
      return Math.max(0, command.count - 1) * command.intervalMs + command.timeoutMs + OPERATION_SLACK_MS;
    case "wait-reply":
      return command.deadlineMs + OPERATION_SLACK_MS;
    case "http":
      return command.timeoutMs + OPERATION_SLACK_MS;
    case "stream":
      return command.durationMs + command.timeoutMs + OPERATION_SLACK_MS;
  }
}

/** The map key of an id: 4 and "4" are different ids. */
export function idKey(id: ProbeId): string {
  return typeof id === "number" ? `n:${id}` : `s:${id}`;
}
