/**
 * The browser build of the app behind the lab's captive portal: the status view says "Sign in to this network",
 * why, which page to open and what the kill switch lets through until when; once signed in (the form's POST) the
 * panel goes and the page shows the connection. Chromium, the dev bridge and detourd all run in the client
 * namespace (as in test/e2e/app.lab.test.ts). Screenshots go to test-artifacts/e2e-app/captive-*.png.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { BrowserContext, Page } from "playwright-core";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import { buildRenderer, screenshot, startBridge, type DevBridge } from "./app-page.ts";
import { launchChromiumInNs } from "./browser.ts";
import { CHECK_URL, PORTAL_SIGN_IN_URL, portalOff, portalOn } from "./captive.ts";
import { run } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "capp";
/** Every leg's deadline (5 s) plus the check's (3 s), with room for a loaded machine. */
const DETECT_WITHIN_MS = 30_000;
/** The page polls its status every second; the race after the sign-in takes well under a second at 0 ms. */
const SHOWN_WITHIN_MS = 20_000;
const ns = lab.topologyOf(ID).client.ns;
const work = mkdtempSync(join(tmpdir(), "detour-captive-app-"));
let bridge: DevBridge | null = null;
let browser: BrowserContext | null = null;
let client: ControlClient | null = null;
let page: Page;
let url = "";

before(async () => {
  buildRenderer();
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
  bridge = startBridge(ns, agent.socket, join(work, "prefs.json"));
  url = await bridge.url;
  browser = await launchChromiumInNs(ns, { workDir: join(work, "browser"), viewport: { width: 1000, height: 760 } });
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(url);
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await bridge?.stop();
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
      (await page.getByTestId("captive-exception").textContent()) ?? "",
      /^Meanwhile this computer may reach only this network's sign-in page/,
    );
    // The reason and the time left are the status line's (below); the panel does not say them twice.
    assert.doesNotMatch((await panel.textContent()) ?? "", /redirected|Sign in within/);
    assert.match((await page.getByTestId("sentence").textContent()) ?? "", /redirected to http:\/\/198\.18\.205\.1/);
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
    const signInShot = await screenshot(page, "captive-sign-in.png");

    const r = await run("ip", ["netns", "exec", ns, "curl", "-s", "-m", "3", "-d", "accept=yes", PORTAL_SIGN_IN_URL], {
      timeoutMs: 10_000,
    });
    assert.equal(r.code, 0, "the sign-in form's POST went through");
    await panel.waitFor({ state: "hidden", timeout: SHOWN_WITHIN_MS });
    await page
      .getByTestId("state")
      .filter({ hasText: /^Connected$/ })
      .waitFor({ timeout: SHOWN_WITHIN_MS });
    const signedInShot = await screenshot(page, "captive-signed-in.png");
    console.log(`screenshots: ${signInShot}, ${signedInShot}`);
  },
);
