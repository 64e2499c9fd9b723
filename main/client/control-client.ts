/**
 * The typed client of detourd's control API (main/core/protocol/messages.ts), used by the CLI, the tray app and
 * tests: every call is bounded in time and every failure arrives as a ControlError with a stable code.
 */
import { createConnection, type Socket } from "node:net";
import type { ConnectionEvent, DrillResult, RaceRecord } from "../core/connection/types.ts";
import { DRILL_MAX_DURATION_MS } from "../core/drill.ts";
import type { PolicyEvent, PolicyStatus, PrefsPayload } from "../core/policy/status.ts";
import {
  DEFAULT_CONTROL_GROUP,
  encodeLine,
  LineDecoder,
  parseDaemonMessage,
  PROTOCOL_VERSION,
  type ClientMessage,
  type Command,
  type CommandParams,
  type CommandResults,
  type ConnectPayload,
  type DrillParams,
  type DiagPayload,
  type DiagUploadPayload,
  type CommandWithParams,
  type ErrorCode,
  type GatewaysPayload,
  SLOW_COMMAND_TIMEOUT_MS,
  type StatusPayload,
} from "../core/protocol/messages.ts";

/**
 * Connecting and saying hello. detourd is local and answers in milliseconds; 3 s tells a wedged daemon from a
 * busy one without leaving `detour status` hanging.
 */
export const CONNECT_TIMEOUT_MS = 3000;
/**
 * One request. Longer than the daemon's own handler bound (5 s), so a hung handler comes back as the daemon's
 * typed "timeout" error first; this bound only fires when the daemon itself stops answering.
 */
export const REQUEST_TIMEOUT_MS = 10_000;
/**
 * A drill request: the daemon bounds a drill by DRILL_MAX_DURATION_MS and its handler by 5 s more; 10 s beyond
 * the drill's own bound lets the daemon's typed timeout arrive first, as for every other request.
 */
export const DRILL_REQUEST_TIMEOUT_MS = DRILL_MAX_DURATION_MS + 10_000;
/** Added to a slow command's daemon-side bound: its "timeout" error needs a moment to travel back. */
const SLOW_COMMAND_MARGIN_MS = 5000;

/** Name sent in the hello, for the daemon's logs. */
const CLIENT_NAME = "detour-client/0.1";

/**
 * Why a call failed:
 * - the daemon's own error codes (ErrorCode: bad-request, unknown-command, internal, busy, timeout, ...)
 * - not-running: no socket, or nobody listening on it
 * - permission-denied: the socket is there but this user may not connect (not in the socket's group)
 * - connection-lost: the daemon closed the connection or the socket failed
 * - protocol-violation: the daemon sent something this client cannot read (a version skew or a bug)
 * - cancelled: this client was closed while the call was pending; not a failure
 */
export type ControlErrorCode =
  ErrorCode | "not-running" | "permission-denied" | "connection-lost" | "protocol-violation" | "cancelled";

const RETRYABLE: Record<ControlErrorCode, boolean> = {
  "bad-request": false,
  "unknown-command": false,
  internal: false,
  unauthorized: false,
  "unsupported-protocol": false,
  busy: true,
  timeout: true,
  "not-running": true,
  "permission-denied": false,
  "connection-lost": true,
  "protocol-violation": false,
  cancelled: false,
  refused: false,
};

export class ControlError extends Error {
  override readonly name = "ControlError";
  readonly code: ControlErrorCode;
  readonly retryable: boolean;

  constructor(code: ControlErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.retryable = RETRYABLE[code];
  }
}

export function isControlError(e: unknown): e is ControlError {
  return e instanceof ControlError;
}

export interface ControlClientOptions {
  /** Bound on connecting plus the hello. */
  timeoutMs?: number;
  /** Bound on each request. */
  requestTimeoutMs?: number;
  /** Name sent in the hello (e.g. "detour-cli/0.1"). */
  client?: string;
  /** The socket's group, named in the permission-denied message. */
  group?: string;
}

