/**
 * Bounds how long a caller waits for a promise: the one place that arms (and always disarms) such a timer, so a
 * call that answered in time leaves nothing armed behind it.
 */

/** The wait for `what` ran out before it settled. */
export class TimeoutError extends Error {
  override readonly name = "TimeoutError";
  constructor(
    readonly what: string,
    readonly ms: number,
  ) {
    super(`${what} did not answer within ${ms} ms`);
  }
}

/**
 * Settles as `work` does, or rejects with a TimeoutError once `ms` have passed, whichever comes first. The timer is
 * cleared the moment `work` settles. `work` may be a function: one that throws at once rejects like any other.
 * Nothing is cancelled: a caller that can stop the work gives it an AbortSignal as well.
 */
export function withTimeout<T>(work: PromiseLike<T> | (() => PromiseLike<T>), ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new TimeoutError(what, ms));
    }, ms);
    const settle =
      <A>(f: (a: A) => void) =>
      (a: A): void => {
        clearTimeout(timer);
        f(a);
      };
    try {
      (typeof work === "function" ? work() : work).then(settle(resolve), settle(reject));
    } catch (e) {
      settle(reject)(e);
    }
  });
}
