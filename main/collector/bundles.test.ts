/** Diagnostic bundles at the collector: upload checks, one copy per content, the summary served to readers. */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, beforeEach, test } from "node:test";
import { c as tarCreate } from "tar";
import { TokenTable } from "./auth.ts";
import { createHandler, type Handler, type HandlerResult } from "./handler.ts";
import { CollectorStore, SqliteStorage } from "./store.ts";

const INGEST = "ingest-token-acme-0123456789";
const READ = "read-token-acme-0123456789abc";
const tmp = mkdtempSync(join(tmpdir(), "detour-bundles-"));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** A summary model as an agent writes it (main/core/diag/summary.ts), with `sentence` as given. */
function summaryJson(sentence: string, over: Record<string, unknown> = {}): string {
  return JSON.stringify({
    generatedAt: 1_795_000_000_000,
    agentVersion: "0.1.0",
    deviceId: "laptop-alice",
    policyHash: "none",
    state: "connected",
    sentence,
    failures: [{ at: 1_795_000_000_000, what: "gw2 wireguard", reason: "timeout" }],
    chart: [{ at: 1_795_000_000_000, rttP50Ms: 12, rttP95Ms: 20, lossPct: 0 }],
    chartResolution: "10s",
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.example",
        address: "192.0.2.1",
        region: "eu",
        priority: 1,
        protocols: "WireGuard",
        latencyMs: 12,
        role: "active",
      },
    ],
    races: [],
    redactions: null,
    ...over,
  });
}

function bundleBytes(summary: string | null, html = "<html><body>the device's own page</body></html>"): Buffer {
  const root = mkdtempSync(join(tmp, "b-"));
  const dir = join(root, "detour-diag-20261122T0800-abcd");
  mkdirSync(dir);
  if (summary !== null) writeFileSync(join(dir, "summary.json"), summary);
  writeFileSync(join(dir, "summary.html"), html);
  writeFileSync(join(dir, "manifest.json"), "{}");
  const file = join(root, "b.tar.gz");
  tarCreate({ gzip: true, sync: true, file, cwd: root }, ["detour-diag-20261122T0800-abcd"]);
  return readFileSync(file);
}

let store: CollectorStore;
let handle: Handler;
beforeEach(() => {
  store = CollectorStore.open(":memory:");
  const tokens = TokenTable.parse(
    JSON.stringify({
      tokens: [
        { org: "acme", role: "ingest", token: INGEST },
        { org: "acme", role: "read", token: READ },
      ],
    }),
  );
  handle = createHandler({
    store: new SqliteStorage(store),
    tokens,
    now: () => 1_795_000_000_000,
    retentionMs: 30 * 86_400_000,
  });
});

function upload(body: Buffer, over: Record<string, string> = {}): Promise<HandlerResult> {
  const headers: Record<string, string> = {
    authorization: `Bearer ${INGEST}`,
    "content-type": "application/gzip",
    "x-detour-device-id": "laptop-alice",
    "x-detour-bundle-name": "detour-diag-20261122T0800-abcd.tar.gz",
    "x-detour-bundle-sha256": createHash("sha256").update(body).digest("hex"),
    ...over,
  };
  return handle({ method: "POST", url: "/v1/diagnostics", headers, body });
}
const text = (r: { body: string | Uint8Array }): string =>
  typeof r.body === "string" ? r.body : Buffer.from(r.body).toString("utf8");

test("a-bundle-is-stored-once-listed-per-device-and-its-summary-served-to-readers-only", async () => {
  const b = bundleBytes(summaryJson("Connected to gw1"));
  const r = await upload(b);
  assert.equal(r.status, 200, text(r));
  const { id, url, duplicate } = JSON.parse(text(r)) as { id: string; url: string; duplicate: boolean };
  assert.equal(duplicate, false);
  assert.equal(url, `/bundles/${id}/summary`);
  assert.equal(
    (JSON.parse(text(await upload(b))) as { id: string; duplicate: boolean }).duplicate,
    true,
    "a retried upload finds the first copy",
  );
  assert.deepEqual(
    store.bundles("acme", "laptop-alice").map((x) => x.id),
    [id],
  );
  const page = await handle({
    method: "GET",
    url,
    headers: { authorization: `Bearer ${READ}` },
    body: new Uint8Array(),
  });
  assert.equal(page.status, 200);
  assert.match(text(page), /Connected to gw1/);
  assert.match(page.headers["content-security-policy"] ?? "", /script-src 'none'|default-src/);
  const asAgent = await handle({
    method: "GET",
    url,
    headers: { authorization: `Bearer ${INGEST}` },
    body: new Uint8Array(),
  });
  assert.equal(asAgent.status, 403, "an agent's token cannot read bundles");
  const download = await handle({
    method: "GET",
    url: `/bundles/${id}`,
    headers: { authorization: `Bearer ${READ}` },
    body: new Uint8Array(),
  });
  assert.deepEqual(Buffer.from(download.body as Uint8Array), b);
});

