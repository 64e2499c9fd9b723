/**
 * `npm run bench -- diag`: how long `detour diag` takes to write a bundle, and how big it is, when the daemon
 * has a day's worth of logs (one JSON line a second, ~12 MiB) and telemetry (a day of ten-second samples fed
 * through the history ring, ten minutes of per-second probe summaries, a full flight recorder). Measured
 * in-process on the real bundle code (redaction, host facts from systeminformation, `ip -j`, `nft list ruleset`
 * (read-only), node-tar + gzip), next to a baseline in the same run: `tar -czf` of the same raw log tail,
 * which is what the bundle costs without redaction, summary and host facts.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createBundle, type DiagInputs } from "../../main/agent/diag/bundle.ts";
import { readFileTail } from "../../main/agent/diag/log-tail.ts";
import { HISTORY_SAMPLE_MS, TunnelHistory } from "../../main/agent/telemetry/history.ts";
import { parseConfig } from "../../main/core/config/schema.ts";
import type { ConnectionEvent } from "../../main/core/connection/types.ts";
import { fmtSummary, summarize } from "./stats.ts";

const DAY_S = 86_400;
/** The bundle's default log bound (diagnostics.maxLogBytes). */
const DEFAULT_LOG_BYTES = 4 * 1024 * 1024;
/** Large enough for the whole day of logs. */
const WHOLE_DAY_LOG_BYTES = 64 * 1024 * 1024;

interface Row {
  what: string;
  ms: ReturnType<typeof summarize>;
  bytes: ReturnType<typeof summarize>;
}

function dayOfLogs(path: string, now: number): number {
  const lines: string[] = [];
  for (let i = 0; i < DAY_S; i++) {
    const t = new Date(now - (DAY_S - i) * 1000).toISOString();
    const k = i % 6;
    lines.push(
      k === 0
        ? JSON.stringify({
            t,
            level: "info",
            msg: "state",
            state: "connected",
            detail: "connected to gw1 over wireguard (198.18.1.2)",
          })
        : k === 1
          ? JSON.stringify({
              t,
              level: "info",
              msg: "leg up",
              leg: { id: `L${i}`, gateway: "gw2", kind: "ikev2" },
              ifname: "dt-l1",
              ms: 63,
            })
          : k === 2
            ? JSON.stringify({
                t,
                level: "warn",
                msg: "telemetry delivery problem",
                seq: i,
                kind: "metrics",
                status: 503,
                message: "collector at 93.184.216.34 answered 503",
                retryInMs: 4000,
              })
            : k === 3
              ? JSON.stringify({
                  t,
                  level: "info",
                  msg: "race",
                  race: { id: `R${i}`, reason: "failover", winner: { gateway: "gw3", kind: "anyconnect-tls" } },
                  user: "alice",
                  home: "/home/alice",
                })
              : k === 4
                ? JSON.stringify({
                    t,
                    level: "info",
                    msg: "protected routes applied",
                    routes: ["198.19.0.0/24"],
                    ifname: "dt-l2",
                  })
                : JSON.stringify({ t, level: "debug", msg: "probe", legId: `L${i}`, rttMs: 0.42, seq: i }),
    );
  }
  const text = lines.join("\n") + "\n";
  writeFileSync(path, text, { mode: 0o600 });
  return text.length;
}

