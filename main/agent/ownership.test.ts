/**
 * The ownership record on a fake platform: what the daemon creates is on disk before it exists, a successor
 * reclaims exactly what the record lists, a live predecessor is never taken over, a garbage record falls back to
 * detourd's naming, and a full disk is a reported error that leaves the last good record in place.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type {
  EngineProcessInfo as ChildInfoForTest,
  OwnedState,
  Platform,
  PlatformReclaim,
  ReclaimReport,
} from "../../native/platform/platform.ts";
import type { Logger } from "./log.ts";
import { describeSpawn, OWNERSHIP_FILE, OwnershipError, OwnershipRecord, parseRecord } from "./ownership.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakePlatform } from "../../test/fakes/fake-platform.ts";
import type { AtomicFs } from "../shared/atomic-write.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-ownership-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

const errors: string[] = [];
const log: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: (msg) => {
    errors.push(msg);
  },
};

/** A fake platform with a reclaim part: processes "live" while in `alive`, reclaims recorded as asked. */
function rig(): {
  platform: Platform;
  alive: Map<number, string>;
  reclaims: OwnedState[];
  spawn(p: ChildInfoForTest): void;
  exit(p: ChildInfoForTest): void;
} {
  const alive = new Map<number, string>([[process.pid, "100"]]);
  const reclaims: OwnedState[] = [];
  const listeners = new Set<{ spawned(p: ChildInfoForTest): void; exited(p: ChildInfoForTest): void }>();
  const reclaim: PlatformReclaim = {
    identify: (pid) => {
      const t = alive.get(pid);
      return t === undefined ? null : { startTime: t, bootId: "boot-1" };
    },
    reclaim: (owned): Promise<ReclaimReport> => {
      reclaims.push(structuredClone(owned));
      return Promise.resolve({ removed: owned.processes.map((p) => `process ${String(p.pid)}`), failed: [] });
    },
    watchEngineProcesses: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  };
  const platform: Platform = { ...fakePlatform(new FakeWorld(new FakeClock(), {})), reclaim };
  return {
    platform,
    alive,
    reclaims,
    spawn: (p) => {
      for (const l of listeners) l.spawned(p);
    },
    exit: (p) => {
      for (const l of listeners) l.exited(p);
    },
  };
}

let dirs = 0;
function stateDir(): string {
  const d = join(root, `s${String(++dirs)}`);
  fs.mkdirSync(d);
  return d;
}

function onDisk(dir: string): OwnedState {
  return parseRecord(readFileSync(join(dir, OWNERSHIP_FILE), "utf8")).owned;
}

test("what-the-daemon-creates-is-on-disk-before-it-exists-and-leaves-the-record-when-it-is-gone", async () => {
  const r = rig();
  const dir = stateDir();
  const rec = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  const p = rec.watch(r.platform);
  r.alive.set(4321, "777");
  r.spawn({ pid: 4321, argv: ["wireguard-go", "-f", "dt-s1"] });
  assert.deepEqual(onDisk(dir).processes, [{ pid: 4321, startTime: "777", bootId: "boot-1", exe: "wireguard-go" }]);
  assert.deepEqual(onDisk(dir).devices, ["dt-s1"]);
  const source = { ifname: "dt-l1", address: "198.19.11.2", table: 5101, pref: 101 };
  await p.routes.installLegSource(source);
  assert.deepEqual(onDisk(dir).rules, [{ pref: 101, table: 5101 }]);
  assert.deepEqual(onDisk(dir).tables, [5101]);
  await p.firewall.applyKillSwitch({
    mode: "blocking",
    state: "racing",
    protectedNetworks: [],
    gatewayEndpoints: [],
    tunnelDevices: [],
    dnsServers: [],
  } as never);
  assert.deepEqual(onDisk(dir).nftTables, ["kill-switch"]);

  await p.routes.removeLegSource(source);
  r.exit({ pid: 4321, argv: ["wireguard-go", "-f", "dt-s1"] });
  await p.firewall.applyKillSwitch(null);
  assert.deepEqual(onDisk(dir).rules.length, 1, "removals are written on the next turn of the loop, together");
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(onDisk(dir), { processes: [], devices: [], rules: [], tables: [], nftTables: [] });
  rec.close();
  assert.equal(fs.existsSync(join(dir, OWNERSHIP_FILE)), false, "a clean exit with nothing left removes the record");
});

