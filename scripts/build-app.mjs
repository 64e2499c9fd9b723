// Bundles the desktop app with esbuild: the renderer for the browser and Electron's window
// (.build/renderer-web: index.html, app.js, app.css), and the Electron main process and the sandboxed preload
// (.build/app: main.mjs, preload.cjs; a sandboxed preload cannot import modules, so it is one CommonJS file),
// and with `daemon` or `all` also detourd and the CLI that the package ships beside it (scripts/build-daemon.mjs).
// `node scripts/build-app.mjs [renderer|electron|daemon|all]`; type checking is tsc -b's job, not this script's.
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { buildDaemon } from "./build-daemon.mjs";

const root = new URL("..", import.meta.url).pathname;
const which = process.argv[2] ?? "all";

export async function buildRenderer(outDir = join(root, ".build", "renderer-web")) {
  mkdirSync(outDir, { recursive: true });
  await build({
    entryPoints: [join(root, "renderer", "app.ts")],
    outfile: join(outDir, "app.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["chrome120"],
    sourcemap: true,
    logLevel: "warning",
  });
  for (const f of ["index.html", "app.css"]) copyFileSync(join(root, "renderer", f), join(outDir, f));
  return outDir;
}

export async function buildElectron(outDir = join(root, ".build", "app")) {
  mkdirSync(outDir, { recursive: true });
  const common = {
    bundle: true,
    platform: "node",
    target: ["node20"],
    external: ["electron"],
    sourcemap: true,
    logLevel: "warning",
  };
  await build({
    ...common,
    entryPoints: [join(root, "main", "app", "main.ts")],
    outfile: join(outDir, "main.mjs"),
    format: "esm",
  });
  await build({
    ...common,
    entryPoints: [join(root, "main", "preload", "preload.ts")],
    outfile: join(outDir, "preload.cjs"),
    format: "cjs",
  });
  return outDir;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (which === "renderer" || which === "all") console.log(`renderer -> ${await buildRenderer()}`);
  if (which === "electron" || which === "all") console.log(`electron -> ${await buildElectron()}`);
  if (which === "daemon" || which === "all") console.log(`daemon -> ${Object.values(await buildDaemon()).join(", ")}`);
}
