import assert from "node:assert/strict";
import { test } from "node:test";
import { DRILL_TABLE, renderDrillApply, renderDrillBlock } from "./drill-firewall.linux.ts";

const GW1 = [
  { address: "198.18.1.2", protocol: "udp" as const, port: 51820 },
  { address: "198.18.1.2", protocol: "tcp" as const, port: 443 },
  { address: "198.18.1.2", protocol: "udp" as const, port: 51820 },
];

test("the block drops every endpoint both ways, once each, in a table of its own", () => {
  const text = renderDrillBlock("gw1", GW1);
  assert.match(text, new RegExp(`^table inet ${DRILL_TABLE} \\{`));
  assert.notEqual(DRILL_TABLE, "detour_killswitch");
  assert.equal(text.match(/ip daddr 198\.18\.1\.2 udp dport 51820 counter drop/g)?.length, 1);
  assert.equal(text.match(/ip saddr 198\.18\.1\.2 udp sport 51820 counter drop/g)?.length, 1);
  assert.match(text, /ip daddr 198\.18\.1\.2 tcp dport 443 counter drop/);
  assert.match(text, /ip saddr 198\.18\.1\.2 tcp sport 443 counter drop/);
  assert.match(text, /hook output priority filter - 10/);
  assert.match(text, /hook input priority filter - 10/);
});

test("applying replaces any earlier block in the same transaction", () => {
  assert.match(
    renderDrillApply("gw1", GW1),
    /^add table inet detour_drill\ndelete table inet detour_drill\ntable inet detour_drill \{/,
  );
});

test("anything that is not an endpoint never reaches nft", () => {
  assert.throws(() => renderDrillBlock("gw1", []), /no endpoints/);
  assert.throws(() => renderDrillBlock('gw1"; flush ruleset', GW1), /invalid gateway name/);
  assert.throws(
    () => renderDrillBlock("gw1", [{ address: "198.18.1.2; drop", protocol: "udp", port: 1 }]),
    /invalid address/,
  );
  assert.throws(() => renderDrillBlock("gw1", [{ address: "198.18.1.2", protocol: "udp", port: 0 }]), /invalid port/);
  assert.throws(
    () => renderDrillBlock("gw1", [{ address: "198.18.1.2", protocol: "icmp" as "udp", port: 1 }]),
    /invalid protocol/,
  );
});
