/**
 * The IKEv2 driver against the lab's real gateways (charon-systemd on both sides, kernel-libipsec): what a user
 * would notice when tunnels come up, fail, break and stop, and that nothing of an instance outlives it.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { gatewayPaths } from "../../../test/lab/gateway-engines.ts";
import * as lab from "../../../test/lab/lab.ts";
import { labEngineSpec, type LabSpecOptions } from "../../../test/lab/engine-specs.ts";
import { processTree } from "../../../test/lab/exec.ts";
import { namespacePids } from "../../../test/lab/netns.ts";
import { ProbeClient } from "../../../test/lab/probe-client.ts";
import { gatewayByName, type LabTopology } from "../../../test/lab/topology.ts";
import type { TunnelEvent, TunnelUp } from "../../../main/core/tunnel/engine-types.ts";
import { run, runOk } from "../../platform/run.ts";
import { pingThrough } from "../../platform/probe.linux.ts";
import { isEngineError } from "../engine.ts";
import { IpsecEngine } from "./ipsec-engine.ts";
import { viciSection } from "./vici-codec.ts";
import { ViciClient } from "./vici-client.ts";

const ID = "ike";
/** A cold charon is up and pinging in ~100-150 ms in this lab; ten seconds is a generous start deadline. */
const START_DEADLINE_MS = 10_000;
/** Longer than charon's own ~7.1 s give-up, so a blocked gateway ends with charon's verdict, not ours. */
const BLOCKED_DEADLINE_MS = 9_000;
/** A rejected start may overrun its deadline by this much at most (the contract is: by the deadline). */
const DEADLINE_SLACK_MS = 1_000;
/** charon's DPD (10 s of silence, then 7.1 s of retransmits: ~17 s) must report a dead gateway within this. */
const DOWN_WAIT_MS = 25_000;
/** A SIGKILLed charon is reaped at once; the exit event follows within moments. */
const EXIT_WAIT_MS = 5_000;
/** The gateway processes our IKE DELETE within a round trip; this bounds the look. */
const GATEWAY_SA_GONE_MS = 3_000;
const HTTP_TIMEOUT_MS = 3_000;
const POLL_MS = 50;

let topo: LabTopology;
let state: lab.LabState;
let probe: ProbeClient | null = null;
const engines = new Set<IpsecEngine>();

before(async () => {
  await lab.down(ID);
  state = await lab.up(ID);
  topo = lab.topologyOf(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
});

after(async () => {
  for (const e of engines) await e.stop().catch(() => undefined);
  await probe?.close().catch(() => undefined);
  await lab.down(ID);
});

function newEngine(gw: string, opts: Partial<LabSpecOptions> = {}): IpsecEngine {
  const spec = labEngineSpec(topo, state, gw, "ikev2", { ifname: `dike-${gw}`, ...opts });
  assert.equal(spec.protocol, "ikev2");
  const e = new IpsecEngine(spec);
  engines.add(e);
  return e;
}

/** What of any IKEv2 client is left in the client namespace (processes other than the probe agent, TUN devices, rules, ipsec routes). */
async function clientNamespaceLeftovers(): Promise<string[]> {
  const ns = topo.client.ns;
  const agent = new Set(probe === null ? [] : processTree(probe.pid));
  const out = (await namespacePids(ns)).filter((p) => !agent.has(p)).map((p) => `process ${p}`);
  const links = JSON.parse(await runOk("ip", ["-n", ns, "-j", "link", "show"])) as { ifname: string }[];
  out.push(...links.filter((l) => l.ifname.startsWith("ipsec")).map((l) => `device ${l.ifname}`));
  const rules = JSON.parse(await runOk("ip", ["-n", ns, "-j", "rule", "show"])) as {
    priority: number;
    table: string;
  }[];
  out.push(
    ...rules
      .filter((r) => !["local", "main", "default"].includes(r.table))
      .map((r) => `rule ${r.priority} -> table ${r.table}`),
  );
  const routes = await runOk("ip", ["-n", ns, "route", "show", "table", "all"]);
  out.push(
    ...routes
      .split("\n")
      .filter((l) => /dev ipsec/.test(l))
      .map((l) => `route ${l}`),
  );
  return out;
}

/** IKE_SAs a gateway's charon holds, asked over its own VICI socket. */
async function gatewaySaCount(gw: string): Promise<number> {
  const c = await ViciClient.connect(gatewayPaths(state.labDir, gatewayByName(topo, gw)).vici);
  try {
    const { events } = await c.stream("list-sas", viciSection({ noblock: "yes" }), "list-sa");
    return events.length;
  } finally {
    c.close();
  }
}

async function eventually(what: string, check: () => Promise<boolean>, withinMs: number): Promise<void> {
  const until = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`${what} (waited ${withinMs} ms)`);
    await sleep(POLL_MS);
  }
}

