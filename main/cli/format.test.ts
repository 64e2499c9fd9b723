/** Human output of `detour`, as a user reads it: status in each state, the race table, the failover line, events. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ConnectionEvent, FailoverRecord, RaceRecord } from "../core/connection/types.ts";
import { initialKillSwitchStatus } from "../core/killswitch-status.ts";
import type { StatusPayload } from "../core/protocol/messages.ts";
import {
  formatDuration,
  formatEvent,
  formatFailover,
  formatGateways,
  formatKillSwitch,
  formatLastRace,
  formatRace,
  formatSleep,
  formatStatus,
  table,
  utcClock,
} from "./format.ts";

/** 2026-01-02T10:00:00.000Z: every time below is an offset from it. */
const T0 = Date.UTC(2026, 0, 2, 10, 0, 0);
const opts = { now: T0 + 150_000, clock: utcClock };

const RACE: RaceRecord = {
  id: "R3",
  reason: "connect",
  startedAt: T0,
  endedAt: T0 + 412,
  winner: { id: "L7", gateway: "gw1", kind: "wireguard" },
  legs: [
    {
      leg: { id: "L7", gateway: "gw1", kind: "wireguard" },
      outcome: "won",
      startedAt: T0,
      endedAt: T0 + 180,
      error: null,
    },
    {
      leg: { id: "L8", gateway: "gw1", kind: "ikev2" },
      outcome: "cancelled",
      startedAt: T0 + 250,
      endedAt: T0 + 412,
      error: null,
    },
    {
      leg: { id: "L9", gateway: "gw2", kind: "anyconnect-tls" },
      outcome: "failed",
      startedAt: T0 + 300,
      endedAt: T0 + 340,
      error: { code: "unreachable", message: "connection\nrefused" },
    },
    {
      leg: { id: "L10", gateway: "gw3", kind: "anyconnect-dtls" },
      outcome: "pending",
      startedAt: null,
      endedAt: null,
      error: null,
    },
  ],
};

const FAILOVER: FailoverRecord = {
  from: { gateway: "gw2", kind: "ikev2" },
  to: { gateway: "gw1", kind: "wireguard" },
  reason: "no reply for 600 ms",
  via: "race",
  lastReplyAt: T0 - 1000,
  detectedAt: T0 - 388,
  restoredAt: T0 - 155,
  detectedAfterMs: 612,
  restoredAfterMs: 845,
};

const DAEMON = { version: "0.1.0", pid: 4242, startedAt: T0 - 3_720_000, configPath: "/etc/detour/client.json" };

const CONNECTED: StatusPayload = {
  state: "connected",
  summary: "Connected to gw1 over WireGuard; gw2 stopped answering 2 minutes ago.",
  gateway: "gw1",
  protocol: "wireguard",
  activeLegId: "L7",
  standby: null,
  since: T0 + 412,
  candidates: [],
  lastRace: RACE,
  lastFailover: FAILOVER,
  error: null,
  daemon: DAEMON,
};

const FAILING_OVER: StatusPayload = {
  ...CONNECTED,
  state: "failing-over",
  summary: "gw1 stopped answering 640 ms ago; racing gw2 and gw3.",
  since: T0 + 149_360,
  lastRace: {
    ...RACE,
    id: "R4",
    reason: "failover",
    startedAt: T0 + 149_400,
    endedAt: null,
    winner: null,
    legs: [
      {
        leg: { id: "L11", gateway: "gw2", kind: "wireguard" },
        outcome: "starting",
        startedAt: T0 + 149_400,
        endedAt: null,
        error: null,
      },
    ],
  },
};

const ERROR: StatusPayload = {
  ...CONNECTED,
  state: "error",
  summary: "No gateway could be reached; retrying in 4 s.",
  gateway: null,
  protocol: null,
  activeLegId: null,
  since: T0 + 140_000,
  lastFailover: null,
  error: { reason: "every leg failed: 3 unreachable, 1 timeout", nextRetryAt: T0 + 154_000 },
};

