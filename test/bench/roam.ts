/**
 * `npm run bench -- roam`: a laptop changes networks and sleeps. Each engine on its own (WireGuard roaming alone,
 * strongSwan with MOBIKE, openconnect's reconnect; plain tools, one per gateway, side by side) and Detour (detourd
 * as it is): time to traffic after the client moves from wifi to mobile under a 50/s echo stream, packets that
 * reached a router outside a tunnel, failovers detourd recorded; and time to traffic after a 30 s and a 5 minute
 * sleep. Medians over the runs, table in bench-out/roam.md. The pure half (options, parsing, table) is roam-report.ts.
 */
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "../lab/agent.ts";
import { inNs, runOk } from "../lab/exec.ts";
import * as lab from "../lab/lab.ts";
import { startPlain, type PlainLeg, type PlainTunnel } from "../lab/plain/plain-clients.ts";
import { ProbeClient } from "../lab/probe-client.ts";
import { CORP_ECHO_PORT, gatewayByName, type LabTopology } from "../lab/topology.ts";
import { firstReplyThrough } from "./baselines/common.ts";
import { waitState } from "./connect.ts";
import {
  parseRoamOptions,
  pingReplyTimes,
  restoredAfter,
  restoredFromGaps,
  roamMarkdown,
  SLEEP_S,
  type RoamRow,
  type RoamScenario,
} from "./roam-report.ts";

const ID = "rbench";
/** The probe stream: 50 echoes a second. */
const STREAM_INTERVAL_MS = 20;
/** The stream runs this long before the move, so every tunnel is steady when the network changes. */
const STREAM_LEAD_MS = 1000;
/**
 * How long after the move traffic may take to come back before the run counts as failed: wireguard-go alone
 * needs ~15 s (its sticky source, README), openconnect its DPD (~10 s) and a reconnect; 40 s covers both.
 */
const RESTORE_DEADLINE_MS = 40_000;
/** After a wake: a dropped IKE_SA is found by the client's own DPD (10 s + retransmits) and restarted. */
const WAKE_DEADLINE_MS = 60_000;
/** A fresh tunnel answers within a second here; a loaded two-core machine gets fifteen. */
const CONNECT_DEADLINE_MS = 15_000;
/** Gateways drop the previous session's state between runs (as the other benches do). */
const SETTLE_MS = 500;
/** The routers' witness of protected packets arriving from the client outside a tunnel. */
const WITNESS_TABLE = "detour_roam_witness";

/** The engines alone, each against its own gateway so they run side by side without sharing a peer. */
const PLAIN: { leg: PlainLeg; gateway: string; setup: string; settings: string }[] = [
  {
    leg: "wireguard",
    gateway: "gw1",
    setup: "WireGuard alone (roaming)",
    settings: "wireguard-go + wg, keepalive 25 s; nothing told of the move",
  },
  {
    leg: "ikev2",
    gateway: "gw2",
    setup: "strongSwan alone (MOBIKE)",
    settings: "charon-systemd, swanctl defaults (mobike = yes), DPD 10 s, dpd_action restart",
  },
  {
    leg: "anyconnect-dtls",
    gateway: "gw3",
    setup: "openconnect alone (reconnect)",
    settings: "openconnect defaults, DTLS on; its own DPD and cookie reconnect",
  },
];

interface Bench {
  topo: LabTopology;
  probe: ProbeClient;
  /** Replaced by `reconnect`: detourd closes a request connection left idle 5 minutes, as during a long sleep. */
  client: ControlClient;
  socket: string;
}

/** A fresh control connection (after a sleep the old one may have been closed as idle). */
async function reconnect(b: Bench): Promise<void> {
  b.client.close();
  b.client = await ControlClient.connect(b.socket, { timeoutMs: 5000 });
}

function witnessRuleset(): string {
  return `table inet ${WITNESS_TABLE} {\n chain witness {\n  type filter hook prerouting priority -300; policy accept;\n  iifname "to-client" ip daddr 198.19.0.0/16 counter\n }\n}\n`;
}

/** Protected packets from the client that reached either network's router (the witness counters, summed). */
async function leakedSoFar(topo: LabTopology): Promise<number> {
  let n = 0;
  for (const ns of [topo.networks.wifi.routerNs, topo.networks.mobile.routerNs]) {
    const out = await runOk("ip", ["netns", "exec", ns, "nft", "list", "table", "inet", WITNESS_TABLE]);
    for (const m of out.matchAll(/packets (\d+)/g)) n += Number(m[1]);
  }
  return n;
}

/** `ping -D` through one tunnel device for `durationMs`; the epoch ms of every reply. */
function pingStream(topo: LabTopology, ifname: string, durationMs: number): Promise<number[]> {
  const [file, ...args] = inNs(topo.client.ns, [
    "ping",
    "-n",
    "-D",
    "-I",
    ifname,
    "-i",
    (STREAM_INTERVAL_MS / 1000).toFixed(3),
    "-w",
    String(Math.ceil(durationMs / 1000)),
    topo.corp.address,
  ]);
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (t: string) => (out += t));
    child.on("error", () => {
      resolve([]);
    });
    child.on("close", () => {
      resolve(pingReplyTimes(out));
    });
  });
}