/** Maps a failed connect(2) to what the user should know. */
export function connectError(
  err: NodeJS.ErrnoException,
  path: string,
  group: string = DEFAULT_CONTROL_GROUP,
): ControlError {
  const code = err.code ?? "";
  if (code === "ENOENT")
    return new ControlError("not-running", `detourd is not running (no socket at ${path})`, { cause: err });
  if (code === "ECONNREFUSED")
    return new ControlError("not-running", `detourd is not running (nothing listens on ${path})`, { cause: err });
  if (code === "EACCES" || code === "EPERM") {
    return new ControlError(
      "permission-denied",
      `permission denied on ${path}: detourd's socket is for root and the "${group}" group; join it (sudo usermod -aG ${group} $USER, then log in again) or run as root`,
      { cause: err },
    );
  }
  return new ControlError(
    "connection-lost",
    `cannot connect to detourd at ${path}: ${code === "" ? err.message : code}`,
    { cause: err },
  );
}

interface Pending {
  command: Command;
  resolve: (result: unknown) => void;
  reject: (e: ControlError) => void;
  timer: NodeJS.Timeout;
}

/** An event subscription on its own connection: the snapshot it started from, and how to end it. */
export interface Subscription {
  snapshot: StatusPayload;
  /** Resolves when the subscription ends: null if close() ended it, else why it was lost. */
  closed: Promise<ControlError | null>;
  close(): void;
}

/** One connection to detourd. Create with ControlClient.connect; requests may run concurrently. */
export class ControlClient {
  readonly path: string;
  /** The daemon's name and version from its hello, e.g. "detourd/0.1.0". */
  readonly daemon: string;
  /** Resolves once the connection is over: null if close() ended it, else why it was lost. */
  readonly closed: Promise<ControlError | null>;
  readonly #socket: Socket;
  readonly #opts: ControlClientOptions;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #onEvent: ((e: ConnectionEvent) => void) | null = null;
  #onPolicy: ((e: PolicyEvent) => void) | null = null;
  #endReason: ControlError | null = null;
  #resolveClosed: (reason: ControlError | null) => void = () => undefined;
  #ended = false;

