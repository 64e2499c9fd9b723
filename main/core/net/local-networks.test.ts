import assert from "node:assert/strict";
import { test } from "node:test";
import {
  deviceMatches,
  isBridgeName,
  localNetworkAccessEnabled,
  planLocalNetworks,
  samePlan,
  type ConnectedRoute,
} from "./local-networks.ts";

const TUNNELS = ["detour-*", "ipsec*"];

function plan(routes: ConnectedRoute[], protectedNetworks: string[], tunnelAddresses: string[] = []) {
  return planLocalNetworks({ routes, protectedNetworks, tunnelDevices: TUNNELS, tunnelAddresses });
}

test("a-docker-bridge-and-the-home-lan-under-protected-prefixes-are-allowed-on-their-own-devices", () => {
  const p = plan(
    [
      { prefix: "172.17.0.0/16", dev: "docker0", bridge: true },
      { prefix: "192.168.1.0/24", dev: "wlan0", bridge: false },
    ],
    ["172.16.0.0/12", "192.168.0.0/16"],
  );
  assert.deepEqual(p.allowed, [
    { prefix: "172.17.0.0/16", dev: "docker0", kind: "bridge" },
    { prefix: "192.168.1.0/24", dev: "wlan0", kind: "connected" },
  ]);
  assert.deepEqual(p.refused, []);
});

test("connected-networks-outside-every-protected-network-need-no-exception", () => {
  const p = plan([{ prefix: "192.168.1.0/24", dev: "wlan0", bridge: false }], ["10.0.0.0/8"]);
  assert.deepEqual(p, { allowed: [], refused: [] });
});

test("a-tunnel-devices-connected-route-is-never-a-local-network", () => {
  const p = plan(
    [
      { prefix: "172.20.0.0/24", dev: "detour-wg0", bridge: false },
      { prefix: "172.21.0.0/24", dev: "ipsec0", bridge: false },
      { prefix: "127.0.0.0/8", dev: "lo", bridge: false },
    ],
    ["172.16.0.0/12", "127.0.0.0/8"],
  );
  assert.deepEqual(p, { allowed: [], refused: [] });
});

test("a-huge-connected-route-is-refused-and-never-opens-everything", () => {
  for (const prefix of ["0.0.0.0/0", "10.0.0.0/7", "0.0.0.0/1"]) {
    const p = plan([{ prefix, dev: "wlan0", bridge: false }], ["0.0.0.0/0"]);
    assert.deepEqual(p.allowed, [], prefix);
    assert.equal(p.refused.length, 1, prefix);
    assert.match(p.refused[0]?.reason ?? "", /wider than \/8/);
  }
  // A /8 is the widest still taken (in a full tunnel, where it is inside the protected network).
  assert.equal(plan([{ prefix: "10.0.0.0/8", dev: "eth0", bridge: false }], ["0.0.0.0/0"]).allowed.length, 1);
});

test("a-connected-network-covering-the-tunnels-dns-or-probe-target-is-refused", () => {
  const p = plan(
    [
      { prefix: "10.1.0.0/16", dev: "wlan0", bridge: false },
      { prefix: "10.2.0.0/16", dev: "eth0", bridge: false },
    ],
    ["10.0.0.0/8"],
    ["10.1.2.53", "10.9.9.9"],
  );
  assert.deepEqual(p.allowed, [{ prefix: "10.2.0.0/16", dev: "eth0", kind: "connected" }]);
  assert.deepEqual(p.refused, [
    {
      prefix: "10.1.0.0/16",
      dev: "wlan0",
      kind: "connected",
      reason: "it covers 10.1.2.53, which is reached only through the tunnel",
    },
  ]);
});

test("a-connected-network-that-covers-a-whole-protected-network-is-refused", () => {
  const p = plan([{ prefix: "198.19.0.0/16", dev: "eth0", bridge: false }], ["198.19.0.0/24"]);
  assert.deepEqual(p.allowed, []);
  assert.match(p.refused[0]?.reason ?? "", /whole protected network 198\.19\.0\.0\/24/);
});

