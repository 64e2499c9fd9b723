/**
 * Crash protection as a user sees it, on the real daemon with a fake platform: with no disk that takes the connect
 * intent, `connect` still connects, and its answer, status, an event and telemetry's event
 * say that a crash now would lift the kill switch (telemetry gets the same event through ConnectionEvents.announce), with the files and the system's codes; once a retry writes the
 * intent, the report clears.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import { parseConfig } from "../core/config/schema.ts";
import type { ConnectionEvent } from "../core/connection/types.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber } from "../../test/fakes/fake-platform.ts";
import type { AtomicFs } from "../shared/atomic-write.ts";
import { Daemon } from "./daemon.ts";
import { createLogger } from "./log.ts";
import { OWNERSHIP_FILE, OwnershipRecord, RECORD_RETRY_FIRST_MS } from "./ownership.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-ownership-daemon-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

test("a-connect-whose-intent-no-disk-takes-connects-and-says-crash-protection-is-not-in-force-until-a-retry-writes-it", async () => {
  const keyFile = join(root, "wg.key");
  writeFileSync(keyFile, "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=\n", { mode: 0o600 });
  const resolvConf = join(root, "resolv.conf");
  writeFileSync(resolvConf, "nameserver 198.18.53.2\n");
  const parsed = parseConfig({
    version: 1,
    organisation: "example",
    identity: { wireguard: { privateKey: { file: keyFile } } },
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.vpn.example.com",
        address: "198.18.1.2",
        priority: 1,
        region: "eu",
        protocols: { wireguard: { publicKey: "A".repeat(43) + "=", tunnelAddress: "198.19.11.2/32" } },
      },
    ],
    protectedRoutes: ["198.19.0.0/24"],
    probe: { address: "198.19.0.1", port: 7 },
  });
  assert.ok(parsed.ok);
  const clock = new FakeClock();
  const world = new FakeWorld(clock, { gw1: {} });
  const stateDir = join(root, "state");
  const workDir = join(root, "work");
  mkdirSync(stateDir);
  mkdirSync(workDir);
  // Both disks refuse new files: the state disk is full, the runtime one failing.
  let broken = false;
  const faulty: AtomicFs = {
    ...fs,
    openSync: ((path: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode) => {
      const p = resolve(String(path));
      if (broken && flags === "wx" && p.endsWith(`.${OWNERSHIP_FILE}.${String(process.pid)}.tmp`))
        throw Object.assign(new Error(`${p.startsWith(stateDir) ? "ENOSPC" : "EIO"}: refused by the test`), {
          code: p.startsWith(stateDir) ? "ENOSPC" : "EIO",
        });
      return fs.openSync(path, flags, mode);
    }) as AtomicFs["openSync"],
  };
  const platform = fakePlatform(world);
  const log = createLogger({ write: () => undefined });
  const ownership = await OwnershipRecord.takeOver({
    stateDir,
    runtimeDir: workDir,
    ifnamePrefix: "dfake",
    platform,
    log,
    fs: faulty,
    clock,
  });
  const { control } = new Daemon(
    {
      config: parsed.config,
      configPath: join(root, "client.json"),
      workDir,
      stateDir,
      resolvConf,
      ifnamePrefix: "dfake",
      log,
      version: "0.0.0-test",
      ownGroup: 64950,
    },
    { platform, clock, finder: fakeFinder(world), startMonitor: fakeProber(world), ownership },
  );
  const heard: ConnectionEvent[] = [];
  control.subscribe((e) => heard.push(e));
  control.refreshKillSwitch();
  control.warmUp();
  await clock.advance(100);

  broken = true;
  const pending = control.connect();
  await clock.advance(500);
  const answer = await pending;
  assert.equal(answer.crashProtection?.inForce, false, "connect's answer says a crash now lifts the kill switch");
  assert.deepEqual(
    answer.crashProtection.failedCopies.map((c) => [c.path, c.code]),
    [
      [join(stateDir, OWNERSHIP_FILE), "ENOSPC"],
      [join(workDir, OWNERSHIP_FILE), "EIO"],
    ],
  );
  assert.ok(
    await clock.until(() => control.status().state === "connected", 10_000),
    "the tunnel comes up all the same",
  );
  const recovery = control.status().daemon.recovery;
  assert.equal(recovery.crashProtection?.inForce, false, "status says so");
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
