import assert from "node:assert/strict";
import { test } from "node:test";
import { CAPTIVE_RULE_PREF, captiveRuleArgs, underlaySource } from "./captive-path.linux.ts";

/** A full tunnel's namespace: main routes the underlay, detourd's own device carries a route too (never chosen). */
const ROUTES4 = [
  { dst: "default", gateway: "198.18.200.1", dev: "ul1", metric: 100, flags: [] },
  { dst: "default", gateway: "198.18.0.1", dev: "ul0", metric: 600, flags: [] },
  { dst: "198.18.0.0/24", dev: "ul0", prefsrc: "198.18.0.2", flags: [], protocol: "kernel", scope: "link" },
  { dst: "198.18.200.0/24", dev: "ul1", flags: [] },
  { dst: "198.18.204.0/24", dev: "dlab-l1", flags: [] },
  { dst: "198.18.99.0/24", dev: "ul2", flags: ["linkdown"] },
  { dst: "198.18.98.0/24", type: "unreachable", flags: [] },
];
const ADDRS = [
  { ifname: "lo", addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8, scope: "host" }] },
  {
    ifname: "ul1",
    addr_info: [
      { family: "inet6", local: "2001:db8:18:200::2", prefixlen: 64, scope: "global" },
      { family: "inet", local: "198.18.201.9", prefixlen: 24, scope: "global" },
      { family: "inet", local: "198.18.200.2", prefixlen: 24, scope: "global" },
    ],
  },
];

test("the-check-is-bound-to-the-address-the-main-tables-route-would-use-never-a-tunnels", () => {
  // The default route with the lowest metric; its device's address on the next hop's subnet.
  assert.equal(underlaySource(ROUTES4, ADDRS, "198.18.204.1", "dlab"), "198.18.200.2");
  // A more specific route wins, and its preferred source is taken as it is.
  assert.equal(underlaySource(ROUTES4, ADDRS, "198.18.0.77", "dlab"), "198.18.0.2");
  // A link that is down, an unreachable route and detourd's devices are never the way: the default route is.
  assert.equal(underlaySource(ROUTES4, ADDRS, "198.18.99.1", "dlab"), "198.18.200.2");
  assert.equal(underlaySource(ROUTES4, ADDRS, "198.18.98.1", "dlab"), "198.18.200.2");
  // No underlay route at all: no address (the check then does not run rather than enter a tunnel).
  assert.equal(underlaySource([{ dst: "0.0.0.0/1", dev: "dlab-l1" }], ADDRS, "10.1.2.3", "dlab"), null);
  assert.equal(underlaySource(ROUTES4, ADDRS, "not an address", "dlab"), null);
  const routes6 = [{ dst: "default", gateway: "2001:db8:18:200::1", dev: "ul1", metric: 1024 }];
  assert.equal(underlaySource(routes6, ADDRS, "2001:db8:18:204::1", "dlab"), "2001:db8:18:200::2");
});

test("the-rule-matches-only-the-bound-source-the-check-host-its-protocol-and-port-before-every-detour-table", () => {
  assert.equal(CAPTIVE_RULE_PREF, 99, "before the legs' source rules (100-189) and the protected rule (200)");
  assert.deepEqual(captiveRuleArgs("198.18.0.2", { address: "198.18.204.1", protocol: "tcp", port: 80 }), [
    "from",
    "198.18.0.2/32",
    "to",
    "198.18.204.1/32",
    "ipproto",
    "tcp",
    "dport",
    "80",
    "lookup",
    "main",
    "pref",
    "99",
  ]);
  assert.deepEqual(
    captiveRuleArgs("2001:db8:18::2", { address: "2001:db8:18:53::2", protocol: "udp", port: 53 }).slice(0, 4),
    ["from", "2001:db8:18::2/128", "to", "2001:db8:18:53::2/128"],
  );
});
