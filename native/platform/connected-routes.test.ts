import assert from "node:assert/strict";
import { test } from "node:test";
import { parseBridgeNames, parseConnectedRoutes } from "./connected-routes.linux.ts";

test("only-the-kernels-connected-routes-count-never-a-route-via-a-router", () => {
  const json = JSON.stringify([
    { dst: "default", gateway: "192.168.1.1", dev: "wlan0", protocol: "dhcp", flags: [] },
    { dst: "10.0.0.0/8", gateway: "192.168.1.1", dev: "wlan0", protocol: "static", flags: [] },
    { dst: "192.168.1.0/24", dev: "wlan0", protocol: "kernel", scope: "link", prefsrc: "192.168.1.7", flags: [] },
    { dst: "172.17.0.0/16", dev: "docker0", protocol: "kernel", scope: "link", prefsrc: "172.17.0.1", flags: [] },
    { dst: "192.168.122.0/24", dev: "mybr", protocol: "kernel", scope: "link", flags: [] },
    { dst: "10.99.0.0/24", dev: "eth1", protocol: "kernel", scope: "link", flags: ["linkdown"] },
    { dst: "10.98.0.0/24", dev: "eth2", protocol: "static", scope: "link", flags: [] },
    { type: "blackhole", dst: "10.97.0.0/24", protocol: "kernel", scope: "link", dev: "lo", flags: [] },
    { dst: "10.96.0.5", dev: "ptp0", protocol: "kernel", scope: "link", flags: [] },
  ]);
  assert.deepEqual(parseConnectedRoutes(json, new Set(["mybr"])), [
    { prefix: "192.168.1.0/24", dev: "wlan0", bridge: false },
    { prefix: "172.17.0.0/16", dev: "docker0", bridge: true },
    { prefix: "192.168.122.0/24", dev: "mybr", bridge: true },
    { prefix: "10.96.0.5/32", dev: "ptp0", bridge: false },
  ]);
});

test("output-that-is-not-a-list-is-an-error-not-an-empty-network", () => {
  assert.throws(() => parseConnectedRoutes("{}", new Set()), /expected a list/);
  assert.throws(() => parseConnectedRoutes("[", new Set()));
  assert.deepEqual(parseConnectedRoutes("", new Set()), []);
  assert.deepEqual(
    [...parseBridgeNames(JSON.stringify([{ ifname: "docker0" }, { ifname: "br-1" }, {}]))],
    ["docker0", "br-1"],
  );
});
