/** Pure formatting of the `detour` command's human output: status, race table, failover line, gateways, events. */
import type {
  ConnectionEvent,
  DrillResult,
  FailoverRecord,
  Leg,
  LegKind,
  RaceRecord,
} from "../core/connection/types.ts";
import type { KillSwitchStatus } from "../core/killswitch-status.ts";
import type { GatewaysPayload, StatusPayload } from "../core/protocol/messages.ts";
import { explanation, situation, SITUATION_LABELS, type Situation } from "../core/status-words.ts";
import { trustedSentence } from "../core/trusted-networks.ts";

export interface FormatOptions {
  /** The current time (epoch ms), for "since" and "up" durations. */
  now: number;
  /** Renders an epoch time as a time of day; local time by default. */
  clock?: (ms: number) => string;
}

const pad2 = (n: number): string => String(n).padStart(2, "0");
const pad3 = (n: number): string => String(n).padStart(3, "0");

/** HH:MM:SS.mmm in the machine's time zone. */
export function localClock(ms: number): string {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${pad3(d.getMilliseconds())}`;
}

/** HH:MM:SS.mmm in UTC (tests, logs). */
export function utcClock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23);
}

/** A duration for people: "1.2 ms", "850 ms", "4.2 s", "42 s", "2m 14s", "1h 02m", "3d 04h". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return "?";
  const sign = ms < 0 ? "-" : "";
  const a = Math.abs(ms);
  if (a < 10 && a !== Math.round(a)) return `${sign}${a.toFixed(1)} ms`;
  if (a < 1000) return `${sign}${Math.round(a)} ms`;
  if (a < 10_000) return `${sign}${(a / 1000).toFixed(1)} s`;
  const s = Math.floor(a / 1000);
  if (s < 60) return `${sign}${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${sign}${m}m ${pad2(s % 60)}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${sign}${h}h ${pad2(m % 60)}m`;
  return `${sign}${Math.floor(h / 24)}d ${pad2(h % 24)}h`;
}

/** Lays out rows as left-aligned columns separated by two spaces, without trailing spaces. */
export function table(rows: readonly (readonly string[])[], indent = "  "): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((r) =>
    (indent + r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ")).trimEnd(),
  );
}

const oneLine = (s: string): string => s.replace(/\s+/g, " ").trim();
const legName = (l: Pick<Leg, "gateway" | "kind">): string => `${l.gateway} ${l.kind}`;

/** "gw2 wireguard -> gw1 ikev2, reason: ..., detected after 612 ms, restored after 845 ms" */
export function formatFailover(f: FailoverRecord): string {
  const to = f.to === null ? "nothing (no healthy gateway)" : legName(f.to);
  const restored =
    f.restoredAfterMs === null
      ? "not restored yet"
      : `restored after ${formatDuration(f.restoredAfterMs)}${f.via === "standby" ? " (standby promoted)" : ""}`;
  return `${legName(f.from)} -> ${to}, reason: ${oneLine(f.reason)}, detected after ${formatDuration(f.detectedAfterMs)}, ${restored}`;
}

/** The race heading plus one row per leg: start and end relative to the race's start, outcome, error. */
export function formatRace(r: RaceRecord, opts: FormatOptions): string[] {
  const clock = opts.clock ?? localClock;
  const took =
    r.endedAt === null
      ? `running for ${formatDuration(opts.now - r.startedAt)}`
      : `took ${formatDuration(r.endedAt - r.startedAt)}`;
  const winner =
    r.winner === null ? (r.endedAt === null ? "no winner yet" : "no winner") : `winner ${legName(r.winner)}`;
  const rel = (t: number | null): string => (t === null ? "-" : `+${formatDuration(t - r.startedAt)}`);
  const rows: string[][] = [["leg", "gateway", "protocol", "start", "end", "outcome", "error"]];
  for (const l of r.legs) {
    rows.push([
      l.leg.id,
      l.leg.gateway,
      l.leg.kind,
      rel(l.startedAt),
      rel(l.endedAt),
      l.outcome,
      l.error === null ? "" : `${l.error.code}: ${oneLine(l.error.message)}`,
    ]);
  }
  return [`race ${r.id} (${r.reason}) at ${clock(r.startedAt)}, ${took}, ${winner}`, ...table(rows)];
}

const PROTOCOL_NAMES: Record<LegKind, string> = {
  wireguard: "WireGuard",
  ikev2: "IKEv2",
  "anyconnect-tls": "AnyConnect over TLS",
  "anyconnect-dtls": "AnyConnect over DTLS",
};

const gatewayName = (g: { gateway: string; kind: LegKind }): string => `${g.gateway} (${PROTOCOL_NAMES[g.kind]})`;

/**
 * `detour drill`, one line: "Drill passed: gw1 (WireGuard) blocked; detected in 312 ms, traffic restored via gw2
 * (WireGuard) in 355 ms; SLA 1000 ms". A failed drill leads with its reason; a refused one says why only.
 */
export function formatDrillLine(d: DrillResult): string {
  if (d.verdict === "refused") return `Drill refused: ${oneLine(d.reason)}`;
  const head = d.verdict === "pass" ? "Drill passed" : `Drill failed (${oneLine(d.reason)})`;
  const blocked = d.from === null ? "no gateway blocked" : `${gatewayName(d.from)} blocked`;
  const detected = d.detectedAfterMs === null ? "not detected" : `detected in ${Math.round(d.detectedAfterMs)} ms`;
  const restored =
    d.restoredAfterMs === null
      ? d.to === null
        ? "traffic not restored"
        : `moved to ${gatewayName(d.to)}, traffic not restored`
      : `traffic restored${d.to === null ? "" : ` via ${gatewayName(d.to)}`} in ${Math.round(d.restoredAfterMs)} ms`;
  return `${head}: ${blocked}; ${detected}, ${restored}; SLA ${d.slaMs} ms`;
}

/** `detour drill`: the summary line plus what users lost, detourd's own view and whether the gateway is back. */
export function formatDrill(d: DrillResult, opts: FormatOptions): string {
  const clock = opts.clock ?? localClock;
  const out = [formatDrillLine(d)];
  if (d.verdict !== "refused") {
    const rows: string[][] = [
      ["drill", `${d.id} at ${clock(d.startedAt)}, took ${formatDuration(d.endedAt - d.startedAt)}`],
    ];
    if (d.probesSent > 0)
      rows.push(["probes", `${d.probesLost} of ${d.probesSent} lost over the host's routes while cut off`]);
    if (d.failover !== null) rows.push(["detourd", `${formatFailover(d.failover)} (from its last in-tunnel reply)`]);
    const gw = d.from?.gateway ?? "the gateway";
    rows.push([
      "block",
      d.liftedAt === null
        ? `${gw} is STILL BLOCKED: restart detourd to lift it`
        : `lifted after ${formatDuration(d.liftedAt - (d.blockedAt ?? d.startedAt))}; ${gw} is usable again`,
    ]);
    out.push(...table(rows));
  }
  return out.join("\n") + "\n";
}

