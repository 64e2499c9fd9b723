import assert from "node:assert/strict";
import { test } from "node:test";
import { sourceBlock } from "./netid.linux.ts";

test("the-source-block-is-what-one-network-hands-out", () => {
  assert.equal(sourceBlock("198.18.0.2"), "198.18.0.0/24");
  assert.equal(sourceBlock("192.168.1.203"), "192.168.1.0/24", "a new lease on the same network keeps the block");
  assert.equal(sourceBlock("2001:db8:18:1::2"), "2001:db8:18:1::/64");
  assert.equal(sourceBlock("2001:0DB8:0000:0001:0000:0000:0000:0002"), "2001:db8:0:1::/64");
  assert.equal(sourceBlock("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(sourceBlock(undefined), "?");
  assert.equal(sourceBlock("garbage"), "?");
});
