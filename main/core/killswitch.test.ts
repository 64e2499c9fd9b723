import assert from "node:assert/strict";
import { test } from "node:test";
import type { ConnectionStateName } from "./connection/types.ts";
import {
  isProtected,
  killSwitchPolicy,
  legEndpoints,
  type GatewayEndpoint,
  type KillSwitchInput,
  type KillSwitchRules,
} from "./killswitch.ts";

const GW1 = "198.18.1.2";
const GW2 = "198.18.2.2";
const DNS = "198.18.53.2";
const ports = { wireguard: { port: 51820 }, ikev2: { port: 500, natTraversalPort: 4500 }, anyconnect: { port: 443 } };
const racing: GatewayEndpoint[] = [...legEndpoints("wireguard", GW1, ports), ...legEndpoints("ikev2", GW2, ports)];

function input(state: ConnectionStateName, over: Partial<KillSwitchInput> = {}): KillSwitchInput {
  return {
    state,
    lockdown: false,
    protectedNetworks: ["198.19.0.0/24"],
    gatewayEndpoints: racing,
    tunnelDevices: ["dt-L1"],
    dnsServers: [DNS],
    ...over,
  };
}

function rules(state: ConnectionStateName, over: Partial<KillSwitchInput> = {}): KillSwitchRules {
  const r = killSwitchPolicy(input(state, over));
  assert.ok(r !== null, `${state} wants rules`);
  return r;
}

const blockingOf = (state: ConnectionStateName): KillSwitchRules => ({
  mode: "blocking",
  state,
  fullTunnel: false,
  protectedNetworks: ["198.19.0.0/24"],
  tunnelDevices: ["dt-L1"],
  gatewayEndpoints: [
    { address: GW1, protocol: "udp", port: 51820 },
    { address: GW2, protocol: "udp", port: 500 },
    { address: GW2, protocol: "udp", port: 4500 },
  ],
  dnsServers: [DNS],
  ownResolvers: [],
  trustedHosts: [],
  ownGroup: null,
  blockUnderlay: true,
  underlayUpkeep: true,
});

test("disconnected-without-lockdown-wants-no-rules", () => {
  assert.equal(killSwitchPolicy(input("disconnected")), null);
  assert.equal(
    killSwitchPolicy(input("disconnected", { gatewayEndpoints: [], tunnelDevices: [], dnsServers: [] })),
    null,
  );
});

test("disconnected-with-lockdown-blocks-the-underlay-but-the-listed-endpoints-and-dns", () => {
  assert.deepEqual(rules("disconnected", { lockdown: true }), blockingOf("disconnected"));
  const bare = rules("disconnected", { lockdown: true, gatewayEndpoints: [], tunnelDevices: [], dnsServers: [] });
  assert.equal(bare.mode, "blocking");
  assert.deepEqual(
    [bare.gatewayEndpoints, bare.tunnelDevices, bare.dnsServers],
    [[], [], []],
    "nothing to allow: only loopback and upkeep leave",
  );
});

for (const state of ["resolving", "racing", "failing-over", "error"] as const) {
  test(`${state}-with-lockdown-blocks-the-underlay-except-the-gateway-endpoints-and-discovery-dns`, () => {
    assert.deepEqual(rules(state, { lockdown: true }), blockingOf(state));
  });

  test(`${state}-in-a-split-tunnel-without-lockdown-holds-back-only-the-protected-networks`, () => {
    const r = rules(state);
    assert.deepEqual(r, {
      ...blockingOf(state),
      mode: "tunnel-only",
      dnsServers: [],
      blockUnderlay: false,
      underlayUpkeep: false,
    });
  });

  test(`${state}-in-a-full-tunnel-blocks-the-underlay-with-or-without-lockdown`, () => {
    for (const lockdown of [false, true]) {
      const r = rules(state, { lockdown, protectedNetworks: ["0.0.0.0/0"] });
      assert.deepEqual([r.mode, r.blockUnderlay, r.fullTunnel], ["blocking", true, true]);
    }
  });
}

