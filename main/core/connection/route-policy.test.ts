import assert from "node:assert/strict";
import { test } from "node:test";
import { routesForLeg } from "./route-policy.ts";

test("pushed-corp-networks-join-the-configured-ones-once", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["198.19.0.0/24", "10.20.0.0/16"], ["198.18.1.2"], {
    allowed: ["198.19.0.0/16", "10.0.0.0/8"],
  });
  assert.deepEqual(r.routes, ["198.19.0.0/24", "10.20.0.0/16"]);
  assert.deepEqual(r.rejected, []);
});

test("by-default-a-gateway-may-push-only-inside-the-protected-networks", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["198.19.0.128/25", "10.20.0.0/16", "198.19.0.0/23"], ["198.18.1.2"]);
  assert.deepEqual(r.routes, ["198.19.0.0/24", "198.19.0.128/25"]);
  assert.deepEqual(
    r.rejected.map((x) => x.route),
    ["10.20.0.0/16", "198.19.0.0/23"],
    "outside, and wider than, the protected network",
  );
  assert.match(
    r.rejected[0]?.reason ?? "",
    /outside the prefixes the configuration allows gateways to push \(198\.19\.0\.0\/24\)/,
  );
});

test("a-split-tunnel-cannot-be-turned-into-a-near-full-tunnel-by-a-push", () => {
  const hostile = ["0.0.0.0/1", "128.0.0.0/1", "0.0.0.0/2", "64.0.0.0/2", "0.0.0.0/0", "10.0.0.0/8", "192.168.0.0/16"];
  const r = routesForLeg(["198.19.0.0/24"], hostile, ["203.0.113.7"], { allowed: ["198.19.0.0/16"] });
  assert.deepEqual(r.routes, ["198.19.0.0/24"]);
  assert.deepEqual(
    r.rejected.map((x) => x.route),
    hostile,
  );
  assert.match(r.rejected[4]?.reason ?? "", /full tunnel/);
  assert.ok(r.rejected.every((x) => x.reason.length > 0));
});

test("a-push-may-never-capture-the-route-to-any-gateway-even-inside-the-allow-list", () => {
  const r = routesForLeg(
    ["198.19.0.0/24"],
    ["198.18.1.0/24", "198.18.2.2/32", "198.18.3.0/24"],
    ["198.18.1.2", "198.18.2.2"],
    {
      allowed: ["198.18.0.0/16"],
    },
  );
  assert.deepEqual(r.routes, ["198.19.0.0/24", "198.18.3.0/24"]);
  assert.deepEqual(
    r.rejected.map((x) => [x.route, /gateway's own address/.test(x.reason)]),
    [
      ["198.18.1.0/24", true],
      ["198.18.2.2/32", true],
    ],
  );
});

test("a-configured-full-tunnel-allow-list-accepts-any-push-but-a-gateway-capture", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["0.0.0.0/1", "128.0.0.0/1"], ["198.18.1.2"], { allowed: ["0.0.0.0/0"] });
  assert.deepEqual(r.routes, ["198.19.0.0/24", "0.0.0.0/1"]);
  assert.deepEqual(
    r.rejected.map((x) => x.route),
    ["128.0.0.0/1"],
    "128.0.0.0/1 holds the gateway 198.18.1.2",
  );
});

test("a-pushed-resolver-outside-the-protected-networks-is-routed-through-the-tunnel", () => {
  const r = routesForLeg(["198.19.0.0/24"], [], ["198.18.1.2"], { pushedDns: ["192.168.1.1", "198.19.0.1"] });
  assert.deepEqual(r.dns, ["192.168.1.1", "198.19.0.1"]);
  assert.deepEqual(r.routes, ["198.19.0.0/24", "192.168.1.1/32"], "a host route for the resolver the routes missed");
  assert.deepEqual(r.rejectedDns, []);
});

test("a-pushed-resolver-that-cannot-go-through-the-tunnel-is-dropped-with-a-reason", () => {
  const pushed = [
    "127.0.0.1",
    "169.254.1.1",
    "224.0.0.251",
    "0.0.0.0",
    "198.18.2.2",
    "2001:db8::53",
    "::ffff:127.0.0.1",
  ];
  const r = routesForLeg(["198.19.0.0/24"], [], ["198.18.1.2", "198.18.2.2"], { pushedDns: pushed });
  assert.deepEqual(r.dns, []);
  assert.deepEqual(r.routes, ["198.19.0.0/24"], "no route for a dropped resolver");
  assert.deepEqual(
    r.rejectedDns.map((x) => x.server),
    pushed,
  );
  const reasons = r.rejectedDns.map((x) => x.reason);
  assert.match(reasons[0] ?? "", /loopback/);
  assert.match(reasons[1] ?? "", /link-local/);
  assert.match(reasons[2] ?? "", /multicast/);
  assert.match(reasons[3] ?? "", /unspecified/);
  assert.match(reasons[4] ?? "", /gateway's own address/);
  assert.match(reasons[5] ?? "", /IPv6/);
  assert.match(reasons[6] ?? "", /loopback/);
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
  const plan = routesForLeg(["198.19.0.0/24"], ["198.19.1.0/24"], ["2001:db8:18:1::2", "198.18.2.2"], {
    allowed: ["198.19.0.0/16"],
  });
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
  const r = routesForLeg(["198.18.0.0/16", "198.19.0.0/24"], ["198.19.1.0/24"], ["198.18.3.2", "203.0.113.7"], {
    allowed: ["198.19.0.0/16"],
  });
  assert.deepEqual(r.routes, ["198.18.0.0/16", "198.19.0.0/24", "198.19.1.0/24"]);
  assert.deepEqual(r.bypass, ["198.18.3.2/32"], "a gateway outside every protected network needs no bypass");
});

test("a-split-tunnel-that-covers-no-gateway-needs-no-bypass", () => {
  const r = routesForLeg(["198.19.0.0/24"], ["198.19.1.0/24"], ["198.18.1.2", "198.18.2.2"], {
    allowed: ["198.19.0.0/16"],
  });
  assert.deepEqual(r.bypass, []);
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
