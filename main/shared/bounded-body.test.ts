import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, request, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { BodyTooLargeError, declaredLength, readBoundedBody } from "./bounded-body.ts";

const LIMIT = 1024;

/** A body that yields `chunk` up to `total` bytes (Infinity: forever) and counts what was pulled. */
function stream(
  total: number,
  chunk = 256,
): { body: ReadableStream<Uint8Array>; pulled: () => number; cancelled: () => boolean } {
  let pulled = 0;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (pulled >= total) {
        c.close();
        return;
      }
      const n = Math.min(chunk, total - pulled);
      pulled += n;
      c.enqueue(new Uint8Array(n).fill(120));
    },
    cancel() {
      cancelled = true;
    },
  });
  return { body, pulled: () => pulled, cancelled: () => cancelled };
}

test("a-response-within-the-bound-is-read-whole", async () => {
  assert.equal((await readBoundedBody(new Response("x".repeat(LIMIT)), LIMIT)).length, LIMIT);
  assert.equal((await readBoundedBody(new Response(null, { status: 204 }), LIMIT)).length, 0);
});

test("a-response-declaring-more-than-the-bound-is-refused-before-a-byte-is-read", async () => {
  const s = stream(10 * LIMIT);
  const res = new Response(s.body, { headers: { "content-length": String(10 * LIMIT) } });
  await assert.rejects(
    readBoundedBody(res, LIMIT),
    (e) =>
      e instanceof BodyTooLargeError &&
      e.declared === 10 * LIMIT &&
      e.message === `${10 * LIMIT} bytes, over the ${LIMIT}-byte limit`,
  );
  assert.ok(s.pulled() <= 256, `at most the stream's first prefetch was pulled: ${s.pulled()}`);
  assert.equal(s.cancelled(), true);
});

test("an-endless-response-without-a-length-stops-at-the-bound-and-is-cancelled", async () => {
  const s = stream(Infinity);
  await assert.rejects(
    readBoundedBody(new Response(s.body), LIMIT),
    (e) => e instanceof BodyTooLargeError && e.declared === null,
  );
  assert.ok(s.pulled() <= LIMIT + 2 * 256, `read stopped just past the bound: ${s.pulled()}`);
  assert.equal(s.cancelled(), true);
});

test("a-response-that-declares-less-than-it-sends-is-still-stopped-at-the-bound", async () => {
  const s = stream(Infinity);
  const res = new Response(s.body, { headers: { "content-length": "10" } });
  await assert.rejects(readBoundedBody(res, LIMIT), BodyTooLargeError);
  assert.ok(s.pulled() <= LIMIT + 2 * 256);
});

test("content-length-is-taken-only-as-a-plain-number", () => {
  assert.equal(declaredLength("42"), 42);
  assert.equal(declaredLength(" 42 "), 42);
  for (const v of [null, undefined, "", "-1", "1e9", "0x10", "12, 12"])
    assert.equal(declaredLength(v), null, String(v));
});

// ---- the server side, against a real node:http server ----

let server: Server;
let port = 0;
const outcomes: (number | string)[] = [];
before(async () => {
  server = createServer((req: IncomingMessage, res) => {
    readBoundedBody(req, LIMIT).then(
      (body) => {
        outcomes.push(body.length);
        res.end(`got ${body.length}`);
      },
      (e: unknown) => {
        outcomes.push(
          e instanceof BodyTooLargeError ? `too-large:${String(e.declared)}` : `error:${(e as Error).message}`,
        );
        if (!(e instanceof BodyTooLargeError)) return;
        res.writeHead(413, { connection: "close" }).end(e.message);
      },
    );
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  port = (server.address() as AddressInfo).port;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => {
    server.close(() => {
      r();
    });
  });
});

/** POSTs `chunks` (chunked unless `length` is given) and returns the status and body, or the client's error. */
function post(
  chunks: number[],
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port, method: "POST", path: "/", headers }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on("error", (e) => {
      resolve({ error: e.message });
    });
    const write = (i: number): void => {
      const n = chunks[i];
      if (n === undefined) {
        req.end();
        return;
      }
      req.write(Buffer.alloc(n, 121), () => {
        write(i + 1);
      });
    };
    write(0);
  });
}

test("a-request-within-the-bound-is-read-whole-chunked-or-not", async () => {
  assert.deepEqual(await post([LIMIT]), { status: 200, body: `got ${LIMIT}` });
  assert.deepEqual(await post([300, 300, 300]), { status: 200, body: "got 900" });
});

test("a-request-declaring-more-than-the-bound-gets-413-without-its-body-being-read", async () => {
  outcomes.length = 0;
  const r = await post([2 * LIMIT], { "content-length": String(2 * LIMIT) });
  assert.deepEqual(outcomes, [`too-large:${2 * LIMIT}`]);
  assert.deepEqual(r, { status: 413, body: `${2 * LIMIT} bytes, over the ${LIMIT}-byte limit` });
});

test("a-chunked-request-past-the-bound-gets-413-while-it-is-still-sending", async () => {
  outcomes.length = 0;
  const r = await post(Array.from({ length: 64 }, () => 512));
  assert.deepEqual(outcomes, ["too-large:null"]);
  // The rest is discarded, not buffered, so the client finishes sending and reads the answer.
  assert.deepEqual(r, { status: 413, body: `over the ${LIMIT}-byte limit` });
});

test("a-client-that-hangs-up-mid-body-is-a-failure-not-a-short-body", async () => {
  outcomes.length = 0;
  const req = request({ host: "127.0.0.1", port, method: "POST", path: "/", headers: { "content-length": "1000" } });
  req.on("error", () => undefined);
  req.write(Buffer.alloc(100));
  await new Promise((r) => setTimeout(r, 50));
  req.destroy();
  for (let i = 0; i < 100 && outcomes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(outcomes.length, 1);
  assert.match(String(outcomes[0]), /^error:/);
});
