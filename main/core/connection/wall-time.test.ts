import assert from "node:assert/strict";
import { test } from "node:test";
import type { ConnectionSnapshot, FailoverRecord, RaceRecord } from "./types.ts";
import { eventAtWall, snapshotAtWall } from "./wall-time.ts";

const OFFSET = 1_700_000_000_000;
const race: RaceRecord = {
  id: "R1",
  reason: "connect",
  startedAt: 100.4,
  endedAt: 250.6,
  winner: { id: "L1", gateway: "gw1", kind: "wireguard" },
  legs: [
    {
      leg: { id: "L1", gateway: "gw1", kind: "wireguard" },
      outcome: "won",
      startedAt: 100.4,
      endedAt: 250.6,
      error: null,
    },
  ],
};
const failover: FailoverRecord = {
  from: { gateway: "gw1", kind: "wireguard" },
  to: { gateway: "gw2", kind: "ikev2" },
  reason: "dead",
  via: "standby",
  lastReplyAt: 1000,
  detectedAt: 1600,
  restoredAt: 1650,
  detectedAfterMs: 600,
  restoredAfterMs: 650,
};

test("records-read-in-wall-time-keep-their-durations", () => {
  const e = eventAtWall({ type: "race-ended", at: 250.6, race }, OFFSET);
  assert.equal(e.at, OFFSET + 251, "whole epoch milliseconds");
  if (e.type !== "race-ended") throw new Error("type");
  assert.equal(e.race.startedAt, OFFSET + 100);
  assert.equal(e.race.legs[0]?.endedAt, OFFSET + 251);
  const f = eventAtWall({ type: "failover", at: 1600, failover }, OFFSET);
  if (f.type !== "failover") throw new Error("type");
  assert.deepEqual(
    [f.failover.lastReplyAt, f.failover.detectedAt, f.failover.restoredAt],
    [OFFSET + 1000, OFFSET + 1600, OFFSET + 1650],
  );
  assert.equal(f.failover.detectedAfterMs, 600, "a duration is not an instant");
  const h = eventAtWall(
    { type: "health", at: 2000, legId: "L1", verdict: { state: "dead", reason: "x", lastReplyAt: 1400 } },
    OFFSET,
  );
  assert.deepEqual(h.type === "health" ? h.verdict : null, { state: "dead", reason: "x", lastReplyAt: OFFSET + 1400 });
});

test("a-snapshot-in-wall-time-shifts-every-instant-and-nothing-else", () => {
  const s: ConnectionSnapshot = {
    state: "error",
    summary: "No gateway reachable; retrying in 2 s",
    gateway: null,
    protocol: null,
    activeLegId: null,
    standby: null,
    since: 5000,
    candidates: [],
    lastRace: race,
    lastFailover: failover,
    error: { reason: "No gateway reachable", nextRetryAt: 7000 },
  };
  const w = snapshotAtWall(s, OFFSET);
  assert.equal(w.since, OFFSET + 5000);
  assert.equal(w.error?.nextRetryAt, OFFSET + 7000);
  assert.equal(w.lastRace?.endedAt, OFFSET + 251);
  assert.equal(w.summary, s.summary);
  assert.deepEqual(
    snapshotAtWall({ ...s, since: null, lastRace: null, lastFailover: null, error: null }, OFFSET).since,
    null,
  );
});
