import assert from "node:assert/strict";
import { test } from "node:test";
import { routesForLeg } from "./route-policy.ts";

test("pushed-corp-networks-join-the-configured-ones-once", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["198.19.0.0/24", "10.20.0.0/16"], ["198.18.1.2"]);
  assert.deepEqual(r.routes, ["198.19.0.0/24", "10.20.0.0/16"]);
  assert.deepEqual(r.rejected, []);
});

test("a-pushed-prefix-covering-a-gateway-or-the-default-route-is-refused-with-a-reason", () => {
  const r = routesForLeg(
    ["198.19.0.0/24"],
    ["198.18.0.0/16", "0.0.0.0/0", "banana", "198.18.1.2/32"],
    ["198.18.1.2", "198.18.2.2"],
  );
  assert.deepEqual(r.routes, ["198.19.0.0/24"]);
  assert.deepEqual(
    r.rejected.map((x) => x.route),
    ["198.18.0.0/16", "0.0.0.0/0", "banana", "198.18.1.2/32"],
  );
  assert.match(r.rejected[0]?.reason ?? "", /gateway's own address/);
  assert.match(r.rejected[1]?.reason ?? "", /full tunnel/);
});

test("an-ipv6-gateway-address-is-never-captured-by-ipv4-routes", () => {
  const plan = routesForLeg(["198.19.0.0/24"], ["198.19.1.0/24"], ["2001:db8:18:1::2", "198.18.2.2"]);
  assert.deepEqual(plan.routes, ["198.19.0.0/24", "198.19.1.0/24"]);
  assert.deepEqual(plan.rejected, []);
});

test("a-full-tunnel-keeps-every-gateway-address-out-of-the-tunnel", () => {
  const r = routesForLeg(["0.0.0.0/0"], [], ["198.18.2.2", "198.18.1.2", "198.18.1.2", "2001:db8:18:1::2"]);
  assert.deepEqual(
    r.routes,
    ["0.0.0.0/0"],
    "the configured default route stays: a full tunnel is the configuration's call",
  );
  assert.deepEqual(
    r.bypass,
    ["198.18.1.2/32", "198.18.2.2/32"],
    "each IPv4 gateway once, in numeric order; IPv6 needs none",
  );
  assert.deepEqual(r.rejected, []);
});

test("a-configured-network-covering-a-gateway-is-kept-with-a-bypass-for-that-gateway-only", () => {
  const r = routesForLeg(["198.18.0.0/16", "198.19.0.0/24"], ["198.19.1.0/24"], ["198.18.3.2", "203.0.113.7"]);
  assert.deepEqual(r.routes, ["198.18.0.0/16", "198.19.0.0/24", "198.19.1.0/24"]);
  assert.deepEqual(r.bypass, ["198.18.3.2/32"], "a gateway outside every protected network needs no bypass");
});

test("a-split-tunnel-that-covers-no-gateway-needs-no-bypass", () => {
  assert.deepEqual(routesForLeg(["198.19.0.0/24"], ["198.19.1.0/24"], ["198.18.1.2", "198.18.2.2"]).bypass, []);
});

test("a-configured-route-that-is-a-gateways-own-address-gives-way-to-the-bypass", () => {
  const r = routesForLeg(["198.18.1.2/32", "198.19.0.0/24"], ["198.18.1.2/32"], ["198.18.1.2"]);
  assert.deepEqual(r.routes, ["198.19.0.0/24"]);
  assert.deepEqual(r.bypass, [], "nothing left covers it");
  assert.deepEqual(
    r.rejected.map((x) => x.route),
    ["198.18.1.2/32"],
  );
  assert.match(r.rejected[0]?.reason ?? "", /gateway's own address/);
  const full = routesForLeg(["0.0.0.0/0", "198.18.1.2/32"], [], ["198.18.1.2"]);
  assert.deepEqual([full.routes, full.bypass], [["0.0.0.0/0"], ["198.18.1.2/32"]]);
});
