import assert from "node:assert/strict";
import { test } from "node:test";
import { candidateAddresses, chooseFamily, unprobedAddress } from "./address-family.ts";
import type { FamilyProbe } from "./types.ts";

const V4 = "198.18.1.2";
const V6 = "2001:db8:18:1::2";
const p4 = (latencyMs: number | null, works = latencyMs !== null, usableKinds = 4): FamilyProbe => ({
  address: V4,
  works,
  latencyMs,
  usableKinds,
});
const p6 = (latencyMs: number | null, works = latencyMs !== null, usableKinds = 4): FamilyProbe => ({
  address: V6,
  works,
  latencyMs,
  usableKinds,
});

test("ipv6-wins-when-it-works-and-ipv4-is-not-clearly-faster", () => {
  assert.equal(chooseFamily(p6(5), p4(5), null), "ipv6");
  assert.equal(chooseFamily(p6(12), p4(3), null), "ipv6", "9 ms is within the noise margin");
  assert.equal(chooseFamily(p6(40), p4(20), null), "ipv4", "20 ms faster and half the time: clearly faster");
  assert.equal(chooseFamily(p6(300), p4(285), null), "ipv6", "15 ms on a 300 ms path is not a third faster");
});

test("the-family-that-answers-wins-and-silence-on-both-keeps-the-incumbent-or-ipv4", () => {
  assert.equal(chooseFamily(p6(null), p4(2), V6), "ipv4", "broken IPv6 falls back even from an IPv6 incumbent");
  assert.equal(chooseFamily(p6(50), p4(null), V4), "ipv6", "broken IPv4 moves to IPv6");
  assert.equal(chooseFamily(p6(null), p4(null), null), "ipv4");
  assert.equal(chooseFamily(p6(null), p4(null), V6), "ipv6");
  assert.equal(chooseFamily(p6(3, true), p4(null), null), "ipv6", "a refused port (RST) proves the path");
});

test("a-family-that-rules-out-a-protocol-the-other-serves-loses", () => {
  assert.equal(chooseFamily(p6(1, true, 2), p4(5, true, 4), null), "ipv4", "AnyConnect refused over IPv6 only");
  assert.equal(chooseFamily(p6(9, true, 4), p4(1, true, 2), null), "ipv6");
});

test("an-ipv4-incumbent-returns-to-ipv6-only-once-ipv6-is-at-least-as-fast", () => {
  // 25 vs 20 ms: IPv4 is not clearly faster, so a fresh choice is IPv6; but IPv4 holds as incumbent.
  assert.equal(chooseFamily(p6(25), p4(20), null), "ipv6");
  assert.equal(chooseFamily(p6(25), p4(20), V4), "ipv4", "hysteresis: no flip on a slower IPv6");
  assert.equal(chooseFamily(p6(20), p4(20), V4), "ipv6");
  assert.equal(chooseFamily(p6(25), p4(20), V6), "ipv6", "an IPv6 incumbent stays unless IPv4 is clearly faster");
});

test("single-family-gateways-need-no-choice", () => {
  assert.equal(chooseFamily(null, p4(null), null), "ipv4");
  assert.equal(chooseFamily(p6(null), null, null), "ipv6");
  assert.equal(chooseFamily(null, null, null), null);
});

test("addresses-come-from-the-pair-or-the-single-address-and-ipv4-goes-first-unprobed", () => {
  assert.deepEqual(candidateAddresses({ address: V6 }), { ipv4: null, ipv6: V6 });
  assert.deepEqual(candidateAddresses({ address: V4, addresses: { ipv4: null, ipv6: V6 } }), { ipv4: V4, ipv6: V6 });
  assert.deepEqual(candidateAddresses({ address: null }), { ipv4: null, ipv6: null });
  assert.equal(unprobedAddress({ ipv4: V4, ipv6: V6 }), V4);
  assert.equal(unprobedAddress({ ipv4: V4, ipv6: V6 }, V6), V6, "the incumbent stays until a probe says otherwise");
  assert.equal(unprobedAddress({ ipv4: null, ipv6: V6 }, "192.0.2.9"), V6);
});
