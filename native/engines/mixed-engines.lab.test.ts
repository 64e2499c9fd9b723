/** All three kinds of engine at once in one namespace, as a race runs them: each carries its own traffic. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { labEngineSpec } from "../../test/lab/engine-specs.ts";
import * as lab from "../../test/lab/lab.ts";
import { namespacePids } from "../../test/lab/netns.ts";
import { createEngine } from "./create-engine.ts";
import type { TunnelEngine } from "./engine.ts";
import { linkExists } from "../platform/link.linux.ts";

const ID = "mix";
/** Three engines starting together on two cores answer within a second; five leaves room for a loaded CI box. */
const START_DEADLINE_MS = 5000;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});
after(async () => {
  await lab.down(ID);
});

test("wireguard-ikev2-and-anyconnect-run-side-by-side-in-one-namespace", { timeout: 60_000 }, async () => {
  const topo = lab.topologyOf(ID);
  const state = lab.loadState(ID);
  const engines: TunnelEngine[] = [
    createEngine(labEngineSpec(topo, state, "gw1", "wireguard", { ifname: "dmix-wg" })),
    createEngine(labEngineSpec(topo, state, "gw2", "ikev2", { ifname: "dmix-ike" })),
    createEngine(labEngineSpec(topo, state, "gw3", "anyconnect-dtls", { ifname: "dmix-oc" })),
  ];
  try {
    const t0 = Date.now();
    const ups = await Promise.all(engines.map((e) => e.start(t0 + START_DEADLINE_MS)));
    console.log(
      `all three up: ${ups.map((u, i) => `${engines[i]?.protocol ?? "?"} on ${u.config.ifname} after ${u.timings.firstReplyAt - t0} ms`).join(", ")}`,
    );
    assert.equal(new Set(ups.map((u) => u.config.ifname)).size, 3, "each engine has its own device");
    for (const [i, e] of engines.entries()) {
      const s = await e.stats();
      assert.ok(
        s.rxBytes > 0 && s.txBytes > 0,
        `${e.protocol}: its device carried the probe both ways (${JSON.stringify(s)})`,
      );
      assert.ok(e.pid !== null, `${e.protocol} runs (${String(ups[i]?.config.ifname)})`);
    }
    await Promise.all(engines.map((e) => e.stop()));
    for (const u of ups)
      assert.equal(await linkExists(u.config.ifname, topo.client.ns), false, `${u.config.ifname} is gone after stop`);
    assert.deepEqual(await namespacePids(topo.client.ns), [], "no engine process is left in the client namespace");
  } finally {
    await Promise.all(engines.map((e) => e.stop()));
  }
});
