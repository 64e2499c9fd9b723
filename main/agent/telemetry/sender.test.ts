import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Secret } from "../../core/secret.ts";
import { BATCH_HEADER } from "../../core/telemetry/names.ts";
import { Spool } from "./spool.ts";
import { SpoolSender, type Post } from "./sender.ts";

const root = mkdtempSync(join(tmpdir(), "detour-sender-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
let n = 0;
const spool = (): Spool => Spool.open({ dir: join(root, String(++n)), maxBytes: 1 << 20, maxRecords: 1000 });
const body = (s: string): Uint8Array => new TextEncoder().encode(s);

/** A fake collector: answers by a script, remembers what it stored (once per batch id, like the real one). */
function collector(answer: (call: number) => number | "throw"): {
  post: Post;
  stored: Map<string, string>;
  calls: { url: string; headers: Record<string, string> }[];
} {
  const stored = new Map<string, string>();
  const calls: { url: string; headers: Record<string, string> }[] = [];
  const post: Post = (url, b, headers) => {
    calls.push({ url, headers });
    const a = answer(calls.length);
    if (a === "throw") return Promise.reject(new Error("fetch failed", { cause: new Error("connect ECONNREFUSED") }));
    if (a >= 200 && a < 300) {
      const id = headers[BATCH_HEADER] ?? "";
      if (!stored.has(id)) stored.set(id, b.toString());
    }
    return Promise.resolve({ status: a, body: a >= 400 ? "nope" : "" });
  };
  return { post, stored, calls };
}

async function until(pred: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < ms / 10 && !pred() && Date.now() < end; i++) await sleep(10);
  assert.ok(pred(), "condition not reached in time");
}

test("records-are-delivered-in-order-with-auth-and-batch-ids-and-removed", async () => {
  const s = spool();
  const c = collector(() => 200);
  s.put("metrics", body("m1"));
  s.put("logs", body("l2"));
  const sender = new SpoolSender({
    spool: s,
    endpoint: "http://collector:4318/",
    token: new Secret("tok"),
    deviceId: "dev",
    post: c.post,
  });
  sender.kick();
  await until(() => s.stats().pending === 0, 2000);
  assert.deepEqual(
    c.calls.map((x) => x.url),
    ["http://collector:4318/v1/metrics", "http://collector:4318/v1/logs"],
  );
  const first = c.calls[0];
  assert.ok(first !== undefined);
  assert.equal(first.headers.authorization, "Bearer tok");
  assert.equal(first.headers["content-type"], "application/x-protobuf");
  assert.deepEqual([...c.stored.keys()], ["dev:1", "dev:2"]);
  assert.equal(sender.status().delivered, 2);
  await sender.stop();
});

test("an-outage-keeps-records-and-retries-the-same-one-with-backoff-then-delivers-all-once", async () => {
  const s = spool();
  // Down for the first three attempts (refused, 503, timeout-like throw), then up.
  const c = collector((call) => (call === 1 ? "throw" : call === 2 ? 503 : call === 3 ? "throw" : 200));
  for (let i = 1; i <= 3; i++) s.put("metrics", body(`m${i}`));
  const problems: (number | null)[] = [];
  const sender = new SpoolSender({
    spool: s,
    endpoint: "http://c",
    token: null,
    deviceId: "d",
    post: c.post,
    random: () => 0.999_999,
    onProblem: (p) => problems.push(p.retryInMs),
  });
  sender.kick();
  await until(() => s.stats().pending === 0, 8000);
  // Steps of 1, 2 and 4 s, each drawn at the bottom of its jitter band (half the step).
  assert.deepEqual(problems, [500, 1000, 2000], "exponential backoff with jitter");
  assert.deepEqual(
    c.calls.slice(0, 4).map((x) => x.headers[BATCH_HEADER]),
    ["d:1", "d:1", "d:1", "d:1"],
    "the same record until it is in",
  );
  assert.deepEqual(
    [...c.stored.entries()],
    [
      ["d:1", "m1"],
      ["d:2", "m2"],
      ["d:3", "m3"],
    ],
  );
  assert.equal(c.calls[0]?.headers.authorization, undefined);
  await sender.stop();
});

test("a-record-the-collector-refuses-as-malformed-is-set-aside-and-the-rest-flows", async () => {
  const s = spool();
  const c = collector((call) => (call === 1 ? 400 : 200));
  s.put("metrics", body("bad"));
  s.put("metrics", body("good"));
  const sender = new SpoolSender({ spool: s, endpoint: "http://c", token: null, deviceId: "d", post: c.post });
  sender.kick();
  await until(() => s.stats().pending === 0, 2000);
  assert.equal(s.stats().rejected, 1);
  assert.deepEqual([...c.stored.keys()], ["d:2"]);
  await sender.stop();
});

test("stop-leaves-undelivered-records-spooled-for-the-next-daemon", async () => {
  const s = spool();
  const c = collector(() => 503);
  s.put("metrics", body("m1"));
  const sender = new SpoolSender({ spool: s, endpoint: "http://c", token: null, deviceId: "d", post: c.post });
  sender.kick();
  await until(() => c.calls.length === 1, 2000);
  await sender.stop();
  assert.equal(s.stats().pending, 1);
  assert.equal(sender.status().nextAttemptAt, null);
});
