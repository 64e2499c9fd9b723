/**
 * A helpdesk bundle from a real, connected detourd: it is written locally, holds the expected files whose hashes
 * match the manifest, carries none of the lab's real secrets nor the planted ones (byte search of every extracted
 * file), uses the same pseudonym for the same value across files, renders in Debian's Chromium with its chart and
 * tables, and is delivered to a real OpenSSH server (SFTP) in the lab's collector namespace.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import { bundleSummary } from "../../main/collector/bundle-summary.ts";
import { renderSummaryHtml } from "../../main/core/diag/summary.ts";
import { collectorPaths } from "./collector.ts";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { chromium } from "playwright-core";
import { ControlClient } from "../../main/client/control-client.ts";
import { base64ToHex } from "../../main/core/diag/redact.ts";
import { readBundle } from "../../main/cli/diag-archive.ts";
import { agentPaths, agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";
import { startSftpDrop, stopSftpDrop, type SftpDrop } from "./sftp.ts";

const ID = "diag";
const CONNECT_WITHIN_MS = 15_000;
/** Long enough for a dozen per-second probe summaries and a closed ten-second sample for the chart. */
const MEASURE_MS = 12_000;
/** Chromium's cold start on a loaded 2-core machine. */
const BROWSER_TIMEOUT_MS = 30_000;

const PLANTED_ENV_NAME = "DETOUR_DIAG_SESSION_TOKEN";
const PLANTED_ENV_SECRET = "planted-env-secret-4c1e77d0";
const PLANTED_LOG_TOKEN = "planted-log-token-a9b8c7d6e5";
const PLANTED_COOKIE = "PLANTEDWEBVPNCOOKIE0123456789";
const PUBLIC_IP = "93.184.216.34";
const PERSON = "alice";

let client: ControlClient | null = null;
let drop: SftpDrop | null = null;
const tmp = mkdtempSync(join(tmpdir(), "detour-diag-lab-"));
const artifacts = join(REPO_ROOT, "test-artifacts");
const saved = {
  token: process.env[PLANTED_ENV_NAME],
  sudo: process.env.SUDO_USER,
  up: process.env.DETOUR_DIAG_UPSTREAM,
};

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await stopSftpDrop(ID);
  await lab.down(ID);
  rmSync(tmp, { recursive: true, force: true });
  for (const [k, v] of [
    [PLANTED_ENV_NAME, saved.token],
    ["SUDO_USER", saved.sudo],
    ["DETOUR_DIAG_UPSTREAM", saved.up],
  ] as const) {
    if (v === undefined) Reflect.deleteProperty(process.env, k);
    else process.env[k] = v;
  }
});

