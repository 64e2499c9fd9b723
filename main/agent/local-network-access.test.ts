/**
 * Allow local network access in the real daemon on a fake platform: the connected networks a protected prefix
 * covers become throws in the protected table and kill-switch allowances on their own device, follow a move,
 * stay off where the setting is off, and fail closed (and reported) when they cannot be read.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DetourConfig } from "../core/config/schema.ts";
import { testConfig, writeTestKey, type TestConfigOptions } from "../../test/fakes/config.ts";
import { startDaemon, type DaemonRig } from "../../test/fakes/daemon-harness.ts";
import type { FakeWorld } from "../../test/fakes/fake-platform.ts";
import type { ControlFacade } from "./control-facade.ts";
import { LOCAL_NETWORKS_RECHECK_MS } from "./local-network-access.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-lan-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
const keyFile = writeTestKey(root);

/** Two gateways, no standby, and a split tunnel whose protected networks include two catch-all private ranges. */
function config(over: TestConfigOptions = {}): DetourConfig {
  return testConfig({
    keyFile,
    protectedRoutes: ["198.19.0.0/24", "172.16.0.0/12", "192.168.0.0/16"],
    standby: { mode: "off" },
    ...over,
  });
}

type Rig = DaemonRig;

/** The daemon started on a machine whose connected networks are `routes`. */
function rig(cfg: DetourConfig, routes: FakeWorld["connectedRoutes"]): Promise<Rig> {
  return startDaemon({
    root,
    config: cfg,
    gateways: { gw1: { connectMs: 80 }, gw2: { connectMs: 150 } },
    prepare: (world) => {
      world.connectedRoutes = routes;
    },
  });
}

function lan(r: Rig): NonNullable<ReturnType<ControlFacade["status"]>["localNetworks"]> {
  const s = r.control.status().localNetworks;
  assert.ok(s !== undefined, "status has localNetworks");
  return s;
}

async function connect(r: Rig): Promise<void> {
  void r.control.connect();
  assert.ok(await r.clock.until(() => r.control.status().state === "connected", 20_000), "connected");
  await r.clock.advance(50);
}

const HOME = [
  { prefix: "192.168.1.0/24", dev: "wlan0", bridge: false },
  { prefix: "172.17.0.0/16", dev: "docker0", bridge: true },
  { prefix: "10.9.0.0/24", dev: "wlan0", bridge: false },
];

test("the-home-lan-and-docker-stay-reachable-while-the-rest-of-the-protected-prefix-goes-through-the-tunnel", async () => {
  const r = await rig(config(), HOME);
  await connect(r);
  const s = lan(r);
  assert.equal(s.mode, "auto");
  assert.equal(s.enabled, true, "on by default for a split tunnel");
  assert.deepEqual(s.allowed, [
    { prefix: "172.17.0.0/16", dev: "docker0", kind: "bridge" },
    { prefix: "192.168.1.0/24", dev: "wlan0", kind: "connected" },
  ]);
  assert.deepEqual([...r.world.localThrows].sort(), ["172.17.0.0/16", "192.168.1.0/24"]);
  assert.ok(r.world.routes.has("172.16.0.0/12"), "the rest of 172.16.0.0/12 is routed into the tunnel");
  assert.deepEqual(r.world.killSwitch?.localNetworks, [
    { prefix: "172.17.0.0/16", dev: "docker0" },
    { prefix: "192.168.1.0/24", dev: "wlan0" },
  ]);
  assert.ok(r.world.backstop?.bypass.includes("172.17.0.0/16"), "the backstop does not undo the allowance");
  r.control.disconnect();
  await r.clock.advance(100);
  assert.deepEqual([...r.world.localThrows], [], "a disconnect takes the throws out with the routes");
  await r.control.shutdown();
});

test("with-the-setting-off-nothing-is-allowed-and-docker-goes-to-the-tunnel", async () => {
  const r = await rig(config({ localNetworkAccess: "off" }), HOME);
  await connect(r);
  const s = lan(r);
  assert.equal(s.enabled, false);
  assert.deepEqual(s.allowed, []);
  assert.deepEqual([...r.world.localThrows], []);
  assert.equal(r.world.killSwitch?.localNetworks, undefined);
  await r.control.shutdown();
});

test("a-full-tunnel-leaves-it-off-unless-configured-on", async () => {
  const full = await rig(config({ protectedRoutes: ["0.0.0.0/0"] }), HOME);
  await connect(full);
  assert.equal(lan(full).enabled, false, "auto is off for a full tunnel");
  assert.equal(full.world.killSwitch?.localNetworks, undefined);
  await full.control.shutdown();
  const on = await rig(config({ protectedRoutes: ["0.0.0.0/0"], localNetworkAccess: "on" }), HOME);
  await connect(on);
  assert.deepEqual(
    lan(on).allowed.map((n) => n.prefix),
    ["10.9.0.0/24", "172.17.0.0/16", "192.168.1.0/24"],
    "in a full tunnel every connected network is a protected one",
  );
  await on.control.shutdown();
});