/** corp's /whoami through the tunnel; charon's routes are inert by design, so the test routes corp itself. */
async function whoamiThrough(up: TunnelUp): Promise<{ gateway: string; protocol: string; clientAddress: string }> {
  const ns = topo.client.ns;
  const vip = up.config.addresses[0]?.split("/")[0] ?? "";
  const route = [topo.corp.network, "dev", up.config.ifname, "src", vip];
  await runOk("ip", ["-n", ns, "route", "replace", ...route]);
  try {
    if (probe === null) throw new Error("no probe client");
    const r = await probe.http({ url: `http://${topo.corp.address}/whoami`, timeoutMs: HTTP_TIMEOUT_MS });
    assert.ok(r.ok && "status" in r && r.status === 200, `whoami answered: ${JSON.stringify(r)}`);
    return JSON.parse(r.body) as { gateway: string; protocol: string; clientAddress: string };
  } finally {
    await run("ip", ["-n", ns, "route", "del", ...route]);
  }
}

function waitForEvent(e: IpsecEngine, type: TunnelEvent["type"], withinMs: number): Promise<TunnelEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${withinMs} ms`));
    }, withinMs);
    const off = e.onEvent((ev) => {
      if (ev.type !== type) return;
      clearTimeout(timer);
      off();
      resolve(ev);
    });
  });
}

for (const gw of ["gw1", "gw2", "gw3"]) {
  test(`${gw}-tunnel-carries-corp-traffic-and-stops-clean`, { timeout: 30_000 }, async () => {
    const e = newEngine(gw);
    try {
      const t0 = Date.now();
      const up = await e.start(t0 + START_DEADLINE_MS);
      console.log(
        `${gw}: up in ${up.timings.firstReplyAt - up.timings.spawnedAt} ms (handshake ${String((up.timings.handshakeAt ?? 0) - up.timings.spawnedAt)} ms) on ${up.config.ifname} ${up.config.addresses.join()} routes ${up.config.routes.join()} table ${up.detail.routingTable ?? "?"}`,
      );
      assert.match(up.config.ifname, /^ipsec\d+$/, "the device kernel-libipsec created, not the spec's label");
      assert.deepEqual(up.config.routes, [topo.corp.network], "the negotiated remote TS");
      const me = await whoamiThrough(up);
      assert.equal(me.gateway, gw);
      assert.equal(me.protocol, "ikev2");
      assert.equal(`${me.clientAddress}/32`, up.config.addresses[0]);
      assert.ok((await gatewaySaCount(gw)) >= 1, "the gateway holds our IKE_SA");
    } finally {
      await e.stop();
    }
    assert.deepEqual(await e.leftovers(), []);
    assert.deepEqual(await clientNamespaceLeftovers(), []);
    await eventually(
      `${gw} dropped our IKE_SA (charon sent DELETE on stop)`,
      async () => (await gatewaySaCount(gw)) === 0,
      GATEWAY_SA_GONE_MS,
    );
  });
}

test("ike-blocked-at-the-gateway-rejects-unreachable-by-the-deadline", { timeout: 30_000 }, async () => {
  const imp = await lab.impair({ kind: "block", target: "gw1", proto: "ike", dir: "both" }, ID);
  const e = newEngine("gw1");
  try {
    const deadline = Date.now() + BLOCKED_DEADLINE_MS;
    const err = await e.start(deadline).then(
      () => assert.fail("start resolved through a blocked gateway"),
      (x: unknown) => x,
    );
    const late = Date.now() - deadline;
    console.log(`blocked: rejected ${String(late)} ms relative to the deadline: ${String(err)}`);
    assert.ok(isEngineError(err), String(err));
    assert.ok(err.code === "unreachable" || err.code === "timeout", `code ${err.code}`);
    assert.ok(err.retryable);
    assert.ok(late <= DEADLINE_SLACK_MS, `rejected ${late} ms after the deadline`);
    assert.match(err.engineOutput, /retransmit/, "charon's own words come with the error");
  } finally {
    await lab.lift(imp.id, ID);
    await e.stop();
  }
  assert.deepEqual(await e.leftovers(), []);
  assert.deepEqual(await clientNamespaceLeftovers(), [], "no charon, device or SA is left");
});

test("gateway-with-another-identity-is-refused-not-reached", { timeout: 30_000 }, async () => {
  const e = newEngine("gw1", { pin: { ikeRemoteId: "gw2.lab.detour.test" } });
  try {
    const t0 = Date.now();
    const err = await e.start(t0 + START_DEADLINE_MS).then(
      () => assert.fail("start resolved with the wrong identity pinned"),
      (x: unknown) => x,
    );
    console.log(`identity pinned to gw2 at gw1: ${String(err)} after ${Date.now() - t0} ms`);
    assert.ok(isEngineError(err), String(err));
    // With PSK, the initiator sends the pinned identity as IDr; gw1 finds no config for it and answers
    // AUTHENTICATION_FAILED before proving who it is, so charon cannot tell a wrong pin from a wrong key:
    // auth-failed is the honest verdict here; identity-mismatch needs a gateway that presents another identity.
    assert.ok(err.code === "identity-mismatch" || err.code === "auth-failed", `code ${err.code}`);
    assert.ok(!err.retryable, "retrying the same gateway cannot help");
    assert.match(err.engineOutput, /AUTHENTICATION_FAILED|constraint check failed/);
    assert.ok(Date.now() - t0 < 3000, "a refusal is immediate, not a timeout");
  } finally {
    await e.stop();
  }
  assert.deepEqual(await clientNamespaceLeftovers(), []);
});

test("gateway-killed-while-up-is-reported-down", { timeout: 60_000 }, async () => {
  const e = newEngine("gw2");
  try {
    await e.start(Date.now() + START_DEADLINE_MS);
    const down = waitForEvent(e, "down", DOWN_WAIT_MS);
    const killedAt = Date.now();
    await lab.kill("gw2", "all", ID);
    const ev = await down;
    console.log(`down detected after ${ev.at - killedAt} ms: ${ev.type === "down" ? ev.reason : ""}`);
    assert.ok(ev.at - killedAt < DOWN_WAIT_MS);
  } finally {
    await e.stop();
    await lab.restore("gw2", "all", ID);
  }
  assert.deepEqual(await e.leftovers(), []);
  assert.deepEqual(await clientNamespaceLeftovers(), []);
});

test("charon-sigkilled-reports-engine-exit-and-stop-cleans-up", { timeout: 30_000 }, async () => {
  const e = newEngine("gw1");
  try {
    const up = await e.start(Date.now() + START_DEADLINE_MS);
    const pid = e.pid;
    assert.ok(pid !== null && pid > 0);
    const exited = waitForEvent(e, "engine-exit", EXIT_WAIT_MS);
    process.kill(pid, "SIGKILL");
    const ev = await exited;
    assert.ok(ev.type === "engine-exit" && !ev.expected && ev.signal === "SIGKILL", JSON.stringify(ev));
    console.log(`SIGKILL of charon ${pid}: engine-exit, leftovers before stop: ${(await e.leftovers()).join("; ")}`);
    assert.ok(up.config.ifname !== "");
  } finally {
    await e.stop();
  }
  assert.deepEqual(await e.leftovers(), [], "device, routes, socket and folder are gone");
  assert.deepEqual(await clientNamespaceLeftovers(), []);
});

test("two-ipsec-tunnels-in-one-namespace-both-work-and-stop-clean", { timeout: 40_000 }, async () => {
  const a = newEngine("gw1");
  const b = newEngine("gw3");
  try {
    const deadline = Date.now() + START_DEADLINE_MS;
    const [upA, upB] = await Promise.all([a.start(deadline), b.start(deadline)]);
    console.log(
      `two at once: gw1 on ${upA.config.ifname} ${upA.config.addresses.join()} in ${upA.timings.firstReplyAt - upA.timings.spawnedAt} ms, gw3 on ${upB.config.ifname} ${upB.config.addresses.join()} in ${upB.timings.firstReplyAt - upB.timings.spawnedAt} ms`,
    );
    assert.notEqual(upA.config.ifname, upB.config.ifname, "each charon has its own TUN device");
    assert.notEqual(upA.detail.routingTable, upB.detail.routingTable, "each charon has its own routing table");
    // both still carry traffic once the other is up (a shared table 220 would have moved gw1's route to gw3)
    for (const up of [upA, upB]) {
      const r = await pingThrough({
        ifname: up.config.ifname,
        target: topo.corp.address,
        netns: topo.client.ns,
        deadlineAt: Date.now() + 3000,
      });
      assert.ok(r.ok, `echo through ${up.config.ifname}: ${r.ok ? "" : r.error}`);
    }
    assert.equal((await whoamiThrough(upA)).gateway, "gw1");
    assert.equal((await whoamiThrough(upB)).gateway, "gw3");
    const statsA = await a.stats();
    assert.ok(statsA.rxPackets > 0 && statsA.lastRxAgoMs !== null, JSON.stringify(statsA));
    await a.stop();
    const r = await pingThrough({
      ifname: upB.config.ifname,
      target: topo.corp.address,
      netns: topo.client.ns,
      deadlineAt: Date.now() + 3000,
    });
    assert.ok(r.ok, "gw3's tunnel survives gw1's charon stopping");
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
  assert.deepEqual(await a.leftovers(), []);
  assert.deepEqual(await b.leftovers(), []);
  assert.deepEqual(await clientNamespaceLeftovers(), []);
});
