import assert from "node:assert/strict";
import { test } from "node:test";
import { parseChaosOptions } from "./chaos.ts";

test("chaos-bench-options-default-to-30-minutes-and-take-minutes-and-seed-both-ways", () => {
  assert.deepEqual(parseChaosOptions([]), { minutes: 30, seed: 20261207 });
  assert.deepEqual(parseChaosOptions(["--minutes", "3", "--seed=63"]), { minutes: 3, seed: 63 });
  assert.deepEqual(parseChaosOptions(["--minutes=1.5", "--seed", "0"]), { minutes: 1.5, seed: 0 });
});

test("chaos-bench-options-refuse-bad-values-naming-the-option", () => {
  assert.throws(() => parseChaosOptions(["--minutes", "0"]), /--minutes needs a number of minutes/);
  assert.throws(() => parseChaosOptions(["--minutes", "abc"]), /--minutes needs/);
  assert.throws(() => parseChaosOptions(["--seed", "-3"]), /--seed needs a whole number/);
  assert.throws(() => parseChaosOptions(["--seed", "1.5"]), /--seed needs a whole number/);
  assert.throws(() => parseChaosOptions(["--runs", "3"]), /unknown option "--runs"/);
});