function emptyRow(scenario: RoamScenario, setup: string, settings: string, detour: boolean): RoamRow {
  return { scenario, setup, settings, detour, ms: [], failures: 0, leaked: [], failovers: [] };
}

function add(row: RoamRow, ms: number | null, leaked: number, failovers?: number): void {
  if (ms === null) row.failures++;
  else row.ms.push(ms);
  row.leaked.push(leaked);
  if (failovers !== undefined) row.failovers.push(failovers);
}

/** The three plain tunnels up and answering, or an error naming the one that is not (all stopped then). */
async function plainTrio(b: Bench): Promise<PlainTunnel[]> {
  const state = lab.loadState(ID);
  const tunnels: PlainTunnel[] = [];
  try {
    for (const p of PLAIN) tunnels.push(await startPlain(p.leg, b.topo, state, gatewayByName(b.topo, p.gateway), "rb"));
    const up = await Promise.all(
      tunnels.map((t) => firstReplyThrough(b.topo, t.ifname, Date.now() + CONNECT_DEADLINE_MS)),
    );
    const down = tunnels.filter((_, i) => up[i] === null).map((t) => t.leg);
    if (down.length > 0) throw new Error(`roam: ${down.join(", ")} did not come up`);
    return tunnels;
  } catch (e) {
    await Promise.all(tunnels.map((t) => t.stop()));
    throw e;
  }
}

async function plainSwitch(b: Bench, rows: RoamRow[]): Promise<void> {
  const tunnels = await plainTrio(b);
  try {
    const before = await leakedSoFar(b.topo);
    const streams = tunnels.map((t) => pingStream(b.topo, t.ifname, STREAM_LEAD_MS + RESTORE_DEADLINE_MS));
    await sleep(STREAM_LEAD_MS);
    const moved = await lab.move("mobile", {}, ID);
    const replies = await Promise.all(streams);
    const leaked = (await leakedSoFar(b.topo)) - before;
    replies.forEach((r, i) => {
      const row = rows[i];
      if (row !== undefined) add(row, restoredAfter(r, moved.onlineAt), leaked);
    });
  } finally {
    await Promise.all(tunnels.map((t) => t.stop()));
    await lab.move("wifi", {}, ID);
    await sleep(SETTLE_MS);
  }
}

async function plainWake(b: Bench, rows: RoamRow[], seconds: number): Promise<void> {
  const tunnels = await plainTrio(b);
  try {
    const before = await leakedSoFar(b.topo);
    const { wokeAt } = await lab.sleepClient(seconds, ID);
    const at = await Promise.all(tunnels.map((t) => firstReplyThrough(b.topo, t.ifname, wokeAt + WAKE_DEADLINE_MS)));
    const leaked = (await leakedSoFar(b.topo)) - before;
    at.forEach((t, i) => {
      const row = rows[i];
      if (row !== undefined) add(row, t === null ? null : t - wokeAt, leaked);
    });
  } finally {
    await Promise.all(tunnels.map((t) => t.stop()));
    await sleep(SETTLE_MS);
  }
}

/** Connects detourd, runs `body` counting the failovers it records, and disconnects. */
async function withDetour<T>(b: Bench, body: () => Promise<T>): Promise<{ value: T | null; failovers: number }> {
  let failovers = 0;
  // The engines' own runs (a sleep among them) leave this client idle past detourd's idle limit: a fresh one.
  await reconnect(b);
  const sub = await b.client.subscribe((e) => {
    if (e.type === "failover") failovers++;
  });
  try {
    await b.client.connect();
    const up = await waitState(b.client, (s) => s.state === "connected", CONNECT_DEADLINE_MS);
    if (up === null) return { value: null, failovers };
    failovers = 0;
    return { value: await body(), failovers };
  } finally {
    sub.close();
    // Whatever happened, detourd must let go of its tunnel: the engines alone use the same client identity next.
    await reconnect(b);
    await b.client.disconnect();
    await waitState(b.client, (s) => s.state === "disconnected", CONNECT_DEADLINE_MS);
    await sleep(SETTLE_MS);
  }
}

async function detourSwitch(b: Bench, row: RoamRow): Promise<void> {
  try {
    const before = await leakedSoFar(b.topo);
    const r = await withDetour(b, async () => {
      const stream = b.probe.stream({
        host: b.topo.corp.address,
        port: CORP_ECHO_PORT,
        ratePerSec: 1000 / STREAM_INTERVAL_MS,
        durationMs: STREAM_LEAD_MS + RESTORE_DEADLINE_MS,
      });
      await sleep(STREAM_LEAD_MS);
      const moved = await lab.move("mobile", {}, ID);
      const s = await stream;
      return s.ok ? restoredFromGaps(s.gaps, moved.onlineAt, s.received) : null;
    });
    add(row, r.value, (await leakedSoFar(b.topo)) - before, r.failovers);
  } finally {
    await lab.move("wifi", {}, ID);
  }
}

