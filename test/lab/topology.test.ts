import assert from "node:assert/strict";
import { test } from "node:test";
import {
  GATEWAY_NAMES,
  gatewayByName,
  gatewayDistances,
  labTopology,
  namespaceOf,
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