const DISCONNECTED: StatusPayload = {
  state: "disconnected",
  summary: "Not connected.",
  gateway: null,
  protocol: null,
  activeLegId: null,
  standby: null,
  since: null,
  candidates: [],
  lastRace: null,
  lastFailover: null,
  error: null,
  daemon: DAEMON,
};

const RACE_TABLE = [
  "  leg  gateway  protocol         start    end      outcome    error",
  "  L7   gw1      wireguard        +0 ms    +180 ms  won",
  "  L8   gw1      ikev2            +250 ms  +412 ms  cancelled",
  "  L9   gw2      anyconnect-tls   +300 ms  +340 ms  failed     unreachable: connection refused",
  "  L10  gw3      anyconnect-dtls  -        -        pending",
];
const DAEMON_LINE = "  daemon    detourd 0.1.0, pid 4242, up 1h 04m, config /etc/detour/client.json";
const FAILOVER_LINE =
  "gw2 ikev2 -> gw1 wireguard, reason: no reply for 600 ms, detected after 612 ms, restored after 845 ms";

describe("status", () => {
  test("connected-shows-the-summary-first-then-the-fields-the-last-race-and-the-last-failover", () => {
    assert.equal(
      formatStatus(CONNECTED, opts),
      [
        "Connected to gw1 over WireGuard; gw2 stopped answering 2 minutes ago.",
        "",
        "  state     connected",
        "  gateway   gw1",
        "  protocol  wireguard (WireGuard)",
        "  since     2m 29s (at 10:00:00.412)",
        DAEMON_LINE,
        "",
        "last race R3 (connect) at 10:00:00.000, took 412 ms, winner gw1 wireguard",
        ...RACE_TABLE,
        `last failover: ${FAILOVER_LINE} (at 09:59:59.612)`,
        "",
      ].join("\n"),
    );
  });

  test("failing-over-shows-the-race-still-running", () => {
    assert.equal(
      formatStatus(FAILING_OVER, opts),
      [
        "gw1 stopped answering 640 ms ago; racing gw2 and gw3.",
        "",
        "  state     failing-over",
        "  gateway   gw1",
        "  protocol  wireguard (WireGuard)",
        "  since     640 ms (at 10:02:29.360)",
        DAEMON_LINE,
        "",
        "last race R4 (failover) at 10:02:29.400, running for 600 ms, no winner yet",
        "  leg  gateway  protocol   start  end  outcome   error",
        "  L11  gw2      wireguard  +0 ms  -    starting",
        `last failover: ${FAILOVER_LINE} (at 09:59:59.612)`,
        "",
      ].join("\n"),
    );
  });

  test("error-shows-the-reason-and-when-the-next-retry-comes", () => {
    assert.equal(
      formatStatus(ERROR, opts),
      [
        "No gateway could be reached; retrying in 4 s.",
        "",
        "  state     error",
        "  gateway   -",
        "  protocol  -",
        "  since     10 s (at 10:02:20.000)",
        "  error     every leg failed: 3 unreachable, 1 timeout; next retry in 4.0 s",
        DAEMON_LINE,
        "",
        "last race R3 (connect) at 10:00:00.000, took 412 ms, winner gw1 wireguard",
        ...RACE_TABLE,
        "last failover: none",
        "",
      ].join("\n"),
    );
  });

  test("disconnected-says-none-for-what-has-not-happened", () => {
    assert.equal(
      formatStatus(DISCONNECTED, opts),
      [
        "Not connected.",
        "",
        "  state     disconnected",
        "  gateway   -",
        "  protocol  -",
        "  since     -",
        DAEMON_LINE,
        "",
        "last race: none",
        "last failover: none",
        "",
      ].join("\n"),
    );
  });

  test("the-standby-the-tunnel-numbers-and-the-telemetry-export-get-a-line-each", () => {
    const text = formatStatus(
      {
        ...CONNECTED,
        standby: { gateway: "gw2", protocol: "ikev2", legId: "L9", lastReplyAt: opts.now - 120 },
        telemetry: {
          rttMs: 18.24,
          rttP95Ms: 25,
          jitterMs: 1.5,
          lossPct: 0.5,
          samples: 200,
          reachability: [],
          export: {
            endpoint: "https://collector.example.com",
            deviceId: "d",
            policyHash: "h",
            pending: 3,
            dropped: 0,
            rejected: 0,
            delivered: 10,
            lastDeliveredAt: opts.now - 5000,
            lastError: "collector answered 503: busy",
            nextAttemptAt: opts.now + 1000,
          },
        },
      },
      opts,
    );
    assert.match(text, /\n {2}standby +gw2 ikev2 \(IKEv2\), last reply 120 ms ago\n/);
    assert.match(text, /\n {2}tunnel +RTT 18\.2 ms \(p95 25\.0 ms\), jitter 1\.5 ms, loss 0\.5 % over 200 probes\n/);
    assert.match(
      text,
      /\n {2}telemetry +to https:\/\/collector\.example\.com: 3 waiting, last delivered 5\.0 s ago; collector answered 503: busy\n/,
    );
  });
});

