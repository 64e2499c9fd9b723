/** The tunnel MTU arithmetic per protocol, and the black-hole search against paths of known size. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { MIN_TUNNEL_MTU, SMALL_PROBE_SIZE, checkPath, espInnerMtu, wireguardMtu } from "./mtu.ts";

test("wireguard-leaves-60-bytes-over-ipv4-and-80-over-ipv6", () => {
  assert.equal(wireguardMtu(1500, 4), 1440);
  assert.equal(wireguardMtu(1500, 6), 1420);
  assert.equal(wireguardMtu(1492, 4), 1432, "PPPoE");
});

test("esp-in-udp-fits-its-padded-packet-in-the-path", () => {
  for (const path of [1500, 1492, 1400, 1280]) {
    for (const family of [4, 6] as const) {
      const inner = espInnerMtu(path, family);
      // The ESP packet of the largest inner packet: IP + UDP + ESP + IV + (inner + 2 padded to 16) + ICV.
      const outer = (family === 4 ? 20 : 40) + 8 + 8 + 16 + Math.ceil((inner + 2) / 16) * 16 + 16;
      assert.ok(outer <= path, `${String(path)}/${String(family)}: ${String(outer)} fits`);
      assert.ok(outer + 16 > path, `${String(path)}/${String(family)}: no larger inner packet would fit`);
    }
  }
});

/** A path that carries sizes up to `limit` (and small echoes unless `dead`), counting the probes. */
function path(limit: number, dead = false): { probe: (size: number) => Promise<boolean>; sizes: number[] } {
  const sizes: number[] = [];
  return {
    sizes,
    probe: (size) => {
      sizes.push(size);
      return Promise.resolve(!dead && size <= limit);
    },
  };
}

test("a-path-that-carries-the-full-size-is-confirmed-with-one-probe", async () => {
  const p = path(1500);
  assert.deepEqual(await checkPath(1440, p.probe), { kind: "ok", mtu: 1440 });
  assert.deepEqual(p.sizes, [1440]);
});

test("a-black-hole-lowers-to-exactly-the-largest-size-that-crosses-in-a-bounded-number-of-probes", async () => {
  for (const limit of [1280, 1281, 1340, 1399, 1439]) {
    const p = path(limit);
    assert.deepEqual(await checkPath(1440, p.probe), { kind: "lowered", from: 1440, mtu: limit });
    assert.ok(p.sizes.length <= 3 + 8, `${String(limit)}: ${String(p.sizes.length)} probes`);
    assert.equal(p.sizes[1], SMALL_PROBE_SIZE, "a small echo tells a black hole from a dead tunnel first");
  }
});

test("nothing-of-1280-bytes-crossing-is-a-black-hole-and-a-silent-tunnel-is-not", async () => {
  assert.deepEqual(await checkPath(1440, path(1200).probe), { kind: "black-hole", from: 1440 });
  assert.deepEqual(await checkPath(MIN_TUNNEL_MTU, path(1200).probe), { kind: "black-hole", from: MIN_TUNNEL_MTU });
  const dead = path(1500, true);
  assert.deepEqual(await checkPath(1440, dead.probe), { kind: "silent", mtu: 1440 });
  assert.deepEqual(dead.sizes, [1440, SMALL_PROBE_SIZE]);
});
