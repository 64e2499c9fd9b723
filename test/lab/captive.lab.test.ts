/**
 * A hotel network: the client sits behind the lab's captive portal (test/lab/captive.ts) with lockdown on. detourd's
 * connect finds no gateway, its check finds the portal and says "Sign in to this network"; the kill switch opens the
 * sign-in exception, and the router counts that only DNS and the portal's HTTP left the client (nothing to corp, nothing
 * else). A browser's form POST from the client signs in: the exception closes and detourd connects by itself. Then,
 * with a short bound, an exception nobody uses closes when its time runs out.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import {
  captiveCounts,
  CHECK_URL,
  PORTAL_ADDRESS,
  PORTAL_SIGN_IN_URL,
  portalOff,
  portalOn,
  type CaptiveCounts,
} from "./captive.ts";
import { run } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "cap";
/** Every leg's deadline (5 s) plus the probes' and the check's (3 s), with room for a loaded machine. */
const DETECT_WITHIN_MS = 30_000;
/** The check polls every 2 s while the exception is open; then a race to gw1 at 0 ms. */
const CONNECT_AFTER_SIGN_IN_MS = 20_000;
/** The short bound of the second test. */
const SHORT_EXCEPTION_MS = 4000;
/** Long enough for detourd's retries and a rate-limited check (one per 10 s) to run behind the portal. */
const RETRIES_WATCHED_MS = 15_000;
/** curl's own bound for a request the kill switch drops: the test must not wait on TCP's retries. */
const CURL_MAX_S = "3";

let client: ControlClient | null = null;
let configText: string | null = null;

function writeConfig(exceptionMs: number): void {
  const state = lab.loadState(ID);
  configText ??= readFileSync(state.clientConfig, "utf8");
  const cfg = JSON.parse(configText) as Record<string, unknown>;
  // No discovery: the portal answers every name with itself, and the gateways are configured by address anyway;
  // so every packet detourd sends on its own goes to a configured gateway, the resolver or the check host.
  delete cfg.discovery;
  delete cfg.telemetry;
  cfg.lockdown = true;
  cfg.captive = { checkUrl: CHECK_URL, exceptionMs };
  writeFileSync(state.clientConfig, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
}

async function startAgent(exceptionMs: number): Promise<ControlClient> {
  client?.close();
  client = null;
  await agentStop(ID);
  writeConfig(exceptionMs);
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  return client;
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID, { distance: "none" });
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await portalOff(ID).catch(() => undefined);
  await lab.down(ID);
});

/** curl from the client namespace as an ordinary process (root's group, not detourd's). */
async function curl(args: string[]): Promise<{ code: number; out: string }> {
  const ns = lab.topologyOf(ID).client.ns;
  const r = await run(
    "ip",
    ["netns", "exec", ns, "curl", "-s", "-m", CURL_MAX_S, "-o", "-", "-w", "\n%{http_code}", ...args],
    {
      timeoutMs: 10_000,
    },
  );
  return { code: r.code ?? -1, out: r.stdout };
}

function context(): string {
  return agentLogs(ID, 40);
}

const signInShown = (s: Status): boolean => s.captive?.state === "sign-in-required";

