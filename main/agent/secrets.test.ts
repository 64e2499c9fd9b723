/** Secret files: only a private regular file of root's (or detourd's own user's) is read, never a link or a FIFO. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readPolicyUrl } from "./policy/wiring.ts";
import { loadSecret, readSecretFile, SecretError } from "./secrets.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-secrets-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});
const isRoot = process.getuid?.() === 0;

function secretFile(name: string, text: string, mode = 0o600): string {
  const p = join(dir, name);
  writeFileSync(p, text, { mode });
  chmodSync(p, mode);
  return p;
}

const refused = (f: () => unknown, re: RegExp): void => {
  assert.throws(f, (e: unknown) => e instanceof SecretError && re.test(e.message), String(re));
};

test("a-private-regular-file-is-read-and-trimmed", () => {
  assert.equal(readSecretFile(secretFile("ok", "  s3cret\n"), "x"), "s3cret");
  assert.equal(loadSecret({ file: join(dir, "ok") }, "identity.x").reveal(), "s3cret");
});

test("a-symlink-to-a-secret-is-refused-even-to-a-good-file", () => {
  const good = secretFile("target", "s3cret");
  const link = join(dir, "link");
  symlinkSync(good, link);
  refused(() => readSecretFile(link, "telemetry.token"), /telemetry\.token: .*link is a symbolic link/);
});

test("a-file-open-to-group-or-others-is-refused-readable-or-writable", () => {
  refused(() => readSecretFile(secretFile("gw", "s", 0o620), "k"), /open to group or others \(mode 620\)/);
  refused(() => readSecretFile(secretFile("ow", "s", 0o602), "k"), /open to group or others \(mode 602\)/);
  refused(() => readSecretFile(secretFile("or", "s", 0o644), "k"), /open to group or others \(mode 644\)/);
});

test("a-file-owned-by-another-user-is-refused", { skip: !isRoot }, () => {
  const p = secretFile("foreign", "s3cret");
  chownSync(p, 65534, 65534);
  refused(() => readSecretFile(p, "identity.ikev2.psk"), /owned by uid 65534, not root/);
});

test("a-fifo-or-a-folder-is-not-a-secret-file-and-nothing-hangs", () => {
  const fifo = join(dir, "fifo");
  execFileSync("mkfifo", ["-m", "600", fifo]);
  refused(() => readSecretFile(fifo, "k"), /not a regular file/);
  refused(() => readSecretFile(dir, "k"), /not a regular file|open to group/);
  refused(() => readSecretFile(join(dir, "absent"), "k"), /cannot read .*ENOENT/);
  refused(() => readSecretFile(secretFile("empty", "\n"), "k"), /is empty/);
});

test("the-policy-url-comes-from-a-private-file-and-errors-never-quote-it", () => {
  assert.equal(
    readPolicyUrl(secretFile("url", "https://u:pw@policy.example/p.json?sig=abc\n")),
    "https://u:pw@policy.example/p.json?sig=abc",
  );
  refused(() => readPolicyUrl(secretFile("url-open", "https://policy.example/", 0o644)), /--policy-url-file: /);
  const bad = secretFile("url-bad", "not a url with pw=hunter2");
  assert.throws(
    () => readPolicyUrl(bad),
    (e: unknown) => e instanceof SecretError && /does not hold a URL/.test(e.message) && !/hunter2/.test(e.message),
  );
  refused(() => readPolicyUrl(secretFile("url-ftp", "ftp://policy.example/p")), /must be https/);
});
