/** The tokens file and the Authorization header: roles, digests, and errors that never show a token. */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { authenticate, sha256Hex, TokenTable, tokenOf } from "./auth.ts";

const TOKEN = "0123456789abcdef-secret";

test("tokens-may-be-given-as-sha256-digests", () => {
  const t = TokenTable.parse(JSON.stringify({ tokens: [{ org: "acme", role: "read", sha256: sha256Hex(TOKEN) }] }));
  assert.deepEqual(t.lookup(TOKEN), { org: "acme", role: "read" });
  assert.equal(t.lookup(TOKEN + "x"), undefined);
});

test("a-bad-tokens-file-names-the-entry-but-not-the-token", () => {
  assert.throws(
    () => TokenTable.parse(JSON.stringify({ tokens: [{ org: "acme", role: "admin", token: TOKEN }] })),
    (e: Error) => /tokens\.0/.test(e.message) && !e.message.includes(TOKEN),
  );
  assert.throws(
    () => TokenTable.parse(JSON.stringify({ tokens: [{ org: "acme", role: "read", token: "short" }] })),
    /tokens\.0/,
  );
});

test("a-tokens-file-readable-by-others-is-refused", () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-tokens-"));
  try {
    const p = join(dir, "tokens.json");
    writeFileSync(p, JSON.stringify({ tokens: [{ org: "acme", role: "read", token: TOKEN }] }));
    chmodSync(p, 0o644);
    assert.throws(() => TokenTable.load(p), /chmod 600/);
    chmodSync(p, 0o600);
    assert.equal(TokenTable.load(p).size, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("bearer-and-basic-headers-yield-the-token", () => {
  assert.equal(tokenOf(`Bearer ${TOKEN}`), TOKEN);
  assert.equal(tokenOf(`Basic ${Buffer.from(`anyone:${TOKEN}`).toString("base64")}`), TOKEN);
  assert.equal(tokenOf("Digest abc"), undefined);
  assert.equal(tokenOf(undefined), undefined);
});

test("a-token-of-the-wrong-role-is-forbidden-not-unauthenticated", () => {
  const t = TokenTable.parse(JSON.stringify({ tokens: [{ org: "acme", role: "ingest", token: TOKEN }] }));
  assert.throws(
    () => authenticate(t, `Bearer ${TOKEN}`, "read", null),
    (e: { status?: number }) => e.status === 403,
  );
  assert.throws(
    () => authenticate(t, "Bearer nope-nope-nope-nope", "ingest", null),
    (e: { status?: number }) => e.status === 401,
  );
  assert.deepEqual(authenticate(t, `Bearer ${TOKEN}`, "ingest", { certOrg: "acme" }), { org: "acme", role: "ingest" });
});
