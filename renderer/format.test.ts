import assert from "node:assert/strict";
import { test } from "node:test";
import {
  duration,
  eventText,
  failoverText,
  health,
  latestReading,
  localNetworksText,
  minutesLeft,
  pushSample,
  raceText,
} from "./format.ts";

test("durations-read-like-a-person-would-say-them", () => {
  assert.equal(duration(850), "850 ms");
  assert.equal(duration(4200), "4.2 s");
  assert.equal(duration(134_000), "2 min 14 s");
  assert.equal(duration(3_720_000), "1 h 02 min");
});

test("the-timeline-says-why-the-user-is-on-this-gateway", () => {
  const f = {
    from: { gateway: "gw1", kind: "wireguard" as const },
    to: { gateway: "gw2", kind: "ikev2" as const },
    reason: "dead: no reply for 600 ms",
    via: "standby" as const,
    lastReplyAt: 0,
    detectedAt: 600,
    restoredAt: 640,
    detectedAfterMs: 600,
    restoredAfterMs: 640,
  };
  assert.equal(
    failoverText(f),
    "Moved from gw1 over WireGuard to gw2 over IKEv2: dead: no reply for 600 ms; detected after 600 ms, traffic restored after 640 ms (warm standby).",
  );
  const race = {
    id: "R1",
    reason: "connect" as const,
    startedAt: 0,
    endedAt: 180,
    winner: { id: "L1", gateway: "gw1", kind: "wireguard" as const },
    legs: [
      {
        leg: { id: "L1", gateway: "gw1", kind: "wireguard" as const },
        outcome: "won" as const,
        startedAt: 0,
        endedAt: 180,
        error: null,
      },
    ],
  };
  assert.equal(raceText(race), "Race to connect: 1 leg, gw1 over WireGuard won in 180 ms.");
  assert.equal(
    eventText({ type: "state", at: 1, state: "connected", detail: "Connected to gw1 over WireGuard" }),
    "Connected to gw1 over WireGuard.",
  );
  assert.equal(eventText({ type: "health", at: 1, legId: "L1", verdict: { state: "healthy" } }), null);
});

test("health-comes-from-the-last-probe", () => {
  const c = {
    name: "gw1",
    hostname: "h",
    address: null,
    priority: 1,
    region: "eu",
    kinds: ["wireguard" as const],
    sources: ["config" as const],
    probe: null,
  };
  assert.equal(health(c), "not checked yet");
  assert.equal(health({ ...c, probe: { at: 1, latencyMs: 3, reachable: { wireguard: "unknown" } } }), "reachable");
  assert.equal(health({ ...c, probe: { at: 1, latencyMs: null, reachable: { wireguard: "no" } } }), "unreachable");
});

test("time-left-in-a-live-region-changes-once-a-minute", () => {
  assert.equal(minutesLeft(299_000), "5 min");
  assert.equal(minutesLeft(240_001), "5 min");
  assert.equal(minutesLeft(240_000), "4 min");
  assert.equal(minutesLeft(59_000), "under a minute");
  assert.equal(minutesLeft(0), "no time");
});

test("the-sparkline-window-keeps-the-newest-samples", () => {
  let w: (number | null)[] = [];
  for (let i = 0; i < 5; i++) w = pushSample(w, i, 3);
  assert.deepEqual(w, [2, 3, 4]);
});

test("the-local-networks-field-names-what-stays-outside-the-tunnel-and-counts-what-was-refused", () => {
  const base = { mode: "auto" as const, enabled: true, changedAt: null, changes: 1, lastError: null };
  assert.deepEqual(localNetworksText(undefined), { text: "-", title: "" });
  assert.deepEqual(
    localNetworksText({
      ...base,
      allowed: [
        { prefix: "172.17.0.0/16", dev: "docker0", kind: "bridge" },
        { prefix: "192.168.1.0/24", dev: "wlan0", kind: "connected" },
      ],
      refused: [
        {
          prefix: "10.20.5.0/24",
          dev: "wlan0",
          kind: "connected",
          reason: "it lies inside the protected network 10.20.0.0/16",
        },
      ],
    }),
    {
      text: "172.17.0.0/16 on docker0 (bridge), 192.168.1.0/24 on wlan0; 1 refused",
      title: "10.20.5.0/24 on wlan0 refused: it lies inside the protected network 10.20.0.0/16",
    },
  );
  assert.equal(localNetworksText({ ...base, allowed: [], refused: [] }).text, "none needed here");
  assert.match(localNetworksText({ ...base, enabled: false, allowed: [], refused: [] }).text, /through the tunnel/);
  assert.match(localNetworksText({ ...base, allowed: [], refused: [], lastError: "ip failed" }).text, /cannot read/);
});

test("a-chart-whose-latest-reading-is-missing-says-so-rather-than-no-data-beside-a-drawn-line", () => {
  assert.equal(latestReading([], "ms"), "no data");
  assert.equal(latestReading([null, null], "ms"), "no data");
  assert.equal(latestReading([12.34, null], "ms"), "no reading now");
  assert.equal(latestReading([null, 12.34], "ms"), "12.3 ms");
  assert.equal(latestReading([0], "%"), "0.0 %");
});
