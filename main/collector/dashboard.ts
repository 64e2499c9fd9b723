/**
 * The collector's dashboard: server-rendered HTML with inline SVG charts and no script, font or fetch from
 * anywhere (the page's Content-Security-Policy forbids them), so it works offline and leaks nothing. The fleet
 * page shows agents, per-gateway health and the failover timeline; the agent page its latency and loss charts.
 */
import { METRIC } from "../core/telemetry/names.ts";
import type { AgentRow, BundleRow, FailoverRow, GatewayHealth, SeriesPoint, TelemetryStorage } from "./storage.ts";

/** The dashboard looks back this far by default: a working day's worth of failovers and charts. */
export const DEFAULT_WINDOW_MS = 6 * 60 * 60_000;
/** The longest window a query may ask for; charts of more would be unreadable and the query slow. */
export const MAX_WINDOW_MS = 7 * 24 * 60 * 60_000;
/** An agent silent this long is shown as stale: agents export every few seconds to a minute. */
export const STALE_AFTER_MS = 5 * 60_000;
/** The timeline lists at most this many failovers; the window can be narrowed for older ones. */
const TIMELINE_LIMIT = 200;
/** Charts are drawn from at most this many points (evenly sampled) so a page stays small. */
const CHART_MAX_POINTS = 600;

export const DASHBOARD_CSP =
  "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

export function escapeHtml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function h(s: string | number | null | undefined): string {
  return s === null || s === undefined ? "–" : escapeHtml(String(s));
}

