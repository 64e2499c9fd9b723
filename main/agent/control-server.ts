/**
 * detourd's control API server: a unix socket speaking main/core/protocol/messages.ts to the CLI and the tray
 * app, with every buffer, wait and client count bounded so that no client can stall or exhaust the daemon.
 *
 * Who is on the other end: the socket file's permissions decide, and the kernel enforces them in connect(2)
 * before detourd sees anyone. detourd (root) binds the socket under umask 0177, so it is never reachable by others
 * even for an instant, then sets mode 0660 and owner root:<group> (default group "detour", resolved through
 * /etc/group). Only root and members of that group can connect; everyone else gets EACCES. Every connected peer is
 * therefore trusted with every command, and "unauthorized" stays reserved for a finer check.
 *
 * What a member of the group (or malware running as one) must not do is starve others, root above all:
 *   - the last `reservedForRoot` of `maxClients` slots go to root only. Node cannot read SO_PEERCRED, so the
 *     peer's uid is asked of the OS (`peerUid`, the kernel's SO_PEERCRED read by a tiny perl helper) only for a
 *     connection that would take a reserved slot, and at most `reservedForRoot` such lookups run at once;
 *   - a greeted connection idle for `idleTimeoutMs` (no request in flight, no subscription) is closed, and one
 *     that never says hello is closed after `helloTimeoutMs`;
 *   - drills (each breaks the tunnel on purpose) are limited daemon-wide to `maxDrillsPerWindow` started per
 *     `drillWindowMs`, and diagnostic bundles and uploads to `maxConcurrentDiag` of each at once.
 */
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import type { Candidate, ConnectionEvent, DrillResult, RaceRecord } from "../core/connection/types.ts";
import { DRILL_MAX_DURATION_MS } from "../core/drill.ts";
import type { PolicyEvent, PolicyStatus, PrefsPayload } from "../core/policy/status.ts";
import {
  DEFAULT_CONTROL_GROUP,
  encodeLine,
  LineDecoder,
  MAX_LINE_LENGTH,
  parseClientMessage,
  PROTOCOL_VERSION,
  type Command,
  type CommandResults,
  type DaemonMessage,
  type DrillParams,
  type DiagPayload,
  type ConnectPayload,
  type DiagUploadPayload,
  SLOW_COMMAND_TIMEOUT_MS,
  type ErrorCode,
  type Request,
  type RequestId,
  type StatusPayload,
} from "../core/protocol/messages.ts";
import { redactUrlsDeep } from "../core/diag/redact.ts";
import { TimeoutError, withTimeout } from "../shared/with-timeout.ts";
import { createLogger, type Logger } from "./log.ts";

/** What the daemon provides; the server calls these and never anything else of the daemon. */
export interface ControlHandlers {
  status(): Promise<StatusPayload>;
  /** Resolves once the kill switch for connecting was applied, saying whether it is in force. */
  connect(): Promise<ConnectPayload | null>;
  disconnect(): Promise<void>;
  /** Every candidate with its probe result, in the daemon's ranking order (tried first comes first). */
  gateways(): Promise<Candidate[]>;
  race(): Promise<RaceRecord | null>;
  /** Registers a listener for connection events; returns the function that removes it. Listeners must not throw. */
  subscribe(listener: (e: ConnectionEvent) => void): () => void;
  /** Runs a failover drill (bounded by drillTimeoutMs, not handlerTimeoutMs); absent where drills are not supported. */
  drill?(params: DrillParams): Promise<DrillResult>;
  /** Managed policy and preferences; a daemon without them answers "unknown-command". */
  policy?(): Promise<PolicyStatus>;
  prefs?(): Promise<PrefsPayload>;
  /** Throws CommandRefused (answered as "refused") when the change is not allowed, e.g. a key the policy locks. */
  prefsSet?(key: string, value: string | null): Promise<PrefsPayload>;
  /** Registers a listener for policy events (applied, rejected), sent to subscribers beside connection events. */
  subscribePolicy?(listener: (e: PolicyEvent) => void): () => void;
  /** Writes a diagnostic bundle; absent on a daemon built without diagnostics. */
  diag?(): Promise<DiagPayload>;
  /** Uploads the latest bundle (a new one if none) to the configured destinations. */
  diagUpload?(): Promise<DiagUploadPayload>;
  /**
   * Chooses the gateway to connect to (null: automatic) and returns the choice in force. Throws a
   * ControlRequestError for a name that is not a candidate.
   */
  setGateway(gateway: string | null): Promise<string | null>;
}

