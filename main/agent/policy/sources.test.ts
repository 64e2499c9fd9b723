import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { NO_JITTER } from "../../core/backoff.ts";
import { verifyEnvelope } from "../../core/policy/verify.ts";
import { loadTrustedKeys } from "./keys.ts";
import { parsePlist, PlistError } from "./plist.ts";
import { decodeRegFile, parseRegExport, RegExportError } from "./reg-export.ts";
import {
  MAX_REMOTE_POLICY_BYTES,
  nextPollDelay,
  pollOnce,
  remoteSource,
  REMOTE_POLL_INTERVAL_MS,
  REMOTE_RETRY_INITIAL_MS,
  REMOTE_RETRY_MAX_MS,
} from "./remote.ts";
import { envelopeFromPlist, envelopeFromRegExport, fileSource, windowsSource } from "./sources.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;
const fixture = (name: string): Buffer => readFileSync(FIX + name);
const trusted = (): ReturnType<typeof loadTrustedKeys>["keys"] => loadTrustedKeys(FIX).keys;
const verifyCtx = { current: null, now: Date.parse("2026-01-01T00:00:00Z"), organisation: "Example Corp" };

test("a-managed-preferences-plist-yields-the-signed-envelope-that-verifies", () => {
  const env = envelopeFromPlist(fixture("com.detour.agent.plist").toString("utf8"));
  assert.ok(env !== null);
  const v = verifyEnvelope(env, { keys: trusted(), ...verifyCtx });
  assert.ok(v.ok, JSON.stringify(v));
  assert.equal(v.policy.version, 7);
  assert.deepEqual(v.policy.settings.allowedGateways, ["gw2", "gw3"]);
});

test("plist-values-of-every-kind-parse-and-bad-plists-are-refused-with-why", () => {
  const v = parsePlist(fixture("com.detour.agent.plist").toString("utf8")) as Record<string, unknown>;
  assert.equal(v.PayloadOrganization, "Example Corp & Co", "entities are decoded");
  assert.equal(v.PayloadVersion, 1);
  assert.equal(v.PayloadEnabled, true);
  assert.ok(v.Policy instanceof Uint8Array);
  const arr = parsePlist(
    "<plist><array><real>1.5</real><date>2025-01-01T00:00:00Z</date><false/><string/></array></plist>",
  ) as unknown[];
  assert.equal(arr[0], 1.5);
  assert.ok(arr[1] instanceof Date);
  assert.deepEqual(arr.slice(2), [false, ""]);
  for (const [bad, why] of [
    ["<plist><dict><string>x</string></dict></plist>", /expected <key>/],
    ["<plist><integer>abc</integer></plist>", /<integer> holds/],
    ['<!DOCTYPE plist [<!ENTITY x "y">]><plist><string>&x;</string></plist>', /internal subset/],
    ["<plist><string>&bogus;</string></plist>", /unknown XML entity/],
    ["<plist><dict><key>a</key>", /ends early/],
    ["<html></html>", /<plist> root/],
  ] as const) {
    assert.throws(
      () => parsePlist(bad),
      (e: unknown) => e instanceof PlistError && why.test(e.message),
      bad,
    );
  }
  assert.equal(
    envelopeFromPlist("<plist><dict><key>Other</key><string>x</string></dict></plist>"),
    null,
    "no policy keys: no policy",
  );
});

test("a-reg-export-file-in-utf16-yields-the-signed-envelope-that-verifies", () => {
  const env = envelopeFromRegExport(fixture("detour-policy.reg"));
  assert.ok(env !== null);
  const v = verifyEnvelope(env, { keys: trusted(), ...verifyCtx });
  assert.ok(v.ok, JSON.stringify(v));
  assert.equal(v.policy.version, 7);
});

test("reg-export-values-strings-dwords-multi-strings-and-continuations-parse", () => {
  const keys = parseRegExport(decodeRegFile(fixture("detour-policy.reg")));
  const d = keys.get("HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Detour");
  assert.ok(d !== undefined);
  assert.deepEqual(d.get("Quoted"), { type: "sz", value: 'say "hi" C:\\Temp' });
  assert.deepEqual(d.get("Interval"), { type: "dword", value: 300 });
  assert.deepEqual(d.get("Multi"), { type: "multi-sz", value: ["a", "b"] });
  assert.deepEqual(keys.get("HKEY_LOCAL_MACHINE\\SOFTWARE\\Policies\\Detour\\Sub")?.get("@"), {
    type: "sz",
    value: "default",
  });
  assert.throws(() => parseRegExport("hello"), RegExportError);
  assert.throws(() => parseRegExport('Windows Registry Editor Version 5.00\r\n"A"="x"'), /before any \[key\]/);
  assert.throws(() => parseRegExport('Windows Registry Editor Version 5.00\r\n[K]\r\n"A"=hex:zz'), /hex bytes/);
  assert.equal(
    envelopeFromRegExport(
      Buffer.from("Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Other]\r\n"),
    ),
    null,
  );
});