async function detourWake(b: Bench, row: RoamRow, seconds: number): Promise<void> {
  const before = await leakedSoFar(b.topo);
  const r = await withDetour(b, async () => {
    const { wokeAt } = await lab.sleepClient(seconds, ID);
    const waiting = b.probe.waitReply({
      host: b.topo.corp.address,
      port: CORP_ECHO_PORT,
      intervalMs: STREAM_INTERVAL_MS,
      deadlineMs: WAKE_DEADLINE_MS,
    });
    await reconnect(b);
    const w = await waiting;
    return w.ok ? w.firstReplyAt - wokeAt : null;
  });
  add(row, r.value, (await leakedSoFar(b.topo)) - before, r.failovers);
}

function rowsFor(scenario: RoamScenario): { plain: RoamRow[]; detour: RoamRow } {
  return {
    plain: PLAIN.map((p) => emptyRow(scenario, p.setup, `${p.settings}; against ${p.gateway}`, false)),
    detour: emptyRow(scenario, "Detour", "detourd with the lab's config, `detour connect`, nothing else", true),
  };
}

async function withBench<T>(body: (b: Bench) => Promise<T>): Promise<T> {
  await agentStop(ID).catch(() => false);
  await lab.down(ID);
  const onSignal = (sig: NodeJS.Signals): void => {
    console.error(`roam: ${sig}, taking lab "${ID}" down`);
    void agentStop(ID)
      .catch(() => false)
      .then(() => lab.down(ID))
      .finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let agentUp = false;
  let client: ControlClient | null = null;
  let probe: ProbeClient | null = null;
  try {
    // 0 ms everywhere, as the compare suite: what is measured is the engines' and detourd's own behaviour.
    // Both networks NATed, as a laptop's are (the home router's and the carrier's).
    await lab.up(ID, { distance: "none", wifi: "nat" });
    const topo = lab.topologyOf(ID);
    for (const ns of [topo.networks.wifi.routerNs, topo.networks.mobile.routerNs])
      await runOk("ip", ["netns", "exec", ns, "nft", "-f", "-"], { input: witnessRuleset() });
    const a = await agentStart(ID);
    agentUp = true;
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    probe = await ProbeClient.start({ prefix: inNs(topo.client.ns, []) });
    const b: Bench = { topo, probe, client, socket: a.socket };
    try {
      return await body(b);
    } finally {
      client = b.client;
    }
  } finally {
    client?.close();
    await probe?.close().catch(() => undefined);
    if (agentUp) await agentStop(ID);
    await lab.down(ID);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export async function benchRoam(runs: number, args: readonly string[]): Promise<{ rows: RoamRow[]; markdown: string }> {
  const opts = parseRoamOptions(args);
  const rows: RoamRow[] = [];
  await withBench(async (b) => {
    for (const scenario of opts.only) {
      const { plain, detour } = rowsFor(scenario);
      rows.push(detour, ...plain);
      const n = scenario === "wake-5min" ? (opts.longRuns ?? runs) : runs;
      for (let i = 0; i < n; i++) {
        console.error(`roam: ${scenario} run ${String(i + 1)} of ${String(n)}`);
        // Interleaved, so both groups see the same machine load; a run that fails to start counts as failed.
        try {
          if (scenario === "switch") await detourSwitch(b, detour);
          else await detourWake(b, detour, SLEEP_S[scenario]);
        } catch (e) {
          console.error(`roam: Detour run failed: ${e instanceof Error ? e.message : String(e)}`);
          detour.failures++;
        }
        try {
          if (scenario === "switch") await plainSwitch(b, plain);
          else await plainWake(b, plain, SLEEP_S[scenario]);
        } catch (e) {
          console.error(`roam: plain run failed: ${e instanceof Error ? e.message : String(e)}`);
          for (const r of plain) r.failures++;
        }
      }
    }
  });
  const notes = [
    "Lab: 3 gateways at 0 ms RTT; the client moves from wifi (behind its home router's NAT) to mobile (its own router, a carrier NAT, its own resolver): the old link goes down with its addresses, then the new one comes up with address and default routes (`lab.move`).",
    "Sleep: every process of the client namespace frozen (cgroup v2) for the whole sleep; the gateways drop a silent client on their own timers (IKEv2 DPD after 30 s + ~7 s, ocserv's cookie 2 minutes after the connection drops, WireGuard keys after 180 s). The clocks do not jump (README).",
    "The engines alone run side by side, one per gateway, each probed through its own device (ping -I, 50/s); Detour is probed by a 50/s UDP echo stream through its routes. Leaked packets: packets to 198.19.0.0/16 that reached either router from the client (outside every tunnel), per setup group and run.",
  ].join("\n");
  return { rows, markdown: roamMarkdown(rows, notes) };
}