test("a-successor-reclaims-what-a-killed-detourd-left-and-starts-a-fresh-record", async () => {
  const r = rig();
  const dir = stateDir();
  const first = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  first.watch(r.platform);
  r.alive.set(5000, "900");
  r.spawn({ pid: 5000, argv: ["ip", "netns", "exec", "x", "/usr/sbin/charon-systemd"] });
  await first
    .watch(r.platform)
    .routes.installLegSource({ ifname: "dt-l2", address: "1.2.3.4", table: 5102, pref: 102 });
  // kill -9: no close(). The record names a dead daemon (another PID) from now on.
  const rec = JSON.parse(readFileSync(join(dir, OWNERSHIP_FILE), "utf8")) as { daemon: { pid: number } };
  rec.daemon.pid = 999_999;
  writeFileSync(join(dir, OWNERSHIP_FILE), JSON.stringify(rec));

  const second = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  assert.equal(r.reclaims.length, 2);
  const asked = r.reclaims[1];
  assert.ok(asked !== undefined);
  assert.deepEqual(asked.processes, [
    { pid: 5000, startTime: "900", bootId: "boot-1", exe: "/usr/sbin/charon-systemd" },
  ]);
  assert.deepEqual(asked.rules, [{ pref: 102, table: 5102 }]);
  assert.deepEqual(second.reclaimed.removed, ["process 5000"]);
  assert.equal(second.reclaimed.previousPid, 999_999);
  assert.deepEqual(onDisk(dir).processes, [], "the successor's record starts empty");
});

test("a-predecessor-that-still-runs-is-never-taken-over", async () => {
  const r = rig();
  const dir = stateDir();
  await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  // The record names this process (the test's own PID, "alive" with the same start time): another detourd.
  const rec = JSON.parse(readFileSync(join(dir, OWNERSHIP_FILE), "utf8")) as { daemon: { pid: number } };
  r.alive.set(424_242, "100");
  rec.daemon.pid = 424_242;
  writeFileSync(join(dir, OWNERSHIP_FILE), JSON.stringify(rec));
  await assert.rejects(
    OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log }),
    (e: unknown) => e instanceof OwnershipError && /still runs/.test(e.message),
  );
  assert.equal(r.reclaims.length, 1, "nothing of the live daemon's was reclaimed");
});

for (const [what, text] of [
  ["truncated", '{"version":1,"daemon":{"pid":12,"startTime":"1","bootId":"b"},"owned":{"processes":[{"pid":'],
  ["garbage", "\u0000\u0001binary"],
  ["wrong-shaped", '{"version":1,"daemon":{"pid":12},"owned":{"processes":[{"pid":"1; rm -rf /"}]}}'],
  [
    "hostile-device-name",
    '{"version":1,"daemon":{"pid":12},"owned":{"processes":[],"devices":["eth0 down"],"rules":[],"tables":[],"nftTables":[]}}',
  ],
  ["huge", "x".repeat(300 * 1024)],
] as const) {
  test(`a-${what}-record-is-reported-and-only-detourds-naming-is-reclaimed`, async () => {
    const r = rig();
    const dir = stateDir();
    writeFileSync(join(dir, OWNERSHIP_FILE), text);
    const rec = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
    assert.ok(rec.reclaimed.recordError !== null, "the unreadable record is reported");
    assert.deepEqual(r.reclaims, [{ processes: [], devices: [], rules: [], tables: [], nftTables: [] }]);
    assert.deepEqual(onDisk(dir).processes, [], "a fresh record replaced it");
  });
}

