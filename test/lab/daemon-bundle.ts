/**
 * detourd as it ships, for every lab that starts it: the esbuild bundle (scripts/build-daemon.mjs) run with plain
 * node, never the tsx loader (development only). Built once per source state: the folder is named by a hash of
 * everything the bundle is made of (the daemon's and native's sources, the engines' resources, the build script,
 * the lockfile), so a test file, a bench or the demo started after a change builds anew, and every other start
 * reuses the build (esbuild takes seconds; the lab suite starts detourd dozens of times).
 *
 * Concurrent builders (two labs on one checkout) each build into a folder of their own and rename it into place;
 * the first rename wins and the others' folders are removed. Older builds beyond the newest few are pruned.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { run } from "./exec.ts";
import { REPO_ROOT } from "./services.ts";

/** esbuild bundles detourd in a few seconds; a loaded two-core machine (a soak beside CI) gets room. */
const BUILD_WITHIN_MS = 120_000;
/** Builds kept besides the current one: a checkout moved back and forth between two commits does not rebuild. */
const KEEP_BUILDS = 3;
/** What the bundle is made of. Tests (*.test.ts) are not. */
const SOURCE_DIRS = ["main", "native", join("resources", "engines")];
const SOURCE_FILES = [join("scripts", "build-daemon.mjs"), "package-lock.json"];
const CACHE_DIR = join(REPO_ROOT, ".build", "lab-detourd");

export interface DaemonBundle {
  /** The daemon: `node <detourd> --config ...`. */
  detourd: string;
  /** The CLI, built beside it. */
  detour: string;
  /** The early-boot block under lockdown (detour-early-block.service). */
  earlyBlock: string;
  /** The build's folder (named by the sources' hash). */
  dir: string;
  /** Whether this call built it (false: an earlier build of the same sources was reused). */
  built: boolean;
}

function listFiles(dir: string, out: string[]): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return; // a source folder that does not exist contributes nothing
  }
  for (const name of names.sort()) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isDirectory()) listFiles(path, out);
    else if (st.isFile() && !name.endsWith(".test.ts")) out.push(path);
  }
}

/** A hash of every file the bundle is built from, with its path (a rename changes the build too). */
export function sourcesHash(root: string = REPO_ROOT): string {
  const files: string[] = [];
  for (const d of SOURCE_DIRS) listFiles(join(root, d), files);
  for (const f of SOURCE_FILES) if (existsSync(join(root, f))) files.push(join(root, f));
  const h = createHash("sha256");
  for (const f of files) {
    h.update(relative(root, f));
    h.update("\0");
    h.update(readFileSync(f));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}

function paths(dir: string): { detourd: string; detour: string; earlyBlock: string } {
  return {
    detourd: join(dir, "detourd.mjs"),
    detour: join(dir, "detour.mjs"),
    earlyBlock: join(dir, "early-block.mjs"),
  };
}

function complete(dir: string): boolean {
  return Object.values(paths(dir)).every((p) => existsSync(p));
}

/** Removes every build but the newest KEEP_BUILDS and `keep`, and leftovers of builds that died half-way. */
function prune(keep: string): void {
  let names: string[];
  try {
    names = readdirSync(CACHE_DIR);
  } catch {
    return;
  }
  const builds = names
    .map((name) => ({ name, path: join(CACHE_DIR, name) }))
    .filter((b) => b.path !== keep)
    .map((b) => ({ ...b, mtimeMs: statSync(b.path).mtimeMs }))
    .sort((a, b) => b.mtimeMs - a.mtimeMs);
  const stale = Date.now() - BUILD_WITHIN_MS;
  let kept = 0;
  for (const b of builds) {
    const partial = b.name.includes(".tmp-");
    if (partial ? b.mtimeMs < stale : kept++ >= KEEP_BUILDS) rmSync(b.path, { recursive: true, force: true });
  }
}

let memo: { hash: string; bundle: Promise<DaemonBundle> } | null = null;

/** The bundle of the sources as they are now: reused when built before, built (once per process) otherwise. */
export function daemonBundle(): Promise<DaemonBundle> {
  const hash = sourcesHash();
  if (memo?.hash !== hash) memo = { hash, bundle: buildOrReuse(hash) };
  const m = memo;
  // A failed build is not remembered: the next start tries again (the error reaches the caller now).
  m.bundle.catch(() => {
    if (memo === m) memo = null;
  });
  return m.bundle;
}

async function buildOrReuse(hash: string): Promise<DaemonBundle> {
  const dir = join(CACHE_DIR, hash);
  if (complete(dir)) return { ...paths(dir), dir, built: false };
  mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = join(CACHE_DIR, `${hash}.tmp-${String(process.pid)}`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    const r = await run(process.execPath, [join(REPO_ROOT, "scripts", "build-daemon.mjs"), tmp], {
      timeoutMs: BUILD_WITHIN_MS,
      cwd: REPO_ROOT,
    });
    if (r.code !== 0 || !complete(tmp))
      throw new Error(`cannot bundle detourd (exit ${String(r.code)}): ${r.stderr.trim().slice(-2000)}`);
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // Another builder renamed its build into place first: same sources, same bundle; use theirs.
      if (!complete(dir)) throw err;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  prune(dir);
  return { ...paths(dir), dir, built: true };
}
