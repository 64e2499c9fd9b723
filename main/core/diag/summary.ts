/**
 * The page a helpdesk engineer reads first: built from a bundle's (already redacted) data into a small model
 * (summary.json), rendered as one self-contained HTML page (summary.html: no script, no external resource, the
 * chart is inline SVG) and as terminal text for `detour diag inspect`. Pure.
 */
import type { Candidate, ConnectionEvent, ConnectionSnapshot, LegKind, RaceRecord } from "../connection/types.ts";
import type { RedactionReport } from "./redact.ts";

export interface ChartPoint {
  at: number;
  rttP50Ms: number | null;
  rttP95Ms: number | null;
  lossPct: number;
}

export interface SummaryFailure {
  at: number;
  what: string;
  reason: string;
}

export interface SummaryGateway {
  name: string;
  hostname: string;
  address: string | null;
  region: string;
  priority: number;
  protocols: string;
  latencyMs: number | null;
  role: "active" | "standby" | "";
}

export interface SummaryRace {
  id: string;
  reason: string;
  startedAt: number;
  durationMs: number | null;
  winner: string | null;
  legs: { leg: string; outcome: string; ms: number | null; error: string | null }[];
}

export interface SummaryModel {
  generatedAt: number;
  agentVersion: string;
  deviceId: string;
  policyHash: string;
  state: string;
  sentence: string;
  failures: SummaryFailure[];
  chart: ChartPoint[];
  /** What the chart's points are: ten-second samples, or per-second probe summaries when no sample exists yet. */
  chartResolution: "10s" | "1s";
  gateways: SummaryGateway[];
  races: SummaryRace[];
  redactions: RedactionReport | null;
}

export interface SummaryInputs {
  now: number;
  agentVersion: string;
  deviceId: string;
  policyHash: string;
  status: ConnectionSnapshot & { telemetry?: { rttMs: number | null; lossPct: number | null } };
  events: readonly ConnectionEvent[];
  candidates: readonly Candidate[];
  samples: readonly ChartPoint[];
  probeSeconds: readonly {
    at: number;
    role: string;
    sent: number;
    lost: number;
    rttAvgMs: number | null;
    rttMaxMs: number | null;
  }[];
}

/** The page lists this many recent failures and races; older ones stay in flight-recorder.json. */
export const MAX_FAILURES = 25;
export const MAX_RACES = 15;

const PROTOCOL_NAMES: Record<LegKind, string> = {
  wireguard: "WireGuard",
  ikev2: "IKEv2",
  "anyconnect-tls": "AnyConnect (TLS)",
  "anyconnect-dtls": "AnyConnect (DTLS)",
};

function protocolName(k: string | null): string {
  return k === null ? "?" : ((PROTOCOL_NAMES as Record<string, string | undefined>)[k] ?? k);
}

function fmtDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** The state in one sentence: what the tunnel does, how well, and since when. */
export function stateSentence(s: SummaryInputs["status"], now: number): string {
  const since = s.since === null ? "" : ` for ${fmtDuration(now - s.since)}`;
  const t = s.telemetry;
  switch (s.state) {
    case "connected": {
      const q =
        t !== undefined && t.rttMs !== null
          ? `; round trip ${t.rttMs.toFixed(1)} ms, ${(t.lossPct ?? 0).toFixed(1)} % loss`
          : "";
      const sb =
        s.standby === null
          ? "; no warm standby"
          : `; warm standby on ${s.standby.gateway} (${protocolName(s.standby.protocol)})`;
      return `Connected to ${s.gateway ?? "?"} over ${protocolName(s.protocol)}${since}${q}${sb}.`;
    }
    case "error":
      return `Not connected: ${s.error?.reason ?? s.summary}${s.error?.nextRetryAt == null ? "" : `; next retry in ${fmtDuration(s.error.nextRetryAt - now)}`}.`;
    case "disconnected":
      return `Disconnected${since} (${s.summary}).`;
    case "waiting-for-network":
      return `Waiting for a network${since}: no route to any gateway.`;
    case "resolving":
    case "racing":
    case "failing-over":
      return `${s.state === "failing-over" ? "Failing over" : "Connecting"}${since}: ${s.summary}.`;
  }
}

function legName(l: { gateway: string; kind: string }): string {
  return `${l.gateway} ${protocolName(l.kind)}`;
}

