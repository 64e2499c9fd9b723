/**
 * The desktop app's page in Chromium against a real detourd, real engines and real gateways: what a remote
 * employee sees and does. Everything runs in the lab's client namespace: detourd, the dev bridge (127.0.0.1 of
 * that namespace) and Chromium (through a wrapper that enters the namespace; Playwright drives it over a pipe).
 * detourd runs under a real signed managed policy (a key made for the run, trusted by the agent), which locks keys
 * the other cases leave alone. Screenshots go to test-artifacts/e2e-app/.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { BrowserContext, Page } from "playwright-core";
import { ControlClient } from "../../main/client/control-client.ts";
import { keygen, loadPrivateKey, signPolicy } from "../../main/cli/policy-tools.ts";
import { agentStart, agentStop } from "../lab/agent.ts";
import { assertAccessible, buildRenderer, screenshot, startBridge, type DevBridge } from "../lab/app-page.ts";
import { launchChromiumInNs } from "../lab/browser.ts";
import * as lab from "../lab/lab.ts";

const ID = "app";
/** A healthy lab connects in well under a second; allow for a loaded two-core CI machine. */
const CONNECT_WITHIN_MS = 10_000;
/** Failover is sub-second; the page learns of it from the next pushed status (1 s). "Within seconds." */
const FAILOVER_SHOWN_WITHIN_MS = 8_000;
/** detourd reads its policy file at start-up; 10 s bounds a slow machine. */
const POLICY_IN_FORCE_WITHIN_MS = 10_000;
/** The lab's client configuration is for this organisation; detourd refuses a policy for any other. */
const ORGANISATION = `Detour lab ${ID}`;
const LOCKED_BY = `${ORGANISATION}'s policy`;
/**
 * What IT enforces on this device: `autoConnect` (the app's "Connect when Detour starts") and daemon-only keys.
 * Every value is the one the other cases rely on (no auto-connect: the first case connects from the page; all
 * protocols; the warm standby on for the failover case), and gateways are not restricted, so the page's gateway
 * choice still works.
 */
const POLICY_SETTINGS = {
  autoConnect: false,
  lockdown: false,
  allowedProtocols: ["wireguard", "ikev2", "anyconnect"],
  standby: { mode: "on" },
  race: { staggerMs: 250 },
};
/** How the page names each locked key and shows its enforced value, in detourd's key order. */
const MANAGED_SHOWN: [string, string][] = [
  ["Connect when the Detour service starts", "Off"],
  ["Allowed protocols", "WireGuard, IKEv2, AnyConnect"],
  ["Block traffic while disconnected (lockdown)", "Off"],
  ["Delay between connection attempts", "250 ms"],
  ["Warm standby", "On"],
];
const ns = lab.topologyOf(ID).client.ns;
const work = mkdtempSync(join(tmpdir(), "detour-e2e-app-"));
let bridge: DevBridge | null = null;
let browser: BrowserContext | null = null;
let page: Page;
let url = "";

/**
 * Installs a signed policy the way IT would: a signing key made for this run, its public half in the folder of
 * keys detourd trusts, and the envelope written (renamed into place) to the policy file detourd watches.
 */
function installPolicy(): { policyFile: string; keysDir: string } {
  const dir = join(work, "policy");
  const keysDir = join(dir, "trusted-keys");
  const itDir = join(dir, "it");
  mkdirSync(keysDir, { recursive: true, mode: 0o700 });
  const k = keygen(itDir);
  renameSync(k.publicPath, join(keysDir, `${k.keyId}.pem`));
  const now = Date.now();
  const doc = {
    version: 1,
    issuedAt: new Date(now - 3_600_000).toISOString(),
    expiresAt: new Date(now + 86_400_000).toISOString(),
    organisation: ORGANISATION,
    settings: POLICY_SETTINGS,
  };
  const envelope = signPolicy(Buffer.from(JSON.stringify(doc, null, 2) + "\n"), loadPrivateKey(k.privatePath));
  const policyFile = join(dir, "policy.json");
  writeFileSync(`${policyFile}.new`, JSON.stringify(envelope, null, 2) + "\n", { mode: 0o644 });
  renameSync(`${policyFile}.new`, policyFile);
  return { policyFile, keysDir };
}

