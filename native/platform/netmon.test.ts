import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  classifyPath,
  concernsUnderlay,
  Debounce,
  parseMonitorLine,
  pathFromDefaultRoutes,
  pathFromRouteGet,
} from "./netmon.ts";

/** Recorded from `ip monitor link address route` (iproute2 6.1) in a namespace while a move was made by hand. */
const RECORDED = readFileSync(new URL("./fixtures/ip-monitor-move.txt", import.meta.url), "utf8").split("\n");

/** Recorded lines of detourd's own doing: a tunnel device, its leg table, kernel-libipsec's table 220. */
const OWN = [
  "14: dt-l7: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel state UNKNOWN group default qlen 500",
  "14: dt-l7    inet 198.19.11.2/32 scope global dt-l7",
  "default dev dt-l7 table 5103 scope link ",
  "198.19.0.0/24 dev dt-l7 table 5000 scope link ",
  "198.19.0.0/24 dev ipsec0 table 220 proto static src 198.19.12.10 ",
  "Deleted 15: ipsec0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1400 qdisc fq_codel state UNKNOWN group default qlen 500",
  "local 198.18.0.9 dev ul0 table local proto kernel scope host src 198.18.0.2 ",
];

test("the-monitor's-recorded-lines-parse-into-links-addresses-and-routes", () => {
  const events = RECORDED.map(parseMonitorLine).filter((e) => e !== null);
  assert.ok(events.length >= 20, `parsed ${String(events.length)} events`);
  assert.deepEqual(parseMonitorLine("3: ul0@ul1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP"), {
    kind: "link",
    dev: "ul0",
    table: null,
    deleted: false,
  });
  assert.deepEqual(parseMonitorLine("Deleted 3: ul0    inet 198.18.0.2/24 scope global ul0"), {
    kind: "address",
    dev: "ul0",
    table: null,
    deleted: true,
  });
  assert.deepEqual(parseMonitorLine("Deleted default via 198.18.0.1 dev ul0 src 198.18.0.9 "), {
    kind: "route",
    dev: "ul0",
    table: null,
    deleted: true,
  });
  assert.equal(parseMonitorLine("    link/ether aa:8c:f4:2d:ac:ed brd ff:ff:ff:ff:ff:ff"), null, "continuation lines");
  assert.equal(parseMonitorLine("       valid_lft forever preferred_lft forever"), null);
  assert.equal(parseMonitorLine(""), null);
  assert.equal(parseMonitorLine("garbage without a device"), null);
});

test("the-underlay's-changes-count-and-detourd's-own-devices-and-tables-do-not", () => {
  const underlay = RECORDED.map(parseMonitorLine).filter((e) => e !== null && concernsUnderlay(e, "dt"));
  assert.ok(
    underlay.some((e) => e?.kind === "route" && e.deleted),
    "the deleted default route counts",
  );
  assert.ok(
    underlay.every((e) => e?.kind !== "route" || e.table === null),
    "only the main table's routes count (the 5001 route in the recording is left out)",
  );
  for (const line of OWN) {
    const e = parseMonitorLine(line);
    assert.ok(e !== null, line);
    assert.equal(concernsUnderlay(e, "dt"), false, line);
  }
});

test("the-path-is-read-from-ip-route-get-and-a-tunnel-device-is-no-underlay-path", () => {
  const get = JSON.parse(
    '[{"dst":"198.18.1.2","gateway":"198.18.0.1","dev":"ul0","prefsrc":"198.18.0.2","flags":[],"uid":0,"cache":[]}]',
  ) as unknown;
  assert.deepEqual(pathFromRouteGet(get, "dt"), { dev: "ul0", gateway: "198.18.0.1", source: "198.18.0.2" });
  const viaTunnel = JSON.parse('[{"dst":"198.18.1.2","dev":"dt-l3","prefsrc":"198.19.11.2","flags":[]}]') as unknown;
  assert.equal(pathFromRouteGet(viaTunnel, "dt"), null);
  assert.equal(pathFromRouteGet("nonsense", "dt"), null);
  assert.equal(pathFromRouteGet([], "dt"), null);
  const defaults = JSON.parse(
    '[{"dst":"default","gateway":"10.0.0.1","dev":"wlan0","metric":600,"flags":[]},' +
      '{"dst":"default","gateway":"192.168.1.1","dev":"eth0","metric":100,"flags":[]},' +
      '{"dst":"default","gateway":"192.168.9.1","dev":"eth1","metric":1,"flags":["linkdown"]}]',
  ) as unknown;
  assert.deepEqual(pathFromDefaultRoutes(defaults, "dt"), { dev: "eth0", gateway: "192.168.1.1", source: null });
  assert.equal(pathFromDefaultRoutes([], "dt"), null);
});

test("a-new-source-or-next-hop-is-a-path-change-no-route-is-offline-a-route-back-is-online", () => {
  const wifi = { dev: "ul0", gateway: "198.18.0.1", source: "198.18.0.2" };
  const moved = { ...wifi, source: "198.18.0.9" };
  const mobile = { dev: "ul1", gateway: "198.18.7.1", source: "198.18.7.2" };
  assert.equal(classifyPath(undefined, wifi), "online", "the first look reports what it found");
  assert.equal(classifyPath(undefined, null), "offline", "started offline");
  assert.equal(classifyPath(wifi, { ...wifi }), null, "the same path is no change");
  assert.equal(classifyPath(wifi, moved), "path-changed");
  assert.equal(classifyPath(wifi, mobile), "path-changed");
  assert.equal(classifyPath(wifi, null), "offline");
  assert.equal(classifyPath(null, null), null, "still offline is no news");
  assert.equal(classifyPath(null, mobile), "online");
});

test("a-burst-of-events-is-one-look-after-it-goes-quiet-or-after-the-bound", () => {
  const d = new Debounce(100, 500);
  assert.equal(d.dueAt(), null);
  assert.equal(d.note(0), 100);
  assert.equal(d.note(50), 150, "each event pushes the look back");
  for (let t = 100; t <= 600; t += 50) d.note(t);
  assert.equal(d.dueAt(), 500, "a burst that never goes quiet is looked at after the bound");
  d.clear();
  assert.equal(d.dueAt(), null);
  assert.equal(d.note(1000), 1100, "the next burst starts afresh");
});
