/**
 * The kill switch seen from the network: while detourd connects, fails over, has no gateway, and while it is
 * disconnected in lockdown, not one packet to a protected destination reaches the router outside a tunnel.
 * The client is given a leak path on purpose (a plain route to corp via the router), and the router counts
 * what arrives on it: an independent witness that no rule replacement can reset.
 */
import assert from "node:assert/strict";
import { writeFileSync, readFileSync } from "node:fs";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import { collectorUrl } from "./collector.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { armLeakWitness, checkLeakWitness, leakedToRouter } from "./leak-witness.ts";
import { ProbeClient } from "./probe-client.ts";

const ID = "kswt";
const POLL_MS = 100;
const CONNECT_WITHIN_MS = 8_000;
/** Every gateway silent: each leg runs to its 5 s deadline, then the error state; a loaded machine gets more. */
const ERROR_WITHIN_MS = 30_000;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

let probe: ProbeClient | undefined;
let client: ControlClient | null = null;

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
  assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(last).slice(0, 2000)}`);
}

/** Packets from the client's underlay to corp's networks that reached the router: leaks. */
function leakCount(): Promise<number> {
  return leakedToRouter(lab.topologyOf(ID));
}

function mustProbe(): ProbeClient {
  if (probe === undefined) throw new Error("the probe agent did not start");
  return probe;
}

/** A steady stream of traffic to corp, as an application would keep sending through any gap. */
function stream(ms: number): Promise<unknown> {
  return mustProbe().stream({ host: "198.19.0.1", port: 7, ratePerSec: 50, durationMs: ms });
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  const topo = lab.topologyOf(ID);
  // The leak path: without a kill switch, corp traffic with no tunnel route would go to the router.
  await armLeakWitness(topo);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
  assert.equal(await leakCount(), 0);
  // The witness works: with no detourd, the leak path leaks.
  await checkLeakWitness(topo, mustProbe());
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
  await lab.heal(ID);
});

after(async () => {
  await probe?.close();
  await lab.down(ID);
});

test("connect-failover-all-down-and-disconnect-leak-nothing-outside-the-tunnel", { timeout: 120_000 }, async () => {
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  // `connect` answers once the kill switch is in force; before it, a disconnected client may use the underlay.
  await c.connect();
  // Rule counters cannot be reset in place, so each test counts from its own baseline.
  const base = await leakCount();
  const traffic = stream(20_000);
  await waitFor(c, "connected", (s) => s.state === "connected", CONNECT_WITHIN_MS);
  await lab.kill("gw1", "all", ID);
  await waitFor(c, "failover", (s) => s.state === "connected" && s.gateway !== "gw1", CONNECT_WITHIN_MS);
  await lab.kill("gw2", "all", ID);
  await lab.kill("gw3", "all", ID);
  await waitFor(c, "the error state", (s) => s.state === "error", 30_000);
  await sleep(2000);
  // Counted before the user disconnects: without lockdown, traffic after a disconnect is no longer the tunnel's.
  const leakedWhileManaged = (await leakCount()) - base;
  console.log(
    `packets to protected destinations that reached the router outside a tunnel while connecting, failing over and in error: ${leakedWhileManaged}`,
  );
  await c.disconnect();
  await waitFor(c, "disconnected", (s) => s.state === "disconnected", CONNECT_WITHIN_MS);
  await traffic;
  assert.equal(leakedWhileManaged, 0, "connecting, failing over, error: nothing leaks");
});

test("lockdown-keeps-protected-traffic-in-while-disconnected", { timeout: 60_000 }, async () => {
  const state = lab.loadState(ID);
  const original = readFileSync(state.clientConfig, "utf8");
  writeFileSync(state.clientConfig, JSON.stringify({ ...(JSON.parse(original) as object), lockdown: true }, null, 2), {
    mode: 0o600,
  });
  try {
    const base = await leakCount();
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    await waitFor(client, "disconnected", (s) => s.state === "disconnected", 5000);
    await sleep(500);
    await mustProbe().udp({ host: "198.19.0.1", port: 7, count: 20, intervalMs: 10, timeoutMs: 200 });
    assert.equal((await leakCount()) - base, 0, "lockdown: nothing leaks while disconnected");
    await agentStop(ID);
    await mustProbe().udp({ host: "198.19.0.1", port: 7, count: 20, intervalMs: 10, timeoutMs: 200 });
    assert.equal((await leakCount()) - base, 0, "lockdown stays in force after detourd exits");
  } finally {
    writeFileSync(state.clientConfig, original, { mode: 0o600 });
    await nsRun(lab.topologyOf(ID).client.ns, ["nft", "delete", "table", "inet", "detour_killswitch"]).catch(
      () => undefined,
    );
  }
});

/** Whether a host outside the protected networks (the lab's collector, "the Internet") answers over HTTP. */
async function internetAnswers(): Promise<boolean> {
  const r = await mustProbe().http({ url: `${collectorUrl(lab.topologyOf(ID))}/`, timeoutMs: 1000 });
  return r.ok;
}

for (const lockdown of [false, true]) {
  test(
    `every-gateway-down-in-error-${lockdown ? "lockdown-blocks-everything" : "split-tunnel-keeps-the-internet"}-and-protected-traffic-never-leaks`,
    { timeout: 90_000 },
    async () => {
      const state = lab.loadState(ID);
      const original = readFileSync(state.clientConfig, "utf8");
      if (lockdown)
        writeFileSync(
          state.clientConfig,
          JSON.stringify({ ...(JSON.parse(original) as object), lockdown: true }, null, 2),
          { mode: 0o600 },
        );
      try {
        assert.equal(await internetAnswers(), true, "control: the collector answers before detourd starts");
        for (const g of ["gw1", "gw2", "gw3"]) await lab.kill(g, "all", ID);
        const a = await agentStart(ID);
        client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
        const c = client;
        await c.connect();
        const base = await leakCount();
        const whileRacing = await internetAnswers();
        const s = await waitFor(c, "the error state", (x) => x.state === "error", ERROR_WITHIN_MS);
        await mustProbe().udp({ host: "198.19.0.1", port: 7, count: 20, intervalMs: 10, timeoutMs: 200 });
        const inError = await internetAnswers();
        const leaked = (await leakCount()) - base;
        console.log(
          `${lockdown ? "lockdown" : "split tunnel"}, every gateway down: "${s.summary}"; the Internet answers while racing: ${String(whileRacing)}, in error: ${String(inError)}; protected packets leaked: ${leaked}`,
        );
        assert.equal(leaked, 0, "protected traffic never leaves outside a tunnel");
        assert.equal(
          inError,
          !lockdown,
          lockdown ? "lockdown keeps everything in" : "a split-tunnel user keeps the Internet while Detour retries",
        );
        assert.equal(whileRacing, !lockdown);
      } finally {
        if (lockdown) {
          writeFileSync(state.clientConfig, original, { mode: 0o600 });
          await agentStop(ID);
          await nsRun(lab.topologyOf(ID).client.ns, ["nft", "delete", "table", "inet", "detour_killswitch"]).catch(
            () => undefined,
          );
        }
      }
    },
  );
}
