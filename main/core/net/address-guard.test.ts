import assert from "node:assert/strict";
import { test } from "node:test";
import {
  gatewayAddressRefusal,
  parsePrefix,
  prefixCovers,
  prefixesOverlap,
  pushedDnsRefusal,
  specialUseReason,
} from "./address-guard.ts";

const CTX = {
  protectedNetworks: ["198.19.0.0/24", "10.0.0.0/8"],
  localNetworks: ["192.168.1.0/24", "2001:db8:1::/64"],
};

test("special-use-addresses-of-both-families-are-named", () => {
  const cases: [string, RegExp][] = [
    ["127.0.0.1", /loopback/],
    ["127.255.0.9", /loopback/],
    ["::1", /loopback/],
    ["0.0.0.0", /unspecified/],
    ["0.1.2.3", /unspecified/],
    ["::", /unspecified/],
    ["169.254.169.254", /link-local/],
    ["fe80::1", /link-local/],
    ["FEBF::1", /link-local/],
    ["224.0.0.251", /multicast/],
    ["239.1.1.1", /multicast/],
    ["ff02::fb", /multicast/],
    ["255.255.255.255", /broadcast/],
    ["240.0.0.1", /reserved/],
    ["fec0::1", /site-local/],
    ["::192.0.2.1", /IPv4-compatible/],
    ["::ffff:127.0.0.1", /loopback \(carried in IPv6\)/],
    ["::ffff:7f00:1", /loopback \(carried in IPv6\)/],
    ["64:ff9b::a9fe:a9fe", /link-local \(carried in IPv6\)/],
    ["banana", /not an IP address/],
  ];
  for (const [a, re] of cases) assert.match(specialUseReason(a) ?? "(null)", re, a);
  for (const a of ["198.18.1.2", "203.0.113.7", "2001:db8:18:1::2", "::ffff:198.18.1.2", "10.1.2.3"])
    assert.equal(specialUseReason(a), null, a);
});

test("a-gateway-address-inside-a-protected-or-local-network-is-refused-in-either-family", () => {
  assert.match(gatewayAddressRefusal("198.19.0.5", CTX) ?? "", /inside the protected network 198\.19\.0\.0\/24/);
  assert.match(gatewayAddressRefusal("10.9.8.7", CTX) ?? "", /protected network 10\.0\.0\.0\/8/);
  assert.match(gatewayAddressRefusal("::ffff:10.9.8.7", CTX) ?? "", /protected network 10\.0\.0\.0\/8/);
  assert.match(gatewayAddressRefusal("64:ff9b::c613:5", CTX) ?? "", /protected network 198\.19\.0\.0\/24/);
  assert.match(gatewayAddressRefusal("192.168.1.1", CTX) ?? "", /inside the local network 192\.168\.1\.0\/24/);
  assert.match(gatewayAddressRefusal("2001:db8:1::99", CTX) ?? "", /local network 2001:db8:1::\/64/);
  assert.match(gatewayAddressRefusal("127.0.0.1", CTX) ?? "", /loopback/);
  assert.equal(gatewayAddressRefusal("198.18.1.2", CTX), null);
  assert.equal(gatewayAddressRefusal("2001:db8:18:1::2", CTX), null);
  assert.equal(gatewayAddressRefusal("192.168.2.1", CTX), null, "the next network is not the local one");
});

test("a-full-tunnels-default-route-refuses-no-gateway-but-its-other-protected-networks-do", () => {
  const full = { protectedNetworks: ["0.0.0.0/0", "10.0.0.0/8"], localNetworks: [] };
  assert.equal(gatewayAddressRefusal("198.18.1.2", full), null);
  assert.match(gatewayAddressRefusal("10.1.1.1", full) ?? "", /protected network 10\.0\.0\.0\/8/);
});

test("pushed-resolvers-are-refused-when-they-cannot-be-reached-through-the-tunnel", () => {
  assert.equal(pushedDnsRefusal("192.168.1.1", ["198.18.1.2"]), null);
  assert.match(pushedDnsRefusal("198.18.1.2", ["198.18.1.2"]) ?? "", /gateway's own address/);
  assert.match(pushedDnsRefusal("127.0.0.53", []) ?? "", /loopback/);
  assert.match(pushedDnsRefusal("2001:db8::53", []) ?? "", /IPv6/);
});

test("prefixes-compare-by-their-network-bits", () => {
  const p = (s: string) => {
    const r = parsePrefix(s);
    if (r === null) throw new Error(s);
    return r;
  };
  assert.ok(prefixCovers(p("0.0.0.0/0"), p("128.0.0.0/1")));
  assert.ok(!prefixCovers(p("198.19.0.0/24"), p("198.19.0.0/23")));
  assert.ok(prefixCovers(p("198.19.0.0/24"), p("198.19.0.77")));
  assert.ok(prefixesOverlap(p("198.19.0.0/23"), p("198.19.1.0/24")));
  assert.ok(!prefixCovers(p("::/0"), p("1.2.3.4")), "families never mix");
  assert.equal(parsePrefix("1.2.3.4/33"), null);
  assert.equal(parsePrefix("::/129"), null);
  assert.equal(parsePrefix("1.2.3.4/-1"), null);
});
