/**
 * The network key in the lab's client namespace: stable across lookups on the same network, and different when
 * only the public-facing path differs (here: the router beyond the local one toward gw1 versus toward gw3).
 */
import assert from "node:assert/strict";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as lab from "../../test/lab/lab.ts";
import type { LabTopology } from "../../test/lab/topology.ts";
import { networkId, publicPath } from "./netid.linux.ts";

const ID = "nid";
let topo: LabTopology;
let dir: string;

before(async () => {
  await lab.down(ID);
  // The hop beyond a real local router is a few milliseconds away; in the lab that hop is a gateway itself, so
  // the lab's user distances (250 ms to gw3) would stand for a router no real network has. 0 ms models it.
  await lab.up(ID, { distance: "none" });
  topo = lab.topologyOf(ID);
  dir = mkdtempSync(join(tmpdir(), "detour-nid-"));
  writeFileSync(join(dir, "resolv.conf"), "nameserver 198.18.100.53\nsearch corp.example\n");
});

after(async () => {
  rmSync(dir, { recursive: true, force: true });
  await lab.down(ID);
});

function gateway(name: string): string {
  const g = topo.gateways.find((x) => x.name === name);
  assert.ok(g !== undefined, `the lab has ${name}`);
  return g.address;
}

test("the-key-is-stable-and-the-public-facing-path-is-part-of-it", async () => {
  const ns = topo.client.ns;
  const resolvConf = join(dir, "resolv.conf");
  const gw1 = gateway("gw1");
  const gw3 = gateway("gw3");
  // Toward a gateway two hops away, the TTL-2 echo is answered by the gateway itself: the path differs by gateway.
  assert.equal(await publicPath(gw1, ns), gw1);
  assert.equal(await publicPath(gw3, ns), gw3);
  const keys = await Promise.all([0, 1, 2].map(() => networkId({ towards: gw1, resolvConf, netns: ns })));
  assert.equal(new Set(keys).size, 1, `three lookups on one network give one key: ${keys.join(", ")}`);
  // The same next hop (the lab router's MAC), source block and resolvers, but another public-facing path.
  const other = await networkId({ towards: gw3, resolvConf, netns: ns });
  assert.notEqual(other, keys[0], "another public-facing path is another network");
  const [local1, path1] = (keys[0] ?? "").split(".");
  const [local3, path3] = other.split(".");
  assert.equal(local1, local3, "the local part is the same network");
  assert.ok(path1 !== undefined && path3 !== undefined && path1 !== path3, "the path part tells them apart");
  // An unanswered probe (an address nobody routes) reads as "?" within the probe's budget.
  const t0 = Date.now();
  assert.equal(await publicPath("192.0.2.99", ns), "?");
  assert.ok(Date.now() - t0 < 1000, `the probe gives up quickly (${Date.now() - t0} ms)`);
});