type SleepStatus = NonNullable<NonNullable<NonNullable<StatusPayload["network"]>["monitor"]>["sleep"]>;

/** How sleep is detected (logind's word, or the clocks alone and why) and the last wake. */
export function formatSleep(sl: SleepStatus, opts: FormatOptions): string {
  const how =
    sl.logind === "listening"
      ? "logind and the clocks"
      : `the clocks only${sl.logind === "unsupported" ? "" : ` (logind ${sl.logind}${sl.logindDetail === null ? "" : `: ${oneLine(sl.logindDetail)}`})`}`;
  const last =
    sl.lastWake === null
      ? "no wake yet"
      : `last wake ${formatDuration(Math.max(0, opts.now - sl.lastWake.at))} ago (${sl.lastWake.source}, slept ${formatDuration(sl.lastWake.sleptMs)})`;
  const odd = [
    ...(sl.watcherDeaths > 0 ? [`watcher restarted ${String(sl.watcherDeaths)}x`] : []),
    ...(sl.impostors > 0 ? [`${String(sl.impostors)} forged signal(s) ignored`] : []),
  ];
  return [how, last, ...odd].join("; ");
}

/** Situations whose words say more than the connection state and the daemon's summary (core/status-words.ts). */
const WORDED: ReadonlySet<Situation> = new Set(["sign-in", "waiting-for-network", "trusted"]);

/**
 * `detour status`: the daemon's summary sentence (or, offline, on a captive or a trusted network, the same label and
 * line the tray and the window show), the fields, the last race and the last failover.
 */