export function buildSummary(inp: SummaryInputs, redactions: RedactionReport | null = null): SummaryModel {
  const failures: SummaryFailure[] = [];
  const races = new Map<string, RaceRecord>();
  for (const e of inp.events) {
    switch (e.type) {
      case "leg":
        if (e.record.outcome === "failed")
          failures.push({
            at: e.at,
            what: `${legName(e.record.leg)} leg failed`,
            reason: e.record.error === null ? "no reason given" : `${e.record.error.code}: ${e.record.error.message}`,
          });
        break;
      case "failover":
        failures.push({
          at: e.at,
          what: `failover from ${legName(e.failover.from)}${e.failover.to === null ? "" : ` to ${legName(e.failover.to)}`}`,
          reason: `${e.failover.reason} (detected after ${e.failover.detectedAfterMs} ms${e.failover.restoredAfterMs === null ? "" : `, traffic back after ${e.failover.restoredAfterMs} ms`})`,
        });
        break;
      case "state":
        if (e.state === "error") failures.push({ at: e.at, what: "connection failed", reason: e.detail });
        break;
      case "health":
        if (e.verdict.state !== "healthy")
          failures.push({ at: e.at, what: `tunnel ${e.verdict.state} (leg ${e.legId})`, reason: e.verdict.reason });
        break;
      case "race-ended":
        races.set(e.race.id, e.race);
        break;
      case "drill":
        if (e.drill.verdict !== "pass")
          failures.push({
            at: e.at,
            what: `failover drill ${e.drill.verdict === "refused" ? "refused" : "failed"}`,
            reason: e.drill.reason,
          });
        break;
      case "kill-switch":
        if (e.change !== "in-force" && e.change !== "watcher-restarted")
          failures.push({ at: e.at, what: `kill switch ${e.change}`, reason: e.detail });
        break;
      case "path-mtu":
        failures.push({ at: e.at, what: `tunnel MTU ${e.change} (${e.ifname})`, reason: e.detail });
        break;
      case "crash-protection":
        if (!e.inForce) failures.push({ at: e.at, what: "crash protection not in force", reason: e.detail });
        break;
      case "race-started":
        break;
    }
  }
  if (inp.status.lastRace !== null && !races.has(inp.status.lastRace.id))
    races.set(inp.status.lastRace.id, inp.status.lastRace);
  failures.sort((a, b) => b.at - a.at);

  let chart: ChartPoint[] = [...inp.samples];
  let chartResolution: SummaryModel["chartResolution"] = "10s";
  if (chart.length < 2) {
    chartResolution = "1s";
    chart = inp.probeSeconds
      .filter((p) => p.role === "active" && p.sent > 0)
      .map((p) => ({
        at: p.at,
        rttP50Ms: p.rttAvgMs,
        rttP95Ms: p.rttMaxMs,
        lossPct: Math.round((1000 * p.lost) / p.sent) / 10,
      }));
  }

  const gateways: SummaryGateway[] = inp.candidates.map((c) => ({
    name: c.name,
    hostname: c.hostname,
    address: c.address,
    region: c.region,
    priority: c.priority,
    protocols: c.kinds.map(protocolName).join(", "),
    latencyMs: c.probe?.latencyMs ?? null,
    role: inp.status.gateway === c.name ? "active" : inp.status.standby?.gateway === c.name ? "standby" : "",
  }));

  return {
    generatedAt: inp.now,
    agentVersion: inp.agentVersion,
    deviceId: inp.deviceId,
    policyHash: inp.policyHash,
    state: inp.status.state,
    sentence: stateSentence(inp.status, inp.now),
    failures: failures.slice(0, MAX_FAILURES),
    chart,
    chartResolution,
    gateways,
    races: [...races.values()]
      .sort((a, b) => b.startedAt - a.startedAt)
      .slice(0, MAX_RACES)
      .map((r) => ({
        id: r.id,
        reason: r.reason,
        startedAt: r.startedAt,
        durationMs: r.endedAt === null ? null : r.endedAt - r.startedAt,
        winner: r.winner === null ? null : legName(r.winner),
        legs: r.legs.map((l) => ({
          leg: legName(l.leg),
          outcome: l.outcome,
          ms: l.startedAt !== null && l.endedAt !== null ? l.endedAt - l.startedAt : null,
          error: l.error === null ? null : `${l.error.code}: ${l.error.message}`,
        })),
      })),
    redactions,
  };
}

// ---- HTML ----

export function escapeHtml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );
}

function isoTime(at: number): string {
  return new Date(at)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");
}

function fmtMs(v: number | null): string {
  return v === null ? "–" : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
}

const CHART_W = 760;
const CHART_H = 220;
const PAD = { left: 48, right: 44, top: 12, bottom: 28 };