test("bad-uploads-get-a-4xx-naming-what-is-wrong", async () => {
  const b = bundleBytes(summaryJson("x"));
  const cases: [HandlerResult, number, RegExp][] = [
    [await upload(b, { "x-detour-bundle-sha256": "00".repeat(32) }), 400, /does not match the body/],
    [await upload(b, { "content-type": "text/plain" }), 415, /application\/gzip/],
    [await upload(b, { "x-detour-device-id": "" }), 400, /x-detour-device-id/],
    [await upload(b, { "x-detour-bundle-name": "../../etc/passwd" }), 400, /x-detour-bundle-name/],
    [await upload(b, { authorization: "" }), 401, /./],
    [await upload(gzipSync(Buffer.from("not a tar"))), 400, /not a Detour diagnostic bundle/],
    [await upload(bundleBytes(null)), 400, /no <folder>\/summary\.json/],
    [await upload(bundleBytes("{not json")), 400, /summary\.json is not JSON/],
    [await upload(bundleBytes(summaryJson("x", { chart: [{ at: "<svg onload=x>" }] }))), 400, /chart\.0\.at/],
    [
      await upload(
        bundleBytes(summaryJson("x", { redactions: { removed: { "<img>": 1 }, pseudonymised: {}, distinct: {} } })),
      ),
      400,
      /redactions/,
    ],
  ];
  for (const [r, status, re] of cases) {
    assert.equal(r.status, status, text(r));
    assert.match(text(r), re);
  }
  assert.equal(store.bundles("acme").length, 0);
});

test("an-uploaded-summary-html-is-never-served-the-page-is-rendered-from-summary-json-escaped", async () => {
  const hostile = '<script>fetch("/?steal="+document.cookie)</script><img src=x onerror=alert(1)>';
  const b = bundleBytes(
    summaryJson(`Connected ${hostile}`, { state: hostile }),
    `<html><body>${hostile}</body></html>`,
  );
  const r = await upload(b);
  assert.equal(r.status, 200, text(r));
  const { url } = JSON.parse(text(r)) as { url: string };
  const page = await handle({
    method: "GET",
    url,
    headers: { authorization: `Bearer ${READ}` },
    body: new Uint8Array(),
  });
  assert.equal(page.status, 200, text(page));
  const html = text(page);
  assert.doesNotMatch(html, /the device's own page/, "the device's summary.html is not what is served");
  assert.doesNotMatch(html, /<script|<img/i, "no markup from the device reaches the page");
  assert.match(html, /Connected &lt;script&gt;/, "the device's words are shown, escaped");
  assert.match(page.headers["content-security-policy"] ?? "", /default-src 'none'/);
  assert.equal(page.headers["x-content-type-options"], "nosniff");
});

test("an-organisations-bundle-storage-is-bounded-the-oldest-evicted", async () => {
  const tokens = TokenTable.parse(
    JSON.stringify({
      tokens: [
        { org: "acme", role: "ingest", token: INGEST },
        { org: "other", role: "ingest", token: "ingest-token-other-0123456789" },
      ],
    }),
  );
  let now = 1_795_000_000_000;
  const bounded = createHandler({
    store: new SqliteStorage(store),
    tokens,
    now: () => now,
    retentionMs: 30 * 86_400_000,
    bundleLimits: { maxCount: 3, maxBytes: 1024 * 1024 },
  });
  const post = (body: Buffer, token = INGEST): Promise<HandlerResult> =>
    bounded({
      method: "POST",
      url: "/v1/diagnostics",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/gzip",
        "x-detour-device-id": "laptop-alice",
        "x-detour-bundle-name": "detour-diag-20261122T0800-abcd.tar.gz",
        "x-detour-bundle-sha256": createHash("sha256").update(body).digest("hex"),
      },
      body,
    });
  const other = await post(bundleBytes(summaryJson("other org")), "ingest-token-other-0123456789");
  assert.equal(other.status, 200, text(other));
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    now += 1000;
    const r = await post(bundleBytes(summaryJson(`bundle ${i}`)));
    assert.equal(r.status, 200, text(r));
    ids.push((JSON.parse(text(r)) as { id: string }).id);
  }
  assert.deepEqual(
    store.bundles("acme").map((x) => x.id),
    ids.slice(3).reverse(),
    "the three newest stay, the oldest were evicted",
  );
  assert.equal(store.bundles("other").length, 1, "another organisation's bundles are untouched");

  // By bytes: each bundle is some hundreds of bytes; a limit of two bundles' worth keeps two.
  const size = store.bundles("acme")[0]?.bytes ?? 0;
  const byBytes = createHandler({
    store: new SqliteStorage(store),
    tokens,
    now: () => now,
    retentionMs: 30 * 86_400_000,
    bundleLimits: { maxCount: 100, maxBytes: size * 2 + size / 2 },
  });
  now += 1000;
  const body = bundleBytes(summaryJson("by bytes"));
  const r = await byBytes({
    method: "POST",
    url: "/v1/diagnostics",
    headers: {
      authorization: `Bearer ${INGEST}`,
      "content-type": "application/gzip",
      "x-detour-device-id": "laptop-alice",
      "x-detour-bundle-name": "detour-diag-20261122T0800-abcd.tar.gz",
      "x-detour-bundle-sha256": createHash("sha256").update(body).digest("hex"),
    },
    body,
  });
  assert.equal(r.status, 200, text(r));
  assert.equal(r.outcome.evictedBundles, 2);
  assert.equal(store.bundles("acme").length, 2);
});
