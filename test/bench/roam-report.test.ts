import assert from "node:assert/strict";
import { test } from "node:test";
import {
  parseRoamOptions,
  pingReplyTimes,
  restoredAfter,
  restoredFromGaps,
  roamMarkdown,
  type RoamRow,
} from "./roam-report.ts";

test("roam-options-pick-scenarios-and-long-runs-and-refuse-anything-else-with-a-reason", () => {
  assert.deepEqual(parseRoamOptions([]), { only: ["switch", "wake-30s", "wake-5min"], longRuns: null });
  assert.deepEqual(parseRoamOptions(["--only", "switch,wake-30s", "--long-runs=2"]), {
    only: ["switch", "wake-30s"],
    longRuns: 2,
  });
  assert.throws(() => parseRoamOptions(["--only", "teleport"]), /unknown scenario teleport/);
  assert.throws(() => parseRoamOptions(["--long-runs", "0"]), /whole number >= 1, got "0"/);
  assert.throws(() => parseRoamOptions(["--long-runs"]), /needs a value/);
  assert.throws(() => parseRoamOptions(["--fast"]), /unknown option --fast/);
});

test("time-to-traffic-is-the-first-reply-after-the-event-or-null-if-none-came", () => {
  const out = [
    "PING 198.19.0.1 (198.19.0.1) from 198.19.11.2 wc-x: 56(84) bytes of data.",
    "[1765100000.100000] 64 bytes from 198.19.0.1: icmp_seq=1 ttl=63 time=0.3 ms",
    "[1765100000.120500] 64 bytes from 198.19.0.1: icmp_seq=2 ttl=63 time=0.3 ms",
    "[1765100016.250000] 64 bytes from 198.19.0.1: icmp_seq=9 ttl=63 time=0.3 ms",
  ].join("\n");
  const t = pingReplyTimes(out);
  assert.deepEqual(t, [1765100000100, 1765100000121, 1765100016250]);
  assert.equal(restoredAfter(t, 1765100001000), 15250);
  assert.equal(restoredAfter(t, 1765100017000), null);
  const gaps = [{ fromAt: 1000, toAt: 1800, lost: 40, durationMs: 800 }];
  assert.equal(restoredFromGaps(gaps, 1200, 100), 600);
  assert.equal(restoredFromGaps(gaps, 3000, 100), 0, "no gap across the event: traffic never stopped");
  assert.equal(restoredFromGaps([{ fromAt: 1000, toAt: null, lost: 9, durationMs: 9 }], 1200, 5), null);
  assert.equal(restoredFromGaps([], 1200, 0), null, "nothing ever came back");
});

test("the-roam-table-shows-medians-failures-leaks-and-failovers-with-detours-verdict", () => {
  const rows: RoamRow[] = [
    {
      scenario: "switch",
      setup: "Detour",
      settings: "detourd",
      detour: true,
      ms: [400, 600, 800],
      failures: 1,
      leaked: [0, 0, 0, 0],
      failovers: [0, 1, 0, 0],
    },
    {
      scenario: "switch",
      setup: "WireGuard alone (roaming)",
      settings: "wg",
      detour: false,
      ms: [15000],
      failures: 0,
      leaked: [0],
      failovers: [],
    },
  ];
  const md = roamMarkdown(rows, "notes");
  assert.match(md, /\| \*\*Detour\*\* \| 600 ms \(not met\) \|/, "fast, but it recorded a failover");
  const detourRow = rows[0] ?? assert.fail("no row");
  const clean = roamMarkdown([{ ...detourRow, failovers: [0, 0, 0, 0] }], "");
  assert.match(clean, /\| \*\*Detour\*\* \| 600 ms \(met\) \|/);
  assert.match(md, /\| 1 of 4 \| 0 \| 1 \|/);
  assert.match(md, /\| WireGuard alone \(roaming\) \| 15000 ms \|.*\| n\/a \|/);
  assert.doesNotMatch(md, /Wake after/, "scenarios not run are left out");
});
