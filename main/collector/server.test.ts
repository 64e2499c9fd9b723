/** The collector's server on loopback: credentials before bodies, bounded connections, plain HTTP kept local. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseServerArgs, plainHttpWarning, startCollector, UsageError, type RunningCollector } from "./server.ts";

export const TEST_INGEST = "ingest-token-acme-0123456789";
export const TEST_READ = "read-token-acme-0123456789abc";

const tmp = mkdtempSync(join(tmpdir(), "detour-collector-srv-"));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** A collector on 127.0.0.1 with a fresh database and the two test tokens. */
export async function startTestCollector(dir: string, maxConnections?: number): Promise<RunningCollector> {
  const tokensFile = join(dir, `tokens-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    tokensFile,
    JSON.stringify({
      tokens: [
        { org: "acme", role: "ingest", token: TEST_INGEST },
        { org: "acme", role: "read", token: TEST_READ },
      ],
    }),
    { mode: 0o600 },
  );
  return startCollector({
    log: () => undefined,
    host: "127.0.0.1",
    port: 0,
    storage: { kind: "sqlite", path: ":memory:" },
    tokensFile,
    retentionDays: 30,
    tls: null,
    ...(maxConnections === undefined ? {} : { maxConnections }),
  });
}

/** Sends `head` raw and resolves with everything the server sent until it closed or `ms` passed. */
function rawExchange(port: number, head: string, ms: number): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    let text = "";
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(() => {
      finish(false);
    }, ms);
    s.setEncoding("utf8");
    s.on("data", (d: string) => {
      text += d;
      if (/\r\n\r\n/.test(text) && /content-length: (\d+)/i.test(text)) {
        const len = Number(/content-length: (\d+)/i.exec(text)?.[1] ?? 0);
        const body = text.slice(text.indexOf("\r\n\r\n") + 4);
        if (Buffer.byteLength(body) >= len) finish(false);
      }
    });
    s.on("error", () => {
      finish(true);
    });
    s.on("close", () => {
      finish(true);
    });
    s.write(head);
  });
}

test("a-wrong-token-is-refused-before-the-body-is-read", async () => {
  const c = await startTestCollector(tmp);
  try {
    for (const [path, auth] of [
      ["/v1/metrics", "Bearer not-a-token-at-all-000000"],
      ["/v1/logs", ""],
      ["/v1/diagnostics", "Bearer not-a-token-at-all-000000"],
      ["/v1/diagnostics", `Bearer ${TEST_READ}`],
    ] as const) {
      // The body is announced but never sent: only a server that answers from the headers replies in time.
      const t0 = performance.now();
      const r = await rawExchange(
        c.address.port,
        `POST ${path} HTTP/1.1\r\nhost: x\r\n${auth === "" ? "" : `authorization: ${auth}\r\n`}content-type: application/json\r\ncontent-length: 900000\r\n\r\n`,
        3000,
      );
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(r.text)?.[1] ?? 0);
      assert.ok(status === 401 || status === 403, `${path} ${auth}: got ${JSON.stringify(r.text.slice(0, 200))}`);
      assert.ok(performance.now() - t0 < 2500, "answered without waiting for the body");
      assert.match(r.text, /connection: close/i);
    }
  } finally {
    await c.close();
  }
});

test("connections-past-the-limit-are-closed-and-the-collector-serves-again-once-they-go", async () => {
  const c = await startTestCollector(tmp, 3);
  const held: Socket[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const s = connect(c.address.port, "127.0.0.1");
      s.on("error", () => undefined);
      await new Promise<void>((resolve) => {
        s.once("connect", () => {
          resolve();
        });
      });
      held.push(s);
    }
    // Give the server a moment to accept all three before the fourth.
    await new Promise((r) => setTimeout(r, 100));
    const refused = await rawExchange(c.address.port, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 2000);
    assert.equal(refused.closed, true, "the fourth connection is closed");
    assert.doesNotMatch(refused.text, /200 OK/);
    for (const s of held) s.destroy();
    held.length = 0;
    await new Promise((r) => setTimeout(r, 100));
    const ok = await rawExchange(c.address.port, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", 2000);
    assert.match(ok.text, /^HTTP\/1\.1 200/);
  } finally {
    for (const s of held) s.destroy();
    await c.close();
  }
});

test("plain-http-outside-loopback-needs-an-explicit-option", () => {
  const base = ["--db", "x.db", "--tokens", "t.json"];
  assert.throws(
    () => parseServerArgs(["--listen", "0.0.0.0:4318", ...base]),
    (e: unknown) => e instanceof UsageError && /--insecure-plain-http/.test(e.message) && /in clear/.test(e.message),
  );
  assert.throws(() => parseServerArgs(["--listen", "[::]:4318", ...base]), UsageError);
  assert.equal(parseServerArgs(["--listen", "127.0.0.1:4318", ...base]).host, "127.0.0.1");
  assert.equal(parseServerArgs(["--listen", "[::1]:4318", ...base]).host, "::1");
  const opted = parseServerArgs(["--listen", "0.0.0.0:4318", "--insecure-plain-http", ...base]);
  assert.equal(opted.insecurePlainHttp, true);
  assert.match(plainHttpWarning(opted) ?? "", /^WARNING: plain HTTP on 0\.0\.0\.0.*unencrypted/);
  assert.equal(plainHttpWarning({ tls: null, host: "127.0.0.1" }), null);
  const tls = parseServerArgs(["--listen", "0.0.0.0:4318", "--tls-cert", "c.pem", "--tls-key", "k.pem", ...base]);
  assert.notEqual(tls.tls, null);
  assert.throws(() => parseServerArgs(["--listen", "127.0.0.1:4318", "--max-connections", "0", ...base]), UsageError);
});
