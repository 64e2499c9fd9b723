/**
 * The WireGuard driver against the lab's real gateways: tunnels that reach corp through the right gateway,
 * blocked and impostor gateways, a gateway that dies, an engine that is killed, and two tunnels side by side.
 * Every scenario checks that stopping leaves no process, device, socket or file behind.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import type { TunnelEvent } from "../../../main/core/tunnel/engine-types.ts";
import { labEngineSpec, type LabSpecOptions } from "../../../test/lab/engine-specs.ts";
import * as lab from "../../../test/lab/lab.ts";
import { ProbeClient } from "../../../test/lab/probe-client.ts";
import { CORP_HTTP_PORT, CORP_NETWORK, type LabTopology } from "../../../test/lab/topology.ts";
import { linkExists } from "../../platform/link.linux.ts";
import { pingThrough } from "../../platform/probe.linux.ts";
import { isAlive } from "../../platform/process-tree.linux.ts";
import { runOk } from "../../platform/run.ts";
import { EngineError, type WireGuardSpec } from "../engine.ts";
import { uapiSocketPath } from "./uapi-client.ts";
import { WireGuardEngine } from "./wireguard-engine.ts";
import { WireGuardSpare } from "./wireguard-spare.ts";

const ID = "wg";
/** A lab tunnel comes up in about 50-200 ms; 5 s also covers a loaded two-core CI machine. */
const START_DEADLINE_MS = 5_000;
/** Short on purpose: a blocked or impostor gateway is silence, so start can only end at its deadline. */
const FAIL_DEADLINE_MS = 2_000;
/** Stopping after a failed start (SIGTERM, socket, device, folder) takes milliseconds; 1 s allows for load. */
const FAIL_SLACK_MS = 1_000;
/** How long a dead gateway is watched: long enough that any event the engine would send has arrived. */
const SILENCE_MS = 2_000;
/** A second look after the first, to see the silence grow. */
const SILENCE_STEP_MS = 1_000;
/** wireguard-go's exit is observed as soon as the kernel reaps it. */
const EXIT_WAIT_MS = 5_000;
const WHOAMI_TIMEOUT_MS = 2_000;
const EVENT_POLL_MS = 20;
/** Long enough that wireguard-go is running and handshaking when the caller gives up. */
const ABORT_AFTER_MS = 300;

let topo: LabTopology;
let state: lab.LabState;
let probe: ProbeClient | null = null;
/** Every engine a test made, so after() can stop what a failed assertion left running. */
const engines = new Set<WireGuardEngine>();

before(async () => {
  await lab.down(ID);
  state = await lab.up(ID);
  topo = lab.topologyOf(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
});

after(async () => {
  try {
    await Promise.allSettled([...engines].map((e) => e.stop()));
    await probe?.close();
  } finally {
    await lab.down(ID);
  }
});

function wgSpec(gateway: string, ifname: string, opts: Omit<LabSpecOptions, "ifname"> = {}): WireGuardSpec {
  const spec = labEngineSpec(topo, state, gateway, "wireguard", { ifname, ...opts });
  if (spec.protocol !== "wireguard") throw new Error("expected a WireGuard spec");
  return spec;
}

function engineFor(spec: WireGuardSpec): WireGuardEngine {
  const e = new WireGuardEngine(spec);
  engines.add(e);
  return e;
}

/** What of one engine instance is still on the host; empty means stop() cleaned up completely. */
async function leftovers(spec: WireGuardSpec, pid: number | null): Promise<string[]> {
  const out: string[] = [];
  if (pid !== null && isAlive(pid)) out.push(`process ${pid}`);
  if (await linkExists(spec.runtime.ifname, spec.runtime.netns)) out.push(`device ${spec.runtime.ifname}`);
  if (existsSync(uapiSocketPath(spec.runtime.ifname))) out.push(`socket ${uapiSocketPath(spec.runtime.ifname)}`);
  if (existsSync(spec.runtime.workDir)) out.push(`folder ${spec.runtime.workDir}`);
  return out;
}

async function whoami(): Promise<{ gateway: string | null; protocol: string | null }> {
  assert.ok(probe !== null);
  const r = await probe.http({
    url: `http://${topo.corp.address}:${CORP_HTTP_PORT}/whoami`,
    timeoutMs: WHOAMI_TIMEOUT_MS,
  });
  assert.ok(r.ok, `corp answered: ${JSON.stringify(r)}`);
  assert.equal(r.status, 200);
  return JSON.parse(r.body) as { gateway: string | null; protocol: string | null };
}

async function waitForEvent(
  events: TunnelEvent[],
  type: TunnelEvent["type"],
  timeoutMs: number,
): Promise<TunnelEvent | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < Math.ceil(timeoutMs / EVENT_POLL_MS) + 1; i++) {
    const e = events.find((x) => x.type === type);
    if (e !== undefined || Date.now() >= deadline) return e;
    await sleep(EVENT_POLL_MS);
  }
  return undefined;
}