test("the-windows-source-reads-through-reg-export-and-a-missing-key-is-no-policy", async () => {
  const src = windowsSource(undefined, () => Promise.resolve(fixture("detour-policy.reg")));
  assert.match((await src.read()) ?? "", /detour-policy-envelope\/1/);
  assert.equal(await windowsSource(undefined, () => Promise.resolve(null)).read(), null);
  assert.equal(await fileSource(`${FIX}does-not-exist.json`).read(), null);
});

test("remote-polls-back-off-exponentially-up-to-the-cap-with-jitter", () => {
  assert.equal(nextPollDelay(0), REMOTE_POLL_INTERVAL_MS);
  assert.equal(nextPollDelay(1, NO_JITTER), REMOTE_RETRY_INITIAL_MS);
  assert.equal(nextPollDelay(2, NO_JITTER), REMOTE_RETRY_INITIAL_MS * 2);
  assert.equal(nextPollDelay(50, NO_JITTER), REMOTE_RETRY_MAX_MS);
  // Devices that lost the server together retry spread over the upper half of the step, never sooner.
  assert.equal(
    nextPollDelay(2, () => 0.5),
    REMOTE_RETRY_INITIAL_MS * 1.5,
  );
  for (let i = 0; i < 100; i++) {
    const d = nextPollDelay(1);
    assert.ok(d >= REMOTE_RETRY_INITIAL_MS / 2 && d <= REMOTE_RETRY_INITIAL_MS, `${d} ms`);
  }
});

test("a-remote-policy-past-the-size-bound-is-refused-without-reading-on", async () => {
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled += 64 * 1024;
      c.enqueue(new Uint8Array(64 * 1024));
    },
  });
  const chunked = await pollOnce("https://x", null, () => Promise.resolve(new Response(endless)));
  assert.deepEqual(chunked, { kind: "failed", error: `the policy is over the ${MAX_REMOTE_POLICY_BYTES}-byte limit` });
  assert.ok(pulled <= MAX_REMOTE_POLICY_BYTES + 2 * 64 * 1024, `stopped at the bound, not at the end: ${pulled} bytes`);
  const declared = await pollOnce("https://x", null, () =>
    Promise.resolve(new Response("{}", { headers: { "content-length": String(10 * MAX_REMOTE_POLICY_BYTES) } })),
  );
  assert.deepEqual(declared, {
    kind: "failed",
    error: `the policy is ${10 * MAX_REMOTE_POLICY_BYTES} bytes, over the ${MAX_REMOTE_POLICY_BYTES}-byte limit`,
  });
});

test("the-remote-source-sends-its-etag-and-a-304-returns-the-document-it-has", async () => {
  const seen: (string | undefined)[] = [];
  let status = 200;
  const fetchFn = (_url: string, init: { headers: Record<string, string> }): Promise<Response> => {
    seen.push(init.headers["if-none-match"]);
    if (status === 500) return Promise.resolve(new Response("down", { status: 500 }));
    return Promise.resolve(
      status === 304
        ? new Response(null, { status: 304 })
        : new Response("DOC", { status: 200, headers: { etag: '"v1"' } }),
    );
  };
  const src = remoteSource("https://policy.example/detour.json", fetchFn, NO_JITTER);
  assert.equal(await src.read(), "DOC");
  status = 304;
  assert.equal(await src.read(), "DOC", "unchanged: the same text again");
  assert.deepEqual(seen, [undefined, '"v1"']);
  status = 500;
  await assert.rejects(src.read(), /HTTP 500/);
  await assert.rejects(src.read(), /HTTP 500/);
  assert.equal(src.nextDelay(), REMOTE_RETRY_INITIAL_MS * 2, "two failures: the second backoff step");
  const failed = await pollOnce("https://x", null, () => Promise.reject(new Error("ECONNREFUSED")));
  assert.deepEqual(failed, { kind: "failed", error: "ECONNREFUSED" });
});

test("a-remote-sources-name-and-errors-never-carry-the-urls-credentials", async () => {
  const url = "https://alice:hunter2@policy.example/p.json?X-Amz-Signature=deadbeef&v=1";
  const failing = (): Promise<Response> => Promise.reject(new TypeError(`Failed to parse URL from ${url}`));
  const src = remoteSource(url, failing, NO_JITTER);
  assert.equal(src.name, "url:https://[redacted]@policy.example/p.json?X-Amz-Signature=[redacted]&v=1");
  const r = await pollOnce(url, null, failing);
  assert.match(JSON.stringify(r), /"kind":"failed"/);
  assert.doesNotMatch(JSON.stringify(r), /hunter2|deadbeef|alice/);
});