function ago(nowMs: number, tsMs: number): string {
  const s = Math.max(0, Math.round((nowMs - tsMs) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function iso(tsMs: number): string {
  return new Date(tsMs).toISOString().replace(".000Z", "Z");
}

function fmt(v: number | null, digits = 1): string {
  return v === null ? "–" : v.toFixed(digits);
}

const STYLE = `body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}th{background:#f4f4f4}
.num{text-align:right}.connected{color:#176d2c}.failing-over,.racing,.resolving{color:#9a6700}.error{color:#b3261e}.stale{color:#888}
.bad{color:#b3261e;font-weight:600}svg{background:#fafafa;border:1px solid #ddd}.muted{color:#777}`;

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body>${body}</body></html>\n`;
}

function windowLabel(windowMs: number): string {
  return windowMs % 3_600_000 === 0 ? `${windowMs / 3_600_000} h` : `${Math.round(windowMs / 60_000)} min`;
}

/** The window a request asks for with ?hours=N, bounded; the default otherwise. */
export function windowOf(query: URLSearchParams): number {
  const hours = Number(query.get("hours"));
  if (!Number.isFinite(hours) || hours <= 0) return DEFAULT_WINDOW_MS;
  return Math.min(MAX_WINDOW_MS, Math.round(hours * 3_600_000));
}

function agentLink(deviceId: string, windowMs: number): string {
  return `<a href="/agents/${encodeURIComponent(deviceId)}?hours=${windowMs / 3_600_000}">${h(deviceId)}</a>`;
}

function fleetTable(agents: AgentRow[], nowMs: number, windowMs: number): string {
  if (agents.length === 0) return `<p class="muted">No agent has reported yet.</p>`;
  const rows = agents.map((a) => {
    const stale = nowMs - a.lastSeenMs > STALE_AFTER_MS;
    return `<tr class="agent"><td>${agentLink(a.deviceId, windowMs)}</td><td class="${stale ? "stale" : escapeHtml(a.state)}">${h(a.state)}${stale ? " (stale)" : ""}</td>
<td>${h(a.gateway)}</td><td>${h(a.protocol)}</td><td>${h(a.serviceVersion)}</td><td>${h(a.policyHash?.slice(0, 12))}</td><td title="${iso(a.lastSeenMs)}">${ago(nowMs, a.lastSeenMs)}</td></tr>`;
  });
  return `<table><tr><th>device</th><th>state</th><th>gateway</th><th>protocol</th><th>version</th><th>policy</th><th>last seen</th></tr>${rows.join("\n")}</table>`;
}

function gatewayTable(health: GatewayHealth[]): string {
  if (health.length === 0) return `<p class="muted">No gateway data in this window.</p>`;
  const rows = health.map(
    (
      g,
    ) => `<tr class="gateway"><td>${h(g.gateway)}</td><td class="num">${g.agentsConnected}</td><td class="num">${g.agentsReporting}</td>
<td class="num">${fmt(g.rttMeanMs)}</td><td class="num">${fmt(g.lossMeanPercent)}</td><td class="num${g.failoversAway > 0 ? " bad" : ""}">${g.failoversAway}</td>
<td class="num">${g.failoversTo}</td><td>${h(g.topReason)}</td></tr>`,
  );
  return `<table><tr><th>gateway</th><th>agents on it</th><th>agents reporting</th><th>mean RTT ms</th><th>mean loss %</th><th>failovers away</th><th>failovers to</th><th>main reason for leaving</th></tr>${rows.join("\n")}</table>`;
}

/** The failover timeline: one mark per failover on a time axis (colour by reason), then the list. */
function timeline(failovers: FailoverRow[], nowMs: number, windowMs: number, withDevice: boolean): string {
  if (failovers.length === 0) return `<p class="muted">No failover in the last ${windowLabel(windowMs)}.</p>`;
  const W = 900;
  const H = 50;
  const from = nowMs - windowMs;
  const reasons = [...new Set(failovers.map((f) => f.reason ?? "unknown"))].sort();
  const palette = ["#b3261e", "#9a6700", "#1f5fbf", "#6b3fa0", "#176d2c", "#555"];
  const colour = (r: string | null): string => palette[reasons.indexOf(r ?? "unknown") % palette.length] ?? "#555";
  const marks = failovers.map((f) => {
    const x = 10 + ((f.tsMs - from) / windowMs) * (W - 20);
    return `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="8" y2="${H - 14}" stroke="${colour(f.reason)}" stroke-width="2"><title>${h(iso(f.tsMs))} ${h(f.from)} → ${h(f.to)}: ${h(f.reason)}</title></line>`;
  });
  const axis = `<text x="10" y="${H - 2}" font-size="10">${h(iso(from))}</text><text x="${W - 10}" y="${H - 2}" font-size="10" text-anchor="end">now</text>`;
  const legend = reasons.map((r) => `<span style="color:${colour(r)}">■</span> ${h(r)}`).join(" &nbsp; ");
  const rows = failovers.map(
    (
      f,
    ) => `<tr class="failover"><td>${h(iso(f.tsMs))}</td>${withDevice ? `<td>${agentLink(f.deviceId, windowMs)}</td>` : ""}<td>${h(f.from)}${f.fromProtocol === null ? "" : `/${h(f.fromProtocol)}`}</td>
<td>${h(f.to)}${f.toProtocol === null ? "" : `/${h(f.toProtocol)}`}</td><td>${h(f.reason)}</td><td class="num">${h(f.detectedAfterMs)}</td><td class="num">${h(f.restoredAfterMs)}</td></tr>`,
  );
  return `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="failover timeline">${marks.join("")}${axis}</svg><p>${legend}</p>
<table><tr><th>time</th>${withDevice ? "<th>device</th>" : ""}<th>from</th><th>to</th><th>reason</th><th>detected after ms</th><th>restored after ms</th></tr>${rows.join("\n")}</table>`;
}

/** A line chart of one series over the window, one polyline per gateway (so a failover shows as a change of colour). */
export function lineChart(points: SeriesPoint[], nowMs: number, windowMs: number, unit: string, label: string): string {
  const W = 900;
  const H = 180;
  const PAD = 34;
  if (points.length === 0)
    return `<p class="muted">No ${escapeHtml(label)} data in the last ${windowLabel(windowMs)}.</p>`;
  const step = Math.max(1, Math.ceil(points.length / CHART_MAX_POINTS));
  const sampled = points.filter((_, i) => i % step === 0);
  const from = nowMs - windowMs;
  const max = Math.max(1, ...sampled.map((p) => p.value)) * 1.1;
  const x = (t: number): number => PAD + ((t - from) / windowMs) * (W - PAD - 10);
  const y = (v: number): number => H - 20 - (v / max) * (H - 30);
  const gateways = [...new Set(sampled.map((p) => p.gateway ?? "?"))].sort();
  const palette = ["#1f5fbf", "#b3261e", "#176d2c", "#9a6700", "#6b3fa0"];
  const lines = gateways.map((g, i) => {
    const pts = sampled
      .filter((p) => (p.gateway ?? "?") === g)
      .map((p) => `${x(p.tsMs).toFixed(1)},${y(p.value).toFixed(1)}`);
    return `<polyline fill="none" stroke="${palette[i % palette.length] ?? "#555"}" stroke-width="1.5" points="${pts.join(" ")}"><title>${h(g)}</title></polyline>`;
  });
  const legend = gateways
    .map((g, i) => `<span style="color:${palette[i % palette.length] ?? "#555"}">■</span> ${h(g)}`)
    .join(" &nbsp; ");
  const grid = [0, 0.5, 1].map((f) => {
    const v = (max / 1.1) * f;
    return `<line x1="${PAD}" x2="${W - 10}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#e4e4e4"/><text x="${PAD - 4}" y="${(y(v) + 3).toFixed(1)}" font-size="10" text-anchor="end">${v.toFixed(v < 10 ? 1 : 0)}</text>`;
  });
  return `<svg class="chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeHtml(label)}">${grid.join("")}${lines.join("")}
<text x="${PAD}" y="${H - 4}" font-size="10">${h(iso(from))}</text><text x="${W - 10}" y="${H - 4}" font-size="10" text-anchor="end">now (${escapeHtml(unit)})</text></svg><p>${legend}</p>`;
}

