/**
 * Builds a diagnostic bundle on the local disk first (it must work when the network is what is broken): every
 * file is redacted (main/core/diag/redact.ts) before it is written, into a private staging folder, hashed into
 * the manifest and packed as one .tar.gz (mode 0600) with node-tar. The staging folder is always removed.
 *
 *   detour-diag-<time>/
 *     manifest.json            format, agent version, policy hash, device, time, SHA-256 + size of every file
 *     summary.html             the page helpdesk reads first (state, failures, chart, gateways, races)
 *     summary.json             the same as data (what `detour diag inspect` prints)
 *     redaction-report.json    replacements per class
 *     status.json              the connection snapshot and the tunnel's numbers
 *     flight-recorder.json     the last connection events (states, races, legs, failovers) + per-second probes
 *     telemetry.json           the last hour of ten-second tunnel samples and the export's state
 *     config.json              the effective configuration
 *     host.json                OS, CPU, memory, interfaces, routes and rules, DNS servers
 *     nftables.txt             `nft list ruleset`
 *     process.json             detourd's pid, uptime, argv and environment
 *     logs/detourd.log         the daemon's log (bounded tail)
 *     engines/<leg>.json|.log  each running engine's state (UAPI dump, VICI list-sas, openconnect) and output
 */
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { hostname, userInfo } from "node:os";
import * as tar from "tar";
import type { DetourConfig } from "../../core/config/schema.ts";
import type { Candidate, ConnectionEvent, ConnectionSnapshot, LegKind } from "../../core/connection/types.ts";
import {
  BUNDLE_FORMAT,
  MANIFEST_FILE,
  REDACTION_REPORT,
  SUMMARY_HTML,
  SUMMARY_JSON,
  type Manifest,
} from "../../core/diag/manifest.ts";
import { Redactor, SECRET_ENV_NAME, secretEnvValues, type RedactionReport } from "../../core/diag/redact.ts";
import { buildSummary, renderSummaryHtml } from "../../core/diag/summary.ts";
import type { TelemetryStatus } from "../../core/telemetry/status.ts";
import type { EngineDiagnostics } from "../../../native/engines/engine.ts";
import type { HistorySample, ProbeSecond } from "../telemetry/history.ts";
import { loadSecret } from "../secrets.ts";
import { collectHostFacts } from "./host.ts";
import { readFileTail } from "./log-tail.ts";
import { withTimeout } from "../../shared/with-timeout.ts";

/** One engine's diagnostics may take this long (UAPI and VICI bound themselves; this bounds a wedged driver). */
export const ENGINE_DIAG_TIMEOUT_MS = 3000;
/** Bundles kept in the bundle folder; older ones are removed when a new one is written. */
export const BUNDLES_KEPT = 5;

export interface EngineReport {
  legId: string;
  gateway: string;
  kind: LegKind;
  role: string;
  diagnostics(): Promise<EngineDiagnostics>;
}

/** Everything the daemon hands over for a bundle; raw values, redacted here. */
export interface DiagInputs {
  now: number;
  version: string;
  deviceId: string;
  policyHash: string;
  status: ConnectionSnapshot & { telemetry?: TelemetryStatus };
  events: readonly ConnectionEvent[];
  probeSeconds: readonly ProbeSecond[];
  samples: readonly HistorySample[];
  candidates: readonly Candidate[];
  config: DetourConfig;
  configPath: string;
  resolvConf: string;
  engines: readonly EngineReport[];
  /** The in-memory log tail; a log file, when detourd writes one, is preferred (it covers earlier runs). */
  logTail: string;
  logFile?: string;
  startedAt: number;
  env?: NodeJS.ProcessEnv;
  /** Extra values that must never appear (tests plant them; the daemon's SecretRefs are read here anyway). */
  extraSecrets?: readonly string[];
}

export interface BundleOptions {
  dir: string;
  maxLogBytes: number;
  /** Host facts and nftables (tests and benchmarks can skip the slow system queries). */
  hostFacts?: boolean;
}

export interface BundleResult {
  path: string;
  bytes: number;
  sha256: string;
  files: number;
  tookMs: number;
  redactions: RedactionReport;
}

/** Every SecretRef in the configuration ({file} or {env} objects), wherever it sits. */
export function secretRefs(
  value: unknown,
  path = "",
  out: { ref: { file: string } | { env: string }; path: string }[] = [],
): typeof out {
  if (value === null || typeof value !== "object") return out;
  if (Array.isArray(value)) {
    value.forEach((v, i) => secretRefs(v, `${path}[${i}]`, out));
    return out;
  }
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1 && typeof o.file === "string") out.push({ ref: { file: o.file }, path });
  else if (keys.length === 1 && typeof o.env === "string") out.push({ ref: { env: o.env }, path });
  else for (const k of keys) secretRefs(o[k], path === "" ? k : `${path}.${k}`, out);
  return out;
}

