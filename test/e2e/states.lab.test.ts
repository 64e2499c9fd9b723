/**
 * The browser build of the app in issue 16's states, against a real detourd in the lab: on a trusted network (a
 * pinned TLS host on the network's DNS domain), waiting for a network (the lab takes the client offline), and
 * always-on (policy's allowDisconnect false). Each test reads the page's words (label, line, greyed action and
 * why), not only its looks, and keeps a screenshot in test-artifacts/e2e-app/states-*.png. Detourd, the dev bridge
 * and Chromium all run in the lab's client namespace, as in app.lab.test.ts. The captive network's screenshots come
 * from test/lab/captive-app.lab.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { BrowserContext, Page } from "playwright-core";
import { ControlClient } from "../../main/client/control-client.ts";
import { parseConfig, type DetourConfig, type DetourConfigInput } from "../../main/core/config/schema.ts";
import { agentLogs, agentStart, agentStop } from "../lab/agent.ts";
import { assertAccessible, buildRenderer, screenshot, startBridge, type DevBridge } from "../lab/app-page.ts";
import { launchChromiumInNs } from "../lab/browser.ts";
import * as lab from "../lab/lab.ts";
import {
  makeTrustedCertificate,
  officeTrustedNetworks,
  TrustedTlsHost,
  type TestCertificate,
} from "../lab/trusted-host.ts";
import { waitForStatus } from "../lab/wait-status.ts";

const ID = "ustate";
/** The first verdict needs detourd's start (tsx, ~1-3 s) and one handshake on the lab's links. */
const VERDICT_WITHIN_MS = 30_000;
/** The recheck (2 s here) plus a connect on a loaded machine. */
const CONNECT_WITHIN_MS = 30_000;
/** The network monitor confirms offline in well under a second; the page learns it from the next status (1 s). */
const OFFLINE_SHOWN_WITHIN_MS = 15_000;
/** The page polls every second; a pushed status after a change arrives within a couple of seconds. */
const SHOWN_WITHIN_MS = 15_000;

const topo = lab.topologyOf(ID);
const work = mkdtempSync(join(tmpdir(), "detour-e2e-states-"));
let base: DetourConfig;
let clientConfigFile = "";
let pin: TestCertificate = { pin: "", certFile: "", keyFile: "" };
const tlsHost = new TrustedTlsHost(ID);
let bridge: DevBridge | null = null;
let browser: BrowserContext | null = null;
let page: Page;

function config(extra: Partial<DetourConfigInput> = {}): DetourConfig {
  const parsed = parseConfig({
    ...base,
    trustedNetworks: officeTrustedNetworks(ID, pin.pin),
    ...extra,
  });
  if (!parsed.ok) throw new Error(`config invalid: ${JSON.stringify(parsed.issues)}`);
  return parsed.config;
}

/** (Re)starts detourd with `cfg`, asked to connect at start; the bridge reconnects to it by itself. */
async function startAgent(cfg: DetourConfig): Promise<ControlClient> {
  await agentStop(ID);
  writeFileSync(clientConfigFile, JSON.stringify(cfg, null, 2));
  const a = await agentStart(ID, { connect: true });
  return ControlClient.connect(a.socket, { timeoutMs: 5000 });
}