test("connected-split-tunnel-polices-only-protected-destinations", () => {
  const r = rules("connected", { tunnelDevices: ["dt-L1", "dt-L4"] });
  assert.deepEqual(r, {
    mode: "tunnel-only",
    state: "connected",
    fullTunnel: false,
    protectedNetworks: ["198.19.0.0/24"],
    tunnelDevices: ["dt-L1", "dt-L4"],
    gatewayEndpoints: blockingOf("connected").gatewayEndpoints,
    dnsServers: [],
    ownResolvers: [],
    trustedHosts: [],
    ownGroup: null,
    blockUnderlay: false,
    underlayUpkeep: false,
  });
  assert.deepEqual(rules("connected", { lockdown: true }).mode, "tunnel-only", "lockdown adds nothing while connected");
});

test("connected-full-tunnel-blocks-the-underlay-but-the-gateway-endpoints-without-dns", () => {
  const r = rules("connected", { protectedNetworks: ["198.19.0.0/24", "0.0.0.0/0"] });
  assert.equal(r.mode, "tunnel-only");
  assert.equal(r.fullTunnel, true);
  assert.deepEqual(r.protectedNetworks, ["0.0.0.0/0"]);
  assert.equal(r.blockUnderlay, true);
  assert.equal(r.underlayUpkeep, true);
  assert.deepEqual(r.dnsServers, [], "DNS goes through the tunnel once it is up");
  assert.equal(r.gatewayEndpoints.length, 3);
});

test("connected-full-tunnel-still-lets-detourds-own-captive-check-out-for-its-group-only", () => {
  const over: Partial<KillSwitchInput> = {
    protectedNetworks: ["0.0.0.0/0"],
    ownResolvers: [DNS],
    checkAddresses: ["198.18.204.1"],
    captiveException: { portalAddresses: ["198.18.205.1"], resolvers: [DNS] },
  };
  const r = rules("connected", { ...over, ownGroup: 64950 });
  assert.deepEqual(
    [r.mode, r.blockUnderlay, r.checkAddresses, r.ownResolvers, r.captiveException],
    ["tunnel-only", true, ["198.18.204.1"], [DNS], undefined],
    "the check and its lookups, never the sign-in exception",
  );
  assert.deepEqual(r.dnsServers, [], "discovery goes through the tunnel");
  const anyone = rules("connected", over);
  assert.deepEqual([anyone.checkAddresses, anyone.ownResolvers], [undefined, []], "without detourd's group: nothing");
  const split = rules("connected", { ownGroup: 64950, ownResolvers: [DNS], checkAddresses: ["198.18.204.1"] });
  assert.deepEqual([split.checkAddresses, split.ownResolvers], [undefined, []], "a split tunnel polices no underlay");
  const noCheck = rules("connected", { protectedNetworks: ["0.0.0.0/0"], ownGroup: 64950, ownResolvers: [DNS] });
  assert.deepEqual(noCheck.ownResolvers, [], "no check, no lookups on the underlay");
});

test("full-tunnel-while-racing-keeps-dns-for-discovery", () => {
  const r = rules("racing", { protectedNetworks: ["0.0.0.0/0"] });
  assert.deepEqual([r.mode, r.fullTunnel, r.dnsServers], ["blocking", true, [DNS]]);
});

test("protected-networks-are-normalised-host-bits-cleared-and-covered-prefixes-dropped", () => {
  const r = rules("connected", {
    protectedNetworks: ["198.19.0.1/24", "10.0.0.0/8", "198.19.0.0/16", "10.1.2.0/24", "198.19.0.0/16", "192.0.2.7/32"],
  });
  assert.deepEqual(r.protectedNetworks, ["10.0.0.0/8", "192.0.2.7/32", "198.19.0.0/16"]);
  assert.ok(isProtected(r, "198.19.200.1") && isProtected(r, "10.255.255.255") && isProtected(r, "192.0.2.7"));
  assert.ok(!isProtected(r, "192.0.2.8") && !isProtected(r, "198.18.1.2") && !isProtected(r, "11.0.0.0"));
  assert.ok(isProtected(rules("connected", { protectedNetworks: ["0.0.0.0/0"] }), "255.255.255.255"));
});

