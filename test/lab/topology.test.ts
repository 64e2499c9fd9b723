import assert from "node:assert/strict";
import { test } from "node:test";
import {
  GATEWAY_NAMES,
  gatewayByName,
  gatewayDistances,
  labTopology,
  namespaceOf,
  networkByName,
  oneWayDelay,
  USER_DISTANCES,
  validateLabId,
} from "./topology.ts";

test("every-namespace-starts-with-the-project-prefix", () => {
  const t = labTopology("lab");
  for (const ns of Object.values(t.ns)) assert.ok(ns.startsWith("detour-lab-"), ns);
  assert.equal(new Set(Object.values(t.ns)).size, Object.values(t.ns).length, "namespace names are unique");
});

test("interface-names-fit-linux-limit-for-the-longest-lab-id", () => {
  const t = labTopology("abcdef");
  for (const g of t.gateways) {
    for (const n of [g.wireguard.ifname, g.routerSide.ifname, g.corpLink.gwIfname, g.corpLink.corpIfname])
      assert.ok(n.length <= 15, n);
  }
});

test("addresses-stay-in-the-benchmarking-range-and-pools-do-not-overlap", () => {
  const t = labTopology("lab");
  const pools = t.gateways.flatMap((g) => Object.values(g.pools));
  assert.equal(new Set(pools).size, 9);
  for (const p of pools) assert.match(p, /^198\.19\.\d+\.0\/24$/);
  for (const g of t.gateways) {
    assert.match(g.address, /^198\.18\./);
    assert.ok(g.insideAddress.startsWith("198.19.0."), "the gateway's inside address is in the corp network");
    assert.notEqual(g.insideAddress, t.corp.address);
  }
});

test("bad-lab-ids-and-names-are-refused-with-a-reason", () => {
  assert.throws(() => validateLabId("Lab"), /lab id "Lab" is invalid/);
  assert.throws(() => validateLabId("toolongid"), /1-6 lowercase/);
  assert.throws(() => gatewayByName(labTopology("lab"), "gw9"), /unknown gateway "gw9"/);
  assert.throws(() => namespaceOf(labTopology("lab"), "root"), /unknown namespace "root"/);
  assert.equal(namespaceOf(labTopology("lab"), "gw2"), "detour-lab-gw2");
});

test("user-distances-split-into-whole-one-way-delays-that-average-the-round-trip", () => {
  for (const g of GATEWAY_NAMES) {
    const d = USER_DISTANCES[g];
    const w = oneWayDelay(d);
    assert.ok(Number.isInteger(w.delayMs) && w.delayMs > 0, `${g}: ${JSON.stringify(w)}`);
    // Two directions, each delay + uniform(0, jitter): mean 2 * delay + jitter.
    assert.equal(2 * w.delayMs + w.jitterMs, d.rttMs, g);
  }
  assert.deepEqual(
    GATEWAY_NAMES.map((g) => USER_DISTANCES[g].rttMs),
    [20, 80, 250],
    "a user near gw1, gw2 next door, gw3 across an ocean",
  );
  assert.deepEqual(gatewayDistances("none"), {});
  assert.throws(() => oneWayDelay({ rttMs: 21, jitterMs: 2 }), /no whole one-way delay/);
});

test("two-networks-have-their-own-links-subnets-resolvers-and-public-addresses", () => {
  const t = labTopology("abcdef");
  const { wifi, mobile } = t.networks;
  assert.equal(wifi.ifname, t.client.ifname, "wifi is the client's original uplink");
  assert.equal(wifi.address, t.client.address);
  assert.equal(wifi.routerNs, t.router.ns);
  assert.notEqual(mobile.ifname, wifi.ifname);
  assert.equal(mobile.routerNs, t.ns.mob);
  assert.ok(mobile.routerNs.startsWith("detour-abcdef-"));
  assert.notEqual(mobile.resolver, wifi.resolver, "a move changes the resolver");
  assert.notEqual(mobile.publicAddress, wifi.publicAddress, "a gateway sees another source after a move");
  assert.notEqual(mobile.publicAddress6, wifi.publicAddress6);
  assert.ok(mobile.nat, "the mobile network is behind a NAT");
  assert.equal(mobile.publicAddress, t.mobileRouter.uplink.address, "masquerade: the router's uplink address");
  assert.match(mobile.address, /^198\.18\.200\./);
  assert.match(t.mobileRouter.clientSubnet6, /^2001:db8:18:200::\/64$/);
  for (const n of [
    mobile.ifname,
    mobile.routerIfname,
    t.mobileRouter.uplink.ifname,
    t.mobileRouter.uplink.routerIfname,
  ])
    assert.ok(n.length <= 15, n);
  // No subnet of the lab collides with the mobile ones.
  const thirdOctets = [0, 53, 100, ...t.gateways.map((g) => Number(g.address.split(".")[2]))];
  for (const s of [200, 201]) assert.ok(!thirdOctets.includes(s), String(s));
  assert.equal(networkByName(t, "mobile"), mobile);
  assert.throws(() => networkByName(t, "lte"), /unknown network "lte": expected one of wifi, mobile/);
  assert.equal(namespaceOf(t, "mob"), "detour-abcdef-mob");
});