describe("race and failover", () => {
  test("race-table-has-every-leg-with-times-relative-to-the-race-start-and-its-outcome", () => {
    assert.equal(
      formatLastRace(RACE, opts),
      ["race R3 (connect) at 10:00:00.000, took 412 ms, winner gw1 wireguard", ...RACE_TABLE, ""].join("\n"),
    );
    assert.equal(formatLastRace(null, opts), "no race yet\n");
    assert.equal(
      formatRace({ ...RACE, winner: null, legs: [] }, opts)[0],
      "race R3 (connect) at 10:00:00.000, took 412 ms, no winner",
    );
  });

  test("failover-line-says-from-to-why-and-how-long", () => {
    assert.equal(formatFailover(FAILOVER), FAILOVER_LINE);
    assert.equal(
      formatFailover({ ...FAILOVER, to: null, restoredAt: null, restoredAfterMs: null }),
      "gw2 ikev2 -> nothing (no healthy gateway), reason: no reply for 600 ms, detected after 612 ms, not restored yet",
    );
  });
});

describe("gateways and events", () => {
  test("gateways-table-in-ranking-order", () => {
    const text = formatGateways({
      candidates: [
        {
          rank: 1,
          name: "gw1",
          hostname: "gw1.lab",
          address: "198.18.1.2",
          priority: 10,
          region: "eu-central",
          kinds: ["wireguard", "ikev2"],
          sources: ["config", "dns"],
          probe: { at: T0, latencyMs: 1.25, reachable: { wireguard: "unknown", ikev2: "unknown" } },
        },
        {
          rank: 2,
          name: "gw2",
          hostname: "gw2.lab",
          address: null,
          priority: 20,
          region: "eu-west",
          kinds: ["anyconnect-tls"],
          sources: ["dns"],
          probe: { at: T0, latencyMs: null, reachable: { "anyconnect-tls": "no" } },
        },
        {
          rank: 3,
          name: "gw3",
          hostname: "gw3.lab",
          address: "198.18.3.2",
          priority: 30,
          region: "us",
          kinds: ["anyconnect-tls"],
          sources: ["portal"],
          probe: null,
        },
      ],
    });
    assert.equal(
      text,
      [
        "rank  gateway  address       region      priority  latency     reachable                        from",
        "1     gw1      198.18.1.2    eu-central  10        1.3 ms      wireguard:unknown ikev2:unknown  config,dns",
        "2     gw2      (unresolved)  eu-west     20        no answer   anyconnect-tls:no                dns",
        "3     gw3      198.18.3.2    us          30        not probed  anyconnect-tls:?                 portal",
        "",
      ].join("\n"),
    );
    assert.equal(formatGateways({ candidates: [] }), "no gateway candidates\n");
  });

  test("one-line-per-event-with-its-time", () => {
    const lines = (
      [
        { type: "state", at: T0, state: "racing", detail: "3 gateways" },
        {
          type: "race-started",
          at: T0 + 1,
          raceId: "R3",
          reason: "connect",
          legs: RACE.legs.slice(0, 2).map((l) => l.leg),
        },
        { type: "leg", at: T0 + 340, raceId: "R3", record: RACE.legs[2] ?? assert.fail() },
        { type: "leg", at: T0 + 180, raceId: "R3", record: RACE.legs[0] ?? assert.fail() },
        { type: "race-ended", at: T0 + 412, race: RACE },
        { type: "race-ended", at: T0 + 412, race: { ...RACE, winner: null } },
        { type: "failover", at: T0 + 900, failover: FAILOVER },
        { type: "health", at: T0 + 1000, legId: "L7", verdict: { state: "healthy" } },
        {
          type: "health",
          at: T0 + 1000,
          legId: "L7",
          verdict: { state: "brownout", reason: "loss 30 %", lastReplyAt: T0 },
        },
        { type: "state", at: T0, state: "disconnected", detail: "" },
      ] satisfies ConnectionEvent[]
    ).map((e) => formatEvent(e, { clock: utcClock }));
    assert.deepEqual(lines, [
      "10:00:00.000  state     racing: 3 gateways",
      "10:00:00.001  race      R3 started (connect): L7 gw1 wireguard, L8 gw1 ikev2",
      "10:00:00.340  leg       R3 L9 gw2 anyconnect-tls failed after 40 ms (unreachable: connection refused)",
      "10:00:00.180  leg       R3 L7 gw1 wireguard won after 180 ms",
      "10:00:00.412  race      R3 ended after 412 ms: winner gw1 wireguard",
      "10:00:00.412  race      R3 ended after 412 ms: no winner (1 of 4 legs failed)",
      `10:00:00.900  failover  ${FAILOVER_LINE}`,
      "10:00:01.000  health    L7 healthy",
      "10:00:01.000  health    L7 brownout: loss 30 %",
      "10:00:00.000  state     disconnected",
    ]);
  });
});

