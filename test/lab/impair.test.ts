import assert from "node:assert/strict";
import { test } from "node:test";
import { delayPlans, nftRules, nftScript, validateSpec, type Impairment, type ImpairmentSpec } from "./impair.ts";

const imp = (i: ImpairmentSpec, id = "i1"): Impairment => ({ ...i, id });

test("block-on-a-gateway-drops-both-directions-of-that-protocol-only", () => {
  const rules = nftRules(imp({ kind: "block", target: "gw1", proto: "wireguard", dir: "both" }));
  assert.deepEqual(rules, [
    'oifname "to-gw1" udp dport 51820 counter drop comment "i1"',
    'iifname "to-gw1" udp sport 51820 counter drop comment "i1"',
  ]);
});

test("client-uplink-directions-are-seen-from-the-client", () => {
  const [up] = nftRules(imp({ kind: "block", target: "client", proto: "udp", dir: "up" }));
  assert.equal(up, 'iifname "to-client" meta l4proto udp counter drop comment "i1"');
});

test("reject-on-tls-answers-with-a-tcp-reset", () => {
  const rules = nftRules(imp({ kind: "reject", target: "gw2", proto: "tls", dir: "up" }));
  assert.deepEqual(rules, ['oifname "to-gw2" tcp dport 443 counter reject with tcp reset comment "i1"']);
});

test("ike-covers-both-ike-ports", () => {
  const [r] = nftRules(imp({ kind: "block", target: "gw3", proto: "ike", dir: "up" }));
  assert.match(r ?? "", /udp dport \{ 500, 4500 \}/);
});

test("loss-uses-hundredths-of-a-percent", () => {
  const [r] = nftRules(imp({ kind: "loss", target: "gw1", proto: "all", dir: "down", percent: 2.5 }));
  assert.equal(r, 'iifname "to-gw1" numgen random mod 10000 < 250 counter drop comment "i1"');
});

test("the-script-replaces-the-table-atomically", () => {
  const s = nftScript([]);
  assert.match(s, /^table inet detour_impair\ndelete table inet detour_impair\ntable inet detour_impair \{/);
  assert.match(s, /hook forward priority 0; policy accept;/);
});

test("an-impairment-covers-ipv6-too-unless-it-names-one-family", () => {
  // The table is inet: without a family match, a blocked gateway is blocked on both underlay families.
  const [both] = nftRules(imp({ kind: "block", target: "gw1", proto: "all", dir: "up" }));
  assert.equal(both, 'oifname "to-gw1" counter drop comment "i1"');
  assert.match(nftScript([]), /^table inet /);
  const [v4] = nftRules(imp({ kind: "block", target: "gw1", proto: "all", dir: "up", family: "ipv4" }));
  assert.equal(v4, 'oifname "to-gw1" meta nfproto ipv4 counter drop comment "i1"');
  const [v6] = nftRules(imp({ kind: "reject", target: "gw2", proto: "tls", dir: "up", family: "ipv6" }));
  assert.equal(v6, 'oifname "to-gw2" meta nfproto ipv6 tcp dport 443 counter reject with tcp reset comment "i1"');
  assert.throws(
    () => validateSpec({ kind: "block", target: "gw1", proto: "all", dir: "both", family: "ipx" as "ipv4" }),
    /family "ipx" is unknown/,
  );
});

test("delays-are-queued-by-iptables-and-ip6tables", () => {
  const [both] = delayPlans([
    imp({ kind: "delay", target: "gw1", proto: "wireguard", dir: "up", delayMs: 5, jitterMs: 0 }),
  ]);
  assert.deepEqual(
    both?.rules.map((r) => r.command),
    ["iptables", "ip6tables"],
  );
  const [v6] = delayPlans([
    imp({ kind: "delay", target: "gw1", proto: "wireguard", dir: "up", delayMs: 5, jitterMs: 0, family: "ipv6" }),
  ]);
  assert.deepEqual(
    v6?.rules.map((r) => r.command),
    ["ip6tables"],
  );
});

test("each-delay-gets-its-own-queue-and-both-directions", () => {
  const plans = delayPlans([
    imp({ kind: "delay", target: "gw1", proto: "all", dir: "both", delayMs: 50, jitterMs: 0 }, "i1"),
    imp({ kind: "block", target: "gw1", proto: "tls", dir: "both" }, "i2"),
    imp({ kind: "delay", target: "client", proto: "ike", dir: "up", delayMs: 10, jitterMs: 5 }, "i3"),
  ]);
  assert.equal(plans.length, 2);
  assert.deepEqual(
    plans.map((p) => p.queue),
    [100, 101],
  );
  assert.deepEqual(
    plans[0]?.rules.filter((r) => r.command === "iptables").map((r) => r.args),
    [
      ["-o", "to-gw1", "-j", "NFQUEUE", "--queue-num", "100", "--queue-bypass"],
      ["-i", "to-gw1", "-j", "NFQUEUE", "--queue-num", "100", "--queue-bypass"],
    ],
  );
  assert.deepEqual(
    plans[1]?.rules.filter((r) => r.command === "iptables").map((r) => r.args),
    [
      [
        "-i",
        "to-client",
        "-p",
        "udp",
        "-m",
        "multiport",
        "--dports",
        "500,4500",
        "-j",
        "NFQUEUE",
        "--queue-num",
        "101",
        "--queue-bypass",
      ],
    ],
  );
});

test("bad-impairments-are-refused-naming-the-field", () => {
  assert.throws(
    () => validateSpec({ kind: "loss", target: "gw1", proto: "all", dir: "both", percent: 0 }),
    /loss must be a percentage/,
  );
  assert.throws(
    () => validateSpec({ kind: "loss", target: "gw1", proto: "all", dir: "both", percent: 101 }),
    /loss must be a percentage/,
  );
  assert.throws(
    () => validateSpec({ kind: "delay", target: "gw1", proto: "all", dir: "both", delayMs: 1.5, jitterMs: 0 }),
    /delay must be whole milliseconds/,
  );
  assert.throws(
    () => validateSpec({ kind: "block", target: "gw7" as "gw1", proto: "all", dir: "both" }),
    /target "gw7" is unknown/,
  );
  assert.throws(
    () => validateSpec({ kind: "block", target: "gw1", proto: "icmp" as "all", dir: "both" }),
    /protocol "icmp" is unknown/,
  );
  assert.throws(
    () => validateSpec({ kind: "block", target: "gw1", proto: "all", dir: "sideways" as "up" }),
    /direction "sideways" is unknown/,
  );
});
