/**
 * IT's tools (main/cli/policy-tools.ts) and the daemon's trust store (main/agent/policy/keys.ts) each name keys by
 * id, since the CLI may not import daemon code: these tests keep the two in step, end to end through the files.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { verifyEnvelope } from "../../main/core/policy/verify.ts";
import { loadTrustedKeys } from "../../main/agent/policy/keys.ts";
import { keygen, loadPrivateKey, signPolicy, verifyFile } from "../../main/cli/policy-tools.ts";

const REPO = new URL("../../", import.meta.url).pathname;
/** The CLI starts through tsx (about a second); 30 s bounds a loaded machine. */
const CLI_TIMEOUT_MS = 30_000;
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "detour-policy-tools-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const policy = (version: number): string =>
  JSON.stringify({
    version,
    issuedAt: "2025-01-01T00:00:00Z",
    expiresAt: "2035-01-01T00:00:00Z",
    organisation: "Example Corp",
    settings: { allowedProtocols: ["wireguard"] },
  });

test("keys-made-and-signed-by-the-cli-are-trusted-by-the-daemon-under-the-same-id", () => {
  const k = keygen(join(dir, "keys"));
  assert.equal(statSync(k.privatePath).mode & 0o777, 0o600, "the private key is 0600");
  assert.throws(() => keygen(join(dir, "keys")), /refusing to overwrite/);
  const env = signPolicy(Buffer.from(policy(1)), loadPrivateKey(k.privatePath));
  assert.equal(env.keyId, k.keyId);
  const trusted = loadTrustedKeys(join(dir, "keys"));
  assert.deepEqual([...trusted.keys.keys()], [k.keyId]);
  const v = verifyEnvelope(JSON.stringify(env), {
    keys: trusted.keys,
    current: null,
    now: Date.now(),
    organisation: "Example Corp",
  });
  assert.ok(v.ok, JSON.stringify(v));
  assert.throws(() => loadPrivateKey(k.publicPath), /not a readable PEM private key/);
});

test("detour-policy-keygen-sign-and-verify-from-the-command-line", () => {
  const cli = (...args: string[]): { code: number | null; out: string; err: string } => {
    const r = spawnSync(join(REPO, "bin", "detour"), args, { encoding: "utf8", timeout: CLI_TIMEOUT_MS });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const keys = join(dir, "it");
  assert.equal(cli("policy", "keygen", "--out", keys).code, 0);
  writeFileSync(join(dir, "policy.json"), policy(3));
  const signedPath = join(dir, "policy.signed.json");
  const s = cli(
    "policy",
    "sign",
    "--key",
    join(keys, "policy-signing.key"),
    "--in",
    join(dir, "policy.json"),
    "--out",
    signedPath,
  );
  assert.equal(s.code, 0, s.err);
  assert.doesNotMatch(s.out + s.err, /PRIVATE KEY/, "the private key is never printed");
  const ok = cli("policy", "verify", "--keys", keys, signedPath);
  assert.equal(ok.code, 0, ok.out + ok.err);
  assert.match(ok.out, /^ok: version 3/);
  const down = cli("policy", "verify", "--keys", keys, "--current-version", "5", signedPath);
  assert.equal(down.code, 1);
  assert.match(down.out, /^rejected: downgrade \(version\)/);
  writeFileSync(
    join(dir, "bad.json"),
    JSON.stringify({ ...(JSON.parse(policy(4)) as object), settings: { allowedProtocols: ["pptp"] } }),
  );
  const bad = cli(
    "policy",
    "sign",
    "--key",
    join(keys, "policy-signing.key"),
    "--in",
    join(dir, "bad.json"),
    "--out",
    join(dir, "bad.signed.json"),
  );
  assert.equal(bad.code, 1);
  assert.match(bad.err, /settings\.allowedProtocols\[0\]/);
});

test("the-fixtures-verify-with-the-cli-tools-too", () => {
  const fix = join(REPO, "main/agent/policy/fixtures");
  const r = verifyFile(join(fix, "sample.signed.json"), { keysDir: fix, now: Date.parse("2026-01-01T00:00:00Z") });
  assert.ok(r.verdict.ok);
  assert.equal(
    readFileSync(join(fix, "sample-policy.json"), "utf8"),
    Buffer.from(r.verdict.envelope.policy, "base64").toString("utf8"),
    "the exact bytes travel",
  );
});