/** Thrown by a handler when the request itself is wrong (e.g. an unknown gateway); the client gets "bad-request". */
export class ControlRequestError extends Error {
  override readonly name = "ControlRequestError";
}

/** A handler's refusal: the client gets the "refused" error code with this message (never "internal"). */
export class CommandRefused extends Error {
  override readonly name = "CommandRefused";
}

export interface ControlLimits {
  maxClients: number;
  reservedForRoot: number;
  idleTimeoutMs: number;
  maxDrillsPerWindow: number;
  drillWindowMs: number;
  maxConcurrentDiag: number;
  maxInFlight: number;
  maxPendingWriteBytes: number;
  maxLineLength: number;
  helloTimeoutMs: number;
  handlerTimeoutMs: number;
  drillTimeoutMs: number;
  closeGraceMs: number;
}

export const DEFAULT_CONTROL_LIMITS: Readonly<ControlLimits> = {
  /** The CLI, one tray app per logged-in user and a few scripts; 64 is far above that and still a small cost. */
  maxClients: 64,
  /**
   * Slots of maxClients that only root (uid 0) may take, so an administrator can always run `detour` as root even
   * when group members hold every other slot. Four: a root CLI, a root script and room for a retry or two.
   */
  reservedForRoot: 4,
  /**
   * A greeted connection with nothing in flight and no subscription that sends nothing for this long is closed.
   * The CLI sends a request at once and the app's request connection reconnects on its next request; 5 min is
   * far above any think time and still frees a forgotten connection's slot. Subscribers are exempt: waiting for
   * events is what they are for.
   */
  idleTimeoutMs: 5 * 60_000,
  /**
   * Drills started per window, daemon-wide (each one blocks the active gateway and makes the tunnel fail over on
   * purpose). Four per ten minutes lets an IT team drill every gateway of a small site in one sitting, and stops a
   * group member (or a script gone wrong) from breaking the tunnel every few seconds.
   */
  maxDrillsPerWindow: 4,
  drillWindowMs: 10 * 60_000,
  /** Bundles (and uploads) being made at once: each reads logs and host facts for a second or two. */
  maxConcurrentDiag: 1,
  /** Requests one connection may have unanswered at once; clients send one at a time, pipelining a little. */
  maxInFlight: 16,
  /**
   * Bytes queued to one client that it has not read yet. A subscriber slower than this (a stopped tray app)
   * is disconnected rather than buffered forever; 4 MiB is four max-size lines or thousands of events.
   */
  maxPendingWriteBytes: 4 * 1024 * 1024,
  maxLineLength: MAX_LINE_LENGTH,
  /** A local client says hello within milliseconds; one that has not after 5 s is stuck and loses its slot. */
  helloTimeoutMs: 5000,
  /**
   * Handlers answer from memory (connect and disconnect only enqueue); one that takes 5 s is hung, and the client
   * gets a "timeout" error while the client's own bound (REQUEST_TIMEOUT_MS, 10 s) still runs.
   */
  handlerTimeoutMs: 5000,
  /** A drill blocks a gateway and watches the failover for up to DRILL_MAX_DURATION_MS; past that plus 5 s it hung. */
  drillTimeoutMs: DRILL_MAX_DURATION_MS + 5000,
  /** After a closing error reply, time for the client to read it before the socket is destroyed. */
  closeGraceMs: 1000,
};

/** Checking a leftover socket file: a live daemon accepts within milliseconds; 1 s rules out a slow one. */
const STALE_PROBE_TIMEOUT_MS = 1000;
/**
 * Events held back while a new subscriber's snapshot is taken. The snapshot comes from memory in milliseconds;
 * a thousand events meanwhile means something is flooding, and that subscriber is better off reconnecting.
 */