test("host-bits-are-cleared-and-ipv6-or-malformed-routes-are-ignored", () => {
  const p = plan(
    [
      { prefix: "172.17.0.1/16", dev: "docker0", bridge: true },
      { prefix: "fd00::/64", dev: "docker0", bridge: true },
      { prefix: "172.18.0.0", dev: "br-1", bridge: true },
      { prefix: "172.19.0.0/16", dev: "bad name", bridge: false },
    ],
    ["172.16.0.0/12"],
  );
  assert.deepEqual(p.allowed, [{ prefix: "172.17.0.0/16", dev: "docker0", kind: "bridge" }]);
});

test("the-setting-is-on-for-split-tunnels-off-for-full-tunnels-and-lockdown-unless-set", () => {
  assert.equal(localNetworkAccessEnabled({ mode: "auto", fullTunnel: false, lockdown: false }), true);
  assert.equal(localNetworkAccessEnabled({ mode: "auto", fullTunnel: true, lockdown: false }), false);
  assert.equal(localNetworkAccessEnabled({ mode: "auto", fullTunnel: false, lockdown: true }), false);
  assert.equal(localNetworkAccessEnabled({ mode: "on", fullTunnel: true, lockdown: true }), true);
  assert.equal(localNetworkAccessEnabled({ mode: "off", fullTunnel: false, lockdown: false }), false);
});

test("bridges-are-recognised-by-name-and-patterns-match-devices", () => {
  for (const d of ["docker0", "br-4f2a9c1d0e11", "virbr0", "cni0", "podman0", "cni-podman0", "lxdbr0"])
    assert.ok(isBridgeName(d), d);
  for (const d of ["eth0", "wlan0", "bridge", "br0x"]) assert.ok(!isBridgeName(d), d);
  assert.ok(deviceMatches("detour-*", "detour-wg1"));
  assert.ok(!deviceMatches("detour-wg1", "detour-wg10"));
});

test("plans-compare-equal-exactly-when-they-allow-and-refuse-the-same", () => {
  const a = plan([{ prefix: "172.17.0.0/16", dev: "docker0", bridge: true }], ["172.16.0.0/12"]);
  const b = plan([{ prefix: "172.17.0.0/16", dev: "docker0", bridge: true }], ["172.16.0.0/12"]);
  const c = plan([{ prefix: "172.18.0.0/16", dev: "docker0", bridge: true }], ["172.16.0.0/12"]);
  assert.ok(samePlan(a, b));
  assert.ok(!samePlan(a, c));
});

test("a-network-inside-one-of-the-organisations-own-protected-networks-is-refused-only-catch-alls-give-way", () => {
  // TunnelCrack's LocalNet: a hostile network hands out part of the intranet's addresses as its own subnet
  const p = plan(
    [
      { prefix: "10.20.5.0/24", dev: "wlan0", bridge: false },
      { prefix: "172.17.0.0/16", dev: "docker0", bridge: true },
    ],
    ["10.20.0.0/16", "172.16.0.0/12"],
  );
  assert.deepEqual(p.allowed, [{ prefix: "172.17.0.0/16", dev: "docker0", kind: "bridge" }]);
  assert.equal(p.refused.length, 1);
  assert.match(p.refused[0]?.reason ?? "", /inside the protected network 10\.20\.0\.0\/16, which is not a catch-all/);
  // inside a catch-all and a specific network at once: the specific one wins
  const q = plan([{ prefix: "172.20.1.0/24", dev: "eth0", bridge: false }], ["172.16.0.0/12", "172.20.0.0/16"]);
  assert.deepEqual(q.allowed, []);
  // a full tunnel's 0.0.0.0/0 is a catch-all
  assert.equal(plan([{ prefix: "198.51.100.0/24", dev: "eth0", bridge: false }], ["0.0.0.0/0"]).allowed.length, 1);
});
