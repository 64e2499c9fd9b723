/**
 * The connect intent on a full, read-only or failing disk (ownership.ts): a copy in the runtime folder keeps it when
 * the state disk refuses it, a successor resumes from either copy, and when no copy takes it, crash protection is
 * reported as not in force (with the files and the system's codes) and the write is retried with a bounded backoff
 * until it lands, which clears the report.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import type { Platform, PlatformReclaim } from "../../native/platform/platform.ts";
import type { CrashProtection } from "../core/protocol/messages.ts";
import type { Logger } from "./log.ts";
import { OWNERSHIP_FILE, OwnershipRecord, parseRecord, RECORD_RETRY_MAX_MS } from "./ownership.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakePlatform } from "../../test/fakes/fake-platform.ts";
import type { AtomicFs } from "../shared/atomic-write.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-ownership-disk-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

const log: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

let dirs = 0;
function folder(): string {
  const d = join(root, `d${String(++dirs)}`);
  fs.mkdirSync(d);
  return d;
}

function platform(): Platform {
  const reclaim: PlatformReclaim = {
    // Only this process "lives": a record naming another pid is a dead predecessor's.
    identify: (pid) => (pid === process.pid ? { startTime: "100", bootId: "boot-1" } : null),
    reclaim: () => Promise.resolve({ removed: [], failed: [] }),
    watchEngineProcesses: () => () => undefined,
  };
  return { ...fakePlatform(new FakeWorld(new FakeClock(), {})), reclaim };
}

/** A file system whose folders in `broken` refuse new files with `code`, as a full or read-only disk does. */
function faultyFs(broken: Map<string, string>): AtomicFs {
  return {
    ...fs,
    openSync: ((path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode) => {
      const p = resolve(String(path));
      for (const [dir, code] of broken)
        if (flags === "wx" && p.startsWith(resolve(dir) + "/"))
          throw Object.assign(new Error(`${code}: refused by the test, open '${p}'`), { code });
      return fs.openSync(path, flags, mode);
    }) as AtomicFs["openSync"],
  };
}

/** What a SIGKILL leaves: the copies as they are on disk, the writer no longer alive (another pid). */
function killed(dir: string): void {
  const path = join(dir, OWNERSHIP_FILE);
  if (!fs.existsSync(path)) return;
  const rec = JSON.parse(readFileSync(path, "utf8")) as { daemon: { pid: number } };
  rec.daemon.pid = 999_997;
  fs.writeFileSync(path, JSON.stringify(rec));
}

test("a-full-state-disk-keeps-the-connect-intent-in-the-runtime-copy-and-a-successor-resumes", async () => {
  const stateDir = folder();
  const runtimeDir = folder();
  const broken = new Map<string, string>();
  const p = platform();
  const opts = { stateDir, runtimeDir, ifnamePrefix: "dt", platform: p, log, fs: faultyFs(broken) };
  const rec = await OwnershipRecord.takeOver({ ...opts, clock: new FakeClock() });
  broken.set(stateDir, "ENOSPC");
  rec.setConnectIntent(true);
  assert.equal(
    parseRecord(readFileSync(join(stateDir, OWNERSHIP_FILE), "utf8")).connectIntent,
    false,
    "the state disk kept the old record",
  );
  const cp = rec.crashProtection();
  assert.equal(cp.inForce, true, "the runtime copy holds the intent");
  assert.deepEqual(
    cp.failedCopies.map((c) => [c.path, c.code]),
    [[join(stateDir, OWNERSHIP_FILE), "ENOSPC"]],
    "the copy that failed is reported",
  );
  // kill -9 now; the successor starts with the disk still full.
  killed(stateDir);
  killed(runtimeDir);
  const successor = await OwnershipRecord.takeOver({ ...opts, clock: new FakeClock() });
  assert.equal(successor.reclaimed.previousConnectIntent, true, "the successor resumes the connection");
  successor.close();
});

test("a-successor-resumes-from-the-state-copy-when-the-runtime-one-is-gone", async () => {
  const stateDir = folder();
  const runtimeDir = folder();
  const opts = { stateDir, runtimeDir, ifnamePrefix: "dt", platform: platform(), log };
  const rec = await OwnershipRecord.takeOver({ ...opts, clock: new FakeClock() });
  rec.setConnectIntent(true);
  killed(stateDir);
  rmSync(join(runtimeDir, OWNERSHIP_FILE));
  const successor = await OwnershipRecord.takeOver({ ...opts, clock: new FakeClock() });
  assert.equal(successor.reclaimed.previousConnectIntent, true);
  // A clean exit leaves neither copy behind.
  successor.close();
  assert.deepEqual([fs.readdirSync(stateDir), fs.readdirSync(runtimeDir)], [[], []]);
});

