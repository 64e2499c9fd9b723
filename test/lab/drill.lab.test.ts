/**
 * Failover drills as an IT team runs them, with the real daemon, engines and gateways: `detour drill` blocks the
 * active gateway for the client only, reports detection and restoration against the SLA, and always leaves the
 * gateway usable again; the result shows in status, in the event stream and in detourd's log.
 */
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient, type Subscription } from "../../main/client/control-client.ts";
import type { ConnectionEvent, DrillResult } from "../../main/core/connection/types.ts";
import { DRILL_TABLE, drillBlockPresent } from "../../native/platform/drill-firewall.linux.ts";
import { agentPaths, agentStart, agentStop } from "./agent.ts";
import { run } from "./exec.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";
import { REPO_ROOT } from "./services.ts";

const ID = "drl";
/** A healthy lab connects in well under a second; allow for a loaded two-core machine. */
const CONNECT_WITHIN_MS = 8_000;
/** `detour drill` with SLA 3 s watches at most 9 s; the CLI's own start (tsx) adds a second or two. */
const DRILL_CLI_TIMEOUT_MS = 60_000;
/** Other `detour` commands answer from memory; this bounds a wedged CLI. */
const CLI_TIMEOUT_MS = 20_000;
const POLL_MS = 100;
/** The daemon applies routes a few milliseconds after it reports the new state. */
const ROUTE_SETTLE_TRIES = 5;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

let probe: ProbeClient | undefined;
let client: ControlClient | null = null;
let subscription: Subscription | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", lab.topologyOf(ID).client.ns] });
});

afterEach(async () => {
  subscription?.close();
  subscription = null;
  client?.close();
  client = null;
  await agentStop(ID);
  // Each scenario starts from a network detourd has never seen, so the race starts with gw1 WireGuard.
  rmSync(join(lab.labDirOf(ID), "detourd-state"), { recursive: true, force: true });
  await lab.heal(ID);
});

after(async () => {
  await probe?.close();
  await lab.down(ID);
});

function clientNs(): string {
  return lab.topologyOf(ID).client.ns;
}

/** Runs `detour` in the client namespace, as a user there would. */
async function detour(
  args: string[],
  timeoutMs = CLI_TIMEOUT_MS,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await run(
    "ip",
    ["netns", "exec", clientNs(), join(REPO_ROOT, "bin", "detour"), "--socket", agentPaths(ID).socket, ...args],
    { timeoutMs },
  );
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

async function waitFor(
  c: ControlClient,
  what: string,
  pred: (s: Status) => boolean,
  timeoutMs: number,
): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status | null = null;
  for (let i = 0; i < Math.ceil(timeoutMs / POLL_MS) + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(POLL_MS);
  }
  assert.fail(
    `timed out after ${timeoutMs} ms waiting for ${what}; last status: ${JSON.stringify(last).slice(0, 3000)}`,
  );
}

async function connected(): Promise<{ c: ControlClient; s: Status; events: ConnectionEvent[] }> {
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  const events: ConnectionEvent[] = [];
  subscription = await c.subscribe((e) => events.push(e));
  await c.connect();
  const s = await waitFor(c, "connected", (x) => x.state === "connected", CONNECT_WITHIN_MS);
  return { c, s, events };
}

async function corpSees(expected: string): Promise<string | null> {
  let seen: string | null = null;
  for (let i = 0; i < ROUTE_SETTLE_TRIES; i++) {
    const r = await probe?.http({ url: "http://198.19.0.1/whoami", timeoutMs: 1000 });
    if (r?.ok === true && r.status === 200) {
      seen = (JSON.parse(r.body) as { gateway: string | null }).gateway;
      if (seen === expected) return seen;
    }
    await sleep(POLL_MS);
  }
  return seen;
}

async function blockGone(): Promise<boolean> {
  return !(await drillBlockPresent({ netns: clientNs() }));
}

function drillLogLines(): { msg: string; drill?: DrillResult }[] {
  return readFileSync(agentPaths(ID).log, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { msg: string; drill?: DrillResult })
    .filter((l) => l.msg === "drill");
}

test("drill-while-disconnected-is-refused-with-a-clear-message-and-blocks-nothing", { timeout: 60_000 }, async () => {
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const r = await detour(["drill"]);
  assert.equal(r.code, 4, `exit code; stderr: ${r.stderr}`);
  assert.equal(r.stdout, "Drill refused: detourd is not connected (it is disconnected); connect first, then drill\n");
  assert.ok(await blockGone(), `no ${DRILL_TABLE} table`);
  assert.equal((await client.status()).lastDrill, null, "a refused drill is not the last drill");
});

