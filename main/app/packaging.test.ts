/**
 * electron-builder.yml as a structure: the four platforms' targets, detourd and the CLI as extra resources, the
 * systemd unit installed by the deb, and every file it references present. Building installers is not possible
 * here, so the bundles the config ships (the app's, detourd's and the CLI's; esbuild) are built first, and every
 * file is checked after that build.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { before, test } from "node:test";
import { parse } from "yaml";
import { TRAY_STATES } from "./tray-model.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const at = (p: string): string => join(ROOT, p);

interface ExtraResource {
  from: string;
  to: string;
  filter?: string[];
}
interface BuilderConfig {
  appId: string;
  productName: string;
  extraMetadata: { main: string };
  files: string[];
  extraResources: ExtraResource[];
  linux: { target: string[]; icon: string };
  deb: { afterInstall: string; afterRemove: string; depends: string[] };
  win: { target: string[]; icon: string };
  mac: { target: string[]; icon: string };
}

const config = parse(readFileSync(at("electron-builder.yml"), "utf8")) as BuilderConfig;

before(() => {
  const r = spawnSync(process.execPath, [at("scripts/build-app.mjs"), "all"], { cwd: ROOT, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});

test("every-platform-has-its-installer-target", () => {
  assert.equal(config.productName, "Detour");
  assert.match(config.appId, /^[a-z0-9.-]+$/);
  assert.deepEqual(config.linux.target, ["deb", "AppImage"]);
  assert.deepEqual(config.win.target, ["nsis"]);
  assert.deepEqual(config.mac.target, ["dmg"]);
});

test("every-file-the-config-references-exists", () => {
  for (const f of [
    config.linux.icon,
    config.win.icon,
    config.mac.icon,
    config.deb.afterInstall,
    config.deb.afterRemove,
    config.extraMetadata.main,
  ]) {
    assert.ok(existsSync(at(f)), `${f} is missing`);
  }
  for (const s of [config.deb.afterInstall, config.deb.afterRemove])
    assert.ok((statSync(at(s)).mode & 0o111) !== 0, `${s} is not executable`);
  for (const r of config.extraResources) {
    assert.ok(existsSync(at(r.from)), `extra resource ${r.from} is missing`);
    for (const f of r.filter ?? [])
      if (!/[*!]/.test(f)) assert.ok(existsSync(join(at(r.from), f)), `${r.from}/${f} is missing`);
  }
  for (const pattern of config.files) {
    if (pattern.startsWith("!")) continue;
    assert.ok(existsSync(at(pattern.replace(/\/\*\*$/, ""))), `files: ${pattern} matches nothing`);
  }
});

test("the-app-ships-its-bundle-preload-page-and-an-icon-per-tray-state", () => {
  assert.equal(config.extraMetadata.main, ".build/app/main.mjs");
  for (const f of [
    ".build/app/preload.cjs",
    ".build/renderer-web/index.html",
    ".build/renderer-web/app.js",
    ".build/renderer-web/app.css",
  ])
    assert.ok(existsSync(at(f)), f);
  // main.ts loads these by path; the config must ship what it loads.
  const main = readFileSync(at("main/app/main.ts"), "utf8");
  assert.match(main, /"\.build", "app", "preload\.cjs"/);
  assert.match(main, /"\.build", "renderer-web", "index\.html"/);
  for (const state of TRAY_STATES)
    for (const f of [`${state}.svg`, `${state}.png`, `${state}@2x.png`, `${state}@4x.png`])
      assert.ok(existsSync(at(`resources/icons/${f}`)), f);
});

test("the-sandboxed-preload-requires-nothing-but-electron", () => {
  const preload = readFileSync(at(".build/app/preload.cjs"), "utf8");
  const required = [...preload.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]);
  assert.deepEqual([...new Set(required)], ["electron"]);
});

/** Where the deb puts the app; extra resources land in its resources/ folder. */
const DEB_INSTALL_DIR = "/opt/Detour";

test("detourd-and-the-cli-ship-as-bundles-with-the-resources-they-hand-to-engines", () => {
  const bundles = config.extraResources.find((r) => r.from === ".build/detourd");
  assert.ok(bundles !== undefined, "the bundle folder ships");
  assert.deepEqual(bundles.filter, ["detourd.mjs", "detour.mjs", "early-block.mjs", "resources/engines/**"]);
  // Only what the bundles run ships: no TypeScript sources and no tsx wrapper.
  assert.ok(!config.extraResources.some((r) => ["bin", "main", "native"].includes(r.from)), "sources do not ship");
  // native/resources.ts finds openconnect's hand-back script at this path relative to the bundle.
  assert.ok(
    existsSync(at(".build/detourd/resources/engines/openconnect/handback.sh")),
    "the hand-back script is beside the bundles",
  );
});

test("the-deb-runs-the-bundled-detourd-with-systemd-and-puts-detour-on-the-path", () => {
  const bundles = config.extraResources.find((r) => r.from === ".build/detourd");
  assert.ok(bundles !== undefined);
  const installed = `${DEB_INSTALL_DIR}/resources/${bundles.to}`;
  assert.ok(
    config.deb.depends.some((d) => /^nodejs \(>= 20/.test(d)),
    "the bundles run on the system's Node 20 or later",
  );
  const unit = readFileSync(at("resources/systemd/detourd.service"), "utf8");
  assert.ok(
    config.extraResources.some((r) => r.from === "resources/systemd" && r.to === "systemd"),
    "the unit ships",
  );
  assert.match(
    unit,
    new RegExp(
      `^ExecStart=/usr/bin/node --max-semi-space-size=1 --optimize-for-size ${installed}/detourd\\.mjs --config `,
      "m",
    ),
    "ExecStart runs the bundle where the deb puts it, with V8's young generation kept small and sized for memory",
  );
  assert.match(unit, /^Environment=MALLOC_ARENA_MAX=2$/m, "two malloc arenas (README, detourd's memory)");
  for (const section of ["[Unit]", "[Service]", "[Install]"]) assert.ok(unit.includes(section), section);
  const postinst = readFileSync(at(config.deb.afterInstall), "utf8");
  assert.ok(
    postinst.includes(`${DEB_INSTALL_DIR}/resources/systemd/detourd.service /lib/systemd/system/detourd.service`),
    "postinst installs the shipped unit",
  );
  assert.ok(
    postinst.includes(`exec /usr/bin/node ${installed}/detour.mjs "$@"`),
    "postinst puts the bundled CLI on the path as detour",
  );
  assert.match(
    readFileSync(at(config.deb.afterRemove), "utf8"),
    /rm -f \/lib\/systemd\/system\/detourd\.service \/lib\/systemd\/system\/detour-early-block\.service \/usr\/bin\/detour\n/,
  );
});