/** Values that must never appear in a bundle: what the configuration's SecretRefs hold, and secret-looking env. */
export function knownSecrets(config: DetourConfig, env: NodeJS.ProcessEnv): string[] {
  const out = secretEnvValues(env);
  for (const { ref, path } of secretRefs(config)) {
    try {
      out.push(loadSecret(ref, path, env).reveal());
    } catch {
      // an unreadable reference holds nothing that could leak
    }
  }
  return out;
}

/** Login names of people on this host: /etc/passwd accounts with a uid of 1000 or more, and who runs detourd. */
export function localUserNames(env: NodeJS.ProcessEnv, passwd = "/etc/passwd"): string[] {
  const names = new Set<string>();
  try {
    for (const line of readFileSync(passwd, "utf8").split("\n")) {
      const [name, , uid] = line.split(":");
      if (name !== undefined && name !== "" && uid !== undefined && Number(uid) >= 1000 && Number(uid) < 65534)
        names.add(name);
    }
  } catch {
    // no passwd file: only the environment's names
  }
  for (const k of ["USER", "LOGNAME", "SUDO_USER"]) {
    const v = env[k];
    if (v !== undefined && v !== "") names.add(v);
  }
  const home = env.HOME?.match(/^\/home\/([^/]+)/)?.[1];
  if (home !== undefined) names.add(home);
  try {
    names.add(userInfo().username);
  } catch {
    // no passwd entry for our uid
  }
  return [...names];
}

function stamp(now: number): string {
  return new Date(now)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z");
}

/**
 * Log lines redacted between two yields to the event loop: a day of logs takes a second or two to redact, and the
 * daemon's probes and failover timers must not wait that long; 1000 lines take a few milliseconds.
 */
export const LOG_REDACT_BATCH_LINES = 1000;

