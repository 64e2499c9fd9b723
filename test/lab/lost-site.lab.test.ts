/**
 * Disaster recovery: the gateways with the best priority are all down (a data centre lost, or decommissioned
 * entries left at the top of the managed list). Three silent gateways sit above the lab's three; Detour must
 * connect to a live one at once and fail over to another live one, never waiting on the dead.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import type { DetourConfigInput } from "../../main/core/config/schema.ts";
import { agentStart, agentStop } from "./agent.ts";
import { writeClientConfig } from "./client-config.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "lost";
/** Where the dead site's gateways live: the router drops everything towards it without a word (a blackhole). */
const DEAD_NET = "198.18.240.0/24";
const DEAD = ["dead1", "dead2", "dead3"];
/** The promise with the probes in: about the live gateway's own connect time. */
const WARM_CONNECT_WITHIN_MS = 1_000;
/** A connect before any probe came back: the probes (1 s at most for silence) re-plan the race. */
const COLD_CONNECT_WITHIN_MS = 4_000;
/** The probes of silent gateways give up after 1 s; a loaded CI machine gets a few more. */
const PROBES_WITHIN_MS = 5_000;
/** The dead window plus a leg's start; 8 s only bounds a hung test. */
const FAILOVER_WITHIN_MS = 8_000;
const POLL_MS = 50;

let client: ControlClient | null = null;

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID);
  const topo = lab.topologyOf(ID);
  const r = spawnSync("ip", ["-n", topo.router.ns, "route", "add", "blackhole", DEAD_NET], {
    encoding: "utf8",
    timeout: 5000,
  });
  assert.equal(r.status, 0, r.stderr);
  const config = JSON.parse(readFileSync(state.clientConfig, "utf8")) as DetourConfigInput & {
    gateways: { name: string; priority: number; protocols: unknown }[];
  };
  const template = config.gateways[0];
  assert.ok(template !== undefined);
  const dead = DEAD.map((name, i) => ({
    ...template,
    name,
    hostname: `${name}.lab.detour.test`,
    address: `198.18.240.${String(i + 1)}`,
    priority: i + 1,
    region: "lost-site",
  }));
  writeClientConfig(state.clientConfig, { ...config, gateways: [...dead, ...config.gateways] });
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
  rmSync(join(lab.labDirOf(ID), "detourd-state"), { recursive: true, force: true });
  await lab.heal(ID);
});

after(async () => {
  await lab.down(ID);
});

async function start(): Promise<ControlClient> {
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  return client;
}

function waitFor(c: ControlClient, what: string, pred: (s: Status) => boolean, timeoutMs: number): Promise<Status> {
  return waitForStatus(c, what, pred, timeoutMs, { pollMs: POLL_MS });
}

/** Waits until detourd's pre-connect probes have heard (or not heard) from every gateway. */
async function probed(c: ControlClient): Promise<void> {
  const until = Date.now() + PROBES_WITHIN_MS;
  for (let i = 0; i < Math.ceil(PROBES_WITHIN_MS / POLL_MS) + 1 && Date.now() < until; i++) {
    const g = await c.gateways();
    if (g.candidates.length >= 6 && g.candidates.every((x) => x.probe !== null)) return;
    await sleep(POLL_MS);
  }
  assert.fail("the pre-connect probes did not finish");
}

function legGateways(s: Status): string[] {
  return [
    ...new Set(
      (s.lastRace?.legs ?? [])
        .filter((l) => l.outcome !== "pending" && l.outcome !== "cancelled")
        .map((l) => l.leg.gateway),
    ),
  ];
}

test("top-three-gateways-silent-a-connect-reaches-a-live-gateway-within-a-second", { timeout: 60_000 }, async () => {
  const c = await start();
  await probed(c);
  const t0 = Date.now();
  await c.connect();
  const s = await waitFor(c, "connected", (x) => x.state === "connected", 10_000);
  const ms = Date.now() - t0;
  console.log(
    `top gateways silent, probes in: connected to ${String(s.gateway)} over ${String(s.protocol)} in ${ms} ms; legs to ${legGateways(s).join(", ")}`,
  );
  assert.ok(!DEAD.includes(s.gateway ?? ""), "a live gateway");
  assert.ok(ms <= WARM_CONNECT_WITHIN_MS, `connected in ${ms} ms`);
  assert.deepEqual(
    legGateways(s).filter((g) => DEAD.includes(g)),
    [],
    "no leg waited on a silent gateway",
  );
});

test(
  "top-three-gateways-silent-a-connect-at-launch-moves-on-when-the-probes-come-back",
  { timeout: 60_000 },
  async () => {
    const c = await start();
    const t0 = Date.now();
    await c.connect();
    const s = await waitFor(c, "connected", (x) => x.state === "connected", 20_000);
    const ms = Date.now() - t0;
    console.log(
      `top gateways silent, cold: connected to ${String(s.gateway)} over ${String(s.protocol)} in ${ms} ms; legs to ${legGateways(s).join(", ")}`,
    );
    assert.ok(!DEAD.includes(s.gateway ?? ""));
    assert.ok(ms <= COLD_CONNECT_WITHIN_MS, `connected in ${ms} ms`);
  },
);

test(
  "top-three-gateways-silent-the-active-gateway-dies-detour-fails-over-to-a-live-one",
  { timeout: 90_000 },
  async () => {
    const c = await start();
    await probed(c);
    await c.connect();
    const first = await waitFor(c, "connected", (x) => x.state === "connected", 10_000);
    const from = first.gateway ?? "";
    assert.ok(!DEAD.includes(from));
    await lab.kill(from, "all", ID);
    const t0 = Date.now();
    const s = await waitFor(
      c,
      "connected elsewhere",
      (x) => x.state === "connected" && x.gateway !== from,
      FAILOVER_WITHIN_MS,
    );
    console.log(
      `${from} killed: now on ${String(s.gateway)} over ${String(s.protocol)} after ${Date.now() - t0} ms (${s.lastFailover?.via ?? "?"})`,
    );
    assert.ok(!DEAD.includes(s.gateway ?? ""), "a live gateway");
  },
);
