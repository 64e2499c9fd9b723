import assert from "node:assert/strict";
import { test } from "node:test";
import { allKindsUnreachable, mergeCandidates, rankCandidates, reportsReachable } from "./candidates.ts";
import { gateway, probe } from "./harness.test.ts";

const names = (cs: { name: string }[]): string[] => cs.map((c) => c.name);

test("priority-orders-first-whatever-the-latency", () => {
  const r = rankCandidates(
    [gateway("slow-preferred", 1, { probe: probe(200) }), gateway("fast-backup", 5, { probe: probe(5) })],
    null,
  );
  assert.deepEqual(names(r), ["slow-preferred", "fast-backup"]);
});

test("equal-priority-orders-by-latency-with-unknown-last-on-a-first-ranking", () => {
  const r = rankCandidates(
    [gateway("a", 1), gateway("b", 1, { probe: probe(80) }), gateway("c", 1, { probe: probe(30) })],
    null,
  );
  assert.deepEqual(names(r), ["c", "b", "a"]);
});

test("a-few-milliseconds-never-reorder-equal-priority-gateways", () => {
  const r = rankCandidates([gateway("a", 1, { probe: probe(50) }), gateway("b", 1, { probe: probe(42) })], ["a", "b"]);
  assert.deepEqual(names(r), ["a", "b"], "8 ms faster is noise");
});

test("more-than-10-ms-faster-but-not-below-two-thirds-keeps-the-order", () => {
  const r = rankCandidates(
    [gateway("a", 1, { probe: probe(300) }), gateway("b", 1, { probe: probe(250) })],
    ["a", "b"],
  );
  assert.deepEqual(names(r), ["a", "b"], "50 ms faster on a 300 ms path is within a third");
});

test("clearly-faster-gateway-overtakes-the-incumbent", () => {
  const r = rankCandidates([gateway("a", 1, { probe: probe(60) }), gateway("b", 1, { probe: probe(30) })], ["a", "b"]);
  assert.deepEqual(names(r), ["b", "a"]);
});

test("a-known-latency-overtakes-an-unknown-one", () => {
  const r = rankCandidates([gateway("a", 1), gateway("b", 1, { probe: probe(90) })], ["a", "b"]);
  assert.deepEqual(names(r), ["b", "a"]);
});

test("newcomers-join-behind-incumbents-unless-clearly-faster", () => {
  const r = rankCandidates(
    [
      gateway("a", 1, { probe: probe(40) }),
      gateway("new-close", 1, { probe: probe(35) }),
      gateway("new-fast", 1, { probe: probe(10) }),
    ],
    ["a"],
  );
  assert.deepEqual(names(r), ["new-fast", "a", "new-close"]);
});

test("a-gateway-whose-every-kind-is-unreachable-goes-last", () => {
  const dead = gateway("dead", 0, {
    kinds: ["wireguard", "anyconnect-tls"],
    probe: probe(null, { wireguard: "no", "anyconnect-tls": "no" }),
  });
  const half = gateway("half", 2, {
    kinds: ["wireguard", "anyconnect-tls"],
    probe: probe(20, { wireguard: "unknown", "anyconnect-tls": "no" }),
  });
  const r = rankCandidates([dead, half, gateway("other", 9)], null);
  assert.deepEqual(names(r), ["half", "other", "dead"]);
  assert.equal(allKindsUnreachable(dead), true);
  assert.equal(allKindsUnreachable(half), false);
  assert.equal(reportsReachable(half), true);
  assert.equal(reportsReachable(dead), false);
  assert.equal(reportsReachable(gateway("unprobed", 1)), false);
});

test("ranking-does-not-change-its-input", () => {
  const input = [gateway("b", 2), gateway("a", 1)];
  rankCandidates(input, null);
  assert.deepEqual(names(input), ["b", "a"]);
});

test("merge-unions-sources-and-configuration-wins", () => {
  const configured = [
    gateway("gw1", 1, { address: null, sources: ["config"] }),
    gateway("gw2", 2, { address: "198.18.2.2" }),
  ];
  const dns = [
    gateway("gw1", 7, { address: "198.18.1.2", sources: ["dns"], region: "dns-region" }),
    gateway("gw9", 9, { sources: ["dns"], address: "198.18.9.2" }),
  ];
  const portal = [
    gateway("gw1", 8, { address: "203.0.113.1", sources: ["portal"] }),
    gateway("gw2", 3, { address: "203.0.113.2", sources: ["portal"] }),
    gateway("gw7", 7, { sources: ["portal"], address: "203.0.113.7" }),
  ];
  const m = mergeCandidates(configured, dns, portal);
  assert.deepEqual(names(m), ["gw1", "gw2", "gw9", "gw7"]);
  const gw1 = m[0];
  assert.ok(gw1 !== undefined);
  assert.deepEqual(gw1.sources, ["config", "dns", "portal"]);
  assert.equal(gw1.priority, 1, "configured priority wins");
  assert.equal(gw1.region, "eu", "configured region wins");
  assert.equal(gw1.address, "198.18.1.2", "no configured address: DNS before portal");
  const gw2 = m[1];
  assert.ok(gw2 !== undefined);
  assert.equal(gw2.address, "198.18.2.2", "configured address wins");
  assert.deepEqual(gw2.sources, ["config", "portal"]);
  assert.equal(m[3]?.address, "203.0.113.7", "portal-only gateway keeps the portal's address");
});

test("merge-keeps-both-families-of-the-source-that-gave-the-address", () => {
  const both = { ipv4: "198.18.1.2", ipv6: "2001:db8:18:1::2" };
  const configured = [gateway("gw1", 1, { address: null }), gateway("gw2", 2, { address: "198.18.2.2" })];
  const dns = [
    gateway("gw1", 1, { address: both.ipv4, addresses: both, sources: ["dns"] }),
    gateway("gw2", 2, {
      address: "198.18.2.2",
      addresses: { ipv4: "198.18.2.2", ipv6: "2001:db8:18:2::2" },
      sources: ["dns"],
    }),
  ];
  const m = mergeCandidates(configured, dns, []);
  assert.deepEqual(m[0]?.addresses, both, "DNS named gw1 by A and AAAA");
  assert.equal(m[1]?.addresses, undefined, "a configured address pins gw2: DNS adds no second family");
});

test("a-gateway-that-answered-is-not-demoted-within-its-band-for-a-slower-or-unmeasured-answer", () => {
  // Its TLS port refused (a WireGuard-only gateway): the host answered with a RST, which gives no handshake time.
  const rst = { ...probe(null, { wireguard: "unknown", "anyconnect-tls": "no" }), answered: true };
  const slow = { ...probe(400, { wireguard: "unknown", "anyconnect-tls": "yes" }), answered: true };
  const r = rankCandidates(
    [
      gateway("unheard", 1),
      gateway("rst", 1, { probe: rst }),
      gateway("slow", 1, { probe: slow }),
      gateway("fast-backup", 2, { probe: { ...slow, latencyMs: 5 } }),
    ],
    ["unheard", "rst", "slow", "fast-backup"],
  );
  assert.deepEqual(names(r), ["slow", "rst", "unheard", "fast-backup"]);
});
