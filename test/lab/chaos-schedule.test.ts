import assert from "node:assert/strict";
import { test } from "node:test";
import {
  FAULT_WEIGHTS,
  GAP_MIN_MS,
  LEAD_IN_MS,
  QUIET_END_MS,
  formatSchedule,
  planSchedule,
  prng,
  type FaultKind,
} from "./chaos-schedule.ts";

test("the-same-seed-gives-the-same-schedule-and-another-seed-another", () => {
  const a = planSchedule(42, 30 * 60_000);
  assert.deepEqual(planSchedule(42, 30 * 60_000), a);
  assert.equal(formatSchedule(42, a), formatSchedule(42, planSchedule(42, 30 * 60_000)));
  assert.notDeepEqual(planSchedule(43, 30 * 60_000), a);
});

test("the-prng-is-uniform-enough-and-stays-in-range", () => {
  const r = prng(7);
  const buckets = new Array<number>(10).fill(0);
  for (let i = 0; i < 10_000; i++) {
    const v = r();
    assert.ok(v >= 0 && v < 1);
    buckets[Math.floor(v * 10)] = (buckets[Math.floor(v * 10)] ?? 0) + 1;
  }
  for (const b of buckets) assert.ok(b > 850 && b < 1150, `bucket ${b}`);
});

test("faults-start-after-the-lead-in-and-every-timed-fault-ends-before-the-quiet-end", () => {
  for (const seed of [1, 2, 3, 1234, 0xffffffff]) {
    const duration = 3 * 60_000;
    const s = planSchedule(seed, duration);
    assert.ok(s.length >= 8, `a 3-minute soak has several faults (${s.length})`);
    let prev = -Infinity;
    for (const { atMs, fault } of s) {
      assert.ok(atMs >= LEAD_IN_MS && atMs >= prev + GAP_MIN_MS);
      prev = atMs;
      if ("forMs" in fault) assert.ok(atMs + fault.forMs <= duration - QUIET_END_MS, JSON.stringify(fault));
    }
  }
});

test("a-30-minute-schedule-holds-every-kind-of-fault-and-enough-gateway-kills-for-50-failovers", () => {
  const s = planSchedule(20261207, 30 * 60_000);
  const kinds = new Set<FaultKind>(s.map((x) => x.fault.kind));
  for (const k of Object.keys(FAULT_WEIGHTS)) assert.ok(kinds.has(k as FaultKind), `missing ${k}`);
  const kills = s.filter((x) => x.fault.kind === "kill-gateway" || x.fault.kind === "flap-gateway").length;
  assert.ok(kills >= 50, `gateway kills and flaps: ${kills}`);
});

test("bad-seeds-and-too-short-runs-are-refused-with-a-clear-error", () => {
  assert.throws(() => planSchedule(-1, 60_000), /seed must be a whole number/);
  assert.throws(() => planSchedule(1.5, 60_000), /seed must be a whole number/);
  assert.throws(() => planSchedule(1, 1000), /must last at least/);
});