function inputs(dir: string, now: number, logFile: string): DiagInputs {
  const secret = (name: string, v: string): string => {
    const p = join(dir, name);
    writeFileSync(p, v + "\n", { mode: 0o600 });
    return p;
  };
  const parsed = parseConfig({
    version: 1,
    organisation: "Bench",
    identity: {
      wireguard: { privateKey: { file: secret("wg", "sP1aNtEdWgPr1vAtEkEy0000000000000000000000E=") } },
      ikev2: { localId: "client@bench.test", psk: { file: secret("psk", "bench-psk-000111") } },
      anyconnect: { username: "alice", password: { file: secret("pw", "bench-password-222") } },
    },
    gateways: [1, 2, 3].map((n) => ({
      name: `gw${n}`,
      hostname: `gw${n}.bench.test`,
      address: `198.18.${n}.2`,
      priority: n * 10,
      region: "eu",
      protocols: {
        wireguard: { publicKey: "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=", tunnelAddress: `198.19.${n}1.2/32` },
      },
    })),
    protectedRoutes: ["198.19.0.0/24"],
    probe: { address: "198.19.0.1" },
  });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const history = new TunnelHistory();
  // A day of ten-second samples through the ring (it keeps the last hour) ...
  for (let i = 0; i < DAY_S / 10; i++)
    history.addSample({
      at: now - DAY_S * 1000 + i * HISTORY_SAMPLE_MS,
      gateway: "gw1",
      protocol: "wireguard",
      probes: 400,
      lossPct: i % 50 === 0 ? 5 : 0,
      rttP50Ms: 0.4 + (i % 7) / 10,
      rttP95Ms: 1.2,
      jitterMs: 0.1,
    });
  // ... and ten minutes of 25 ms probes (the per-second ring).
  for (let i = 0; i < 24_000; i++)
    history.onProbe(
      { legId: "L1", gateway: "gw1", protocol: "wireguard", active: true },
      { seq: i, sentAt: now - 600_000 + i * 25, rttMs: i % 97 === 0 ? null : 0.4 },
    );
  const events: ConnectionEvent[] = [];
  for (let i = 0; i < 500; i++) {
    const at = now - (500 - i) * 60_000;
    events.push(
      i % 2 === 0
        ? {
            type: "race-ended",
            at,
            race: {
              id: `R${i}`,
              reason: "failover",
              startedAt: at - 300,
              endedAt: at,
              winner: { id: `L${i}`, gateway: "gw2", kind: "ikev2" },
              legs: [
                {
                  leg: { id: `L${i}`, gateway: "gw2", kind: "ikev2" },
                  outcome: "won",
                  startedAt: at - 300,
                  endedAt: at,
                  error: null,
                },
              ],
            },
          }
        : {
            type: "leg",
            at,
            raceId: `R${i - 1}`,
            record: {
              leg: { id: `M${i}`, gateway: "gw1", kind: "wireguard" },
              outcome: "failed",
              startedAt: at - 5000,
              endedAt: at,
              error: {
                code: "timeout",
                message: "no WireGuard handshake with gw1 (198.18.1.2:51820) before the deadline",
              },
            },
          },
    );
  }
  return {
    now,
    version: "0.1.0",
    deviceId: "00000000-0000-4000-8000-000000000000",
    policyHash: "0123456789abcdef",
    status: {
      state: "connected",
      summary: "connected",
      gateway: "gw1",
      protocol: "wireguard",
      activeLegId: "L1",
      standby: null,
      since: now - 3_600_000,
      candidates: [],
      lastRace: null,
      lastFailover: null,
      error: null,
    },
    events,
    probeSeconds: history.probeSeconds(),
    samples: history.samples(now),
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
    configPath: join(dir, "config.json"),
    resolvConf: "/etc/resolv.conf",
    engines: [],
    logTail: "",
    logFile,
    startedAt: now - DAY_S * 1000,
  };
}

export async function benchDiag(runs: number): Promise<{ rows: Row[]; markdown: string }> {
  const dir = mkdtempSync(join(tmpdir(), "detour-bench-diag-"));
  try {
    const now = Date.now();
    const logFile = join(dir, "detourd.log");
    const logBytes = dayOfLogs(logFile, now);
    const inp = inputs(dir, now, logFile);
    const variants: { what: string; run: (i: number) => Promise<{ ms: number; bytes: number }> }[] = [
      {
        what: `bundle: day of logs (${DEFAULT_LOG_BYTES / 1024 / 1024} MiB tail) + last hour of telemetry + host facts`,
        run: async (i) => {
          const r = await createBundle(inp, { dir: join(dir, `a${i}`), maxLogBytes: DEFAULT_LOG_BYTES });
          return { ms: r.tookMs, bytes: r.bytes };
        },
      },
      {
        what: `bundle: the whole day of logs (${(logBytes / 1024 / 1024).toFixed(1)} MiB) + telemetry + host facts`,
        run: async (i) => {
          const r = await createBundle(inp, { dir: join(dir, `b${i}`), maxLogBytes: WHOLE_DAY_LOG_BYTES });
          return { ms: r.tookMs, bytes: r.bytes };
        },
      },
      {
        what: `baseline: tar -czf of the raw ${DEFAULT_LOG_BYTES / 1024 / 1024} MiB log tail (no redaction, summary or host facts)`,
        run: (i) => {
          const t0 = Date.now();
          const raw = join(dir, `raw${i}.log`);
          writeFileSync(raw, readFileTail(logFile, DEFAULT_LOG_BYTES)?.text ?? "");
          const out = join(dir, `raw${i}.tar.gz`);
          execFileSync("tar", ["-czf", out, "-C", dir, `raw${i}.log`]);
          return Promise.resolve({ ms: Date.now() - t0, bytes: statSync(out).size });
        },
      },
    ];
    const rows: Row[] = [];
    for (const v of variants) {
      const ms: number[] = [];
      const bytes: number[] = [];
      for (let i = 0; i < runs; i++) {
        const r = await v.run(i);
        ms.push(r.ms);
        bytes.push(r.bytes);
      }
      rows.push({ what: v.what, ms: summarize(ms), bytes: summarize(bytes) });
    }
    const kib = (n: number): string => `${(n / 1024).toFixed(0)} KiB`;
    const markdown = [
      `### detour diag: bundle creation (median of ${runs} runs; day of logs ${(logBytes / 1024 / 1024).toFixed(1)} MiB, ${DAY_S} lines)`,
      "",
      "| what | creation time | bundle size |",
      "| --- | --- | --- |",
      ...rows.map(
        (r) =>
          `| ${r.what} | ${fmtSummary(r.ms)} | ${kib(r.bytes.median)} (range ${kib(r.bytes.min)}–${kib(r.bytes.max)}) |`,
      ),
      "",
    ].join("\n");
    return { rows, markdown };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
