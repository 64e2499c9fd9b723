/** The MSS clamp's nftables text and the device MTUs derived from a path, without touching the host. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { wireguardDeviceMtu, WIREGUARD_MTU } from "../engines/wireguard/wireguard-engine.ts";
import { MSS_TABLE, probeSize, renderMssClamp, setLinkMtu } from "./mss.linux.ts";

test("the-clamp-rewrites-syns-through-the-tunnel-devices-both-ways-in-a-table-replaced-atomically", () => {
  const t = renderMssClamp(["dt-*", "ipsec*"]);
  assert.match(t, new RegExp(`^add table inet ${MSS_TABLE}\\ndelete table inet ${MSS_TABLE}\\n`));
  assert.match(t, /oifname \{ "dt-\*", "ipsec\*" \} tcp flags syn tcp option maxseg size set rt mtu/);
  assert.match(t, /iifname \{ "dt-\*", "ipsec\*" \} tcp flags syn tcp option maxseg size set rt mtu/);
  assert.match(t, /hook postrouting priority mangle/);
  assert.match(t, /hook forward priority mangle/);
});

test("a-device-name-that-is-not-one-is-refused-before-it-reaches-nft", async () => {
  for (const bad of ['lo" accept; #', "a b", "", "x".repeat(16), "*", "dt-*-x*"])
    assert.throws(() => renderMssClamp([bad]), /invalid device pattern/, bad);
  await assert.rejects(setLinkMtu("lo; reboot", 1400), /invalid device name/);
  await assert.rejects(setLinkMtu("dt-l1", 100), /MTU 100 is not/);
  assert.throws(
    () => probeSize({ ifname: "dt-l1", target: "198.19.0.1; id", size: 1400, count: 1, intervalMs: 10, waitMs: 10 }),
    /invalid address/,
  );
});

test("wireguard-takes-its-mtu-from-the-path-and-keeps-1420-when-the-path-is-unknown", () => {
  assert.equal(wireguardDeviceMtu(null, "198.18.1.2"), WIREGUARD_MTU);
  assert.equal(wireguardDeviceMtu({ mtu: 1500, dev: "eth0", source: "device" }, "198.18.1.2"), 1440);
  assert.equal(wireguardDeviceMtu({ mtu: 1500, dev: "eth0", source: "device" }, "2001:db8::2"), 1420);
  assert.equal(wireguardDeviceMtu({ mtu: 1492, dev: "ppp0", source: "device" }, "198.18.1.2"), 1432, "PPPoE");
  assert.equal(wireguardDeviceMtu({ mtu: 1400, dev: "eth0", source: "route" }, "198.18.1.2"), 1340);
});
