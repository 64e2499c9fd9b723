// Bundles detourd and the detour CLI with esbuild into one self-contained ES module each, run with plain
// `node` (no tsx, no source tree, no node_modules), and copies beside them the resources detourd hands to
// engines. electron-builder ships the folder as is (electron-builder.yml, extraResources):
//
//   .build/detourd/detourd.mjs                               the daemon
//   .build/detourd/detour.mjs                                the CLI
//   .build/detourd/early-block.mjs                           the early-boot block under lockdown (systemd)
//   .build/detourd/resources/engines/openconnect/handback.sh openconnect's hand-back script (native/resources.ts)
//
// `node scripts/build-daemon.mjs [out-dir]`; type checking is tsc -b's job, not this script's.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;

export const DEFAULT_OUT_DIR = join(root, ".build", "detourd");

/** The bundles and their entry points. */
export const ENTRIES = {
  detourd: "main/agent/detourd.ts",
  detour: "main/cli/detour.ts",
  "early-block": "main/agent/early-block-main.ts",
};

/** What the bundles need from resources/ at run time, copied to the same relative paths beside them. */
export const RUNTIME_RESOURCES = ["engines"];

/**
 * Native addons that dependencies load only if present (inside try/catch) and work without: ssh2's crypto
 * binding and cpu-features (SFTP upload of diagnostic bundles falls back to Node's own crypto), and
 * systeminformation's macOS temperature sensors. They are replaced by a module that throws, so the bundle
 * behaves the same wherever it is installed and never needs an addon built for one Node ABI. Nothing else in
 * detourd or the CLI is native: better-sqlite3 is the collector's, which neither imports.
 */
export const OPTIONAL_NATIVE = /\.node$|^cpu-features$|^osx-temperature-sensor$|^macos-temperature-sensor$/;

const leaveOutOptionalNative = {
  name: "leave-out-optional-native",
  setup(b) {
    b.onResolve({ filter: OPTIONAL_NATIVE }, (args) => ({ path: args.path, namespace: "optional-native" }));
    b.onLoad({ filter: /.*/, namespace: "optional-native" }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not shipped with Detour's bundle`)});`,
      loader: "js",
    }));
  },
};

/**
 * esbuild options shared by both bundles (and by tests that bundle a module the same way). ES modules because
 * the sources use top-level await and import.meta.url; the banner gives the CommonJS dependencies the
 * require, __filename and __dirname that an ES module lacks.
 */
export function bundleOptions() {
  return {
    bundle: true,
    platform: "node",
    target: ["node20"],
    format: "esm",
    plugins: [leaveOutOptionalNative],
    define: { __DETOUR_BUNDLE_RESOURCES__: JSON.stringify("./resources/") },
    banner: {
      js: [
        'import { createRequire as __detourCreateRequire } from "node:module";',
        'import { fileURLToPath as __detourFileURLToPath } from "node:url";',
        'import { dirname as __detourDirname } from "node:path";',
        "const require = __detourCreateRequire(import.meta.url);",
        "const __filename = __detourFileURLToPath(import.meta.url);",
        "const __dirname = __detourDirname(__filename);",
      ].join("\n"),
    },
    legalComments: "eof",
    logLevel: "warning",
  };
}

/** Builds both bundles into `outDir` (emptied first) and returns their paths. */
export async function buildDaemon(outDir = DEFAULT_OUT_DIR) {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const out = {};
  for (const [name, entry] of Object.entries(ENTRIES)) {
    out[name] = join(outDir, `${name}.mjs`);
    await build({ ...bundleOptions(), entryPoints: [join(root, entry)], outfile: out[name] });
  }
  for (const r of RUNTIME_RESOURCES)
    cpSync(join(root, "resources", r), join(outDir, "resources", r), { recursive: true });
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const started = Date.now();
  const out = await buildDaemon(process.argv[2] ?? DEFAULT_OUT_DIR);
  console.log(`daemon -> ${Object.values(out).join(", ")} (${Date.now() - started} ms)`);
}
