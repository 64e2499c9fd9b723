import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { NO_JITTER } from "../../core/backoff.ts";
import { Secret } from "../../core/secret.ts";
import type { Post } from "../telemetry/sender.ts";
import { UPLOAD_ATTEMPTS, UPLOAD_RETRY_MAX_MS, uploadToCollector } from "./upload.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-upload-test-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});
const file = join(dir, "detour-diag-20250101T000000Z-abc123.tar.gz");
writeFileSync(file, Buffer.from([0x1f, 0x8b, 1, 2, 3]));

function recorder(statuses: number[]): {
  post: Post;
  calls: { url: string; headers: Record<string, string>; bytes: number }[];
} {
  const calls: { url: string; headers: Record<string, string>; bytes: number }[] = [];
  let i = 0;
  const post: Post = (url, body, headers) => {
    calls.push({ url, headers, bytes: body.length });
    const status = statuses[Math.min(i++, statuses.length - 1)] ?? 500;
    if (status === 0) return Promise.reject(new Error("ECONNREFUSED"));
    return Promise.resolve({
      status,
      body: status === 201 ? JSON.stringify({ id: "b-1", url: "http://collector/bundles/b-1" }) : "",
    });
  };
  return { post, calls };
}

test("collector-upload-posts-the-bundle-with-token-device-and-gzip-type", async () => {
  const { post, calls } = recorder([201]);
  const r = await uploadToCollector(file, {
    endpoint: "http://198.18.100.2:4318/",
    token: new Secret("tok-1"),
    deviceId: "dev-1",
    post,
  });
  assert.deepEqual(r, {
    target: "collector",
    ok: true,
    attempts: 1,
    location: "http://collector/bundles/b-1",
    error: null,
  });
  const c = calls[0] ?? assert.fail("no request");
  assert.equal(c.url, "http://198.18.100.2:4318/v1/diagnostics");
  assert.equal(c.headers.authorization, "Bearer tok-1");
  assert.equal(c.headers["x-detour-device-id"], "dev-1");
  assert.equal(c.headers["content-type"], "application/gzip");
  assert.match(c.headers["x-detour-bundle-sha256"] ?? "", /^[0-9a-f]{64}$/);
  assert.equal(c.bytes, 5);
});

test("collector-outage-is-retried-with-capped-backoff-until-it-answers", async () => {
  const { post, calls } = recorder([0, 503, 429, 201]);
  const waits: number[] = [];
  const r = await uploadToCollector(
    file,
    { endpoint: "http://c", token: null, deviceId: "d", post },
    {
      random: NO_JITTER,
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    },
  );
  assert.equal(r.ok, true);
  assert.equal(r.attempts, 4);
  assert.deepEqual(waits, [1000, 2000, 4000]);
  assert.equal(calls[0]?.headers.authorization, undefined, "no token, no header");
});

test("a-refused-token-is-not-retried-and-a-dead-collector-is-given-up-after-the-bound", async () => {
  const refused = recorder([401]);
  const r1 = await uploadToCollector(
    file,
    { endpoint: "http://c", token: new Secret("bad"), deviceId: "d", post: refused.post },
    { sleep: () => Promise.resolve() },
  );
  assert.equal(r1.ok, false);
  assert.equal(r1.attempts, 1);
  assert.match(r1.error ?? "", /refused the token/);
  const dead = recorder([503]);
  const waits: number[] = [];
  const r2 = await uploadToCollector(
    file,
    { endpoint: "http://c", token: null, deviceId: "d", post: dead.post },
    {
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    },
  );
  assert.equal(r2.ok, false);
  assert.equal(dead.calls.length, UPLOAD_ATTEMPTS);
  assert.match(r2.error ?? "", /gave up after 5 attempts/);
  assert.ok(waits.every((w) => w <= UPLOAD_RETRY_MAX_MS));
});

test("waits-double-from-a-second-to-the-cap-each-drawn-from-the-upper-half-of-its-step", async () => {
  const waitsWith = async (random: () => number): Promise<number[]> => {
    const waits: number[] = [];
    const dead = recorder([503]);
    await uploadToCollector(
      file,
      { endpoint: "http://c", token: null, deviceId: "d", post: dead.post },
      {
        attempts: 7,
        random,
        sleep: (ms) => {
          waits.push(ms);
          return Promise.resolve();
        },
      },
    );
    return waits;
  };
  assert.deepEqual(await waitsWith(NO_JITTER), [1000, 2000, 4000, 8000, 8000, 8000]);
  assert.deepEqual(await waitsWith(() => 0.999_999), [500, 1000, 2000, 4000, 4000, 4000]);
});
