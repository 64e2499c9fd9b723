/**
 * IPv4 broken, IPv6 fine: every IPv4 packet between the client and the gateways is dropped in the router, and
 * the gateways are known only by name (A and AAAA in the lab's DNS). detourd must find the IPv6 addresses,
 * pick them, and connect to corp over each protocol on its own, with the engine's endpoint the IPv6 address,
 * while the kill switch's promise holds: not one protected packet reaches the router outside a tunnel.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import type { DetourConfigInput } from "../../main/core/config/schema.ts";
import type { LegKind } from "../../main/core/connection/types.ts";
import { countedPackets, killSwitchCounters } from "../../native/platform/firewall.linux.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { armLeakWitness, leakedToRouter } from "./leak-witness.ts";
import { ProbeClient } from "./probe-client.ts";
import { CORP_ECHO_PORT, CORP_HTTP_PORT } from "./topology.ts";

const ID = "six";
const POLL_MS = 100;
/**
 * Discovery, the dual-family probe (IPv4 abandoned ~50 ms after IPv6 answered) and one leg take about a second
 * here; AnyConnect with DTLS may wait for DTLS a while longer. 15 s covers a loaded two-core machine.
 */
const CONNECT_WITHIN_MS = 15_000;
/** Traffic kept flowing to corp while detourd connects, so a leak would have packets to show. */
const STREAM_MS = 4_000;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

const topo = lab.topologyOf(ID);
let probe: ProbeClient | undefined;
let client: ControlClient | null = null;
let originalConfig = "";

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
  assert.fail(`timed out waiting for ${what}; last: ${JSON.stringify(last).slice(0, 2000)}\n${agentLogs(ID, 40)}`);
}

/** Packets from the client to corp's networks that reached the router outside a tunnel. */
function leakCount(): Promise<number> {
  return leakedToRouter(topo);
}

function mustProbe(): ProbeClient {
  if (probe === undefined) throw new Error("the probe agent did not start");
  return probe;
}

/** The lab's config with the gateways known by name only, racing just one leg kind. */
function configFor(kind: LegKind): string {
  const c = JSON.parse(originalConfig) as DetourConfigInput;
  const gateways = c.gateways.map((g) => ({ ...g, address: undefined }));
  return JSON.stringify({ ...c, gateways, race: { order: [kind] } }, null, 2);
}

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID);
  originalConfig = readFileSync(state.clientConfig, "utf8");
  // IPv4 to and from every gateway is silently dropped; DNS (IPv4, another link) still answers.
  for (const g of topo.gateways)
    await lab.impair({ kind: "block", target: g.name, proto: "all", dir: "both", family: "ipv4" }, ID);
  // The leak path and its witness, as in kill-switch.lab.test.ts: a plain route to corp via the router.
  await armLeakWitness(topo);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
});

after(async () => {
  await probe?.close();
  await lab.down(ID);
});

for (const kind of ["wireguard", "ikev2", "anyconnect-tls", "anyconnect-dtls"] as const) {
  test(`ipv4-blocked-${kind}-connects-to-corp-over-ipv6-and-leaks-nothing`, { timeout: 90_000 }, async () => {
    writeFileSync(lab.loadState(ID).clientConfig, configFor(kind), { mode: 0o600 });
    try {
      const a = await agentStart(ID);
      client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
      const c = client;
      await c.connect();
      const base = await leakCount();
      const traffic = mustProbe().stream({
        host: topo.corp.address,
        port: CORP_ECHO_PORT,
        ratePerSec: 50,
        durationMs: STREAM_MS,
      });
      const s = await waitFor(c, `connected over ${kind}`, (x) => x.state === "connected", CONNECT_WITHIN_MS);
      await traffic;
      assert.equal(s.protocol, kind);
      const gw = topo.gateways.find((g) => g.name === s.gateway);
      assert.ok(gw !== undefined, `connected to a lab gateway (${String(s.gateway)})`);
      const cand = s.candidates.find((x) => x.name === gw.name);
      assert.equal(cand?.address, gw.address6, "the candidate's address is the gateway's IPv6 address");
      assert.deepEqual(cand.addresses, { ipv4: gw.address, ipv6: gw.address6 }, "DNS named it by A and AAAA");
      assert.equal(cand.probe?.families?.ipv4?.works, false, "the IPv4 path was found silent");
      assert.equal(cand.probe.families.ipv6?.works, true);
      // The leg log names the endpoint the engine was given.
      const started = agentLogs(ID, 400)
        .split("\n")
        .filter(
          (l) => l.includes('"leg starting"') && l.includes(`"gateway":"${gw.name}"`) && l.includes(`"kind":"${kind}"`),
        );
      assert.ok(
        started.length > 0 && started.every((l) => l.includes(`"endpoint":"${gw.address6}"`)),
        `leg log: ${started.join("\n")}`,
      );
      // The engine's outer packets went to the IPv6 endpoint: the kill switch's allowance counted them.
      const counters = (await killSwitchCounters({ netns: topo.client.ns })) ?? [];
      const v6Endpoint = counters.filter(
        (x) => x.purpose === "gateway-endpoint" && x.detail.includes(`[${gw.address6}]`),
      );
      assert.ok(
        v6Endpoint.reduce((n, x) => n + x.packets, 0) > 0,
        `packets to the IPv6 endpoint: ${JSON.stringify(counters)}`,
      );
      assert.equal(countedPackets(counters, "protected-escaped"), 0, "the kill switch's own witness saw no escape");
      // corp sees the request arrive through this gateway and protocol.
      const who = await mustProbe().http({
        url: `http://${topo.corp.address}:${CORP_HTTP_PORT}/whoami`,
        timeoutMs: 2000,
      });
      assert.ok(who.ok && who.status === 200, JSON.stringify(who));
      const saw = JSON.parse(who.body) as { gateway: string | null; protocol: string | null };
      assert.deepEqual([saw.gateway, saw.protocol], [gw.name, kind.startsWith("anyconnect") ? "anyconnect" : kind]);
      const leaked = (await leakCount()) - base;
      console.log(
        `${kind}: connected to ${gw.name} at ${gw.address6}; protected packets that reached the router outside a tunnel: ${leaked}`,
      );
      assert.equal(leaked, 0, "no protected packet left outside a tunnel");
      await c.disconnect();
      await waitFor(c, "disconnected", (x) => x.state === "disconnected", CONNECT_WITHIN_MS);
    } finally {
      writeFileSync(lab.loadState(ID).clientConfig, originalConfig, { mode: 0o600 });
    }
  });
}