export function formatStatus(s: StatusPayload, opts: FormatOptions): string {
  const clock = opts.clock ?? localClock;
  const sit = situation(s);
  const worded = WORDED.has(sit);
  const rows: string[][] = [
    ["state", worded ? `${s.state} (${SITUATION_LABELS[sit]})` : s.state],
    ["gateway", s.gateway ?? "-"],
    ["protocol", s.protocol === null ? "-" : `${s.protocol} (${PROTOCOL_NAMES[s.protocol]})`],
    ["since", s.since === null ? "-" : `${formatDuration(opts.now - s.since)} (at ${clock(s.since)})`],
  ];
  if (s.standby !== null) {
    const heard =
      s.standby.lastReplyAt === null
        ? "no reply yet"
        : `last reply ${formatDuration(Math.max(0, opts.now - s.standby.lastReplyAt))} ago`;
    rows.push([
      "standby",
      `${s.standby.gateway} ${s.standby.protocol} (${PROTOCOL_NAMES[s.standby.protocol]}), ${heard}`,
    ]);
  }
  if (s.killSwitch !== undefined) rows.push(["kill switch", formatKillSwitch(s.killSwitch, opts)]);
  const trusted = trustedSentence(s.trusted);
  if (trusted !== null) rows.push(["network", oneLine(trusted)]);
  const c = s.captive;
  if (c?.state === "sign-in-required") {
    rows.push(["network", `Sign in to this network: ${oneLine(c.reason ?? "a captive portal")}`]);
    if (c.portalUrl !== null) rows.push(["sign-in page", c.portalUrl]);
  }
  if (c !== undefined && c.exception.state !== "closed") {
    const ex = c.exception;
    rows.push([
      "sign-in exception",
      ex.state === "forbidden"
        ? "forbidden by configuration or policy"
        : `open until ${ex.closesAt === null ? "-" : `${clock(ex.closesAt)} (${formatDuration(Math.max(0, ex.closesAt - opts.now))} left)`}: DNS to ${ex.resolvers.join(", ") || "-"}, HTTP(S) to ${ex.portalAddresses.join(", ") || "-"}`,
    ]);
  }
  const lan = localNetworksRow(s.localNetworks);
  if (lan !== null) rows.push(["local networks", lan]);
  const t = s.telemetry;
  if (t !== undefined && t.rttMs !== null) {
    const loss = t.lossPct === null ? "loss unknown" : `loss ${t.lossPct.toFixed(1)} % over ${t.samples} probes`;
    const jitter = t.jitterMs === null ? "" : `, jitter ${t.jitterMs.toFixed(1)} ms`;
    const p95 = t.rttP95Ms === null ? "" : ` (p95 ${t.rttP95Ms.toFixed(1)} ms)`;
    rows.push(["tunnel", `RTT ${t.rttMs.toFixed(1)} ms${p95}${jitter}, ${loss}`]);
  }
  const m = s.pathMtu;
  if (m !== undefined && (m.mtu !== null || m.lowered > 0 || m.blackHoles > 0 || m.lastError !== null)) {
    const parts = [
      m.mtu === null ? "no active tunnel" : `${String(m.ifname)} ${String(m.mtu)}`,
      `MSS clamp ${m.mssClamp}`,
      ...(m.lowered > 0 ? [`lowered ${String(m.lowered)}x after full-size packets vanished`] : []),
      ...(m.blackHoles > 0 ? [`${String(m.blackHoles)} black hole(s) failed over`] : []),
      ...(m.lastError === null ? [] : [`last error: ${oneLine(m.lastError)}`]),
    ];
    rows.push(["MTU", parts.join(", ")]);
  }
  const sl = s.network?.monitor?.sleep;
  if (sl !== undefined) rows.push(["sleep", formatSleep(sl, opts)]);
  if (t?.export != null) {
    const x = t.export;
    const last =
      x.lastDeliveredAt === null
        ? "nothing delivered yet"
        : `last delivered ${formatDuration(Math.max(0, opts.now - x.lastDeliveredAt))} ago`;
    const problem = x.lastError === null ? "" : `; ${oneLine(x.lastError)}`;
    const lossy = x.dropped > 0 || x.rejected > 0 ? `, ${x.dropped} dropped, ${x.rejected} refused` : "";
    rows.push(["telemetry", `to ${x.endpoint}: ${x.pending} waiting${lossy}, ${last}${problem}`]);
  }
  if (s.error !== null) {
    const retry =
      s.error.nextRetryAt === null
        ? "no retry scheduled"
        : `next retry in ${formatDuration(Math.max(0, s.error.nextRetryAt - opts.now))}`;
    rows.push(["error", `${oneLine(s.error.reason)}; ${retry}`]);
  }
  const cp = s.daemon.recovery?.crashProtection;
  if (cp !== undefined && (!cp.inForce || cp.failedCopies.length > 0)) {
    const copies = cp.failedCopies.map((c) => `${c.path}: ${c.code ?? oneLine(c.message)}`).join("; ");
    const retry =
      cp.nextRetryAt === null
        ? ""
        : `; retry ${cp.retries + 1} in ${formatDuration(Math.max(0, cp.nextRetryAt - opts.now))}`;
    rows.push([
      "crash protection",
      `${cp.inForce ? "in force, but" : "NOT in force (a crash now lifts the kill switch):"} not written to ${copies}${retry}`,
    ]);
  }
  rows.push([
    "daemon",
    `detourd ${s.daemon.version}, pid ${s.daemon.pid}, up ${formatDuration(opts.now - s.daemon.startedAt)}, config ${s.daemon.configPath}`,
  ]);
  const head = worded
    ? `${SITUATION_LABELS[sit]}: ${explanation(s, { now: opts.now, clock, duration: formatDuration })}`
    : oneLine(s.summary);
  const out = [head, "", ...table(rows), ""];
  if (s.lastRace === null) out.push("last race: none");
  else {
    const [head, ...legs] = formatRace(s.lastRace, opts);
    out.push(`last ${head ?? ""}`, ...legs);
  }
  out.push(
    `last failover: ${s.lastFailover === null ? "none" : `${formatFailover(s.lastFailover)} (at ${clock(s.lastFailover.detectedAt)})`}`,
  );
  if (s.lastDrill != null) out.push(`last drill: ${formatDrillLine(s.lastDrill)} (at ${clock(s.lastDrill.startedAt)})`);
  for (const r of s.localNetworks?.refused ?? [])
    out.push(`refused local network ${r.prefix} on ${r.dev}: ${oneLine(r.reason)}`);
  for (const r of s.refused ?? [])
    out.push(
      `refused ${r.kind} ${r.value} for ${r.gateway} from ${r.source}: ${r.reason} (${r.count}x, last at ${clock(r.at)})`,
    );
  return out.join("\n") + "\n";
}

