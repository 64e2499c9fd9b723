import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { TimeoutError, withTimeout } from "./with-timeout.ts";

const timersArmed = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;

test("an-answer-in-time-is-passed-on-and-leaves-no-timer-armed", async () => {
  const before = timersArmed();
  assert.equal(await withTimeout(Promise.resolve(42), 60_000, "status"), 42);
  assert.equal(timersArmed(), before, "the minute-long timer was cleared with the answer");
});

test("a-failure-in-time-is-passed-on-unchanged-and-clears-the-timer", async () => {
  const before = timersArmed();
  const cause = new Error("engine said no");
  await assert.rejects(withTimeout(Promise.reject(cause), 60_000, "connect"), (e) => e === cause);
  assert.equal(timersArmed(), before);
});

test("no-answer-within-the-bound-rejects-with-a-timeout-naming-what-and-how-long", async () => {
  const never = new Promise<never>(() => undefined);
  await assert.rejects(
    withTimeout(never, 20, "disconnect"),
    (e) =>
      e instanceof TimeoutError &&
      e.message === "disconnect did not answer within 20 ms" &&
      e.ms === 20 &&
      e.what === "disconnect",
  );
});

test("an-answer-after-the-timeout-changes-nothing", async () => {
  const late = sleep(40).then(() => "late");
  await assert.rejects(withTimeout(late, 10, "race"), TimeoutError);
  assert.equal(await late, "late");
});

test("work-given-as-a-function-that-throws-at-once-rejects-like-any-other-failure", async () => {
  const before = timersArmed();
  await assert.rejects(
    withTimeout(
      () => {
        throw new Error("bad handler");
      },
      60_000,
      "gateways",
    ),
    /bad handler/,
  );
  assert.equal(await withTimeout(() => Promise.resolve("ok"), 60_000, "gateways"), "ok");
  assert.equal(timersArmed(), before);
});
