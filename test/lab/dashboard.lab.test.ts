/**
 * The collector's dashboard as IT staff see it: Debian's Chromium (inside the lab's client namespace, through
 * playwright-core) loads the fleet and agent pages of the lab's collector, fed by a real detourd, with the
 * read token. The pages show the agent, its latency and loss charts with data, and after the lab kills the
 * active gateway the failover on the timeline and on the charts. Screenshots go to test-artifacts/dashboard/.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { BrowserContext, Page } from "playwright-core";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import { launchChromiumInNs } from "./browser.ts";
import { collectorTokens, collectorUrl } from "./collector.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";

const ID = "dash";
/** A healthy lab connects in well under a second; allow for a loaded two-core machine. */
const CONNECT_WITHIN_MS = 10_000;
/** The lab exports every 5 s: three exports (so a chart has a line, not a dot) plus delivery on a loaded machine. */
const CHART_FILLED_WITHIN_MS = 40_000;
/**
 * Failover is sub-second, but the kill switch blocks the underlay meanwhile, so a delivery attempt may fail and
 * back off; the event and the next export with the new gateway arrive within a few export intervals.
 */
const FAILOVER_SHOWN_WITHIN_MS = 40_000;
/** Between reloads of a page that does not show the expected data yet: a fifth of an export interval. */
const RELOAD_EVERY_MS = 1000;
/** One page load from the collector over the lab's veths. */
const PAGE_LOAD_TIMEOUT_MS = 10_000;
const STATUS_POLL_MS = 250;
/** Enough points for a line anyone would call a chart. */
const MIN_CHART_POINTS = 3;
const ARTIFACTS = join(REPO_ROOT, "test-artifacts", "dashboard");

type Status = Awaited<ReturnType<ControlClient["status"]>>;

const work = mkdtempSync(join(tmpdir(), "detour-dashboard-"));
let client: ControlClient | null = null;
let browser: BrowserContext | null = null;
let page: Page;
let base = "";
let deviceId = "";
let firstGateway = "";

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  await lab.down(ID);
  await lab.up(ID);
});

after(async () => {
  await browser?.close().catch(() => undefined);
  client?.close();
  await agentStop(ID);
  await lab.down(ID);
  rmSync(work, { recursive: true, force: true });
});

async function waitStatus(
  c: ControlClient,
  what: string,
  pred: (s: Status) => boolean,
  timeoutMs: number,
): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status | null = null;
  for (let i = 0; i < timeoutMs / STATUS_POLL_MS + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(STATUS_POLL_MS);
  }
  assert.fail(
    `timed out waiting for ${what}; last state ${String(last?.state)}, telemetry ${JSON.stringify(last?.telemetry?.export ?? null)}`,
  );
}

/**
 * Loads `path` until `missing()` finds nothing missing (it returns null) or the time is up; the dashboard has
 * no script, so showing newer data takes a reload, as it does for a person watching it.
 */
async function showsWithin(path: string, timeoutMs: number, missing: () => Promise<string | null>): Promise<void> {
  const until = Date.now() + timeoutMs;
  let why: string | null = "never loaded";
  for (let i = 0; i < timeoutMs / RELOAD_EVERY_MS + 1; i++) {
    let status: number | null = null;
    try {
      status = (await page.goto(`${base}${path}`, { timeout: PAGE_LOAD_TIMEOUT_MS }))?.status() ?? null;
    } catch (e) {
      // While detourd fails over its kill switch blocks the underlay for a moment; the next reload gets through.
      why = `the page did not load: ${(e as Error).message.split("\n")[0] ?? ""}`;
    }
    if (status !== null) {
      assert.equal(status, 200, `GET ${path} with the read token`);
      why = await missing();
    }
    if (why === null || Date.now() >= until) break;
    await sleep(RELOAD_EVERY_MS);
  }
  if (why !== null) assert.fail(`${path} did not show it within ${timeoutMs} ms: ${why}`);
}

const agentRow = (): ReturnType<Page["locator"]> => page.locator("tr.agent");
const cell = (n: number): Promise<string> => agentRow().first().locator("td").nth(n).innerText();

/** The gateways the latency chart draws a line for (one polyline per gateway, titled with its name) and its points. */
async function latencyLines(): Promise<{ gateway: string; points: number }[]> {
  const lines = page.locator("svg.chart").first().locator("polyline");
  const out: { gateway: string; points: number }[] = [];
  for (let i = 0; i < (await lines.count()); i++) {
    const l = lines.nth(i);
    const points = ((await l.getAttribute("points")) ?? "")
      .trim()
      .split(/\s+/)
      .filter((p) => p.includes(",")).length;
    out.push({ gateway: ((await l.locator("title").textContent()) ?? "").trim(), points });
  }
  return out;
}

async function shot(file: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, file), fullPage: true });
}

