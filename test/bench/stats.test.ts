import assert from "node:assert/strict";
import { test } from "node:test";
import { fmtSummary, summarize } from "./stats.ts";

test("median-and-quartiles-interpolate-between-runs", () => {
  const s = summarize([40, 10, 30, 20]);
  assert.equal(s.median, 25);
  assert.equal(s.p25, 17.5);
  assert.equal(s.p75, 32.5);
  assert.equal(s.p10, 13);
  assert.equal(s.p90, 37);
  assert.deepEqual([s.min, s.max, s.n], [10, 40, 4]);
});

test("failed-runs-are-left-out-and-said", () => {
  assert.equal(summarize([NaN, 5]).n, 1);
  assert.equal(fmtSummary(summarize([])), "no successful run");
});
