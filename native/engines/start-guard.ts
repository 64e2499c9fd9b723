/**
 * How every driver starts and stops its engine: one attempt raced against its deadline, the caller's abort,
 * stop() and whatever the driver reports as fatal (the engine exiting, a refusal in its output); the first
 * failure wins, the driver's teardown runs once before start() rejects (or at stop()), and every rejection
 * is an EngineError.
 *
 *   start ─► attempt ─► body: step, step, ... (each raced: a failure ends the wait at once) ─► resolves
 *              │  fail(): deadline ("timeout", the driver's words) | caller abort or stop() ("cancelled") | driver
 *              └─► any failure or throw: attempt.signal aborts, teardown (once), reject with one EngineError
 */
import { EngineError, isEngineError } from "./engine.ts";

export interface StartAttemptOptions {
  /** Epoch ms; when it passes the attempt fails with timeoutError(). */
  deadlineAt: number;
  /** The caller's abort: the attempt fails as "cancelled". */
  signal?: AbortSignal | undefined;
  /** Built when the deadline passes, so it can say how far the attempt got. */
  timeoutError: () => EngineError;
  /** What is being attempted, for the cancellation messages ("WireGuard start"). */
  what: string;
}

/**
 * One bounded attempt: a deadline and the caller's abort turn into its failure, and `signal` aborts with that
 * failure as its reason, so every step waiting on it ends. After end() it can no longer fail.
 */