test("the-dashboard-shows-the-connected-agent-and-its-charts-with-data", { timeout: 120_000 }, async () => {
  const state = lab.loadState(ID);
  const topo = lab.topologyOf(ID);
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  await client.connect();
  const up = await waitStatus(
    client,
    "connected with a standby",
    (s) => s.state === "connected" && s.standby !== null,
    CONNECT_WITHIN_MS,
  );
  firstGateway = up.gateway ?? assert.fail("connected without a gateway");
  const delivered = await waitStatus(
    client,
    "a first delivery",
    (s) => (s.telemetry?.export?.delivered ?? 0) > 0,
    CHART_FILLED_WITHIN_MS,
  );
  deviceId = delivered.telemetry?.export?.deviceId ?? assert.fail("no device id");

  // Chromium runs in the client namespace and reaches the collector over the lab network, like an admin's
  // browser on the office network. (Playwright's own request API would run in this process, in the root
  // namespace, so every request here is the page's.)
  base = collectorUrl(topo);
  browser = await launchChromiumInNs(topo.client.ns, {
    workDir: join(work, "chromium"),
    extraHTTPHeaders: { authorization: `Bearer ${collectorTokens(state.labDir).read}` },
  });
  page = browser.pages()[0] ?? (await browser.newPage());

  await showsWithin("/", CHART_FILLED_WITHIN_MS, async () =>
    (await agentRow().count()) === 1 ? null : `${await agentRow().count()} agent rows`,
  );
  assert.match(await page.locator("h1").innerText(), /^Detour fleet of lab$/);
  assert.equal(
    await agentRow().first().locator("a").innerText(),
    deviceId,
    "the agent's device id, linking to its page",
  );
  assert.equal(await cell(1), "connected");
  assert.equal(await cell(2), firstGateway);
  assert.equal(await cell(3), up.protocol ?? "");
  assert.ok(
    (await page.locator("tr.gateway").filter({ hasText: firstGateway }).count()) === 1,
    "the gateway health table lists the active gateway",
  );
  await shot("01-fleet-connected.png");

  await agentRow().first().locator("a").click();
  await page
    .locator("h1")
    .filter({ hasText: `Agent ${deviceId}` })
    .waitFor({ timeout: PAGE_LOAD_TIMEOUT_MS });
  const agentPath = new URL(page.url()).pathname + new URL(page.url()).search;
  await showsWithin(agentPath, CHART_FILLED_WITHIN_MS, async () => {
    if ((await page.locator("svg.chart").count()) !== 2)
      return `${await page.locator("svg.chart").count()} charts (latency and loss expected)`;
    const lines = await latencyLines();
    const line = lines.find((l) => l.gateway === firstGateway);
    return line !== undefined && line.points >= MIN_CHART_POINTS ? null : `latency lines ${JSON.stringify(lines)}`;
  });
  const lossLine = page.locator("svg.chart").nth(1).locator("polyline").first();
  assert.ok(((await lossLine.getAttribute("points")) ?? "").includes(","), "the loss chart has a line");
  assert.match(
    await page
      .locator("p")
      .filter({ hasText: /^state / })
      .innerText(),
    new RegExp(`^state connected · gateway ${firstGateway} · protocol `),
  );
  await shot("02-agent-charts.png");
});

test("a-killed-gateway-shows-as-a-failover-on-the-fleet-and-agent-pages", { timeout: 120_000 }, async () => {
  const c = client ?? assert.fail("the first test did not connect");
  const t0 = Date.now();
  await lab.kill(firstGateway, "all", ID);
  const moved = await waitStatus(
    c,
    "the failover",
    (s) => s.state === "connected" && s.gateway !== null && s.gateway !== firstGateway,
    CONNECT_WITHIN_MS,
  );
  const next = moved.gateway ?? "";
  console.log(
    `detourd moved from ${firstGateway} to ${next} ${Date.now() - t0} ms after the kill: ${moved.lastFailover?.reason ?? "?"}`,
  );

  await showsWithin("/", FAILOVER_SHOWN_WITHIN_MS, async () => {
    const failovers = await page.locator("tr.failover").count();
    const gw = await cell(2);
    return failovers >= 1 && gw === next ? null : `${failovers} failovers on the timeline, agent shown on ${gw}`;
  });
  console.log(`the fleet page showed the failover ${Date.now() - t0} ms after the kill`);
  const row = page.locator("tr.failover").first();
  const cells = row.locator("td");
  assert.equal(await cells.nth(1).innerText(), deviceId, "the timeline names the device");
  assert.match(await cells.nth(2).innerText(), new RegExp(`^${firstGateway}/`), "from the killed gateway");
  assert.match(await cells.nth(3).innerText(), new RegExp(`^${next}/`), "to the one detourd moved to");
  assert.match(await cells.nth(4).innerText(), /^dead/, "the reason");
  assert.equal(
    await page.locator("svg[aria-label='failover timeline'] line").count(),
    await page.locator("tr.failover").count(),
    "one mark per failover",
  );
  assert.equal(await cell(1), "connected");
  const health = page.locator("tr.gateway").filter({ hasText: firstGateway }).locator("td");
  assert.equal(await health.nth(5).innerText(), "1", "one failover away from the killed gateway");
  await shot("03-fleet-after-failover.png");

  await page.locator("tr.agent a").first().click();
  const agentPath = new URL(page.url()).pathname + new URL(page.url()).search;
  await showsWithin(agentPath, FAILOVER_SHOWN_WITHIN_MS, async () => {
    const lines = await latencyLines();
    const both = [firstGateway, next].every((g) => lines.some((l) => l.gateway === g && l.points >= 1));
    return both && (await page.locator("tr.failover").count()) >= 1 ? null : `latency lines ${JSON.stringify(lines)}`;
  });
  assert.match(await page.locator("tr.failover td").nth(3).innerText(), /^dead/);
  assert.match(
    await page
      .locator("p")
      .filter({ hasText: /^state / })
      .innerText(),
    new RegExp(`^state connected · gateway ${next} · `),
  );
  await shot("04-agent-after-failover.png");
});
