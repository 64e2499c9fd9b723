/**
 * Gateways far away: a user in Sydney on a Frankfurt gateway, in-flight Wi-Fi, a congested mobile link. With the
 * client's uplink 360 ms and 600 ms round trip long (on top of the lab's distances), with jitter and a little
 * loss, Detour connects within a few round trips and stays on its gateway: no failover for a minute.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";
import { ProbeClient } from "./probe-client.ts";

const ID = "far";
/** How long the tunnel is watched for a false failover: the minute. */
const WATCH_MS = 60_000;
/** Jitter on each direction of the uplink, and loss on it: a real long path is neither smooth nor clean. */
const JITTER_MS = 20;
const LOSS_PCT = 1;
/**
 * A connect takes a handshake and the proof of life's echo, two or three round trips; six leave room for a loaded
 * machine and a lost packet's retry on the leg that wins.
 */
const CONNECT_ROUND_TRIPS = 6;
const POLL_MS = 200;

let client: ControlClient | null = null;
let probe: ProbeClient;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", lab.topologyOf(ID).client.ns] });
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
  rmSync(join(lab.labDirOf(ID), "detourd-state"), { recursive: true, force: true });
  await lab.heal(ID);
});

after(async () => {
  await probe.close();
  await lab.down(ID);
});

function waitFor(c: ControlClient, what: string, pred: (s: Status) => boolean, timeoutMs: number): Promise<Status> {
  return waitForStatus(c, what, pred, timeoutMs, { pollMs: 50 });
}

for (const rtt of [360, 600]) {
  test(
    `a-${rtt}-ms-uplink-with-jitter-and-loss-connects-in-a-few-round-trips-and-never-fails-over`,
    { timeout: WATCH_MS + 60_000 },
    async () => {
      await lab.impair(
        {
          kind: "delay",
          target: "client",
          proto: "all",
          dir: "both",
          delayMs: rtt / 2 - JITTER_MS / 2,
          jitterMs: JITTER_MS,
        },
        ID,
      );
      await lab.impair({ kind: "loss", target: "client", proto: "all", dir: "both", percent: LOSS_PCT }, ID);
      const a = await agentStart(ID);
      client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
      const c = client;
      const t0 = Date.now();
      await c.connect();
      const s = await waitFor(c, "connected", (x) => x.state === "connected", 20_000);
      const connectMs = Date.now() - t0;
      const from = s.gateway;
      let failovers = 0;
      let lastFailoverAt: number | null = null;
      const w0 = Date.now();
      while (Date.now() - w0 < WATCH_MS) {
        const x = await c.status();
        assert.notEqual(x.state, "error", `error while watching: ${x.summary}`);
        const f = x.lastFailover;
        if (f !== null && f.detectedAt !== lastFailoverAt) {
          failovers += 1;
          lastFailoverAt = f.detectedAt;
          console.log(`  failover: ${f.from.gateway} -> ${f.to?.gateway ?? "?"}: ${f.reason}`);
        }
        await sleep(POLL_MS);
      }
      const end = await c.status();
      const r = await probe.http({ url: "http://198.19.0.1/whoami", timeoutMs: 5000 });
      console.log(
        `${rtt} ms uplink: connected to ${String(from)} over ${String(s.protocol)} in ${connectMs} ms; ${failovers} failovers in ${WATCH_MS / 1000} s; still on ${String(end.gateway)}; tunnel rtt p50 ${String(end.telemetry?.rttMs ?? "?")} ms, loss ${String(end.telemetry?.lossPct ?? "?")} %`,
      );
      assert.ok(connectMs <= CONNECT_ROUND_TRIPS * rtt + 1000, `connected in ${connectMs} ms`);
      assert.equal(failovers, 0, "no failover on a healthy far path");
      assert.equal(end.state, "connected");
      assert.equal(end.gateway, from);
      assert.ok(r.ok && r.status === 200, "corp answers through the tunnel");
    },
  );
}
