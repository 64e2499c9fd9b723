// Runs the tests with Node's built-in runner and the tsx loader: `unit` (*.test.ts that need nothing),
// `lab` (*.lab.test.ts: root, namespaces, real engines) or `all`. Files run one at a time, because lab tests
// share the host's namespaces and the machine has two cores; unit files are fast either way.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const SKIP_DIRS = new Set(["node_modules", ".git", ".build", "dist", "bench-out", "test-artifacts"]);

function find(dir, out = []) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) find(join(dir, e.name), out);
    } else if (e.name.endsWith(".test.ts")) {
      out.push(relative(root, join(dir, e.name)));
    }
  }
  return out;
}

const which = process.argv[2] ?? "all";
const extra = process.argv.slice(3);
const files = find(root).sort();
const lab = files.filter((f) => f.endsWith(".lab.test.ts"));
const unit = files.filter((f) => !f.endsWith(".lab.test.ts"));
const selected = which === "unit" ? unit : which === "lab" ? lab : which === "all" ? [...unit, ...lab] : null;
if (selected === null) {
  console.error(`run-tests: expected unit, lab or all; got ${which}`);
  process.exit(2);
}
const chosen = extra.length > 0 ? selected.filter((f) => extra.some((x) => f.includes(x))) : selected;
if (chosen.length === 0) {
  console.error("run-tests: no test file matched");
  process.exit(2);
}
const r = spawnSync(
  process.execPath,
  ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...chosen],
  {
    cwd: root,
    stdio: "inherit",
  },
);
process.exit(r.status ?? 1);
