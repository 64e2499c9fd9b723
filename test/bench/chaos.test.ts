import assert from "node:assert/strict";
import { test } from "node:test";
import { parseChaosOptions } from "./chaos.ts";

test("chaos-bench-options-default-to-30-minutes-and-take-minutes-and-seed-both-ways", () => {
  const plain = { labId: "xbench", noDaemonKills: false };
  assert.deepEqual(parseChaosOptions([]), { minutes: 30, seed: 20261207, ...plain });
  assert.deepEqual(parseChaosOptions(["--minutes", "3", "--seed=63"]), { minutes: 3, seed: 63, ...plain });
  assert.deepEqual(parseChaosOptions(["--minutes=1.5", "--seed", "0"]), { minutes: 1.5, seed: 0, ...plain });
  assert.deepEqual(parseChaosOptions(["--no-daemon-kills", "--lab-id", "hsoak", "--minutes", "4"]), {
    minutes: 4,
    seed: 20261207,
    labId: "hsoak",
    noDaemonKills: true,
  });
});

test("chaos-bench-options-refuse-bad-values-naming-the-option", () => {
  assert.throws(() => parseChaosOptions(["--minutes", "0"]), /--minutes needs a number of minutes/);
  assert.throws(() => parseChaosOptions(["--minutes", "abc"]), /--minutes needs/);
  assert.throws(() => parseChaosOptions(["--seed", "-3"]), /--seed needs a whole number/);
  assert.throws(() => parseChaosOptions(["--seed", "1.5"]), /--seed needs a whole number/);
  assert.throws(() => parseChaosOptions(["--runs", "3"]), /unknown option "--runs"/);
  assert.throws(() => parseChaosOptions(["--lab-id", "Bad_Id"]), /lab id "Bad_Id" is invalid/);
});