test(
  "drill-within-the-sla-moves-to-another-gateway-reports-it-everywhere-and-lifts-the-block",
  { timeout: 90_000 },
  async () => {
    const { c, s, events } = await connected();
    assert.equal(s.gateway, "gw1");
    const r = await detour(["drill", "--sla-ms", "3000"], DRILL_CLI_TIMEOUT_MS);
    console.log(`detour drill --sla-ms 3000 (exit ${String(r.code)}):\n${r.stdout}`);
    assert.equal(r.code, 0, `exit code; stdout: ${r.stdout}; stderr: ${r.stderr}`);
    assert.match(
      r.stdout,
      /^Drill passed: gw1 \(WireGuard\) blocked; detected in \d+ ms, traffic restored via gw[23] \([^)]+\) in \d+ ms; SLA 3000 ms$/m,
    );
    assert.match(r.stdout, /gw1 is usable again$/m);
    assert.ok(await blockGone(), `the ${DRILL_TABLE} table is gone`);

    const after = await c.status();
    const d = after.lastDrill;
    assert.ok(d != null, "status shows the last drill");
    assert.equal(d.verdict, "pass", d.reason);
    assert.deepEqual(d.from, { gateway: "gw1", kind: "wireguard" });
    assert.ok(d.to !== null && d.to.gateway !== "gw1", `moved to another gateway: ${JSON.stringify(d.to)}`);
    assert.ok(
      d.detectedAfterMs !== null &&
        d.restoredAfterMs !== null &&
        d.detectedAfterMs <= d.restoredAfterMs &&
        d.restoredAfterMs <= 3000,
    );
    assert.ok(d.failover !== null && d.failover.from.gateway === "gw1", "detourd's own failover record is attached");
    console.log(
      `drill: detected ${String(d.detectedAfterMs)} ms, restored ${String(d.restoredAfterMs)} ms after the block (${String(d.probesLost)} of ${String(d.probesSent)} probes lost); ` +
        `detourd's own record: detected ${String(d.failover.detectedAfterMs)} ms, restored ${String(d.failover.restoredAfterMs)} ms after its last reply`,
    );
    assert.equal(after.state, "connected");
    assert.equal(after.gateway, d.to.gateway);
    assert.equal(await corpSees(d.to.gateway), d.to.gateway, "corp is reached through the new gateway");

    const drillEvents = events.filter((e): e is Extract<ConnectionEvent, { type: "drill" }> => e.type === "drill");
    assert.equal(drillEvents.length, 1, "one drill event in the stream");
    assert.equal(drillEvents[0]?.drill.id, d.id);
    const logged = drillLogLines();
    assert.equal(logged.length, 1, "one structured log line");
    assert.equal(logged[0]?.drill?.verdict, "pass");
  },
);

test("an-impossible-sla-fails-with-the-reason-and-the-gateway-is-usable-again", { timeout: 90_000 }, async () => {
  const { c, s } = await connected();
  assert.equal(s.gateway, "gw1");
  const r = await detour(["drill", "--sla-ms", "1"], DRILL_CLI_TIMEOUT_MS);
  console.log(`detour drill --sla-ms 1 (exit ${String(r.code)}):\n${r.stdout}`);
  assert.equal(r.code, 4, `exit code; stdout: ${r.stdout}; stderr: ${r.stderr}`);
  assert.match(
    r.stdout,
    /^Drill failed \((detection|restoration) \d+ ms exceeds SLA 1 ms\): gw1 \(WireGuard\) blocked; detected in \d+ ms, traffic restored via gw[23] /,
  );
  assert.ok(await blockGone(), `the ${DRILL_TABLE} table is gone`);
  const d = (await c.status()).lastDrill;
  assert.equal(d?.verdict, "fail");
  assert.ok(d.liftedAt !== null);
  // Usable again: the drilled gateway's AnyConnect port accepts a TCP connection from the client (a fresh connect
  // would not show it: per-network memory now races the failover's winner first).
  const gw1 = lab.topologyOf(ID).gateways.find((g) => g.name === "gw1")?.address ?? assert.fail("no gw1");
  const tcp = await run(
    "ip",
    ["netns", "exec", clientNs(), "timeout", "3", "bash", "-c", `exec 3<>/dev/tcp/${gw1}/443`],
    { timeoutMs: CLI_TIMEOUT_MS },
  );
  assert.equal(tcp.code, 0, `gw1:443 accepts connections again: ${tcp.stderr}`);
  assert.equal(await corpSees(d.to?.gateway ?? "?"), d.to?.gateway, "corp is reached through the tunnel");
});