/** Waits until detourd has the policy in force, so the page never sees the daemon without it. */
async function policyInForce(socket: string): Promise<void> {
  const c = await ControlClient.connect(socket, { timeoutMs: 5000 });
  try {
    const until = Date.now() + POLICY_IN_FORCE_WITHIN_MS;
    for (;;) {
      const p = (await c.status()).policy;
      if (p?.version === 1) return;
      if (Date.now() > until)
        assert.fail(
          `detourd did not put the policy in force within ${POLICY_IN_FORCE_WITHIN_MS} ms: ${JSON.stringify(p)}`,
        );
      await sleep(100);
    }
  } finally {
    c.close();
  }
}

before(async () => {
  buildRenderer();
  await lab.down(ID);
  await lab.up(ID);
  const policy = installPolicy();
  const agent = await agentStart(ID, {
    extraArgs: ["--policy-file", policy.policyFile, "--trusted-keys", policy.keysDir],
  });
  await policyInForce(agent.socket);
  bridge = startBridge(ns, agent.socket, join(work, "prefs.json"));
  url = await bridge.url;
  browser = await launchChromiumInNs(ns, { workDir: join(work, "browser"), viewport: { width: 1000, height: 760 } });
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(url);
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await bridge?.stop();
  await agentStop(ID);
  await lab.down(ID);
  rmSync(work, { recursive: true, force: true });
});

const sentence = (): ReturnType<Page["getByTestId"]> => page.getByTestId("sentence");

async function view(name: string): Promise<void> {
  await page.getByRole("tab", { name }).click();
  await page.getByRole("heading", { level: 2, name }).waitFor();
}

async function shot(file: string): Promise<void> {
  await screenshot(page, file);
}

function accessible(what: string): Promise<void> {
  return assertAccessible(page, what);
}

test("the-page-shows-connected-with-the-right-gateway", { timeout: 60_000 }, async () => {
  await sentence().waitFor();
  await accessible("status view, disconnected");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await page
    .getByTestId("state")
    .filter({ hasText: /^Connected$/ })
    .waitFor({ timeout: CONNECT_WITHIN_MS });
  assert.match((await sentence().textContent()) ?? "", /^Connected to gw1 over WireGuard/);
  assert.equal(await page.getByTestId("gateway").textContent(), "gw1");
  assert.equal(await page.getByTestId("protocol").textContent(), "WireGuard");
  // A few pushed statuses later the latency sparkline has a line and a number.
  await page.locator(".spark-value").first().filter({ hasText: / ms$/ }).waitFor({ timeout: 5000 });
  await page.waitForFunction(
    () => (document.querySelector(".spark path")?.getAttribute("d") ?? "").includes("L"),
    undefined,
    { timeout: 5000 },
  );
  await shot("01-status-connected-gw1.png");
  await accessible("status view, connected");
});

test("the-lab-kills-the-gateway-and-the-page-shows-the-failover-without-a-reload", { timeout: 60_000 }, async () => {
  await page.evaluate(() => {
    (window as unknown as { notReloaded: boolean }).notReloaded = true;
  });
  const t0 = Date.now();
  await lab.kill("gw1", "all", ID);
  await page
    .getByTestId("gateway")
    .filter({ hasText: /^gw[23]/ })
    .waitFor({ timeout: FAILOVER_SHOWN_WITHIN_MS });
  console.log(
    `the page showed the failover ${Date.now() - t0} ms after gw1 was killed: ${(await sentence().textContent()) ?? ""}`,
  );
  assert.equal(
    await page.evaluate(() => (window as unknown as { notReloaded?: boolean }).notReloaded),
    true,
    "no reload",
  );
  await page
    .getByTestId("state")
    .filter({ hasText: /^Connected$/ })
    .waitFor({ timeout: FAILOVER_SHOWN_WITHIN_MS });
  await shot("02-status-after-failover.png");
  await view("History");
  await page
    .getByTestId("last-failover")
    .filter({ hasText: /^.*Moved from gw1 over WireGuard to gw[23]/ })
    .waitFor({ timeout: 5000 });
  await page
    .locator(".timeline li")
    .filter({ hasText: /Moved from gw1/ })
    .first()
    .waitFor({ timeout: 5000 });
  await shot("03-history-failover-timeline.png");
  await accessible("history view");
  await lab.restore("gw1", "all", ID);
});