const MAX_EVENTS_HELD_DURING_SNAPSHOT = 1000;
/** Longest handler error message passed to a client: enough to say what failed, bounded whatever was thrown. */
const MAX_ERROR_MESSAGE = 500;

export interface ControlServerOptions {
  path: string;
  /** File mode of the socket; 0660 lets root and the group in, nobody else. */
  mode?: number;
  /** Group owning the socket: a name (resolved through /etc/group) or a gid. Default "detour" if that group exists. */
  group?: string | number;
  handlers: ControlHandlers;
  /** Version named in the hello ("detourd/<version>"); the package's version by default. */
  version?: string;
  log?: Logger;
  limits?: Partial<ControlLimits>;
  /** Where group names are looked up (tests). */
  groupFile?: string;
  /**
   * The uid of the process on the other end of an accepted socket, or null when it cannot be told. Asked only for
   * a connection that would take one of the slots reserved for root; without it those slots stay unused.
   */
  peerUid?: (socket: Socket) => Promise<number | null>;
  /** Monotonic milliseconds for the drill window (tests). */
  now?: () => number;
}

export type ControlServerErrorCode = "address-in-use" | "not-a-socket" | "unknown-group" | "listen-failed";

/** Why the control socket could not be opened. Never retryable by itself: something on the host must change. */
export class ControlServerError extends Error {
  override readonly name = "ControlServerError";
  readonly code: ControlServerErrorCode;
  readonly retryable = false;

  constructor(code: ControlServerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The gid of a group name in an /etc/group-format file, or null if no such group is listed. */
export function resolveGroup(name: string, groupFile = "/etc/group"): number | null {
  let text: string;
  try {
    text = readFileSync(groupFile, "utf8");
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    const [group, , gid] = line.split(":");
    if (group === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return null;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: unknown;
    };
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

/** Resolves to true if something accepts connections on `path`, false if nothing listens there. */
function somebodyAnswers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = createConnection(path);
    const timer = setTimeout(() => {
      probe.destroy();
      resolve(true); // a socket that neither accepts nor refuses is held by a live but stuck process: leave it alone
    }, STALE_PROBE_TIMEOUT_MS);
    probe.once("connect", () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === "ECONNREFUSED" || err.code === "ENOENT") resolve(false);
      else reject(err);
    });
  });
}

/** Removes a socket file nobody listens on; refuses a live one or anything that is not a socket. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  if (!st.isSocket())
    throw new ControlServerError("not-a-socket", `refusing to replace ${path}: it exists and is not a socket`);
  let live: boolean;
  try {
    live = await somebodyAnswers(path);
  } catch (e) {
    throw new ControlServerError("listen-failed", `cannot check the existing socket ${path}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  if (live) throw new ControlServerError("address-in-use", `another detourd answers on ${path}; stop it first`);
  rmSync(path, { force: true });
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      reject(
        new ControlServerError(
          e.code === "EADDRINUSE" ? "address-in-use" : "listen-failed",
          `cannot listen on ${path}: ${e.message}`,
          { cause: e },
        ),
      );
    };
    server.once("error", onError);
    // Node binds a unix socket synchronously inside listen(), so this umask covers exactly the bind: the socket
    // is born 0600 (root only) and widened to `mode` afterwards, never open to others in between.
    const old = process.umask(0o177);
    try {
      server.listen(path, () => {
        server.off("error", onError);
        resolve();
      });
    } finally {
      process.umask(old);
    }
  });
}

/** One client connection: handshake, request dispatch, optional event subscription. */
class ClientConnection {
  readonly #socket: Socket;
  readonly #server: ControlServer;
  readonly #n: number;
  readonly #decoder: LineDecoder;
  #client = "(no hello yet)";
  #greeted = false;
  #closing = false;
  #inFlight = 0;
  #unsubscribe: (() => void) | null = null;
  #helloTimer: NodeJS.Timeout | null;
  #idleTimer: NodeJS.Timeout | null = null;
  #graceTimer: NodeJS.Timeout | null = null;

