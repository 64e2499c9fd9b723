/** `npm run bench -- <suite...>`: runs benchmark suites on the lab, prints each table and writes it to bench-out/. */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { assertLabCanRun } from "../lab/preflight.ts";
import { REPO_ROOT } from "../lab/services.ts";
import { benchConnect, benchFailover } from "./connect.ts";
import { benchDiag } from "./diag.ts";
import { benchEngines } from "./engines.ts";

/** At least ten runs per measurement, as the issues ask; BENCH_RUNS raises it. */
const DEFAULT_RUNS = 10;

const SUITES: Record<string, (runs: number) => Promise<{ markdown: string; rows: unknown }>> = {
  engines: benchEngines,
  connect: benchConnect,
  failover: benchFailover,
  diag: benchDiag,
};

async function main(argv: string[]): Promise<number> {
  const names = argv.length > 0 ? argv : Object.keys(SUITES);
  const unknown = names.filter((n) => !(n in SUITES));
  if (unknown.length > 0) {
    console.error(`bench: unknown suite ${unknown.join(", ")}; available: ${Object.keys(SUITES).join(", ")}`);
    return 2;
  }
  assertLabCanRun();
  const runs = Math.max(DEFAULT_RUNS, Number(process.env.BENCH_RUNS ?? DEFAULT_RUNS) || DEFAULT_RUNS);
  const outDir = join(REPO_ROOT, "bench-out");
  mkdirSync(outDir, { recursive: true });
  for (const name of names) {
    const suite = SUITES[name];
    if (suite === undefined) continue;
    const started = new Date();
    const r = await suite(runs);
    const header = `<!-- ${name}: ${started.toISOString()}, ${runs} runs -->\n`;
    writeFileSync(join(outDir, `${name}.md`), header + r.markdown);
    writeFileSync(join(outDir, `${name}.json`), JSON.stringify({ suite: name, started: started.toISOString(), runs, rows: r.rows }, null, 2) + "\n");
    console.log(r.markdown);
    console.log(`written to ${join("bench-out", `${name}.md`)} and ${name}.json`);
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`bench: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  },
);