test("endpoints-devices-and-dns-are-deduplicated-and-sorted-so-equal-states-compare-equal", () => {
  const a = rules("racing", {
    lockdown: true,
    gatewayEndpoints: [...racing, ...racing].reverse(),
    tunnelDevices: ["ipsec*", "dt-L2", "dt-L1", "dt-L2"],
    dnsServers: [DNS, "198.18.53.10", DNS, "9.9.9.9"],
  });
  const b = rules("racing", {
    lockdown: true,
    gatewayEndpoints: racing,
    tunnelDevices: ["dt-L1", "dt-L2", "ipsec*"],
    dnsServers: ["9.9.9.9", "198.18.53.10", DNS],
  });
  assert.deepEqual(a, b);
  assert.deepEqual(a.tunnelDevices, ["dt-L1", "dt-L2", "ipsec*"]);
  assert.deepEqual(a.dnsServers, ["9.9.9.9", DNS, "198.18.53.10"], "numeric order, not string order");
});

test("leg-endpoints-cover-each-protocol-and-dtls-includes-its-tls-start", () => {
  assert.deepEqual(legEndpoints("wireguard", GW1, ports), [{ address: GW1, protocol: "udp", port: 51820 }]);
  assert.deepEqual(legEndpoints("ikev2", GW1, ports), [
    { address: GW1, protocol: "udp", port: 500 },
    { address: GW1, protocol: "udp", port: 4500 },
  ]);
  assert.deepEqual(legEndpoints("anyconnect-tls", GW1, ports), [{ address: GW1, protocol: "tcp", port: 443 }]);
  assert.deepEqual(legEndpoints("anyconnect-dtls", GW1, { anyconnect: { port: 8443 } }), [
    { address: GW1, protocol: "tcp", port: 8443 },
    { address: GW1, protocol: "udp", port: 8443 },
  ]);
  assert.throws(() => legEndpoints("ikev2", GW1, { wireguard: { port: 51820 } }), /IKE port/);
});

test("invalid-input-is-a-bug-and-throws-before-any-rule-is-made", () => {
  assert.throws(
    () => killSwitchPolicy(input("racing", { protectedNetworks: ["198.19.0.0/33"] })),
    /invalid IPv4 prefix/,
  );
  assert.throws(() => killSwitchPolicy(input("racing", { protectedNetworks: ["198.19.0.0"] })), /invalid IPv4 prefix/);
  assert.throws(
    () => killSwitchPolicy(input("racing", { tunnelDevices: ['dt"; flush ruleset'] })),
    /invalid tunnel device/,
  );
  assert.throws(
    () => killSwitchPolicy(input("racing", { tunnelDevices: ["a-name-far-too-long"] })),
    /invalid tunnel device/,
  );
  assert.throws(() => killSwitchPolicy(input("racing", { tunnelDevices: ["lo"] })), /not a tunnel device/);
  assert.throws(() => killSwitchPolicy(input("racing", { tunnelDevices: ["d*t"] })), /invalid tunnel device/);
  assert.throws(() => killSwitchPolicy(input("racing", { dnsServers: ["resolver.example"] })), /invalid DNS server/);
  assert.throws(
    () => killSwitchPolicy(input("racing", { gatewayEndpoints: [{ address: GW1, protocol: "udp", port: 0 }] })),
    /invalid endpoint port/,
  );
  assert.throws(
    () =>
      killSwitchPolicy(input("racing", { gatewayEndpoints: [{ address: GW1, protocol: "icmp" as "udp", port: 1 }] })),
    /invalid endpoint protocol/,
  );
  assert.throws(
    () => killSwitchPolicy(input("disconnected", { protectedNetworks: ["bad"] })),
    /invalid IPv4 prefix/,
    "validated even when no rules result",
  );
});

