/**
 * The browser build of the app behind the lab's captive portal: the status view says "Sign in to this network",
 * why, which page to open and what the kill switch lets through until when; once signed in (the form's POST) the
 * panel goes and the page shows the connection. Chromium, the dev bridge and detourd all run in the client
 * namespace (as in test/e2e/app.lab.test.ts). Screenshots go to test-artifacts/e2e-app/captive-*.png.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import { CHECK_URL, PORTAL_SIGN_IN_URL, portalOff, portalOn } from "./captive.ts";
import { isAlive, run, stopPids } from "./exec.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "capp";
const ARTIFACTS = join(REPO_ROOT, "test-artifacts", "e2e-app");
/** Every leg's deadline (5 s) plus the check's (3 s), with room for a loaded machine. */
const DETECT_WITHIN_MS = 30_000;
/** The page polls its status every second; the race after the sign-in takes well under a second at 0 ms. */
const SHOWN_WITHIN_MS = 20_000;
/** The bridge loads TypeScript through tsx before it listens. */
const BRIDGE_READY_MS = 20_000;
const CHROMIUM_FLAGS = [
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-dev-shm-usage",
];

const ns = lab.topologyOf(ID).client.ns;
const work = mkdtempSync(join(tmpdir(), "detour-captive-app-"));
let bridge: ChildProcess | null = null;
let browser: BrowserContext | null = null;
let client: ControlClient | null = null;
let page: Page;
let url = "";

function startBridge(socket: string): Promise<string> {
  const child = spawn(
    "ip",
    ["netns", "exec", ns, process.execPath, "--import", "tsx", join(REPO_ROOT, "main/app/dev-bridge-main.ts")].concat([
      "--socket",
      socket,
      "--prefs",
      join(work, "prefs.json"),
    ]),
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  bridge = child;
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      reject(new Error(`the bridge did not start within ${String(BRIDGE_READY_MS)} ms`));
    }, BRIDGE_READY_MS);
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString("utf8");
      const nl = out.indexOf("\n");
      if (nl === -1) return;
      clearTimeout(timer);
      resolve((JSON.parse(out.slice(0, nl)) as { url: string }).url);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the bridge exited with ${String(code)}`));
    });
  });
}

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const built = spawnSync(process.execPath, [join(REPO_ROOT, "scripts/build-app.mjs"), "renderer"], {
    cwd: REPO_ROOT,
    encoding: "utf8",
  });
  assert.equal(built.status, 0, built.stderr);
  await lab.down(ID);
  await lab.up(ID, { distance: "none" });
  const state = lab.loadState(ID);
  const cfg = JSON.parse(readFileSync(state.clientConfig, "utf8")) as Record<string, unknown>;
  delete cfg.discovery;
  delete cfg.telemetry;
  cfg.lockdown = true;
  cfg.captive = { checkUrl: CHECK_URL, exceptionMs: 300_000 };
  writeFileSync(state.clientConfig, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
  const agent = await agentStart(ID);
  client = await ControlClient.connect(agent.socket, { timeoutMs: 5000 });
  url = await startBridge(agent.socket);
  const wrapper = join(work, "chromium-in-netns.sh");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} /usr/bin/chromium "$@"\n`);
  chmodSync(wrapper, 0o755);
  browser = await chromium.launchPersistentContext(join(work, "profile"), {
    executablePath: wrapper,
    chromiumSandbox: false, // Chromium as root needs --no-sandbox; the page itself is ours
    args: CHROMIUM_FLAGS,
    viewport: { width: 1000, height: 760 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(url);
});

after(async () => {
  await browser?.close().catch(() => undefined);
  const pid = bridge?.pid;
  if (pid !== undefined && isAlive(pid)) await stopPids([pid], "SIGTERM", 5000);
  client?.close();
  await agentStop(ID);
  await portalOff(ID).catch(() => undefined);
  await lab.down(ID);
  rmSync(work, { recursive: true, force: true });
});

test(
  "the-page-says-sign-in-to-this-network-and-what-to-open-then-shows-the-connection",
  { timeout: 180_000 },
  async () => {
    const c = client;
    assert.ok(c !== null);
    await portalOn(ID);
    await c.connect();
    await waitForStatus(c, "Sign in to this network", (x) => x.captive?.exception.state === "open", DETECT_WITHIN_MS, {
      context: () => agentLogs(ID, 40),
    });
    const panel = page.getByTestId("captive");
    await panel.waitFor({ state: "visible", timeout: SHOWN_WITHIN_MS });
    assert.equal(await page.getByRole("heading", { level: 3, name: "Sign in to this network" }).count(), 1);
    assert.equal(await page.getByTestId("captive-url").textContent(), PORTAL_SIGN_IN_URL);
    assert.match(
      (await page.getByTestId("captive-reason").textContent()) ?? "",
      /redirected to http:\/\/198\.18\.205\.1/,
    );
    assert.match(
      (await page.getByTestId("captive-exception").textContent()) ?? "",
      /^Until \d\d:\d\d:\d\d, this computer/,
    );
    // The window's "Open sign-in page": the browser build has no sign-in window, so its host says what to open.
    await page.getByRole("button", { name: "Open sign-in page" }).click();
    await page
      .getByTestId("open-sign-in-answer")
      .filter({ hasText: `open ${PORTAL_SIGN_IN_URL} in a web browser on this computer` })
      .waitFor({ timeout: SHOWN_WITHIN_MS });
    // The same label and line as the tray and `detour status`, with the time left to sign in.
    assert.equal(await page.getByTestId("headline").textContent(), "Sign in to this network");
    assert.match((await page.getByTestId("sentence").textContent()) ?? "", /Sign in within \d+ min \(until /);
    // the State field does not call a network that wants a sign-in a failure
    assert.equal(await page.getByTestId("state").textContent(), "Waiting for sign-in");
    await page.screenshot({ path: join(ARTIFACTS, "captive-sign-in.png"), fullPage: true });

    const r = await run("ip", ["netns", "exec", ns, "curl", "-s", "-m", "3", "-d", "accept=yes", PORTAL_SIGN_IN_URL], {
      timeoutMs: 10_000,
    });
    assert.equal(r.code, 0, "the sign-in form's POST went through");
    await panel.waitFor({ state: "hidden", timeout: SHOWN_WITHIN_MS });
    await page
      .getByTestId("state")
      .filter({ hasText: /^Connected$/ })
      .waitFor({ timeout: SHOWN_WITHIN_MS });
    await page.screenshot({ path: join(ARTIFACTS, "captive-signed-in.png"), fullPage: true });
    console.log(`screenshots: ${join(ARTIFACTS, "captive-sign-in.png")}, ${join(ARTIFACTS, "captive-signed-in.png")}`);
  },
);