  private constructor(path: string, socket: Socket, daemon: string, decoder: LineDecoder, opts: ControlClientOptions) {
    this.path = path;
    this.daemon = daemon;
    this.#socket = socket;
    this.#opts = opts;
    this.closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    socket.on("data", (chunk: string) => {
      const { lines, overflow } = decoder.push(chunk);
      for (const line of lines) this.#onLine(line);
      if (overflow)
        this.#end(
          new ControlError("protocol-violation", `detourd sent a line longer than ${decoder.maxLength} characters`),
        );
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      this.#end(
        new ControlError("connection-lost", `lost the connection to detourd: ${err.code ?? err.message}`, {
          cause: err,
        }),
      );
    });
    socket.on("close", () => {
      this.#end(new ControlError("connection-lost", "detourd closed the connection"));
    });
  }

  /** Connects to the daemon's socket and exchanges hellos, within `timeoutMs` (CONNECT_TIMEOUT_MS by default). */
  static connect(path: string, opts: ControlClientOptions = {}): Promise<ControlClient> {
    const timeoutMs = opts.timeoutMs ?? CONNECT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.setEncoding("utf8");
      const decoder = new LineDecoder();
      let connected = false;
      const onConnect = (): void => {
        connected = true;
        const hello: ClientMessage = { type: "hello", protocol: PROTOCOL_VERSION, client: opts.client ?? CLIENT_NAME };
        const enc = encodeLine(hello);
        if (enc.ok) socket.write(enc.line);
        else finish(new ControlError("protocol-violation", enc.reason));
      };
      const onError = (err: NodeJS.ErrnoException): void => {
        finish(
          !connected
            ? connectError(err, path, opts.group)
            : new ControlError(
                "connection-lost",
                `lost the connection to detourd during the hello: ${err.code ?? err.message}`,
                { cause: err },
              ),
        );
      };
      const onClose = (): void => {
        finish(new ControlError("connection-lost", "detourd closed the connection during the hello"));
      };
      const onData = (chunk: string): void => {
        const { lines, overflow } = decoder.push(chunk);
        if (overflow) {
          finish(new ControlError("protocol-violation", "detourd sent an over-long line during the hello"));
          return;
        }
        const first = lines[0];
        if (first === undefined) return;
        const d = parseDaemonMessage(first);
        if (!d.ok) finish(new ControlError("protocol-violation", `detourd's hello is not valid: ${d.message}`));
        else if (d.message.type === "error")
          finish(new ControlError(d.message.code, `detourd refused the hello: ${d.message.message}`));
        else if (d.message.type !== "hello")
          finish(new ControlError("protocol-violation", `expected detourd's hello, got a ${d.message.type} message`));
        else if (d.message.protocol !== PROTOCOL_VERSION)
          finish(
            new ControlError(
              "unsupported-protocol",
              `detourd answered with protocol ${d.message.protocol}; this client speaks ${PROTOCOL_VERSION}`,
            ),
          );
        else if (lines.length > 1)
          finish(new ControlError("protocol-violation", "detourd sent messages before the hello was complete"));
        else finish(null, d.message.daemon);
      };
      let settled = false;
      const finish = (e: ControlError | null, daemon?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.off("connect", onConnect);
        socket.off("error", onError);
        socket.off("close", onClose);
        socket.off("data", onData);
        if (e !== null || daemon === undefined) {
          socket.on("error", () => undefined);
          socket.destroy();
          reject(e ?? new ControlError("protocol-violation", "no hello from detourd"));
          return;
        }
        resolve(new ControlClient(path, socket, daemon, decoder, opts));
      };
      const timer = setTimeout(() => {
        finish(new ControlError("timeout", `detourd did not answer on ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("connect", onConnect);
      socket.on("error", onError);
      socket.on("close", onClose);
      socket.on("data", onData);
    });
  }

  status(): Promise<StatusPayload> {
    return this.#request("status");
  }

  /** Asks the daemon to connect; resolves once it has accepted the request (follow progress with subscribe). */
  /** Asks detourd to connect; its answer says whether the kill switch is in force (null from an older detourd). */
  connect(): Promise<ConnectPayload | null> {
    return this.#request("connect");
  }

  async disconnect(): Promise<void> {
    await this.#request("disconnect");
  }

  gateways(): Promise<GatewaysPayload> {
    return this.#request("gateways");
  }

  race(): Promise<RaceRecord | null> {
    return this.#request("race");
  }

  /** Asks detourd to write a diagnostic bundle; resolves with where it is (root-only) and what was redacted. */
  diag(): Promise<DiagPayload> {
    return this.#request("diag");
  }

  /** Asks detourd to upload its latest bundle (it writes one if needed) to the collector and/or SFTP drop. */
  diagUpload(): Promise<DiagUploadPayload> {
    return this.#request("diag-upload");
  }

  /**
   * Runs a failover drill and resolves with its result once the block is lifted again (seconds). A refused drill
   * (not connected, another drill under way, nowhere to fail over to) is a result with verdict "refused".
   */
  drill(params: DrillParams = {}): Promise<DrillResult> {
    return this.#request("drill", params, {
      timeoutMs: Math.max(DRILL_REQUEST_TIMEOUT_MS, this.#opts.requestTimeoutMs ?? 0),
    });
  }

  /**
   * Chooses the gateway the daemon connects to (a candidate's name), or null for automatic. Resolves with the
   * choice in force; a name the daemon does not know fails with "bad-request".
   */
  async setGateway(gateway: string | null): Promise<string | null> {
    return (await this.#request("set-gateway", { gateway })).gateway;
  }

  /**
   * Subscribes to connection events on a connection of its own (the daemon ends a subscription with its
   * connection), so close() ends only the subscription. Events are deltas on top of `snapshot`.
   */
  async subscribe(onEvent: (e: ConnectionEvent) => void, onPolicy?: (e: PolicyEvent) => void): Promise<Subscription> {
    const conn = await ControlClient.connect(this.path, this.#opts);
    conn.#onEvent = onEvent;
    conn.#onPolicy = onPolicy ?? null;
    try {
      const snapshot = await conn.#request("subscribe");
      return {
        snapshot,
        closed: conn.closed,
        close: () => {
          conn.close();
        },
      };
    } catch (e) {
      conn.close();
      throw e;
    }
  }

  /** The managed policy in force, its locked keys and the last refused document. */
  policy(): Promise<PolicyStatus> {
    return this.#request("policy");
  }

  /** Every setting with its value, where it comes from and whether the policy locks it. */
  prefs(): Promise<PrefsPayload> {
    return this.#request("prefs");
  }

  /** Sets a preference (value as typed on a command line) or clears it (null); "refused" says why not. */
  setPref(key: string, value: string | null): Promise<PrefsPayload> {
    return this.#request("prefs-set", undefined, { args: { key, value } });
  }

  /** Ends the connection; pending calls reject with "cancelled". Safe to call more than once. */
  close(): void {
    this.#end(null);
    this.#socket.destroy();
  }

  #request<C extends Command>(
    command: C,
    params?: C extends CommandWithParams ? CommandParams[C] : never,
    extra: { args?: Record<string, string | null>; timeoutMs?: number } = {},
  ): Promise<CommandResults[C]> {
    if (this.#ended)
      return Promise.reject(this.#endReason ?? new ControlError("cancelled", "the control connection was closed"));
    const id = this.#nextId++;
    // Slow commands get the daemon's own bound plus a margin, so the daemon's typed timeout comes back first.
    const slow = SLOW_COMMAND_TIMEOUT_MS[command];
    const timeoutMs =
      extra.timeoutMs ??
      Math.max(
        this.#opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS,
        slow === undefined ? 0 : slow + SLOW_COMMAND_MARGIN_MS,
      );
    return new Promise<CommandResults[C]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new ControlError("timeout", `detourd did not answer ${command} within ${timeoutMs} ms`));
      }, timeoutMs);
      // The response's result is checked against this command's schema before it is resolved (#onLine).
      this.#pending.set(id, { command, resolve: resolve as (r: unknown) => void, reject, timer });
      const enc = encodeLine({
        type: "request",
        id,
        command,
        ...(params === undefined ? {} : { params }),
        ...(extra.args === undefined ? {} : { args: extra.args }),
      } as ClientMessage);
      if (enc.ok) this.#socket.write(enc.line);
      else
        this.#settle(
          id,
          { command, resolve: () => undefined, reject, timer },
          new ControlError("protocol-violation", enc.reason),
        );
    });
  }

  #onLine(line: string): void {
    const d = parseDaemonMessage(line);
    if (!d.ok) {
      const p = d.id === null ? undefined : this.#pending.get(d.id);
      const err = new ControlError("protocol-violation", `detourd sent an invalid message: ${d.message}`);
      if (p !== undefined && d.id !== null) this.#settle(d.id, p, err);
      else this.#end(err);
      return;
    }
    const m = d.message;
    switch (m.type) {
      case "hello":
        this.#end(new ControlError("protocol-violation", "detourd repeated its hello"));
        return;
      case "event":
        if (m.event.type === "policy") this.#onPolicy?.(m.event);
        else this.#onEvent?.(m.event);
        return;
      case "error": {
        const err = new ControlError(m.code, m.message);
        const p = m.id === null ? undefined : this.#pending.get(m.id);
        if (p !== undefined && m.id !== null) this.#settle(m.id, p, err);
        else if (m.id === null) this.#end(err); // the daemon closes after an error not tied to a request
        return;
      }
      case "response": {
        const p = this.#pending.get(m.id);
        if (p === undefined) return; // answered after its timeout: the caller has moved on
        if (p.command !== m.command)
          this.#settle(
            m.id,
            p,
            new ControlError("protocol-violation", `asked for ${p.command}, detourd answered ${m.command}`),
          );
        else this.#settle(m.id, p, null, m.result);
        return;
      }
    }
  }

  #settle(id: number, p: Pending, err: ControlError | null, result?: unknown): void {
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if (err !== null) p.reject(err);
    else p.resolve(result);
  }

  /** Ends the connection once; the first reason wins (an error message from the daemon beats the reset after it). */
  #end(reason: ControlError | null): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endReason = reason;
    const err = reason ?? new ControlError("cancelled", "the control connection was closed");
    for (const [id, p] of this.#pending) this.#settle(id, p, err);
    this.#socket.destroy();
    this.#resolveClosed(reason);
  }
}