  constructor(socket: Socket, server: ControlServer, n: number) {
    this.#socket = socket;
    this.#server = server;
    this.#n = n;
    this.#decoder = new LineDecoder(server.limits.maxLineLength);
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.#onData(chunk);
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      server.log.debug("control client socket error", { conn: n, client: this.#client, code: err.code ?? err.message });
    });
    socket.on("close", () => {
      this.#cleanup();
      server.forget(this);
    });
    this.#helloTimer = setTimeout(() => {
      this.#fatal("timeout", `no hello within ${server.limits.helloTimeoutMs} ms`);
    }, server.limits.helloTimeoutMs);
  }

  /** Sends an error reply not tied to a request and closes, after a grace period for the client to read it. */
  #fatal(code: ErrorCode, message: string): void {
    if (this.#closing) return;
    this.#send({ type: "error", id: null, code, message });
    this.#closing = true;
    this.#server.log.info("control client dropped", { conn: this.#n, client: this.#client, code, reason: message });
    this.#socket.end(); // reading goes on, discarding, so the client's own close is seen at once
    this.#graceTimer = setTimeout(() => this.#socket.destroy(), this.#server.limits.closeGraceMs);
  }

  /** Drops the client at once; its subscription ends now, not when the socket's close event comes round. */
  destroy(): void {
    this.#cleanup();
    this.#socket.destroy();
  }

  #cleanup(): void {
    this.#closing = true;
    if (this.#helloTimer !== null) clearTimeout(this.#helloTimer);
    if (this.#graceTimer !== null) clearTimeout(this.#graceTimer);
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#helloTimer = null;
    this.#graceTimer = null;
    this.#idleTimer = null;
    this.#unsubscribe?.();
    this.#unsubscribe = null;
  }

  #send(original: DaemonMessage): boolean {
    if (this.#closing || this.#socket.destroyed) return false;
    // Status, events and errors show endpoints, locations and error texts: never a URL's credentials.
    const message = redactUrlsDeep(original) as DaemonMessage;
    const enc = encodeLine(message);
    if (!enc.ok) {
      this.#server.log.error("control reply could not be encoded", {
        conn: this.#n,
        type: message.type,
        reason: enc.reason,
      });
      if (message.type === "response")
        this.#send({
          type: "error",
          id: message.id,
          code: "internal",
          message: `the ${message.command} answer could not be sent: ${enc.reason}`,
        });
      return false;
    }
    this.#socket.write(enc.line);
    if (this.#socket.writableLength > this.#server.limits.maxPendingWriteBytes) {
      this.#server.log.warn("control client too slow; disconnected", {
        conn: this.#n,
        client: this.#client,
        pendingBytes: this.#socket.writableLength,
      });
      this.destroy();
      return false;
    }
    return true;
  }

  #onData(chunk: string): void {
    if (this.#closing) return;
    const { lines, overflow } = this.#decoder.push(chunk);
    for (const line of lines) this.#onLine(line);
    if (overflow) this.#fatal("bad-request", `line longer than ${this.#decoder.maxLength} characters`);
  }

  /** (Re)starts the idle bound; when it fires, a connection busy with a request or a subscription keeps going. */
  #armIdle(): void {
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    const ms = this.#server.limits.idleTimeoutMs;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      if (this.#closing) return;
      if (this.#inFlight > 0 || this.#unsubscribe !== null) {
        this.#armIdle();
        return;
      }
      this.#fatal("timeout", `idle for ${ms} ms; connect again to send a request`);
    }, ms);
  }

  #onLine(line: string): void {
    if (this.#closing) return;
    if (this.#greeted) this.#armIdle();
    const d = parseClientMessage(line);
    if (!d.ok) {
      if (!this.#greeted) this.#fatal(d.code, `${d.message} (expected a hello first)`);
      else this.#send({ type: "error", id: d.id, code: d.code, message: d.message });
      return;
    }
    const m = d.message;
    if (m.type === "hello") {
      if (this.#greeted) {
        this.#send({
          type: "error",
          id: null,
          code: "bad-request",
          message: "hello was already said on this connection",
        });
        return;
      }
      this.#client = m.client;
      if (this.#helloTimer !== null) clearTimeout(this.#helloTimer);
      this.#helloTimer = null;
      if (m.protocol !== PROTOCOL_VERSION) {
        this.#fatal(
          "unsupported-protocol",
          `this daemon speaks protocol ${PROTOCOL_VERSION}; the client asked for ${m.protocol}`,
        );
        return;
      }
      this.#greeted = true;
      this.#armIdle();
      this.#server.log.debug("control client greeted", { conn: this.#n, client: this.#client });
      this.#send({ type: "hello", protocol: PROTOCOL_VERSION, daemon: `detourd/${this.#server.version}` });
      return;
    }
    if (!this.#greeted) {
      this.#fatal("bad-request", "expected a hello first");
      return;
    }
    if (this.#inFlight >= this.#server.limits.maxInFlight) {
      this.#send({
        type: "error",
        id: m.id,
        code: "busy",
        message: `more than ${this.#server.limits.maxInFlight} requests in flight on this connection`,
      });
      return;
    }
    this.#inFlight++;
    void this.#answer(m).finally(() => {
      this.#inFlight--;
    });
  }

  /** Runs one command and sends exactly one reply; never rejects. */
  async #answer(request: Request): Promise<void> {
    const { id, command } = request;
    const h = this.#server.handlers;
    const bound = <T>(what: string, f: () => Promise<T>): Promise<T> =>
      // A handler that throws synchronously becomes a rejection like any other.
      withTimeout(f, Math.max(this.#server.limits.handlerTimeoutMs, SLOW_COMMAND_TIMEOUT_MS[command] ?? 0), what);
    try {
      switch (command) {
        case "status":
          this.#respond(id, "status", await bound("status", () => h.status()));
          return;
        case "connect":
          this.#respond(id, "connect", await bound("connect", () => h.connect()));
          return;
        case "disconnect":
          await bound("disconnect", () => h.disconnect());
          this.#respond(id, "disconnect", null);
          return;
        case "gateways": {
          const candidates = await bound("gateways", () => h.gateways());
          this.#respond(id, "gateways", { candidates: candidates.map((c, i) => ({ ...c, rank: i + 1 })) });
          return;
        }
        case "race":
          this.#respond(id, "race", await bound("race", () => h.race()));
          return;
        case "diag": {
          const diag = h.diag?.bind(h);
          if (diag === undefined) throw new Error("this daemon makes no diagnostic bundles");
          const release = this.#server.takeDiagSlot("diag");
          if (typeof release === "string") {
            this.#send({ type: "error", id, code: "busy", message: release });
            return;
          }
          try {
            this.#respond(id, "diag", await bound("diag", diag));
          } finally {
            release();
          }
          return;
        }
        case "diag-upload": {
          const upload = h.diagUpload?.bind(h);
          if (upload === undefined) throw new Error("this daemon makes no diagnostic bundles");
          const release = this.#server.takeDiagSlot("diag-upload");
          if (typeof release === "string") {
            this.#send({ type: "error", id, code: "busy", message: release });
            return;
          }
          try {
            this.#respond(id, "diag-upload", await bound("diag-upload", upload));
          } finally {
            release();
          }
          return;
        }
        case "subscribe":
          await this.#subscribe(id, bound);
          return;
        case "drill": {
          const drill = h.drill?.bind(h);
          if (drill === undefined) {
            this.#send({
              type: "error",
              id,
              code: "unknown-command",
              message: "this daemon does not run failover drills",
            });
            return;
          }
          const ticket = this.#server.takeDrill();
          if (typeof ticket === "string") {
            this.#server.log.warn("control drill refused: rate limit", { conn: this.#n, client: this.#client });
            this.#send({ type: "error", id, code: "busy", message: ticket });
            return;
          }
          const result = await withTimeout(() => drill(request.params), this.#server.limits.drillTimeoutMs, "drill");
          // A drill the daemon refused (not connected, no other gateway) broke nothing and costs nothing.
          if (result.verdict === "refused") ticket.refund();
          this.#respond(id, "drill", result);
          return;
        }
        case "policy":
        case "prefs":
        case "prefs-set":
          await this.#answerPolicy(id, command, request.args ?? {}, bound);
          return;
        case "set-gateway": {
          const gateway = request.params.gateway;
          this.#respond(id, "set-gateway", { gateway: await bound("set-gateway", () => h.setGateway(gateway)) });
          return;
        }
      }
    } catch (e) {
      if (e instanceof ControlRequestError) {
        this.#send({ type: "error", id, code: "bad-request", message: e.message.slice(0, MAX_ERROR_MESSAGE) });
        return;
      }
      if (e instanceof CommandRefused) {
        this.#send({ type: "error", id, code: "refused", message: e.message.slice(0, MAX_ERROR_MESSAGE) });
        return;
      }
      const timedOut = e instanceof TimeoutError;
      const message = (e instanceof Error ? e.message : String(e)).slice(0, MAX_ERROR_MESSAGE);
      this.#server.log.error("control command failed", { conn: this.#n, client: this.#client, command, err: message });
      this.#send({
        type: "error",
        id,
        code: timedOut ? "timeout" : "internal",
        message: timedOut ? message : `${command} failed: ${message}`,
      });
    }
  }

  async #answerPolicy(
    id: RequestId,
    command: "policy" | "prefs" | "prefs-set",
    args: Record<string, string | null>,
    bound: <T>(what: string, f: () => Promise<T>) => Promise<T>,
  ): Promise<void> {
    const h = this.#server.handlers;
    const unknown = (): void => {
      this.#send({
        type: "error",
        id,
        code: "unknown-command",
        message: `this daemon has no managed-policy support (${command})`,
      });
    };
    if (command === "policy") {
      const f = h.policy?.bind(h);
      if (f === undefined) {
        unknown();
        return;
      }
      this.#respond(id, "policy", await bound("policy", f));
    } else if (command === "prefs") {
      const f = h.prefs?.bind(h);
      if (f === undefined) {
        unknown();
        return;
      }
      this.#respond(id, "prefs", await bound("prefs", f));
    } else {
      const f = h.prefsSet?.bind(h);
      if (f === undefined) {
        unknown();
        return;
      }
      const key = args.key;
      if (typeof key !== "string" || !("value" in args)) {
        this.#send({
          type: "error",
          id,
          code: "bad-request",
          message: "prefs-set needs args.key (a setting) and args.value (a string, or null to clear)",
        });
        return;
      }
      this.#respond(id, "prefs-set", await bound("prefs-set", () => f(key, args.value ?? null)));
    }
  }

  /**
   * Subscribes before taking the snapshot, and holds events that arrive meanwhile until the snapshot is sent:
   * a subscriber may see an event the snapshot already reflects, but never misses one.
   */
  async #subscribe(id: RequestId, bound: <T>(what: string, f: () => Promise<T>) => Promise<T>): Promise<void> {
    if (this.#unsubscribe !== null) {
      this.#send({ type: "error", id, code: "bad-request", message: "already subscribed on this connection" });
      return;
    }
    let held: (ConnectionEvent | PolicyEvent)[] | null = [];
    const listener = (event: ConnectionEvent | PolicyEvent): void => {
      try {
        if (held === null) {
          this.#send({ type: "event", event });
        } else if (held.length < MAX_EVENTS_HELD_DURING_SNAPSHOT) {
          held.push(event);
        } else {
          this.#server.log.warn("control subscriber's snapshot too slow; disconnected", {
            conn: this.#n,
            client: this.#client,
          });
          this.destroy();
        }
      } catch (e) {
        // The daemon calls listeners synchronously: a failure here must stay here.
        this.#server.log.error("control event could not be sent", { conn: this.#n, err: e });
      }
    };
    const unsubscribeConnection = this.#server.handlers.subscribe(listener);
    const unsubscribePolicy = this.#server.handlers.subscribePolicy?.(listener) ?? ((): void => undefined);
    const unsubscribe = (): void => {
      unsubscribeConnection();
      unsubscribePolicy();
    };
    if (this.#closing) {
      unsubscribe();
      return;
    }
    this.#unsubscribe = unsubscribe;
    let snapshot: StatusPayload;
    try {
      snapshot = await bound("subscribe's snapshot", () => this.#server.handlers.status());
    } catch (e) {
      this.#unsubscribe = null;
      unsubscribe();
      throw e;
    }
    this.#respond(id, "subscribe", snapshot);
    const pending = held;
    held = null;
    for (const event of pending) this.#send({ type: "event", event });
  }

  #respond<C extends Command>(id: RequestId, command: C, result: CommandResults[C]): void {
    this.#send({ type: "response", id, command, result } as DaemonMessage);
  }
}

