/**
 * Candidate refresh while a race runs: a gateway that stopped answering since its last probe (a failover race after
 * a connected period plans from answers up to 30 s old) is probed again and reported silent, so the machine ranks
 * it behind the gateways that answer.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import { testConfig } from "../../test/fakes/config.ts";
import type { Candidate, CandidateProbe, ConnectionStateName, MachineInput } from "../core/connection/types.ts";
import { probedSilent } from "../core/connection/candidates.ts";
import {
  CandidateRefresh,
  RACE_STALE_ANSWER_MS,
  type CandidateFinder,
  type CandidateHost,
} from "./candidate-refresh.ts";
import { createLogger } from "./log.ts";

const answer = (at: number): CandidateProbe => ({
  at,
  latencyMs: 20,
  reachable: { wireguard: "unknown" },
  answered: true,
});
const silence = (at: number): CandidateProbe => ({
  at,
  latencyMs: null,
  reachable: { wireguard: "unknown" },
  answered: false,
});

test("a-race-re-probes-answers-gone-stale-and-reports-a-gateway-that-stopped-answering", async () => {
  const clock = new FakeClock();
  const cfg = testConfig({ gateways: [1, 2, 3] });
  const configured: Candidate[] = cfg.gateways.map((g, i) => ({
    name: g.name,
    hostname: g.name,
    address: `198.18.${String(i + 1)}.2`,
    priority: i + 1,
    region: "eu",
    kinds: ["wireguard"],
    sources: ["config"],
    probe: null,
  }));
  const dead = new Set<string>(["gw3"]);
  const probed: string[][] = [];
  const finder: CandidateFinder = {
    discover: () => Promise.resolve(configured),
    probe: (cs) => {
      probed.push(cs.map((c) => c.name));
      return Promise.resolve(cs.map((c) => (dead.has(c.name) ? silence(clock.wall()) : answer(clock.wall()))));
    },
  };
  let phase: ConnectionStateName = "connected";
  const inputs: MachineInput[] = [];
  const host: CandidateHost = {
    config: () => cfg,
    configured: () => configured,
    stateName: () => phase,
    now: () => clock.monotonic(),
    dispatch: (i) => inputs.push(i),
    refreshKillSwitch: () => undefined,
    bypassNewGateways: () => undefined,
    routesSettled: () => Promise.resolve(),
    localNetworks: () => Promise.resolve(["192.168.1.0/24"]),
    refuse: () => undefined,
    track: () => undefined,
    log: createLogger({ write: () => undefined }),
  };
  const refresh = new CandidateRefresh(host, finder, clock);
  // A recheck while connected: gw1 and gw2 answer, gw3 is silent.
  await refresh.resolve();
  assert.deepEqual(
    refresh.list().map((c) => `${c.name}:${probedSilent(c) ? "silent" : "answered"}`),
    ["gw1:answered", "gw2:answered", "gw3:silent"],
  );
  // gw2 stops answering; a while later gw1 fails and a failover race asks for candidates.
  dead.add("gw2");
  await clock.advance(RACE_STALE_ANSWER_MS + 10_000);
  phase = "failing-over";
  probed.length = 0;
  inputs.length = 0;
  await refresh.resolve();
  assert.deepEqual(probed.flat().sort(), ["gw1", "gw2", "gw3"], "the silent gateway and the stale answers");
  const last = inputs.at(-1);
  assert.ok(last?.type === "candidates");
  const gw2 = last.candidates.find((c) => c.name === "gw2");
  assert.ok(gw2 !== undefined && probedSilent(gw2), "gw2 is reported silent before the race plans on its old answer");
  // Fresh answers are not probed again in the next round: only the silent ones.
  probed.length = 0;
  await refresh.resolve();
  assert.deepEqual(probed.flat().sort(), ["gw2", "gw3"]);
});
