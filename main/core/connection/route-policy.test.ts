import assert from "node:assert/strict";
import { test } from "node:test";
import { routesForLeg } from "./route-policy.ts";

test("pushed-corp-networks-join-the-configured-ones-once", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["198.19.0.0/24", "10.20.0.0/16"], ["198.18.1.2"]);
  assert.deepEqual(r.routes, ["198.19.0.0/24", "10.20.0.0/16"]);
  assert.deepEqual(r.rejected, []);
});

test("a-pushed-prefix-covering-a-gateway-or-the-default-route-is-refused-with-a-reason", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["198.18.0.0/16", "0.0.0.0/0", "banana", "198.18.1.2/32"], ["198.18.1.2", "198.18.2.2"]);
  assert.deepEqual(r.routes, ["198.19.0.0/24"]);
  assert.deepEqual(r.rejected.map((x) => x.route), ["198.18.0.0/16", "0.0.0.0/0", "banana", "198.18.1.2/32"]);
  assert.match(r.rejected[0]?.reason ?? "", /gateway's own address/);
  assert.match(r.rejected[1]?.reason ?? "", /full tunnel/);
});

test("an-ipv6-gateway-address-is-never-captured-by-ipv4-routes", () => {
  const plan = routesForLeg(["198.19.0.0/24"], ["198.19.1.0/24"], ["2001:db8:18:1::2", "198.18.2.2"]);
  assert.deepEqual(plan.routes, ["198.19.0.0/24", "198.19.1.0/24"]);
  assert.deepEqual(plan.rejected, []);
});