test(
  "captive-portal-detected-exception-leaks-nothing-sign-in-closes-it-and-detourd-connects-by-itself",
  { timeout: 180_000 },
  async () => {
    const c = await startAgent(300_000);
    await portalOn(ID);
    await c.connect();
    const s = await waitForStatus(
      c,
      "Sign in to this network with the exception open",
      (x) => signInShown(x) && x.captive?.exception.state === "open",
      DETECT_WITHIN_MS,
      { context },
    );
    const cap = s.captive;
    assert.ok(cap !== undefined);
    console.log(`detected: state ${s.state}; ${String(cap.reason)}; page ${String(cap.portalUrl)}`);
    assert.notEqual(s.state, "connected");
    assert.equal(cap.portalUrl, PORTAL_SIGN_IN_URL, "the sign-in page is the redirect's target");
    assert.deepEqual(cap.exception.portalAddresses, [PORTAL_ADDRESS]);
    assert.ok(cap.exception.resolvers.includes(lab.topologyOf(ID).dns.address), "the network's resolver is open");
    assert.ok(cap.exception.closesAt !== null && cap.exception.openedAt !== null);
    assert.equal(cap.exception.closesAt - cap.exception.openedAt, 300_000);
    assert.equal(s.killSwitch?.state, "in-force");

    // A browser, and other applications, while the exception is open. Counted from here on.
    const before = await captiveCounts(ID);
    const corp = await curl([`http://${lab.topologyOf(ID).corp.address}/whoami`]);
    assert.notEqual(corp.code, 0, "corp is not reachable outside the tunnel");
    const elsewhere = await curl([`http://${lab.topologyOf(ID).collector.address}/`]);
    assert.notEqual(elsewhere.code, 0, "another host's HTTP is not part of the exception");
    const ns = lab.topologyOf(ID).client.ns;
    const lookup = await run("ip", ["netns", "exec", ns, "getent", "ahostsv4", "www.example.com"], {
      timeoutMs: 10_000,
    });
    assert.match(
      lookup.stdout,
      new RegExp(PORTAL_ADDRESS.replace(/\./g, "\\.")),
      "the browser's lookup reaches the portal",
    );
    const page = await curl([PORTAL_SIGN_IN_URL]);
    assert.equal(page.code, 0);
    assert.match(page.out, /<form method="post" action="\/signin">/);
    const during = await captiveCounts(ID);
    const delta = Object.fromEntries(
      Object.entries(during).map(([k, v]) => [k, v - before[k as keyof CaptiveCounts]]),
    ) as unknown as CaptiveCounts;
    console.log(
      `router counted while signing in: ${JSON.stringify(delta)} (since portal on: ${JSON.stringify(during)})`,
    );
    assert.equal(during.corp, 0, "nothing to corp left the client");
    assert.equal(during.other, 0, "nothing but DNS, the portal, the check and the gateways left the client");
    assert.equal(during.ipv6, 0, "no IPv6 left the client");
    assert.ok(delta.dns > 0, "the lookup went out (to the portal's DNS)");
    assert.ok(delta.portal > 0, "the sign-in page was fetched");

    // Sign in as a browser would: the form's POST.
    const t0 = Date.now();
    const signed = await curl(["-d", "accept=yes", PORTAL_SIGN_IN_URL]);
    assert.equal(signed.code, 0);
    assert.match(signed.out, /signed in/);
    const up = await waitForStatus(
      c,
      "connected by itself after the sign-in",
      (x) => x.state === "connected",
      CONNECT_AFTER_SIGN_IN_MS,
      {
        context,
      },
    );
    console.log(
      `signed in: connected to ${String(up.gateway)} over ${String(up.protocol)} ${String(Date.now() - t0)} ms later`,
    );
    assert.equal(up.captive?.state, "open");
    assert.equal(up.captive.exception.state, "closed");
    // Whichever noticed first: the check's poll ("signed in"), or the machine's own retry ("connected").
    assert.ok(
      ["signed in", "connected"].includes(up.captive.exception.closedReason ?? ""),
      `closed because ${String(up.captive.exception.closedReason)}`,
    );
    console.log(`exception closed: ${String(up.captive.exception.closedReason)}`);
    const through = await curl([`http://${lab.topologyOf(ID).corp.address}/whoami`]);
    assert.equal(through.code, 0, "corp answers through the tunnel");
  },
);

test("an-unused-sign-in-exception-closes-when-its-time-runs-out", { timeout: 120_000 }, async () => {
  const c = await startAgent(SHORT_EXCEPTION_MS);
  await portalOn(ID); // a fresh portal: nobody signed in
  await c.connect();
  const open = await waitForStatus(
    c,
    "the exception open",
    (x) => x.captive?.exception.state === "open",
    DETECT_WITHIN_MS,
    {
      context,
    },
  );
  const ex = open.captive?.exception;
  assert.ok(ex?.openedAt != null && ex.closesAt != null);
  assert.equal(ex.closesAt - ex.openedAt, SHORT_EXCEPTION_MS);
  const page = await curl([PORTAL_SIGN_IN_URL]);
  assert.equal(page.code, 0, "the portal is reachable while the exception is open");
  const closed = await waitForStatus(
    c,
    "the exception closed by its bound",
    (x) => x.captive?.exception.state === "closed",
    SHORT_EXCEPTION_MS + 5000,
    { context },
  );
  console.log(
    `bound: opened ${new Date(ex.openedAt).toISOString()}, closed (${String(closed.captive?.exception.closedReason)}); still "${String(closed.captive?.state)}"`,
  );
  assert.equal(closed.captive?.exception.closedReason, "timed out");
  assert.equal(closed.captive.state, "sign-in-required", "still behind the portal: it still says so");
  assert.notEqual(closed.state, "connected");
  // The kill switch's table no longer lets the browser reach the portal (its apply follows the close at once).
  let blocked = false;
  for (let i = 0; i < 3 && !blocked; i++) blocked = (await curl([PORTAL_SIGN_IN_URL])).code !== 0;
  assert.ok(blocked, "the portal is blocked again once the exception closed");
  // detourd keeps retrying (and checking) behind the portal; its retries must not reopen what ran out.
  await sleep(RETRIES_WATCHED_MS);
  const later = await c.status();
  assert.equal(later.captive?.exception.state, "closed", "retries do not reopen an exception that ran out");
  assert.equal(later.captive.exception.opened, 1);
  console.log(
    `after ${String(RETRIES_WATCHED_MS)} ms of retries: ${String(later.captive.checks)} checks, exception still closed`,
  );
});
