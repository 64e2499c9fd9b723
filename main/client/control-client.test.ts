/** The typed client against scripted fake daemons: not running, permission denied, hangs, bad answers, cancellation. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, test } from "node:test";
import { MAX_LINE_LENGTH } from "../core/protocol/messages.ts";
import { connectError, ControlClient, type ControlError } from "./control-client.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-client-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});
let n = 0;
const servers: Server[] = [];
const clients: ControlClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => new Promise((resolve) => s.close(resolve))));
});

const HELLO = JSON.stringify({ type: "hello", protocol: 1, daemon: "detourd/test" }) + "\n";

/** A daemon that answers the hello, then hands every later line to `onLine`. */
async function fakeDaemon(
  onLine: (msg: { id: number; command: string }, sock: Socket) => void,
  opts: { hello?: boolean } = {},
): Promise<string> {
  const path = join(dir, `f${++n}.sock`);
  const server = createServer((sock) => {
    sock.setEncoding("utf8");
    sock.on("error", () => undefined);
    let buf = "";
    let greeted = false;
    sock.on("data", (chunk: string) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n")) !== -1) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!greeted) {
          greeted = true;
          if (opts.hello !== false) sock.write(HELLO);
        } else onLine(JSON.parse(line) as { id: number; command: string }, sock);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  servers.push(server);
  return path;
}

async function connect(path: string, opts: Parameters<typeof ControlClient.connect>[1] = {}): Promise<ControlClient> {
  const c = await ControlClient.connect(path, { timeoutMs: 1000, ...opts });
  clients.push(c);
  return c;
}

const isCode =
  (code: string, re?: RegExp) =>
  (e: ControlError): boolean => {
    assert.equal(e.code, code, e.message);
    if (re !== undefined) assert.match(e.message, re);
    return true;
  };

describe("reaching the daemon", () => {
  test("no-socket-means-not-running-with-the-path-named", async () => {
    const path = join(dir, "absent.sock");
    await assert.rejects(ControlClient.connect(path), (e: ControlError) => {
      assert.equal(e.code, "not-running");
      assert.equal(e.message, `detourd is not running (no socket at ${path})`);
      assert.equal(e.retryable, true);
      return true;
    });
  });

  test("permission-denied-names-the-group-to-join", () => {
    const e = connectError(Object.assign(new Error("connect EACCES"), { code: "EACCES" }), "/run/detour/detourd.sock");
    assert.equal(e.code, "permission-denied");
    assert.equal(
      e.message,
      'permission denied on /run/detour/detourd.sock: detourd\'s socket is for root and the "detour" group; join it (sudo usermod -aG detour $USER, then log in again) or run as root',
    );
    assert.match(
      connectError(Object.assign(new Error("x"), { code: "EACCES" }), "/s", "vpn-users").message,
      /"vpn-users" group; join it \(sudo usermod -aG vpn-users/,
    );
    assert.equal(connectError(Object.assign(new Error("x"), { code: "ECONNREFUSED" }), "/s").code, "not-running");
  });

  test("a-daemon-that-accepts-but-never-says-hello-times-out", async () => {
    const path = await fakeDaemon(() => undefined, { hello: false });
    const t0 = Date.now();
    await assert.rejects(ControlClient.connect(path, { timeoutMs: 150 }), isCode("timeout", /within 150 ms/));
    assert.ok(Date.now() - t0 < 1000);
  });
});

describe("requests", () => {
  test("a-request-the-daemon-never-answers-times-out-and-a-late-answer-is-ignored", async () => {
    let late: (() => void) | null = null;
    const path = await fakeDaemon((m, sock) => {
      if (m.command === "race" && late === null) {
        late = () => sock.write(JSON.stringify({ type: "response", id: m.id, command: "race", result: null }) + "\n");
        return;
      }
      sock.write(JSON.stringify({ type: "response", id: m.id, command: m.command, result: null }) + "\n");
    });
    const c = await connect(path, { requestTimeoutMs: 100 });
    await assert.rejects(c.race(), isCode("timeout", /did not answer race within 100 ms/));
    (late as (() => void) | null)?.();
    await c.connect();
    assert.equal(await c.race(), null);
  });

  test("a-malformed-result-fails-that-call-with-the-bad-field-named", async () => {
    const path = await fakeDaemon((m, sock) => {
      const result = m.command === "status" ? { state: "sleeping" } : null;
      sock.write(JSON.stringify({ type: "response", id: m.id, command: m.command, result }) + "\n");
    });
    const c = await connect(path);
    await assert.rejects(c.status(), isCode("protocol-violation", /result\.state: /));
    await c.disconnect(); // the connection survives a bad payload
  });

  test("daemon-errors-arrive-as-typed-errors", async () => {
    const path = await fakeDaemon((m, sock) => {
      sock.write(JSON.stringify({ type: "error", id: m.id, code: "internal", message: "status failed: boom" }) + "\n");
    });
    const c = await connect(path);
    await assert.rejects(
      c.status(),
      (e: ControlError) => e.code === "internal" && e.message === "status failed: boom" && !e.retryable,
    );
  });

  test("garbage-from-the-daemon-ends-the-connection-with-a-reason", async () => {
    const path = await fakeDaemon((_m, sock) => {
      sock.write("this is not json\n");
    });
    const c = await connect(path);
    await assert.rejects(c.status(), isCode("protocol-violation", /not valid JSON/));
    const why = await c.closed;
    assert.equal(why?.code, "protocol-violation");
    await assert.rejects(c.race(), isCode("protocol-violation"));
  });

  test("an-oversized-line-from-the-daemon-is-not-buffered", async () => {
    const path = await fakeDaemon((_m, sock) => {
      sock.write("{" + "x".repeat(MAX_LINE_LENGTH + 1));
    });
    const c = await connect(path);
    await assert.rejects(c.status(), isCode("protocol-violation", /longer than/));
  });

  test("a-daemon-error-not-tied-to-a-request-ends-the-connection-with-it", async () => {
    const path = await fakeDaemon((_m, sock) => {
      sock.end(
        JSON.stringify({
          type: "error",
          id: null,
          code: "bad-request",
          message: "line longer than 1048576 characters",
        }) + "\n",
      );
    });
    const c = await connect(path);
    await assert.rejects(c.status(), isCode("bad-request", /line longer/));
    assert.equal((await c.closed)?.code, "bad-request");
  });

  test("close-cancels-pending-calls-and-is-not-a-failure", async () => {
    const path = await fakeDaemon(() => undefined);
    const c = await connect(path);
    const pending = c.status();
    c.close();
    await assert.rejects(pending, isCode("cancelled"));
    assert.equal(await c.closed, null);
    c.close();
  });
});
