/** The drill runner against a fake daemon, block and probe: it measures from the block, and always lifts it. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { testConfig, wireguardGateway } from "../../test/fakes/config.ts";
import type { Candidate, ConnectionEvent, ConnectionSnapshot, ProbeSample } from "../core/connection/types.ts";
import type { GatewayEndpoint } from "../core/killswitch.ts";
import type { DrillBlock } from "../../native/platform/platform.ts";
import { systemClock } from "./clock.ts";
import { DrillRunner } from "./drill.ts";
import type { Logger } from "./log.ts";
import type { MonitorOptions } from "./monitor.ts";

/** Gateway n of the lab: gw<n>.lab.detour.test in region lab. */
const gateway = (n: number): ReturnType<typeof wireguardGateway> => ({
  ...wireguardGateway(n),
  hostname: `gw${String(n)}.lab.detour.test`,
  region: "lab",
});
const CONFIG = testConfig({
  organisation: "test",
  keyFile: "/dev/null",
  gateways: [gateway(1), gateway(2)],
  protectedRoutes: ["198.19.0.0/16"],
});

const QUIET: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

function snapshotOf(state: ConnectionSnapshot["state"], gw: string | null): ConnectionSnapshot {
  return {
    state,
    summary: "",
    gateway: gw,
    protocol: gw === null ? null : "wireguard",
    activeLegId: null,
    standby: null,
    since: null,
    candidates: [],
    lastRace: null,
    lastFailover: null,
    error: null,
  };
}

class World {
  snap = snapshotOf("connected", "gw1");
  listeners = new Set<(e: ConnectionEvent) => void>();
  recorded: ConnectionEvent[] = [];
  applied: { gateway: string; endpoints: readonly GatewayEndpoint[] }[] = [];
  removed = 0;
  applyFails = false;
  onSample: ((s: ProbeSample) => void) | null = null;
  seq = 0;
  /** What the "network" does once the block is in force. */
  onBlocked: () => void = () => undefined;

  emit(e: ConnectionEvent): void {
    for (const l of this.listeners) l(e);
  }
  reply(answered: boolean): void {
    this.seq++;
    this.onSample?.({ seq: this.seq, sentAt: Date.now(), rttMs: answered ? 1 : null });
  }
  runner(): DrillRunner {
    const block: DrillBlock = {
      apply: (g, endpoints) => {
        if (this.applyFails) return Promise.reject(new Error("nft: permission denied"));
        this.applied.push({ gateway: g, endpoints });
        setTimeout(() => {
          this.onBlocked();
        }, 5);
        return Promise.resolve();
      },
      remove: () => {
        this.removed++;
        return Promise.resolve();
      },
      present: () => Promise.resolve(false),
    };
    return new DrillRunner(
      {
        config: CONFIG,
        log: QUIET,
        status: () => this.snap,
        candidates: (): Candidate[] =>
          CONFIG.gateways.map((g) => ({
            name: g.name,
            hostname: g.hostname,
            address: g.address ?? null,
            priority: g.priority,
            region: g.region,
            kinds: ["wireguard"],
            sources: ["config"],
            probe: null,
          })),
        subscribe: (l) => {
          this.listeners.add(l);
          return () => this.listeners.delete(l);
        },
        record: (e) => this.recorded.push(e),
      },
      {
        block,
        // The fake network reports on Date.now(): the drill's monotonic time is the same clock here.
        clock: { ...systemClock, monotonic: () => Date.now() },
        startProbe: (opts: MonitorOptions) => {
          this.onSample = (s) => {
            opts.onSample(s);
          };
          setTimeout(() => {
            this.reply(true);
          }, 1);
          return {
            stop: () => (this.onSample = null),
            setInterval: () => undefined,
            outstanding: 0,
            pendingSince: () => null,
          };
        },
      },
    );
  }
  /** A failover that detects after `detectMs` and restores traffic after `restoreMs`, both from the block. */
  failsOver(detectMs: number, restoreMs: number): void {
    this.onBlocked = () => {
      const t0 = Date.now();
      setTimeout(() => {
        this.reply(false);
        this.emit({ type: "state", at: Date.now(), state: "failing-over", detail: "gw1 stopped answering" });
      }, detectMs);
      setTimeout(() => {
        const failover = {
          from: { gateway: "gw1", kind: "wireguard" as const },
          to: { gateway: "gw2", kind: "wireguard" as const },
          reason: "dead",
          via: "race" as const,
          lastReplyAt: t0,
          detectedAt: t0 + detectMs,
          restoredAt: Date.now(),
          detectedAfterMs: detectMs,
          restoredAfterMs: restoreMs,
        };
        this.emit({ type: "failover", at: Date.now(), failover });
        this.reply(true);
      }, restoreMs);
    };
  }
}

