/**
 * The AnyConnect driver against the lab's real ocserv gateways: what a user would notice when tunnels come up,
 * fail, degrade, die and run side by side. Runs in its own lab ("oc") so other drivers' labs are untouched.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Secret } from "../../../main/core/secret.ts";
import type { TunnelEvent } from "../../../main/core/tunnel/engine-types.ts";
import { labEngineSpec, type LabLeg, type LabSpecOptions } from "../../../test/lab/engine-specs.ts";
import * as lab from "../../../test/lab/lab.ts";
import { ProbeClient } from "../../../test/lab/probe-client.ts";
import type { LabTopology } from "../../../test/lab/topology.ts";
import { linkExists } from "../../platform/link.linux.ts";
import { pingThrough } from "../../platform/probe.linux.ts";
import { isAlive } from "../../platform/process-tree.linux.ts";
import { runOk } from "../../platform/run.ts";
import { isEngineError, type AnyConnectSpec } from "../engine.ts";
import { OpenConnectEngine } from "./openconnect-engine.ts";

const ID = "oc";
/** A clean lab start is ~100 ms; the deadline leaves room for a loaded two-core machine. */
const START_DEADLINE_MS = 10_000;
/** Short deadlines for the failure scenarios: they prove the deadline holds without slowing the suite. */
const SHORT_DEADLINE_MS = 3_000;
/** How late a rejection may come after its deadline: teardown (SIGINT, BYE, device gone) is part of it. */
const DEADLINE_SLACK_MS = 1_000;
/** A refused TCP connection is answered at once; openconnect exits within tens of milliseconds. */
const FAST_FAILURE_MS = 1_000;
const HTTP_TIMEOUT_MS = 5_000;
/** ocserv's DPD is 5 s: openconnect declares the CSTP peer dead about 8-10 s after the gateway falls silent. */
const DOWN_WAIT_MS = 20_000;
const EXIT_WAIT_MS = 5_000;
/** ocserv's DTLS DPD is 5 s: openconnect declares DTLS dead after about 11 s (lab notes, section 5). */
const DEGRADED_WAIT_MS = 20_000;
const COOKIE_ROUNDS = 3;

let topo: LabTopology;
let state: lab.LabState;
let probe: ProbeClient | null = null;

before(async () => {
  await lab.down(ID);
  state = await lab.up(ID);
  topo = lab.topologyOf(ID);
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
});

after(async () => {
  await probe?.close();
  await lab.down(ID);
});

function specFor(gw: string, leg: LabLeg, opts: Partial<LabSpecOptions> = {}): AnyConnectSpec {
  const s = labEngineSpec(topo, state, gw, leg, { ifname: `doc-${gw}`, ...opts });
  if (s.protocol !== "anyconnect") throw new Error("expected an AnyConnect spec");
  return s;
}

/** What of one engine instance is still on the host: process, device, work folder. */
async function leftovers(e: OpenConnectEngine, spec: AnyConnectSpec): Promise<string[]> {
  const out: string[] = [];
  if (e.pid > 0 && isAlive(e.pid)) out.push(`process ${e.pid}`);
  if (await linkExists(spec.runtime.ifname, spec.runtime.netns)) out.push(`device ${spec.runtime.ifname}`);
  if (existsSync(spec.runtime.workDir)) out.push(`folder ${spec.runtime.workDir}`);
  return out;
}

function recorder(e: OpenConnectEngine): {
  events: TunnelEvent[];
  waitFor: (type: TunnelEvent["type"], ms: number) => Promise<TunnelEvent | null>;
} {
  const events: TunnelEvent[] = [];
  e.onEvent((ev) => events.push(ev));
  return {
    events,
    async waitFor(type, ms) {
      const until = Date.now() + ms;
      while (Date.now() < until) {
        const ev = events.find((x) => x.type === type);
        if (ev !== undefined) return ev;
        await sleep(20);
      }
      return null;
    },
  };
}

