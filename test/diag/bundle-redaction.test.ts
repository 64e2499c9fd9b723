/**
 * A bundle built from planted secrets of every kind (config SecretRefs, a log line, engine output, the
 * environment) holds none of them in any file, byte for byte; pseudonyms agree across files; the manifest
 * verifies, and an edited bundle does not.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, test } from "node:test";
import { parseConfig } from "../../main/core/config/schema.ts";
import type { ConnectionEvent } from "../../main/core/connection/types.ts";
import { base64ToHex } from "../../main/core/diag/redact.ts";
import { readBundle } from "../../main/cli/diag-archive.ts";
import { createBundle, type DiagInputs } from "../../main/agent/diag/bundle.ts";
import { bundleSummary } from "../../main/collector/bundle-summary.ts";
import { renderSummaryHtml } from "../../main/core/diag/summary.ts";

const tmp = mkdtempSync(join(tmpdir(), "detour-diag-test-"));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

const WG_PRIVATE = "sP1aNtEdWgPr1vAtEkEy0000000000000000000000E=";
const PSK = "planted-ike-psk-7f3a9c";
const PASSWORD = "planted-password-Qx81";
const TELEMETRY_TOKEN = "planted-collector-token-55aa";
const ENV_SECRET = "planted-env-session-secret-19";
const LOG_TOKEN = "planted-log-bearer-token-9d2f";
const COOKIE = "3F1C9A0BDE56PLANTEDCOOKIE";
const PUBLIC_IP = "93.184.216.34";
const USER = "carol";

function secretFile(name: string, value: string): string {
  const p = join(tmp, name);
  writeFileSync(p, value + "\n", { mode: 0o600 });
  return p;
}

function inputs(): DiagInputs {
  const parsed = parseConfig({
    version: 1,
    organisation: "Example",
    identity: {
      wireguard: { privateKey: { file: secretFile("wg.key", WG_PRIVATE) } },
      ikev2: { localId: `${USER}@example.com`, psk: { file: secretFile("psk", PSK) } },
      anyconnect: { username: USER, password: { file: secretFile("pw", PASSWORD) } },
    },
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.example.com",
        address: PUBLIC_IP,
        priority: 10,
        region: "eu",
        protocols: {
          wireguard: { publicKey: "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=", tunnelAddress: "198.19.11.2/32" },
        },
      },
      {
        name: "gw2",
        hostname: "gw2.example.com",
        address: "198.18.2.2",
        priority: 20,
        region: "us",
        protocols: {
          wireguard: { publicKey: "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=", tunnelAddress: "198.19.21.2/32" },
        },
      },
    ],
    protectedRoutes: ["198.19.0.0/24"],
    probe: { address: "198.19.0.1" },
    telemetry: { endpoint: "http://198.18.100.2:4318", token: { env: "DETOUR_COLLECTOR_TOKEN" } },
  });
  assert.ok(parsed.ok, JSON.stringify(parsed));
  const now = Date.now();
  const race = {
    id: "R1",
    reason: "connect" as const,
    startedAt: now - 5000,
    endedAt: now - 4800,
    winner: { id: "L2", gateway: "gw2", kind: "wireguard" as const },
    legs: [
      {
        leg: { id: "L1", gateway: "gw1", kind: "wireguard" as const },
        outcome: "failed" as const,
        startedAt: now - 5000,
        endedAt: now - 4900,
        error: { code: "timeout" as const, message: `no WireGuard handshake with gw1 (${PUBLIC_IP}:51820)` },
      },
      {
        leg: { id: "L2", gateway: "gw2", kind: "wireguard" as const },
        outcome: "won" as const,
        startedAt: now - 4990,
        endedAt: now - 4800,
        error: null,
      },
    ],
  };
  const events: ConnectionEvent[] = [
    { type: "leg", at: now - 4900, raceId: "R1", record: race.legs[0] ?? assert.fail() },
    { type: "race-ended", at: now - 4800, race },
    { type: "state", at: now - 4800, state: "connected", detail: "connected" },
  ];
  const hex = base64ToHex(WG_PRIVATE) ?? "";
  return {
    now,
    version: "0.1.0",
    deviceId: "11111111-2222-3333-4444-555555555555",
    policyHash: "abcdef0123456789",
    status: {
      state: "connected",
      summary: "connected to gw2 over wireguard",
      gateway: "gw2",
      protocol: "wireguard",
      activeLegId: "L2",
      standby: null,
      since: now - 4800,
      candidates: [],
      lastRace: race,
      lastFailover: null,
      error: null,
      telemetry: { rttMs: 1.2, rttP95Ms: 2, jitterMs: 0.1, lossPct: 0, samples: 100, export: null, reachability: [] },
    },
    events,
    probeSeconds: Array.from({ length: 5 }, (_, i) => ({
      at: now - 5000 + i * 1000,
      legId: "L2",
      gateway: "gw2",
      protocol: "wireguard" as const,
      role: "active" as const,
      sent: 40,
      lost: i === 2 ? 4 : 0,
      rttMinMs: 1,
      rttAvgMs: 1.2 + i / 10,
      rttMaxMs: 2,
    })),
    samples: [],
    candidates: parsed.config.gateways.map((g) => ({
      name: g.name,
      hostname: g.hostname,
      address: g.address ?? null,
      priority: g.priority,
      region: g.region,
      kinds: ["wireguard"],
      sources: ["config"],
      probe: null,
    })),
    config: parsed.config,
    configPath: `/home/${USER}/detour.json`,
    resolvConf: "/etc/resolv.conf",
    startedAt: now - 60_000,
    logTail: [
      JSON.stringify({
        t: new Date(now).toISOString(),
        level: "info",
        msg: "leg up",
        user: USER,
        home: `/home/${USER}/x`,
        from: PUBLIC_IP,
      }),
      JSON.stringify({
        t: new Date(now).toISOString(),
        level: "warn",
        msg: `collector said 401 for authorization: Bearer ${LOG_TOKEN}`,
      }),
      `plain line with a planted token=${LOG_TOKEN} and ${PUBLIC_IP}`,
      "",
    ].join("\n"),
    engines: [
      {
        legId: "L2",
        gateway: "gw2",
        kind: "wireguard",
        role: "active",
        diagnostics: () =>
          Promise.resolve({
            engine: "wireguard-go",
            state: { listenPort: 4242, peers: [{ endpoint: `${PUBLIC_IP}:51820` }] },
            log: `UAPI private_key=${hex}\nDEBUG: peer ${PUBLIC_IP}`,
          }),
      },
      {
        legId: "L3",
        gateway: "gw1",
        kind: "anyconnect-tls",
        role: "standby",
        diagnostics: () =>
          Promise.resolve({
            engine: "openconnect",
            state: { running: true },
            log: `POST https://${PUBLIC_IP}/\nGot CONNECT response: HTTP/1.1 200 OK\nSet-Cookie: webvpn=${COOKIE}; Secure\nCOOKIE='${COOKIE}'\nConnected as ${USER}`,
          }),
      },
    ],
    env: {
      PATH: "/usr/bin",
      HOME: `/home/${USER}`,
      USER,
      DETOUR_COLLECTOR_TOKEN: TELEMETRY_TOKEN,
      DETOUR_SESSION_SECRET: ENV_SECRET,
    },
  };
}

function walk(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else out.push(p);
  }
  return out;
}

test("planted-secrets-never-appear-in-any-file-and-pseudonyms-agree-across-files", async () => {
  const inp = inputs();
  const r = await createBundle(inp, { dir: join(tmp, "out"), maxLogBytes: 1024 * 1024, hostFacts: false });
  assert.equal(statSync(r.path).mode & 0o777, 0o600, "bundle is private");
  assert.deepEqual(readdirSync(join(tmp, "out")), [r.path.split("/").pop()], "staging folder removed");
  const x = join(tmp, "x");
  execFileSync("mkdir", ["-p", x]);
  execFileSync("tar", ["-xzf", r.path, "-C", x]);
  const files = walk(x);
  const names = files.map((f) => relative(x, f).split("/").slice(1).join("/")).sort();
  for (const want of [
    "manifest.json",
    "summary.html",
    "summary.json",
    "redaction-report.json",
    "status.json",
    "flight-recorder.json",
    "telemetry.json",
    "config.json",
    "process.json",
    "logs/detourd.log",
    "engines/L2-gw2-wireguard.json",
    "engines/L2-gw2-wireguard.log",
    "engines/L3-gw1-anyconnect-tls.log",
  ]) {
    assert.ok(names.includes(want), `${want} in ${names.join(", ")}`);
  }
  const hex = base64ToHex(WG_PRIVATE) ?? "";
  const planted = [
    WG_PRIVATE,
    hex,
    PSK,
    PASSWORD,
    TELEMETRY_TOKEN,
    ENV_SECRET,
    LOG_TOKEN,
    COOKIE,
    PUBLIC_IP,
    `/home/${USER}`,
  ];
  for (const f of files) {
    const bytes = readFileSync(f);
    for (const s of planted)
      assert.equal(bytes.indexOf(Buffer.from(s)), -1, `${relative(x, f)} contains ${s.slice(0, 12)}...`);
    assert.equal(bytes.toString("latin1").toLowerCase().indexOf(hex), -1, `${relative(x, f)} has the key in hex`);
    assert.equal(/\bcarol\b/.test(bytes.toString("utf8")), false, `${relative(x, f)} names the user`);
  }
  const text = (name: string): string =>
    readFileSync(files.find((f) => f.endsWith(`/${name}`)) ?? assert.fail(name), "utf8");
  // The same public address is the same token in the config, the log, the engine output and the summary.
  const token = /gw1\.example\.com[\s\S]*?"address": "(ip-\d+)"/.exec(text("config.json"))?.[1];
  assert.ok(token !== undefined, "the public gateway address is pseudonymised in config.json");
  for (const name of [
    "logs/detourd.log",
    "engines/L2-gw2-wireguard.log",
    "engines/L3-gw1-anyconnect-tls.log",
    "summary.json",
    "summary.html",
    "flight-recorder.json",
  ])
    assert.ok(text(name).includes(token), `${name} uses ${token}`);
  assert.ok(text("config.json").includes("198.18.2.2"), "lab (RFC 2544) addresses are kept");
  const user = /"username": "(user-\d+)"/.exec(text("config.json"))?.[1];
  assert.ok(user !== undefined);
  assert.ok(
    text("logs/detourd.log").includes(`/home/${user}/x`) &&
      text("engines/L3-gw1-anyconnect-tls.log").includes(`Connected as ${user}`),
  );
  const report = JSON.parse(text("redaction-report.json")) as {
    removed: Record<string, number>;
    pseudonymised: Record<string, number>;
  };
  assert.ok(
    (report.removed["known-secret"] ?? 0) > 0 &&
      (report.removed.cookie ?? 0) > 0 &&
      (report.pseudonymised["public-ip"] ?? 0) > 0 &&
      (report.pseudonymised["user-name"] ?? 0) > 0,
    JSON.stringify(report),
  );

  const opened = await readBundle(r.path);
  assert.ok(opened.check.ok, opened.check.problems.join("; "));
  assert.equal(opened.check.verified, opened.manifest.files.length);
});

test("an-edited-bundle-fails-verification-and-a-non-bundle-is-refused-clearly", async () => {
  const r = await createBundle(inputs(), { dir: join(tmp, "out2"), maxLogBytes: 1024 * 1024, hostFacts: false });
  const x = join(tmp, "x2");
  execFileSync("mkdir", ["-p", x]);
  execFileSync("tar", ["-xzf", r.path, "-C", x]);
  const root = readdirSync(x)[0] ?? assert.fail();
  writeFileSync(join(x, root, "status.json"), "{}\n");
  const edited = join(tmp, "edited.tar.gz");
  execFileSync("tar", ["-czf", edited, "-C", x, root]);
  const b = await readBundle(edited);
  assert.equal(b.check.ok, false);
  assert.ok(
    b.check.problems.some((p) => p.startsWith("status.json")),
    b.check.problems.join("; "),
  );
  const junk = join(tmp, "junk.tar.gz");
  writeFileSync(junk, "not a bundle at all");
  await assert.rejects(readBundle(junk), /not a readable \.tar\.gz|no manifest\.json/);
  await assert.rejects(readBundle(join(tmp, "missing.tar.gz")), /cannot read .*ENOENT/);
});

test("a-real-bundle-passes-the-collectors-summary-check-and-its-page-renders-there", async () => {
  const r = await createBundle(inputs(), {
    dir: join(tmp, "out-collector"),
    maxLogBytes: 1024 * 1024,
    hostFacts: false,
  });
  const s = bundleSummary(readFileSync(r.path));
  assert.ok(s.ok, s.ok ? "" : s.message);
  const html = renderSummaryHtml(s.model);
  assert.match(html, /<h1>Detour diagnostic bundle<\/h1>/);
  assert.doesNotMatch(html, /<script/);
});
