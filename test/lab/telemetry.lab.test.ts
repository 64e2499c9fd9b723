/**
 * What the agent reports about the tunnel matches what the lab does to it: delay with jitter and random loss
 * injected on the active gateway show up in `detour status --json` as RTT and loss, and a clean path reports
 * near-zero loss. Measured over at least 1000 in-tunnel probes, while a user's light traffic (a few echoes a second)
 * keeps the probes at their fast pace: an idle tunnel is probed every two seconds (core/connection/pace.ts).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";
import { CORP_ECHO_PORT } from "./topology.ts";

const ID = "tele";
const CONNECT_WITHIN_MS = 10_000;
/** The health window the daemon reports over (the lab config keeps the default 5 s). */
const WINDOW_MS = 5_000;
/** Windows read per measurement: six windows of 25 ms probes are 1200 probes. */
const WINDOWS = 6;
const MIN_PROBES = 1000;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

let client: ControlClient | null = null;
let user: ProbeClient | null = null;
/** The user's traffic during a measurement: a few echoes a second to corp, enough to keep the fast pace. */
const USER_RATE = 4;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
});

after(async () => {
  await user?.close().catch(() => undefined);
  client?.close();
  await agentStop(ID);
  await lab.down(ID);
});

async function waitFor(
  c: ControlClient,
  what: string,
  pred: (s: Status) => boolean,
  timeoutMs: number,
): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status | null = null;
  for (let i = 0; i < timeoutMs / 100 + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(last).slice(0, 2000)}`);
}

/** Reads the status once per window (disjoint windows) and combines them: loss weighted by probes, RTT median. */
async function measure(
  c: ControlClient,
): Promise<{ probes: number; lossPct: number; rttMs: number; jitterMs: number }> {
  let probes = 0;
  let lost = 0;
  const rtts: number[] = [];
  const jitters: number[] = [];
  user ??= await ProbeClient.start({ prefix: ["ip", "netns", "exec", lab.topologyOf(ID).client.ns] });
  const traffic = user.stream({
    host: lab.topologyOf(ID).corp.address,
    port: CORP_ECHO_PORT,
    ratePerSec: USER_RATE,
    durationMs: (WINDOWS + 1) * WINDOW_MS,
  });
  await sleep(1000);
  for (let i = 0; i < WINDOWS; i++) {
    await sleep(WINDOW_MS);
    const s = await c.status();
    const t = s.telemetry;
    assert.ok(
      t !== undefined && t.lossPct !== null && t.rttMs !== null && t.jitterMs !== null,
      `status has tunnel telemetry: ${JSON.stringify(t)}`,
    );
    assert.equal(s.gateway, "gw1", "still on the impaired gateway (no false failover)");
    probes += t.samples;
    lost += (t.lossPct / 100) * t.samples;
    rtts.push(t.rttMs);
    jitters.push(t.jitterMs);
  }
  await traffic;
  rtts.sort((a, b) => a - b);
  jitters.sort((a, b) => a - b);
  return {
    probes,
    lossPct: (100 * lost) / probes,
    rttMs: rtts[Math.floor(rtts.length / 2)] ?? NaN,
    jitterMs: jitters[Math.floor(jitters.length / 2)] ?? NaN,
  };
}

test(
  "reported-rtt-and-loss-match-the-injected-delay-and-loss-and-a-clean-path-reports-none",
  { timeout: 180_000 },
  async () => {
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await c.connect();
    await waitFor(c, "connected to gw1", (s) => s.state === "connected" && s.gateway === "gw1", CONNECT_WITHIN_MS);

    const clean = await measure(c);
    console.log(
      `clean: ${clean.probes} probes, loss ${clean.lossPct.toFixed(2)} %, RTT p50 ${clean.rttMs.toFixed(2)} ms, jitter ${clean.jitterMs.toFixed(2)} ms`,
    );
    assert.ok(clean.probes >= MIN_PROBES, `at least ${MIN_PROBES} probes (${clean.probes})`);
    assert.ok(clean.lossPct < 0.5, `a clean path reports near-zero loss (${clean.lossPct.toFixed(2)} %)`);

    // 40 ms +/- 5 ms one way (35 ms + uniform 0-10 ms) and 5 % loss, both toward gw1: the round trip carries both once.
    await lab.impair({ kind: "delay", target: "gw1", proto: "all", dir: "up", delayMs: 35, jitterMs: 10 }, ID);
    await lab.impair({ kind: "loss", target: "gw1", proto: "all", dir: "up", percent: 5 }, ID);
    await sleep(2000);
    const m = await measure(c);
    const expectedRtt = 40 + clean.rttMs;
    console.log(
      `impaired: ${m.probes} probes, loss ${m.lossPct.toFixed(2)} % (injected 5 %), RTT p50 ${m.rttMs.toFixed(2)} ms (expected ${expectedRtt.toFixed(1)}), jitter ${m.jitterMs.toFixed(2)} ms`,
    );
    assert.ok(m.probes >= MIN_PROBES, `at least ${MIN_PROBES} probes (${m.probes})`);
    assert.ok(Math.abs(m.lossPct - 5) <= 2, `loss within 2 points of 5 % (${m.lossPct.toFixed(2)} %)`);
    assert.ok(
      Math.abs(m.rttMs - expectedRtt) <= 0.1 * expectedRtt,
      `RTT within 10 % of ${expectedRtt.toFixed(1)} ms (${m.rttMs.toFixed(2)} ms)`,
    );
    assert.ok(m.jitterMs > 0.5, "jitter is seen");
  },
);
