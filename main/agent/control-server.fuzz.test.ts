/**
 * The control protocol fuzzed against a real control server on a temp socket: random and mutated framing, hellos
 * and requests of every command, split at random points. Every reply must be a valid daemon message (errors with
 * a stable code and a message), the server must keep serving, and its retained heap must stay bounded.
 * Seeded: a failure prints its seed; DETOUR_FUZZ_SEED=<seed> replays it.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { ControlClient } from "../client/control-client.ts";
import type { Candidate, ConnectionEvent, DrillResult } from "../core/connection/types.ts";
import type { PolicyStatus, PrefsPayload } from "../core/policy/status.ts";
import {
  COMMANDS,
  parseDaemonMessage,
  PROTOCOL_VERSION,
  type DaemonMessage,
  type DiagPayload,
  type StatusPayload,
} from "../core/protocol/messages.ts";
import {
  deepNesting,
  fuzzer,
  mutateBytes,
  mutateJson,
  randomBytes,
  retainedHeap,
  type Fuzz,
} from "../../test/fakes/fuzz.ts";
import { ControlRequestError, ControlServer, type ControlHandlers } from "./control-server.ts";
import type { Logger } from "./log.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-control-fuzz-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Connections per run: enough for every mutation kind many times over, within a few seconds on two cores. */
const CONNECTIONS = 400;
/** Connections open at once. */
const PARALLEL = 8;
/** Retained heap may grow this much over a run: a leak of a few hundred bytes per connection would exceed it. */
const HEAP_GROWTH_LIMIT = 24 * 1024 * 1024;
/** One connection's exchange: the server answers from memory, so 5 s means it is stuck. */
const EXCHANGE_TIMEOUT_MS = 5000;

const STATUS = {
  state: "disconnected",
  summary: "Disconnected.",
  gateway: null,
  protocol: null,
  activeLegId: null,
  since: 1,
  candidates: [],
  lastRace: null,
  lastFailover: null,
  standby: null,
  error: null,
  daemon: { version: "0.1.0", pid: 42, startedAt: 1, configPath: "/etc/detour/client.json" },
} as unknown as StatusPayload;

const DRILL: DrillResult = {
  id: "D1",
  startedAt: 1,
  endedAt: 2,
  slaMs: 3000,
  verdict: "refused",
  reason: "not connected",
  from: null,
  to: null,
  blockedAt: null,
  liftedAt: null,
  detectedAt: null,
  detectedAfterMs: null,
  restoredAt: null,
  restoredAfterMs: null,
  probesSent: 0,
  probesLost: 0,
  failover: null,
};
const POLICY: PolicyStatus = {
  version: null,
  organisation: null,
  source: null,
  keyId: null,
  issuedAt: null,
  expiresAt: null,
  appliedAt: null,
  locked: [],
  lastRejection: null,
};
const PREFS: PrefsPayload = { organisation: null, entries: [] };
const DIAG: DiagPayload = {
  path: "/var/lib/detour/diag/x.tar.gz",
  bytes: 1,
  sha256: "00",
  files: 1,
  tookMs: 1,
  redactions: { removed: {}, pseudonymised: {} },
};

/** Every handler, answering at once (the server's parsing and framing are under test, not the daemon). */
function handlers(): ControlHandlers {
  const listeners = new Set<(e: ConnectionEvent) => void>();
  return {
    status: () => Promise.resolve(STATUS),
    connect: () => Promise.resolve(null),
    disconnect: () => Promise.resolve(),
    gateways: () => Promise.resolve([] as Candidate[]),
    race: () => Promise.resolve(null),
    subscribe: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    drill: () => Promise.resolve(DRILL),
    policy: () => Promise.resolve(POLICY),
    prefs: () => Promise.resolve(PREFS),
    prefsSet: (key) =>
      key === "lockdown" ? Promise.resolve(PREFS) : Promise.reject(new ControlRequestError(`no preference ${key}`)),
    subscribePolicy: () => () => undefined,
    diag: () => Promise.resolve(DIAG),
    diagUpload: () => Promise.resolve({ path: DIAG.path, uploads: [] }),
    setGateway: (g) =>
      g === null || g === "gw1" ? Promise.resolve(g) : Promise.reject(new ControlRequestError(`no gateway ${g}`)),
  };
}

const silent: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

/** A valid message of each kind the client may send: the hello and one request per command. */
function validMessages(id: number): unknown[] {
  return [
    { type: "hello", protocol: PROTOCOL_VERSION, client: "fuzz" },
    ...COMMANDS.map((command) => ({
      type: "request",
      id,
      command,
      ...(command === "set-gateway" ? { params: { gateway: "gw1" } } : {}),
      ...(command === "drill" ? { params: { slaMs: 3000 } } : {}),
      ...(command === "prefs-set" ? { args: { key: "lockdown", value: "on" } } : {}),
    })),
  ];
}

