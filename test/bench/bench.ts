/** `npm run bench -- <suite...>`: runs benchmark suites on the lab, prints each table and writes it to bench-out/. */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { assertLabCanRun } from "../lab/preflight.ts";
import { REPO_ROOT } from "../lab/services.ts";
import { benchChaos } from "./chaos.ts";
import { benchConnect, benchFailover } from "./connect.ts";
import { benchCompare } from "./compare.ts";
import { benchDiag } from "./diag.ts";
import { benchEngines } from "./engines.ts";
import { benchFootprint } from "./footprint.ts";
import { benchRaceScale } from "./race-scale.ts";
import { benchRoam } from "./roam.ts";
import { benchTelemetry } from "./telemetry.ts";

/** At least ten runs per measurement, as the issues ask; BENCH_RUNS raises it. */
const DEFAULT_RUNS = 10;

type Suite = (runs: number, options: readonly string[]) => Promise<{ markdown: string; rows: unknown }>;

/** Suites that take options say so here; the others refuse any. */
const SUITES: Record<string, { run: Suite; takesOptions: boolean }> = {
  engines: { run: benchEngines, takesOptions: false },
  connect: { run: benchConnect, takesOptions: false },
  failover: { run: benchFailover, takesOptions: false },
  compare: { run: benchCompare, takesOptions: true },
  diag: { run: benchDiag, takesOptions: false },
  telemetry: { run: benchTelemetry, takesOptions: true },
  chaos: { run: benchChaos, takesOptions: true },
  roam: { run: benchRoam, takesOptions: true },
  footprint: { run: benchFootprint, takesOptions: true },
  "race-scale": { run: benchRaceScale, takesOptions: true },
};

/** Splits argv into suite names and options; `--runs N` is the bench's own (a quick run may go below ten). */
function splitArgs(argv: string[]): { names: string[]; options: string[]; runs: number | null } {
  const names: string[] = [];
  const options: string[] = [];
  let runs: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    if (a === "--runs" || a.startsWith("--runs=")) {
      const v = a === "--runs" ? argv[++i] : a.slice("--runs=".length);
      runs = Number(v);
      if (!Number.isInteger(runs) || runs < 1)
        throw new Error(`--runs needs a whole number of runs, got "${String(v)}"`);
    } else if (a.startsWith("--")) {
      options.push(a);
      // an option's value follows it unless given as --opt=value
      const next = argv[i + 1];
      if (!a.includes("=") && next !== undefined && !next.startsWith("--")) options.push(argv[++i] ?? "");
    } else names.push(a);
  }
  return { names, options, runs };
}

async function main(argv: string[]): Promise<number> {
  const { names: given, options, runs: runsOption } = splitArgs(argv);
  const names = given.length > 0 ? given : ["engines", "connect", "failover"];
  const unknown = names.filter((n) => !(n in SUITES));
  if (unknown.length > 0) {
    console.error(`bench: unknown suite ${unknown.join(", ")}; available: ${Object.keys(SUITES).join(", ")}`);
    return 2;
  }
  const refusing = names.filter((n) => SUITES[n]?.takesOptions === false);
  if (options.length > 0 && refusing.length > 0) {
    console.error(`bench: ${refusing.join(", ")} take no options (got ${options.join(" ")})`);
    return 2;
  }
  assertLabCanRun();
  const runs = runsOption ?? Math.max(DEFAULT_RUNS, Number(process.env.BENCH_RUNS ?? DEFAULT_RUNS) || DEFAULT_RUNS);
  const outDir = join(REPO_ROOT, "bench-out");
  mkdirSync(outDir, { recursive: true });
  for (const name of names) {
    const suite = SUITES[name];
    if (suite === undefined) continue;
    const started = new Date();
    const r = await suite.run(runs, options);
    const header = `<!-- ${name}: ${started.toISOString()}, ${runs} runs${options.length > 0 ? `, ${options.join(" ")}` : ""} -->\n`;
    writeFileSync(join(outDir, `${name}.md`), header + r.markdown);
    writeFileSync(
      join(outDir, `${name}.json`),
      JSON.stringify({ suite: name, started: started.toISOString(), runs, rows: r.rows }, null, 2) + "\n",
    );
    console.log(r.markdown);
    console.log(`written to ${join("bench-out", `${name}.md`)} and ${name}.json`);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    // A suite that was interrupted (Ctrl-C) set its own exit code after writing its partial table.
    process.exitCode ??= code;
  },
  (e: unknown) => {
    console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  },
);
