/**
 * A VICI client over charon's unix socket: plain and streamed commands one at a time (VICI has no request
 * ids, so replies are matched by order), event subscriptions, every exchange bounded in time, and every
 * failure a typed ViciClientError.
 */
import { createConnection, type Socket } from "node:net";
import {
  EMPTY_SECTION,
  ViciError,
  ViciFrameDecoder,
  encodePacket,
  type ViciPacket,
  type ViciSection,
} from "./vici-codec.ts";

/** charon answers local commands in milliseconds; five seconds only passes when the daemon hangs. */
export const VICI_REQUEST_TIMEOUT_MS = 5000;
/** Connecting to a local unix socket is immediate or refused; this only catches a wedged accept queue. */
export const VICI_CONNECT_TIMEOUT_MS = 2000;

export type ViciClientErrorCode =
  | "connect-failed"
  | "timeout"
  | "closed"
  | "socket"
  /** the daemon sent bytes that are not VICI, or a reply nobody asked for */
  | "protocol"
  | "unknown-command"
  | "unknown-event"
  /** the command ran and answered success = no; `errmsg` holds charon's words */
  | "command-failed";

export class ViciClientError extends Error {
  constructor(
    readonly code: ViciClientErrorCode,
    message: string,
    readonly errmsg = "",
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "ViciClientError";
  }
}

export function isViciClientError(e: unknown): e is ViciClientError {
  return e instanceof ViciClientError;
}

export type ViciEventHandler = (message: ViciSection, name: string) => void;

export interface RequestOptions {
  /** Overrides VICI_REQUEST_TIMEOUT_MS, e.g. for `initiate`, which waits for the peer. */
  timeoutMs?: number;
}

export interface StreamOptions extends RequestOptions {
  /** Called for each streamed event as it arrives (they are also returned). */
  onEvent?: ViciEventHandler;
}

type Reply = Extract<ViciPacket, { type: "cmd-response" | "cmd-unknown" | "event-confirm" | "event-unknown" }>;

interface Pending {
  expects: "command" | "event";
  resolve: (p: Reply) => void;
  reject: (e: ViciClientError) => void;
  timer: NodeJS.Timeout;
}

export class ViciClient {
  readonly #socket: Socket;
  readonly #decoder = new ViciFrameDecoder();
  readonly #handlers = new Map<string, Set<ViciEventHandler>>();
  readonly #closeListeners = new Set<(err: ViciClientError) => void>();
  #pending: Pending | null = null;
  /** Exchanges run strictly one after another: a streamed command's register, request and unregister included. */
  #queue: Promise<unknown> = Promise.resolve();
  #closedBy: ViciClientError | null = null;