/** One line's bytes: valid, mutated as JSON, mutated as bytes, or garbage. */
function line(f: Fuzz, id: number): Buffer {
  const valid = f.pick(validMessages(id));
  switch (f.int(6)) {
    case 0:
      return Buffer.from(JSON.stringify(valid) + "\n");
    case 5: {
      // A valid envelope around a value nested far deeper than any reader should recurse.
      const deep = deepNesting(f, 1 + f.int(100_000));
      return Buffer.from(`{"type":"request","id":${id},"command":"drill","params":${deep}}\n`);
    }
    case 1:
    case 2:
      return Buffer.from(JSON.stringify(mutateJson(f, valid)) + "\n");
    case 3:
      return Buffer.concat([mutateBytes(f, Buffer.from(JSON.stringify(valid))), Buffer.from("\n")]);
    default:
      return Buffer.concat([randomBytes(f, 200), Buffer.from(f.chance(0.8) ? "\n" : "")]);
  }
}

const SENTINEL = 987_654_321;

/**
 * One connection: an optional hello (valid, mutated or none), some lines, written in random pieces, then a newline
 * and a status request as sentinel. Resolves with every reply once the sentinel's answer came or the server closed.
 */
function exchange(f: Fuzz, path: string): Promise<{ replies: DaemonMessage[]; bad: string[]; closed: boolean }> {
  const hello = f.chance(0.8)
    ? Buffer.from(JSON.stringify({ type: "hello", protocol: PROTOCOL_VERSION, client: "fuzz" }) + "\n")
    : line(f, 1);
  const body = Buffer.concat([hello, ...Array.from({ length: f.int(12) }, (_, i) => line(f, i + 2))]);
  const pieces: Buffer[] = [];
  for (let at = 0; at < body.length;) {
    const n = 1 + f.int(Math.max(1, body.length - at));
    pieces.push(body.subarray(at, at + n));
    at += n;
  }
  pieces.push(Buffer.from(`\n${JSON.stringify({ type: "request", id: SENTINEL, command: "status" })}\n`));
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    const replies: DaemonMessage[] = [];
    const bad: string[] = [];
    let buf = "";
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ replies, bad, closed });
    };
    const timer = setTimeout(() => {
      done = true;
      s.destroy();
      reject(new Error(`no sentinel answer and no close within ${EXCHANGE_TIMEOUT_MS} ms`));
    }, EXCHANGE_TIMEOUT_MS);
    s.setEncoding("utf8");
    s.on("data", (chunk: string) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) !== -1) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        const d = parseDaemonMessage(text);
        if (!d.ok) {
          bad.push(`${d.message}: ${text.slice(0, 200)}`);
          continue;
        }
        replies.push(d.message);
        if (d.message.type === "response" && d.message.id === SENTINEL) finish(false);
      }
    });
    s.on("error", () => undefined); // a reset after the server's closing error is expected
    s.on("close", () => {
      finish(true);
    });
    s.on("connect", () => {
      for (const p of pieces) s.write(p);
    });
  });
}

test("the-control-protocol-survives-random-and-mutated-input-with-clear-errors-and-bounded-memory", async () => {
  const f = fuzzer(20261207);
  const server = await ControlServer.start({
    path: join(dir, "fuzz.sock"),
    group: process.getgid?.() ?? 0,
    handlers: handlers(),
    version: "9.9.9",
    log: silent,
  });
  try {
    // A first round warms up the code paths (JIT, zod's caches) so the heap comparison measures retention only.
    for (let i = 0; i < 40; i++) await exchange(f, server.path);
    const heapBefore = retainedHeap();
    const codes = new Map<string, number>();
    let answered = 0;
    for (let i = 0; i < CONNECTIONS; i += PARALLEL) {
      const results = await Promise.all(Array.from({ length: PARALLEL }, () => exchange(f, server.path)));
      for (const r of results) {
        assert.deepEqual(r.bad, [], `seed ${f.seed}: every reply is a valid daemon message`);
        if (!r.closed) answered++;
        for (const m of r.replies) {
          if (m.type !== "error") continue;
          assert.ok(m.message.length > 0, `seed ${f.seed}: an error says what was wrong`);
          assert.notEqual(m.code, "internal", `seed ${f.seed}: no input is a daemon failure: ${m.message}`);
          codes.set(m.code, (codes.get(m.code) ?? 0) + 1);
        }
      }
    }
    const growth = retainedHeap() - heapBefore;
    console.log(
      `control fuzz seed ${f.seed}: ${CONNECTIONS} connections, ${answered} kept to the sentinel, errors ${JSON.stringify(Object.fromEntries(codes))}, retained heap growth ${Math.round(growth / 1024)} KiB`,
    );
    assert.ok(answered > CONNECTIONS / 2, `seed ${f.seed}: most connections said hello and were answered`);
    assert.ok((codes.get("bad-request") ?? 0) > 100, `seed ${f.seed}: mutations were refused as bad requests`);
    assert.ok(growth < HEAP_GROWTH_LIMIT, `seed ${f.seed}: retained heap grew ${growth} bytes`);
    // The server still serves an ordinary client, and has forgotten every fuzzing one.
    const c = await ControlClient.connect(server.path, { timeoutMs: 2000 });
    try {
      assert.equal((await c.status()).state, "disconnected");
    } finally {
      c.close();
    }
    const deadline = Date.now() + 3000;
    while (server.clientCount > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.clientCount, 0, `seed ${f.seed}: no connection is left behind`);
  } finally {
    await server.close();
  }
});