test("no-copy-of-the-intent-is-reported-not-in-force-retried-with-backoff-and-cleared-once-written", async () => {
  const stateDir = folder();
  const runtimeDir = folder();
  const broken = new Map<string, string>();
  const clock = new FakeClock();
  const opts = { stateDir, runtimeDir, ifnamePrefix: "dt", platform: platform(), log, fs: faultyFs(broken), clock };
  const rec = await OwnershipRecord.takeOver(opts);
  const reports: CrashProtection[] = [];
  rec.onCrashProtection((r) => reports.push(r));
  assert.equal(rec.crashProtection().inForce, true, "nothing wanted: nothing to protect");
  broken.set(stateDir, "EROFS");
  broken.set(runtimeDir, "EIO");
  rec.setConnectIntent(true);
  const lost = rec.crashProtection();
  assert.equal(lost.inForce, false, "a crash now would lift the kill switch: said so");
  assert.deepEqual(
    lost.failedCopies.map((c) => [c.path, c.code]),
    [
      [join(stateDir, OWNERSHIP_FILE), "EROFS"],
      [join(runtimeDir, OWNERSHIP_FILE), "EIO"],
    ],
  );
  assert.equal(lost.nextRetryAt, clock.wall() + 1_000, "a retry is scheduled");
  assert.deepEqual(
    reports.map((r) => r.inForce),
    [false],
    "reported once, when it was lost",
  );
  // The backoff doubles up to its bound, and every attempt is counted.
  const gaps: number[] = [];
  for (let i = 0; i < 8; i++) {
    const next = rec.crashProtection().nextRetryAt;
    assert.ok(next !== null);
    gaps.push(next - clock.wall());
    await clock.advance(next - clock.wall());
  }
  assert.deepEqual(gaps, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
  assert.ok(gaps.every((g) => g <= RECORD_RETRY_MAX_MS));
  assert.equal(rec.crashProtection().retries, 8);
  assert.equal(rec.crashProtection().inForce, false);
  assert.equal(reports.length, 1, "retries that fail again are not reported again");
  // The admin frees the disk: the next retry writes both copies and clears the report.
  broken.clear();
  await clock.advance(RECORD_RETRY_MAX_MS);
  const back = rec.crashProtection();
  assert.deepEqual(back, { inForce: true, failedCopies: [], retries: 0, nextRetryAt: null });
  assert.deepEqual(
    reports.map((r) => r.inForce),
    [false, true],
  );
  assert.equal(parseRecord(readFileSync(join(stateDir, OWNERSHIP_FILE), "utf8")).connectIntent, true);
  assert.equal(parseRecord(readFileSync(join(runtimeDir, OWNERSHIP_FILE), "utf8")).connectIntent, true);
  // No retry is left running.
  await clock.advance(RECORD_RETRY_MAX_MS * 2);
  assert.equal(rec.crashProtection().retries, 0);
  rec.close();
});

test("a-disconnect-that-cannot-be-written-keeps-protection-in-force-and-close-stops-the-retries", async () => {
  const stateDir = folder();
  const runtimeDir = folder();
  const broken = new Map<string, string>();
  const clock = new FakeClock();
  const opts = { stateDir, runtimeDir, ifnamePrefix: "dt", platform: platform(), log, fs: faultyFs(broken), clock };
  const rec = await OwnershipRecord.takeOver(opts);
  rec.setConnectIntent(true);
  broken.set(stateDir, "ENOSPC");
  broken.set(runtimeDir, "ENOSPC");
  rec.setConnectIntent(false);
  // The copies still say "resume": the safe side (a successor reconnects), so nothing is lost; the failure is listed.
  assert.equal(rec.crashProtection().inForce, true);
  assert.equal(rec.crashProtection().failedCopies.length, 2);
  rec.close();
  const before = rec.crashProtection().retries;
  await clock.advance(RECORD_RETRY_MAX_MS * 3);
  assert.equal(rec.crashProtection().retries, before, "a closed record retries nothing");
});
