/**
 * The path MTU guard on a fake path: a new leg's device is lowered to what crosses and reported, a black hole under
 * the active leg is found by the periodic check and fails it over, the MSS clamp goes in with the first active leg
 * (its failure reported) and out at exit, and a leg that stopped meanwhile is left alone.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Leg, PathMtuEvent } from "../core/connection/types.ts";
import type { TunnelUp } from "../core/tunnel/engine-types.ts";
import type { PlatformMtu } from "../../native/platform/platform.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import type { Logger } from "./log.ts";
import { PMTU_RECHECK_MS, PathMtuGuard } from "./path-mtu.ts";

const LEG: Leg = { id: "L1", gateway: "gw1", kind: "wireguard" };

function up(mtu: number | null): TunnelUp {
  return {
    config: { ifname: "dt-l1", addresses: ["198.19.11.2/32"], routes: [], dns: [], mtu },
    timings: { spawnedAt: 0, handshakeAt: 0, firstReplyAt: 0, firstReplyRttMs: 20 },
    detail: {},
  };
}

interface Rig {
  clock: FakeClock;
  guard: PathMtuGuard;
  /** The largest size the fake path carries (through a device whose MTU is at least that). */
  path: { limit: number; clampFails: boolean };
  devices: Map<string, number>;
  clamps: (readonly string[] | null)[];
  events: PathMtuEvent[];
  blackHoles: { legId: string; reason: string }[];
  tracked: Promise<unknown>[];
}

function rig(limit: number): Rig {
  const clock = new FakeClock();
  const path = { limit, clampFails: false };
  const devices = new Map<string, number>();
  const clamps: (readonly string[] | null)[] = [];
  const events: PathMtuEvent[] = [];
  const blackHoles: { legId: string; reason: string }[] = [];
  const tracked: Promise<unknown>[] = [];
  const platform: PlatformMtu = {
    probeSize: (p) => Promise.resolve(p.size <= path.limit && p.size <= (devices.get(p.ifname) ?? Infinity)),
    setLinkMtu: (ifname, mtu) => {
      devices.set(ifname, mtu);
      return Promise.resolve();
    },
    applyMssClamp: (d) => {
      if (path.clampFails) return Promise.reject(new Error("nft: Operation not permitted"));
      clamps.push(d);
      return Promise.resolve();
    },
  };
  const quiet = (): void => undefined;
  const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet };
  const guard = new PathMtuGuard(
    {
      probeTarget: () => "198.19.0.1",
      ifnamePrefix: "dt",
      clock,
      log,
      track: (p) => tracked.push(p),
      report: (e) => events.push(e),
      blackHole: (legId, reason) => blackHoles.push({ legId, reason }),
    },
    platform,
  );
  return { clock, guard, path, devices, clamps, events, blackHoles, tracked };
}

test("a-new-leg-behind-a-smaller-hop-is-lowered-to-what-crosses-and-reported", async () => {
  const r = rig(1340);
  const v = await r.guard.checkNew(LEG, up(1440), 20, () => true);
  assert.deepEqual(v, { kind: "lowered", from: 1440, mtu: 1340 });
  assert.equal(r.devices.get("dt-l1"), 1340, "the device's MTU was lowered");
  assert.equal(r.guard.mtuOf("L1"), 1340);
  assert.deepEqual(
    r.events.map((e) => [e.change, e.from, e.to, e.gateway, e.protocol]),
    [["lowered", 1440, 1340, "gw1", "wireguard"]],
  );
  assert.equal(r.guard.status().lowered, 1);
});

test("a-leg-whose-path-carries-its-mtu-is-confirmed-without-a-report", async () => {
  const r = rig(1500);
  assert.deepEqual(await r.guard.checkNew(LEG, up(1440), 20, () => true), { kind: "ok", mtu: 1440 });
  assert.deepEqual(r.events, []);
  assert.equal(r.devices.size, 0, "nothing was changed");
});

test("a-leg-stopped-during-its-check-is-neither-changed-nor-reported", async () => {
  const r = rig(1340);
  await r.guard.checkNew(LEG, up(1440), 20, () => false);
  assert.equal(r.devices.size, 0);
  assert.deepEqual(r.events, []);
});

