import assert from "node:assert/strict";
import { test } from "node:test";
import { distanceLegs, mangleScript } from "./distance.ts";
import { labTopology } from "./topology.ts";

test("user-distance-queues-both-directions-of-each-gateway-link-in-its-own-namespace", () => {
  const legs = distanceLegs(labTopology("lab"), "user");
  assert.equal(legs.length, 6, "two directions for each of three gateways");
  const gw3 = legs.filter((l) => l.gateway === "gw3");
  assert.deepEqual(
    gw3.map((l) => ({ ns: l.ns, dir: l.dir, delayMs: l.delayMs, jitterMs: l.jitterMs })),
    [
      { ns: "detour-lab-gw3", dir: "up", delayMs: 122, jitterMs: 6 },
      { ns: "detour-lab-gw3", dir: "down", delayMs: 122, jitterMs: 6 },
    ],
  );
  const [up, down] = gw3.map((l) => l.rules.map((r) => `${r.command} ${r.args.join(" ")}`));
  assert.equal(up?.[0], "iptables PREROUTING -i ul0 -j NFQUEUE --queue-num 10 --queue-bypass");
  assert.equal(up.at(-1), "ip6tables PREROUTING -i ul0 -j NFQUEUE --queue-num 10 --queue-bypass");
  assert.equal(down?.at(-1), "ip6tables POSTROUTING -o ul0 -j NFQUEUE --queue-num 11 --queue-bypass");
});

test("neighbour-discovery-crosses-the-link-undelayed-like-arp", () => {
  const [up] = distanceLegs(labTopology("lab"), "user");
  const rules = up?.rules ?? [];
  const ndp = rules.filter((r) => r.args.includes("--icmpv6-type"));
  assert.deepEqual(
    ndp.map((r) => r.args[r.args.indexOf("--icmpv6-type") + 1]),
    ["133", "134", "135", "136", "137"],
  );
  assert.ok(ndp.every((r) => r.command === "ip6tables" && r.args.at(-1) === "RETURN"));
  const lastException = rules.map((r) => r.args.at(-1)).lastIndexOf("RETURN");
  const queued = rules.findIndex((r) => r.command === "ip6tables" && r.args.includes("NFQUEUE"));
  assert.ok(queued > lastException, "the exceptions come before the queue rule");
});

test("no-distance-starts-nothing", () => {
  assert.deepEqual(distanceLegs(labTopology("lab"), "none"), []);
});

test("the-mangle-table-is-replaced-whole-so-applying-twice-adds-nothing", () => {
  assert.equal(
    mangleScript([["PREROUTING", "-i", "ul0", "-j", "NFQUEUE", "--queue-num", "10", "--queue-bypass"]]),
    "*mangle\n-A PREROUTING -i ul0 -j NFQUEUE --queue-num 10 --queue-bypass\nCOMMIT\n",
  );
});