test("ipv6-gateway-endpoints-are-allowed-canonical-and-sorted-after-ipv4", () => {
  const v6 = "2001:DB8:18:1:0:0:0:2";
  const r = rules("racing", {
    lockdown: true,
    gatewayEndpoints: [
      ...legEndpoints("wireguard", v6, ports),
      ...racing,
      { address: "2001:db8:18:1::2", protocol: "udp", port: 51820 },
    ],
    dnsServers: [DNS, "2001:db8:18:53::2"],
  });
  assert.deepEqual(
    r.gatewayEndpoints.map((e) => `${e.address} ${e.protocol} ${String(e.port)}`),
    [`${GW1} udp 51820`, `${GW2} udp 500`, `${GW2} udp 4500`, "2001:db8:18:1::2 udp 51820"],
    "two spellings of one IPv6 address are one endpoint",
  );
  assert.deepEqual(r.dnsServers, [DNS, "2001:db8:18:53::2"]);
  assert.throws(
    () =>
      killSwitchPolicy(
        input("racing", { gatewayEndpoints: [{ address: "2001:db8::1::2", protocol: "udp", port: 1 }] }),
      ),
    /invalid gateway address/,
  );
});

test("own-resolvers-and-the-own-group-are-carried-only-while-blocking-and-loopback-or-repeated-resolvers-are-dropped", () => {
  const over = { ownResolvers: ["127.0.0.53", DNS, "198.18.0.53", "2001:DB8::53", "::1"], ownGroup: 64950 };
  const b = rules("racing", { lockdown: true, ...over });
  assert.deepEqual([b.ownResolvers, b.ownGroup], [["198.18.0.53", "2001:db8::53"], 64950]);
  const t = rules("connected", over);
  assert.deepEqual([t.ownResolvers, t.ownGroup], [[], 64950]);
  assert.throws(() => rules("racing", { ownGroup: 0 }), /own group id 0/);
  assert.throws(() => rules("racing", { lockdown: true, ownResolvers: ["resolver.example"] }), /invalid resolver/);
});

test("trusted-hosts-are-allowed-only-while-blocking-and-never-inside-a-protected-network", () => {
  const trustedHosts = [
    { address: "198.18.53.2", port: 8443 },
    { address: "198.19.0.9", port: 443 },
    { address: "127.0.0.1", port: 443 },
  ];
  const locked = rules("disconnected", { lockdown: true, trustedHosts });
  assert.deepEqual(locked.trustedHosts, [{ address: "198.18.53.2", protocol: "tcp", port: 8443 }]);
  assert.deepEqual(rules("racing", { lockdown: true, trustedHosts }).trustedHosts.length, 1);
  assert.deepEqual(rules("connected", { lockdown: true, trustedHosts }).trustedHosts, [], "split tunnel: not ours");
  const full = rules("racing", { protectedNetworks: ["0.0.0.0/0"], trustedHosts });
  assert.deepEqual(full.trustedHosts, [], "a full tunnel protects the trusted host too");
  assert.equal(killSwitchPolicy(input("disconnected", { trustedHosts })), null);
});

test("blocking-lets-detourds-own-captive-check-and-an-open-sign-in-exception-out-and-nothing-protected", () => {
  const r = rules("error", {
    lockdown: true,
    ownGroup: 64950,
    checkAddresses: ["198.18.204.1", "198.19.0.7"],
    captiveException: { portalAddresses: ["198.18.205.1", "198.19.0.1", "127.0.0.1"], resolvers: [DNS, "::1"] },
  });
  assert.deepEqual(r.checkAddresses, ["198.18.204.1"], "a protected check address is dropped");
  assert.deepEqual(r.captiveException, { portalAddresses: ["198.18.205.1"], resolvers: [DNS] });
});

test("without-a-captive-input-the-rules-carry-no-captive-fields", () => {
  const r = rules("error", { lockdown: true, checkAddresses: [], captiveException: null });
  assert.equal("checkAddresses" in r, false);
  assert.equal("captiveException" in r, false);
});

test("a-split-tunnel-without-lockdown-and-the-connected-state-need-no-captive-exception", () => {
  const ex = { portalAddresses: ["198.18.205.1"], resolvers: [DNS] };
  assert.equal(rules("error", { captiveException: ex }).captiveException, undefined);
  assert.equal(rules("connected", { lockdown: true, captiveException: ex }).captiveException, undefined);
});

test("a-full-tunnel-lets-the-portal-through-during-the-exception", () => {
  const r = rules("error", {
    protectedNetworks: ["0.0.0.0/0"],
    captiveException: { portalAddresses: ["198.18.205.1"], resolvers: [DNS] },
  });
  assert.deepEqual(r.captiveException?.portalAddresses, ["198.18.205.1"]);
});
