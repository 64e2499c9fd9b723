/**
 * The captive monitor wired into the real daemon on a fake platform: a check at start that finds a portal says so in
 * status, and under lockdown the kill switch the platform is given carries detourd's own check and the sign-in
 * exception; a network change's check that answers normally closes it again.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { testConfig, writeTestKey } from "../../test/fakes/config.ts";
import type { KillSwitchRules } from "../core/killswitch.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber } from "../../test/fakes/fake-platform.ts";
import { Daemon } from "./daemon.ts";
import { createLogger } from "./log.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-captive-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

test("a-portal-found-at-start-shows-in-status-and-opens-the-kill-switchs-sign-in-exception", async () => {
  const keyFile = writeTestKey(root);
  const resolvConf = join(root, "resolv.conf");
  writeFileSync(resolvConf, "nameserver 198.18.53.2\n");
  const config = testConfig({
    keyFile,
    gateways: [1],
    lockdown: true,
    captive: { checkUrl: "http://198.18.204.1/generate_204" },
  });
  const clock = new FakeClock();
  const world = new FakeWorld(clock, { gw1: {} });
  let portal = true;
  const dir = join(root, "d1");
  mkdirSync(dir);
  const { control } = new Daemon(
    {
      config,
      configPath: join(dir, "client.json"),
      workDir: join(dir, "work"),
      stateDir: join(dir, "state"),
      resolvConf,
      ifnamePrefix: "dfake",
      log: createLogger({ write: () => undefined }),
      version: "0.0.0-test",
      ownGroup: 64950,
    },
    {
      platform: fakePlatform(world),
      clock,
      finder: fakeFinder(world),
      startMonitor: fakeProber(world),
      captiveProbe: {
        resolve: () => Promise.resolve([]),
        fetch: () =>
          Promise.resolve(
            portal
              ? { status: 302, location: "http://198.18.205.1/signin", bodyBytes: 0 }
              : { status: 204, location: null, bodyBytes: 0 },
          ),
      },
    },
  );
  control.refreshKillSwitch();
  control.warmUp();
  await clock.advance(200);
  const s = control.status();
  assert.equal(s.captive?.state, "sign-in-required");
  assert.equal(s.captive.portalUrl, "http://198.18.205.1/signin");
  const rules = JSON.parse(world.firewallTable ?? "null") as KillSwitchRules | null;
  assert.equal(rules?.mode, "blocking");
  assert.deepEqual(rules.checkAddresses, ["198.18.204.1"]);
  assert.deepEqual(rules.captiveException, { portalAddresses: ["198.18.205.1"], resolvers: ["198.18.53.2"] });

  portal = false;
  assert.equal((await control.captiveCheck("network-change"))?.kind, "open");
  await clock.advance(200);
  assert.equal(control.status().captive?.exception.closedReason, "signed in");
  const after = JSON.parse(world.firewallTable ?? "null") as KillSwitchRules | null;
  assert.equal(after?.captiveException, undefined, "the exception is gone from the kill switch");
  await control.shutdown();
});
