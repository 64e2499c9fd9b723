import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { applyDns, renderResolvConf, restoreDns } from "./dns.linux.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-dns-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test("the-tunnel-resolvers-go-in-and-the-original-comes-back-exactly", () => {
  const path = join(dir, "resolv.conf");
  const backupPath = join(dir, "resolv.conf.orig");
  writeFileSync(path, "nameserver 198.18.53.2\nsearch lab.detour.test\n");
  applyDns({ servers: ["198.19.0.1"], searchDomains: ["corp.detour.test"] }, { path, backupPath });
  assert.match(readFileSync(path, "utf8"), /^nameserver 198\.19\.0\.1$/m);
  applyDns({ servers: ["198.19.0.2"], searchDomains: [] }, { path, backupPath });
  assert.match(readFileSync(path, "utf8"), /nameserver 198\.19\.0\.2/, "a failover swaps the resolvers");
  assert.equal(restoreDns({ path, backupPath }), true);
  assert.equal(
    readFileSync(path, "utf8"),
    "nameserver 198.18.53.2\nsearch lab.detour.test\n",
    "the first original survives repeated applies",
  );
  assert.equal(existsSync(backupPath), false);
  assert.equal(restoreDns({ path, backupPath }), false, "restore without a backup is a no-op");
});

test("no-servers-changes-nothing-and-bad-values-are-refused", () => {
  const path = join(dir, "r2.conf");
  const backupPath = join(dir, "r2.orig");
  writeFileSync(path, "nameserver 1.1.1.1\n");
  applyDns({ servers: [], searchDomains: [] }, { path, backupPath });
  assert.equal(existsSync(backupPath), false);
  assert.throws(() => {
    applyDns({ servers: ["1.2.3.4\nnameserver 6.6.6.6"], searchDomains: [] }, { path, backupPath });
  }, /not IPv4/);
  assert.throws(() => {
    applyDns({ servers: ["1.2.3.4"], searchDomains: ["a b"] }, { path, backupPath });
  }, /not host names/);
  assert.equal(readFileSync(path, "utf8"), "nameserver 1.1.1.1\n");
});

test("a-resolv-conf-managed-by-a-resolver-daemon-is-left-alone", () => {
  const target = join(dir, "stub.conf");
  writeFileSync(target, "nameserver 127.0.0.53\n");
  const path = join(dir, "linked.conf");
  symlinkSync(target, path);
  assert.throws(() => {
    applyDns({ servers: ["198.19.0.1"], searchDomains: [] }, { path, backupPath: join(dir, "l.orig") });
  }, /symbolic link/);
  assert.equal(readFileSync(target, "utf8"), "nameserver 127.0.0.53\n");
});

test("at-most-three-nameservers-as-glibc-reads", () => {
  assert.equal(
    renderResolvConf({ servers: ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"], searchDomains: [] }).match(/nameserver/g)
      ?.length,
    3,
  );
});
