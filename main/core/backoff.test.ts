import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom } from "../../test/fakes/seeded-random.ts";
import { backoffCeilingMs, backoffMs, NO_JITTER } from "./backoff.ts";

const P = { initialMs: 1000, maxMs: 30_000 };

test("steps-double-from-the-first-wait-up-to-the-cap", () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7].map((n) => backoffCeilingMs(n, P)),
    [0, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000],
  );
});

test("a-very-long-outage-stays-at-the-cap-without-overflow", () => {
  for (const n of [60, 1000, 1e9, Number.MAX_SAFE_INTEGER]) assert.equal(backoffCeilingMs(n, P), 30_000);
  assert.equal(
    backoffMs(1e9, P, () => 0.5),
    22_500,
  );
});

test("without-jitter-the-wait-is-the-step-itself", () => {
  assert.deepEqual(
    [1, 2, 3].map((n) => backoffMs(n, P, NO_JITTER)),
    [1000, 2000, 4000],
  );
});

test("jitter-keeps-every-wait-in-the-upper-half-of-its-step", () => {
  assert.equal(
    backoffMs(3, P, () => 0.5),
    3000,
  );
  assert.equal(
    backoffMs(3, P, () => 0.999_999),
    2000,
  );
  const random = seededRandom(14);
  for (let n = 1; n <= 12; n++) {
    const ceiling = backoffCeilingMs(n, P);
    for (let i = 0; i < 200; i++) {
      const w = backoffMs(n, P, random);
      assert.ok(w >= ceiling / 2 && w <= ceiling, `failure ${n}: ${w} ms outside [${ceiling / 2}, ${ceiling}]`);
    }
  }
});

test("a-fleet-failing-together-retries-spread-over-half-a-step-not-in-lockstep", () => {
  // 1000 devices lose the collector at the same moment; their third retries land across a 4 s step's upper half.
  const random = seededRandom(7);
  const waits = Array.from({ length: 1000 }, () => backoffMs(3, P, random));
  const perSecond = new Map<number, number>();
  for (const w of waits) perSecond.set(Math.floor(w / 1000), (perSecond.get(Math.floor(w / 1000)) ?? 0) + 1);
  assert.ok(Math.min(...waits) < 2100 && Math.max(...waits) > 3900, "the whole band is used");
  assert.ok(
    Math.max(...perSecond.values()) < 600,
    `no second takes most of the fleet: ${JSON.stringify([...perSecond])}`,
  );
});

test("a-random-source-out-of-range-cannot-push-a-wait-out-of-its-band", () => {
  for (const bad of [Number.NaN, -1, 1, 7])
    assert.equal(
      backoffMs(2, P, () => bad),
      2000,
    );
});

test("nothing-waits-before-the-first-failure", () => {
  assert.equal(
    backoffMs(0, P, () => 0.5),
    0,
  );
  assert.equal(backoffMs(-3, P, NO_JITTER), 0);
});