const t0 = Date.now();
function phase(what: string): void {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${what}`);
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

test("bundle-from-a-connected-agent-is-complete-redacted-renders-and-reaches-sftp", { timeout: 240_000 }, async () => {
  phase("lab up");
  const state = lab.loadState(ID);
  drop = await startSftpDrop(ID);
  phase("sshd listening");

  // The lab's config plus an SFTP drop; the daemon also inherits a secret-looking variable and a public address.
  const config = JSON.parse(readFileSync(state.clientConfig, "utf8")) as Record<string, unknown>;
  config.diagnostics = {
    sftp: {
      host: drop.host,
      port: drop.port,
      user: drop.user,
      privateKey: { file: drop.privateKeyFile },
      hostKeySha256: drop.hostKeySha256,
      dir: drop.dropDir,
    },
  };
  writeFileSync(state.clientConfig, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
  process.env[PLANTED_ENV_NAME] = PLANTED_ENV_SECRET;
  process.env.SUDO_USER = PERSON;
  process.env.DETOUR_DIAG_UPSTREAM = PUBLIC_IP;
  // An earlier run's log that leaked a token and a cookie, and names a public address.
  const logFile = join(lab.labDirOf(ID), "logs", "detourd-file.log");
  mkdirSync(join(lab.labDirOf(ID), "logs"), { recursive: true });
  writeFileSync(
    logFile,
    [
      JSON.stringify({
        t: new Date().toISOString(),
        level: "warn",
        msg: `collector answered 401 to authorization: Bearer ${PLANTED_LOG_TOKEN}`,
        from: PUBLIC_IP,
      }),
      `openconnect: Set-Cookie: webvpn=${PLANTED_COOKIE}; path=/`,
      "",
    ].join("\n"),
    { mode: 0o600 },
  );

  const a = await agentStart(ID, { extraArgs: ["--log-file", logFile] });
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  await c.connect();
  const until = Date.now() + CONNECT_WITHIN_MS;
  let s = await c.status();
  for (let i = 0; i < CONNECT_WITHIN_MS / 100 && s.state !== "connected" && Date.now() < until; i++) {
    await sleep(100);
    s = await c.status();
  }
  assert.equal(s.state, "connected", s.summary);
  phase(`connected to ${String(s.gateway)} over ${String(s.protocol)}`);
  await sleep(MEASURE_MS);

  phase("measured");
  // --- the bundle, written locally by the daemon
  const r = await c.diag();
  console.log(
    `bundle ${r.path}: ${r.bytes} bytes, ${r.files} files, ${r.tookMs} ms; removed ${JSON.stringify(r.redactions.removed)}; pseudonymised ${JSON.stringify(r.redactions.pseudonymised)}`,
  );
  assert.ok(r.path.startsWith(join(lab.labDirOf(ID), "detourd-state", "diag")), r.path);
  assert.equal(statSync(r.path).mode & 0o777, 0o600);

  const x = join(tmp, "x");
  mkdirSync(x);
  execFileSync("tar", ["-xzf", r.path, "-C", x]);
  const files = walk(x);
  const names = files.map((f) => relative(x, f).split("/").slice(1).join("/")).sort();
  console.log(`files: ${names.join(", ")}`);
  for (const want of [
    "manifest.json",
    "summary.html",
    "summary.json",
    "redaction-report.json",
    "status.json",
    "flight-recorder.json",
    "telemetry.json",
    "config.json",
    "host.json",
    "nftables.txt",
    "process.json",
    "logs/detourd.log",
  ]) {
    assert.ok(names.includes(want), `${want} is in the bundle`);
  }
  assert.ok(
    names.some((n) => /^engines\/.+\.json$/.test(n)) && names.some((n) => /^engines\/.+\.log$/.test(n)),
    "each running engine's state and output",
  );
  const text = (name: string): string =>
    readFileSync(files.find((f) => f.endsWith(`/${name}`)) ?? assert.fail(`no ${name}`), "utf8");
  assert.match(text("nftables.txt"), /table inet/, "the kill switch's table is in the ruleset");
  const wgState = names.find((n) => /^engines\/.*-wireguard\.json$/.test(n));
  if (wgState !== undefined) assert.match(text(wgState), /"peers"/, "the UAPI dump is there");
  const host = JSON.parse(text("host.json")) as {
    os?: { kernel?: string };
    dns?: { servers?: string[] };
    routes?: unknown;
  };
  assert.ok(host.os?.kernel !== undefined && host.routes !== undefined, "host facts are there");

  // --- manifest hashes
  const opened = await readBundle(r.path);
  assert.ok(opened.check.ok, opened.check.problems.join("; "));
  assert.equal(opened.check.verified, names.length - 1);

  // --- no secret, real or planted, in any byte of any file
  const sshKey = readFileSync(drop.privateKeyFile, "utf8");
  const wgKey = lab.readSecret(state.secrets.clientWgPrivateKeyFile);
  const secrets = [
    wgKey,
    base64ToHex(wgKey) ?? assert.fail("wg key is base64"),
    lab.readSecret(state.secrets.pskFile),
    lab.readSecret(state.secrets.passwordFile),
    ...sshKey.split("\n").filter((l) => l.length >= 16 && !l.startsWith("-----")),
    PLANTED_ENV_SECRET,
    PLANTED_LOG_TOKEN,
    PLANTED_COOKIE,
    PUBLIC_IP,
  ];
  for (const f of files) {
    const bytes = readFileSync(f);
    const lower = bytes.toString("latin1").toLowerCase();
    for (const sec of secrets)
      assert.ok(
        bytes.indexOf(Buffer.from(sec)) === -1 && !lower.includes(sec.toLowerCase()),
        `${relative(x, f)} contains a secret (${sec.slice(0, 6)}...)`,
      );
    assert.equal(
      /(?<![A-Za-z0-9_-])alice(?![A-Za-z0-9_-])/.test(bytes.toString("utf8")),
      false,
      `${relative(x, f)} names the user`,
    );
  }

  // --- the same value gets the same pseudonym across files
  const userToken =
    /"username": "(user-\d+)"/.exec(text("config.json"))?.[1] ?? assert.fail("user name pseudonymised in config.json");
  assert.ok(
    text("process.json").includes(`"SUDO_USER": "${userToken}"`),
    "SUDO_USER carries the same token as the configured user name",
  );
  const ipToken =
    /"DETOUR_DIAG_UPSTREAM": "(ip-\d+)"/.exec(text("process.json"))?.[1] ??
    assert.fail("public address pseudonymised in process.json");
  assert.ok(text("logs/detourd.log").includes(ipToken), "the log uses the same token for the same address");
  assert.ok(text(`process.json`).includes(`"${PLANTED_ENV_NAME}": "[removed:known-secret]"`));

  phase("bundle checked");
  // --- summary.html renders in Debian's Chromium, with its chart and tables
  mkdirSync(artifacts, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "detour-chromium-"));
  try {
    const ctx = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      timeout: BROWSER_TIMEOUT_MS,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    try {
      const page = await ctx.newPage();
      await page.setViewportSize({ width: 1200, height: 1000 });
      const htmlFile = files.find((f) => f.endsWith("/summary.html")) ?? assert.fail();
      await page.goto(pathToFileURL(htmlFile).href);
      const sentence = await page.locator("#state").innerText();
      assert.match(sentence, /^Connected to gw\d over /, sentence);
      const p50 = await page.locator("#chart path.rtt-p50").getAttribute("d");
      assert.ok(
        p50 !== null && (p50.match(/L/g) ?? []).length >= 1,
        `the chart has an RTT line: ${String(p50).slice(0, 80)}`,
      );
      const box = await page.locator("#chart").boundingBox();
      assert.ok(box !== null && box.width > 300 && box.height > 100, "the chart is laid out");
      assert.equal(await page.locator("#gateways tbody tr").count(), 3);
      assert.ok((await page.locator("#races tbody tr").count()) >= 1);
      await page.screenshot({ path: join(artifacts, "diag-summary.png"), fullPage: true });
    } finally {
      await ctx.close();
    }
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }

  phase("rendered in Chromium");
  // --- the CLI: --out copies it, inspect prints the summary and verifies the hashes offline
  const out = join(tmp, "copy.tar.gz");
  const cli = (args: string[], ns?: string): { code: number | null; out: string } => {
    const argv = [join(REPO_ROOT, "bin", "detour"), ...args];
    const res =
      ns === undefined
        ? spawnSync(argv[0] ?? "", argv.slice(1), { encoding: "utf8", timeout: 90_000 })
        : spawnSync("ip", ["netns", "exec", ns, ...argv], { encoding: "utf8", timeout: 90_000 });
    return { code: res.status, out: `${res.stdout}${res.stderr}` };
  };
  const made = cli(["--socket", agentPaths(ID).socket, "diag", "--out", out], lab.topologyOf(ID).client.ns);
  assert.equal(made.code, 0, made.out);
  assert.match(made.out, /removed: .*known-secret/);
  const ins = cli(["diag", "inspect", out]);
  assert.equal(ins.code, 0, ins.out);
  assert.match(ins.out, /Connected to gw\d/);
  assert.match(ins.out, /Integrity: all \d+ files match/);
  console.log(ins.out);

  phase("CLI diag and inspect");
  // --- delivery to the SFTP drop (real sshd, pinned host key)
  const up = await c.diagUpload();
  const sftp = up.uploads.find((u) => u.target === "sftp") ?? assert.fail("no SFTP upload attempted");
  assert.ok(sftp.ok, sftp.error ?? "");
  const landed = readdirSync(drop.dropDir);
  assert.deepEqual(landed, [up.path.split("/").pop()], "exactly the bundle, no .partial left");
  const sha = (p: string): string => createHash("sha256").update(readFileSync(p)).digest("hex");
  assert.equal(sha(join(drop.dropDir, landed[0] ?? "")), sha(up.path), "the server has the same bytes");
  assert.match(readFileSync(drop.log, "utf8"), /Accepted publickey for root/);
  phase("uploaded over SFTP");
  // --- and to the lab's collector (the lab config reports telemetry there): stored once, its summary readable
  const col = up.uploads.find((u) => u.target === "collector") ?? assert.fail("no collector upload attempted");
  assert.ok(col.ok, col.error ?? "");
  const db = new Database(collectorPaths(lab.labDirOf(ID)).db, { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare("SELECT sha256, name, body FROM bundles").all() as {
      sha256: string;
      name: string;
      body: Buffer;
    }[];
    assert.deepEqual(
      rows.map((r) => [r.sha256, r.name]),
      [[sha(up.path), up.path.split("/").pop()]],
      "the collector holds exactly this bundle",
    );
    const summary = bundleSummary(rows[0]?.body ?? new Uint8Array());
    assert.ok(
      summary.ok && /Connected to gw\d/.test(renderSummaryHtml(summary.model)),
      "the dashboard can open its summary",
    );
  } finally {
    db.close();
  }
  phase("uploaded to the collector");
});