  private constructor(socket: Socket) {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#onData(chunk);
    });
    socket.on("error", (e) => {
      this.#fail(new ViciClientError("socket", `VICI socket error: ${e.message}`, "", { cause: e }));
    });
    socket.on("close", () => {
      this.#fail(new ViciClientError("closed", "VICI connection closed by the daemon"));
    });
  }

  /** Connects to `path` (a unix socket), bounded by timeoutMs. */
  static connect(path: string, timeoutMs = VICI_CONNECT_TIMEOUT_MS): Promise<ViciClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ path });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ViciClientError("connect-failed", `no VICI connection to ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once("error", (e) => {
        clearTimeout(timer);
        socket.destroy();
        reject(
          new ViciClientError("connect-failed", `cannot connect to VICI socket ${path}: ${e.message}`, "", {
            cause: e,
          }),
        );
      });
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        resolve(new ViciClient(socket));
      });
    });
  }

  get closed(): boolean {
    return this.#closedBy !== null;
  }

  /** Called once when the connection ends for any reason other than close(). */
  onClose(listener: (err: ViciClientError) => void): () => void {
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  /** Sends a command and returns charon's response message (which may say success = no). */
  request(command: string, message: ViciSection = EMPTY_SECTION, opts: RequestOptions = {}): Promise<ViciSection> {
    return this.#enqueue(() => this.#command(command, message, opts.timeoutMs ?? VICI_REQUEST_TIMEOUT_MS));
  }

  /** Like request, but a response with success = no rejects with "command-failed" and charon's errmsg. */
  async requestOk(
    command: string,
    message: ViciSection = EMPTY_SECTION,
    opts: RequestOptions = {},
  ): Promise<ViciSection> {
    return checkSuccess(command, await this.request(command, message, opts));
  }

  /**
   * A streamed command: registers for `event`, sends the command, collects the events that arrive until the
   * response, then unregisters again (unless a subscriber still wants the event).
   */
  stream(
    command: string,
    message: ViciSection,
    event: string,
    opts: StreamOptions = {},
  ): Promise<{ events: ViciSection[]; response: ViciSection }> {
    return this.#enqueue(async () => {
      const events: ViciSection[] = [];
      const collect: ViciEventHandler = (m, name) => {
        events.push(m);
        opts.onEvent?.(m, name);
      };
      await this.#subscribe(event, collect);
      try {
        const response = await this.#command(command, message, opts.timeoutMs ?? VICI_REQUEST_TIMEOUT_MS);
        return { events, response };
      } finally {
        if (!this.closed) await this.#unsubscribe(event, collect);
        else this.#handlers.get(event)?.delete(collect);
      }
    });
  }

  /** Subscribes to an event; resolves once charon confirmed it. The returned function unsubscribes. */
  async register(event: string, handler: ViciEventHandler): Promise<() => Promise<void>> {
    await this.#enqueue(() => this.#subscribe(event, handler));
    return () => (this.closed ? Promise.resolve() : this.#enqueue(() => this.#unsubscribe(event, handler)));
  }

  /** Closes the connection; pending and queued exchanges reject with "closed". Idempotent. */
  close(): void {
    this.#fail(new ViciClientError("closed", "VICI connection closed by the client"), false);
  }

  #enqueue<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(
      () => (this.#closedBy !== null ? Promise.reject(this.#closedBy) : op()),
      () => (this.#closedBy !== null ? Promise.reject(this.#closedBy) : op()),
    );
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #command(command: string, message: ViciSection, timeoutMs: number): Promise<ViciSection> {
    const reply = await this.#exchange(
      { type: "cmd-request", name: command, message },
      "command",
      timeoutMs,
      `command ${command}`,
    );
    if (reply.type === "cmd-unknown")
      throw new ViciClientError("unknown-command", `charon does not know the VICI command "${command}"`);
    if (reply.type !== "cmd-response")
      throw new ViciClientError("protocol", `charon answered ${command} with ${reply.type}`);
    return reply.message;
  }

  async #subscribe(event: string, handler: ViciEventHandler): Promise<void> {
    const set = this.#handlers.get(event);
    if (set !== undefined && set.size > 0) {
      set.add(handler);
      return;
    }
    // In place before the confirm arrives: charon may send the first event in the same read as the confirm.
    this.#handlers.set(event, new Set([handler]));
    try {
      const reply = await this.#exchange(
        { type: "event-register", name: event },
        "event",
        VICI_REQUEST_TIMEOUT_MS,
        `register ${event}`,
      );
      if (reply.type === "event-unknown")
        throw new ViciClientError("unknown-event", `charon has no VICI event "${event}"`);
      if (reply.type !== "event-confirm")
        throw new ViciClientError("protocol", `charon answered register ${event} with ${reply.type}`);
    } catch (e) {
      this.#handlers.delete(event);
      throw e;
    }
  }

  async #unsubscribe(event: string, handler: ViciEventHandler): Promise<void> {
    const set = this.#handlers.get(event);
    if (set === undefined || !set.delete(handler) || set.size > 0) return;
    this.#handlers.delete(event);
    const reply = await this.#exchange(
      { type: "event-unregister", name: event },
      "event",
      VICI_REQUEST_TIMEOUT_MS,
      `unregister ${event}`,
    );
    if (reply.type === "event-unknown")
      throw new ViciClientError("unknown-event", `charon has no VICI event "${event}"`);
  }

  #exchange(packet: ViciPacket, expects: Pending["expects"], timeoutMs: number, what: string): Promise<Reply> {
    if (this.#closedBy !== null) return Promise.reject(this.#closedBy);
    let bytes: Buffer;
    try {
      bytes = encodePacket(packet);
    } catch (e) {
      return Promise.reject(
        new ViciClientError("protocol", `cannot encode ${what}: ${(e as Error).message}`, "", { cause: e }),
      );
    }
    return new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        // Without request ids a late reply would be taken for the next one's, so the connection is spent.
        this.#fail(new ViciClientError("timeout", `no VICI reply to ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending = { expects, resolve, reject, timer };
      this.#socket.write(bytes);
    });
  }

  #onData(chunk: Buffer): void {
    let packets: ViciPacket[];
    try {
      packets = this.#decoder.push(chunk);
    } catch (e) {
      const why = e instanceof ViciError ? `${e.code}: ${e.message}` : String(e);
      this.#fail(new ViciClientError("protocol", `charon sent bytes that are not VICI (${why})`, "", { cause: e }));
      return;
    }
    for (const p of packets) {
      if (this.#closedBy !== null) return;
      this.#onPacket(p);
    }
  }

  #onPacket(p: ViciPacket): void {
    switch (p.type) {
      case "event": {
        for (const h of [...(this.#handlers.get(p.name) ?? [])]) {
          try {
            h(p.message, p.name);
          } catch {
            // a subscriber's bug must not break the connection
          }
        }
        return;
      }
      case "cmd-response":
      case "cmd-unknown":
      case "event-confirm":
      case "event-unknown": {
        const pending = this.#pending;
        const isCommandReply = p.type === "cmd-response" || p.type === "cmd-unknown";
        if (pending === null || (pending.expects === "command") !== isCommandReply) {
          this.#fail(new ViciClientError("protocol", `charon sent ${p.type} that answers nothing pending`));
          return;
        }
        this.#pending = null;
        clearTimeout(pending.timer);
        pending.resolve(p);
        return;
      }
      case "cmd-request":
      case "event-register":
      case "event-unregister":
        this.#fail(new ViciClientError("protocol", `charon sent a client-only packet (${p.type})`));
        return;
    }
  }

  #fail(err: ViciClientError, notify = true): void {
    if (this.#closedBy !== null) return;
    this.#closedBy = err;
    const pending = this.#pending;
    this.#pending = null;
    if (pending !== null) {
      clearTimeout(pending.timer);
      pending.reject(err);
    }
    this.#handlers.clear();
    this.#socket.destroy();
    if (notify) {
      for (const l of this.#closeListeners) {
        try {
          l(err);
        } catch {
          // listeners' bugs stay theirs
        }
      }
    }
    this.#closeListeners.clear();
  }
}

/** Throws "command-failed" with charon's errmsg when a response says success = no. */
export function checkSuccess(command: string, response: ViciSection): ViciSection {
  const success = response.get("success");
  if (success === "yes") return response;
  const errmsg = response.get("errmsg");
  const words = typeof errmsg === "string" ? errmsg : "";
  throw new ViciClientError("command-failed", `VICI ${command} failed${words === "" ? "" : `: ${words}`}`, words);
}
