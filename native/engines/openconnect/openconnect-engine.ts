/**
 * The AnyConnect driver: runs openconnect against an ocserv (or Cisco) gateway with Detour's hand-back script,
 * configures only the TUN device itself, proves the tunnel with an echo through it, and reports what the
 * gateway pushed, DTLS/TLS transport changes, dead peers and exits as TunnelEvents.
 *
 *   spawn ──▶ TLS + auth ──▶ CSTP connected ──▶ (DTLS, up to 12 s) ──▶ "connect" hand-back record
 *        ──▶ address + MTU on the device ──▶ echo reply through it ──▶ up
 *   any step: refused → unreachable, pin → identity-mismatch, login → auth-failed, exit → engine-crashed,
 *             deadline → timeout, abort or stop() → cancelled; whatever was started is torn down first.
 */
import { spawn } from "node:child_process";
import { isIPv6 } from "node:net";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, normalize } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { EngineErrorCode, TunnelEvent, TunnelStats, TunnelUp } from "../../../main/core/tunnel/engine-types.ts";
import { addAddress, linkCounters, linkExists, setLinkUp } from "../../platform/link.linux.ts";
import { pathMtu } from "../../platform/mss.linux.ts";
import { pingThrough } from "../../platform/probe.linux.ts";
import { isAlive, STOP_GRACE_MS } from "../../platform/process-tree.linux.ts";
import { inNetns, run } from "../../platform/run.ts";
import { resourcePath } from "../../resources.ts";
import {
  EngineError,
  EventHub,
  type AnyConnectSpec,
  type EngineDiagnostics,
  type EngineStartHooks,
  type TunnelEngine,
} from "../engine.ts";
import { EngineProcess, type ProcessExit } from "../engine-process.ts";
import { StartAttempt, StartGuard } from "../start-guard.ts";
import { HANDBACK_ENV, HandbackReader, isIfname, isIpv4, type Handback } from "./handback-codec.ts";
import { parseAuthOutput, PIN_RE, type AnyConnectSession } from "./auth-output.ts";
import { parseLine, type OcEvent, type ParsedLine } from "./output-parser.ts";

export type { AnyConnectSession } from "./auth-output.ts";

/** The hand-back script shipped with Detour; run through /bin/sh so its file mode does not matter. */
export const HANDBACK_SCRIPT = resourcePath("engines/openconnect/handback.sh");

/** The connect record arrives tens of milliseconds after spawn; polling this often adds little to start-up. */
const HANDBACK_POLL_MS = 20;
/** Once up, records only confirm reconnects the output lines already announced, so a slow poll is enough. */
const HANDBACK_POLL_UP_MS = 250;
/** The record file holds a handful of short records; anything near this size is not from our script. */
const MAX_HANDBACK_FILE_BYTES = 1024 * 1024;
/** Node reports `exit` before the pipes drain; the lines that explain the exit arrive within milliseconds. */
const EXIT_OUTPUT_GRACE_MS = 100;
/** openconnect prints "Configured as ..." just after the connect script returns; the probe usually outlasts it. */
const CONFIGURED_LINE_WAIT_MS = 300;
/** The kernel removes the TUN device as soon as openconnect's descriptor closes; longer means it is stuck. */
const DEVICE_GONE_TIMEOUT_MS = 2_000;
const DEVICE_GONE_POLL_MS = 20;
/** Echoes of the start-up probe: 20 ms finds a fresh tunnel quickly without flooding it. */
const START_PROBE_INTERVAL_MS = 20;
/** The sanitized output lines kept for error messages and diagnostics. */
const TAIL_LINES = 40;
/** `openconnect --authenticate` prints five short variables; more output than this is not openconnect. */
const MAX_AUTH_STDOUT = 64 * 1024;
/** After SIGKILL of a timed-out `--authenticate` the exit follows at once; this only bounds the wait. */
const AUTH_KILL_WAIT_MS = 2_000;

const USER_RE = /^[^\s\0-]\S{0,127}$/;
const HOST_RE = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})$/;

