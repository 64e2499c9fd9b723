/**
 * electron-builder.yml as a structure: the four platforms' targets, detourd and the CLI as extra resources, the
 * systemd unit installed by the deb, and every file it references present. Building is not possible here, so the
 * app's own bundle is built (esbuild) to check that what the config ships exists.
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
  for (const f of [config.linux.icon, config.win.icon, config.mac.icon, config.deb.afterInstall, config.deb.afterRemove, config.extraMetadata.main]) {
    assert.ok(existsSync(at(f)), `${f} is missing`);
  }
  for (const s of [config.deb.afterInstall, config.deb.afterRemove]) assert.ok((statSync(at(s)).mode & 0o111) !== 0, `${s} is not executable`);
  for (const r of config.extraResources) {
    assert.ok(existsSync(at(r.from)), `extra resource ${r.from} is missing`);
    for (const f of r.filter ?? []) if (!/[*!]/.test(f)) assert.ok(existsSync(join(at(r.from), f)), `${r.from}/${f} is missing`);
  }
  for (const pattern of config.files) {
    if (pattern.startsWith("!")) continue;
    assert.ok(existsSync(at(pattern.replace(/\/\*\*$/, ""))), `files: ${pattern} matches nothing`);
  }
});

test("the-app-ships-its-bundle-preload-page-and-an-icon-per-tray-state", () => {
  assert.equal(config.extraMetadata.main, ".build/app/main.mjs");
  for (const f of [".build/app/preload.cjs", ".build/renderer-web/index.html", ".build/renderer-web/app.js", ".build/renderer-web/app.css"]) assert.ok(existsSync(at(f)), f);
  // main.ts loads these by path; the config must ship what it loads.
  const main = readFileSync(at("main/app/main.ts"), "utf8");
  assert.match(main, /"\.build", "app", "preload\.cjs"/);
  assert.match(main, /"\.build", "renderer-web", "index\.html"/);
  for (const state of TRAY_STATES) for (const f of [`${state}.svg`, `${state}.png`, `${state}@2x.png`, `${state}@4x.png`]) assert.ok(existsSync(at(`resources/icons/${f}`)), f);
});

test("the-sandboxed-preload-requires-nothing-but-electron", () => {
  const preload = readFileSync(at(".build/app/preload.cjs"), "utf8");
  const required = [...preload.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]);
  assert.deepEqual([...new Set(required)], ["electron"]);
});

test("detourd-and-the-cli-ship-and-the-deb-installs-detourds-systemd-unit", () => {
  const bin = config.extraResources.find((r) => r.from === "bin");
  assert.ok(bin !== undefined, "bin ships");
  assert.deepEqual(bin.filter?.sort(), ["detour", "detourd"]);
  const unit = readFileSync(at("resources/systemd/detourd.service"), "utf8");
  assert.ok(config.extraResources.some((r) => r.from === "resources/systemd"), "the unit ships");
  const exec = /^ExecStart=(\S+)/m.exec(unit)?.[1] ?? "";
  assert.ok(exec.endsWith(`/resources/${bin.to}/detourd`), `ExecStart ${exec} points where the deb puts detourd`);
  for (const section of ["[Unit]", "[Service]", "[Install]"]) assert.ok(unit.includes(section), section);
  assert.match(readFileSync(at(config.deb.afterInstall), "utf8"), /detourd\.service/);
});
