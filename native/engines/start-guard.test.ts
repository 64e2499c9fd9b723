/** The start guard's contract, which every driver inherits: deadline, abort, stop, teardown once, error codes. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EngineError } from "./engine.ts";
import { StartAttempt, StartGuard, type StartHooks } from "./start-guard.ts";

/** Far enough away never to pass during a test. */
const FAR = Date.now() + 3_600_000;

function never<T>(): Promise<T> {
  return new Promise<T>(() => undefined);
}

/** A guard whose teardown counts its runs (and can be slow or fail). */
function engine(teardown: () => Promise<void> = () => Promise.resolve()): { g: StartGuard; teardowns: () => number } {
  let n = 0;
  const g = new StartGuard("Test start", () => {
    n += 1;
    return teardown();
  });
  return { g, teardowns: () => n };
}

function hooks(over: Partial<StartHooks> = {}): StartHooks {
  return {
    timeoutError: () => new EngineError("timeout", "no tunnel before the deadline"),
    tail: () => "last engine line",
    ...over,
  };
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
  test("a-start-that-succeeds-resolves-with-its-value-and-tears-down-only-at-stop", async () => {
    const { g, teardowns } = engine();
    assert.equal(await g.run(FAR, undefined, hooks(), () => Promise.resolve("up")), "up");
    assert.equal(g.starting, false);
    assert.equal(teardowns(), 0);
    await Promise.all([g.stop(), g.stop()]);
    await g.stop();
    assert.equal(teardowns(), 1, "stop() tears down once, however often it is called");
  });

  test("a-missed-deadline-is-the-drivers-timeout-error-built-when-it-passed", async () => {
    const { g, teardowns } = engine();
    let progress = "nothing";
    const err = await rejection(
      g.run(
        Date.now() - 1,
        undefined,
        hooks({ timeoutError: () => new EngineError("timeout", `got as far as ${progress}`) }),
        () => {
          progress = "the handshake";
          return never();
        },
      ),
    );
    assert.equal(err.code, "timeout");
    assert.equal(err.message, "got as far as the handshake");
    assert.equal(teardowns(), 1, "what was started is torn down before start() rejects");
  });

  test("the-callers-abort-during-start-is-cancelled-and-aborts-the-steps", async () => {
    const { g, teardowns } = engine();
    const ac = new AbortController();
    let stepSignal: AbortSignal | null = null;
    const p = g.run(FAR, ac.signal, hooks(), (a) => {
      stepSignal = a.signal;
      return a.race(never());
    });
    ac.abort();
    const err = await rejection(p);
    assert.equal(err.code, "cancelled");
    assert.equal(err.retryable, false);
    assert.ok((stepSignal as AbortSignal | null)?.aborted === true, "steps waiting on the attempt's signal end");
    assert.equal(teardowns(), 1);
  });

  test("an-already-aborted-start-never-runs-its-body", async () => {
    const { g, teardowns } = engine();
    const ac = new AbortController();
    ac.abort();
    let ran = false;
    const err = await rejection(
      g.run(FAR, ac.signal, hooks(), () => {
        ran = true;
        return Promise.resolve("up");
      }),
    );
    assert.equal(err.code, "cancelled");
    assert.match(err.message, /before it began/);
    assert.equal(ran, false);
    assert.equal(teardowns(), 1);
  });

  test("stop-during-start-cancels-it-waits-for-it-and-tears-down-once", async () => {
    let done = false;
    const { g, teardowns } = engine(async () => {
      await new Promise((r) => setImmediate(r));
      done = true;
    });
    const p = g.run(FAR, undefined, hooks(), (a) => a.race(never()));
    assert.equal(g.starting, true);
    await g.stop();
    assert.equal(done, true, "stop() resolves only after the teardown finished");
    assert.equal(teardowns(), 1, "the failed start and stop() share one teardown");
    const err = await rejection(p);
    assert.equal(err.code, "cancelled");
    assert.match(err.message, /being stopped/);
  });

  test("start-after-stop-is-cancelled-and-start-twice-is-a-bug", async () => {
    const { g, teardowns } = engine();
    await g.stop();
    const err = await rejection(g.run(FAR, undefined, hooks(), () => Promise.resolve("up")));
    assert.equal(err.code, "cancelled");
    assert.equal(teardowns(), 1);
    await assert.rejects(
      g.run(FAR, undefined, hooks(), () => Promise.resolve("up")),
      (e: unknown) => !(e instanceof EngineError) && /called twice/.test(String(e)),
    );
  });

  test("the-first-failure-wins-and-later-ones-change-nothing", async () => {
    const { g, teardowns } = engine();
    const p = g.run(FAR, undefined, hooks(), (a) => a.race(never()));
    g.fail(new EngineError("engine-crashed", "the engine exited during start"));
    g.fail(new EngineError("auth-failed", "refused"));
    await g.stop();
    const err = await rejection(p);
    assert.equal(err.code, "engine-crashed");
    assert.equal(teardowns(), 1);
  });

  test("the-attempts-failure-wins-over-what-the-aborted-step-threw", async () => {
    const { g } = engine();
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
    const classify = (e: unknown): EngineError | null =>
      e instanceof CodecError ? new EngineError("bad-config", `refused: ${e.message}`) : null;
    const refused = await rejection(
      engine().g.run(FAR, undefined, hooks({ classify }), () => Promise.reject(new CodecError("errno=22"))),
    );
    assert.equal(refused.code, "bad-config");
    const own = await rejection(
      engine().g.run(FAR, undefined, hooks({ classify }), () =>
        Promise.reject(new EngineError("unreachable", "no route")),
      ),
    );
    assert.equal(own.code, "unreachable");
    const bug = new TypeError("x is undefined");
    const crashed = await rejection(engine().g.run(FAR, undefined, hooks({ classify }), () => Promise.reject(bug)));
    assert.equal(crashed.code, "engine-crashed");
    assert.equal(crashed.retryable, true);
    assert.equal(crashed.cause, bug);
    assert.equal(crashed.engineOutput, "last engine line");
    assert.match(crashed.message, /^Test start failed: x is undefined$/);
  });

  test("a-teardown-that-fails-leaves-the-start-error-and-tells-stop", async () => {
    const { g } = engine(() => Promise.reject(new Error("device left behind")));
    const err = await rejection(
      g.run(FAR, undefined, hooks(), () => Promise.reject(new EngineError("auth-failed", "refused"))),
    );
    assert.equal(err.code, "auth-failed");
    await assert.rejects(g.stop(), /device left behind/);
  });

  test("a-failure-after-the-start-resolved-is-ignored", async () => {
    const { g, teardowns } = engine();
    await g.run(FAR, undefined, hooks(), () => Promise.resolve("up"));
    g.fail(new EngineError("engine-crashed", "exited later"));
    assert.equal(teardowns(), 0, "a tunnel that is up goes only with stop()");
  });
});

describe("start attempt", () => {
  test("a-value-that-arrives-after-the-failure-is-disposed", async () => {
    const a = new StartAttempt({
      deadlineAt: FAR,
      timeoutError: () => new EngineError("timeout", "late"),
      what: "Test",
    });
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
    const a = new StartAttempt({
      deadlineAt: FAR,
      timeoutError: () => new EngineError("timeout", "late"),
      what: "Test",
    });
    a.fail(new EngineError("unreachable", "refused"));
    assert.throws(
      () => {
        a.check();
      },
      (e: unknown) => e instanceof EngineError && e.code === "unreachable",
    );
    await assert.rejects(
      a.race(Promise.resolve(1)),
      (e: unknown) => e instanceof EngineError && e.code === "unreachable",
    );
    assert.equal((a.signal.reason as EngineError).code, "unreachable");
  });

  test("the-deadline-and-the-callers-abort-are-released-when-it-ends", async () => {
    const ac = new AbortController();
    const a = new StartAttempt({
      deadlineAt: Date.now() + 20,
      signal: ac.signal,
      timeoutError: () => new EngineError("timeout", "late"),
      what: "Test",
    });
    a.end();
    ac.abort();
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(a.failure, null);
    assert.equal(a.signal.aborted, false);
  });
});
