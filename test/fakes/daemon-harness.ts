/**
 * The real daemon (main/agent/daemon.ts) started on the fake platform, fake engines and a FakeClock, for unit tests
 * that assert what a user would notice: it records what subscribers heard and every log line, and leaves the
 * daemon warmed up with the kill switch in place, 50 ms after the start.
 */
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DetourConfig } from "../../main/core/config/schema.ts";
import type { ConnectionEvent } from "../../main/core/connection/types.ts";
import type { CandidateFinder } from "../../main/agent/candidate-refresh.ts";
import type { ControlFacade } from "../../main/agent/control-facade.ts";
import { Daemon } from "../../main/agent/daemon.ts";
import type { Logger } from "../../main/agent/log.ts";
import { FakeClock } from "./fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber, type GatewayScript } from "./fake-platform.ts";

export interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown> | undefined;
}

export interface DaemonRig {
  clock: FakeClock;
  world: FakeWorld;
  control: ControlFacade;
  /** The daemon's folder: its config path, work and state folders, and resolv.conf are in it. */
  dir: string;
  /** What subscribers heard, and the device carrying the protected networks when they heard it. */
  heard: { event: ConnectionEvent; routedVia: string | null }[];
  logs: LogLine[];
  state(): string;
  gateway(): string | null;
  /** Waits (on the fake clock, up to 20 s) until connected to `gw`; fails with the summary otherwise. */
  connected(gw: string): Promise<void>;
}

export interface DaemonRigOptions {
  /** A folder the test removes afterwards; the daemon's work and state folders go in a new folder inside it. */
  root: string;
  config: DetourConfig;
  /** How each gateway's engine behaves (fake-platform.ts). */
  gateways: Record<string, Partial<GatewayScript>>;
  /** How the daemon finds its candidates; default: the configured gateways as they are. */
  finder?: (world: FakeWorld) => CandidateFinder;
  /** Sets up the world before the daemon starts (connected routes, failures to inject, ...). */
  prepare?: (world: FakeWorld) => void;
  /** What the daemon's resolv.conf holds at the start; default: there is none. */
  resolvConf?: string;
  /** The control group the daemon lets through its kill switch; default: none. */
  ownGroup?: number;
}

export async function startDaemon(opts: DaemonRigOptions): Promise<DaemonRig> {
  const clock = new FakeClock();
  const world = new FakeWorld(clock, opts.gateways);
  opts.prepare?.(world);
  const logs: LogLine[] = [];
  const line =
    (level: string) =>
    (msg: string, fields?: Record<string, unknown>): void => {
      logs.push({ level, msg, fields });
    };
  const log: Logger = { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
  const dir = mkdtempSync(join(opts.root, "daemon-"));
  if (opts.resolvConf !== undefined) writeFileSync(join(dir, "resolv.conf"), opts.resolvConf);
  const { control } = new Daemon(
    {
      config: opts.config,
      configPath: join(dir, "client.json"),
      workDir: join(dir, "work"),
      stateDir: join(dir, "state"),
      resolvConf: join(dir, "resolv.conf"),
      ifnamePrefix: "dfake",
      log,
      version: "0.0.0-test",
      ownGroup: opts.ownGroup,
    },
    {
      platform: fakePlatform(world),
      clock,
      finder: (opts.finder ?? fakeFinder)(world),
      startMonitor: fakeProber(world),
    },
  );
  const heard: DaemonRig["heard"] = [];
  control.subscribe((event) => heard.push({ event, routedVia: world.routedVia() }));
  control.refreshKillSwitch();
  control.warmUp();
  await clock.advance(50);
  const r: DaemonRig = {
    clock,
    world,
    control,
    dir,
    heard,
    logs,
    state: () => control.status().state,
    gateway: () => control.status().gateway,
    connected: async (gw) => {
      assert.ok(
        await clock.until(() => r.state() === "connected" && r.gateway() === gw, 20_000),
        `connected to ${gw}; now ${JSON.stringify(control.status().summary)}`,
      );
    },
  };
  return r;
}