test("a-move-allows-the-new-networks-lan-and-removes-the-old-ones-exception", async () => {
  const r = await rig(config(), [{ prefix: "192.168.1.0/24", dev: "wlan0", bridge: false }]);
  await connect(r);
  assert.deepEqual([...r.world.localThrows], ["192.168.1.0/24"]);
  const mon = r.world.netmon;
  assert.ok(mon !== null);
  r.world.connectedRoutes = [{ prefix: "172.20.10.0/28", dev: "usb0", bridge: false }];
  mon.change({
    at: r.clock.wall(),
    kind: "path-changed",
    initial: false,
    path: { dev: "usb0", gateway: "172.20.10.1", source: "172.20.10.2" },
    previous: { dev: "wlan0", gateway: "192.168.1.1", source: "192.168.1.7" },
    reason: "the route toward the gateways moved to usb0",
  });
  assert.ok(
    await r.clock.until(() => r.world.localThrows.has("172.20.10.0/28"), 5000),
    "the new network's subnet is thrown",
  );
  assert.ok(!r.world.localThrows.has("192.168.1.0/24"), "the old one's throw is gone");
  assert.deepEqual(r.world.killSwitch?.localNetworks, [{ prefix: "172.20.10.0/28", dev: "usb0" }]);
  const s = lan(r);
  assert.ok(s.changes >= 2 && s.changedAt !== null);
  await r.control.shutdown();
});

test("a-bridge-that-appears-later-is-allowed-at-the-next-look-without-a-path-change", async () => {
  const r = await rig(config(), []);
  await connect(r);
  assert.deepEqual(lan(r).allowed, []);
  r.world.connectedRoutes = [{ prefix: "172.18.0.0/16", dev: "br-4f2a9c1d0e11", bridge: true }];
  await r.clock.advance(LOCAL_NETWORKS_RECHECK_MS + 100);
  assert.deepEqual(r.world.killSwitch?.localNetworks, [{ prefix: "172.18.0.0/16", dev: "br-4f2a9c1d0e11" }]);
  assert.ok(r.world.localThrows.has("172.18.0.0/16"));
  await r.control.shutdown();
});

test("a-huge-or-dns-covering-connected-network-is-refused-and-shown", async () => {
  const r = await rig(config({ tunnelDns: { servers: ["192.168.7.53"] } }), [
    { prefix: "128.0.0.0/1", dev: "wlan0", bridge: false },
    { prefix: "192.168.7.0/24", dev: "eth0", bridge: false },
  ]);
  await connect(r);
  const s = lan(r);
  assert.deepEqual(s.allowed, []);
  assert.deepEqual(
    s.refused.map((n) => `${n.prefix} ${n.dev}`),
    ["128.0.0.0/1 wlan0", "192.168.7.0/24 eth0"],
  );
  assert.match(s.refused[1]?.reason ?? "", /192\.168\.7\.53/);
  assert.deepEqual([...r.world.localThrows], []);
  assert.equal(r.world.killSwitch?.localNetworks, undefined);
  await r.control.shutdown();
});

test("connected-networks-that-cannot-be-read-allow-none-and-say-why", async () => {
  const r = await rig(config(), HOME);
  await connect(r);
  assert.equal(lan(r).allowed.length, 2);
  r.world.connectedRoutes = null;
  await r.clock.advance(LOCAL_NETWORKS_RECHECK_MS + 100);
  const s = lan(r);
  assert.deepEqual(s.allowed, [], "fail closed");
  assert.match(s.lastError ?? "", /ip route show failed/);
  assert.equal(r.world.killSwitch?.localNetworks, undefined);
  assert.deepEqual([...r.world.localThrows], []);
  assert.ok(r.logs.some((l) => l.level === "error" && /connected networks could not be read/.test(l.msg)));
  await r.control.shutdown();
});

test("a-policy-that-turns-it-off-while-connected-takes-the-exceptions-out-at-once", async () => {
  const r = await rig(config(), HOME);
  await connect(r);
  assert.equal(r.world.localThrows.size, 2);
  r.control.reconfigure(config({ localNetworkAccess: "off" }));
  await r.clock.advance(100);
  assert.equal(lan(r).enabled, false);
  assert.deepEqual([...r.world.localThrows], [], "the throws are gone");
  assert.equal(r.world.killSwitch?.localNetworks, undefined, "and the kill switch's allowances");
  assert.equal(r.control.status().state, "connected", "the tunnel is kept");
  await r.control.shutdown();
});