describe("helpers", () => {
  test("durations-read-naturally-at-every-scale", () => {
    const cases: [number, string][] = [
      [0, "0 ms"],
      [1.25, "1.3 ms"],
      [999, "999 ms"],
      [1000, "1.0 s"],
      [4250, "4.3 s"],
      [42_000, "42 s"],
      [134_000, "2m 14s"],
      [3_720_000, "1h 02m"],
      [273_600_000, "3d 04h"],
      [-1500, "-1.5 s"],
      [Number.NaN, "?"],
    ];
    for (const [ms, text] of cases) assert.equal(formatDuration(ms), text, String(ms));
  });

  test("table-aligns-columns-without-trailing-spaces", () => {
    assert.deepEqual(
      table(
        [
          ["a", "bb", ""],
          ["ccc", "d", "e"],
        ],
        "",
      ),
      ["a    bb", "ccc  d   e"],
    );
  });
});

test("the-kill-switch-line-says-plainly-when-it-is-not-in-force", () => {
  const k = initialKillSwitchStatus();
  assert.equal(
    formatKillSwitch({ ...k, state: "in-force", mode: "blocking", ownGroup: 64950 }, opts),
    "in force (blocking); own traffic bound to gid 64950",
  );
  assert.equal(
    formatKillSwitch(
      {
        ...k,
        state: "fallback",
        mode: "blocking",
        applyFailures: 2,
        restorations: 1,
        lastError: "command failed (exit 1): nft -f -\nError: syntax error",
        nextRetryAt: opts.now + 500,
      },
      opts,
    ),
    "FALLBACK: everything but detourd's own traffic blocked; restored 1x after others changed it; 2 failed applies; " +
      "last error: command failed (exit 1): nft -f - Error: syntax error; next retry in 500 ms",
  );
  assert.match(formatKillSwitch({ ...k, state: "failed", lastError: "nft: not found" }, opts), /^FAILED: not in force/);
});

