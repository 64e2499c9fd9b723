/**
 * What detourd does with an exception or a rejection that reached the top, by kind (documented in detourd.ts):
 * every fault is logged with its context and reported; an unhandled rejection lets the daemon run on, an uncaught
 * exception stops it through the guarded shutdown with EXIT_FAULT. Nothing here may throw: an exception inside a
 * process-level handler would end detourd at once, without any shutdown.
 */

export type FaultKind = "unhandled-rejection" | "uncaught-exception";

/** Exit status after an uncaught exception (EX_SOFTWARE): the service manager restarts detourd. */
export const EXIT_FAULT = 70;

export interface FaultHandling {
  /** Logs the fault with the daemon's context and reports it (status, telemetry). May throw: it is guarded. */
  report(kind: FaultKind, err: unknown): void;
  /** The guarded shutdown, then exit with `code`. */
  stop(why: string, code: number): void;
}

/** The reaction to one fault: report it, and stop after an uncaught exception even if reporting failed. */
export function handleFault(h: FaultHandling, kind: FaultKind, err: unknown): void {
  try {
    h.report(kind, err);
  } catch {
    // the stop below must still happen
  } finally {
    if (kind === "uncaught-exception") {
      try {
        h.stop(kind, EXIT_FAULT);
      } catch {
        // nothing left to do from here; the shutdown budget's timer still ends the process
      }
    }
  }
}

/** Routes the process's unhandled rejections and uncaught exceptions to `current()`'s handling. */
export function installFaultHandlers(
  proc: { on(event: "unhandledRejection" | "uncaughtException", fn: (err: unknown) => void): unknown },
  current: () => FaultHandling,
): void {
  proc.on("unhandledRejection", (reason) => {
    handleFault(current(), "unhandled-rejection", reason);
  });
  proc.on("uncaughtException", (err) => {
    handleFault(current(), "uncaught-exception", err);
  });
}
