/**
 * detourd's exit when things go wrong: every shutdown step failing (or hanging) in turn, the rest still running and
 * the kill switch step always last; then the real daemon on the fake platform with its steps made to fail.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DetourConfig } from "../core/config/schema.ts";
import { testConfig, writeTestKey } from "../../test/fakes/config.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber, type PlatformStep } from "../../test/fakes/fake-platform.ts";
import { Daemon } from "./daemon.ts";
import type { Logger } from "./log.ts";
import { runShutdown, type ShutdownStep } from "./shutdown.ts";

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
/** The daemon tests' error lines: what a failing step reports. */
const errors: string[] = [];
const recording: Logger = {
  ...quiet,
  error: (msg) => {
    errors.push(msg);
  },
};

const root = mkdtempSync(join(tmpdir(), "detourd-shutdown-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

const NAMES = ["spare", "drill", "disconnect", "legs", "timers", "routes", "dns", "telemetry"];

for (const broken of NAMES) {
  for (const how of ["throws", "rejects", "hangs"] as const) {
    test(`a-shutdown-step-that-${how}-(${broken})-skips-nothing-and-the-kill-switch-step-runs-last`, async () => {
      const ran: string[] = [];
      const steps: ShutdownStep[] = NAMES.map((name) => ({
        name,
        budgetMs: 50,
        run: (): void | Promise<void> => {
          ran.push(name);
          if (name !== broken) return;
          if (how === "throws") throw new Error(`${name} broke`);
          if (how === "rejects") return Promise.reject(new Error(`${name} broke`));
          return new Promise<void>(() => undefined);
        },
      }));
      const report = await runShutdown(
        steps,
        {
          name: "kill switch",
          budgetMs: 50,
          run: () => {
            ran.push("kill switch");
          },
        },
        quiet,
      );
      assert.deepEqual(ran, [...NAMES, "kill switch"], "every step ran, the kill switch last");
      assert.deepEqual(
        report.failed.map((f) => f.step),
        [broken],
        "the broken step is reported",
      );
      if (how === "hangs") assert.match(report.failed[0]?.error ?? "", /did not answer within 50 ms/);
    });
  }
}

test("a-failing-kill-switch-step-is-reported-too", async () => {
  const report = await runShutdown(
    [],
    {
      name: "kill switch",
      budgetMs: 50,
      run: () => Promise.reject(new Error("nft failed")),
    },
    quiet,
  );
  assert.deepEqual(report.failed, [{ step: "kill switch", error: "nft failed" }]);
});

// The real daemon on the fake platform: each of its host steps fails in turn.

const keyFile = writeTestKey(root);

function config(lockdown: boolean): DetourConfig {
  return testConfig({ keyFile, tunnelDns: { servers: ["198.19.0.53"] }, lockdown });
}

let rigs = 0;

async function connectedDaemon(lockdown: boolean): Promise<{ world: FakeWorld; daemon: Daemon; clock: FakeClock }> {
  const clock = new FakeClock();
  const world = new FakeWorld(clock, { gw1: { connectMs: 50 }, gw2: { connectMs: 80 } });
  const dir = join(root, `d${String(++rigs)}`);
  mkdirSync(dir);
  const daemon = new Daemon(
    {
      config: config(lockdown),
      configPath: join(dir, "client.json"),
      workDir: join(dir, "work"),
      stateDir: join(dir, "state"),
      resolvConf: join(dir, "resolv.conf"),
      ifnamePrefix: "dfake",
      log: recording,
      version: "0.0.0-test",
    },
    { platform: fakePlatform(world), clock, finder: fakeFinder(world), startMonitor: fakeProber(world) },
  );
  daemon.control.refreshKillSwitch();
  daemon.control.warmUp();
  void daemon.control.connect();
  assert.ok(
    await clock.until(() => daemon.control.status().state === "connected" && world.dnsServers !== null, 20_000),
    "connected with the tunnel's DNS",
  );
  return { world, daemon, clock };
}

for (const failing of ["engine.stop", "routes.clear", "dns.restore"] satisfies PlatformStep[]) {
  test(`shutdown-with-a-failing-${failing}-still-runs-every-other-step-and-removes-the-kill-switch-last`, async () => {
    const { world, daemon } = await connectedDaemon(false);
    world.failing.add(failing);
    const report = await daemon.control.shutdown();
    const steps = world.calls.map((c) => `${c.step} ${c.detail}`.trim());
    if (failing === "engine.stop")
      assert.ok(
        errors.some((e) => e === "leg stop failed"),
        `the failed engine stop is reported: ${errors.join(" | ")}`,
      );
    else assert.ok(report.failed.length > 0, `the failure of ${failing} is reported: ${JSON.stringify(report)}`);
    // The kill switch's removal is its table, then its routing backstop: both after every other step.
    assert.deepEqual(
      steps.slice(-2),
      ["firewall.killSwitch off", "firewall.backstop off"],
      `the kill switch goes last: ${steps.slice(-6).join(" | ")}`,
    );
    assert.equal(world.killSwitch, null, "and it is gone");
    if (failing !== "routes.clear") assert.equal(world.routes.size, 0, "the protected routes were still cleared");
    if (failing !== "dns.restore") assert.equal(world.dnsServers, null, "resolv.conf was still restored");
    else
      assert.match(
        daemon.control.status().daemon.recovery.dnsRestoreError ?? "",
        /dns\.restore failed/,
        "a resolv.conf that could not be restored shows in status",
      );
    if (failing !== "engine.stop")
      assert.ok(
        steps.some((s) => s.startsWith("engine.stop")),
        "engines were stopped",
      );
    assert.deepEqual(report.ran.at(-1), "removing the kill switch");
  });
}

test("shutdown-under-lockdown-keeps-the-blocking-kill-switch-even-when-other-steps-fail", async () => {
  const { world, daemon } = await connectedDaemon(true);
  world.failing.add("routes.clear");
  world.failing.add("dns.restore");
  const report = await daemon.control.shutdown();
  assert.equal(report.ran.at(-1), "keeping the kill switch (lockdown)");
  assert.equal(world.killSwitch?.mode, "blocking", "the host stays fail-closed after detourd exits");
  assert.deepEqual(
    report.failed.map((f) => f.step),
    ["clearing the protected routes", "restoring resolv.conf"],
  );
});