test("status-says-sign-in-to-this-network-with-the-page-and-the-exception", () => {
  const out = formatStatus(
    {
      ...ERROR,
      captive: {
        state: "sign-in-required",
        reason: "the check URL was redirected to http://198.18.205.1/signin",
        portalUrl: "http://198.18.205.1/signin",
        checkedAt: T0,
        checks: 1,
        exception: {
          state: "open",
          openedAt: T0,
          closesAt: T0 + 300_000,
          portalAddresses: ["198.18.205.1"],
          resolvers: ["198.18.53.2"],
          closedReason: null,
          opened: 1,
        },
      },
    },
    opts,
  );
  assert.match(
    out,
    /network +Sign in to this network: the check URL was redirected to http:\/\/198\.18\.205\.1\/signin/,
  );
  assert.match(out, /sign-in page +http:\/\/198\.18\.205\.1\/signin/);
  assert.match(out, /sign-in exception +open until .*: DNS to 198\.18\.53\.2, HTTP\(S\) to 198\.18\.205\.1/);
  assert.doesNotMatch(formatStatus(ERROR, opts), /Sign in/);
  // The same label and line as the tray and the window, with the time left to sign in.
  assert.equal(
    out.split("\n")[0],
    "Sign in to this network: The check URL was redirected to http://198.18.205.1/signin. Sign in within 2m 30s (until 10:05:00.000); Detour connects by itself once you have.",
  );
  assert.match(out, /state +error \(Sign in to this network\)/);
  assert.match(out, /sign-in exception +open until 10:05:00\.000 \(2m 30s left\)/);
});

test("status-says-waiting-for-a-network-and-that-detour-connects-by-itself", () => {
  const out = formatStatus(
    { ...DISCONNECTED, state: "waiting-for-network", summary: "Waiting for a network: no route to any gateway" },
    opts,
  );
  assert.equal(
    out.split("\n")[0],
    "Waiting for a network: No route to any gateway from this computer: Detour connects by itself as soon as a network is back.",
  );
  assert.match(out, /^ {2}state +waiting-for-network \(Waiting for a network\)$/m);
});

test("status-on-a-trusted-network-leads-with-it-and-names-the-rule", () => {
  const out = formatStatus(
    {
      ...DISCONNECTED,
      trusted: {
        configured: true,
        policy: "disconnect",
        trusted: true,
        rule: "office",
        reason: 'trusted network "office": DNS matches and 10.0.0.5:443 answered with a pinned key',
        checkedAt: T0,
        heldDown: true,
        alwaysOn: false,
        allowDisconnect: false,
      },
    },
    opts,
  );
  assert.equal(
    out.split("\n")[0],
    'On a trusted network: This network matches trusted network "office": Detour stays disconnected here and connects by itself when you leave it.',
  );
  assert.match(out, /^ {2}state +disconnected \(On a trusted network\)$/m);
  assert.match(out, /network +On trusted network office: Detour stays disconnected here\. Always on: /);
});