test("the-active-leg-is-rechecked-a-smaller-hop-lowers-it-and-a-black-hole-fails-it-over", async () => {
  const r = rig(1500);
  await r.guard.checkNew(LEG, up(1440), 20, () => true);
  r.guard.watch(LEG, up(1440), 20);
  await r.clock.settle();
  assert.deepEqual(r.clamps, [["dt-*", "ipsec*"]], "the MSS clamp covers detourd's devices and kernel-libipsec's");
  assert.equal(r.guard.status().mssClamp, "in-force");

  r.path.limit = 1380; // the path changes under the connected tunnel
  await r.clock.advance(PMTU_RECHECK_MS);
  await Promise.all(r.tracked);
  assert.equal(r.devices.get("dt-l1"), 1380);
  assert.equal(r.guard.status().mtu, 1380);
  assert.equal(r.blackHoles.length, 0);

  r.path.limit = 1200; // nothing usable crosses any more
  await r.clock.advance(PMTU_RECHECK_MS);
  await Promise.all(r.tracked);
  assert.equal(r.blackHoles.length, 1);
  assert.equal(r.blackHoles[0]?.legId, "L1");
  assert.match(JSON.stringify(r.blackHoles), /path MTU black hole/);
  assert.deepEqual(
    r.events.map((e) => e.change),
    ["lowered", "black-hole"],
  );
  assert.equal(r.guard.status().blackHoles, 1);

  await r.guard.shutdown();
  assert.deepEqual(r.clamps.at(-1), null, "the clamp is removed at exit");
  assert.equal(r.guard.status().mssClamp, "off");
});

test("a-standby-or-stopped-leg-is-not-rechecked", async () => {
  const r = rig(1500);
  r.guard.watch(LEG, up(1440), 20);
  r.guard.unwatch("L2"); // another leg's monitor stopping changes nothing
  r.path.limit = 1300;
  r.guard.forget("L1");
  await r.clock.advance(3 * PMTU_RECHECK_MS);
  await Promise.all(r.tracked);
  assert.equal(r.devices.size, 0);
  assert.deepEqual(r.events, []);
});

test("a-clamp-that-cannot-be-applied-is-reported-and-retried", async () => {
  const r = rig(1500);
  r.path.clampFails = true;
  r.guard.watch(LEG, up(1440), 20);
  await Promise.all(r.tracked);
  await r.clock.settle();
  assert.equal(r.guard.status().mssClamp, "failed");
  assert.match(r.guard.status().lastError ?? "", /Operation not permitted/);
  assert.deepEqual(
    r.events.map((e) => e.change),
    ["clamp-failed"],
  );
  r.path.clampFails = false;
  await r.clock.advance(PMTU_RECHECK_MS);
  await Promise.all(r.tracked);
  await r.clock.settle();
  assert.equal(r.guard.status().mssClamp, "in-force", "the next check puts it in force");
  assert.equal(r.guard.status().lastError, null);
});

test("a-probe-that-cannot-run-changes-nothing-fails-nothing-and-says-why", async () => {
  const r = rig(1340);
  const broken = new PathMtuGuard(
    {
      probeTarget: () => "198.19.0.1",
      ifnamePrefix: "dt",
      clock: r.clock,
      log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
      track: (p) => r.tracked.push(p),
      report: (e) => r.events.push(e),
      blackHole: (legId, reason) => r.blackHoles.push({ legId, reason }),
    },
    {
      probeSize: () => {
        throw new Error("ping: not found");
      },
      setLinkMtu: () => Promise.resolve(),
      applyMssClamp: () => Promise.resolve(),
    },
  );
  assert.equal(await broken.checkNew(LEG, up(1440), 20, () => true), null);
  assert.match(broken.status().lastError ?? "", /ping: not found/);
  assert.deepEqual(r.events, []);
});

test("an-idle-tunnel-is-not-rechecked-and-the-first-traffic-after-a-long-idle-spell-rechecks-at-once", async () => {
  const r = rig(1500);
  r.guard.watch(LEG, up(1440), 20);
  r.guard.setPace("slow");
  r.path.limit = 1300; // the path shrinks while idle: nobody sends, so nobody is hurt yet
  await r.clock.advance(6 * PMTU_RECHECK_MS);
  await Promise.all(r.tracked);
  assert.equal(r.devices.size, 0, "no full-size echoes while the tunnel is idle");
  const probes = r.tracked.length;
  r.guard.setPace("fast");
  await r.clock.advance(0);
  await Promise.all(r.tracked);
  assert.ok(r.tracked.length > probes, "traffic again after a long idle spell: checked at once");
  assert.equal(r.devices.get("dt-l1"), 1300, "and the smaller hop found");
});