describe("drill runner", () => {
  test("a-failover-within-the-sla-passes-and-the-block-is-lifted", async () => {
    const w = new World();
    w.failsOver(40, 80);
    const r = await w.runner().run({ slaMs: 3000 });
    assert.equal(r.verdict, "pass", r.reason);
    assert.deepEqual(r.to, { gateway: "gw2", kind: "wireguard" });
    assert.ok(
      r.detectedAfterMs !== null && r.detectedAfterMs >= 30 && r.detectedAfterMs < 1000,
      String(r.detectedAfterMs),
    );
    assert.ok(r.restoredAfterMs !== null && r.restoredAfterMs >= r.detectedAfterMs, String(r.restoredAfterMs));
    assert.equal(r.probesLost, r.probesSent - 1);
    assert.deepEqual(
      w.applied.map((a) => a.gateway),
      ["gw1"],
    );
    assert.deepEqual(
      w.applied[0]?.endpoints,
      [{ address: "198.18.1.2", protocol: "udp", port: 51820 }],
      "only gw1's endpoints",
    );
    assert.equal(w.removed, 1);
    assert.equal(w.recorded[0]?.type, "drill", "the result goes to the flight recorder");
  });

  test("an-impossible-sla-fails-with-the-reason-and-still-lifts-the-block", async () => {
    const w = new World();
    w.failsOver(40, 80);
    const runner = w.runner();
    const r = await runner.run({ slaMs: 1 });
    assert.equal(r.verdict, "fail");
    assert.match(r.reason, /^detection \d+ ms exceeds SLA 1 ms$/);
    assert.equal(w.removed, 1);
    assert.equal(runner.last?.id, r.id);
  });

  test("not-connected-is-refused-and-nothing-is-blocked", async () => {
    const w = new World();
    w.snap = snapshotOf("disconnected", null);
    const runner = w.runner();
    const r = await runner.run({});
    assert.equal(r.verdict, "refused");
    assert.match(r.reason, /not connected \(it is disconnected\)/);
    assert.equal(w.applied.length, 0);
    assert.equal(runner.last, null, "a refused drill is not the last drill");
    assert.equal(w.recorded.length, 0);
  });

  test("a-second-drill-while-one-runs-is-refused", async () => {
    const w = new World();
    w.failsOver(40, 80);
    const runner = w.runner();
    const first = runner.run({ slaMs: 3000 });
    await sleep(2);
    const second = await runner.run({ slaMs: 3000 });
    assert.equal(second.verdict, "refused");
    assert.match(second.reason, /another drill is under way/);
    assert.equal((await first).verdict, "pass");
  });

  test("a-block-that-cannot-be-applied-fails-the-drill-and-is-removed-anyway", async () => {
    const w = new World();
    w.applyFails = true;
    const r = await w.runner().run({ slaMs: 3000 });
    assert.equal(r.verdict, "fail");
    assert.match(r.reason, /gw1 could not be blocked: nft: permission denied/);
    assert.equal(w.removed, 1);
  });

  test("traffic-that-keeps-flowing-during-the-block-means-nothing-was-measured", async () => {
    const w = new World();
    w.onBlocked = () => {
      w.reply(true);
    };
    const r = await w.runner().run({ slaMs: 3000 });
    assert.equal(r.verdict, "fail");
    assert.match(r.reason, /traffic still flowed while gw1 was blocked/);
    assert.equal(w.removed, 1);
  });

  test("shutdown-ends-a-drill-under-way-and-lifts-the-block", async () => {
    const w = new World();
    const runner = w.runner();
    const drill = runner.run({ slaMs: 3000 });
    for (let i = 0; i < 100 && w.applied.length === 0; i++) await sleep(5);
    await runner.stop();
    const r = await drill;
    assert.equal(r.verdict, "fail");
    assert.equal(r.reason, "detourd is shutting down");
    assert.ok(w.removed >= 1);
  });
});