function reachability(c: GatewaysPayload["candidates"][number]): string {
  return c.kinds.map((k) => `${k}:${c.probe?.reachable[k] ?? "?"}`).join(" ");
}

/** `detour gateways`: one row per candidate in ranking order. */
export function formatGateways(g: GatewaysPayload): string {
  if (g.candidates.length === 0) return "no gateway candidates\n";
  const rows: string[][] = [["rank", "gateway", "address", "region", "priority", "latency", "reachable", "from"]];
  for (const c of g.candidates) {
    const latency =
      c.probe === null ? "not probed" : c.probe.latencyMs === null ? "no answer" : formatDuration(c.probe.latencyMs);
    rows.push([
      String(c.rank),
      c.name,
      c.address ?? "(unresolved)",
      c.region,
      String(c.priority),
      latency,
      reachability(c),
      c.sources.join(","),
    ]);
  }
  return table(rows, "").join("\n") + "\n";
}

/** `detour race`. */
export function formatLastRace(r: RaceRecord | null, opts: FormatOptions): string {
  return r === null ? "no race yet\n" : formatRace(r, opts).join("\n") + "\n";
}

/** `detour events`: one line per event, time first. */
export function formatEvent(e: ConnectionEvent, opts: Pick<FormatOptions, "clock"> = {}): string {
  const clock = opts.clock ?? localClock;
  const line = (kind: string, text: string): string => `${clock(e.at)}  ${kind.padEnd(8)}  ${text}`;
  switch (e.type) {
    case "state":
      return line("state", `${e.state}${e.detail === "" ? "" : `: ${oneLine(e.detail)}`}`);
    case "race-started":
      return line(
        "race",
        `${e.raceId} started (${e.reason}): ${e.legs.map((l) => `${l.id} ${legName(l)}`).join(", ")}`,
      );
    case "leg": {
      const r = e.record;
      const took =
        r.startedAt !== null && r.endedAt !== null ? ` after ${formatDuration(r.endedAt - r.startedAt)}` : "";
      const err = r.error === null ? "" : ` (${r.error.code}: ${oneLine(r.error.message)})`;
      return line("leg", `${e.raceId} ${r.leg.id} ${legName(r.leg)} ${r.outcome}${took}${err}`);
    }
    case "race-ended": {
      const r = e.race;
      const took = r.endedAt === null ? "" : ` after ${formatDuration(r.endedAt - r.startedAt)}`;
      const failed = r.legs.filter((l) => l.outcome === "failed").length;
      return line(
        "race",
        `${r.id} ended${took}: ${r.winner === null ? `no winner (${failed} of ${r.legs.length} legs failed)` : `winner ${legName(r.winner)}`}`,
      );
    }
    case "failover":
      return line("failover", formatFailover(e.failover));
    case "health": {
      const v = e.verdict;
      return line("health", `${e.legId} ${v.state}${v.state === "healthy" ? "" : `: ${oneLine(v.reason)}`}`);
    }
    case "drill":
      return line("drill", `${e.drill.id} ${formatDrillLine(e.drill)}`);
    case "kill-switch":
      return line("kill-switch", `${e.change} (now ${e.status.state}): ${oneLine(e.detail)}`);
    case "crash-protection":
      return line("crash", `protection ${e.inForce ? "in force" : "NOT in force"}: ${oneLine(e.detail)}`);
    case "path-mtu":
      return line(
        "mtu",
        `${e.legId} ${e.ifname} ${e.change}${e.to === null ? "" : ` ${String(e.from)} -> ${String(e.to)}`}: ${oneLine(e.detail)}`,
      );
  }
}

