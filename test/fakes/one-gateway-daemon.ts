/**
 * The real daemon on a fake platform with one WireGuard gateway, for unit tests of what a user sees through the
 * control facade: the folders and files it needs under the test's own root, a fake clock and world, and the daemon
 * warmed up (its first network look done) and ready for a connect.
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseConfig } from "../../main/core/config/schema.ts";
import type { Platform } from "../../native/platform/platform.ts";
import { Daemon, type DaemonDeps } from "../../main/agent/daemon.ts";
import type { ControlFacade } from "../../main/agent/control-facade.ts";
import { createLogger } from "../../main/agent/log.ts";
import { FakeClock } from "./fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber } from "./fake-platform.ts";

export interface OneGatewayDaemon {
  control: ControlFacade;
  clock: FakeClock;
  world: FakeWorld;
  stateDir: string;
  workDir: string;
  resolvConf: string;
}

/** The folders of a daemon under `root` (created), and its clock, world and platform, before it starts. */
export function oneGatewayRig(root: string): {
  clock: FakeClock;
  world: FakeWorld;
  platform: Platform;
  stateDir: string;
  workDir: string;
  resolvConf: string;
} {
  mkdirSync(root, { recursive: true });
  const stateDir = join(root, "state");
  const workDir = join(root, "work");
  mkdirSync(stateDir, { recursive: true });
  mkdirSync(workDir, { recursive: true });
  const resolvConf = join(root, "resolv.conf");
  writeFileSync(resolvConf, "nameserver 198.18.53.2\n");
  const clock = new FakeClock();
  const world = new FakeWorld(clock, { gw1: {} });
  return { clock, world, platform: fakePlatform(world), stateDir, workDir, resolvConf };
}

/** Starts the daemon of a rig (with `deps` such as an ownership record) and warms it up. */
export async function startOneGatewayDaemon(
  root: string,
  rig: ReturnType<typeof oneGatewayRig>,
  deps: Partial<DaemonDeps> = {},
): Promise<OneGatewayDaemon> {
  const keyFile = join(root, "wg.key");
  writeFileSync(keyFile, "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=\n", { mode: 0o600 });
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
  const { clock, world, platform, stateDir, workDir, resolvConf } = rig;
  const { control } = new Daemon(
    {
      config: parsed.config,
      configPath: join(root, "client.json"),
      workDir,
      stateDir,
      resolvConf,
      ifnamePrefix: "dfake",
      log: createLogger({ write: () => undefined }),
      version: "0.0.0-test",
      ownGroup: 64950,
    },
    { platform, clock, finder: fakeFinder(world), startMonitor: fakeProber(world), ...deps },
  );
  control.refreshKillSwitch();
  control.warmUp();
  await clock.advance(100);
  return { control, clock, world, stateDir, workDir, resolvConf };
}

/** A connect that waits for its answer and for the tunnel to come up. */
export async function connectOneGateway(d: OneGatewayDaemon): ReturnType<ControlFacade["connect"]> {
  const pending = d.control.connect();
  await d.clock.advance(500);
  const answer = await pending;
  assert.ok(await d.clock.until(() => d.control.status().state === "connected", 10_000), "the tunnel comes up");
  return answer;
}
