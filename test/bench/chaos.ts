/**
 * `npm run bench -- chaos [--minutes N] [--seed S] [--lab-id ID] [--no-daemon-kills]`: the chaos soak
 * (test/lab/chaos.ts) on its own lab, default 30 minutes. --no-daemon-kills leaves out the schedule's detourd
 * SIGKILLs so one instance lives for the whole run (its memory over time). Ctrl-C ends the soak early and still
 * cleans everything up; the report says it was interrupted.
 */
import { join } from "node:path";
import { runChaos } from "../lab/chaos.ts";
import { REPO_ROOT } from "../lab/services.ts";
import { validateLabId } from "../lab/topology.ts";

/** The bench's lab id: "x" marks the chaos soak's labs, apart from the 3-minute test's. */
const ID = "xbench";
const DEFAULT_MINUTES = 30;
/** Any seed works; a fixed default makes two plain runs comparable. */
const DEFAULT_SEED = 20261207;
/** Longer than a working day is a typo, not a soak. */
const MAX_MINUTES = 24 * 60;

export interface ChaosBenchOptions {
  minutes: number;
  seed: number;
  labId: string;
  noDaemonKills: boolean;
}

export function parseChaosOptions(options: readonly string[]): ChaosBenchOptions {
  let minutes = DEFAULT_MINUTES;
  let seed = DEFAULT_SEED;
  let labId = ID;
  let noDaemonKills = false;
  for (let i = 0; i < options.length; i++) {
    const raw = options[i] ?? "";
    if (raw === "--no-daemon-kills") {
      noDaemonKills = true;
      continue;
    }
    const [name, inline] = raw.includes("=")
      ? [raw.slice(0, raw.indexOf("=")), raw.slice(raw.indexOf("=") + 1)]
      : [raw, undefined];
    const value = inline ?? options[++i];
    if (name === "--minutes") {
      minutes = Number(value);
      if (!Number.isFinite(minutes) || minutes < 1 || minutes > MAX_MINUTES)
        throw new Error(`--minutes needs a number of minutes 1-${MAX_MINUTES}, got "${String(value)}"`);
    } else if (name === "--seed") {
      seed = Number(value);
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
        throw new Error(`--seed needs a whole number 0-4294967295, got "${String(value)}"`);
    } else if (name === "--lab-id") {
      labId = String(value);
      validateLabId(labId);
    } else
      throw new Error(
        `chaos: unknown option "${raw}"; it takes --minutes N, --seed S, --lab-id ID and --no-daemon-kills`,
      );
  }
  return { minutes, seed, labId, noDaemonKills };
}

export async function benchChaos(
  _runs: number,
  options: readonly string[],
): Promise<{ rows: unknown; markdown: string }> {
  const { minutes, seed, labId, noDaemonKills } = parseChaosOptions(options);
  const ac = new AbortController();
  const onSigint = (): void => {
    console.error("chaos: interrupted, cleaning up (Ctrl-C again does not hurry it)");
    ac.abort();
  };
  process.on("SIGINT", onSigint);
  try {
    const r = await runChaos({
      id: labId,
      durationMs: minutes * 60_000,
      seed,
      noDaemonKills,
      signal: ac.signal,
      log: (l) => {
        console.log(l);
      },
      artifactsDir: join(REPO_ROOT, "bench-out"),
    });
    // The partial table is still written; the exit code says it is partial, as a shell's Ctrl-C would.
    if (r.interrupted) process.exitCode = 130;
    const { markdown, ...rows } = r;
    return { rows, markdown };
  } finally {
    process.off("SIGINT", onSigint);
  }
}