export interface OpenConnectOptions {
  /** Open the tunnel with this cookie instead of logging in with the password. */
  session?: AnyConnectSession;
  /**
   * True (default): stop() logs off (SIGINT: BYE), which invalidates the cookie. False: stop() disconnects with
   * SIGHUP and the session stays usable for a faster start with `session` later.
   */
  logoffOnStop?: boolean;
  /** Path of the hand-back script (a packaged app keeps its resources elsewhere). */
  scriptPath?: string;
}

type Transport = "dtls" | "tls";

function bad(message: string): EngineError {
  return new EngineError("bad-config", message);
}

/** Checks a spec before anything runs: every value here ends up on openconnect's command line or in `ip`. */
function validateSpec(spec: AnyConnectSpec): void {
  const { runtime, gateway, params, credentials, probe } = spec;
  if (!isIfname(runtime.ifname)) throw bad(`interface name "${runtime.ifname}" is not 1-15 of [A-Za-z0-9_.-]`);
  // stop() deletes workDir recursively, so a root-level or relative path is refused outright.
  if (
    !runtime.workDir.startsWith("/") ||
    normalize(runtime.workDir)
      .split("/")
      .filter((x) => x !== "").length < 2
  ) {
    throw bad("workDir must be an absolute path at least two levels deep");
  }
  if (!(isIpv4(gateway.address) || isIPv6(gateway.address) || HOST_RE.test(gateway.address)))
    throw bad(`gateway address "${gateway.address}" is not an IP address or host name`);
  if (!(Number.isInteger(params.port) && params.port > 0 && params.port < 65536))
    throw bad(`port ${params.port} is out of range`);
  if (!PIN_RE.test(params.pin)) throw bad("the TLS pin is not pin-sha256:<base64> (or sha1:/sha256: hex)");
  if (!USER_RE.test(credentials.username)) throw bad("the user name is empty, has spaces or starts with '-'");
  const pw = credentials.password.reveal();
  if (pw === "" || /[\n\r\0]/.test(pw)) throw bad("the password is empty or holds a line break");
  if (!isIpv4(probe.address)) throw bad(`probe address "${probe.address}" is not IPv4`);
}

/**
 * The server URL openconnect connects to; an IPv6 literal goes in brackets (RFC 3986). openconnect then has no
 * host name to check the certificate against, which does not matter: --servercert pins the key, and a pinned
 * key is accepted whatever names the certificate carries.
 */
export function gatewayUrl(spec: Pick<AnyConnectSpec, "gateway" | "params">): string {
  const host = isIPv6(spec.gateway.address) ? `[${spec.gateway.address}]` : spec.gateway.address;
  return `https://${host}:${String(spec.params.port)}/`;
}

/** Which error code the output explains, when it explains one. */
function codeFromOutput(facts: ReadonlySet<OcEvent["kind"]>): EngineErrorCode | null {
  if (facts.has("pin-mismatch")) return "identity-mismatch";
  if (facts.has("login-failed") || facts.has("cookie-rejected")) return "auth-failed";
  if (facts.has("connect-refused") || facts.has("connect-failed")) return "unreachable";
  return null;
}

export class OpenConnectEngine implements TunnelEngine {
  readonly protocol = "anyconnect" as const;
  readonly #spec: AnyConnectSpec;
  readonly #opts: OpenConnectOptions;
  readonly #hub = new EventHub();
  readonly #reader = new HandbackReader();
  readonly #tail: string[] = [];
  /** Kinds of output events seen since spawn: the evidence for classifying a failure. */
  readonly #facts = new Set<OcEvent["kind"]>();
  readonly #guard: StartGuard;
  #proc: EngineProcess | null = null;
  /** Only a validated spec's workDir is ever deleted. */
  #validated = false;
  #stopping = false;
  #handbackOffset = 0;
  #handbackTimer: NodeJS.Timeout | null = null;
  #handbackReading = false;
  #connectRecord: Handback | null = null;
  #onConnectRecord: (() => void) | null = null;
  #onConfigured: (() => void) | null = null;
  #configuredSeen = false;
  #handshakeAt: number | null = null;
  #dtlsUp = false;
  #up = false;
  #degraded = false;
  #down: string | null = null;
  #lastRxAt: number | null = null;
  #lastRxPackets = -1;