async function whoami(): Promise<{ gateway: string; protocol: string }> {
  if (probe === null) throw new Error("no probe client");
  const r = await probe.http({ url: `http://${topo.corp.address}/whoami`, timeoutMs: HTTP_TIMEOUT_MS });
  assert.ok(r.ok, `whoami failed: ${JSON.stringify(r)}`);
  assert.equal(r.op, "http");
  return JSON.parse(r.body) as { gateway: string; protocol: string };
}

async function expectRejection(p: Promise<unknown>): Promise<{ code: string; message: string; engineOutput: string }> {
  try {
    await p;
  } catch (e) {
    assert.ok(isEngineError(e), `an EngineError, got ${String(e)}`);
    return { code: e.code, message: e.message, engineOutput: e.engineOutput };
  }
  assert.fail("start resolved but was expected to reject");
}

test("every-gateway-in-dtls-and-tls-mode-carries-traffic-to-corp", { timeout: 60_000 }, async () => {
  const times: string[] = [];
  for (const gw of ["gw1", "gw2", "gw3"]) {
    for (const leg of ["anyconnect-dtls", "anyconnect-tls"] as const) {
      const spec = specFor(gw, leg);
      const e = new OpenConnectEngine(spec);
      try {
        const t0 = Date.now();
        const up = await e.start(t0 + START_DEADLINE_MS);
        times.push(
          `${gw} ${leg}: ${Date.now() - t0} ms (CSTP ${String((up.timings.handshakeAt ?? 0) - up.timings.spawnedAt)} ms)`,
        );
        assert.equal(up.detail.transport, leg === "anyconnect-dtls" ? "dtls" : "tls");
        assert.equal(up.config.ifname, spec.runtime.ifname);
        assert.deepEqual(up.config.routes, [topo.corp.network], "the split include ocserv pushes");
        assert.match(up.config.addresses[0] ?? "", /^198\.19\.\d+\.\d+\/32$/);
        const stats = await e.stats();
        assert.equal(stats.subState, up.detail.transport);
        assert.ok(stats.rxPackets > 0, "the start probe's reply came in through the device");
        await runOk("ip", ["-n", topo.client.ns, "route", "replace", topo.corp.network, "dev", spec.runtime.ifname]);
        const who = await whoami();
        assert.equal(who.gateway, gw);
        assert.equal(who.protocol, "anyconnect");
      } finally {
        await e.stop();
      }
      assert.deepEqual(await leftovers(e, spec), [], `${gw} ${leg} left nothing behind`);
      await e.stop(); // idempotent
    }
  }
  console.log(`start → first reply through the tunnel:\n  ${times.join("\n  ")}`);
});

test("tls-blocked-times-out-by-the-deadline-and-rejected-fails-fast", { timeout: 30_000 }, async () => {
  const blocked = await lab.impair({ kind: "block", target: "gw1", proto: "tls", dir: "both" }, ID);
  try {
    const spec = specFor("gw1", "anyconnect-tls");
    const e = new OpenConnectEngine(spec);
    const t0 = Date.now();
    const deadline = t0 + SHORT_DEADLINE_MS;
    const err = await expectRejection(e.start(deadline));
    const late = Date.now() - deadline;
    assert.ok(err.code === "timeout" || err.code === "unreachable", err.code);
    assert.ok(late <= DEADLINE_SLACK_MS, `rejected ${late} ms after the deadline`);
    assert.match(err.message, /no TCP connection/);
    assert.deepEqual(await leftovers(e, spec), []);
    console.log(`tls blocked: ${err.code} after ${Date.now() - t0} ms (deadline ${SHORT_DEADLINE_MS} ms)`);

    const spec2 = specFor("gw1", "anyconnect-tls");
    const e2 = new OpenConnectEngine(spec2);
    const ac = new AbortController();
    setTimeout(() => {
      ac.abort();
    }, 300);
    const aborted = await expectRejection(e2.start(Date.now() + START_DEADLINE_MS, ac.signal));
    assert.equal(aborted.code, "cancelled");
    assert.deepEqual(await leftovers(e2, spec2), []);
  } finally {
    await lab.lift(blocked.id, ID);
  }
  const rejected = await lab.impair({ kind: "reject", target: "gw1", proto: "tls", dir: "both" }, ID);
  try {
    const spec = specFor("gw1", "anyconnect-tls");
    const e = new OpenConnectEngine(spec);
    const t0 = Date.now();
    const err = await expectRejection(e.start(t0 + START_DEADLINE_MS));
    const ms = Date.now() - t0;
    assert.equal(err.code, "unreachable");
    assert.ok(ms < FAST_FAILURE_MS, `refused took ${ms} ms`);
    assert.deepEqual(await leftovers(e, spec), []);
    console.log(`tls rejected: unreachable after ${ms} ms`);
  } finally {
    await lab.lift(rejected.id, ID);
  }
});

