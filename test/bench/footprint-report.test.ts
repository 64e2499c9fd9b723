import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bytesPerSecond,
  footprintMarkdown,
  statTicks,
  statusField,
  windowCost,
  type FootprintRow,
  type ProcReading,
} from "./footprint-report.ts";

test("cpu-ticks-are-read-past-a-process-name-with-spaces-and-parens", () => {
  const stat = "4242 (node (detourd) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 11 0 100 0 0";
  assert.equal(statTicks(stat), 1234 + 567);
  assert.throws(() => statTicks("1 (x) S"), /cannot read CPU ticks/);
});

test("status-fields-are-numbers-or-null", () => {
  const status = "Name:\tnode\nVmRSS:\t   61234 kB\nvoluntary_ctxt_switches:\t812\nnonvoluntary_ctxt_switches:\t9\n";
  assert.equal(statusField(status, "VmRSS"), 61234);
  assert.equal(statusField(status, "voluntary_ctxt_switches"), 812);
  assert.equal(statusField(status, "VmSwap"), null);
});

test("a-window-counts-only-processes-present-at-both-ends", () => {
  const r = (ticks: number, voluntary: number, rssKiB: number): ProcReading => ({ ticks, voluntary, rssKiB });
  const start = new Map([
    [1, r(100, 1000, 50_000)],
    [2, r(10, 10, 5000)],
  ]);
  const end = new Map([
    [1, r(130, 1300, 51_200)], // 30 ticks = 0.3 s of CPU in 60 s: 0.5 %
    [3, r(500, 500, 9000)], // started inside the window: no start reading
  ]);
  const c = windowCost(start, end, 60_000);
  assert.ok(Math.abs(c.cpuPct - 0.5) < 1e-9, String(c.cpuPct));
  assert.equal(c.wakeupsPerS, 5);
  assert.equal(c.rssKiB, 51_200);
  assert.throws(() => windowCost(start, end, 0), /must last/);
  assert.deepEqual(bytesPerSecond({ rx: 0, tx: 100 }, { rx: 6000, tx: 100 }, 60_000), { rx: 100, tx: 0 });
});

test("the-table-gives-medians-and-says-which-idle-targets-are-met", () => {
  const w = (cpuPct: number, wakeupsPerS: number, rssMiB: number): FootprintRow["windows"][number] => ({
    cpuPct,
    wakeupsPerS,
    rssKiB: rssMiB * 1024,
  });
  const rows: FootprintRow[] = [
    {
      scenario: "idle",
      group: "detourd",
      windows: [w(0.4, 30, 90), w(0.6, 40, 92), w(0.5, 35, 91)],
      tunnel: [{ rx: 180, tx: 190 }],
      probe: [{ rx: 80, tx: 90 }],
    },
    { scenario: "idle", group: "engines", windows: [w(1, 10, 20)], tunnel: [] },
  ];
  const md = footprintMarkdown(rows, "notes");
  assert.match(md, /\| idle \| \*\*detourd\*\* \| 0\.50 % \(0\.40-0\.60\) \| 35\.0 \(30\.0-40\.0\) \| 91\.0 MiB/);
  assert.match(md, /\| CPU \| 0\.50 % \| <= 0\.5 % \| met \|/);
  assert.match(md, /\| RSS \| 91\.0 MiB \| <= 60 MiB \| \*\*missed\*\* \|/);
  assert.match(md, /\| wake-ups \| 35\.0\/s \| <= 5\/s \| \*\*missed\*\* \|/);
  assert.match(md, /\| probe traffic, busier direction \| 90 B\/s \| <= 100 B\/s \| met \|/);
  assert.match(md, /\| idle \| its engines and helpers \| 1\.00 % \(1\.00-1\.00\) \| 10\.0 .* \| - \| - \| 1 \|/);
  assert.match(md, /\| 180 \/ 190 \| 80 \/ 90 \| 3 \|/, "tunnel bytes and, of which, probe bytes");
});

test("start-up-times-get-a-table-of-their-own-per-runtime-measured", () => {
  const md = footprintMarkdown([], "notes", { bundle: [300, 250, 280], tsx: [1200, 1100, 1300] });
  assert.match(md, /\| esbuild bundle on plain node .* \| 280 ms \| 250-300 ms \| 3 \|/);
  assert.match(md, /\| TypeScript through tsx .* \| 1200 ms \| 1100-1300 ms \| 3 \|/);
  assert.doesNotMatch(footprintMarkdown([], "notes"), /Start-up/);
  assert.doesNotMatch(footprintMarkdown([], "notes", { bundle: [300] }), /tsx/);
});
