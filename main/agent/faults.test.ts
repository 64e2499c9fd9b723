/**
 * detourd's reaction to faults that reach the top, by kind: a rejection is reported and the daemon runs on; an
 * uncaught exception is reported and stops it through the guarded shutdown, even when reporting fails.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { test } from "node:test";
import { EXIT_FAULT, installFaultHandlers, type FaultHandling } from "./faults.ts";

function rig(reportThrows = false): { proc: EventEmitter; seen: string[] } {
  const seen: string[] = [];
  const h: FaultHandling = {
    report: (kind, err) => {
      seen.push(`report ${kind} ${(err as Error).message}`);
      if (reportThrows) throw new Error("status is broken too");
    },
    stop: (why, code) => {
      seen.push(`stop ${why} ${String(code)}`);
    },
  };
  const proc = new EventEmitter();
  installFaultHandlers(proc, () => h);
  return { proc, seen };
}

test("an-unhandled-rejection-is-reported-and-detourd-runs-on", () => {
  const { proc, seen } = rig();
  proc.emit("unhandledRejection", new Error("a tracked stop failed"));
  assert.deepEqual(seen, ["report unhandled-rejection a tracked stop failed"]);
});

test("an-uncaught-exception-is-reported-then-stops-detourd-through-the-guarded-shutdown", () => {
  const { proc, seen } = rig();
  proc.emit("uncaughtException", new Error("a timer callback threw"));
  assert.deepEqual(seen, [
    "report uncaught-exception a timer callback threw",
    `stop uncaught-exception ${String(EXIT_FAULT)}`,
  ]);
});

test("a-report-that-throws-never-escapes-the-handler-and-never-skips-the-stop", () => {
  const { proc, seen } = rig(true);
  assert.doesNotThrow(() => proc.emit("unhandledRejection", new Error("r")));
  assert.doesNotThrow(() => proc.emit("uncaughtException", new Error("x")));
  assert.deepEqual(seen, [
    "report unhandled-rejection r",
    "report uncaught-exception x",
    `stop uncaught-exception ${String(EXIT_FAULT)}`,
  ]);
});