test("udp-dropped-tls-leg-comes-up-fast-while-the-dtls-leg-waits", { timeout: 30_000 }, async () => {
  const imp = await lab.impair({ kind: "block", target: "client", proto: "udp", dir: "both" }, ID);
  try {
    const tlsSpec = specFor("gw1", "anyconnect-tls");
    const tls = new OpenConnectEngine(tlsSpec);
    try {
      const t0 = Date.now();
      const up = await tls.start(t0 + START_DEADLINE_MS);
      const ms = Date.now() - t0;
      assert.equal(up.detail.transport, "tls");
      assert.ok(ms < FAST_FAILURE_MS, `TLS-only leg took ${ms} ms with UDP dropped`);
      console.log(`udp dropped: TLS-only leg up in ${ms} ms`);
    } finally {
      await tls.stop();
    }
    const dtlsSpec = specFor("gw1", "anyconnect-dtls");
    const dtls = new OpenConnectEngine(dtlsSpec);
    const t0 = Date.now();
    const deadline = t0 + SHORT_DEADLINE_MS;
    try {
      const up = await dtls.start(deadline);
      assert.equal(up.detail.transport, "tls", "if it comes up at all, it is without DTLS");
      console.log(`udp dropped: DTLS-mode leg came up without DTLS in ${Date.now() - t0} ms`);
    } catch (e) {
      assert.ok(isEngineError(e) && e.code === "timeout", String(e));
      assert.ok(Date.now() - deadline <= DEADLINE_SLACK_MS);
      assert.match(e.message, /waits for DTLS/);
      console.log(`udp dropped: DTLS-mode leg timed out at its ${SHORT_DEADLINE_MS} ms deadline (${e.message})`);
    } finally {
      await dtls.stop();
    }
    assert.deepEqual(await leftovers(dtls, dtlsSpec), []);
  } finally {
    await lab.lift(imp.id, ID);
  }
});

test("dtls-dropped-while-up-degrades-to-tls-and-keeps-carrying-traffic", { timeout: 40_000 }, async () => {
  const spec = specFor("gw1", "anyconnect-dtls");
  const e = new OpenConnectEngine(spec);
  const rec = recorder(e);
  let imp: { id: string } | null = null;
  try {
    const up = await e.start(Date.now() + START_DEADLINE_MS);
    assert.equal(up.detail.transport, "dtls");
    const blockedAt = Date.now();
    imp = await lab.impair({ kind: "block", target: "gw1", proto: "dtls", dir: "both" }, ID);
    const degraded = await rec.waitFor("degraded", DEGRADED_WAIT_MS);
    assert.ok(degraded !== null && degraded.type === "degraded", `a degraded event: ${JSON.stringify(rec.events)}`);
    assert.equal((await e.stats()).subState, "tls");
    const echo = await pingThrough({
      ifname: spec.runtime.ifname,
      target: topo.corp.address,
      netns: spec.runtime.netns,
      deadlineAt: Date.now() + HTTP_TIMEOUT_MS,
    });
    assert.ok(echo.ok, "traffic still flows over TLS");
    assert.equal(
      rec.events.find((x) => x.type === "down"),
      undefined,
      "degraded, not down",
    );
    console.log(`DTLS dropped: degraded after ${degraded.at - blockedAt} ms (${degraded.reason})`);
  } finally {
    await e.stop();
    if (imp !== null) await lab.lift(imp.id, ID);
  }
  assert.deepEqual(await leftovers(e, spec), []);
});