export class StartAttempt {
  readonly #ctl = new AbortController();
  readonly #what: string;
  readonly #callerSignal: AbortSignal | undefined;
  readonly #onCallerAbort = (): void => {
    this.fail(new EngineError("cancelled", `${this.#what} was cancelled by the caller`));
  };
  #timer: NodeJS.Timeout | null = null;
  #failure: EngineError | null = null;
  #ended = false;

  constructor(opts: StartAttemptOptions) {
    this.#what = opts.what;
    this.#callerSignal = opts.signal;
    if (opts.signal?.aborted === true) {
      this.fail(new EngineError("cancelled", `${opts.what} was cancelled before it began`));
      return;
    }
    opts.signal?.addEventListener("abort", this.#onCallerAbort, { once: true });
    this.#timer = setTimeout(
      () => {
        this.fail(opts.timeoutError());
      },
      Math.max(0, opts.deadlineAt - Date.now()),
    );
  }

  /** Aborted, with the failure as its reason, when the attempt fails; never aborted by success. */
  get signal(): AbortSignal {
    return this.#ctl.signal;
  }

  get failure(): EngineError | null {
    return this.#failure;
  }

  /** Fails the attempt unless it already failed or ended: the first failure is the one reported. */
  fail(e: EngineError): void {
    if (this.#failure !== null || this.#ended) return;
    this.#failure = e;
    this.#release();
    this.#ctl.abort(e);
  }

  /** Throws the failure, if there is one: before a step that starts something new. */
  check(): void {
    if (this.#failure !== null) throw this.#failure;
  }

  /**
   * `p`, or the failure as soon as there is one. A value `p` delivers after the failure is handed to `dispose`
   * (a connection that opened too late is closed), since nobody else will ever see it.
   */
  race<T>(p: Promise<T>, dispose?: (late: T) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onFail = (): void => {
        reject(this.#failure ?? new Error("attempt aborted without a failure"));
      };
      if (this.#failure !== null) onFail();
      else this.signal.addEventListener("abort", onFail, { once: true });
      p.then(
        (v) => {
          this.signal.removeEventListener("abort", onFail);
          if (this.#failure === null) resolve(v);
          else dispose?.(v);
        },
        (e: unknown) => {
          this.signal.removeEventListener("abort", onFail);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  /** The attempt is over (either way): the deadline and the caller's abort no longer matter. */
  end(): void {
    this.#ended = true;
    this.#release();
  }

  #release(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#callerSignal?.removeEventListener("abort", this.#onCallerAbort);
  }
}

export interface StartHooks {
  /** The EngineError for a missed deadline, built when it passes. */
  timeoutError: () => EngineError;
  /** The driver's own errors (codec, client, command) as EngineErrors; null for one it does not know. */
  classify?: (e: unknown) => EngineError | null;
  /** The engine's last output lines, attached to an error the driver did not expect. */
  tail: () => string;
}

/**
 * The life of one engine instance, which starts once and stops once: run() drives the start's attempt, fail()
 * ends it from the driver's event handlers (a no-op when no start is in flight), and the driver's teardown runs
 * exactly once, when the start fails or when stop() is called, whichever comes first. stop() cancels a start in
 * flight and waits for it to settle before the teardown, so the two never race.
 *
 * Invariant for a body: every wait is race()d and every step that creates something (a process, a device, a
 * file) comes after a race() or check(), so once the attempt failed nothing new is created while teardown runs.
 */
export class StartGuard {
  readonly #what: string;
  readonly #teardown: () => Promise<void>;
  #began = false;
  #attempt: StartAttempt | null = null;
  #settled: Promise<void> = Promise.resolve();
  #tornDown: Promise<void> | null = null;
  #stopped: Promise<void> | null = null;

  /**
   * `what` names the start in messages ("WireGuard start to gw1"); `teardown` stops and removes everything the
   * engine started, and reports (rejects) what it could not remove.
   */
  constructor(what: string, teardown: () => Promise<void>) {
    this.#what = what;
    this.#teardown = teardown;
  }

  /** True while an attempt is in flight. */
  get starting(): boolean {
    return this.#attempt !== null;
  }

  /**
   * Runs `body` as the one attempt of this instance and resolves with its value, or rejects with one
   * EngineError once the teardown is done. A second call is a bug and rejects with a plain Error.
   */
  run<T>(
    deadlineAt: number,
    signal: AbortSignal | undefined,
    hooks: StartHooks,
    body: (attempt: StartAttempt) => Promise<T>,
  ): Promise<T> {
    if (this.#began) return Promise.reject(new Error(`${this.#what} called twice: an engine instance starts once`));
    this.#began = true;
    const attempt = new StartAttempt({ deadlineAt, signal, timeoutError: hooks.timeoutError, what: this.#what });
    if (this.#stopped !== null)
      attempt.fail(new EngineError("cancelled", `${this.#what} was cancelled: the engine had been stopped`));
    this.#attempt = attempt;
    const p = this.#run(attempt, hooks, body);
    this.#settled = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  async #run<T>(attempt: StartAttempt, hooks: StartHooks, body: (attempt: StartAttempt) => Promise<T>): Promise<T> {
    try {
      attempt.check();
      // Raced as a whole too, so a step that does not honour the signal cannot hold the start past its deadline.
      const value = await attempt.race(body(attempt));
      attempt.check();
      return value;
    } catch (e) {
      const err = this.#toEngineError(e, attempt, hooks);
      // Steps still running beside the one that threw (probes, polls) end with the signal.
      attempt.fail(err);
      attempt.end();
      // What the teardown could not remove is stop()'s to report: it returns the same teardown.
      await this.#teardownOnce().catch(() => undefined);
      throw err;
    } finally {
      attempt.end();
      this.#attempt = null;
    }
  }

  /** The attempt's failure wins over what a step threw (a step ended by the abort throws only "aborted"). */
  #toEngineError(e: unknown, attempt: StartAttempt, hooks: StartHooks): EngineError {
    if (attempt.failure !== null) return attempt.failure;
    if (isEngineError(e)) return e;
    const known = hooks.classify?.(e) ?? null;
    if (known !== null) return known;
    // Anything else is a bug: reported as a crash so the caller's race goes on, with the cause attached.
    return new EngineError(
      "engine-crashed",
      `${this.#what} failed: ${e instanceof Error ? e.message : String(e)}`,
      hooks.tail(),
      { cause: e },
    );
  }

  /** Ends the attempt in flight with `e` (the engine exited, the gateway refused); no-op when none is. */
  fail(e: EngineError): void {
    this.#attempt?.fail(e);
  }

  /**
   * Cancels a start in flight, waits until it has settled, then tears down (once, shared with a failed start);
   * a later start is cancelled. Idempotent: every call returns the same promise.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#attempt?.fail(new EngineError("cancelled", `${this.#what} was cancelled: the engine is being stopped`));
    await this.#settled;
    await this.#teardownOnce();
  }

  #teardownOnce(): Promise<void> {
    this.#tornDown ??= this.#teardown();
    return this.#tornDown;
  }
}
