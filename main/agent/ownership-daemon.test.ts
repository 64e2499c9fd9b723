/**
 * Crash protection as a user sees it, on the real daemon with a fake platform: with no disk that takes the connect
 * intent, `connect` still connects, and its answer, status and an event (telemetry gets the same event through
 * ConnectionEvents.announce) say that a crash now would lift the kill switch, with the files and the system's codes;
 * once a retry writes the intent, the report clears.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import type { ConnectionEvent } from "../core/connection/types.ts";
import { connectOneGateway, oneGatewayRig, startOneGatewayDaemon } from "../../test/fakes/one-gateway-daemon.ts";
import type { AtomicFs } from "../shared/atomic-write.ts";
import { createLogger } from "./log.ts";
import { OWNERSHIP_FILE, OwnershipRecord, RECORD_RETRY_FIRST_MS } from "./ownership.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-ownership-daemon-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

test("a-connect-whose-intent-no-disk-takes-connects-and-says-crash-protection-is-not-in-force-until-a-retry-writes-it", async () => {
  const rig = oneGatewayRig(root);
  const { stateDir, workDir, clock } = rig;
  // Both disks refuse new files: the state disk is full, the runtime one failing.
  let broken = false;
  const faulty: AtomicFs = {
    ...fs,
    openSync: ((path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode) => {
      const p = resolve(String(path));
      const code = p.startsWith(stateDir) ? "ENOSPC" : "EIO";
      if (broken && flags === "wx" && p.endsWith(`.${OWNERSHIP_FILE}.${String(process.pid)}.tmp`))
        throw Object.assign(new Error(`${code}: refused by the test`), { code });
      return fs.openSync(path, flags, mode);
    }) as AtomicFs["openSync"],
  };
  const ownership = await OwnershipRecord.takeOver({
    stateDir,
    runtimeDir: workDir,
    ifnamePrefix: "dfake",
    platform: rig.platform,
    log: createLogger({ write: () => undefined }),
    fs: faulty,
    clock,
  });
  const d = await startOneGatewayDaemon(root, rig, { ownership });
  const { control } = d;
  const heard: ConnectionEvent[] = [];
  control.subscribe((e) => heard.push(e));

  broken = true;
  const answer = await connectOneGateway(d);
  assert.equal(answer.crashProtection?.inForce, false, "connect's answer says a crash now lifts the kill switch");
  assert.deepEqual(
    answer.crashProtection.failedCopies.map((c) => [c.path, c.code]),
    [
      [join(stateDir, OWNERSHIP_FILE), "ENOSPC"],
      [join(workDir, OWNERSHIP_FILE), "EIO"],
    ],
  );
  assert.equal(control.status().daemon.recovery.crashProtection?.inForce, false, "status says so");
  const lost = heard.find((e) => e.type === "crash-protection");
  assert.ok(lost?.type === "crash-protection" && !lost.inForce, "an event says so");
  assert.match(lost.detail, /ENOSPC.*EIO/);

  // The disk is freed: the next retry writes the intent and the report clears.
  broken = false;
  await clock.advance(RECORD_RETRY_FIRST_MS * 2);
  assert.deepEqual(control.status().daemon.recovery.crashProtection, {
    inForce: true,
    failedCopies: [],
    retries: 0,
    nextRetryAt: null,
  });
  assert.ok(
    heard.some((e) => e.type === "crash-protection" && e.inForce),
    "an event says it is back",
  );
  await control.shutdown();
  ownership.close();
});