/**
 * The kill switch in one line: "in force (blocking), own traffic bound to gid 64950" plus, when anything went
 * wrong, the counts, the last error and the next retry.
 */
export function formatKillSwitch(k: KillSwitchStatus, opts: { now: number }): string {
  const state =
    k.state === "in-force"
      ? `in force (${k.mode ?? "-"})`
      : k.state === "fallback"
        ? "FALLBACK: everything but detourd's own traffic blocked"
        : k.state === "failed"
          ? "FAILED: not in force"
          : "off";
  const parts = [state];
  if (k.ownGroup !== null) parts.push(`own traffic bound to gid ${String(k.ownGroup)}`);
  if (k.restorations > 0) parts.push(`restored ${String(k.restorations)}x after others changed it`);
  if (k.applyFailures > 0) parts.push(`${String(k.applyFailures)} failed applies`);
  if (k.watcherRestarts > 0) parts.push(`watcher restarted ${String(k.watcherRestarts)}x`);
  if (k.lastError !== null && k.state !== "in-force" && k.state !== "off")
    parts.push(`last error: ${oneLine(k.lastError)}`);
  if (k.nextRetryAt !== null) parts.push(`next retry in ${formatDuration(Math.max(0, k.nextRetryAt - opts.now))}`);
  return parts.join("; ");
}

/**
 * Local network access in one line: which connected networks stay reachable outside the tunnel (each through its
 * own device); null when there is nothing to say (off by default, or on with nothing a protected network covers).
 */
export function localNetworksRow(l: StatusPayload["localNetworks"]): string | null {
  if (l === undefined) return null;
  const problem = l.lastError === null ? "" : `; connected networks unreadable, none allowed: ${oneLine(l.lastError)}`;
  if (!l.enabled) return l.mode === "off" ? `not allowed (setting off)${problem}` : null;
  const allowed = l.allowed.map((n) => `${n.prefix} on ${n.dev}${n.kind === "bridge" ? " (bridge)" : ""}`);
  if (allowed.length === 0 && l.refused.length === 0 && problem === "") return null;
  const refused = l.refused.length === 0 ? "" : `; ${String(l.refused.length)} refused (below)`;
  return `${allowed.length === 0 ? "none allowed" : `allowed outside the tunnel: ${allowed.join(", ")}`}${refused}${problem}`;
}