  constructor(spec: AnyConnectSpec, opts: OpenConnectOptions = {}) {
    this.#spec = spec;
    this.#opts = opts;
    this.#guard = new StartGuard(`AnyConnect start to ${spec.gateway.name}`, () => this.#teardown());
  }

  /** openconnect drops its connections and reconnects at once with its session cookie on SIGUSR2 (since 8.0). */
  roam(): void {
    const proc = this.#proc;
    if (proc === null || !proc.running || !this.#up || this.#stopping || proc.pid <= 0) return;
    try {
      process.kill(proc.pid, "SIGUSR2");
    } catch {
      // gone already: its exit is reported as such
    }
  }

  /** openconnect's PID once spawned (ip netns exec execs it, so this is openconnect itself); -1 before. */
  get pid(): number {
    return this.#proc?.pid ?? -1;
  }

  get #handbackFile(): string {
    return join(this.#spec.runtime.workDir, "handback");
  }

  onEvent(listener: (e: TunnelEvent) => void): () => void {
    return this.#hub.on(listener);
  }

  /**
   * Logs in once with the password (`openconnect --authenticate`) and returns the session cookie, so a later
   * start can skip authentication. Rejects with the same codes as start().
   */
  static async authenticate(
    spec: AnyConnectSpec,
    deadlineAt: number,
    signal?: AbortSignal,
  ): Promise<AnyConnectSession> {
    validateSpec(spec);
    const facts = new Set<OcEvent["kind"]>();
    const tail: string[] = [];
    const attempt = new StartAttempt({
      deadlineAt,
      signal,
      what: `AnyConnect authentication with ${spec.gateway.name}`,
      timeoutError: () =>
        new EngineError(
          codeFromOutput(facts) ?? "timeout",
          `no answer from ${spec.gateway.name}'s authentication before the deadline`,
          tail.slice(-20).join("\n"),
        ),
    });
    try {
      attempt.check();
      return await OpenConnectEngine.#authenticate(spec, attempt, facts, tail);
    } finally {
      attempt.end();
    }
  }

  static async #authenticate(
    spec: AnyConnectSpec,
    attempt: StartAttempt,
    facts: Set<OcEvent["kind"]>,
    tail: string[],
  ): Promise<AnyConnectSession> {
    const argv = inNetns(spec.runtime.netns, [
      "openconnect",
      "--protocol=anyconnect",
      `--user=${spec.credentials.username}`,
      "--passwd-on-stdin",
      "--non-inter",
      `--servercert=${spec.params.pin}`,
      "--authenticate",
      "--timestamp",
      "-v",
      gatewayUrl(spec),
    ]);
    const [file, ...args] = argv;
    const child = spawn(file, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(spec.credentials.password.reveal() + "\n");
    let stdout = "";
    let errBuf = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      if (stdout.length < MAX_AUTH_STDOUT) stdout += d;
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      errBuf += d;
      let nl = errBuf.indexOf("\n");
      while (nl >= 0) {
        const p = parseLine(errBuf.slice(0, nl));
        facts.add(p.event.kind);
        tail.push(p.text);
        if (tail.length > TAIL_LINES) tail.shift();
        errBuf = errBuf.slice(nl + 1);
        nl = errBuf.indexOf("\n");
      }
      if (errBuf.length > 8192) errBuf = "";
    });
    // `close` (not `exit`): stdout is complete only once the pipes have drained.
    const closed = new Promise<void>((resolve) => {
      child.on("close", () => {
        resolve();
      });
      child.on("error", () => {
        resolve();
      });
    });
    try {
      await attempt.race(closed);
    } catch (e) {
      child.kill("SIGKILL");
      await Promise.race([closed, sleep(AUTH_KILL_WAIT_MS)]);
      throw e;
    }
    const fields = parseAuthOutput(stdout);
    stdout = "";
    if (child.exitCode !== 0 || fields === null) {
      const code = codeFromOutput(facts) ?? "engine-crashed";
      throw new EngineError(
        code,
        `openconnect --authenticate against ${spec.gateway.name} failed (exit ${String(child.exitCode)})`,
        tail.slice(-20).join("\n"),
      );
    }
    if (fields.fingerprint !== spec.params.pin)
      throw new EngineError(
        "identity-mismatch",
        `${spec.gateway.name} authenticated with a certificate other than the pinned one`,
      );
    return { ...fields, obtainedAt: Date.now() };
  }

  async start(deadlineAt: number, signal?: AbortSignal, startHooks: EngineStartHooks = {}): Promise<TunnelUp> {
    const hooks = { timeoutError: () => this.#timeoutError(), tail: () => this.#tailText() };
    const up = await this.#guard.run(deadlineAt, signal, hooks, (attempt) => {
      validateSpec(this.#spec);
      this.#validated = true;
      return this.#bringUp(deadlineAt, attempt, startHooks);
    });
    this.#up = true;
    this.#pollHandback(HANDBACK_POLL_UP_MS);
    this.#hub.emit({ type: "up", at: Date.now() });
    return up;
  }

  async #bringUp(deadlineAt: number, attempt: StartAttempt, startHooks: EngineStartHooks): Promise<TunnelUp> {
    const { runtime, probe, params } = this.#spec;
    // openconnect derives its MTU (CSTP and DTLS) from the underlay's: given the path's toward the gateway, it
    // asks the gateway for one that fits a smaller hop (PPPoE, LTE, a nested tunnel) instead of assuming 1500.
    const pathP = pathMtu(this.#spec.gateway.address, runtime.netns).catch(() => null);
    if (await attempt.race(linkExists(runtime.ifname, runtime.netns)))
      throw bad(`a device named ${runtime.ifname} already exists`);
    const path = await attempt.race(pathP);
    mkdirSync(runtime.workDir, { recursive: true, mode: 0o700 });
    rmSync(this.#handbackFile, { force: true });
    const session = this.#opts.session;
    const auth =
      session === undefined
        ? ["--protocol=anyconnect", `--user=${this.#spec.credentials.username}`, "--passwd-on-stdin"]
        : [
            "--protocol=anyconnect",
            "--cookie-on-stdin",
            ...(session.resolve === null ? [] : [`--resolve=${session.resolve}`]),
          ];
    const script = this.#opts.scriptPath ?? HANDBACK_SCRIPT;
    if (script.includes("'")) throw bad("the hand-back script path holds a quote");
    const argv = [
      "openconnect",
      ...auth,
      "--non-inter",
      `--servercert=${params.pin}`,
      // openconnect runs the script with /bin/sh -c, so this works whatever the file's mode is.
      `--script=/bin/sh '${script}'`,
      `--interface=${runtime.ifname}`,
      "--timestamp",
      "-v",
      ...(params.dtls ? [] : ["--no-dtls"]),
      ...(path === null ? [] : [`--base-mtu=${String(path.mtu)}`]),
      session === undefined ? gatewayUrl(this.#spec) : session.connectUrl,
    ];
    const secret = session === undefined ? this.#spec.credentials.password : session.cookie;
    const proc = EngineProcess.spawn({
      argv,
      netns: runtime.netns,
      env: {
        PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
        LC_ALL: "C",
        [HANDBACK_ENV]: this.#handbackFile,
      },
      stdin: secret.reveal() + "\n",
      onLine: (line, at) => {
        this.#onLine(line, at);
      },
    });
    this.#proc = proc;
    void proc.exited.then((exit) => this.#onExit(exit));
    this.#pollHandback(HANDBACK_POLL_MS);

    await attempt.race(
      new Promise<void>((resolve) => {
        if (this.#connectRecord !== null) resolve();
        else this.#onConnectRecord = resolve;
      }),
    );
    const rec = this.#connectRecord;
    if (rec === null || rec.address === null)
      throw new EngineError("engine-crashed", "connect record without an address", this.#tailText());
    if (rec.tundev !== runtime.ifname)
      throw new EngineError(
        "engine-crashed",
        `openconnect opened ${String(rec.tundev)}, not ${runtime.ifname}`,
        this.#tailText(),
      );
    // /32: a wider prefix would make the kernel add a connected route, and routes are the caller's decision.
    await attempt.race(addAddress(runtime.ifname, `${rec.address}/32`, runtime.netns));
    await attempt.race(setLinkUp(runtime.ifname, rec.mtu, runtime.netns));
    if (startHooks.beforeProbe !== undefined)
      await attempt.race(startHooks.beforeProbe({ ifname: runtime.ifname, address: rec.address }));
    const echo = await attempt.race(
      pingThrough({
        ifname: runtime.ifname,
        target: probe.address,
        netns: runtime.netns,
        deadlineAt,
        intervalMs: START_PROBE_INTERVAL_MS,
        signal: attempt.signal,
      }),
    );
    if (!echo.ok) {
      throw new EngineError(
        "timeout",
        `the tunnel to ${this.#spec.gateway.name} is configured but ${echo.error}`,
        this.#tailText(),
      );
    }
    this.#lastRxAt = echo.at;
    if (!this.#configuredSeen) {
      await attempt.race(
        Promise.race([
          new Promise<void>((resolve) => {
            this.#onConfigured = resolve;
          }),
          sleep(CONFIGURED_LINE_WAIT_MS),
        ]),
      );
    }
    const transport = this.#transport();
    return {
      config: {
        ifname: runtime.ifname,
        addresses: [`${rec.address}/32`],
        routes: rec.splitIncludes,
        dns: rec.dns,
        mtu: rec.mtu,
      },
      timings: {
        spawnedAt: proc.spawnedAt,
        handshakeAt: this.#handshakeAt,
        firstReplyAt: echo.at,
        firstReplyRttMs: echo.rttMs,
      },
      detail: {
        transport,
        ...(rec.defaultDomain === null ? {} : { defaultDomain: rec.defaultDomain }),
        ...(session === undefined ? {} : { auth: "cookie" }),
      },
    };
  }

  #transport(): Transport {
    return this.#spec.params.dtls && this.#dtlsUp ? "dtls" : "tls";
  }

  #tailText(): string {
    return this.#tail.slice(-20).join("\n");
  }

  #timeoutError(): EngineError {
    const name = this.#spec.gateway.name;
    const f = this.#facts;
    const code = codeFromOutput(f) ?? "timeout";
    let why: string;
    if (this.#connectRecord !== null) why = "the tunnel is configured but no echo came back through it";
    else if (f.has("cstp-connected"))
      why = this.#spec.params.dtls
        ? "CSTP is up but openconnect still waits for DTLS (is UDP dropped?)"
        : "CSTP is up but the tunnel was not configured";
    else if (f.has("tls-connected")) why = "TLS is up but the VPN session did not start";
    else if (f.has("tcp-connected")) why = "TCP connected but TLS did not complete";
    else why = `no TCP connection to ${this.#spec.gateway.address}:${this.#spec.params.port}`;
    return new EngineError(code, `no AnyConnect tunnel to ${name} before the deadline: ${why}`, this.#tailText());
  }

  #onLine(line: string, at: number): void {
    const p: ParsedLine = parseLine(line);
    const e = p.event;
    this.#facts.add(e.kind);
    this.#tail.push(p.text);
    if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    switch (e.kind) {
      case "cstp-connected":
        this.#handshakeAt ??= at;
        this.#dtlsUp = false;
        if (this.#up && this.#down !== null) this.#markUp();
        break;
      case "dtls-established":
        this.#setDtls(true, "DTLS established");
        break;
      case "configured":
        this.#configuredSeen = true;
        this.#setDtls(e.dtls === "connected" || e.dtls === "established", `DTLS ${e.dtls}`);
        this.#onConfigured?.();
        break;
      case "dtls-dead-peer":
        this.#setDtls(false, "DTLS dead peer detected; traffic falls back to TLS");
        break;
      case "dtls-handshake-failed":
        this.#setDtls(false, `DTLS handshake failed: ${e.reason}`);
        break;
      case "dtls-timed-out":
        this.#setDtls(false, "DTLS handshake timed out");
        break;
      case "cstp-dead-peer":
        this.#markDown("CSTP dead peer detection: the gateway stopped answering");
        break;
      case "cstp-read-error":
        this.#markDown(`the TLS session to the gateway broke: ${e.reason}`);
        break;
      case "session-terminated":
      case "server-disconnect":
        this.#markDown("the gateway ended the session");
        break;
      case "pin-mismatch":
        this.#guard.fail(
          new EngineError(
            "identity-mismatch",
            `${this.#spec.gateway.name} presented ${e.presented}, not the pinned certificate`,
            this.#tailText(),
          ),
        );
        break;
      case "login-failed":
        this.#guard.fail(
          new EngineError("auth-failed", `${this.#spec.gateway.name} refused the credentials`, this.#tailText()),
        );
        break;
      case "cookie-rejected":
        this.#guard.fail(
          new EngineError(
            "auth-failed",
            `${this.#spec.gateway.name} refused the session cookie (expired or logged off)`,
            this.#tailText(),
          ),
        );
        break;
      case "connect-refused":
        if (!this.#up)
          this.#guard.fail(new EngineError("unreachable", `${e.target} refused the connection`, this.#tailText()));
        break;
      case "connecting":
      case "tcp-connected":
      case "tls-connected":
      case "dtls-initialised":
      case "dtls-retry":
      case "reconnect-failed":
      case "reconnect-wait":
      case "reconnect-gave-up":
      case "certificate-error":
      case "auth-incomplete":
      case "connect-failed":
      case "connect-cancelled":
      case "user-cancelled":
      case "input-required":
      case "redacted":
      case "other":
        break;
    }
    // A record may be complete by the time openconnect prints its next line; reading now saves a poll.
    if (this.#connectRecord === null) void this.#readHandback();
  }

  #setDtls(up: boolean, why: string): void {
    if (!this.#spec.params.dtls) return;
    const was = this.#dtlsUp;
    this.#dtlsUp = up;
    if (!this.#up || this.#down !== null || this.#stopping) return;
    if (was && !up && !this.#degraded) {
      this.#degraded = true;
      this.#hub.emit({ type: "degraded", at: Date.now(), reason: why });
    } else if (!was && up && this.#degraded) {
      // DTLS came back (openconnect retries every 60 s): up again on the fast transport.
      this.#degraded = false;
      this.#hub.emit({ type: "up", at: Date.now() });
    }
  }

  #markDown(reason: string): void {
    if (!this.#up || this.#down !== null || this.#stopping) return;
    this.#down = reason;
    this.#hub.emit({ type: "down", at: Date.now(), reason });
  }

  #markUp(): void {
    if (this.#stopping || this.#down === null) return;
    this.#down = null;
    this.#hub.emit({ type: "up", at: Date.now() });
  }

  #onRecord(rec: Handback): void {
    switch (rec.reason) {
      case "connect":
        if (this.#connectRecord === null) {
          this.#connectRecord = rec;
          this.#onConnectRecord?.();
        }
        break;
      case "attempt-reconnect":
        this.#markDown("openconnect is reconnecting to the gateway");
        break;
      case "reconnect":
        this.#markUp();
        break;
      case "pre-init":
      case "disconnect":
        break;
    }
  }

  #pollHandback(intervalMs: number): void {
    if (this.#handbackTimer !== null) clearInterval(this.#handbackTimer);
    this.#handbackTimer = setInterval(() => {
      void this.#readHandback();
    }, intervalMs);
  }

  async #readHandback(): Promise<void> {
    if (this.#handbackReading) return;
    this.#handbackReading = true;
    try {
      let buf: Buffer;
      try {
        buf = await readFile(this.#handbackFile);
      } catch {
        return;
      }
      if (buf.length > MAX_HANDBACK_FILE_BYTES) {
        this.#guard.fail(
          new EngineError("engine-crashed", "the hand-back file grew beyond any real use", this.#tailText()),
        );
        return;
      }
      if (buf.length <= this.#handbackOffset) return;
      const chunk = buf.subarray(this.#handbackOffset).toString("utf8");
      this.#handbackOffset = buf.length;
      for (const r of this.#reader.feed(chunk)) {
        if (r.ok) {
          this.#onRecord(r.record);
        } else if (this.#connectRecord === null) {
          this.#guard.fail(
            new EngineError(
              "engine-crashed",
              `openconnect handed back an invalid configuration: ${r.error.message}`,
              this.#tailText(),
              { cause: r.error },
            ),
          );
        }
      }
    } finally {
      this.#handbackReading = false;
    }
  }

  async #onExit(exit: ProcessExit): Promise<void> {
    const expected = this.#stopping;
    if (!expected) {
      // Let the lines that say why it exited arrive before classifying.
      await sleep(EXIT_OUTPUT_GRACE_MS);
    }
    if (this.#handbackTimer !== null) clearInterval(this.#handbackTimer);
    this.#handbackTimer = null;
    this.#hub.emit({ type: "engine-exit", at: exit.at, code: exit.code, signal: exit.signal, expected });
    if (expected) return;
    if (this.#up) {
      this.#markDown(`openconnect exited (${exit.signal ?? `code ${String(exit.code)}`})`);
    } else {
      const code = codeFromOutput(this.#facts) ?? "engine-crashed";
      this.#guard.fail(
        new EngineError(
          code,
          `openconnect exited during start (${exit.signal ?? `code ${String(exit.code)}`})`,
          this.#tailText(),
        ),
      );
    }
  }

  async stats(): Promise<TunnelStats> {
    const { runtime } = this.#spec;
    const c = await linkCounters(runtime.ifname, runtime.netns);
    const now = Date.now();
    if (c !== null && c.rxPackets > this.#lastRxPackets) {
      if (this.#lastRxPackets >= 0) this.#lastRxAt = now;
      this.#lastRxPackets = c.rxPackets;
    }
    return {
      rxBytes: c?.rxBytes ?? 0,
      txBytes: c?.txBytes ?? 0,
      rxPackets: c?.rxPackets ?? 0,
      txPackets: c?.txPackets ?? 0,
      lastRxAgoMs: this.#lastRxAt === null ? null : Math.max(0, now - this.#lastRxAt),
      subState: this.#proc?.running === true ? this.#transport() : null,
    };
  }

  /** openconnect's transport and output (the redaction of a bundle removes the webvpn cookie if it was printed). */
  diagnostics(): Promise<EngineDiagnostics> {
    const running = this.#proc?.running === true;
    return Promise.resolve({
      engine: "openconnect",
      state: { running, pid: this.pid, transport: running ? this.#transport() : null, dtls: this.#spec.params.dtls },
      log: this.#tail.join("\n"),
    });
  }

  stop(): Promise<void> {
    this.#stopping = true;
    return this.#guard.stop();
  }

  /** Stops openconnect (SIGINT logs off, SIGHUP keeps the cookie), then checks device and folder are gone. */
  async #teardown(): Promise<void> {
    this.#stopping = true;
    if (this.#handbackTimer !== null) clearInterval(this.#handbackTimer);
    this.#handbackTimer = null;
    const { runtime } = this.#spec;
    const proc = this.#proc;
    if (proc !== null) {
      // SIGINT logs off with a BYE and removes the device; SIGHUP leaves the cookie usable for a later start.
      await proc.stop(this.#opts.logoffOnStop === false ? "SIGHUP" : "SIGINT", STOP_GRACE_MS);
    }
    const leftovers: string[] = [];
    if (proc !== null) {
      const until = Date.now() + DEVICE_GONE_TIMEOUT_MS;
      while (Date.now() < until && (await linkExists(runtime.ifname, runtime.netns))) await sleep(DEVICE_GONE_POLL_MS);
      if (await linkExists(runtime.ifname, runtime.netns)) {
        // Only reached when openconnect opened it (start refuses an existing name), so it is ours to delete.
        await run("ip", [
          ...(runtime.netns === undefined ? [] : ["-n", runtime.netns]),
          "link",
          "del",
          "dev",
          runtime.ifname,
        ]);
        if (await linkExists(runtime.ifname, runtime.netns)) leftovers.push(`device ${runtime.ifname}`);
      }
      if (isAlive(proc.pid)) leftovers.push(`process ${proc.pid}`);
    }
    if (this.#validated) {
      rmSync(runtime.workDir, { recursive: true, force: true });
      if (existsSync(runtime.workDir)) leftovers.push(`folder ${runtime.workDir}`);
    }
    if (leftovers.length > 0)
      throw new EngineError(
        "engine-crashed",
        `openconnect left ${leftovers.join(", ")} behind after stop`,
        this.#tailText(),
      );
  }
}
