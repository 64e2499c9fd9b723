import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  DEFAULT_SLA_MS,
  MAX_OBSERVE_MS,
  MAX_SLA_MS,
  MIN_OBSERVE_MS,
  evaluateDrill,
  observeWindowMs,
  parseSlaMs,
  refusalReason,
  refusedDrill,
  type DrillObservation,
} from "./drill.ts";

const T0 = 1_700_000_000_000;

function observation(over: Partial<DrillObservation> = {}): DrillObservation {
  return {
    id: "D1",
    startedAt: T0 - 50,
    endedAt: T0 + 900,
    slaMs: 1000,
    observeMs: 5000,
    from: { gateway: "gw1", kind: "wireguard" },
    to: { gateway: "gw2", kind: "wireguard" },
    blockedAt: T0,
    liftedAt: T0 + 880,
    detectedAt: T0 + 312,
    restoredAt: T0 + 355,
    probesSent: 18,
    probesLost: 17,
    failover: null,
    answeredDuringBlock: false,
    interrupted: null,
    errorReason: null,
    ...over,
  };
}

describe("drill request", () => {
  test("no SLA given: the default, which is the sub-second promise", () => {
    assert.deepEqual(parseSlaMs(undefined), { ok: true, slaMs: DEFAULT_SLA_MS });
    assert.equal(DEFAULT_SLA_MS, 1000);
  });

  test("an SLA from the command line or the wire", () => {
    assert.deepEqual(parseSlaMs("3000"), { ok: true, slaMs: 3000 });
    assert.deepEqual(parseSlaMs(1), { ok: true, slaMs: 1 });
    assert.deepEqual(parseSlaMs(MAX_SLA_MS), { ok: true, slaMs: MAX_SLA_MS });
  });

  test("a bad SLA is named with the range it must be in", () => {
    for (const bad of ["", "abc", "1.5", "-5", "0", "1e3", String(MAX_SLA_MS + 1), 2.5, 0, null, "9".repeat(100)]) {
      const r = parseSlaMs(bad);
      assert.ok(!r.ok, `accepted ${String(bad)}`);
      assert.match(r.message, /whole number of milliseconds from 1 to 10000; got /);
    }
  });

  test("the watch is three times the SLA, never shorter than a slow race nor longer than the cap", () => {
    assert.equal(observeWindowMs(1), MIN_OBSERVE_MS);
    assert.equal(observeWindowMs(3000), 9000);
    assert.equal(observeWindowMs(MAX_SLA_MS), MAX_OBSERVE_MS);
  });
});

describe("drill refusals", () => {
  const ok = { state: "connected" as const, gateway: "gw1", otherGateways: ["gw2"], running: false };
  test("a connected daemon with somewhere to go may drill", () => {
    assert.equal(refusalReason(ok), null);
  });
  test("not connected", () => {
    assert.match(
      refusalReason({ ...ok, state: "disconnected", gateway: null }) ?? "",
      /not connected \(it is disconnected\); connect first/,
    );
    assert.match(refusalReason({ ...ok, state: "failing-over" }) ?? "", /not connected \(it is failing-over\)/);
  });
  test("no other gateway", () => {
    assert.match(refusalReason({ ...ok, otherGateways: [] }) ?? "", /no other gateway to fail over to: gw1/);
  });
  test("a second drill while one runs", () => {
    assert.match(refusalReason({ ...ok, running: true }) ?? "", /another drill is under way/);
  });
  test("a refused drill blocked nothing and measured nothing", () => {
    const r = refusedDrill("D3", T0, 1000, null, "detourd is not connected");
    assert.equal(r.verdict, "refused");
    assert.equal(r.blockedAt, null);
    assert.equal(r.restoredAfterMs, null);
  });
});

describe("drill verdict", () => {
  test("within the SLA: pass, measured from the block", () => {
    const r = evaluateDrill(observation());
    assert.equal(r.verdict, "pass");
    assert.equal(r.detectedAfterMs, 312);
    assert.equal(r.restoredAfterMs, 355);
    assert.match(r.reason, /detected in 312 ms and restored in 355 ms, within SLA 1000 ms/);
  });

  test("restoration over the SLA fails and says by how much", () => {
    const r = evaluateDrill(observation({ slaMs: 1, restoredAt: T0 + 1200, detectedAt: T0 + 600 }));
    assert.equal(r.verdict, "fail");
    assert.equal(r.reason, "detection 600 ms exceeds SLA 1 ms");
    const late = evaluateDrill(observation({ slaMs: 1000, detectedAt: T0 + 600, restoredAt: T0 + 1200 }));
    assert.equal(late.reason, "restoration 1200 ms exceeds SLA 1000 ms");
  });

  test("exactly at the SLA passes", () => {
    assert.equal(evaluateDrill(observation({ restoredAt: T0 + 1000 })).verdict, "pass");
  });

  test("never detected", () => {
    const r = evaluateDrill(observation({ detectedAt: null, to: null, restoredAt: null }));
    assert.equal(r.verdict, "fail");
    assert.match(r.reason, /did not notice that gw1 was blocked within 5000 ms/);
  });

  test("detected but nowhere to go", () => {
    const r = evaluateDrill(observation({ to: null, restoredAt: null, errorReason: "every leg failed" }));
    assert.equal(r.verdict, "fail");
    assert.equal(r.reason, "no other gateway took over: every leg failed");
    assert.equal(r.detectedAfterMs, 312);
  });

  test("the daemon moved but users' traffic never came back", () => {
    const r = evaluateDrill(observation({ restoredAt: null }));
    assert.equal(r.verdict, "fail");
    assert.match(r.reason, /moved to gw2, but traffic did not flow again/);
  });

  test("traffic that flows during the block means the drill measured nothing", () => {
    const r = evaluateDrill(observation({ answeredDuringBlock: true }));
    assert.equal(r.verdict, "fail");
    assert.match(r.reason, /traffic still flowed while gw1 was blocked/);
  });

  test("an interrupted drill fails with the interruption as its reason", () => {
    const r = evaluateDrill(observation({ interrupted: "disconnected during the drill" }));
    assert.equal(r.verdict, "fail");
    assert.equal(r.reason, "disconnected during the drill");
  });
});
