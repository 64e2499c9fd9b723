/** The control server against raw sockets and the typed client on a temp socket, with fake handlers. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, test } from "node:test";
import { ControlClient, ControlError, isControlError } from "../client/control-client.ts";
import type { Candidate, ConnectionEvent, DrillResult, RaceRecord } from "../core/connection/types.ts";
import { MAX_LINE_LENGTH, type StatusPayload } from "../core/protocol/messages.ts";
import { seededRandom } from "../../test/fakes/seeded-random.ts";
import {
  ControlRequestError,
  ControlServer,
  ControlServerError,
  resolveGroup,
  type ControlHandlers,
  type ControlServerOptions,
} from "./control-server.ts";
import type { Logger } from "./log.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-control-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;
const sockPath = (): string => join(dir, `d${++n}.sock`);

const RACE: RaceRecord = {
  id: "R1",
  reason: "connect",
  startedAt: 1000,
  endedAt: 1400,
  winner: { id: "L1", gateway: "gw1", kind: "wireguard" },
  legs: [
    {
      leg: { id: "L1", gateway: "gw1", kind: "wireguard" },
      outcome: "won",
      startedAt: 1000,
      endedAt: 1180,
      error: null,
    },
  ],
};
const CANDIDATES: Candidate[] = [
  {
    name: "gw1",
    hostname: "gw1.example.com",
    address: "198.18.1.2",
    priority: 10,
    region: "eu",
    kinds: ["wireguard"],
    sources: ["config"],
    probe: { at: 5, latencyMs: 1.5, reachable: { wireguard: "unknown" } },
  },
  {
    name: "gw2",
    hostname: "gw2.example.com",
    address: null,
    priority: 20,
    region: "eu",
    kinds: ["ikev2"],
    sources: ["dns"],
    probe: null,
  },
];
const STATUS: StatusPayload = {
  state: "connected",
  summary: "Connected to gw1 over WireGuard.",
  gateway: "gw1",
  protocol: "wireguard",
  activeLegId: "L1",
  since: 1400,
  candidates: CANDIDATES,
  lastRace: RACE,
  lastFailover: null,
  standby: null,
  error: null,
  daemon: { version: "0.1.0", pid: 42, startedAt: 1, configPath: "/etc/detour/client.json" },
};

const DRILL_RESULT: DrillResult = {
  id: "D1",
  startedAt: 2000,
  endedAt: 2900,
  slaMs: 3000,
  verdict: "pass",
  reason: "detected in 312 ms and restored in 355 ms, within SLA 3000 ms",
  from: { gateway: "gw1", kind: "wireguard" },
  to: { gateway: "gw2", kind: "wireguard" },
  blockedAt: 2050,
  liftedAt: 2880,
  detectedAt: 2362,
  detectedAfterMs: 312,
  restoredAt: 2405,
  restoredAfterMs: 355,
  probesSent: 18,
  probesLost: 17,
  failover: null,
};

/** Fake daemon: records calls, lets a test emit events and count listeners. */
class FakeDaemon implements ControlHandlers {
  calls: string[] = [];
  listeners = new Set<(e: ConnectionEvent) => void>();
  state: StatusPayload = STATUS;
  failWith: Error | null = null;
  status(): Promise<StatusPayload> {
    this.calls.push("status");
    return this.failWith === null ? Promise.resolve(this.state) : Promise.reject(this.failWith);
  }
  connect(): Promise<null> {
    this.calls.push("connect");
    return Promise.resolve(null);
  }
  disconnect(): Promise<void> {
    this.calls.push("disconnect");
    return Promise.resolve();
  }
  gateways(): Promise<Candidate[]> {
    this.calls.push("gateways");
    return Promise.resolve(CANDIDATES);
  }
  race(): Promise<RaceRecord | null> {
    this.calls.push("race");
    return Promise.resolve(RACE);
  }
  choice: string | null = null;
  setGateway(gateway: string | null): Promise<string | null> {
    this.calls.push(`set-gateway ${String(gateway)}`);
    if (gateway !== null && !CANDIDATES.some((c) => c.name === gateway))
      return Promise.reject(new ControlRequestError(`no gateway named ${gateway}`));
    this.choice = gateway;
    return Promise.resolve(gateway);
  }
  subscribe(listener: (e: ConnectionEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  emit(e: ConnectionEvent): void {
    for (const l of this.listeners) l(e);
  }
}

function quietLog(lines: string[] = []): Logger {
  const rec =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      lines.push(JSON.stringify({ level, msg, ...fields }));
    };
  return { debug: rec("debug"), info: rec("info"), warn: rec("warn"), error: rec("error") };
}

const open: ControlServer[] = [];
const clients: { close(): void }[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function start(handlers: ControlHandlers, opts: Partial<ControlServerOptions> = {}): Promise<ControlServer> {
  const s = await ControlServer.start({
    path: sockPath(),
    group: process.getgid?.() ?? 0,
    handlers,
    version: "9.9.9",
    log: quietLog(),
    ...opts,
  });
  open.push(s);
  return s;
}

/** A raw line-oriented connection for sending exactly what a test wants, malformed or not. */
class Raw {
  readonly socket: Socket;
  readonly lines: unknown[] = [];
  closed = false;
  #buf = "";
  #waiters: (() => void)[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.#buf += chunk;
      let i;
      while ((i = this.#buf.indexOf("\n")) !== -1) {
        this.lines.push(JSON.parse(this.#buf.slice(0, i)));
        this.#buf = this.#buf.slice(i + 1);
      }
      this.#wake();
    });
    socket.on("error", () => undefined); // a reset after the server's closing error is expected
    socket.on("close", () => {
      this.closed = true;
      this.#wake();
    });
    clients.push({ close: () => socket.destroy() });
  }

  static connect(path: string): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path);
      s.once("connect", () => {
        resolve(new Raw(s));
      });
      s.once("error", reject);
    });
  }

  static async greeted(path: string): Promise<Raw> {
    const r = await Raw.connect(path);
    r.send({ type: "hello", protocol: 1, client: "raw-test" });
    assert.deepEqual(await r.next(), { type: "hello", protocol: 1, daemon: "detourd/9.9.9" });
    return r;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  send(m: unknown): void {
    this.socket.write(typeof m === "string" ? m : JSON.stringify(m) + "\n");
  }

  #read = 0;
  /** The next message, waiting up to 2 s. */
  async next(): Promise<unknown> {
    const deadline = Date.now() + 2000;
    while (this.lines.length <= this.#read) {
      if (this.closed) throw new Error("connection closed while waiting for a message");
      if (Date.now() > deadline) throw new Error("no message within 2 s");
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return this.lines[this.#read++];
  }

  async waitClosed(ms = 3000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error("connection still open");
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function eventually(what: string, pred: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("handshake", () => {
  test("hello-is-answered-with-the-daemon-version", async () => {
    const s = await start(new FakeDaemon());
    await Raw.greeted(s.path);
  });

  test("a-different-protocol-version-gets-unsupported-protocol-and-the-connection-closes", async () => {
    const s = await start(new FakeDaemon());
    const r = await Raw.connect(s.path);
    r.send({ type: "hello", protocol: 2, client: "future-cli" });
    assert.deepEqual(await r.next(), {
      type: "error",
      id: null,
      code: "unsupported-protocol",
      message: "this daemon speaks protocol 1; the client asked for 2",
    });
    await r.waitClosed();
  });

  test("a-request-before-hello-is-refused-and-closed", async () => {
    const s = await start(new FakeDaemon());
    const r = await Raw.connect(s.path);
    r.send({ type: "request", id: 1, command: "status" });
    const m = (await r.next()) as { code: string; message: string };
    assert.equal(m.code, "bad-request");
    assert.match(m.message, /hello first/);
    await r.waitClosed();
  });

  test("a-client-that-never-says-hello-loses-its-slot", async () => {
    const s = await start(new FakeDaemon(), { limits: { helloTimeoutMs: 100 } });
    const r = await Raw.connect(s.path);
    assert.deepEqual(await r.next(), { type: "error", id: null, code: "timeout", message: "no hello within 100 ms" });
    await r.waitClosed();
    await eventually("the server to forget the client", () => s.clientCount === 0);
  });

  test("the-typed-client-reports-a-version-mismatch-from-the-daemon", async () => {
    // A fake daemon of a future protocol, to see the client's side of the mismatch.
    const path = sockPath();
    const fake = createServer((c) => {
      c.end(
        JSON.stringify({
          type: "error",
          id: null,
          code: "unsupported-protocol",
          message: "this daemon speaks protocol 2; the client asked for 1",
        }) + "\n",
      );
    });
    await new Promise<void>((resolve) => fake.listen(path, resolve));
    try {
      await assert.rejects(
        ControlClient.connect(path, { timeoutMs: 2000 }),
        (e: ControlError) => e.code === "unsupported-protocol" && /speaks protocol 2/.test(e.message),
      );
    } finally {
      fake.close();
    }
  });
});

describe("commands", () => {
  test("each-command-answers-with-its-id-through-the-typed-client", async () => {
    const d = new FakeDaemon();
    const s = await start(d);
    const c = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    clients.push(c);
    assert.equal(c.daemon, "detourd/9.9.9");
    assert.deepEqual(await c.status(), STATUS);
    await c.connect();
    await c.disconnect();
    assert.deepEqual(await c.gateways(), { candidates: CANDIDATES.map((x, i) => ({ ...x, rank: i + 1 })) });
    assert.deepEqual(await c.race(), RACE);
    assert.deepEqual(d.calls, ["status", "connect", "disconnect", "gateways", "race"]);
  });

  test("a-drill-gets-its-params-and-its-own-time-bound", async () => {
    const d = new FakeDaemon();
    const seen: unknown[] = [];
    const drill = (params: unknown): Promise<DrillResult> => {
      seen.push(params);
      // Longer than the ordinary handler bound below: a drill is bounded by drillTimeoutMs instead.
      return new Promise((resolve) =>
        setTimeout(() => {
          resolve({ ...DRILL_RESULT });
        }, 150),
      );
    };
    const s = await start(Object.assign(d, { drill }), { limits: { handlerTimeoutMs: 50 } });
    const c = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    clients.push(c);
    assert.deepEqual(await c.drill({ slaMs: 3000 }), DRILL_RESULT);
    assert.deepEqual(await c.drill(), DRILL_RESULT);
    assert.deepEqual(seen, [{ slaMs: 3000 }, {}]);
  });

  test("a-daemon-without-drills-says-so", async () => {
    const s = await start(new FakeDaemon());
    const c = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    clients.push(c);
    await assert.rejects(
      c.drill(),
      (e: unknown) =>
        isControlError(e) && e.code === "unknown-command" && /does not run failover drills/.test(e.message),
    );
  });

  test("set-gateway-chooses-a-candidate-or-automatic-and-an-unknown-name-is-a-bad-request", async () => {
    const d = new FakeDaemon();
    const s = await start(d);
    const c = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    clients.push(c);
    const name = CANDIDATES[1]?.name ?? "";
    assert.equal(await c.setGateway(name), name);
    assert.equal(d.choice, name);
    assert.equal(await c.setGateway(null), null);
    await assert.rejects(
      c.setGateway("atlantis"),
      (e: unknown) =>
        e instanceof ControlError && e.code === "bad-request" && /no gateway named atlantis/.test(e.message),
    );
    assert.deepEqual(await c.status(), STATUS, "the connection lives on after a bad request");
  });

  test("pipelined-requests-each-get-exactly-one-reply-with-their-id", async () => {
    const s = await start(new FakeDaemon());
    const r = await Raw.greeted(s.path);
    const commands = ["status", "connect", "race", "gateways", "disconnect", "race"];
    r.send(commands.map((command, i) => JSON.stringify({ type: "request", id: 100 + i, command })).join("\n") + "\n");
    const replies = await Promise.all(commands.map(() => r.next()));
    const byId = new Map(replies.map((m) => [(m as { id: number }).id, m as { type: string; command: string }]));
    assert.equal(byId.size, commands.length);
    commands.forEach((command, i) => {
      assert.equal(byId.get(100 + i)?.type, "response");
      assert.equal(byId.get(100 + i)?.command, command);
    });
  });

  test("a-throwing-handler-gives-an-internal-error-and-the-connection-lives-on", async () => {
    const d = new FakeDaemon();
    const s = await start(d);
    const r = await Raw.greeted(s.path);
    d.failWith = new Error("machine exploded");
    r.send({ type: "request", id: 1, command: "status" });
    assert.deepEqual(await r.next(), {
      type: "error",
      id: 1,
      code: "internal",
      message: "status failed: machine exploded",
    });
    // a handler that throws synchronously instead of rejecting
    d.race = () => {
      throw new TypeError("not a function");
    };
    r.send({ type: "request", id: 2, command: "race" });
    assert.deepEqual(await r.next(), {
      type: "error",
      id: 2,
      code: "internal",
      message: "race failed: not a function",
    });
    d.failWith = null;
    r.send({ type: "request", id: 3, command: "status" });
    assert.equal(((await r.next()) as { type: string }).type, "response");
  });

  test("a-hung-handler-times-out-with-a-timeout-error", async () => {
    const d = new FakeDaemon();
    d.connect = () => new Promise<null>(() => undefined);
    const s = await start(d, { limits: { handlerTimeoutMs: 100 } });
    const c = await ControlClient.connect(s.path);
    clients.push(c);
    await assert.rejects(
      c.connect(),
      (e: ControlError) => e.code === "timeout" && e.message === "connect did not answer within 100 ms",
    );
    assert.deepEqual(await c.race(), RACE);
  });

  test("malformed-json-and-unknown-commands-get-error-replies-not-a-crash", async () => {
    const s = await start(new FakeDaemon());
    const r = await Raw.greeted(s.path);
    r.send("{not json\n");
    const bad = (await r.next()) as { id: null; code: string; message: string };
    assert.equal(bad.code, "bad-request");
    assert.match(bad.message, /^not valid JSON/);
    r.send({ type: "request", id: 5, command: "self-destruct" });
    const unknown = (await r.next()) as { id: number; code: string; message: string };
    assert.deepEqual([unknown.id, unknown.code], [5, "unknown-command"]);
    r.send({ type: "request", id: 6, command: "status", sudo: true });
    assert.deepEqual(await r.next(), {
      type: "error",
      id: 6,
      code: "bad-request",
      message: '(message): Unrecognized key: "sudo"',
    });
    r.send({ type: "hello", protocol: 1, client: "again" });
    assert.equal(((await r.next()) as { code: string }).code, "bad-request");
    r.send({ type: "request", id: 7, command: "status" });
    assert.equal(((await r.next()) as { type: string; id: number }).id, 7);
  });

  test("an-oversized-line-is-an-error-and-closes-the-connection", async () => {
    const s = await start(new FakeDaemon());
    const r = await Raw.greeted(s.path);
    r.send("x".repeat(MAX_LINE_LENGTH + 10));
    assert.deepEqual(await r.next(), {
      type: "error",
      id: null,
      code: "bad-request",
      message: `line longer than ${MAX_LINE_LENGTH} characters`,
    });
    await r.waitClosed();
    const again = await Raw.greeted(s.path);
    again.send({ type: "request", id: 1, command: "race" });
    assert.equal(((await again.next()) as { type: string }).type, "response");
  });

  test("too-many-requests-in-flight-are-answered-busy", async () => {
    const d = new FakeDaemon();
    const gate: (() => void)[] = [];
    d.status = () =>
      new Promise<StatusPayload>((resolve) =>
        gate.push(() => {
          resolve(STATUS);
        }),
      );
    const s = await start(d, { limits: { maxInFlight: 2 } });
    const r = await Raw.greeted(s.path);
    for (let i = 1; i <= 3; i++) r.send({ type: "request", id: i, command: "status" });
    const busy = (await r.next()) as { id: number; code: string };
    assert.deepEqual([busy.id, busy.code], [3, "busy"]);
    for (const g of gate) g();
    const ids = [((await r.next()) as { id: number }).id, ((await r.next()) as { id: number }).id].sort();
    assert.deepEqual(ids, [1, 2]);
  });

  test("random-garbage-never-crashes-the-daemon", async () => {
    const seed = 20261122;
    const rand = seededRandom(seed);
    const s = await start(new FakeDaemon());
    const r = await Raw.greeted(s.path);
    const pieces = [
      '{"type":',
      '"request"',
      '"hello"',
      ',"id":',
      "1",
      "-1",
      ',"command":',
      '"status"',
      "}",
      "{",
      "[",
      "null",
      '"',
      "\\",
      ":",
      "\u00e9",
      "\n",
    ];
    let text = "";
    for (let i = 0; i < 3000; i++) text += pieces[Math.floor(rand() * pieces.length)] ?? "";
    r.send(text + "\n");
    r.send({ type: "request", id: 424242, command: "status" });
    const deadline = Date.now() + 3000;
    for (;;) {
      const m = (await r.next()) as { id?: number; type: string };
      if (m.id === 424242) {
        assert.equal(m.type, "response", `seed ${seed}`);
        break;
      }
      assert.ok(Date.now() < deadline, `seed ${seed}`);
    }
  });
});

describe("subscribe", () => {
  test("a-subscriber-gets-the-snapshot-then-events-and-is-unsubscribed-on-close", async () => {
    const d = new FakeDaemon();
    const s = await start(d);
    const c = await ControlClient.connect(s.path);
    clients.push(c);
    const got: ConnectionEvent[] = [];
    const sub = await c.subscribe((e) => got.push(e));
    assert.deepEqual(sub.snapshot, STATUS);
    assert.equal(d.listeners.size, 1);
    const events: ConnectionEvent[] = [
      { type: "state", at: 2000, state: "failing-over", detail: "gw1 stopped answering" },
      {
        type: "failover",
        at: 2100,
        failover: {
          from: { gateway: "gw1", kind: "wireguard" },
          to: { gateway: "gw2", kind: "ikev2" },
          reason: "dead",
          via: "race",
          lastReplyAt: 1400,
          detectedAt: 2000,
          restoredAt: 2100,
          detectedAfterMs: 600,
          restoredAfterMs: 700,
        },
      },
    ];
    for (const e of events) d.emit(e);
    await eventually("two events", () => got.length === 2);
    assert.deepEqual(got, events);
    assert.deepEqual(await c.status(), STATUS, "the first connection stays usable");
    sub.close();
    assert.equal(await sub.closed, null);
    await eventually("the listener to be removed", () => d.listeners.size === 0);
  });

  test("events-raised-while-the-snapshot-is-taken-follow-it-in-order", async () => {
    const d = new FakeDaemon();
    d.status = () => {
      d.emit({ type: "state", at: 1, state: "racing", detail: "during snapshot" });
      return Promise.resolve(STATUS);
    };
    const s = await start(d);
    const r = await Raw.greeted(s.path);
    r.send({ type: "request", id: 1, command: "subscribe" });
    assert.equal(((await r.next()) as { type: string }).type, "response");
    assert.deepEqual(await r.next(), {
      type: "event",
      event: { type: "state", at: 1, state: "racing", detail: "during snapshot" },
    });
    r.send({ type: "request", id: 2, command: "subscribe" });
    assert.deepEqual(await r.next(), {
      type: "error",
      id: 2,
      code: "bad-request",
      message: "already subscribed on this connection",
    });
  });

  test("a-subscriber-that-stops-reading-is-disconnected-not-buffered", async () => {
    const d = new FakeDaemon();
    const log: string[] = [];
    const s = await start(d, { limits: { maxPendingWriteBytes: 64 * 1024 }, log: quietLog(log) });
    const r = await Raw.greeted(s.path);
    r.send({ type: "request", id: 1, command: "subscribe" });
    await r.next();
    r.socket.pause();
    const big: ConnectionEvent = { type: "state", at: 1, state: "racing", detail: "x".repeat(4096) };
    for (let i = 0; i < 2000 && d.listeners.size > 0; i++) d.emit(big);
    assert.equal(d.listeners.size, 0, "the slow subscriber should have been dropped");
    await eventually("the server to forget the client", () => s.clientCount === 0);
    assert.ok(log.some((l) => l.includes("too slow")));
  });

  test("a-daemon-that-goes-away-ends-the-subscription-with-a-reason", async () => {
    const d = new FakeDaemon();
    const s = await start(d);
    const c = await ControlClient.connect(s.path);
    clients.push(c);
    const sub = await c.subscribe(() => undefined);
    await s.close();
    const why = await sub.closed;
    assert.equal(why?.code, "connection-lost");
    await assert.rejects(c.status(), (e: ControlError) => e.code === "connection-lost");
  });
});

describe("clients and the socket file", () => {
  test("concurrent-clients-are-served-independently", async () => {
    const s = await start(new FakeDaemon());
    const cs = await Promise.all(Array.from({ length: 20 }, () => ControlClient.connect(s.path)));
    clients.push(...cs);
    const results = await Promise.all(cs.flatMap((c) => [c.status(), c.race(), c.gateways()]));
    assert.equal(results.length, 60);
    assert.equal(s.clientCount, 20);
  });

  test("past-the-client-limit-a-newcomer-is-told-busy", async () => {
    const s = await start(new FakeDaemon(), { limits: { maxClients: 2 } });
    clients.push(await ControlClient.connect(s.path), await ControlClient.connect(s.path));
    await assert.rejects(ControlClient.connect(s.path), (e: ControlError) => e.code === "busy");
  });

  test("the-socket-is-mode-0660-and-owned-by-the-group", async () => {
    // process.umask() without an argument is deprecated; the kernel reports it in /proc.
    const umask = (): string | undefined => /^Umask:\s*(\d+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
    const before = umask();
    const s = await start(new FakeDaemon());
    assert.equal(umask(), before, "the umask used for the bind is restored");
    const st = statSync(s.path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
    assert.equal(st.gid, process.getgid?.());
    const custom = await start(new FakeDaemon(), { mode: 0o600 });
    assert.equal(statSync(custom.path).mode & 0o777, 0o600);
  });

  test("a-stale-socket-file-is-replaced", async () => {
    const path = sockPath();
    // A socket file nobody listens on: what a daemon killed with SIGKILL leaves behind.
    const r = spawnSync(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    assert.equal(r.signal, "SIGKILL");
    assert.ok(statSync(path).isSocket(), "the stale socket file is there");
    await assert.rejects(
      ControlClient.connect(path),
      (e: ControlError) =>
        e.code === "not-running" && e.message === `detourd is not running (nothing listens on ${path})`,
    );
    const s = await start(new FakeDaemon(), { path });
    const c = await ControlClient.connect(s.path);
    clients.push(c);
    assert.equal((await c.status()).state, "connected");
  });

  test("a-second-server-on-a-live-socket-is-refused-and-the-first-keeps-serving", async () => {
    const first = await start(new FakeDaemon());
    await assert.rejects(
      start(new FakeDaemon(), { path: first.path }),
      (e: unknown) =>
        e instanceof ControlServerError &&
        e.code === "address-in-use" &&
        e.message === `another detourd answers on ${first.path}; stop it first`,
    );
    const c = await ControlClient.connect(first.path);
    clients.push(c);
    assert.equal((await c.race())?.id, "R1");
  });

  test("a-file-that-is-not-a-socket-is-never-removed", async () => {
    const path = sockPath();
    writeFileSync(path, "precious");
    await assert.rejects(
      start(new FakeDaemon(), { path }),
      (e: unknown) => e instanceof ControlServerError && e.code === "not-a-socket",
    );
    assert.equal(statSync(path).isFile(), true);
  });

  test("close-removes-the-socket-file", async () => {
    const s = await ControlServer.start({
      path: sockPath(),
      group: process.getgid?.() ?? 0,
      handlers: new FakeDaemon(),
      log: quietLog(),
    });
    await s.close();
    assert.throws(() => statSync(s.path), /ENOENT/);
  });

  test("groups-resolve-through-an-etc-group-file-and-unknown-ones-are-refused", async () => {
    const file = join(dir, "group");
    writeFileSync(file, "root:x:0:\ndetour:x:998:alice,bob\nbroken:x:notanumber:\n");
    assert.equal(resolveGroup("detour", file), 998);
    assert.equal(resolveGroup("root", file), 0);
    assert.equal(resolveGroup("broken", file), null);
    assert.equal(resolveGroup("nobody-here", file), null);
    await assert.rejects(
      start(new FakeDaemon(), { group: "nobody-here", groupFile: file }),
      (e: unknown) =>
        e instanceof ControlServerError && e.code === "unknown-group" && /groupadd nobody-here/.test(e.message),
    );
  });
});

describe("local users cannot starve detourd or root", () => {
  test("status-events-and-errors-never-carry-a-urls-credentials", async () => {
    const d = new FakeDaemon();
    d.state = { ...STATUS, summary: "Cannot reach https://alice:hunter2@collector.example/v1?token=t0ken" };
    const s = await start(d);
    const r = await Raw.greeted(s.path);
    r.send({ type: "request", id: 1, command: "subscribe" });
    const snap = (await r.next()) as { result: StatusPayload };
    assert.equal(snap.result.summary, "Cannot reach https://[redacted]@collector.example/v1?token=[redacted]");
    d.emit({ type: "error", at: 5, message: "policy https://p.example/p.json?X-Amz-Signature=abc failed" } as never);
    const ev = JSON.stringify(await r.next());
    assert.match(ev, /X-Amz-Signature=\[redacted\]/);
    assert.doesNotMatch(ev + JSON.stringify(snap), /hunter2|t0ken|alice|=abc/);
  });

  test("a-greeted-connection-idle-past-the-bound-is-closed-but-busy-and-subscribed-ones-stay", async () => {
    const s = await start(new FakeDaemon(), { limits: { idleTimeoutMs: 150 } });
    const idle = await Raw.greeted(s.path);
    const talking = await Raw.greeted(s.path);
    const subscriber = await Raw.greeted(s.path);
    subscriber.send({ type: "request", id: 1, command: "subscribe" });
    assert.equal(((await subscriber.next()) as { command: string }).command, "subscribe");
    for (let i = 0; i < 6; i++) {
      talking.send({ type: "request", id: i, command: "status" });
      assert.equal(((await talking.next()) as { type: string }).type, "response");
      await new Promise((r) => setTimeout(r, 60));
    }
    assert.deepEqual(await idle.next(), {
      type: "error",
      id: null,
      code: "timeout",
      message: "idle for 150 ms; connect again to send a request",
    });
    await idle.waitClosed();
    assert.equal(talking.closed, false, "a client that keeps asking keeps its connection");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(subscriber.closed, false, "a subscriber waits for events as long as it likes");
    await talking.waitClosed(); // idle itself by now
    await eventually("the idle clients to be forgotten", () => s.clientCount === 1);
  });

  test("drills-are-rate-limited-daemon-wide-with-a-clear-error-and-refused-ones-cost-nothing", async () => {
    let now = 1_000_000;
    let verdict: DrillResult["verdict"] = "pass";
    const d = Object.assign(new FakeDaemon(), {
      drill: (): Promise<DrillResult> => Promise.resolve({ ...DRILL_RESULT, verdict }),
    });
    const s = await start(d, { limits: { maxDrillsPerWindow: 2, drillWindowMs: 60_000 }, now: () => now });
    const a = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    const b = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    clients.push(a, b);
    verdict = "refused";
    assert.equal((await a.drill()).verdict, "refused");
    verdict = "pass";
    assert.equal((await a.drill()).verdict, "pass");
    now += 10_000;
    assert.equal((await b.drill()).verdict, "pass", "a refused drill did not count");
    await assert.rejects(
      b.drill(),
      (e: ControlError) => e.code === "busy" && /at most 2 drills per 1 min .*next may start in 50 s/.test(e.message),
      "another client shares the daemon-wide budget",
    );
    now += 50_001;
    assert.equal((await a.drill()).verdict, "pass", "the window moves on");
  });

  test("diagnostic-bundles-and-uploads-run-one-at-a-time-others-are-told-busy", async () => {
    const releases: (() => void)[] = [];
    const payload = {
      path: "/var/lib/detour/diag/x.tar.gz",
      bytes: 1,
      sha256: "00".repeat(32),
      redactions: { removed: {}, pseudonymised: {} },
    };
    const d = Object.assign(new FakeDaemon(), {
      diag: () =>
        new Promise((resolve) => {
          releases.push(() => {
            resolve(payload);
          });
        }),
      diagUpload: () =>
        new Promise((resolve) => {
          releases.push(() => {
            resolve({ bundle: payload, destinations: [] });
          });
        }),
    }) as unknown as ControlHandlers;
    const s = await start(d, { limits: { handlerTimeoutMs: 3000 } });
    const r = await Raw.greeted(s.path);
    r.send({ type: "request", id: 1, command: "diag-upload" });
    r.send({ type: "request", id: 2, command: "diag-upload" });
    r.send({ type: "request", id: 3, command: "diag" });
    r.send({ type: "request", id: 4, command: "diag" });
    const busy = [(await r.next()) as { id: number; code: string; message: string }];
    busy.push((await r.next()) as { id: number; code: string; message: string });
    assert.deepEqual(
      busy.map((m) => [m.id, m.code]),
      [
        [2, "busy"],
        [4, "busy"],
      ],
    );
    assert.match(busy[0]?.message ?? "", /an upload is already being made \(at most 1 at once\)/);
    await eventually("both handlers to run", () => releases.length === 2);
    for (const f of releases.splice(0)) f();
    const done = [(await r.next()) as { id: number; type: string }, (await r.next()) as { id: number; type: string }];
    assert.deepEqual(done.map((m) => m.type).sort(), ["response", "response"]);
    r.send({ type: "request", id: 5, command: "diag-upload" });
    await eventually("the next upload to run", () => releases.length === 1);
    for (const f of releases.splice(0)) f();
    assert.equal(((await r.next()) as { id: number; type: string }).type, "response", "a slot frees when done");
  });

  test("clients-holding-every-unreserved-slot-cannot-lock-out-root", async () => {
    let nextUid: number | null = 1000;
    const asked: (number | null)[] = [];
    const s = await start(new FakeDaemon(), {
      limits: { maxClients: 4, reservedForRoot: 2 },
      peerUid: () => {
        asked.push(nextUid);
        return Promise.resolve(nextUid);
      },
    });
    const users = [await Raw.greeted(s.path), await Raw.greeted(s.path)];
    assert.deepEqual(asked, [], "no lookup while unreserved slots are free");
    const third = await Raw.connect(s.path);
    const refusal = (await third.next()) as { code: string; message: string };
    assert.equal(refusal.code, "busy");
    assert.match(refusal.message, /at most 2 clients at once; the last 2 slots are root's/);
    await third.waitClosed();
    nextUid = null;
    const unknown = await Raw.connect(s.path);
    assert.equal(((await unknown.next()) as { code: string }).code, "busy", "an unknown uid is not root");
    nextUid = 0;
    const root = await ControlClient.connect(s.path, { timeoutMs: 2000 });
    clients.push(root);
    assert.equal((await root.status()).state, "connected", "root gets in while users hold every other slot");
    const root2 = await Raw.greeted(s.path);
    const root3 = await Raw.connect(s.path);
    assert.equal(((await root3.next()) as { code: string }).code, "busy", "the reserve is bounded too");
    assert.equal(s.clientCount, 4);
    for (const u of [...users, root2]) u.socket.destroy();
  });
});
