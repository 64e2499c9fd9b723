/**
 * The README's main job: the lab with real gateways, detourd racing and failing over, corp reached through the
 * tunnel before and after. Leaves the lab and the daemon running so the user can look around.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import Database from "better-sqlite3";
import { agentRunning, agentStart, agentStop } from "./agent.ts";
import { collectorPaths } from "./collector.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";

const ID = lab.DEFAULT_LAB_ID;
const POLL_MS = 100;
/** The demo waits at most this long for each step; a healthy lab needs a fraction of it. */
const STEP_TIMEOUT_MS = 20_000;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

async function waitFor(c: ControlClient, pred: (s: Status) => boolean, what: string): Promise<Status> {
  const until = Date.now() + STEP_TIMEOUT_MS;
  for (let i = 0; i < STEP_TIMEOUT_MS / POLL_MS && Date.now() < until; i++) {
    const s = await c.status();
    if (pred(s)) return s;
    await sleep(POLL_MS);
  }
  throw new Error(`demo: timed out waiting for ${what}`);
}

function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? "-" : `${Math.round(v)} ms`;
}

/** Tries of the corp check: a connection made through the old tunnel keeps its old source address and dies with it. */
const CORP_TRIES = 5;

async function corp(probe: ProbeClient): Promise<string> {
  for (let i = 0; i < CORP_TRIES; i++) {
    const r = await probe.http({ url: "http://198.19.0.1/whoami", timeoutMs: 1000 });
    if (r.ok && r.status === 200) {
      const w = JSON.parse(r.body) as { gateway: string; protocol: string; clientAddress: string };
      return `corp answered through ${w.gateway} over ${w.protocol} (client address ${w.clientAddress})`;
    }
    await sleep(POLL_MS);
  }
  return "corp did not answer";
}

/** What arrived at the lab's collector from this detourd (its database, read as a file). */
async function collectorReport(c: ControlClient): Promise<void> {
  const t = await waitFor(
    c,
    (x) => (x.telemetry?.export?.delivered ?? 0) > 0 && x.telemetry?.export?.pending === 0,
    "telemetry delivery",
  );
  const device = t.telemetry?.export?.deviceId ?? "";
  // The failover event leaves with the next export; give it one interval to arrive.
  await sleep(6000);
  const db = new Database(collectorPaths(lab.labDirOf(ID)).db, { readonly: true, fileMustExist: true });
  try {
    const agent = db.prepare("SELECT state, gateway, protocol FROM agents WHERE device_id = ?").get(device) as
      { state: string; gateway: string; protocol: string } | undefined;
    const batches = db.prepare("SELECT count(*) AS n FROM batches WHERE device_id = ?").get(device) as { n: number };
    const points = db.prepare("SELECT count(*) AS n FROM points WHERE device_id = ?").get(device) as { n: number };
    const failovers = db
      .prepare(
        "SELECT from_gateway AS f, to_gateway AS t, restored_after_ms AS r FROM events WHERE device_id = ? AND kind = 'failover'",
      )
      .all(device) as { f: string; t: string; r: number | null }[];
    console.log(
      `\ntelemetry at the collector (${lab.topologyOf(ID).collector.address}:4318): ${batches.n} OTLP batches, ${points.n} metric points from device ${device.slice(0, 8)}...`,
    );
    if (agent !== undefined) console.log(`  fleet view: ${agent.state} on ${agent.gateway} over ${agent.protocol}`);
    for (const f of failovers) console.log(`  failover timeline: ${f.f} -> ${f.t}, traffic back after ${ms(f.r)}`);
    console.log(
      `  tunnel now: RTT ${ms(t.telemetry?.rttMs)}, jitter ${ms(t.telemetry?.jitterMs)}, loss ${t.telemetry?.lossPct?.toFixed(1) ?? "-"} %`,
    );
  } finally {
    db.close();
  }
}

async function main(): Promise<void> {
  if (agentRunning(ID) !== null) await agentStop(ID);
  const st = await lab.status(ID);
  if (st.up) {
    await lab.heal(ID);
  } else {
    const s = await lab.up(ID);
    console.log(`lab up in ${s.upMs} ms: 3 gateways x (wireguard-go, strongSwan, ocserv), corp, DNS`);
  }
  const agent = await agentStart(ID);
  console.log(`detourd started in ${lab.topologyOf(ID).client.ns} (pid ${agent.pid})`);
  const c = await ControlClient.connect(agent.socket, { timeoutMs: 5000 });
  const probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", lab.topologyOf(ID).client.ns] });
  try {
    const t0 = Date.now();
    await c.connect();
    const s = await waitFor(c, (x) => x.state === "connected", "the connection");
    console.log(`\nconnected in ${Date.now() - t0} ms: ${s.summary}`);
    const race = s.lastRace;
    if (race !== null) {
      const unstarted = race.legs.filter((l) => l.startedAt === null).length;
      console.log(
        `race ${race.id}: ${race.legs.length} legs planned (gateway x protocol, staggered), ${unstarted} never needed to start`,
      );
      for (const l of race.legs.filter((x) => x.startedAt !== null)) {
        const start = l.startedAt === null ? "not started" : `+${l.startedAt - race.startedAt} ms`;
        const end = l.endedAt === null ? "" : ` -> +${l.endedAt - race.startedAt} ms`;
        console.log(
          `  ${l.leg.gateway} ${l.leg.kind.padEnd(15)} ${start}${end} ${l.outcome}${l.error === null ? "" : ` (${l.error.code})`}`,
        );
      }
    }
    console.log(await corp(probe));

    const warm = await waitFor(c, (x) => x.standby !== null, "the warm standby");
    if (warm.standby !== null)
      console.log(
        `warm standby up: ${warm.standby.gateway} over ${warm.standby.protocol} (probed, carries no traffic)`,
      );

    const active = s.gateway ?? "gw1";
    console.log(`\nkilling ${active} (all its engines, and its link goes silent)...`);
    await lab.kill(active, "all", ID);
    const f = await waitFor(
      c,
      (x) => x.state === "connected" && x.gateway !== active && x.lastFailover?.restoredAt != null,
      "the failover",
    );
    const fo = f.lastFailover;
    if (fo !== null) {
      console.log(
        `failover ${fo.from.gateway}/${fo.from.kind} -> ${fo.to?.gateway ?? "-"}/${fo.to?.kind ?? "-"}: ${fo.reason}`,
      );
      console.log(`  detected after ${ms(fo.detectedAfterMs)}, traffic restored after ${ms(fo.restoredAfterMs)}`);
    }
    console.log(await corp(probe));
    await lab.restore(active, "all", ID);
    console.log(`${active} restored (detourd returns to it only with hysteresis)`);
    await collectorReport(c);
  } finally {
    c.close();
    await probe.close();
  }
  console.log(`
The lab and detourd are still running. Look around:
  npm run lab -- exec client -- detour status        (or: detour status --json, detour race, detour events)
  npm run lab -- status                              namespaces, engines, impairments
  npm run lab -- kill gw2                            then watch: npm run lab -- exec client -- detour events
  npm run lab -- agent logs
  npm run lab -- dashboard                           the telemetry collector's dashboard at http://127.0.0.1:8318/
                                                     (user "lab", password: the "read" token it prints the file of)
Take it all down:
  npm run lab -- down`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exitCode = 1;
});