/** The control socket of one daemon. Start with ControlServer.start; close() ends every client and removes the socket. */
export class ControlServer {
  readonly path: string;
  readonly handlers: ControlHandlers;
  readonly limits: Readonly<ControlLimits>;
  readonly version: string;
  readonly log: Logger;
  readonly #server: Server;
  readonly #clients = new Set<ClientConnection>();
  readonly #refused = new Set<Socket>();
  readonly #identifying = new Set<Socket>();
  readonly #peerUid: ((socket: Socket) => Promise<number | null>) | null;
  readonly #now: () => number;
  /** When each drill of the current window started (monotonic ms), oldest first. */
  #drillStarts: number[] = [];
  readonly #diagRunning: Record<"diag" | "diag-upload", number> = { diag: 0, "diag-upload": 0 };
  #ino: number | null = null;
  #connections = 0;
  #closed: Promise<void> | null = null;

  private constructor(opts: ControlServerOptions) {
    this.path = opts.path;
    this.handlers = opts.handlers;
    this.limits = { ...DEFAULT_CONTROL_LIMITS, ...opts.limits };
    this.version = opts.version ?? packageVersion();
    this.log = opts.log ?? createLogger();
    this.#peerUid = opts.peerUid ?? null;
    this.#now = opts.now ?? ((): number => performance.now());
    this.#server = createServer((socket) => {
      this.#accept(socket);
    });
    this.#server.on("error", (e) => {
      this.log.error("control server error", { err: e });
    });
  }

  /**
   * Opens the control socket: removes a stale socket file (refusing if a daemon answers on it), binds, sets
   * `mode` (0660) and owner <uid>:<group>. Rejects with a ControlServerError naming what is in the way.
   */
  static async start(opts: ControlServerOptions): Promise<ControlServer> {
    const server = new ControlServer(opts);
    let gid: number | null;
    if (typeof opts.group === "number") gid = opts.group;
    else if (typeof opts.group === "string") {
      gid = resolveGroup(opts.group, opts.groupFile);
      if (gid === null)
        throw new ControlServerError(
          "unknown-group",
          `group "${opts.group}" is not in ${opts.groupFile ?? "/etc/group"}; create it (groupadd ${opts.group}) or pass another --group`,
        );
    } else {
      gid = resolveGroup(DEFAULT_CONTROL_GROUP, opts.groupFile);
      if (gid === null)
        server.log.warn("control socket group not found; only root can use the socket", {
          group: DEFAULT_CONTROL_GROUP,
        });
    }
    mkdirSync(dirname(opts.path), { recursive: true, mode: 0o755 });
    await clearStaleSocket(opts.path);
    await listen(server.#server, opts.path);
    try {
      chmodSync(opts.path, opts.mode ?? 0o660);
      if (gid !== null) chownSync(opts.path, process.getuid?.() ?? 0, gid);
      server.#ino = statSync(opts.path).ino;
    } catch (e) {
      await server.close();
      throw new ControlServerError(
        "listen-failed",
        `cannot set the permissions of ${opts.path}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    server.log.info("control socket open", { path: opts.path, mode: (opts.mode ?? 0o660).toString(8), gid });
    return server;
  }

  /** Connected clients (greeted or not). */
  get clientCount(): number {
    return this.#clients.size;
  }

  /**
   * Counts a drill against the window, or says why not: the message names the limit and when the next drill may
   * start. The ticket's refund() takes back a drill that broke nothing (the daemon refused it).
   */
  takeDrill(): { refund(): void } | string {
    const now = this.#now();
    const { maxDrillsPerWindow: max, drillWindowMs: window } = this.limits;
    this.#drillStarts = this.#drillStarts.filter((t) => now - t < window);
    const oldest = this.#drillStarts[0];
    if (this.#drillStarts.length >= max && oldest !== undefined)
      return `at most ${max} drills per ${Math.round(window / 60_000)} min (each breaks the tunnel on purpose); the next may start in ${Math.ceil((oldest + window - now) / 1000)} s`;
    this.#drillStarts.push(now);
    let refunded = false;
    return {
      refund: () => {
        if (refunded) return;
        refunded = true;
        const i = this.#drillStarts.indexOf(now);
        if (i >= 0) this.#drillStarts.splice(i, 1);
      },
    };
  }

  /** Takes one of the concurrent diagnostic slots of `kind`: the release function, or why not. */
  takeDiagSlot(kind: "diag" | "diag-upload"): (() => void) | string {
    const max = this.limits.maxConcurrentDiag;
    if (this.#diagRunning[kind] >= max)
      return `${kind === "diag" ? "a diagnostic bundle is" : "an upload is"} already being made (at most ${max} at once); try again when it is done`;
    this.#diagRunning[kind] += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#diagRunning[kind] -= 1;
    };
  }

  #refuse(socket: Socket, n: number, message: string, why: string): void {
    const enc = encodeLine({ type: "error", id: null, code: "busy", message });
    socket.on("error", () => undefined);
    socket.resume(); // discard whatever it sends, and see its close
    if (enc.ok) socket.end(enc.line);
    else socket.end();
    const timer = setTimeout(() => socket.destroy(), this.limits.closeGraceMs);
    this.#refused.add(socket);
    socket.once("close", () => {
      clearTimeout(timer);
      this.#refused.delete(socket);
    });
    this.log.warn(`control client refused: ${why}`, { conn: n, clients: this.#clients.size });
  }

  #accept(socket: Socket): void {
    const n = ++this.#connections;
    const max = this.limits.maxClients;
    const open = this.#clients.size + this.#identifying.size;
    if (this.#closed !== null || open >= max) {
      this.#refuse(socket, n, `detourd serves at most ${max} clients at once`, "too many clients");
      return;
    }
    // Without a way to tell root, a reserve would only waste slots; there is always one unreserved slot.
    const lookup = this.#peerUid;
    const reserved = lookup === null ? 0 : Math.min(this.limits.reservedForRoot, max - 1);
    if (open < max - reserved || lookup === null) {
      this.#clients.add(new ClientConnection(socket, this, n));
      return;
    }
    // Only root may take one of the last slots: ask who it is (the socket stays paused meanwhile).
    this.#identifying.add(socket);
    socket.on("error", () => undefined);
    lookup(socket)
      .catch((e: unknown) => {
        this.log.warn("control peer's uid could not be read", { conn: n, err: (e as Error).message });
        return null;
      })
      .then(
        (uid) => {
          this.#identifying.delete(socket);
          if (socket.destroyed) return;
          if (uid !== 0) {
            this.#refuse(
              socket,
              n,
              `detourd serves at most ${max - reserved} clients at once; the last ${reserved} slots are root's`,
              "slots reserved for root",
            );
            return;
          }
          if (this.#closed !== null || this.#clients.size >= max) {
            this.#refuse(socket, n, `detourd serves at most ${max} clients at once`, "too many clients");
            return;
          }
          this.log.info("control client took a slot reserved for root", { conn: n, clients: this.#clients.size });
          this.#clients.add(new ClientConnection(socket, this, n));
        },
        (e: unknown) => {
          this.log.error("control accept failed", { conn: n, err: e });
          socket.destroy();
        },
      );
  }

  /** @internal Called by a connection when its socket has closed. */
  forget(c: ClientConnection): void {
    this.#clients.delete(c);
  }

  /** Stops accepting, disconnects every client (ending their subscriptions) and removes the socket file. */
  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      this.#server.close(() => {
        resolve();
      });
      for (const c of this.#clients) c.destroy();
      for (const s of this.#refused) s.destroy();
      for (const s of this.#identifying) s.destroy();
    }).then(() => {
      // libuv unlinks the socket on close; remove it here too unless another daemon has bound the path since.
      try {
        if (this.#ino !== null && statSync(this.path).ino === this.#ino) rmSync(this.path, { force: true });
      } catch {
        // already gone
      }
    });
    return this.#closed;
  }
}
