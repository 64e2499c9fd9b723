import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  existsSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { AtomicWriteError } from "../../main/shared/atomic-write.ts";
import { applyDns, reassertDns, renderResolvConf, restoreDns, watchDns } from "./dns.linux.ts";

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

test("ipv6-tunnel-resolvers-are-written-beside-ipv4-ones", () => {
  const path = join(dir, "r6.conf");
  const backupPath = join(dir, "r6.orig");
  writeFileSync(path, "nameserver 198.18.53.2\n");
  applyDns({ servers: ["fd00:19::53", "198.19.0.53"], searchDomains: [] }, { path, backupPath });
  assert.match(readFileSync(path, "utf8"), /^nameserver fd00:19::53\nnameserver 198\.19\.0\.53$/m);
  assert.equal(restoreDns({ path, backupPath }), true);
  assert.equal(readFileSync(path, "utf8"), "nameserver 198.18.53.2\n");
});

test("no-servers-changes-nothing-and-bad-values-are-refused", () => {
  const path = join(dir, "r2.conf");
  const backupPath = join(dir, "r2.orig");
  writeFileSync(path, "nameserver 1.1.1.1\n");
  applyDns({ servers: [], searchDomains: [] }, { path, backupPath });
  assert.equal(existsSync(backupPath), false);
  assert.throws(() => {
    applyDns({ servers: ["1.2.3.4\nnameserver 6.6.6.6"], searchDomains: [] }, { path, backupPath });
  }, /not IP addresses: 1\.2\.3\.4\nnameserver 6\.6\.6\.6/);
  assert.throws(() => {
    applyDns({ servers: ["fe80::1%eth0"], searchDomains: [] }, { path, backupPath });
  }, /not IP addresses: fe80::1%eth0/);
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

for (const [what, content] of [
  ["truncated", "nameserver 198.18.53.2\nnameserver 198.18."],
  ["cut-in-a-word", "nameserver 198.18.53.2\nnamese"],
  ["binary", "\u0000\u0001\u0002garbage"],
  ["huge", "# padding\n".repeat(8000)],
  ["detourds-own", renderResolvConf({ servers: ["198.19.0.1"], searchDomains: [] })],
  ["not-utf8", Buffer.from([0x6e, 0x61, 0xff, 0xfe, 0x0a])],
] as const) {
  test(`a-${what}-backup-is-not-restored-blindly-it-is-reported-and-no-resolver-is-left`, () => {
    const path = join(dir, `resolv-${what}.conf`);
    const backupPath = join(dir, `resolv-${what}.conf.orig`);
    writeFileSync(path, renderResolvConf({ servers: ["198.19.0.1"], searchDomains: [] }));
    writeFileSync(backupPath, content);
    assert.throws(
      () => restoreDns({ path, backupPath }),
      (e: unknown) => e instanceof Error && e.name === "DnsError" && e.message.includes("was not restored"),
    );
    const now = readFileSync(path, "utf8");
    assert.doesNotMatch(now, /^nameserver/m, "neither the tunnel's resolvers nor the damaged file's are in force");
    assert.match(now, /could not restore the original/);
    assert.equal(existsSync(backupPath), false, "the next start does not trip over it again");
    assert.equal(existsSync(`${backupPath}.rejected`), true, "it is kept aside for diagnosis");
  });
}

test("a-valid-backup-with-options-and-ipv6-is-restored-exactly", () => {
  const path = join(dir, "resolv-v6.conf");
  const backupPath = join(dir, "resolv-v6.conf.orig");
  const original =
    "# from DHCP\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\nsearch a.example b.example\noptions edns0 timeout:1\n";
  writeFileSync(path, original);
  applyDns({ servers: ["198.19.0.1"], searchDomains: [] }, { path, backupPath });
  assert.equal(restoreDns({ path, backupPath }), true);
  assert.equal(readFileSync(path, "utf8"), original);
});

test("a-full-disk-when-saving-the-original-is-a-reported-error-and-resolv-conf-is-untouched", (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("needs root to mount a small tmpfs");
    return;
  }
  const mnt = mkdtempSync(join(tmpdir(), "detour-dns-full-"));
  const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", mnt], { encoding: "utf8" });
  if (mount.status !== 0) {
    rmSync(mnt, { recursive: true, force: true });
    t.skip(`cannot mount a tmpfs: ${mount.stderr.trim()}`);
    return;
  }
  try {
    const path = join(dir, "resolv-full.conf");
    const original = "nameserver 198.18.53.2\n";
    writeFileSync(path, original);
    // Fill the state folder's file system to the last block.
    try {
      writeFileSync(join(mnt, "filler"), Buffer.alloc(64 * 1024));
    } catch {
      // ENOSPC: full, as wanted
    }
    const backupPath = join(mnt, "resolv.conf.orig");
    assert.throws(
      () => {
        applyDns({ servers: ["198.19.0.1"], searchDomains: [] }, { path, backupPath });
      },
      (e: unknown) => e instanceof AtomicWriteError && e.code === "ENOSPC",
    );
    assert.equal(readFileSync(path, "utf8"), original, "the tunnel's resolvers did not go in without a backup");
    assert.deepEqual(readdirSync(mnt), ["filler"], "no partial backup or temporary file");
  } finally {
    spawnSync("umount", [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test("a-rewrite-by-other-software-is-undone-and-becomes-the-original-to-restore", () => {
  const path = join(dir, "r-reassert.conf");
  const backupPath = join(dir, "r-reassert.orig");
  const files = { path, backupPath };
  const tunnel = { servers: ["198.19.0.53"], searchDomains: ["corp.detour.test"] };
  writeFileSync(path, "nameserver 198.18.53.2\n");
  applyDns(tunnel, files);
  assert.equal(reassertDns(tunnel, files), false, "detourd's own file is left as it is");
  // A network manager renews the lease and writes the network's resolvers in place.
  writeFileSync(path, "nameserver 192.168.1.1\nsearch home.example\n");
  assert.equal(reassertDns(tunnel, files), true);
  assert.equal(readFileSync(path, "utf8"), renderResolvConf(tunnel), "the tunnel's resolvers are back");
  assert.equal(
    readFileSync(backupPath, "utf8"),
    "nameserver 192.168.1.1\nsearch home.example\n",
    "the network's newest view is what a disconnect restores",
  );
  // Garbage written over it is undone too, but never saved as the original.
  writeFileSync(path, "\u0000garbage");
  assert.equal(reassertDns(tunnel, files), true);
  assert.equal(readFileSync(backupPath, "utf8"), "nameserver 192.168.1.1\nsearch home.example\n");
  assert.equal(restoreDns(files), true);
  assert.equal(readFileSync(path, "utf8"), "nameserver 192.168.1.1\nsearch home.example\n");
  // Another manager turning it into a symbolic link is refused with the reason.
  const target = join(dir, "stub-resolv.conf");
  writeFileSync(target, "nameserver 127.0.0.53\n");
  rmSync(path);
  symlinkSync(target, path);
  assert.throws(() => reassertDns(tunnel, files), /symbolic link/);
});

test("the-watch-sees-a-write-in-place-and-a-replacement-by-rename", async () => {
  const path = join(dir, "r-watch.conf");
  writeFileSync(path, "nameserver 198.19.0.53\n");
  let seen = 0;
  const stop = watchDns({ path, backupPath: join(dir, "r-watch.orig") }, () => {
    seen += 1;
  });
  const until = async (n: number): Promise<boolean> => {
    for (let i = 0; i < 100 && seen < n; i++) await new Promise((r) => setTimeout(r, 20));
    return seen >= n;
  };
  try {
    writeFileSync(path, "nameserver 192.168.1.1\n");
    assert.ok(await until(1), "a write in place is seen");
    const before = seen;
    writeFileSync(`${path}.tmp`, "nameserver 192.168.1.2\n");
    renameSync(`${path}.tmp`, path);
    assert.ok(await until(before + 1), "a replacement by rename is seen");
    await new Promise((r) => setTimeout(r, 150));
    const afterRename = seen;
    writeFileSync(path, "nameserver 192.168.1.3\n");
    assert.ok(await until(afterRename + 1), "the watch follows the new file");
  } finally {
    stop();
  }
});
