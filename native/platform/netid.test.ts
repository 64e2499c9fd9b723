import assert from "node:assert/strict";
import { test } from "node:test";
import { hopFromPing, sourceBlock } from "./netid.linux.ts";

test("the-source-block-is-what-one-network-hands-out", () => {
  assert.equal(sourceBlock("198.18.0.2"), "198.18.0.0/24");
  assert.equal(sourceBlock("192.168.1.203"), "192.168.1.0/24", "a new lease on the same network keeps the block");
  assert.equal(sourceBlock("2001:db8:18:1::2"), "2001:db8:18:1::/64");
  assert.equal(sourceBlock("2001:0DB8:0000:0001:0000:0000:0000:0002"), "2001:db8:0:1::/64");
  assert.equal(sourceBlock("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(sourceBlock(undefined), "?");
  assert.equal(sourceBlock("garbage"), "?");
});

test("the-public-facing-hop-is-read-from-a-ttl-2-echo", () => {
  const exceeded =
    "PING 198.18.1.2 (198.18.1.2) 56(84) bytes of data.\nFrom 198.18.0.1 icmp_seq=1 Time to live exceeded\n\n--- 198.18.1.2 ping statistics ---\n";
  assert.equal(hopFromPing(exceeded), "198.18.0.1");
  const reached =
    "PING 198.18.1.2 (198.18.1.2) 56(84) bytes of data.\n64 bytes from 198.18.1.2: icmp_seq=1 ttl=63 time=0.110 ms\n";
  assert.equal(hopFromPing(reached), "198.18.1.2", "a gateway two hops away answers itself");
  assert.equal(hopFromPing("From 2001:db8:18::1 icmp_seq=1 Time to live exceeded\n"), "2001:db8:18::1");
  assert.equal(
    hopFromPing("PING x\n\n--- x ping statistics ---\n1 packets transmitted, 0 received, 100% packet loss\n"),
    "?",
  );
  assert.equal(hopFromPing(""), "?");
});
