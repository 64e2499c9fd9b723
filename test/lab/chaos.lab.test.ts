/**
 * The 3-minute chaos soak with a fixed seed (the bench runs the 30-minute one): gateways killed and flapping,
 * protocols blocked, loss and delay bursts, engines and detourd SIGKILLed, the firewall flushed and resolv.conf
 * overwritten, while the router counts leaks. It asserts what three minutes can show: nothing leaked, nothing
 * left behind, no invariant broken, connected whenever a gateway was healthy (outside the recovery grace), and
 * the failovers the 30-minute goal asks for, scaled down.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, test } from "node:test";
import { runChaos, type ChaosReport } from "./chaos.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";

const ID = "xchaos";
/** The seed whose schedule holds every fault kind within three minutes (see the printed schedule). */
const SEED = 63;
const DURATION_MS = 3 * 60_000;
/** The soak plus building the lab, the first connect, the healed end and a clean stop on a loaded machine. */
const TEST_TIMEOUT_MS = DURATION_MS + 5 * 60_000;

after(async () => {
  await lab.down(ID);
});

test(
  "a-3-minute-seeded-chaos-soak-leaks-nothing-leaves-nothing-and-keeps-every-invariant",
  { timeout: TEST_TIMEOUT_MS },
  async () => {
    const r: ChaosReport = await runChaos({
      id: ID,
      durationMs: DURATION_MS,
      seed: SEED,
      log: (l) => {
        console.log(l);
      },
      artifactsDir: join(REPO_ROOT, "test-artifacts"),
    });
    console.log(r.markdown);
    assert.deepEqual(await lab.leftovers(ID), [], "the soak's lab is gone");
    const kinds = new Set(r.schedule.map((s) => s.fault.kind));
    assert.equal(kinds.size, 9, `the seed exercises every fault kind (${[...kinds].join(", ")})`);
    // Every goal is judged before the test fails, so one run names every broken one.
    const failed = [
      ...(r.leaked === 0 ? [] : [`${r.leaked} packet(s) to corp left the client outside a tunnel`]),
      ...r.leftovers.map((l) => `left behind: ${l}`),
      ...r.violations.map((v) => `violation ${v.kind}: ${v.detail}`),
      ...(r.connectedOwedPct >= 99.5 ? [] : [`connected only ${r.connectedOwedPct.toFixed(2)} % of the owed time`]),
      ...(r.failovers >= r.failoversGoal ? [] : [`${r.failovers} failovers, goal ${r.failoversGoal}`]),
    ];
    assert.deepEqual(failed, [], "the soak's goals: no leak, nothing left behind, no violation, connected, failovers");
  },
);
