/** The device lookup that spares connects an `ip` process: /proc/net/dev parsing and the fast path's answer. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { configureLink, devicesHere, linkExists, parseNetDev, sysfsLinkCounters } from "./link.linux.ts";

const SAMPLE = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0
dlab-l21:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 99 1 0 0 0 0 0 0 99 1 0 0 0 0 0 0
`;

test("net-dev-parsing-finds-every-device-and-no-header", () => {
  assert.deepEqual([...parseNetDev(SAMPLE)].sort(), ["dlab-l21", "eth0", "lo"]);
  assert.equal(parseNetDev("").size, 0);
});

test("the-fast-path-sees-this-namespace-s-devices", async () => {
  const here = devicesHere();
  assert.ok(here?.has("lo"), "lo is in every namespace");
  assert.equal(await linkExists("lo"), true);
  assert.equal(await linkExists("detour-none-0"), false);
});

test("configure-link-refuses-a-name-that-would-smuggle-a-batch-line", async () => {
  await assert.rejects(configureLink("lo\nroute flush", "198.19.0.2/32", 1420), /bad device or address/);
  await assert.rejects(configureLink("lo", "198.19.0.2/32 dev eth0", 1420), /bad device or address/);
});

test("sysfs-counters-are-read-for-a-real-device-name-only", () => {
  const root = mkdtempSync(join(tmpdir(), "detour-sysfs-"));
  try {
    const stats = join(root, "dt-l1", "statistics");
    mkdirSync(stats, { recursive: true });
    for (const [f, v] of [
      ["rx_bytes", "1200\n"],
      ["tx_bytes", "3400\n"],
      ["rx_packets", "12\n"],
      ["tx_packets", "34\n"],
    ] as const)
      writeFileSync(join(stats, f), v);
    assert.deepEqual(sysfsLinkCounters("dt-l1", root), { rxBytes: 1200, txBytes: 3400, rxPackets: 12, txPackets: 34 });
    assert.equal(sysfsLinkCounters("dt-l2", root), null, "no such device");
    assert.equal(sysfsLinkCounters("../dt-l1", root), null, "a path is not a device name");
    assert.equal(sysfsLinkCounters("..", root), null);
    writeFileSync(join(stats, "tx_packets"), "lots\n");
    assert.equal(sysfsLinkCounters("dt-l1", root), null, "a counter that is not a number");
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