test(
  "choosing-a-gateway-from-the-page-moves-the-tunnel-there-and-automatic-undoes-it",
  { timeout: 60_000 },
  async () => {
    await view("Gateways");
    await page.getByRole("row").filter({ hasText: "gw3" }).waitFor();
    await page.getByRole("radio", { name: /^gw3/ }).check();
    await view("Status");
    await page
      .getByTestId("gateway")
      .filter({ hasText: /^gw3 \(chosen\)$/ })
      .waitFor({ timeout: CONNECT_WITHIN_MS });
    await page
      .getByTestId("state")
      .filter({ hasText: /^Connected$/ })
      .waitFor({ timeout: CONNECT_WITHIN_MS });
    await view("Gateways");
    await page.getByRole("row").filter({ hasText: "gw3" }).filter({ hasText: "active" }).waitFor({ timeout: 5000 });
    await shot("04-gateways-gw3-chosen.png");
    await accessible("gateways view");
    await page.getByRole("radio", { name: /^Automatic/ }).check();
    await page.getByText("Detour picks the best gateway automatically.").waitFor({ timeout: 5000 });
  },
);

test("disconnect-and-connect-from-the-page", { timeout: 60_000 }, async () => {
  await view("Status");
  await page.getByRole("button", { name: "Disconnect" }).click();
  await page
    .getByTestId("state")
    .filter({ hasText: /^Disconnected$/ })
    .waitFor({ timeout: CONNECT_WITHIN_MS });
  assert.equal(await page.getByRole("button", { name: "Disconnect" }).isDisabled(), true);
  await shot("05-status-disconnected.png");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await page
    .getByTestId("state")
    .filter({ hasText: /^Connected$/ })
    .waitFor({ timeout: CONNECT_WITHIN_MS });
  assert.match((await sentence().textContent()) ?? "", /^Connected to gw\d over /);
});

test("the-diagnostics-button-asks-the-daemon-for-a-bundle", { timeout: 30_000 }, async () => {
  await view("Diagnostics");
  await accessible("diagnostics view");
  await page.getByRole("button", { name: "Create diagnostic bundle" }).click();
  // detourd writes the bundle (root-only, in its state folder); the page shows where.
  await page
    .getByTestId("diag-result")
    .filter({ hasText: /^Bundle created \(\d+ KiB\)/ })
    .waitFor({ timeout: 30_000 });
  const written = ((await page.getByTestId("diag-path").textContent()) ?? "").trim();
  assert.match(written, /detour-diag-.*\.tar\.gz$/);
  assert.ok(existsSync(written), `the bundle exists: ${written}`);
  assert.equal(
    await page.getByRole("button", { name: "Upload bundle" }).isDisabled(),
    false,
    "a bundle can be uploaded",
  );
  await shot("06-diagnostics-bundle-created.png");
});

