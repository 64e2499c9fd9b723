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
import { createHandler, type Handler } from "./handler.ts";
import { CollectorStore } from "./store.ts";

const INGEST = "ingest-token-acme-0123456789";
const READ = "read-token-acme-0123456789abc";
const tmp = mkdtempSync(join(tmpdir(), "detour-bundles-"));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function bundleBytes(summary: string | null): Buffer {
  const root = mkdtempSync(join(tmp, "b-"));
  const dir = join(root, "detour-diag-20261122T0800-abcd");
  mkdirSync(dir);
  if (summary !== null) writeFileSync(join(dir, "summary.html"), summary);
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
  handle = createHandler({ store, tokens, now: () => 1_795_000_000_000, retentionMs: 30 * 86_400_000 });
});

function upload(body: Buffer, over: Record<string, string> = {}): ReturnType<Handler> {
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

test("a-bundle-is-stored-once-listed-per-device-and-its-summary-served-to-readers-only", () => {
  const b = bundleBytes("<html><body><h1>Connected to gw1</h1></body></html>");
  const r = upload(b);
  assert.equal(r.status, 200, text(r));
  const { id, url, duplicate } = JSON.parse(text(r)) as { id: string; url: string; duplicate: boolean };
  assert.equal(duplicate, false);
  assert.equal(url, `/bundles/${id}/summary`);
  assert.equal(
    (JSON.parse(text(upload(b))) as { id: string; duplicate: boolean }).duplicate,
    true,
    "a retried upload finds the first copy",
  );
  assert.deepEqual(
    store.bundles("acme", "laptop-alice").map((x) => x.id),
    [id],
  );
  const page = handle({ method: "GET", url, headers: { authorization: `Bearer ${READ}` }, body: new Uint8Array() });
  assert.equal(page.status, 200);
  assert.match(text(page), /Connected to gw1/);
  assert.match(page.headers["content-security-policy"] ?? "", /script-src 'none'|default-src/);
  const asAgent = handle({
    method: "GET",
    url,
    headers: { authorization: `Bearer ${INGEST}` },
    body: new Uint8Array(),
  });
  assert.equal(asAgent.status, 403, "an agent's token cannot read bundles");
  const download = handle({
    method: "GET",
    url: `/bundles/${id}`,
    headers: { authorization: `Bearer ${READ}` },
    body: new Uint8Array(),
  });
  assert.deepEqual(Buffer.from(download.body as Uint8Array), b);
});

test("bad-uploads-get-a-4xx-naming-what-is-wrong", () => {
  const b = bundleBytes("<html></html>");
  const cases: [ReturnType<Handler>, number, RegExp][] = [
    [upload(b, { "x-detour-bundle-sha256": "00".repeat(32) }), 400, /does not match the body/],
    [upload(b, { "content-type": "text/plain" }), 415, /application\/gzip/],
    [upload(b, { "x-detour-device-id": "" }), 400, /x-detour-device-id/],
    [upload(b, { "x-detour-bundle-name": "../../etc/passwd" }), 400, /x-detour-bundle-name/],
    [upload(b, { authorization: "" }), 401, /./],
    [upload(gzipSync(Buffer.from("not a tar"))), 400, /not a Detour diagnostic bundle/],
    [upload(bundleBytes(null)), 400, /no <folder>\/summary\.html/],
  ];
  for (const [r, status, re] of cases) {
    assert.equal(r.status, status, text(r));
    assert.match(text(r), re);
  }
  assert.equal(store.bundles("acme").length, 0);
});