before(async () => {
  buildRenderer();
  await lab.down(ID);
  const state = await lab.up(ID);
  clientConfigFile = state.clientConfig;
  const parsed = parseConfig(JSON.parse(readFileSync(clientConfigFile, "utf8")));
  if (!parsed.ok) throw new Error(`lab config invalid: ${JSON.stringify(parsed.issues)}`);
  base = parsed.config;
  pin = makeTrustedCertificate(ID, "cert");
  await tlsHost.start(pin);
  const c = await startAgent(config());
  c.close();
  bridge = startBridge(topo.client.ns, lab.labDirOf(ID) + "/detourd.sock", join(work, "prefs.json"));
  const url = await bridge.url;
  browser = await launchChromiumInNs(topo.client.ns, {
    workDir: join(work, "browser"),
    viewport: { width: 1000, height: 760 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  await page.goto(url);
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await bridge?.stop();
  await agentStop(ID);
  await tlsHost.stop();
  await lab.down(ID);
  rmSync(work, { recursive: true, force: true });
});

const text = async (testid: string): Promise<string> => (await page.getByTestId(testid).textContent()) ?? "";

async function headline(label: string, timeout: number): Promise<void> {
  await page
    .getByTestId("headline")
    .filter({ hasText: new RegExp(`^${label}$`) })
    .waitFor({ timeout });
}

/** axe-core on the page as shown (as app.lab.test.ts does): serious and critical violations fail the test. */
function accessible(what: string): Promise<void> {
  return assertAccessible(page, what);
}

async function shot(file: string): Promise<void> {
  console.log(`screenshot: ${await screenshot(page, file)}`);
}

test(
  "on-a-trusted-network-the-page-names-the-rule-and-greys-connect-with-the-reason",
  { timeout: 120_000 },
  async () => {
    await headline("On a trusted network", VERDICT_WITHIN_MS).catch((e: unknown) => {
      throw new Error(`${String(e)}\ndetourd:\n${agentLogs(ID, 40)}`);
    });
    assert.equal(
      await text("sentence"),
      'This network matches trusted network "office": Detour stays disconnected here and connects by itself when you leave it.',
    );
    assert.equal(await text("state"), "Disconnected");
    const connect = page.getByRole("button", { name: "Connect", exact: true });
    assert.equal(await connect.isDisabled(), true, "detourd would refuse it: the page does not offer it");
    assert.equal(await text("action-why"), "Your organisation's policy keeps Detour disconnected on trusted networks.");
    await shot("states-trusted-network.png");
    await accessible("on a trusted network");
    // Leaving the trusted network (its pinned host no longer answers) connects by itself.
    await tlsHost.stop();
    await headline("Connected", CONNECT_WITHIN_MS);
    assert.match(await text("sentence"), /^Connected to gw\d over /);
  },
);

test("offline-the-page-says-waiting-for-a-network-and-offers-no-connect", { timeout: 120_000 }, async () => {
  let seen = "";
  // The client's link goes down with its addresses; the page is looked at while it is offline, then it comes back.
  await lab.move(
    "wifi",
    {
      gapMs: 0,
      onOffline: async () => {
        await headline("Waiting for a network", OFFLINE_SHOWN_WITHIN_MS).catch(async (e: unknown) => {
          throw new Error(`${String(e)}; the page said "${await text("headline")}: ${await text("sentence")}"`);
        });
        seen = await text("sentence");
        assert.equal(await text("state"), "Waiting for a network");
        assert.equal(await page.getByRole("button", { name: "Connect", exact: true }).isDisabled(), true);
        assert.equal(
          await page.getByRole("button", { name: "Disconnect" }).isDisabled(),
          false,
          "one can stop waiting",
        );
        // the line above says why Connect is greyed; it is not said twice
        assert.match(seen, /Detour connects by itself as soon as a network is back\./);
        assert.equal(await text("action-why"), "");
        assert.equal(
          await page.getByRole("button", { name: "Connect", exact: true }).getAttribute("title"),
          "Detour connects by itself as soon as a network is back.",
        );
        const raw = await page.locator("main").textContent();
        assert.doesNotMatch(raw ?? "", /waiting-for-network/, "no raw state name anywhere on the page");
        await shot("states-waiting-for-network.png");
        await accessible("waiting for a network");
      },
    },
    ID,
  );
  assert.equal(
    seen,
    "No route to any gateway from this computer: Detour connects by itself as soon as a network is back.",
  );
  await headline("Connected", CONNECT_WITHIN_MS);
});

test("always-on-greys-disconnect-and-says-why", { timeout: 120_000 }, async () => {
  const c = await startAgent(config({ allowDisconnect: false }));
  try {
    await waitForStatus(c, "connected, always on", (x) => x.state === "connected", CONNECT_WITHIN_MS, {
      context: () => agentLogs(ID, 40),
    });
  } finally {
    c.close();
  }
  await headline("Connected", SHOWN_WITHIN_MS);
  await page
    .getByTestId("always-on")
    .filter({ hasText: "Always on: your organisation's policy does not allow disconnecting." })
    .waitFor({ timeout: SHOWN_WITHIN_MS });
  assert.equal(await page.getByRole("button", { name: "Disconnect" }).isDisabled(), true);
  assert.equal(await text("action-why"), "Your organisation's policy does not allow disconnecting.");
  // the lab's LAN overlaps no protected network: local network access is on (split tunnel) with nothing to allow
  await page
    .getByTestId("local-networks")
    .filter({ hasText: /^none needed here$/ })
    .waitFor({ timeout: SHOWN_WITHIN_MS });
  await shot("states-always-on.png");
  await accessible("always on");
});
