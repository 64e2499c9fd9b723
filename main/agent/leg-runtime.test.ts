/**
 * The legs' routing slots under churn, on the fake platform (whose kernel keeps one leg rule per preference, as
 * routes.linux.ts does): a leg coming up never takes a live leg's table or deletes its source rule, a slot comes
 * back only once its leg's teardown has finished, exhaustion fails the leg that found none, and a leg's source
 * rule is in before its first echo and gone on every failure path.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DetourConfig } from "../core/config/schema.ts";
import { testConfig, writeTestKey } from "../../test/fakes/config.ts";
import type { Leg, MachineInput } from "../core/connection/types.ts";
import { Secret } from "../core/secret.ts";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { FakeWorld, fakePlatform, fakeProber } from "../../test/fakes/fake-platform.ts";
import { EngineError, EventHub, type EngineStartHooks, type TunnelEngine } from "../../native/engines/engine.ts";
import type { Platform } from "../../native/platform/platform.ts";
import { configuredCandidates } from "./discovery.ts";
import { LegRuntimes } from "./leg-runtime.ts";
import { LegSlots } from "./leg-slots.ts";
import { PathMtuGuard } from "./path-mtu.ts";
import type { Logger } from "./log.ts";

const root = mkdtempSync(join(tmpdir(), "detour-leg-runtime-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
const keyFile = writeTestKey(root);

const GATEWAYS = 4;

function config(): DetourConfig {
  return testConfig({ keyFile, gateways: Array.from({ length: GATEWAYS }, (_, i) => i + 1) });
}

interface Rig {
  clock: FakeClock;
  world: FakeWorld;
  legs: LegRuntimes;
  inputs: MachineInput[];
  tracked: Promise<unknown>[];
}

function rig(
  slots?: LegSlots,
  engines?: (p: Platform) => Platform["engines"],
  pathMtu?: (clock: FakeClock, log: Logger) => PathMtuGuard,
): Rig {
  const clock = new FakeClock();
  const gws: Record<string, { connectMs: number }> = {};
  for (let i = 1; i <= GATEWAYS; i++) gws[`gw${String(i)}`] = { connectMs: 100 };
  const world = new FakeWorld(clock, gws);
  const platform = fakePlatform(world);
  const cfg = config();
  const candidates = configuredCandidates(cfg);
  const inputs: MachineInput[] = [];
  const tracked: Promise<unknown>[] = [];
  const quiet = (): void => undefined;
  const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet };
  const legs = new LegRuntimes(
    {
      config: () => cfg,
      identity: { wireguard: new Secret("unused"), ikev2: null, anyconnect: null },
      workDir: root,
      ifnamePrefix: "dlr",
      candidate: (name) => candidates.find((c) => c.name === name),
      spareFor: () => null,
      dispatch: (input) => inputs.push(input),
      track: (p) => tracked.push(p),
      log,
      pathMtu: pathMtu?.(clock, log) ?? null,
    },
    engines === undefined ? platform : { ...platform, engines: engines(platform) },
    clock,
    fakeProber(world),
    slots,
  );
  return { clock, world, legs, inputs, tracked };
}

/**
 * Every leg that is up and not stopping has its own source rule in the kernel: a rule from its address, at a
 * preference and in a table no other live leg's rule uses.
 */
function assertEveryLiveLegRouted(r: Rig, when: string): void {
  const rules = [...r.world.legRules.entries()];
  const tables = new Set<number>();
  for (const rt of r.legs.all()) {
    if (rt.up === null || rt.stopping !== null) continue;
    const address = rt.up.config.addresses[0]?.split("/")[0];
    const mine = rules.filter(([, rule]) => rule.address === address);
    assert.equal(
      mine.length,
      1,
      `${when}: leg ${rt.leg.id} (${String(address)}) has ${String(mine.length)} source rules; kernel: ${JSON.stringify(rules)}`,
    );
    const table = mine[0]?.[1].table ?? -1;
    assert.ok(!tables.has(table), `${when}: two live legs share table ${String(table)}`);
    tables.add(table);
  }
}

function leg(n: number, gw: number): Leg {
  return { id: `L${String(n)}`, gateway: `gw${String(gw)}`, kind: "wireguard" };
}

test("legs that race and come up together each keep their own source rule (winner and standby)", async () => {
  const r = rig();
  const deadline = r.clock.monotonic() + 10_000;
  r.legs.start(leg(1, 1), deadline);
  r.legs.start(leg(2, 2), deadline);
  await r.clock.advance(200);
  assert.equal(r.inputs.filter((i) => i.type === "leg-up").length, 2);
  assertEveryLiveLegRouted(r, "both up");
  await Promise.all(r.legs.stopAll());
  assert.equal(r.world.legRules.size, 0, "every source rule removed at stop");
});

test("churn: a long-lived standby keeps its table and rule while hundreds of legs come and go", async () => {
  const r = rig();
  let n = 0;
  const far = (): number => r.clock.monotonic() + 60_000;
  r.legs.start(leg(++n, 1), far()); // the standby that lives through the churn
  await r.clock.advance(150);
  const live: string[] = [];
  for (let round = 0; round < 300; round++) {
    // a race: two or three legs start together, some come up, the losers are stopped
    const racing = [leg(++n, 2), leg(++n, 3), ...(round % 3 === 0 ? [leg(++n, 4)] : [])];
    for (const l of racing) r.legs.start(l, far());
    await r.clock.advance(round % 2 === 0 ? 150 : 60); // odd rounds: stops while still starting
    assertEveryLiveLegRouted(r, `round ${String(round)}`);
    const stops = racing.slice(1).map((l) => r.legs.stop(l.id));
    const winner = racing[0];
    if (winner !== undefined) live.push(winner.id);
    // the previous winner goes away as the new one takes over
    if (live.length > 1) stops.push(r.legs.stop(live.shift() ?? ""));
    await r.clock.advance(10);
    await Promise.all(stops);
    assertEveryLiveLegRouted(r, `round ${String(round)} after stops`);
  }
  await Promise.all(r.legs.stopAll());
  await Promise.all(r.tracked.map((p) => p.catch(() => undefined)));
  assert.equal(r.world.legRules.size, 0, "every source rule removed at the end");
});

