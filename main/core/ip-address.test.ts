import assert from "node:assert/strict";
import { isIP } from "node:net";
import { test } from "node:test";
import { canonicalIp, hostPort, ipFamily, isIpv6 } from "./ip-address.ts";

test("families-are-told-apart-and-junk-is-neither", () => {
  assert.equal(ipFamily("198.18.1.2"), "ipv4");
  assert.equal(ipFamily("2001:db8:18:1::2"), "ipv6");
  assert.equal(ipFamily("::"), "ipv6");
  assert.equal(ipFamily("::ffff:192.0.2.1"), "ipv6");
  for (const bad of [
    "",
    "gw1.example.test",
    "198.18.1",
    "2001:db8::1::2",
    "2001:db8:18:1::2/64",
    "fe80::1%eth0",
    "1:2:3:4:5:6:7:8:9",
    "[2001:db8::1]",
    "12345::1",
    ":1",
    "1:",
  ]) {
    assert.equal(ipFamily(bad), null, bad);
  }
});

test("the-ipv6-check-agrees-with-node-on-a-spread-of-literals", () => {
  const samples = [
    "::1",
    "1::",
    "1:2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1::8",
    "1:2:3:4:5:6:1.2.3.4",
    "1:2:3:4:5:6:7:1.2.3.4",
    "::1.2.3.4",
    "1:2:3:4:5:6:7:8:9",
    "1::2::3",
    "1:::2",
    "abcd:ef01::",
    "g::1",
    "1.2.3.4::",
  ];
  for (const s of samples) assert.equal(isIpv6(s), isIP(s) === 6, s);
});

test("ipv6-is-spelled-the-rfc-5952-way", () => {
  assert.equal(canonicalIp("2001:DB8:18:1:0:0:0:2"), "2001:db8:18:1::2");
  assert.equal(canonicalIp("2001:0db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1", "the first of two equal runs");
  assert.equal(canonicalIp("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1", "a single zero group stays");
  assert.equal(canonicalIp("198.18.1.2"), "198.18.1.2");
  assert.throws(() => canonicalIp("gw1"), /not an IP address/);
});

test("host-and-port-bracket-ipv6-only", () => {
  assert.equal(hostPort("198.18.1.2", 51820), "198.18.1.2:51820");
  assert.equal(hostPort("2001:db8:18:1::2", 51820), "[2001:db8:18:1::2]:51820");
});