/** A JSON log line is redacted as JSON (secret-named fields lose their values), anything else as text. */
async function redactLog(r: Redactor, text: string): Promise<string> {
  const lines = text.split("\n");
  const out: string[] = [];
  for (let i = 0; i < lines.length; i += LOG_REDACT_BATCH_LINES) {
    for (const line of lines.slice(i, i + LOG_REDACT_BATCH_LINES)) {
      let done: string | null = null;
      if (line.startsWith("{")) {
        try {
          done = JSON.stringify(r.json(JSON.parse(line)));
        } catch {
          // not JSON after all
        }
      }
      out.push(done ?? r.text(line));
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return out.join("\n");
}

function pruneOld(dir: string, keep: number): void {
  let names: string[];
  try {
    names = readdirSync(dir)
      .filter((n) => /^detour-diag-\d{8}T\d{6}Z-[0-9a-f]+\.tar\.gz$/.test(n))
      .sort();
  } catch {
    return;
  }
  for (const n of names.slice(0, Math.max(0, names.length - keep))) rmSync(join(dir, n), { force: true });
}

export async function createBundle(inp: DiagInputs, opts: BundleOptions): Promise<BundleResult> {
  const t0 = Date.now();
  const env = inp.env ?? process.env;
  const redactor = new Redactor({
    knownSecrets: [...knownSecrets(inp.config, env), ...(inp.extraSecrets ?? [])],
    userNames: [
      ...localUserNames(env),
      ...(inp.config.identity.anyconnect === undefined ? [] : [inp.config.identity.anyconnect.username]),
      ...(inp.config.diagnostics?.sftp === undefined ? [] : [inp.config.diagnostics.sftp.user]),
    ],
  });
  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  const root = `detour-diag-${stamp(inp.now)}-${randomBytes(3).toString("hex")}`;
  const staging = join(opts.dir, `.staging-${root}`);
  const files: { path: string; bytes: number; sha256: string }[] = [];
  const put = (path: string, content: string): void => {
    const full = join(staging, root, path);
    mkdirSync(dirname(full), { recursive: true, mode: 0o700 });
    const buf = Buffer.from(content, "utf8");
    writeFileSync(full, buf, { mode: 0o600 });
    files.push({ path, bytes: buf.length, sha256: createHash("sha256").update(buf).digest("hex") });
  };
  const putJson = (path: string, value: unknown): void => {
    put(path, JSON.stringify(redactor.json(value), null, 2) + "\n");
  };
  try {
    mkdirSync(join(staging, root), { recursive: true, mode: 0o700 });
    const [engines, hostFacts] = await Promise.all([
      Promise.all(
        inp.engines.map(async (e) => {
          // An engine that hangs or fails is recorded as such; the bundle is made either way.
          const d = await withTimeout(
            () => e.diagnostics(),
            ENGINE_DIAG_TIMEOUT_MS,
            `the engine of leg ${e.legId}`,
          ).catch((err: unknown): EngineDiagnostics => ({
            engine: "unknown",
            state: { error: err instanceof Error ? err.message : String(err) },
            log: "",
          }));
          return { e, d };
        }),
      ),
      opts.hostFacts === false ? null : collectHostFacts(inp.resolvConf),
    ]);

    putJson("status.json", inp.status);
    putJson("flight-recorder.json", { events: inp.events, probeSeconds: inp.probeSeconds });
    putJson("telemetry.json", { windowMs: 3_600_000, samples: inp.samples, status: inp.status.telemetry ?? null });
    putJson("config.json", { path: inp.configPath, config: inp.config });
    if (hostFacts !== null) {
      putJson("host.json", hostFacts.host);
      put("nftables.txt", redactor.text(hostFacts.nftables));
    }
    const envOut: Record<string, string> = {};
    for (const [k, v] of Object.entries(env))
      if (v !== undefined) envOut[k] = SECRET_ENV_NAME.test(k) ? "[removed:known-secret]" : v;
    putJson("process.json", {
      pid: process.pid,
      startedAt: new Date(inp.startedAt).toISOString(),
      uptimeS: Math.round((inp.now - inp.startedAt) / 1000),
      argv: process.argv,
      node: process.version,
      hostname: hostname(),
      env: envOut,
    });
    const fileTail = inp.logFile === undefined ? null : readFileTail(inp.logFile, opts.maxLogBytes);
    const memTail =
      inp.logTail.length > opts.maxLogBytes
        ? inp.logTail.slice(inp.logTail.indexOf("\n", inp.logTail.length - opts.maxLogBytes) + 1)
        : inp.logTail;
    put("logs/detourd.log", await redactLog(redactor, fileTail?.text ?? memTail));
    for (const { e, d } of engines) {
      const name = `engines/${e.legId}-${e.gateway}-${e.kind}`;
      putJson(`${name}.json`, {
        legId: e.legId,
        gateway: e.gateway,
        kind: e.kind,
        role: e.role,
        engine: d.engine,
        state: d.state,
      });
      put(`${name}.log`, await redactLog(redactor, d.log));
    }

    const model = redactor.json(
      buildSummary({
        now: inp.now,
        agentVersion: inp.version,
        deviceId: inp.deviceId,
        policyHash: inp.policyHash,
        status: inp.status,
        events: inp.events,
        candidates: inp.candidates,
        samples: inp.samples,
        probeSeconds: inp.probeSeconds,
      }),
    ) as ReturnType<typeof buildSummary>;
    const report = redactor.report();
    model.redactions = report;
    put(SUMMARY_JSON, JSON.stringify(model, null, 2) + "\n");
    put(SUMMARY_HTML, renderSummaryHtml(model));
    put(
      REDACTION_REPORT,
      JSON.stringify(
        {
          ...report,
          note: "counts of values removed or replaced by a pseudonym, per class; pseudonyms are consistent within this bundle only",
        },
        null,
        2,
      ) + "\n",
    );

    const manifest: Manifest = {
      format: BUNDLE_FORMAT,
      createdAt: new Date(inp.now).toISOString(),
      agentVersion: inp.version,
      deviceId: inp.deviceId,
      policyHash: inp.policyHash,
      root,
      files: [...files],
    };
    const manifestText = JSON.stringify(manifest, null, 2) + "\n";
    writeFileSync(join(staging, root, MANIFEST_FILE), manifestText, { mode: 0o600 });

    const out = join(opts.dir, `${root}.tar.gz`);
    const tmp = `${out}.partial`;
    // The manifest goes first, so a reader streaming the archive knows what to expect. The folder is 0700, so
    // the archive is private from its first byte; 0600 makes it stay so wherever it is moved.
    await tar.c({ gzip: true, cwd: staging, portable: true, file: tmp }, [
      `${root}/${MANIFEST_FILE}`,
      ...files.map((f) => `${root}/${f.path}`),
    ]);
    chmodSync(tmp, 0o600);
    renameSync(tmp, out);
    pruneOld(opts.dir, BUNDLES_KEPT);
    const bytes = statSync(out).size;
    return {
      path: out,
      bytes,
      sha256: createHash("sha256").update(readFileSync(out)).digest("hex"),
      files: files.length + 1,
      tookMs: Date.now() - t0,
      redactions: report,
    };
  } finally {
    rmSync(staging, { recursive: true, force: true });
    rmSync(join(opts.dir, `${root}.tar.gz.partial`), { force: true });
  }
}
