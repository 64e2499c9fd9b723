/**
 * The bundled detourd and detour CLI run with plain node from a folder that holds nothing else (no tsx, no
 * sources, no node_modules above it), as they do once installed: the CLI answers --help and names a daemon that
 * is not running, detourd answers --help and --version and refuses a bad configuration before opening a socket,
 * nothing but Node's own modules is loaded from disk, and the openconnect hand-back script is found beside them.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { build, type BuildOptions } from "esbuild";

interface BuildDaemon {
  buildDaemon(outDir: string): Promise<{ detourd: string; detour: string; "early-block": string }>;
  bundleOptions(): BuildOptions;
}

const root = join(import.meta.dirname, "..");
const dir = mkdtempSync(join(tmpdir(), "detour-bundle-test-"));
const out = join(dir, "detourd");
let script: BuildDaemon;
let bundles: { detourd: string; detour: string; "early-block": string };

before(async () => {
  script = (await import(pathToFileURL(join(root, "scripts", "build-daemon.mjs")).href)) as BuildDaemon;
  bundles = await script.buildDaemon(out);
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Plain node: no loader flags, no NODE_OPTIONS, started outside the repository. */
function node(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, args, {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", LC_ALL: "C" },
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("the-cli-bundle-prints-its-help-with-plain-node", () => {
  const r = node(bundles.detour, "--help");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^usage: detour \[--socket <path>\] <command>/);
  assert.match(r.out, /diag inspect <file>/);
});

test("the-cli-bundle-says-detourd-is-not-running-when-its-socket-is-absent", () => {
  const absent = join(dir, "absent.sock");
  const r = node(bundles.detour, "status", "--socket", absent);
  assert.equal(r.code, 3);
  assert.equal(r.err, `detour: detourd is not running (no socket at ${absent})\n`);
});

test("the-early-block-bundle-runs-with-plain-node-and-blocks-nothing-without-lockdown", () => {
  // Only the paths that apply nothing: a block would go into this host's own firewall.
  const stateDir = join(dir, "early-state");
  const none = node(bundles["early-block"], "--state-dir", stateDir);
  assert.equal(none.code, 0, none.err);
  assert.match(none.err, /"msg":"early block: nothing to block","reason":"no lockdown state recorded"/);
  mkdirSync(stateDir);
  writeFileSync(
    join(stateDir, "lockdown-state.json"),
    JSON.stringify({ format: "detour-lockdown-state/1", lockdown: false, protectedNetworks: [], tunnelDevices: [] }),
  );
  const off = node(bundles["early-block"], "--state-dir", stateDir);
  assert.equal(off.code, 0, off.err);
  assert.match(off.err, /"reason":"lockdown is off"/);
  const bad = node(bundles["early-block"], "--colour", "red");
  assert.equal(bad.code, 2);
  assert.match(bad.err, /^early-block: Unknown option '--colour'/);
});

test("the-detourd-bundle-answers-help-and-the-package-version", () => {
  const help = node(bundles.detourd, "--help");
  assert.equal(help.code, 0, help.err);
  assert.match(help.out, /^usage: detourd --config <file>/);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  const version = node(bundles.detourd, "--version");
  assert.equal(version.code, 0, version.err);
  assert.equal(version.out, `detourd ${pkg.version}\n`);
});

test("the-detourd-bundle-refuses-a-bad-config-naming-each-field-and-opens-no-socket", () => {
  const cfg = join(dir, "bad.json");
  const socket = join(dir, "d.sock");
  writeFileSync(
    cfg,
    JSON.stringify({
      version: 1,
      organisation: "x",
      identity: {},
      gateways: [{ name: "GW 1", hostname: "gw1.example.com", priority: 1, region: "r", protocols: {} }],
      protectedRoutes: ["10.0.0.0/33"],
      probe: { address: "10.0.0.1" },
    }),
  );
  // Never the host's resolv.conf or state folder, even if a refusal came too late.
  const safe = [
    "--resolv-conf",
    join(dir, "resolv.conf"),
    "--state-dir",
    join(dir, "state"),
    "--work-dir",
    join(dir, "work"),
  ];
  const r = node(bundles.detourd, ...safe, "--config", cfg, "--socket", socket);
  assert.equal(r.code, 2);
  assert.match(r.err, /is not a valid configuration:/);
  assert.match(r.err, /gateways\[0\]\.protocols: a gateway needs at least one protocol/);
  assert.match(r.err, /protectedRoutes\[0\]/);
  assert.equal(existsSync(socket), false);
  assert.match(node(bundles.detourd).err, /^detourd: --config is required\nusage: detourd/);
});

test("the-bundles-load-nothing-from-disk-but-nodes-own-modules", () => {
  const builtins = new Set(builtinModules);
  for (const file of [bundles.detourd, bundles.detour]) {
    const text = readFileSync(file, "utf8");
    const loaded = [
      ...text.matchAll(/require\("([^"]+)"\)|^import\s[^;]*?\sfrom\s"([^"]+)"|\bimport\("([^"]+)"\)/gm),
    ].map((m) => m[1] ?? m[2] ?? m[3] ?? "");
    // esbuild's require shim (__require) for CommonJS dependencies, and static and dynamic imports.
    assert.ok(loaded.includes("fs") && loaded.includes("node:util"), "the patterns find what the bundle loads");
    const foreign = [...new Set(loaded)].filter((m) => !builtins.has(m.replace(/^node:/, "")));
    assert.deepEqual(foreign, [], `${file} loads packages or files that are not shipped`);
    assert.doesNotMatch(text, /better-sqlite3|tsx\/dist/, "the collector's SQLite and the tsx loader stay out");
  }
});

test("a-bundle-finds-openconnects-hand-back-script-beside-it", async () => {
  // The engine module bundled exactly as detourd is, into the same folder.
  const probe = join(out, "handback-probe.mjs");
  await build({
    ...script.bundleOptions(),
    entryPoints: [join(root, "native", "engines", "openconnect", "openconnect-engine.ts")],
    outfile: probe,
  });
  try {
    const mod = (await import(pathToFileURL(probe).href)) as { HANDBACK_SCRIPT: string };
    assert.equal(mod.HANDBACK_SCRIPT, join(out, "resources", "engines", "openconnect", "handback.sh"));
    assert.ok(existsSync(mod.HANDBACK_SCRIPT));
  } finally {
    rmSync(probe, { force: true });
  }
});
