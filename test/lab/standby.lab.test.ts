/**
 * The warm standby with the real daemon and engines: a second tunnel to another gateway over another protocol,
 * promoted by a route change when the active gateway dies, replaced afterwards, and gone after disconnect.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";

const ID = "stby";
/** A healthy lab connects and raises its standby within a second or two; 15 s bounds a loaded CI machine. */
const STANDBY_WITHIN_MS = 15_000;
/** The promotion takes the dead window (0.3 s); 8 s only bounds a hung test. */
const FAILOVER_WITHIN_MS = 8_000;
/** A generous bound for the outage the daemon records (the benchmark measures it properly). */
const RESTORED_WITHIN_MS = 2_000;
const POLL_MS = 100;
/** Engines take up to their stop budget (a few seconds) to go after disconnect. */
const TEARDOWN_WITHIN_MS = 15_000;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

let probe: ProbeClient;
let client: ControlClient | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", lab.topologyOf(ID).client.ns] });
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await probe.close();
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
  for (let i = 0; i < Math.ceil(timeoutMs / POLL_MS) + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(POLL_MS);
  }
  assert.fail(
    `timed out after ${timeoutMs} ms waiting for ${what}; last status: ${JSON.stringify(last, null, 1).slice(0, 3000)}`,
  );
}

/** Which gateway corp sees the request come through; retried while a route swap settles. */
async function corpSeesGateway(expected: string): Promise<string | null> {
  let seen: string | null = null;
  for (let i = 0; i < 10; i++) {
    const r = await probe.http({ url: "http://198.19.0.1/whoami", timeoutMs: 1000 });
    if (r.ok && r.status === 200) {
      seen = (JSON.parse(r.body) as { gateway: string | null }).gateway;
      if (seen === expected) return seen;
    }
    await sleep(POLL_MS);
  }
  return seen;
}

/** Tunnel devices of this lab's daemon left in the client namespace. */
function tunnelDevices(): string[] {
  const r = spawnSync("ip", ["netns", "exec", lab.topologyOf(ID).client.ns, "ip", "-o", "link", "show"], {
    encoding: "utf8",
    timeout: 5000,
  });
  return r.stdout
    .split("\n")
    .map((l) => l.split(":")[1]?.trim().split("@")[0] ?? "")
    .filter((n) => n.startsWith(`d${ID}`) || n.startsWith("ipsec") || n.startsWith("tun"));
}

test(
  "a-warm-standby-takes-over-by-a-route-change-is-replaced-and-goes-with-disconnect",
  { timeout: 120_000 },
  async () => {
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await c.connect();
    const s0 = await waitFor(
      c,
      "connected with a standby",
      (x) => x.state === "connected" && x.standby !== null,
      STANDBY_WITHIN_MS,
    );
    const sb = s0.standby;
    assert.ok(sb !== null);
    console.log(`active ${String(s0.gateway)}/${String(s0.protocol)}, standby ${sb.gateway}/${sb.protocol}`);
    assert.equal(s0.gateway, "gw1");
    assert.notEqual(sb.gateway, s0.gateway, "the standby is on another gateway");
    assert.notEqual(sb.protocol, s0.protocol, "and reached another way");
    assert.equal(await corpSeesGateway("gw1"), "gw1", "traffic goes through the active tunnel, not the standby");
    await sleep(1000);
    const warm = await c.status();
    assert.ok(
      warm.standby !== null && warm.standby.lastReplyAt !== null && Date.now() - warm.standby.lastReplyAt < 1000,
      "the standby is probed and answers",
    );

    await lab.kill("gw1", "all", ID);
    const s1 = await waitFor(
      c,
      "failover away from gw1",
      (x) => x.state === "connected" && x.gateway !== "gw1" && x.lastFailover?.restoredAt != null,
      FAILOVER_WITHIN_MS,
    );
    const f = s1.lastFailover;
    assert.ok(f !== null && f.restoredAfterMs !== null);
    console.log(
      `failover ${f.from.gateway}/${f.from.kind} -> ${f.to?.gateway ?? "-"}/${f.to?.kind ?? "-"} via ${f.via}: detected after ${Math.round(f.detectedAfterMs)} ms, restored after ${Math.round(f.restoredAfterMs)} ms`,
    );
    assert.equal(f.via, "standby", "the standby was promoted, no race");
    assert.deepEqual(f.to, { gateway: sb.gateway, kind: sb.protocol });
    assert.equal(s1.activeLegId, sb.legId, "the same tunnel, now active");
    assert.ok(f.restoredAfterMs < RESTORED_WITHIN_MS, `restored after ${f.restoredAfterMs} ms`);
    assert.equal(await corpSeesGateway(sb.gateway), sb.gateway, "corp now sees the standby's gateway");

    const s2 = await waitFor(
      c,
      "a new standby",
      (x) => x.standby !== null && x.standby.legId !== sb.legId,
      STANDBY_WITHIN_MS,
    );
    assert.ok(s2.standby !== null);
    assert.notEqual(s2.standby.gateway, "gw1", "not on the gateway that just died");
    assert.notEqual(s2.standby.gateway, s2.gateway);

    await c.disconnect();
    await waitFor(c, "disconnected", (x) => x.state === "disconnected" && x.standby === null, 5000);
    const until = Date.now() + TEARDOWN_WITHIN_MS;
    let left = tunnelDevices();
    for (let i = 0; i < TEARDOWN_WITHIN_MS / POLL_MS && left.length > 0 && Date.now() < until; i++) {
      await sleep(POLL_MS);
      left = tunnelDevices();
    }
    assert.deepEqual(left, [], "no tunnel device of the active or the standby is left");
  },
);
