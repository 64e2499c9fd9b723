/**
 * /metrics: the fleet's aggregates in Prometheus text exposition format 0.0.4. The values are computed per
 * request from the store for one organisation, so a tiny formatter fits better than prom-client, whose
 * registries model one process's own long-lived instruments.
 */
import { METRIC } from "../core/telemetry/names.ts";
import type { TelemetryStorage } from "./storage.ts";

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** The window the gauges aggregate over: short enough to show a gateway going bad, long enough to be stable. */
export const METRICS_WINDOW_MS = 5 * 60_000;
/** Failovers are counted over an hour: they are rare, and a 5-minute window would mostly show zeros. */
export const FAILOVER_WINDOW_MS = 60 * 60_000;

export interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples: { labels?: Record<string, string>; value: number }[];
}

/** Label values escape backslash, double quote and newline; HELP text escapes backslash and newline. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

export function formatFamilies(families: readonly Family[]): string {
  const out: string[] = [];
  for (const f of families) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(f.name)) throw new Error(`invalid metric name ${f.name}`);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      const l = labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")}}`;
      out.push(`${f.name}${l} ${formatValue(s.value)}`);
    }
  }
  return out.join("\n") + "\n";
}

/** The organisation's fleet aggregates at `nowMs`. */
export async function fleetFamilies(store: TelemetryStorage, org: string, nowMs: number): Promise<Family[]> {
  const [health, fleet, byState, failovers] = await Promise.all([
    store.gatewayHealth(org, nowMs - METRICS_WINDOW_MS, METRIC.rtt, METRIC.loss),
    store.fleet(org),
    store.agentsByState(org),
    store.failoverCounts(org, nowMs - FAILOVER_WINDOW_MS),
  ]);
  return [
    {
      name: "detour_agents",
      help: "Agents known to the collector, by their latest reported state.",
      type: "gauge",
      samples: byState.map((r) => ({ labels: { state: r.state }, value: r.n })),
    },
    {
      name: "detour_agent_last_seen_seconds",
      help: "Seconds since the most recently heard agent sent telemetry.",
      type: "gauge",
      samples:
        fleet.length === 0
          ? []
          : [{ value: Math.max(0, (nowMs - Math.max(...fleet.map((a) => a.lastSeenMs))) / 1000) }],
    },
    {
      name: "detour_gateway_agents_connected",
      help: "Agents whose latest state is connected through the gateway.",
      type: "gauge",
      samples: health.map((h) => ({ labels: { gateway: h.gateway }, value: h.agentsConnected })),
    },
    {
      name: "detour_gateway_rtt_ms",
      help: "Mean in-tunnel round-trip time through the gateway over the last 5 minutes, across agents.",
      type: "gauge",
      samples: health.flatMap((h) =>
        h.rttMeanMs === null ? [] : [{ labels: { gateway: h.gateway }, value: round(h.rttMeanMs) }],
      ),
    },
    {
      name: "detour_gateway_loss_percent",
      help: "Mean probe loss through the gateway over the last 5 minutes, across agents.",
      type: "gauge",
      samples: health.flatMap((h) =>
        h.lossMeanPercent === null ? [] : [{ labels: { gateway: h.gateway }, value: round(h.lossMeanPercent) }],
      ),
    },
    {
      name: "detour_failovers_last_hour",
      help: "Failovers in the last hour by the gateway left, the gateway moved to and the reason.",
      type: "gauge",
      samples: failovers.map((r) => ({ labels: { from: r.from, to: r.to, reason: r.reason }, value: r.n })),
    },
  ];
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}
