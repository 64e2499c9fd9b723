/**
 * The lockdown state detourd records for the early-boot step (the real daemon on a fake platform), and the early
 * step itself with a fake kill-switch apply: what a boot under lockdown finds, also when the file is damaged.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DetourConfig } from "../core/config/schema.ts";
import { testConfig } from "../../test/fakes/config.ts";
import type { KillSwitchRules } from "../core/killswitch.ts";
import { EARLY_BLOCK_REPORT_FILE, LOCKDOWN_STATE_FILE } from "../core/lockdown-state.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber } from "../../test/fakes/fake-platform.ts";
import { Daemon } from "./daemon.ts";
import { earlyBlock } from "./early-block.ts";
import { currentBootId } from "./lockdown-state-store.ts";
import type { Logger } from "./log.ts";

const root = mkdtempSync(join(tmpdir(), "detour-lockdown-state-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
const quiet = (): void => undefined;
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet };
let n = 0;

/** One AnyConnect gateway and no identity: nothing here connects. */
function config(lockdown: boolean, protectedRoutes = ["198.19.0.0/24"]): DetourConfig {
  return testConfig({
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.vpn.example.com",
        address: "198.18.1.2",
        priority: 1,
        region: "eu",
        protocols: { anyconnect: { pin: `pin-sha256:${"B".repeat(43)}=` } },
      },
    ],
    protectedRoutes,
    lockdown,
  });
}

function daemon(cfg: DetourConfig, stateDir: string): Daemon {
  const clock = new FakeClock();
  const world = new FakeWorld(clock, {});
  const dir = join(root, `d${String(++n)}`);
  return new Daemon(
    {
      config: cfg,
      configPath: join(dir, "client.json"),
      workDir: join(dir, "work"),
      stateDir,
      resolvConf: join(dir, "resolv.conf"),
      ifnamePrefix: "dfake",
      log,
      version: "0.0.0-test",
    },
    { platform: fakePlatform(world), clock, finder: fakeFinder(world), startMonitor: fakeProber(world) },
  );
}

function recorded(stateDir: string): unknown {
  return JSON.parse(readFileSync(join(stateDir, LOCKDOWN_STATE_FILE), "utf8"));
}

/** The early step against a state folder, with the rules it applied (null: it applied nothing). */
async function boot(stateDir: string): Promise<{ applied: KillSwitchRules | null; failClosed: boolean }> {
  let applied: KillSwitchRules | null = null;
  const d = await earlyBlock({
    statePath: join(stateDir, LOCKDOWN_STATE_FILE),
    apply: (rules) => {
      applied = rules;
      return Promise.resolve();
    },
    log,
  });
  return { applied, failClosed: d.action === "block" && d.failClosed };
}

test("detourd-records-lockdown-and-the-protected-networks-at-start-and-on-every-change", async () => {
  const stateDir = join(root, "s1");
  const { control } = daemon(config(true), stateDir);
  assert.deepEqual(recorded(stateDir), {
    format: "detour-lockdown-state/1",
    lockdown: true,
    protectedNetworks: ["198.19.0.0/24"],
    tunnelDevices: ["dfake-*", "ipsec*"],
  });
  assert.deepEqual(control.status().lockdownState, {
    path: join(stateDir, LOCKDOWN_STATE_FILE),
    lockdown: true,
    error: null,
    bootBlock: null,
  });
  const locked = await boot(stateDir);
  assert.equal(locked.applied?.mode, "blocking", "the next boot blocks before the network comes up");
  assert.deepEqual(locked.applied.protectedNetworks, ["198.19.0.0/24"]);

  control.reconfigure(config(true, ["198.19.0.0/16"]));
  assert.deepEqual((recorded(stateDir) as { protectedNetworks: string[] }).protectedNetworks, ["198.19.0.0/16"]);
  control.reconfigure(config(false, ["198.19.0.0/16"]));
  assert.equal((recorded(stateDir) as { lockdown: boolean }).lockdown, false);
  assert.equal(control.status().lockdownState.lockdown, false);
  assert.deepEqual(await boot(stateDir), { applied: null, failClosed: false }, "lockdown off: nothing is blocked");
  await control.shutdown();
});

test("a-lockdown-state-that-cannot-be-written-is-reported-in-status", async () => {
  const stateDir = join(root, "s2");
  // A folder where the file should be: the atomic rename over it fails, as on a read-only or broken disk.
  mkdirSync(join(stateDir, LOCKDOWN_STATE_FILE), { recursive: true });
  const { control } = daemon(config(true), stateDir);
  const s = control.status().lockdownState;
  assert.equal(s.lockdown, null, "nothing recorded");
  assert.match(s.error ?? "", /cannot write .*lockdown-state\.json/);
  const b = await boot(stateDir);
  assert.ok(b.failClosed, "the unreadable state fails closed at boot");
  await control.shutdown();
});

test("a-damaged-state-file-fails-closed-and-a-missing-one-blocks-nothing", async () => {
  const stateDir = join(root, "s3");
  mkdirSync(stateDir);
  assert.deepEqual(await boot(stateDir), { applied: null, failClosed: false });
  writeFileSync(join(stateDir, LOCKDOWN_STATE_FILE), '{"format":"detour-lockdown-state/1","lockd');
  const b = await boot(stateDir);
  assert.ok(b.failClosed);
  assert.deepEqual(b.applied?.protectedNetworks, ["0.0.0.0/0"]);
  assert.equal(b.applied.blockUnderlay, true);
});

test("a-block-that-cannot-be-applied-rejects-so-the-unit-fails", async () => {
  const stateDir = join(root, "s4");
  const { control } = daemon(config(true), stateDir);
  await assert.rejects(
    earlyBlock({
      statePath: join(stateDir, LOCKDOWN_STATE_FILE),
      apply: () => Promise.reject(new Error("nft: Operation not permitted")),
      log,
    }),
    /Operation not permitted/,
  );
  await control.shutdown();
});

test("detourd-shows-what-the-early-step-did-this-boot-and-ignores-an-earlier-boots-report", async () => {
  const stateDir = join(root, "s5");
  mkdirSync(stateDir);
  const report = {
    bootId: currentBootId(),
    at: "2026-12-07T06:00:00.000Z",
    action: "failed",
    reason: "the blocking table could not be applied: nft: Operation not permitted",
    failClosed: false,
  };
  writeFileSync(join(stateDir, EARLY_BLOCK_REPORT_FILE), JSON.stringify(report));
  const thisBoot = daemon(config(true), stateDir);
  assert.deepEqual(
    thisBoot.control.status().lockdownState.bootBlock,
    { at: report.at, action: report.action, reason: report.reason, failClosed: false },
    "a failed block at boot is reported",
  );
  await thisBoot.control.shutdown();
  writeFileSync(join(stateDir, EARLY_BLOCK_REPORT_FILE), JSON.stringify({ ...report, bootId: "another-boot" }));
  const later = daemon(config(true), stateDir);
  assert.equal(later.control.status().lockdownState.bootBlock, null);
  await later.control.shutdown();
});
