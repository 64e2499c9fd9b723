/** The start guard's contract, which every driver's start() inherits: deadline, abort, stop, cleanup, error codes. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EngineError } from "./engine.ts";
import { StartAttempt, StartGuard, type StartHooks } from "./start-guard.ts";

/** Far enough away never to pass during a test. */
const FAR = Date.now() + 3_600_000;

function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}

interface Recorded extends StartHooks {
  cleanups: number;
}

function hooks(over: Partial<StartHooks> = {}): Recorded {
  const h: Recorded = {
    cleanups: 0,
    timeoutError: () => new EngineError("timeout", "no tunnel before the deadline"),
    cleanup: () => {
      h.cleanups += 1;
      return Promise.resolve();
    },
    tail: () => "last engine line",
    ...over,
  };
  return h;
}

async function rejection(p: Promise<unknown>): Promise<EngineError> {
  const e = await p.then(
    () => assert.fail("start resolved"),
    (x: unknown) => x,
  );
  assert.ok(e instanceof EngineError, `an EngineError, got ${String(e)}`);
  return e;
}

describe("start guard", () => {
  test("a-start-that-succeeds-resolves-with-its-value-and-cleans-nothing", async () => {
    const g = new StartGuard("Test start");
    const h = hooks();
    assert.equal(await g.run(FAR, undefined, h, () => Promise.resolve("up")), "up");
    assert.equal(h.cleanups, 0);
    assert.equal(g.starting, false);
  });

  test("a-missed-deadline-is-the-drivers-timeout-error-built-when-it-passed", async () => {
    const g = new StartGuard("Test start");
    let progress = "nothing";
    const h = hooks({ timeoutError: () => new EngineError("timeout", `got as far as ${progress}`) });
    const err = await rejection(
      g.run(Date.now() - 1, undefined, h, () => {
        progress = "the handshake";
        return never();
      }),
    );
    assert.equal(err.code, "timeout");
    assert.equal(err.message, "got as far as the handshake");
    assert.equal(h.cleanups, 1, "what was started is cleaned up");
  });

  test("the-callers-abort-during-start-is-cancelled-and-aborts-the-steps", async () => {
    const g = new StartGuard("Test start");
    const h = hooks();
    const ac = new AbortController();
    let stepSignal: AbortSignal | null = null;
    const p = g.run(FAR, ac.signal, h, (a) => {
      stepSignal = a.signal;
      return a.race(never());
    });
    ac.abort();
    const err = await rejection(p);
    assert.equal(err.code, "cancelled");
    assert.equal(err.retryable, false);
    assert.ok((stepSignal as AbortSignal | null)?.aborted === true, "steps waiting on the attempt's signal end");
    assert.equal(h.cleanups, 1);
  });

  test("an-already-aborted-start-never-runs-its-body", async () => {
    const g = new StartGuard("Test start");
    const h = hooks();
    const ac = new AbortController();
    ac.abort();
    let ran = false;
    const err = await rejection(
      g.run(FAR, ac.signal, h, () => {
        ran = true;
        return Promise.resolve("up");
      }),
    );
    assert.equal(err.code, "cancelled");
    assert.match(err.message, /before it began/);
    assert.equal(ran, false);
    assert.equal(h.cleanups, 1);
  });

  test("stop-during-start-cancels-it-and-waits-for-its-cleanup", async () => {
    const g = new StartGuard("Test start");
    let cleaned = false;
    const h = hooks({
      cleanup: async () => {
        await new Promise((r) => setImmediate(r));
        cleaned = true;
      },
    });
    const p = g.run(FAR, undefined, h, (a) => a.race(never()));
    assert.equal(g.starting, true);
    await g.stop();
    assert.equal(cleaned, true, "stop() resolves only after the failed start cleaned up");
    const err = await rejection(p);
    assert.equal(err.code, "cancelled");
    assert.match(err.message, /being stopped/);
  });

  test("start-after-stop-is-cancelled-and-start-twice-is-a-bug", async () => {
    const g = new StartGuard("Test start");
    await g.stop();
    const h = hooks();
    const err = await rejection(g.run(FAR, undefined, h, () => Promise.resolve("up")));
    assert.equal(err.code, "cancelled");
    await assert.rejects(g.run(FAR, undefined, h, () => Promise.resolve("up")), (e: unknown) => !(e instanceof EngineError) && /called twice/.test(String(e)));
  });

  test("the-first-failure-wins-and-later-ones-change-nothing", async () => {
    const g = new StartGuard("Test start");
    const h = hooks();
    const p = g.run(FAR, undefined, h, (a) => a.race(never()));
    g.fail(new EngineError("engine-crashed", "the engine exited during start"));
    g.fail(new EngineError("auth-failed", "refused"));
    await g.stop();
    const err = await rejection(p);
    assert.equal(err.code, "engine-crashed");
    assert.equal(h.cleanups, 1, "cleanup runs once");
  });

  test("the-attempts-failure-wins-over-what-the-aborted-step-threw", async () => {
    const g = new StartGuard("Test start");
    const p = g.run(FAR, undefined, hooks(), async (a) => {
      // A step that honours the signal but reports only that it was aborted.
      await new Promise((_, reject) => {
        a.signal.addEventListener("abort", () => {
          reject(new Error("aborted"));
        });
      });
    });
    g.fail(new EngineError("identity-mismatch", "another certificate"));
    assert.equal((await rejection(p)).code, "identity-mismatch");
  });

  test("errors-the-body-throws-map-to-one-engine-error", async () => {
    class CodecError extends Error {}
    const classify = (e: unknown): EngineError | null => (e instanceof CodecError ? new EngineError("bad-config", `refused: ${e.message}`) : null);
    const refused = await rejection(new StartGuard("Test start").run(FAR, undefined, hooks({ classify }), () => Promise.reject(new CodecError("errno=22"))));
    assert.equal(refused.code, "bad-config");
    const own = await rejection(new StartGuard("Test start").run(FAR, undefined, hooks({ classify }), () => Promise.reject(new EngineError("unreachable", "no route"))));
    assert.equal(own.code, "unreachable");
    const bug = new TypeError("x is undefined");
    const crashed = await rejection(new StartGuard("Test start").run(FAR, undefined, hooks({ classify }), () => Promise.reject(bug)));
    assert.equal(crashed.code, "engine-crashed");
    assert.equal(crashed.retryable, true);
    assert.equal(crashed.cause, bug);
    assert.equal(crashed.engineOutput, "last engine line");
    assert.match(crashed.message, /^Test start failed: x is undefined$/);
  });

  test("a-cleanup-that-fails-does-not-replace-the-start-error", async () => {
    const h = hooks({ cleanup: () => Promise.reject(new Error("device left behind")) });
    const err = await rejection(new StartGuard("Test start").run(FAR, undefined, h, () => Promise.reject(new EngineError("auth-failed", "refused"))));
    assert.equal(err.code, "auth-failed");
  });

  test("a-failure-after-the-start-resolved-is-ignored", async () => {
    const g = new StartGuard("Test start");
    const h = hooks();
    await g.run(FAR, undefined, h, () => Promise.resolve("up"));
    g.fail(new EngineError("engine-crashed", "exited later"));
    await g.stop();
    assert.equal(h.cleanups, 0, "a tunnel that is up is the driver's stop() to tear down");
  });
});