test("a-gateway-with-another-identity-or-a-wrong-password-is-refused", { timeout: 20_000 }, async () => {
  const gw2Pin = state.secrets.gateways.gw2?.tlsPin;
  assert.ok(gw2Pin !== undefined);
  const spec = specFor("gw1", "anyconnect-dtls", { pin: { tlsPin: gw2Pin } });
  const e = new OpenConnectEngine(spec);
  const err = await expectRejection(e.start(Date.now() + START_DEADLINE_MS));
  assert.equal(err.code, "identity-mismatch");
  assert.deepEqual(await leftovers(e, spec), []);

  const bad = specFor("gw1", "anyconnect-dtls");
  const wrong: AnyConnectSpec = {
    ...bad,
    credentials: { ...bad.credentials, password: new Secret("wrong-password-for-test") },
  };
  const e2 = new OpenConnectEngine(wrong);
  const err2 = await expectRejection(e2.start(Date.now() + START_DEADLINE_MS));
  assert.equal(err2.code, "auth-failed");
  assert.ok(
    !err2.engineOutput.includes("wrong-password-for-test") && !/webvpncontext=\S/.test(err2.engineOutput),
    "no secret in the error",
  );
  assert.deepEqual(await leftovers(e2, wrong), []);
});

test("gateway-killed-while-up-reports-down", { timeout: 40_000 }, async () => {
  const spec = specFor("gw2", "anyconnect-dtls");
  const e = new OpenConnectEngine(spec);
  const rec = recorder(e);
  try {
    await e.start(Date.now() + START_DEADLINE_MS);
    const killedAt = Date.now();
    await lab.kill("gw2", "all", ID);
    const down = await rec.waitFor("down", DOWN_WAIT_MS);
    assert.ok(down !== null && down.type === "down", `a down event: ${JSON.stringify(rec.events)}`);
    console.log(`down detected after ${down.at - killedAt} ms (${down.reason})`);
  } finally {
    await e.stop();
    await lab.restore("gw2", "all", ID);
  }
  assert.deepEqual(await leftovers(e, spec), []);
});

test("openconnect-sigkilled-reports-engine-exit-and-stop-cleans-up", { timeout: 20_000 }, async () => {
  const spec = specFor("gw1", "anyconnect-dtls");
  const e = new OpenConnectEngine(spec);
  const rec = recorder(e);
  try {
    await e.start(Date.now() + START_DEADLINE_MS);
    assert.ok(e.pid > 0 && isAlive(e.pid));
    process.kill(e.pid, "SIGKILL");
    const exit = await rec.waitFor("engine-exit", EXIT_WAIT_MS);
    assert.ok(exit !== null && exit.type === "engine-exit");
    assert.equal(exit.expected, false);
    assert.equal(exit.signal, "SIGKILL");
    assert.ok((await rec.waitFor("down", EXIT_WAIT_MS)) !== null, "the tunnel is reported down");
  } finally {
    await e.stop();
  }
  assert.deepEqual(await leftovers(e, spec), []);
});

