/**
 * detourd's orderly exit as a list of named steps, each guarded and bounded in time, so a failure or a hang in one
 * (restoring DNS, flushing telemetry, stopping an engine) never skips the rest; the kill switch step always runs
 * last, whatever happened before it, because it decides whether protected traffic may flow once detourd is gone.
 */
import { withTimeout } from "../shared/with-timeout.ts";
import type { Logger } from "./log.ts";

export interface ShutdownStep {
  name: string;
  run(): void | Promise<void>;
  /** How long the step may take before the exit moves on without it. */
  budgetMs: number;
}

export interface ShutdownReport {
  /** Every step, in the order it ran (the kill switch's last). */
  ran: string[];
  failed: { step: string; error: string }[];
}

/** Runs `steps` in order, then `last`; each guarded and bounded. Never rejects. */
export async function runShutdown(
  steps: readonly ShutdownStep[],
  last: ShutdownStep,
  log: Logger,
): Promise<ShutdownReport> {
  const report: ShutdownReport = { ran: [], failed: [] };
  const guarded = async (s: ShutdownStep): Promise<void> => {
    report.ran.push(s.name);
    try {
      await withTimeout(
        async () => {
          await s.run();
        },
        s.budgetMs,
        `shutdown step "${s.name}"`,
      );
    } catch (err) {
      report.failed.push({ step: s.name, error: err instanceof Error ? err.message : String(err) });
      log.error(`shutdown: ${s.name} failed`, { err });
    }
  };
  try {
    for (const s of steps) await guarded(s);
  } finally {
    await guarded(last);
  }
  return report;
}