test("a-full-disk-is-a-reported-error-and-the-last-good-record-stays-whole", async () => {
  const r = rig();
  const dir = stateDir();
  let full = false;
  const faulty: AtomicFs = {
    ...fs,
    writeSync: ((fd: number, buf: Uint8Array, off?: number, len?: number) => {
      if (full) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      return fs.writeSync(fd, buf, off, len);
    }) as AtomicFs["writeSync"],
  };
  const rec = await OwnershipRecord.takeOver({
    stateDir: dir,
    ifnamePrefix: "dt",
    platform: r.platform,
    log,
    fs: faulty,
  });
  const p = rec.watch(r.platform);
  await p.routes.installLegSource({ ifname: "dt-l1", address: "1.2.3.4", table: 5101, pref: 101 });
  const good = readFileSync(join(dir, OWNERSHIP_FILE), "utf8");
  full = true;
  errors.length = 0;
  await p.routes.installLegSource({ ifname: "dt-l2", address: "1.2.3.5", table: 5102, pref: 102 });
  assert.equal(rec.writeFailures, 1, "counted for status");
  assert.match(rec.lastWriteError ?? "", /ENOSPC/);
  assert.ok(
    errors.some((e) => /ownership record not written/.test(e)),
    "and logged",
  );
  assert.equal(readFileSync(join(dir, OWNERSHIP_FILE), "utf8"), good, "the last good record is whole");
  assert.deepEqual(fs.readdirSync(dir), [OWNERSHIP_FILE], "no temporary file is left beside it");
});

test("a-spawn-names-its-program-and-device-past-ip-netns-exec", () => {
  assert.deepEqual(describeSpawn(["ip", "netns", "exec", "ns1", "wireguard-go", "-f", "dt-s3"]), {
    exe: "wireguard-go",
    device: "dt-s3",
  });
  assert.deepEqual(describeSpawn(["openconnect", "--user=a", "--interface=dt-l4", "https://x/"]), {
    exe: "openconnect",
    device: "dt-l4",
  });
  assert.deepEqual(describeSpawn(["ping", "-I", "dt-l1", "198.19.0.1"]), { exe: "ping", device: null });
  assert.deepEqual(describeSpawn(["wireguard-go", "-f", "bad name!"]), { exe: "wireguard-go", device: null });
});

test("a-killed-instances-leg-and-spare-folders-go-and-nothing-else-in-the-work-folder", async () => {
  const r = rig();
  const work = stateDir();
  for (const d of ["L1-Ab3xYz", "L12-q9W8e7", "spare-XyZ123", "keep-me", "L1-toolongname"]) fs.mkdirSync(join(work, d));
  writeFileSync(join(work, "L2-Ab3xYz"), "a file named like a folder of ours goes too");
  const rec = await OwnershipRecord.takeOver({
    stateDir: stateDir(),
    workDir: work,
    ifnamePrefix: "dt",
    platform: r.platform,
    log,
  });
  assert.deepEqual(fs.readdirSync(work).sort(), ["L1-toolongname", "keep-me"]);
  assert.equal(rec.reclaimed.removed.filter((x) => x.startsWith("work folder")).length, 4);
});

test("a-successor-resumes-only-a-connection-the-user-wanted-and-a-clean-exit-wants-none", async () => {
  const r = rig();
  const dir = stateDir();
  const killAndTakeOver = async (): Promise<OwnershipRecord> => {
    const rec = JSON.parse(readFileSync(join(dir, OWNERSHIP_FILE), "utf8")) as { daemon: { pid: number } };
    rec.daemon.pid = 999_998;
    writeFileSync(join(dir, OWNERSHIP_FILE), JSON.stringify(rec));
    return OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  };
  const first = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  assert.equal(first.reclaimed.previousConnectIntent, false, "a first start resumes nothing");
  first.setConnectIntent(true);
  // kill -9 while connected: the successor resumes.
  const second = await killAndTakeOver();
  assert.equal(second.reclaimed.previousConnectIntent, true);
  // The successor's own record starts without the wish until it connects; the user then disconnects: nothing to resume.
  second.setConnectIntent(true);
  second.setConnectIntent(false);
  const third = await killAndTakeOver();
  assert.equal(third.reclaimed.previousConnectIntent, false);
  // A clean exit is a disconnect, even with something left in the record (an engine that would not stop, say).
  third.setConnectIntent(true);
  await third
    .watch(r.platform)
    .routes.installLegSource({ ifname: "dt-l3", address: "1.2.3.5", table: 5103, pref: 103 });
  third.close();
  assert.ok(fs.existsSync(join(dir, OWNERSHIP_FILE)), "the record stays for what is left in it");
  const fourth = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  assert.equal(fourth.reclaimed.previousConnectIntent, false);
  // An older record without the field: nothing is resumed.
  assert.equal(
    parseRecord(JSON.stringify({ version: 1, daemon: { pid: 1 }, owned: emptyForTest() })).connectIntent,
    false,
  );
});

