import assert from "node:assert/strict";
import { test } from "node:test";
import { parseLocalNetworks } from "./local-networks.linux.ts";

test("every-address-but-loopback-gives-its-network-with-its-device", () => {
  const json = JSON.stringify([
    { ifname: "lo", addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8, scope: "host" }] },
    {
      ifname: "wlan0",
      addr_info: [
        { family: "inet", local: "192.168.1.7", prefixlen: 24, scope: "global" },
        { family: "inet6", local: "2001:db8:1::7", prefixlen: 64, scope: "global" },
        { family: "inet6", local: "fe80::1", prefixlen: 64, scope: "link" },
      ],
    },
    { ifname: "dummy0" },
  ]);
  assert.deepEqual(parseLocalNetworks(json), [
    { dev: "wlan0", prefix: "192.168.1.7/24" },
    { dev: "wlan0", prefix: "2001:db8:1::7/64" },
    { dev: "wlan0", prefix: "fe80::1/64" },
  ]);
});

test("output-that-is-not-a-list-is-an-error-not-an-empty-network", () => {
  assert.throws(() => parseLocalNetworks("{}"), /expected a list/);
  assert.throws(() => parseLocalNetworks("["));
});