test("two-anyconnect-tunnels-run-side-by-side", { timeout: 30_000 }, async () => {
  const specs = [specFor("gw1", "anyconnect-dtls"), specFor("gw3", "anyconnect-dtls")];
  const engines = specs.map((s) => new OpenConnectEngine(s));
  try {
    const ups = await Promise.all(engines.map((e) => e.start(Date.now() + START_DEADLINE_MS)));
    assert.notEqual(ups[0]?.config.addresses[0], ups[1]?.config.addresses[0]);
    for (const [i, e] of engines.entries()) {
      const s = await e.stats();
      assert.ok(s.rxPackets > 0, `tunnel ${i} got its probe reply`);
    }
    // each stays usable while the other runs: corp answers through whichever device the route names
    for (const [i, spec] of specs.entries()) {
      await runOk("ip", ["-n", topo.client.ns, "route", "replace", topo.corp.network, "dev", spec.runtime.ifname]);
      assert.equal((await whoami()).gateway, i === 0 ? "gw1" : "gw3");
    }
  } finally {
    await Promise.all(engines.map((e) => e.stop()));
  }
  for (const [i, e] of engines.entries()) assert.deepEqual(await leftovers(e, specs[i] as AnyConnectSpec), []);
});

test("cookie-start-skips-authentication", { timeout: 60_000 }, async () => {
  const password: number[] = [];
  const cookie: number[] = [];
  const authMs: number[] = [];
  for (let i = 0; i < COOKIE_ROUNDS; i++) {
    const spec = specFor("gw1", "anyconnect-dtls");
    const e = new OpenConnectEngine(spec);
    const t0 = Date.now();
    try {
      await e.start(t0 + START_DEADLINE_MS);
      password.push(Date.now() - t0);
    } finally {
      await e.stop();
    }

    const cspec = specFor("gw1", "anyconnect-dtls");
    const a0 = Date.now();
    const session = await OpenConnectEngine.authenticate(cspec, a0 + START_DEADLINE_MS);
    authMs.push(Date.now() - a0);
    assert.equal(String(session.cookie), "[redacted]");
    assert.ok(!JSON.stringify(session).includes(session.cookie.reveal()));
    const ce = new OpenConnectEngine(cspec, { session });
    const c0 = Date.now();
    try {
      const up = await ce.start(c0 + START_DEADLINE_MS);
      cookie.push(Date.now() - c0);
      assert.equal(up.detail.auth, "cookie");
      assert.equal(up.detail.transport, "dtls");
    } finally {
      await ce.stop();
    }
    assert.deepEqual(await leftovers(ce, cspec), []);

    if (i === 0) {
      // stop() logged off with a BYE, so the same cookie is refused now: auth-failed, not a hang
      const again = specFor("gw1", "anyconnect-dtls");
      const reuse = new OpenConnectEngine(again, { session });
      const err = await expectRejection(reuse.start(Date.now() + START_DEADLINE_MS));
      assert.equal(err.code, "auth-failed");
      assert.ok(!`${err.message}${err.engineOutput}`.includes(session.cookie.reveal()));
    }
  }
  // logoffOnStop false disconnects with SIGHUP: no BYE, so the cookie opens the tunnel again (fast reconnect)
  const kspec = specFor("gw1", "anyconnect-tls");
  const kept = await OpenConnectEngine.authenticate(kspec, Date.now() + START_DEADLINE_MS);
  for (let round = 0; round < 2; round++) {
    const rspec = round === 0 ? kspec : specFor("gw1", "anyconnect-tls");
    const k = new OpenConnectEngine(rspec, { session: kept, logoffOnStop: false });
    try {
      await k.start(Date.now() + START_DEADLINE_MS);
    } finally {
      await k.stop();
    }
    assert.deepEqual(await leftovers(k, rspec), [], `round ${round} after SIGHUP`);
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  console.log(
    `start with password: ${password.join(", ")} ms (median ${median(password)}); ` +
      `authenticate: ${authMs.join(", ")} ms; start with cookie: ${cookie.join(", ")} ms (median ${median(cookie)})`,
  );
});