test("a slot is released only after its leg's teardown finished, and exhaustion fails the new leg clearly", async () => {
  const slots = new LegSlots(2);
  const r = rig(slots);
  const deadline = r.clock.monotonic() + 10_000;
  r.legs.start(leg(1, 1), deadline);
  r.legs.start(leg(2, 2), deadline);
  await r.clock.advance(150);
  assert.equal(slots.inUse, 2);
  // a third leg finds no free slot: it fails at once, reported, and touches nobody's rule
  r.legs.start(leg(3, 3), deadline);
  await r.clock.settle();
  const failed = r.inputs.find((i) => i.type === "leg-failed" && i.legId === "L3");
  assert.ok(failed?.type === "leg-failed" && /no routing slot free/.test(failed.message), JSON.stringify(failed));
  assertEveryLiveLegRouted(r, "after exhaustion");
  // stopping a leg hands its slot back once its rule is gone
  await r.legs.stop("L1");
  assert.equal(slots.inUse, 1);
  r.legs.start(leg(4, 3), deadline);
  await r.clock.advance(150);
  assertEveryLiveLegRouted(r, "after reuse");
  await Promise.all(r.legs.stopAll());
  assert.equal(slots.inUse, 0);
  assert.equal(r.world.legRules.size, 0);
});

/** An engine that gets its device up, has the caller route it, and then never sees an echo reply. */
class NoEchoEngine implements TunnelEngine {
  readonly protocol = "wireguard" as const;
  readonly pid = null;
  readonly #hub = new EventHub();
  readonly #address: string;
  constructor(address: string) {
    this.#address = address;
  }
  async start(_deadlineAt: number, _signal?: AbortSignal, hooks: EngineStartHooks = {}): Promise<never> {
    await hooks.beforeProbe?.({ ifname: "dlr-noecho", address: this.#address });
    throw new EngineError("timeout", "no echo reply through dlr-noecho before the deadline");
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  stats(): Promise<never> {
    return Promise.reject(new Error("not up"));
  }
  onEvent(listener: Parameters<TunnelEngine["onEvent"]>[0]): () => void {
    return this.#hub.on(listener);
  }
}

test("a leg's source rule is in before its first echo and gone, slot released, when no echo comes back", async () => {
  const slots = new LegSlots();
  let n = 0;
  const r = rig(slots, () => ({
    create: () => new NoEchoEngine(`10.66.0.${String(++n)}`),
    launchSpare: () => Promise.reject(new Error("no spares here")),
  }));
  r.legs.start(leg(1, 1), r.clock.monotonic() + 10_000);
  await r.clock.settle();
  const steps = r.world.calls.map((c) => c.step);
  assert.deepEqual(steps, ["routes.legSource", "routes.legSourceRemove"], "installed before the echo, then removed");
  assert.ok(r.inputs.some((i) => i.type === "leg-failed" && i.legId === "L1" && i.code === "timeout"));
  assert.equal(r.world.legRules.size, 0, "no rule left behind");
  assert.equal(slots.inUse, 0, "slot released after the teardown");
  assert.equal(r.legs.size, 0);
});

test("a leg whose path swallows every usable size fails before it counts as up; its rival comes up lowered", async () => {
  const set = new Map<string, number>();
  // gw1's path carries nothing of 1280 bytes (small echoes cross); gw2's carries 1340.
  const limits: Record<string, number> = {};
  const r = rig(undefined, undefined, (clock, log) => {
    const guard = new PathMtuGuard(
      {
        probeTarget: () => "198.19.0.1",
        ifnamePrefix: "dlr",
        clock,
        log,
        track: () => undefined,
        report: () => undefined,
        blackHole: () => undefined,
      },
      {
        probeSize: (p) => Promise.resolve(p.size <= (limits[p.ifname] ?? 1500)),
        setLinkMtu: (ifname, mtu) => {
          set.set(ifname, mtu);
          return Promise.resolve();
        },
        applyMssClamp: () => Promise.resolve(),
      },
    );
    return guard;
  });
  const deadline = r.clock.monotonic() + 10_000;
  r.legs.start(leg(1, 1), deadline);
  r.legs.start(leg(2, 2), deadline);
  const dev = (id: string): string => `dlr-${id.toLowerCase()}`;
  limits[dev("L1")] = 1200;
  limits[dev("L2")] = 1340;
  await r.clock.advance(200);
  await Promise.all(r.tracked);
  await r.clock.advance(50);
  const failed = r.inputs.find((i) => i.type === "leg-failed" && i.legId === "L1");
  assert.ok(failed?.type === "leg-failed", `L1 failed: ${JSON.stringify(r.inputs)}`);
  assert.equal(failed.code, "unreachable");
  assert.match(failed.message, /path MTU black hole/);
  assert.equal(r.inputs.filter((i) => i.type === "leg-up" && i.legId === "L1").length, 0, "L1 never counted as up");
  assert.equal(r.inputs.filter((i) => i.type === "leg-up" && i.legId === "L2").length, 1);
  assert.equal(set.get(dev("L2")), 1340, "L2's device was lowered to what its path carries");
  await Promise.all(r.legs.stopAll());
  assert.equal(r.legs.get("L1"), undefined, "the black-holed leg was stopped");
  assert.equal(r.world.legRules.size, 0);
});
