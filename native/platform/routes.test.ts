/** The routing commands Detour generates: exact command lines, idempotence of the plans, and refused inputs. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  PROTECTED_TABLE,
  planClearBatch,
  planInstallLegSource,
  planProtectedBatch,
  planRemoveLegSource,
  protectedRuleArgs,
  type LegSource,
} from "./routes.linux.ts";

const legA: LegSource = { ifname: "dt-l1", address: "198.19.11.2", table: 5101, pref: 101 };

test("every-rule-sits-below-kernel-libipsec-220", () => {
  assert.deepEqual(protectedRuleArgs(), ["lookup", String(PROTECTED_TABLE), "pref", "200"]);
  assert.throws(() => planInstallLegSource({ ...legA, pref: 200 }, []), /must be 1-199/);
  assert.throws(() => planInstallLegSource({ ...legA, pref: 220 }, []), /must be 1-199/);
});

test("fresh-leg-source-adds-its-table-route-then-its-rule", () => {
  assert.deepEqual(planInstallLegSource(legA, []), [
    ["-4", "route", "replace", "default", "dev", "dt-l1", "table", "5101"],
    ["-4", "rule", "add", "from", "198.19.11.2/32", "lookup", "5101", "pref", "101"],
  ]);
});

test("repeating-install-leg-source-adds-no-second-rule", () => {
  const present = [{ priority: 101, src: "198.19.11.2", table: "5101" }];
  assert.deepEqual(planInstallLegSource(legA, present), [
    ["-4", "route", "replace", "default", "dev", "dt-l1", "table", "5101"],
  ]);
});

test("a-stale-rule-at-the-legs-preference-is-replaced", () => {
  const stale = [{ priority: 101, src: "198.19.33.7", table: "5101" }];
  assert.deepEqual(planInstallLegSource(legA, stale), [
    ["-4", "route", "replace", "default", "dev", "dt-l1", "table", "5101"],
    ["-4", "rule", "del", "pref", "101", "from", "198.19.33.7/32", "lookup", "5101"],
    ["-4", "rule", "add", "from", "198.19.11.2/32", "lookup", "5101", "pref", "101"],
  ]);
});

test("commands-run-in-a-namespace-with-ip-n", () => {
  const [first] = planInstallLegSource({ ...legA, netns: "detour-rt-client" }, []);
  assert.deepEqual(first?.slice(0, 3), ["-n", "detour-rt-client", "-4"]);
  assert.deepEqual(planRemoveLegSource({ ...legA, netns: "detour-rt-client" }), [
    ["-n", "detour-rt-client", "-4", "rule", "del", "from", "198.19.11.2/32", "lookup", "5101", "pref", "101"],
    ["-n", "detour-rt-client", "-4", "route", "flush", "table", "5101"],
  ]);
});

test("protected-routes-swap-is-one-batch-of-replace-lines", () => {
  assert.equal(
    planProtectedBatch("dt-l2", ["198.19.0.0/24", "10.0.0.0/8"]),
    "route replace 198.19.0.0/24 dev dt-l2 table 5000\nroute replace 10.0.0.0/8 dev dt-l2 table 5000\n",
  );
  assert.equal(
    planProtectedBatch("dt-l2", ["198.19.0.0/24"], 5200),
    "route replace 198.19.0.0/24 dev dt-l2 table 5200\n",
  );
  assert.equal(planClearBatch(["198.19.0.0/24"]), "route del 198.19.0.0/24 table 5000\n");
});

test("protected-table-ends-up-exactly-the-configured-prefixes", () => {
  const present = [
    { dst: "198.19.0.0/24", dev: "dt-l1" },
    { dst: "198.19.9.0/24", dev: "dt-l1" },
    { dst: "198.19.0.7", dev: "dt-l1" },
  ];
  assert.equal(
    planProtectedBatch("dt-l2", ["198.19.0.0/24", "198.19.0.7/32"], PROTECTED_TABLE, present),
    "route replace 198.19.0.0/24 dev dt-l2 table 5000\nroute replace 198.19.0.7/32 dev dt-l2 table 5000\nroute del 198.19.9.0/24 table 5000\n",
    "replaces first, then drops the prefix no longer protected (a /32 printed without its length is the same route)",
  );
});

test("inputs-that-could-break-a-command-line-are-refused", () => {
  assert.throws(() => planProtectedBatch("dt-l2\nroute flush all", ["198.19.0.0/24"]), /invalid interface name/);
  assert.throws(() => planProtectedBatch("dt-l2", ["198.19.0.0/24 dev lo"]), /invalid IPv4 prefix/);
  assert.throws(() => planProtectedBatch("dt-l2", ["198.19.0.0/33"]), /invalid IPv4 prefix/);
  assert.throws(() => planProtectedBatch("dt-l2", ["198.19.0.0/24"], 254), /reserved/);
  assert.throws(() => planProtectedBatch("dt-l2", ["198.19.0.0/24"], 220), /reserved/);
  assert.throws(() => planInstallLegSource({ ...legA, address: "198.19.11.2/32" }, []), /without prefix length/);
  assert.throws(() => planInstallLegSource({ ...legA, table: PROTECTED_TABLE }, []), /protected networks/);
  assert.throws(() => planInstallLegSource({ ...legA, ifname: "a-name-longer-than-15" }, []), /invalid interface name/);
});

test("full-tunnel-throws-every-gateway-out-of-the-table-in-the-same-batch-before-the-default-route", () => {
  assert.equal(
    planProtectedBatch("dt-l1", ["0.0.0.0/0"], PROTECTED_TABLE, [], ["198.18.1.2/32", "198.18.2.2"]),
    "route replace throw 198.18.1.2/32 table 5000\nroute replace throw 198.18.2.2/32 table 5000\nroute replace 0.0.0.0/0 dev dt-l1 table 5000\n",
  );
});

test("a-swap-keeps-the-throws-and-drops-those-of-gateways-no-longer-covered", () => {
  const present = [
    { dst: "0.0.0.0/0", dev: "dt-l1" },
    { dst: "198.18.1.2", dev: "", type: "throw" as const },
    { dst: "198.18.9.2", dev: "", type: "throw" as const },
  ];
  assert.equal(
    planProtectedBatch("dt-l2", ["0.0.0.0/0"], PROTECTED_TABLE, present, ["198.18.1.2/32"]),
    "route replace throw 198.18.1.2/32 table 5000\nroute replace 0.0.0.0/0 dev dt-l2 table 5000\nroute del 198.18.9.2 table 5000\n",
    "a throw printed without its length is the same entry; one no longer asked for goes",
  );
});

test("a-bypass-wins-over-a-protected-route-to-the-same-address", () => {
  assert.equal(
    planProtectedBatch("dt-l1", ["198.18.1.2/32", "198.19.0.0/24"], PROTECTED_TABLE, [], ["198.18.1.2"]),
    "route replace throw 198.18.1.2/32 table 5000\nroute replace 198.19.0.0/24 dev dt-l1 table 5000\n",
  );
});

test("clearing-removes-the-routes-first-and-the-throws-last", () => {
  assert.equal(
    planClearBatch(["0.0.0.0/0"], PROTECTED_TABLE, ["198.18.1.2/32", "198.18.2.2/32"]),
    "route del 0.0.0.0/0 table 5000\nroute del 198.18.1.2/32 table 5000\nroute del 198.18.2.2/32 table 5000\n",
  );
});

test("a-bypass-that-is-not-one-ipv4-address-is-refused", () => {
  assert.throws(
    () => planProtectedBatch("dt-l1", ["0.0.0.0/0"], PROTECTED_TABLE, [], ["198.18.0.0/16"]),
    /invalid gateway bypass/,
  );
  assert.throws(
    () => planProtectedBatch("dt-l1", ["0.0.0.0/0"], PROTECTED_TABLE, [], ["2001:db8::1"]),
    /invalid gateway bypass/,
  );
  assert.throws(
    () => planClearBatch(["0.0.0.0/0"], PROTECTED_TABLE, ["198.18.1.2 table 254"]),
    /invalid gateway bypass/,
  );
});

test("an-allowed-local-network-is-thrown-out-of-the-protected-table-with-the-routes-in-one-batch", () => {
  assert.equal(
    planProtectedBatch("dt-l1", ["172.16.0.0/12"], PROTECTED_TABLE, [], [], ["172.17.0.0/16"]),
    "route replace throw 172.17.0.0/16 table 5000\nroute replace 172.16.0.0/12 dev dt-l1 table 5000\n",
  );
  // After a move: the new network's throw goes in, the old one's goes.
  const present = [
    { dst: "172.16.0.0/12", dev: "dt-l1" },
    { dst: "172.17.0.0/16", dev: "", type: "throw" as const },
  ];
  assert.equal(
    planProtectedBatch("dt-l1", ["172.16.0.0/12"], PROTECTED_TABLE, present, [], ["172.20.1.0/24"]),
    "route replace throw 172.20.1.0/24 table 5000\nroute replace 172.16.0.0/12 dev dt-l1 table 5000\nroute del 172.17.0.0/16 table 5000\n",
  );
  assert.equal(
    planClearBatch(["172.16.0.0/12"], PROTECTED_TABLE, [], ["172.17.0.0/16"]),
    "route del 172.16.0.0/12 table 5000\nroute del 172.17.0.0/16 table 5000\n",
  );
});

test("a-local-network-never-displaces-a-protected-route-of-the-same-prefix-and-bad-prefixes-are-refused", () => {
  assert.equal(
    planProtectedBatch("dt-l1", ["172.17.0.0/16"], PROTECTED_TABLE, [], [], ["172.17.0.0/16"]),
    "route replace 172.17.0.0/16 dev dt-l1 table 5000\n",
  );
  assert.throws(
    () => planProtectedBatch("dt-l1", ["172.16.0.0/12"], PROTECTED_TABLE, [], [], ["172.17.0.0/16 dev lo"]),
    /invalid IPv4 prefix/,
  );
});