describe("start attempt", () => {
  test("a-value-that-arrives-after-the-failure-is-disposed", async () => {
    const a = new StartAttempt({ deadlineAt: FAR, timeoutError: () => new EngineError("timeout", "late"), what: "Test" });
    const disposed: string[] = [];
    let deliver: (v: string) => void = () => undefined;
    const p = a.race(new Promise<string>((r) => (deliver = r)), (late) => disposed.push(late));
    a.fail(new EngineError("cancelled", "stopped"));
    deliver("connection");
    await assert.rejects(p, (e: unknown) => e instanceof EngineError && e.code === "cancelled");
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(disposed, ["connection"], "disposed once");
    a.end();
  });

  test("after-a-failure-every-race-and-check-rejects-at-once", async () => {
    const a = new StartAttempt({ deadlineAt: FAR, timeoutError: () => new EngineError("timeout", "late"), what: "Test" });
    a.fail(new EngineError("unreachable", "refused"));
    assert.throws(() => {
      a.check();
    }, (e: unknown) => e instanceof EngineError && e.code === "unreachable");
    await assert.rejects(a.race(Promise.resolve(1)), (e: unknown) => e instanceof EngineError && e.code === "unreachable");
    assert.equal((a.signal.reason as EngineError).code, "unreachable");
  });

  test("the-deadline-and-the-callers-abort-are-released-when-it-ends", async () => {
    const ac = new AbortController();
    const a = new StartAttempt({ deadlineAt: Date.now() + 20, signal: ac.signal, timeoutError: () => new EngineError("timeout", "late"), what: "Test" });
    a.end();
    ac.abort();
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(a.failure, null);
    assert.equal(a.signal.aborted, false);
  });
});