/** RTT (p50 line, p95 line) on the left axis and loss (bars) on the right axis, over the chart's time span. */
export function chartSvg(points: readonly ChartPoint[]): string {
  const w = CHART_W - PAD.left - PAD.right;
  const h = CHART_H - PAD.top - PAD.bottom;
  const head = `<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="${CHART_W}" height="${CHART_H}" viewBox="0 0 ${CHART_W} ${CHART_H}" role="img" aria-label="round trip and loss">`;
  if (points.length === 0)
    return `${head}<text x="${CHART_W / 2}" y="${CHART_H / 2}" text-anchor="middle" fill="#666">no tunnel measurements in this period</text></svg>`;
  const t0 = points[0]?.at ?? 0;
  const t1 = Math.max(t0 + 1, points[points.length - 1]?.at ?? t0 + 1);
  const rtts = points.flatMap((p) => [p.rttP50Ms, p.rttP95Ms]).filter((v): v is number => v !== null);
  const rttMax = Math.max(1, ...rtts) * 1.1;
  const lossMax = Math.max(5, ...points.map((p) => p.lossPct));
  const x = (at: number): number => PAD.left + ((at - t0) / (t1 - t0)) * w;
  const yr = (v: number): number => PAD.top + h - (v / rttMax) * h;
  const yl = (v: number): number => PAD.top + h - (v / lossMax) * h;
  const line = (sel: (p: ChartPoint) => number | null): string => {
    let d = "";
    let pen = false;
    for (const p of points) {
      const v = sel(p);
      if (v === null) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(p.at).toFixed(1)},${yr(v).toFixed(1)}`;
      pen = true;
    }
    return d;
  };
  const barW = Math.max(1, w / Math.max(1, points.length) - 1);
  const bars = points
    .filter((p) => p.lossPct > 0)
    .map(
      (p) =>
        `<rect class="loss" x="${(x(p.at) - barW / 2).toFixed(1)}" y="${yl(p.lossPct).toFixed(1)}" width="${barW.toFixed(1)}" height="${(PAD.top + h - yl(p.lossPct)).toFixed(1)}" fill="#e4572e" opacity="0.5"/>`,
    )
    .join("");
  const ticks = [0, 0.5, 1].map((f) => {
    const y = PAD.top + h - f * h;
    return `<line x1="${PAD.left}" x2="${PAD.left + w}" y1="${y}" y2="${y}" stroke="#ddd"/><text x="${PAD.left - 6}" y="${y + 4}" text-anchor="end" font-size="11">${escapeHtml(fmtMs(f * rttMax))}</text><text x="${PAD.left + w + 6}" y="${y + 4}" font-size="11" fill="#e4572e">${Math.round(f * lossMax)} %</text>`;
  });
  const tl = (at: number, anchor: string): string =>
    `<text x="${x(at).toFixed(1)}" y="${CHART_H - 8}" text-anchor="${anchor}" font-size="11">${escapeHtml(isoTime(at).slice(11))}</text>`;
  return (
    head +
    ticks.join("") +
    bars +
    `<path class="rtt-p95" d="${line((p) => p.rttP95Ms)}" fill="none" stroke="#9ab6e0" stroke-width="1.5"/>` +
    `<path class="rtt-p50" d="${line((p) => p.rttP50Ms)}" fill="none" stroke="#1f5fbf" stroke-width="2"/>` +
    tl(t0, "start") +
    tl(t1, "end") +
    "</svg>"
  );
}

function table(id: string, headers: readonly string[], rows: readonly (readonly string[])[], empty: string): string {
  if (rows.length === 0) return `<p id="${id}" class="empty">${escapeHtml(empty)}</p>`;
  const th = headers.map((x) => `<th>${escapeHtml(x)}</th>`).join("");
  const tr = rows.map((r) => `<tr>${r.map((c) => `<td>${escapeHtml(c)}</td>`).join("")}</tr>`).join("\n");
  return `<table id="${id}"><thead><tr>${th}</tr></thead><tbody>\n${tr}\n</tbody></table>`;
}

export function renderSummaryHtml(m: SummaryModel): string {
  const stateClass = m.state === "connected" ? "ok" : m.state === "error" ? "bad" : "warn";
  const failures = table(
    "failures",
    ["time (UTC)", "what", "reason"],
    m.failures.map((f) => [isoTime(f.at), f.what, f.reason]),
    "No failures recorded.",
  );
  const gateways = table(
    "gateways",
    ["gateway", "role", "host", "address", "region", "priority", "protocols", "probe RTT"],
    m.gateways.map((g) => [
      g.name,
      g.role,
      g.hostname,
      g.address ?? "unresolved",
      g.region,
      String(g.priority),
      g.protocols,
      fmtMs(g.latencyMs),
    ]),
    "No gateways known.",
  );
  const races = table(
    "races",
    ["started (UTC)", "reason", "took", "winner", "legs"],
    m.races.map((r) => [
      isoTime(r.startedAt),
      r.reason,
      fmtMs(r.durationMs),
      r.winner ?? "none",
      r.legs
        .map(
          (l) =>
            `${l.leg}: ${l.outcome}${l.ms === null ? "" : ` ${l.ms} ms`}${l.error === null ? "" : ` (${l.error})`}`,
        )
        .join("; "),
    ]),
    "No race recorded.",
  );
  const red = m.redactions;
  const redLine =
    red === null
      ? ""
      : `<p class="note">Redacted: ${
          Object.entries(red.removed)
            .filter(([, n]) => n > 0)
            .map(([k, n]) => `${n} ${escapeHtml(k)}`)
            .join(", ") || "no secrets found"
        }; pseudonymised: ${
          Object.entries(red.pseudonymised)
            .filter(([, n]) => n > 0)
            .map(([k, n]) => `${n} ${escapeHtml(k)}`)
            .join(", ") || "nothing"
        }. See redaction-report.json.</p>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Detour diagnostics: ${escapeHtml(m.state)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
#state{font-size:17px;padding:10px 14px;border-radius:6px;border-left:6px solid}
#state.ok{background:#eaf6ec;border-color:#2e8b57} #state.warn{background:#fff6e0;border-color:#d49b00} #state.bad{background:#fdecea;border-color:#c62828}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e3e3;vertical-align:top}
th{background:#f4f4f4;font-weight:600} .meta,.note,.empty{color:#555} .legend span{margin-right:16px}
</style></head><body>
<h1>Detour diagnostic bundle</h1>
<p class="meta">agent ${escapeHtml(m.agentVersion)} · device ${escapeHtml(m.deviceId)} · policy ${escapeHtml(m.policyHash)} · created ${escapeHtml(isoTime(m.generatedAt))}</p>
<p id="state" class="${stateClass}">${escapeHtml(m.sentence)}</p>
<h2>Recent failures</h2>
${failures}
<h2>Latency and loss (${m.chartResolution === "10s" ? "ten-second samples, last hour" : "per second, last minutes"})</h2>
<p class="legend"><span style="color:#1f5fbf">━ RTT median</span><span style="color:#9ab6e0">━ RTT ${m.chartResolution === "10s" ? "p95" : "max per second"}</span><span style="color:#e4572e">▮ loss %</span></p>
${chartSvg(m.chart)}
<h2>Gateways</h2>
${gateways}
<h2>Race history</h2>
${races}
${redLine}
</body></html>
`;
}

// ---- terminal ----

const SPARK = "▁▂▃▄▅▆▇█";

function sparkline(values: readonly (number | null)[], width: number): string {
  if (values.length === 0) return "";
  const step = Math.max(1, Math.ceil(values.length / width));
  const buckets: (number | null)[] = [];
  for (let i = 0; i < values.length; i += step) {
    const vs = values.slice(i, i + step).filter((v): v is number => v !== null);
    buckets.push(vs.length === 0 ? null : Math.max(...vs));
  }
  const max = Math.max(1e-9, ...buckets.filter((v): v is number => v !== null));
  return buckets
    .map((v) =>
      v === null ? " " : (SPARK[Math.min(SPARK.length - 1, Math.floor((v / max) * (SPARK.length - 1)))] ?? " "),
    )
    .join("");
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

export function renderSummaryText(m: SummaryModel): string {
  const out: string[] = [];
  out.push(
    `Detour diagnostics · agent ${m.agentVersion} · device ${m.deviceId} · policy ${m.policyHash} · ${isoTime(m.generatedAt)}`,
  );
  out.push("", m.sentence, "");
  out.push(`Recent failures (${m.failures.length}):`);
  if (m.failures.length === 0) out.push("  none");
  for (const f of m.failures.slice(0, 10)) out.push(`  ${isoTime(f.at).slice(11)}  ${f.what}: ${f.reason}`);
  const rtts = m.chart.map((p) => p.rttP50Ms);
  const known = rtts.filter((v): v is number => v !== null);
  out.push("", `Latency (${m.chartResolution} points, ${m.chart.length}):`);
  if (known.length === 0) out.push("  no measurements");
  else {
    out.push(`  RTT  ${sparkline(rtts, 60)}  max ${fmtMs(Math.max(...known))}`);
    out.push(
      `  loss ${sparkline(
        m.chart.map((p) => p.lossPct),
        60,
      )}  max ${Math.max(...m.chart.map((p) => p.lossPct)).toFixed(1)} %`,
    );
  }
  out.push("", "Gateways:");
  for (const g of m.gateways)
    out.push(
      `  ${pad(g.name, 8)} ${pad(g.role, 8)} ${pad(g.address ?? "unresolved", 16)} ${pad(g.region, 10)} prio ${pad(String(g.priority), 4)} ${pad(fmtMs(g.latencyMs), 8)} ${g.protocols}`,
    );
  out.push("", "Races:");
  if (m.races.length === 0) out.push("  none");
  for (const r of m.races.slice(0, 8))
    out.push(
      `  ${isoTime(r.startedAt).slice(11)}  ${pad(r.reason, 8)} ${pad(fmtMs(r.durationMs), 8)} winner ${r.winner ?? "none"} (${r.legs.length} legs)`,
    );
  return out.join("\n") + "\n";
}