/** Starts a tunnel that must fail, and checks it fails in time, with one of `codes`, leaving nothing behind. */
async function expectStartFails(spec: WireGuardSpec, codes: readonly string[]): Promise<EngineError> {
  const engine = engineFor(spec);
  const t0 = Date.now();
  let caught: unknown = null;
  try {
    await engine.start(t0 + FAIL_DEADLINE_MS);
  } catch (e) {
    caught = e;
  }
  const took = Date.now() - t0;
  const pid = engine.pid;
  await engine.stop();
  assert.ok(caught instanceof EngineError, `start rejects with an EngineError, got ${String(caught)}`);
  assert.ok(codes.includes(caught.code), `code ${caught.code}: ${caught.message}`);
  assert.ok(took <= FAIL_DEADLINE_MS + FAIL_SLACK_MS, `rejected after ${took} ms (deadline ${FAIL_DEADLINE_MS} ms)`);
  console.log(`${spec.runtime.ifname}: rejected with ${caught.code} after ${took} ms: ${caught.message}`);
  assert.ok(pid !== null, "wireguard-go was started");
  assert.deepEqual(await leftovers(spec, pid), [], "nothing is left behind");
  return caught;
}

describe("wireguard engine in the lab", () => {
  for (const gw of ["gw1", "gw2", "gw3"]) {
    test(`tunnel-to-${gw}-reaches-corp-through-${gw}-and-stop-leaves-nothing`, async () => {
      const spec = wgSpec(gw, `dwg-${gw}`);
      const engine = engineFor(spec);
      const events: TunnelEvent[] = [];
      engine.onEvent((e) => events.push(e));
      let pid: number | null = null;
      try {
        const t0 = Date.now();
        const up = await engine.start(t0 + START_DEADLINE_MS);
        pid = engine.pid;
        const hs = up.timings.handshakeAt === null ? "?" : String(up.timings.handshakeAt - up.timings.spawnedAt);
        console.log(
          `${gw}: start resolved after ${Date.now() - t0} ms (handshake at +${hs} ms, first reply at +${up.timings.firstReplyAt - up.timings.spawnedAt} ms)`,
        );
        assert.equal(up.config.ifname, spec.runtime.ifname);
        assert.deepEqual(up.config.addresses, [spec.params.tunnelAddress]);
        assert.deepEqual(up.config.routes, [CORP_NETWORK]);
        assert.deepEqual(up.config.dns, []);
        assert.ok(up.timings.handshakeAt !== null, "the handshake time is known");
        assert.ok(
          events.some((e) => e.type === "up"),
          "an up event was emitted",
        );

        // The engine installs no routes; the caller (here the test) decides where traffic goes.
        await runOk("ip", ["-n", topo.client.ns, "route", "replace", CORP_NETWORK, "dev", spec.runtime.ifname]);
        const seen = await whoami();
        assert.equal(seen.gateway, gw, "corp saw the request come through this gateway");
        assert.equal(seen.protocol, "wireguard");

        const stats = await engine.stats();
        assert.ok(stats.rxBytes > 0 && stats.txBytes > 0, `traffic counted: ${JSON.stringify(stats)}`);
        assert.ok(
          stats.lastRxAgoMs !== null && stats.lastRxAgoMs < START_DEADLINE_MS,
          `recently heard the gateway: ${JSON.stringify(stats)}`,
        );
        assert.equal(stats.subState, null);

        const log = readFileSync(join(spec.runtime.workDir, "wireguard-go.log"), "utf8");
        assert.match(log, /handshake/i, "the engine's verbose log was kept");
        const key = spec.credentials.privateKey.reveal();
        assert.ok(
          !log.includes(key) && !log.includes(Buffer.from(key, "base64").toString("hex")),
          "the private key is not in the engine's log",
        );
      } finally {
        pid ??= engine.pid;
        await engine.stop();
      }
      assert.deepEqual(await leftovers(spec, pid), [], "nothing is left behind");
      const exit = events.find((e) => e.type === "engine-exit");
      assert.ok(
        exit?.type === "engine-exit" && exit.expected,
        `the exit was reported as expected: ${JSON.stringify(exit)}`,
      );
    });
  }

  test("a-spare-wireguard-go-is-adopted-carries-the-tunnel-and-goes-with-its-engine", async () => {
    const spec = wgSpec("gw1", "dwg-s1");
    const spare = await WireGuardSpare.launch(
      {
        ifname: spec.runtime.ifname,
        workDir: spec.runtime.workDir,
        ...(spec.runtime.netns === undefined ? {} : { netns: spec.runtime.netns }),
      },
      Date.now() + START_DEADLINE_MS,
    );
    const sparePid = spare.pid;
    assert.ok(spare.usable && sparePid !== null);
    assert.equal(
      await linkExists(spec.runtime.ifname, spec.runtime.netns),
      true,
      "the spare's device exists before any connect",
    );
    const engine = new WireGuardEngine(spec, { spare });
    engines.add(engine);
    try {
      const t0 = Date.now();
      await engine.start(t0 + START_DEADLINE_MS);
      console.log(`spare adopted: start resolved after ${Date.now() - t0} ms`);
      assert.equal(engine.pid, sparePid, "the engine runs on the spare's process");
      assert.equal(spare.usable, false, "an adopted spare is the engine's");
      await spare.stop(); // a no-op once adopted
      assert.ok(isAlive(sparePid), "stopping an adopted spare leaves the engine's process alone");
      await runOk("ip", ["-n", topo.client.ns, "route", "replace", CORP_NETWORK, "dev", spec.runtime.ifname]);
      assert.equal((await whoami()).gateway, "gw1");
    } finally {
      await engine.stop();
    }
    assert.deepEqual(await leftovers(spec, sparePid), [], "nothing is left behind");
  });

  test("a-spare-never-adopted-is-removed-by-stop-and-by-an-engine-that-failed-first", async () => {
    const spec = wgSpec("gw2", "dwg-s2");
    const rt = {
      ifname: spec.runtime.ifname,
      workDir: spec.runtime.workDir,
      ...(spec.runtime.netns === undefined ? {} : { netns: spec.runtime.netns }),
    };
    const spare = await WireGuardSpare.launch(rt, Date.now() + START_DEADLINE_MS);
    const pid = spare.pid;
    await spare.stop();
    assert.deepEqual(await leftovers(spec, pid), [], "a stopped spare leaves nothing");
    // Handed to an engine whose spec is refused before adoption: the engine's stop removes the spare too.
    const again = await WireGuardSpare.launch(rt, Date.now() + START_DEADLINE_MS);
    const pid2 = again.pid;
    const bad = { ...spec, params: { ...spec.params, port: 0 } };
    const engine = new WireGuardEngine(bad, { spare: again });
    engines.add(engine);
    await assert.rejects(
      engine.start(Date.now() + START_DEADLINE_MS),
      (e: unknown) => e instanceof EngineError && e.code === "bad-config",
    );
    await engine.stop();
    assert.deepEqual(await leftovers(spec, pid2), [], "the unadopted spare went with the engine");
  });

  test("wireguard-blocked-at-the-gateway-times-out-and-leaves-nothing", async () => {
    const imp = await lab.impair({ kind: "block", target: "gw1", proto: "wireguard", dir: "both" }, ID);
    try {
      await expectStartFails(wgSpec("gw1", "dwg-blk"), ["timeout", "unreachable"]);
    } finally {
      await lab.lift(imp.id, ID);
    }
  });

  test("gateway-presenting-another-identity-is-refused", async () => {
    const gw2Key = state.secrets.gateways.gw2?.wgPublicKey;
    assert.ok(gw2Key !== undefined);
    // gw1 cannot decrypt an initiation sealed for gw2's key and drops it without a word, so to the client an
    // impostor looks exactly like silence: WireGuard can only report a timeout here, never identity-mismatch.
    await expectStartFails(wgSpec("gw1", "dwg-pin", { pin: { wireguardPublicKey: gw2Key } }), ["timeout"]);
  });

  test("start-aborted-by-the-caller-is-cancelled-and-leaves-nothing", async () => {
    // Pinned to another gateway's key, so the start can only end by the abort.
    const gw3Key = state.secrets.gateways.gw3?.wgPublicKey;
    assert.ok(gw3Key !== undefined);
    const spec = wgSpec("gw1", "dwg-abort", { pin: { wireguardPublicKey: gw3Key } });
    const engine = engineFor(spec);
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => {
      ac.abort();
    }, ABORT_AFTER_MS);
    const err = await engine.start(t0 + START_DEADLINE_MS, ac.signal).then(
      () => assert.fail("start resolved"),
      (e: unknown) => e,
    );
    const took = Date.now() - t0;
    const pid = engine.pid;
    assert.ok(err instanceof EngineError && err.code === "cancelled", `cancelled, got ${String(err)}`);
    assert.ok(took < ABORT_AFTER_MS + FAIL_SLACK_MS, `start gave up ${took - ABORT_AFTER_MS} ms after the abort`);
    assert.ok(pid !== null, "wireguard-go had been started");
    assert.deepEqual(await leftovers(spec, pid), [], "start cleaned up before it rejected");
    await engine.stop();
  });

  test("gateway-killed-while-up-goes-silent-and-the-verdict-is-the-callers", async () => {
    // WireGuard has no notion of a dead peer: the engine keeps running and reports nothing, while the time since
    // it last heard the gateway (stats, which telemetry exports) grows. detourd's in-tunnel monitor decides.
    const spec = wgSpec("gw2", "dwg-kill");
    const engine = engineFor(spec);
    const events: TunnelEvent[] = [];
    engine.onEvent((e) => events.push(e));
    let pid: number | null = null;
    try {
      await engine.start(Date.now() + START_DEADLINE_MS);
      pid = engine.pid;
      await lab.kill("gw2", "all", ID);
      await sleep(SILENCE_MS);
      const first = await engine.stats();
      await sleep(SILENCE_STEP_MS);
      const second = await engine.stats();
      console.log(
        `gateway killed: last heard ${String(first.lastRxAgoMs)} ms ago, then ${String(second.lastRxAgoMs)} ms ago`,
      );
      assert.ok(
        first.lastRxAgoMs !== null && first.lastRxAgoMs >= SILENCE_MS,
        `silent since the kill: ${JSON.stringify(first)}`,
      );
      assert.ok(
        second.lastRxAgoMs !== null && second.lastRxAgoMs >= first.lastRxAgoMs + SILENCE_STEP_MS,
        `and the silence grows: ${JSON.stringify(second)}`,
      );
      assert.deepEqual(
        events.map((e) => e.type),
        ["up"],
        "no down and no exit: the engine cannot tell, so it does not guess",
      );
      assert.ok(engine.pid !== null && isAlive(engine.pid), "the engine itself keeps running");
    } finally {
      try {
        pid ??= engine.pid;
        await engine.stop();
      } finally {
        await lab.restore("gw2", "all", ID);
      }
    }
    assert.deepEqual(await leftovers(spec, pid), [], "nothing is left behind");
  });

  test("engine-killed-reports-exit-and-stop-cleans-its-stale-socket", async () => {
    const spec = wgSpec("gw3", "dwg-crash");
    const engine = engineFor(spec);
    const events: TunnelEvent[] = [];
    engine.onEvent((e) => events.push(e));
    let pid: number | null = null;
    try {
      await engine.start(Date.now() + START_DEADLINE_MS);
      pid = engine.pid;
      assert.ok(pid !== null);
      process.kill(pid, "SIGKILL");
      const exit = await waitForEvent(events, "engine-exit", EXIT_WAIT_MS);
      assert.ok(exit?.type === "engine-exit", `an engine-exit event arrived: ${JSON.stringify(events)}`);
      assert.equal(exit.signal, "SIGKILL");
      assert.equal(exit.expected, false, "a kill the driver did not cause is unexpected");
      assert.ok(
        existsSync(uapiSocketPath(spec.runtime.ifname)),
        "SIGKILL left a stale socket (the case stop must handle)",
      );
    } finally {
      await engine.stop();
    }
    assert.deepEqual(await leftovers(spec, pid), [], "device gone, stale socket removed, folder removed");
  });

  test("two-tunnels-side-by-side-to-gw1-and-gw3", async () => {
    const specs = [wgSpec("gw1", "dwg-a1"), wgSpec("gw3", "dwg-a3")];
    const pair = specs.map((s) => engineFor(s));
    const pids: (number | null)[] = [];
    try {
      const t0 = Date.now();
      const ups = await Promise.allSettled(pair.map((e) => e.start(t0 + START_DEADLINE_MS)));
      for (const [i, r] of ups.entries()) {
        if (r.status === "rejected")
          assert.fail(`tunnel ${specs[i]?.runtime.ifname ?? "?"} did not start: ${String(r.reason)}`);
        console.log(`${specs[i]?.runtime.ifname}: up ${r.value.timings.firstReplyAt - t0} ms after both were launched`);
      }
      pids.push(...pair.map((e) => e.pid));
      // Each device answers its own probe while the other is up: no route is involved, so they cannot mask each other.
      const echoes = await Promise.all(
        specs.map((s) =>
          pingThrough({
            ifname: s.runtime.ifname,
            target: topo.corp.address,
            netns: s.runtime.netns,
            deadlineAt: Date.now() + START_DEADLINE_MS,
          }),
        ),
      );
      for (const [i, r] of echoes.entries())
        assert.ok(r.ok, `echo through ${specs[i]?.runtime.ifname}: ${JSON.stringify(r)}`);
    } finally {
      await Promise.all(pair.map((e) => e.stop()));
    }
    for (const [i, s] of specs.entries())
      assert.deepEqual(await leftovers(s, pids[i] ?? null), [], `nothing of ${s.runtime.ifname} is left`);
  });
});
