/**
 * The systemd units the deb installs, read as systemd reads them: under lockdown the early-boot block runs before
 * any network is configured (before network-pre.target, which it pulls in, outside the default dependencies that
 * would order it after sysinit), detourd starts after it, both name the same state folder and the bundle that
 * ships, and the deb's scripts install, enable and remove both. `systemd-analyze verify` checks the syntax too
 * (it works without a running systemd).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { LOCKDOWN_STATE_FILE } from "../core/lockdown-state.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const UNITS = join(ROOT, "resources", "systemd");
const EARLY = "detour-early-block.service";
const DAEMON = "detourd.service";

/** A unit file as systemd reads it: section -> key -> every value (repeated keys add; space-separated lists split). */
type Unit = Map<string, Map<string, string[]>>;

function readUnit(name: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of readFileSync(join(UNITS, name), "utf8").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = new Map();
      unit.set(header[1] ?? "", section);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(section !== undefined && eq > 0, `${name}: "${line}" is outside a section or not key=value`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return unit;
}

function values(u: Unit, section: string, key: string): string[] {
  return (u.get(section)?.get(key) ?? []).flatMap((v) => v.split(/\s+/)).filter((v) => v !== "");
}

function one(u: Unit, section: string, key: string): string {
  const v = u.get(section)?.get(key) ?? [];
  assert.equal(v.length, 1, `${section} ${key} is set once`);
  return v[0] ?? "";
}

test("the-early-block-runs-before-the-network-is-configured-and-before-detourd", () => {
  const early = readUnit(EARLY);
  assert.equal(one(early, "Unit", "DefaultDependencies"), "no", "not held back until sysinit.target");
  assert.ok(values(early, "Unit", "Before").includes("network-pre.target"), "Before=network-pre.target");
  assert.ok(values(early, "Unit", "Wants").includes("network-pre.target"), "pulls network-pre.target in");
  assert.ok(values(early, "Unit", "Before").includes(DAEMON), "detourd takes the table over after it");
  for (const late of ["network.target", "network-online.target", "sysinit.target", "basic.target"])
    assert.ok(!values(early, "Unit", "After").includes(late), `not after ${late}`);
  assert.equal(one(early, "Service", "Type"), "oneshot", "the network waits until the table is in force");
  assert.equal(one(early, "Service", "RemainAfterExit"), "yes", "once per boot");
  assert.ok(values(early, "Install", "WantedBy").includes(DAEMON));
});

test("detourd-starts-after-the-network-and-the-early-block", () => {
  const daemon = readUnit(DAEMON);
  for (const dep of ["network-online.target", EARLY]) {
    assert.ok(values(daemon, "Unit", "After").includes(dep), `detourd After=${dep}`);
    assert.ok(values(daemon, "Unit", "Wants").includes(dep), `detourd Wants=${dep}`);
  }
});

test("both-units-use-the-shipped-bundles-and-the-same-state-folder", () => {
  const early = readUnit(EARLY);
  const daemon = readUnit(DAEMON);
  const config = parse(readFileSync(join(ROOT, "electron-builder.yml"), "utf8")) as {
    extraResources: { from: string; to: string; filter?: string[] }[];
  };
  const bundles = config.extraResources.find((r) => r.from === ".build/detourd");
  assert.ok(bundles?.filter !== undefined && bundles.filter.includes("early-block.mjs"), "the bundle ships");
  const exec = one(early, "Service", "ExecStart").split(/\s+/);
  assert.deepEqual(exec.slice(0, 2), ["/usr/bin/node", `/opt/Detour/resources/${bundles.to}/early-block.mjs`]);
  const stateDir = exec[exec.indexOf("--state-dir") + 1];
  assert.equal(stateDir, `/var/lib/${one(daemon, "Service", "StateDirectory")}`, "where detourd records the state");
  assert.ok(values(early, "Unit", "RequiresMountsFor").includes(stateDir), "the state folder is mounted first");
  assert.ok(values(early, "Unit", "RequiresMountsFor").includes("/usr/bin/node"));
  assert.equal(LOCKDOWN_STATE_FILE, "lockdown-state.json");
  assert.ok(values(early, "Service", "CapabilityBoundingSet").includes("CAP_NET_ADMIN"), "nft needs it");
});

test("the-deb-installs-and-enables-both-units-and-removes-them-and-the-table", () => {
  const postinst = readFileSync(join(UNITS, "postinst.sh"), "utf8");
  for (const u of [EARLY, DAEMON])
    assert.ok(postinst.includes(`/opt/Detour/resources/systemd/${u} /lib/systemd/system/${u}`), `installs ${u}`);
  assert.match(postinst, new RegExp(`^systemctl enable ${EARLY} ${DAEMON}`, "m"));
  assert.ok(!new RegExp(`(start|--now)[^\\n]*${EARLY}`).test(postinst), "the early block is never started at install");
  const postrm = readFileSync(join(UNITS, "postrm.sh"), "utf8");
  assert.match(postrm, /remove \| purge\)/, "an upgrade removes nothing");
  assert.ok(postrm.includes(`/lib/systemd/system/${EARLY}`) && postrm.includes(`/lib/systemd/system/${DAEMON}`));
  assert.match(postrm, /nft delete table inet detour_killswitch/, "a removed Detour leaves no block behind");
});

test("systemd-analyze-verify-finds-nothing-to-say-about-the-units", () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-units-"));
  try {
    for (const u of [EARLY, DAEMON]) cpSync(join(UNITS, u), join(dir, u));
    const r = spawnSync("systemd-analyze", ["verify", "--man=no", join(dir, EARLY), join(dir, DAEMON)], {
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(r.error, undefined, "systemd-analyze runs (Debian's systemd package)");
    // It exits 0 on unknown keys and bad values and only says so: any word about our files is a fault.
    const said = `${r.stdout}${r.stderr}`
      .split("\n")
      .filter((l) => l.includes(EARLY) || l.includes(DAEMON))
      .filter((l) => !/\/opt\/Detour\/.* is not executable|No such file or directory/.test(l));
    assert.deepEqual(said, []);
    assert.equal(r.status, 0, r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