function emptyForTest(): OwnedState {
  return { processes: [], devices: [], rules: [], tables: [], nftTables: [] };
}

test("the-watched-platform-passes-every-dns-firewall-and-routes-method-through", async () => {
  const r = rig();
  const rec = await OwnershipRecord.takeOver({ stateDir: stateDir(), ifnamePrefix: "dt", platform: r.platform, log });
  const watched = rec.watch(r.platform);
  for (const part of ["dns", "firewall", "routes"] as const) {
    const missing = Object.keys(r.platform[part]).filter(
      (k) => (watched[part] as unknown as Record<string, unknown>)[k] === undefined,
    );
    assert.deepEqual(missing, [], `platform.${part} methods lost by the ownership wrapper`);
  }
});

test("a-resolved-link-is-listed-before-its-dns-goes-in-and-a-successor-is-asked-to-revert-it", async () => {
  const r = rig();
  const dir = stateDir();
  const first = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  const links = first.watch(r.platform).dns.links;
  assert.ok(links !== undefined);
  await links.apply("dt-l1", {
    servers: ["198.19.0.53"],
    domains: [{ name: ".", routeOnly: true }],
    defaultRoute: true,
  });
  assert.deepEqual(onDisk(dir).resolvedLinks, ["dt-l1"]);
  await links.revert("dt-l1");
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(onDisk(dir).resolvedLinks, [], "a reverted link leaves the record");
  await links.apply("dt-l2", { servers: ["198.19.0.53"], domains: [], defaultRoute: true });
  // kill -9 while connected: the successor is asked to revert the link.
  const rec = JSON.parse(readFileSync(join(dir, OWNERSHIP_FILE), "utf8")) as { daemon: { pid: number } };
  rec.daemon.pid = 999_999;
  writeFileSync(join(dir, OWNERSHIP_FILE), JSON.stringify(rec));
  await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform: r.platform, log });
  assert.deepEqual(r.reclaims.at(-1)?.resolvedLinks, ["dt-l2"]);
  assert.throws(
    () =>
      parseRecord(
        JSON.stringify({
          version: 1,
          daemon: { pid: 1 },
          owned: { processes: [], devices: [], rules: [], tables: [], nftTables: [], resolvedLinks: ["a b"] },
        }),
      ),
    /owned\.resolvedLinks holds "a b"/,
  );
});

test("the-mss-clamp-table-is-on-disk-before-it-exists-and-a-successor-reclaims-it", async () => {
  const r = rig();
  const seen: (readonly string[] | null)[] = [];
  let onDiskAtApply: string[] = [];
  const dir = stateDir();
  const platform: Platform = {
    ...r.platform,
    mtu: {
      probeSize: () => Promise.resolve(true),
      setLinkMtu: () => Promise.resolve(),
      applyMssClamp: (d) => {
        seen.push(d);
        onDiskAtApply = onDisk(dir).nftTables;
        return Promise.resolve();
      },
    },
  };
  const rec = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform, log });
  const p = rec.watch(platform);
  assert.ok(p.mtu !== undefined);
  await p.mtu.applyMssClamp(["dt-*", "ipsec*"]);
  assert.deepEqual(onDiskAtApply, ["mss-clamp"], "recorded before nft ran");
  assert.deepEqual(seen, [["dt-*", "ipsec*"]]);
  // A kill -9 now: the record on disk lists the table, and a successor is told to reclaim it.
  rec.close();
  writeFileSync(
    join(dir, OWNERSHIP_FILE),
    JSON.stringify({
      version: 1,
      daemon: { pid: 999_999, startTime: "1", bootId: "boot-1" },
      owned: { processes: [], devices: [], rules: [], tables: [], nftTables: ["mss-clamp"] },
      resolvConfBackup: null,
    }),
  );
  const successor = await OwnershipRecord.takeOver({ stateDir: dir, ifnamePrefix: "dt", platform, log });
  assert.deepEqual(r.reclaims.at(-1)?.nftTables, ["mss-clamp"], "the successor reclaims the clamp table");
  const p2 = successor.watch(platform);
  await p2.mtu?.applyMssClamp(null);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(onDisk(dir).nftTables, [], "removed from the record once gone");
  successor.close();
});