test("status-lists-the-local-networks-allowed-outside-the-tunnel-and-the-refused-ones", () => {
  const base = {
    mode: "auto" as const,
    enabled: true,
    allowed: [
      { prefix: "172.17.0.0/16", dev: "docker0", kind: "bridge" as const },
      { prefix: "192.168.1.0/24", dev: "wlan0", kind: "connected" as const },
    ],
    refused: [{ prefix: "10.0.0.0/7", dev: "eth1", kind: "connected" as const, reason: "too wide" }],
    changedAt: T0,
    changes: 1,
    lastError: null,
  };
  const out = formatStatus({ ...ERROR, localNetworks: base }, opts);
  assert.match(
    out,
    /local networks +allowed outside the tunnel: 172\.17\.0\.0\/16 on docker0 \(bridge\), 192\.168\.1\.0\/24 on wlan0; 1 refused \(below\)/,
  );
  assert.match(out, /refused local network 10\.0\.0\.0\/7 on eth1: too wide/);
  const quiet = formatStatus({ ...ERROR, localNetworks: { ...base, allowed: [], refused: [] } }, opts);
  assert.doesNotMatch(quiet, /local networks/, "nothing to say when no protected network covers a local one");
  const off = formatStatus({ ...ERROR, localNetworks: { ...base, mode: "off", enabled: false } }, opts);
  assert.match(off, /local networks +not allowed \(setting off\)/);
});

test("status-says-how-sleep-is-detected-and-when-it-last-woke", () => {
  const sleep = {
    sources: ["clock", "logind"] as ("clock" | "logind")[],
    logind: "listening" as const,
    logindDetail: "org.freedesktop.login1 is :1.2",
    lastSleepAt: T0,
    lastWake: { at: T0 + 90_000, source: "logind" as const, sleptMs: 300_000 },
    absorbed: 1,
    watcherDeaths: 0,
    impostors: 0,
  };
  const monitor = { online: true, lastChange: null, changes: 0, watcherDeaths: 0, wakes: 1, sleep };
  const out = formatStatus({ ...CONNECTED, network: { id: null, remembered: null, monitor } }, opts);
  assert.match(out, /sleep +logind and the clocks; last wake 1m 00s ago \(logind, slept 5m 00s\)/);
  assert.equal(
    formatSleep(
      {
        ...sleep,
        logind: "unavailable",
        logindDetail: "no system bus at /run/dbus/system_bus_socket",
        lastWake: null,
        impostors: 3,
        watcherDeaths: 1,
      },
      opts,
    ),
    "the clocks only (logind unavailable: no system bus at /run/dbus/system_bus_socket); no wake yet; watcher restarted 1x; 3 forged signal(s) ignored",
  );
  assert.doesNotMatch(formatStatus(CONNECTED, opts), /^sleep/m);
});

test("crash-protection-not-in-force-is-a-status-row-and-an-event-line-naming-the-file-and-code", () => {
  const failedCopies = [
    { path: "/var/lib/detour/owned.json", code: "ENOSPC", message: "cannot write /var/lib/detour/owned.json" },
    { path: "/run/detour/legs/owned.json", code: "EIO", message: "cannot write /run/detour/legs/owned.json" },
  ];
  const lost = formatStatus(
    {
      ...CONNECTED,
      daemon: {
        ...CONNECTED.daemon,
        recovery: {
          reclaimed: [],
          reclaimFailed: [],
          recordError: null,
          recordWriteFailures: 4,
          lastRecordWriteError: "cannot write /run/detour/legs/owned.json: EIO",
          faults: 0,
          lastFault: null,
          crashProtection: { inForce: false, failedCopies, retries: 1, nextRetryAt: opts.now + 2_000 },
        },
      },
    },
    opts,
  );
  assert.match(
    lost,
    /crash protection +NOT in force \(a crash now lifts the kill switch\): not written to \/var\/lib\/detour\/owned\.json: ENOSPC; \/run\/detour\/legs\/owned\.json: EIO; retry 2 in 2.0 s/,
  );
  assert.doesNotMatch(formatStatus(CONNECTED, opts), /crash protection/, "nothing to say while it is in force");
  assert.match(
    formatEvent(
      { type: "crash-protection", at: T0, inForce: false, detail: "/var/lib/detour/owned.json: ENOSPC" },
      opts,
    ),
    /crash +protection NOT in force: \/var\/lib\/detour\/owned\.json: ENOSPC/,
  );
});