test("a-locked-setting-cannot-be-changed-and-an-unlocked-one-can", { timeout: 30_000 }, async () => {
  await view("Settings");
  // The app's own preference that detourd's policy decides: disabled, showing the enforced value and who manages it.
  const locked = page.getByRole("checkbox", { name: "Connect when Detour starts" });
  await locked.waitFor();
  assert.equal(await locked.isDisabled(), true);
  assert.equal(await locked.isChecked(), false, "the policy's value is shown");
  assert.equal(
    await page.locator(`#${(await locked.getAttribute("aria-describedby")) ?? "none"}`).textContent(),
    `Locked: managed by ${LOCKED_BY}`,
  );
  // Every daemon setting the policy sets: labelled, read-only, with its enforced value and who manages it.
  const section = page.getByRole("region", { name: `Managed by ${LOCKED_BY}` });
  await section.waitFor();
  const fields = section.getByRole("textbox");
  assert.equal(await fields.count(), MANAGED_SHOWN.length, "one field per locked key");
  for (const [label, value] of MANAGED_SHOWN) {
    const field = section.getByRole("textbox", { name: label, exact: true });
    assert.equal(await field.inputValue(), value, label);
    assert.equal(await field.isEditable(), false, `${label} is read-only`);
    assert.equal(
      await page.locator(`#${(await field.getAttribute("aria-describedby")) ?? "none"}`).textContent(),
      `Locked: managed by ${LOCKED_BY}`,
      label,
    );
  }
  // By keyboard: Tab from the last preference walks through every managed value in order.
  await page.getByRole("combobox", { name: "Appearance" }).focus();
  const reached: string[] = [];
  for (let i = 0; i < MANAGED_SHOWN.length; i++) {
    await page.keyboard.press("Tab");
    reached.push(
      await page.evaluate(() =>
        document.activeElement instanceof HTMLInputElement
          ? (document.activeElement.labels?.[0]?.textContent ?? "")
          : "",
      ),
    );
  }
  assert.deepEqual(
    reached,
    MANAGED_SHOWN.map(([label]) => label),
  );
  // The page's own API refuses too, even if something enabled the control.
  const refused = await page.evaluate(async () => {
    const r = await fetch("/api/setSetting", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ args: ["connectOnLaunch", true] }),
    });
    return (await r.json()) as { ok: boolean; code?: string };
  });
  assert.deepEqual({ ok: refused.ok, code: refused.code }, { ok: false, code: "locked" });
  await page.getByRole("combobox", { name: "Notifications" }).selectOption("errors");
  await page.getByTestId("settings-note").filter({ hasText: "Saved." }).waitFor();
  await shot("07-settings-locked.png");
  await accessible("settings view");
  await page.reload();
  await view("Settings");
  assert.equal(
    await page.getByRole("combobox", { name: "Notifications" }).inputValue(),
    "errors",
    "kept across a reload",
  );
  assert.equal(await page.getByRole("checkbox", { name: "Connect when Detour starts" }).isDisabled(), true);
  await page
    .getByRole("region", { name: `Managed by ${LOCKED_BY}` })
    .getByRole("textbox", { name: "Warm standby" })
    .waitFor();
});

test("the-views-are-reachable-by-keyboard-and-readable-at-200-percent-zoom", { timeout: 30_000 }, async () => {
  await view("Status");
  await page.getByRole("tab", { name: "Status" }).focus();
  for (const name of ["Gateways", "History", "Settings", "Diagnostics", "Status"]) {
    await page.keyboard.press("ArrowRight");
    assert.equal(await page.getByRole("tab", { name }).getAttribute("aria-selected"), "true", name);
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), name);
  }
  await page.keyboard.press("End");
  assert.equal(await page.getByRole("tab", { name: "Diagnostics" }).getAttribute("aria-selected"), "true");
  await page.keyboard.press("Tab");
  assert.equal(
    await page.evaluate(() => document.activeElement?.getAttribute("role")),
    "tabpanel",
    "Tab moves into the panel",
  );
  // 200 % zoom: half the CSS width at twice the pixel density, as a browser's zoom does.
  await page.setViewportSize({ width: 500, height: 380 });
  for (const name of ["Status", "Gateways", "History", "Settings", "Diagnostics"]) {
    await view(name);
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    assert.ok(overflow <= 0, `${name} scrolls sideways by ${overflow} px at 200 %`);
  }
  await view("Status");
  await shot("08-status-at-200-percent.png");
});

test("the-bridge-refuses-requests-without-the-token", { timeout: 30_000 }, async () => {
  const r = await page.evaluate(async (origin) => {
    const api = await fetch(`${origin}/api/status`, {
      method: "POST",
      credentials: "omit",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    const doc = await fetch(`${origin}/`, { credentials: "omit" });
    const wrong = await fetch(`${origin}/?token=wrong`, { credentials: "omit" });
    const ws = await new Promise<string>((resolve) => {
      // Same origin but a different host name (localhost): the browser holds no cookie for it.
      const s = new WebSocket(`${origin.replace("127.0.0.1", "localhost")}/updates`.replace("http", "ws"));
      s.onopen = () => {
        resolve("open");
      };
      s.onerror = () => {
        resolve("refused");
      };
    });
    return { api: api.status, doc: doc.status, wrong: wrong.status, ws };
  }, new URL(url).origin);
  assert.deepEqual(r, { api: 401, doc: 401, wrong: 401, ws: "refused" });
});