export async function fleetPage(
  store: TelemetryStorage,
  org: string,
  nowMs: number,
  windowMs: number,
): Promise<string> {
  const since = nowMs - windowMs;
  const [agents, health, failovers] = await Promise.all([
    store.fleet(org),
    store.gatewayHealth(org, since, METRIC.rtt, METRIC.loss),
    store.failovers(org, since, TIMELINE_LIMIT),
  ]);
  const windows = [1, 6, 24, 168].map((hrs) => `<a href="/?hours=${hrs}">${hrs} h</a>`).join(" · ");
  return page(
    `Detour fleet: ${org}`,
    `<h1>Detour fleet of <em>${h(org)}</em></h1><p class="muted">${agents.length} agents · window ${windowLabel(windowMs)} (${windows}) · rendered ${h(iso(nowMs))}</p>
<h2>Agents</h2>${fleetTable(agents, nowMs, windowMs)}
<h2>Gateway health (across agents, last ${windowLabel(windowMs)})</h2>${gatewayTable(health)}
<h2>Failover timeline</h2>${timeline(failovers, nowMs, windowMs, true)}`,
  );
}

export async function agentPage(
  store: TelemetryStorage,
  org: string,
  agent: AgentRow,
  nowMs: number,
  windowMs: number,
): Promise<string> {
  const since = nowMs - windowMs;
  const [rtt, loss, failovers, bundles] = await Promise.all([
    store.series(org, agent.deviceId, METRIC.rtt, since),
    store.series(org, agent.deviceId, METRIC.loss, since),
    store.failovers(org, since, TIMELINE_LIMIT, agent.deviceId),
    store.bundles(org, agent.deviceId),
  ]);
  return page(
    `Detour agent ${agent.deviceId}`,
    `<p><a href="/?hours=${windowMs / 3_600_000}">← fleet</a></p><h1>Agent ${h(agent.deviceId)}</h1>
<p>state <b class="${escapeHtml(agent.state)}">${h(agent.state)}</b> · gateway ${h(agent.gateway)} · protocol ${h(agent.protocol)} · version ${h(agent.serviceVersion)} · last seen ${ago(nowMs, agent.lastSeenMs)}</p>
<h2>Latency (mean in-tunnel RTT, ms)</h2>${lineChart(rtt, nowMs, windowMs, "ms", "latency")}
<h2>Loss (%)</h2>${lineChart(loss, nowMs, windowMs, "%", "loss")}
<h2>Failovers</h2>${timeline(failovers, nowMs, windowMs, false)}
<h2>Diagnostic bundles</h2>${bundleList(bundles, nowMs)}`,
  );
}

function bundleList(rows: readonly BundleRow[], nowMs: number): string {
  if (rows.length === 0) return "<p>none uploaded</p>";
  const items = rows.map(
    (b) =>
      `<li><a href="/bundles/${h(b.id)}/summary">${h(b.name)}</a> · ${Math.round(b.bytes / 1024)} KiB · ${ago(nowMs, b.receivedMs)} · <a href="/bundles/${h(b.id)}">download</a></li>`,
  );
  return `<ul>${items.join("")}</ul>`;
}
