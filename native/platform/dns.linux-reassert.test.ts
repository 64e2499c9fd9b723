/**
 * A reassert of the tunnel's resolv.conf while the state disk refuses the backup (dns.linux.ts reassertDns): the
 * tunnel's resolvers still go back (the network's would take every lookup in clear to the local network), the older
 * saved original stays whole for the disconnect, and the failure is thrown as a DnsBackupError naming the backup
 * file and the system's code, for the data plane to report.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { AtomicFs } from "../../main/shared/atomic-write.ts";
import { applyDns, DnsBackupError, reassertDns, renderResolvConf, restoreDns } from "./dns.linux.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-dns-reassert-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const TUNNEL = { servers: ["198.19.0.53"], searchDomains: ["corp.detour.test"] };
const ORIGINAL = "nameserver 198.18.53.2\n";
const NETWORK = "nameserver 192.168.1.1\nsearch home.example\n";

test("a-backup-write-that-fails-during-a-reassert-still-puts-the-tunnel-resolvers-back-and-says-why", () => {
  const path = join(dir, "r-eio.conf");
  const backupPath = join(dir, "r-eio.orig");
  writeFileSync(path, ORIGINAL);
  applyDns(TUNNEL, { path, backupPath });
  // A network manager renews the lease and writes the network's resolvers; the state disk now fails every write.
  writeFileSync(path, NETWORK);
  const failing: AtomicFs = {
    ...fs,
    fsyncSync: () => {
      throw Object.assign(new Error("EIO: i/o error, fsync"), { code: "EIO" });
    },
  };
  assert.throws(
    () => reassertDns(TUNNEL, { path, backupPath }, { fs: failing }),
    (e: unknown) =>
      e instanceof DnsBackupError &&
      e.code === "EIO" &&
      e.message.includes(backupPath) &&
      /tunnel's resolvers are back/.test(e.message),
  );
  assert.equal(readFileSync(path, "utf8"), renderResolvConf(TUNNEL), "no lookup goes to 192.168.1.1 in clear");
  assert.equal(readFileSync(backupPath, "utf8"), ORIGINAL, "the older saved original is whole");
  assert.deepEqual(readdirSync(dir).sort(), ["r-eio.conf", "r-eio.orig"], "no temporary file is left");
  assert.equal(reassertDns(TUNNEL, { path, backupPath }, { fs: failing }), false, "nothing left to redo");
  assert.equal(restoreDns({ path, backupPath }), true);
  assert.equal(readFileSync(path, "utf8"), ORIGINAL, "a disconnect restores the older original");
});

test("a-full-state-disk-during-a-reassert-keeps-the-tunnel-resolvers-in-force", (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("needs root to mount a small tmpfs");
    return;
  }
  const mnt = mkdtempSync(join(tmpdir(), "detour-dns-reassert-full-"));
  const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", mnt], { encoding: "utf8" });
  if (mount.status !== 0) {
    rmSync(mnt, { recursive: true, force: true });
    t.skip(`cannot mount a tmpfs: ${mount.stderr.trim()}`);
    return;
  }
  try {
    const path = join(dir, "r-full.conf");
    const backupPath = join(mnt, "resolv.conf.orig");
    writeFileSync(path, ORIGINAL);
    applyDns(TUNNEL, { path, backupPath });
    // Fill the state folder's file system to the last block, then the network rewrites resolv.conf.
    try {
      writeFileSync(join(mnt, "filler"), Buffer.alloc(64 * 1024));
    } catch {
      // ENOSPC: full, as wanted
    }
    writeFileSync(path, NETWORK);
    assert.throws(
      () => reassertDns(TUNNEL, { path, backupPath }),
      (e: unknown) => e instanceof DnsBackupError && e.code === "ENOSPC" && e.message.includes(backupPath),
    );
    assert.equal(readFileSync(path, "utf8"), renderResolvConf(TUNNEL), "the tunnel's resolvers are back");
    assert.equal(readFileSync(backupPath, "utf8"), ORIGINAL, "the older saved original is whole");
    assert.deepEqual(readdirSync(mnt).sort(), ["filler", "resolv.conf.orig"], "no temporary file is left");
  } finally {
    spawnSync("umount", [mnt]);
    rmSync(mnt, { recursive: true, force: true });
  }
});
