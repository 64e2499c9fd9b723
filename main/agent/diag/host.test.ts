import assert from "node:assert/strict";
import { test } from "node:test";
import { interfacesOf } from "./host.ts";

test("interfaces-in-a-bundle-say-name-state-and-addresses-as-ip-reports-them", () => {
  const ipJson = [
    {
      ifindex: 1,
      ifname: "lo",
      flags: ["LOOPBACK", "UP", "LOWER_UP"],
      mtu: 65536,
      operstate: "UNKNOWN",
      link_type: "loopback",
      address: "00:00:00:00:00:00",
      addr_info: [
        { family: "inet", local: "127.0.0.1", prefixlen: 8 },
        { family: "inet6", local: "::1", prefixlen: 128 },
      ],
    },
    {
      ifindex: 2,
      ifname: "ifb0",
      flags: ["BROADCAST", "NOARP"],
      mtu: 1500,
      operstate: "DOWN",
      link_type: "ether",
      address: "96:cf:56:5e:80:3c",
      addr_info: [],
    },
    {
      ifindex: 9,
      ifname: "dt-l1",
      flags: ["POINTOPOINT", "NOARP", "UP", "LOWER_UP"],
      mtu: 1420,
      operstate: "UNKNOWN",
      link_type: "none",
      addr_info: [{ family: "inet", local: "198.19.11.2", prefixlen: 32 }],
    },
  ];
  assert.deepEqual(interfacesOf(ipJson), [
    {
      name: "lo",
      up: true,
      state: "UNKNOWN",
      mtu: 65536,
      mac: "00:00:00:00:00:00",
      type: "loopback",
      addresses: ["127.0.0.1/8", "::1/128"],
    },
    { name: "ifb0", up: false, state: "DOWN", mtu: 1500, mac: "96:cf:56:5e:80:3c", type: "ether", addresses: [] },
    { name: "dt-l1", up: true, state: "UNKNOWN", mtu: 1420, mac: null, type: "none", addresses: ["198.19.11.2/32"] },
  ]);
});

test("interfaces-that-could-not-be-read-keep-the-error", () => {
  assert.deepEqual(interfacesOf({ error: "ip -j address show: exit 1" }), { error: "ip -j address show: exit 1" });
});
