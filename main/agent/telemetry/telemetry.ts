/**
 * detourd's telemetry: the OpenTelemetry JS SDK measures (metrics) and records events (OTLP logs); its exports
 * are serialised to OTLP protobuf by the SDK's own serializers and written to the on-disk spool, which the
 * sender drains to the organisation's collector. The SDK is used rather than hand-written OTLP because the
 * protocol is the standard one: an organisation can point agents at any OpenTelemetry Collector instead.
 */
import { createHash, randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Attributes } from "@opentelemetry/api";
import { SeverityNumber } from "@opentelemetry/api-logs";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import { ProtobufLogsSerializer, ProtobufMetricsSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchLogRecordProcessor,
  LoggerProvider,
  type LogRecordExporter,
  type ReadableLogRecord,
} from "@opentelemetry/sdk-logs";
import {
  AggregationTemporality,
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from "@opentelemetry/sdk-metrics";
import type { TelemetryConfig } from "../../core/config/schema.ts";
import type { ConnectionEvent, LegKind, ProbeSample } from "../../core/connection/types.ts";
import type { Secret } from "../../core/secret.ts";
import type { TunnelStats } from "../../core/tunnel/engine-types.ts";
import {
  AGENT_METRIC,
  ATTR,
  EVENT,
  FAILOVER_ATTRIBUTES,
  METRIC,
  RESOURCE,
  RTT_BUCKETS_MS,
  SERVICE_NAME,
} from "../../core/telemetry/names.ts";
import type { Logger } from "../log.ts";
import { writeFileAtomicSync } from "../../shared/atomic-write.ts";
import { withTimeout } from "../../shared/with-timeout.ts";
import { HOST_SAMPLE_QUIET_STATES, HostSampler } from "./host-facts.ts";
import type { TelemetryStatus } from "../../core/telemetry/status.ts";
import { ReachabilityChecker } from "./reachability.ts";
import { Spool, type SpoolKind } from "./spool.ts";
import { SpoolSender, type Post } from "./sender.ts";
import { redactUrlsDeep } from "../../core/diag/redact.ts";

/** Events are batched for a second: a failover's burst (state, race, failover) becomes one request. */
export const LOG_BATCH_DELAY_MS = 1000;
/** systeminformation is sampled this often; host health changes slowly and some probes shell out. */
export const HOST_SAMPLE_MS = 30_000;
/** Engine statistics (a UAPI or VICI round trip) are read at most this often, and time out after this. */
export const ENGINE_STATS_TIMEOUT_MS = 2000;

/** What the daemon lets telemetry read; every call is cheap and never throws. */
export interface TelemetrySource {
  state(): string;
  /** The leg carrying traffic. */
  active(): { legId: string; gateway: string; protocol: LegKind } | null;
  health(): {
    rttP50Ms: number | null;
    rttP95Ms: number | null;
    jitterMs: number | null;
    lossPct: number | null;
    samples: number;
  } | null;
  engineStats(): Promise<TunnelStats | null>;
}

export interface TelemetryOptions {
  config: TelemetryConfig;
  token: Secret | null;
  stateDir: string;
  version: string;
  organisation: string;
  /** The exact bytes of the effective policy: its hash says which policy a device runs without revealing it. */
  policyBytes: string;
  source: TelemetrySource;
  log: Logger;
  /** Tests inject the transport. */
  post?: Post;
}

/** A stable random id for this device, kept in the state folder: no host name or user in telemetry. */
export function deviceIdIn(stateDir: string): string {
  const path = join(stateDir, "device-id");
  if (existsSync(path)) {
    const v = readFileSync(path, "utf8").trim();
    if (/^[0-9a-f-]{36}$/.test(v)) return v;
  }
  const id = randomUUID();
  writeFileAtomicSync(path, id + "\n");
  return id;
}

export function policyHash(bytes: string): string {
  return createHash("sha256").update(bytes).digest("hex").slice(0, 16);
}

/** Every export is serialised by the SDK's OTLP serializer and spooled before the SDK is told it succeeded. */
class SpoolingMetricExporter implements PushMetricExporter {
  constructor(readonly spoolTo: (kind: SpoolKind, body: Uint8Array) => boolean) {}
  export(metrics: ResourceMetrics, done: (r: ExportResult) => void): void {
    if (metrics.scopeMetrics.every((s) => s.metrics.length === 0)) {
      done({ code: ExportResultCode.SUCCESS });
      return;
    }
    const body = ProtobufMetricsSerializer.serializeRequest(metrics);
    done({
      code: body !== undefined && this.spoolTo("metrics", body) ? ExportResultCode.SUCCESS : ExportResultCode.FAILED,
    });
  }
  /** Delta: each export holds its own interval's distribution, which the collector charts as is. */
  selectAggregationTemporality(): AggregationTemporality {
    return AggregationTemporality.DELTA;
  }
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

class SpoolingLogExporter implements LogRecordExporter {
  constructor(readonly spoolTo: (kind: SpoolKind, body: Uint8Array) => boolean) {}
  export(logs: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    if (logs.length === 0) {
      done({ code: ExportResultCode.SUCCESS });
      return;
    }
    const body = ProtobufLogsSerializer.serializeRequest(logs);
    done({
      code: body !== undefined && this.spoolTo("logs", body) ? ExportResultCode.SUCCESS : ExportResultCode.FAILED,
    });
  }
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

function classifyReason(reason: string): string {
  const head = /^(dead|leg-down|brownout)/.exec(reason);
  return head?.[1] ?? "other";
}

export class Telemetry {
  readonly deviceId: string;
  readonly policyHash: string;
  readonly #opts: TelemetryOptions;
  readonly #spool: Spool;
  readonly #sender: SpoolSender;
  readonly #meters: MeterProvider;
  readonly #logs: LoggerProvider;
  readonly #host = new HostSampler();
  readonly #reach: ReachabilityChecker;
  readonly #record: {
    rtt: ReturnType<ReturnType<MeterProvider["getMeter"]>["createHistogram"]>;
    probes: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
    races: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
    raceDuration: ReturnType<ReturnType<MeterProvider["getMeter"]>["createHistogram"]>;
    legFailures: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
    failovers: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
    detected: ReturnType<ReturnType<MeterProvider["getMeter"]>["createHistogram"]>;
    restored: ReturnType<ReturnType<MeterProvider["getMeter"]>["createHistogram"]>;
    appLatency: ReturnType<ReturnType<MeterProvider["getMeter"]>["createHistogram"]>;
    appChecks: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
    killSwitch: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
    pathMtu: ReturnType<ReturnType<MeterProvider["getMeter"]>["createCounter"]>;
  };

  constructor(opts: TelemetryOptions) {
    this.#opts = opts;
    this.deviceId = deviceIdIn(opts.stateDir);
    this.policyHash = policyHash(opts.policyBytes);
    const cfg = opts.config;
    this.#spool = Spool.open({
      dir: join(opts.stateDir, "telemetry-spool"),
      maxBytes: cfg.spool.maxBytes,
      maxRecords: cfg.spool.maxRecords,
    });
    this.#sender = new SpoolSender({
      spool: this.#spool,
      endpoint: cfg.endpoint,
      token: opts.token,
      deviceId: this.deviceId,
      ...(opts.post === undefined ? {} : { post: opts.post }),
      onProblem: (p) => {
        opts.log.warn("telemetry delivery problem", p);
      },
    });
    const resource = resourceFromAttributes({
      [RESOURCE.serviceName]: SERVICE_NAME,
      [RESOURCE.serviceVersion]: opts.version,
      [RESOURCE.deviceId]: this.deviceId,
      [RESOURCE.organisation]: opts.organisation,
      [RESOURCE.policyHash]: this.policyHash,
      [RESOURCE.os]: process.platform,
    });
    const spoolTo = (kind: SpoolKind, body: Uint8Array): boolean => {
      try {
        const r = this.#spool.put(kind, body);
        if (r.dropped > 0) opts.log.warn("telemetry spool full: oldest records dropped", { dropped: r.dropped });
        this.#sender.kick();
        return true;
      } catch (err) {
        opts.log.error("telemetry spool write failed", { err });
        return false;
      }
    };
    this.#meters = new MeterProvider({
      resource,
      readers: [
        new PeriodicExportingMetricReader({
          exporter: new SpoolingMetricExporter(spoolTo),
          exportIntervalMillis: cfg.intervalMs,
          exportTimeoutMillis: Math.min(cfg.intervalMs, 30_000),
        }),
      ],
    });
    this.#logs = new LoggerProvider({
      resource,
      processors: [
        new BatchLogRecordProcessor({
          exporter: new SpoolingLogExporter(spoolTo),
          scheduledDelayMillis: LOG_BATCH_DELAY_MS,
        }),
      ],
    });
    const meter = this.#meters.getMeter("detourd", opts.version);
    const buckets = { advice: { explicitBucketBoundaries: RTT_BUCKETS_MS } };
    this.#record = {
      rtt: meter.createHistogram(METRIC.rtt, {
        unit: "ms",
        description: "round trip of in-tunnel probes through the active tunnel",
        ...buckets,
      }),
      probes: meter.createCounter(AGENT_METRIC.probes, { description: "in-tunnel probes by result" }),
      races: meter.createCounter(AGENT_METRIC.races, { description: "races by reason and outcome" }),
      raceDuration: meter.createHistogram(AGENT_METRIC.raceDuration, { unit: "ms", ...buckets }),
      legFailures: meter.createCounter(AGENT_METRIC.legFailures, {
        description: "legs that failed, by protocol and error code",
      }),
      failovers: meter.createCounter(AGENT_METRIC.failovers, { description: "failovers by cause and path" }),
      detected: meter.createHistogram(AGENT_METRIC.failoverDetected, { unit: "ms", ...buckets }),
      restored: meter.createHistogram(AGENT_METRIC.failoverRestored, { unit: "ms", ...buckets }),
      appLatency: meter.createHistogram(AGENT_METRIC.appLatency, { unit: "ms", ...buckets }),
      appChecks: meter.createCounter(AGENT_METRIC.appChecks, {
        description: "reachability checks of internal URLs by result",
      }),
      pathMtu: meter.createCounter(AGENT_METRIC.pathMtu, {
        description: "tunnel MTU lowered after a black hole, black holes, failed MTU or MSS clamp steps",
      }),
      killSwitch: meter.createCounter(AGENT_METRIC.killSwitch, {
        description: "kill switch failures, fallbacks, recoveries and restorations, by change",
      }),
    };
    const src = opts.source;
    const activeAttrs = (): Attributes | null => {
      const a = src.active();
      return a === null ? null : { [ATTR.gateway]: a.gateway, [ATTR.protocol]: a.protocol };
    };
    const gauge = (
      name: string,
      unit: string,
      read: () => number | null,
      attrs: () => Attributes | null = activeAttrs,
    ): void => {
      meter.createObservableGauge(name, { unit }).addCallback((r) => {
        const a = attrs();
        const v = read();
        if (a !== null && v !== null && Number.isFinite(v)) r.observe(v, a);
      });
    };
    gauge(AGENT_METRIC.rttP50, "ms", () => src.health()?.rttP50Ms ?? null);
    gauge(AGENT_METRIC.rttP95, "ms", () => src.health()?.rttP95Ms ?? null);
    gauge(METRIC.jitter, "ms", () => src.health()?.jitterMs ?? null);
    gauge(METRIC.loss, "%", () => src.health()?.lossPct ?? null);
    meter.createObservableGauge(AGENT_METRIC.state).addCallback((r) => {
      const a = src.active();
      r.observe(1, { [ATTR.state]: src.state(), [ATTR.gateway]: a?.gateway ?? "", [ATTR.protocol]: a?.protocol ?? "" });
    });
    const engine = meter.createObservableGauge(METRIC.rxBytes, { unit: "By" });
    const engineTx = meter.createObservableGauge(METRIC.txBytes, { unit: "By" });
    const heard = meter.createObservableGauge(AGENT_METRIC.lastHeard, { unit: "s" });
    meter.addBatchObservableCallback(
      async (r) => {
        const a = activeAttrs();
        if (a === null) return;
        const st = await withTimeout(() => src.engineStats(), ENGINE_STATS_TIMEOUT_MS, "engine statistics").catch(
          () => null,
        );
        if (st === null) return;
        r.observe(engine, st.rxBytes, a);
        r.observe(engineTx, st.txBytes, a);
        if (st.lastRxAgoMs !== null) r.observe(heard, st.lastRxAgoMs / 1000, a);
      },
      [engine, engineTx, heard],
    );
    const hostAttrs = (): Attributes => ({});
    gauge(AGENT_METRIC.hostCpu, "%", () => this.#host.latest()?.cpuPct ?? null, hostAttrs);
    gauge(AGENT_METRIC.hostMemory, "%", () => this.#host.latest()?.memoryPct ?? null, hostAttrs);
    gauge(AGENT_METRIC.hostDisk, "%", () => this.#host.latest()?.diskPct ?? null, hostAttrs);
    gauge(AGENT_METRIC.hostInterfacesUp, "1", () => this.#host.latest()?.interfacesUp ?? null, hostAttrs);
    gauge(AGENT_METRIC.spoolPending, "1", () => this.#spool.stats().pending, hostAttrs);
    gauge(AGENT_METRIC.spoolDropped, "1", () => this.#spool.stats().dropped, hostAttrs);
    gauge(AGENT_METRIC.spoolRejected, "1", () => this.#spool.stats().rejected, hostAttrs);
    this.#reach = new ReachabilityChecker(
      cfg.reachability,
      () => src.active() !== null,
      (r) => {
        this.#record.appChecks.add(1, { [ATTR.target]: r.target, [ATTR.result]: r.ok ? "ok" : "fail" });
        if (r.latencyMs !== null && r.ok) this.#record.appLatency.record(r.latencyMs, { [ATTR.target]: r.target });
      },
    );
  }

  start(): void {
    this.#host.start(HOST_SAMPLE_MS, () => HOST_SAMPLE_QUIET_STATES.has(this.#opts.source.state()));
    this.#reach.start();
    // Whatever a previous daemon left in the spool goes first.
    this.#sender.kick();
  }

  /**
   * One probe result of a leg; only the active leg's count (the standby's are not what users feel). A late reply
   * (the probe already counted "lost") counts as "late": late, not lost, is lost minus late.
   */
  onProbe(legId: string, sample: ProbeSample): void {
    const a = this.#opts.source.active();
    if (a?.legId !== legId) return;
    const attrs = { [ATTR.gateway]: a.gateway, [ATTR.protocol]: a.protocol };
    const result = sample.rttMs === null ? "lost" : sample.late === true ? "late" : "reply";
    this.#record.probes.add(1, { ...attrs, [ATTR.result]: result });
    if (sample.rttMs !== null) this.#record.rtt.record(sample.rttMs, attrs);
  }

  #emit(name: string, body: unknown, attrs: Attributes, severity: SeverityNumber = SeverityNumber.INFO): void {
    this.#logs.getLogger("detourd").emit({
      eventName: name,
      severityNumber: severity,
      severityText: severity >= SeverityNumber.WARN ? "WARN" : "INFO",
      // Bodies carry endpoints, locations and error texts: never a URL's credentials.
      body: JSON.stringify(redactUrlsDeep(body)),
      attributes: redactUrlsDeep({ [ATTR.eventName]: name, ...attrs }) as Attributes,
    });
  }

  /** Connection events become OTLP log records (the timeline) and counters (the aggregates). */
  onEvent(e: ConnectionEvent): void {
    switch (e.type) {
      case "state": {
        const a = this.#opts.source.active();
        this.#emit(
          EVENT.state,
          e,
          { [ATTR.state]: e.state, [ATTR.gateway]: a?.gateway ?? "", [ATTR.protocol]: a?.protocol ?? "" },
          e.state === "error" ? SeverityNumber.WARN : SeverityNumber.INFO,
        );
        return;
      }
      case "race-ended": {
        const r = e.race;
        const outcome = r.winner === null ? "failed" : "won";
        this.#record.races.add(1, { [ATTR.reason]: r.reason, [ATTR.outcome]: outcome });
        if (r.endedAt !== null)
          this.#record.raceDuration.record(r.endedAt - r.startedAt, {
            [ATTR.reason]: r.reason,
            [ATTR.outcome]: outcome,
          });
        for (const l of r.legs) {
          if (l.outcome === "failed" && l.error !== null)
            this.#record.legFailures.add(1, {
              [ATTR.gateway]: l.leg.gateway,
              [ATTR.protocol]: l.leg.kind,
              [ATTR.code]: l.error.code,
            });
        }
        this.#emit(EVENT.race, r, {
          [ATTR.reason]: r.reason,
          [ATTR.outcome]: outcome,
          [ATTR.gateway]: r.winner?.gateway ?? "",
          [ATTR.protocol]: r.winner?.kind ?? "",
        });
        return;
      }
      case "failover": {
        const f = e.failover;
        const attrs = {
          [ATTR.from]: f.from.gateway,
          [ATTR.to]: f.to?.gateway ?? "",
          [ATTR.reason]: classifyReason(f.reason),
          [ATTR.via]: f.via,
        };
        this.#record.failovers.add(1, attrs);
        this.#record.detected.record(f.detectedAfterMs, attrs);
        if (f.restoredAfterMs !== null) this.#record.restored.record(f.restoredAfterMs, attrs);
        // The event carries the collector's failover attributes (main/core/telemetry/names.ts) for its timeline.
        const event: Attributes = {
          [FAILOVER_ATTRIBUTES.from]: f.from.gateway,
          [FAILOVER_ATTRIBUTES.fromProtocol]: f.from.kind,
          [FAILOVER_ATTRIBUTES.reason]: f.reason,
          [FAILOVER_ATTRIBUTES.via]: f.via,
          [FAILOVER_ATTRIBUTES.detectedAfterMs]: Math.round(f.detectedAfterMs),
          ...(f.to === null
            ? {}
            : { [FAILOVER_ATTRIBUTES.to]: f.to.gateway, [FAILOVER_ATTRIBUTES.toProtocol]: f.to.kind }),
          ...(f.restoredAfterMs === null
            ? {}
            : { [FAILOVER_ATTRIBUTES.restoredAfterMs]: Math.round(f.restoredAfterMs) }),
        };
        this.#emit(EVENT.failover, f, event, SeverityNumber.WARN);
        return;
      }
      case "health":
        this.#emit(EVENT.health, e, { [ATTR.state]: e.verdict.state });
        return;
      case "drill": {
        const d = e.drill;
        this.#emit(
          EVENT.drill,
          d,
          { [ATTR.outcome]: d.verdict, [ATTR.from]: d.from?.gateway ?? "", [ATTR.to]: d.to?.gateway ?? "" },
          d.verdict === "pass" ? SeverityNumber.INFO : SeverityNumber.WARN,
        );
        return;
      }
      case "kill-switch":
        this.#record.killSwitch.add(1, { [ATTR.outcome]: e.change, [ATTR.state]: e.status.state });
        this.#emit(
          EVENT.killSwitch,
          e,
          { [ATTR.outcome]: e.change, [ATTR.state]: e.status.state, [ATTR.reason]: e.detail },
          e.change === "in-force"
            ? SeverityNumber.INFO
            : e.change === "failed"
              ? SeverityNumber.ERROR
              : SeverityNumber.WARN,
        );
        return;
      case "path-mtu":
        this.#record.pathMtu.add(1, { [ATTR.outcome]: e.change, [ATTR.protocol]: e.protocol });
        this.#emit(
          EVENT.pathMtu,
          e,
          { [ATTR.outcome]: e.change, [ATTR.gateway]: e.gateway, [ATTR.protocol]: e.protocol, [ATTR.reason]: e.detail },
          SeverityNumber.WARN,
        );
        return;
      case "crash-protection":
        this.#emit(
          EVENT.crashProtection,
          e,
          { [ATTR.outcome]: e.inForce ? "in-force" : "not-in-force", [ATTR.reason]: e.detail },
          e.inForce ? SeverityNumber.INFO : SeverityNumber.ERROR,
        );
        return;
      case "race-started":
      case "leg":
        return;
    }
  }

  /** Any other event worth a record (drills, policy changes) by name. */
  emitEvent(name: string, body: unknown, attrs: Attributes = {}): void {
    this.#emit(name, body, attrs);
  }

  status(): TelemetryStatus {
    const h = this.#opts.source.health();
    const sp = this.#spool.stats();
    return {
      rttMs: h?.rttP50Ms ?? null,
      rttP95Ms: h?.rttP95Ms ?? null,
      jitterMs: h?.jitterMs ?? null,
      lossPct: h?.lossPct ?? null,
      samples: h?.samples ?? 0,
      export: {
        ...this.#sender.status(),
        endpoint: this.#opts.config.endpoint,
        pending: sp.pending,
        dropped: sp.dropped,
        rejected: sp.rejected,
        deviceId: this.deviceId,
        policyHash: this.policyHash,
      },
      reachability: this.#reach.last(),
    };
  }

  /** Collects and spools everything measured so far (metrics and pending events). */
  async flush(): Promise<void> {
    await this.#meters.forceFlush();
    await this.#logs.forceFlush();
  }

  /** Flushes into the spool and stops; what was not delivered stays spooled for the next start. */
  async shutdown(): Promise<void> {
    this.#reach.stop();
    this.#host.stop();
    try {
      await this.#meters.shutdown();
      await this.#logs.shutdown();
    } catch (err) {
      this.#opts.log.warn("telemetry shutdown", { err });
    }
    await this.#sender.stop();
  }
}

/** The status telemetry reports when none is configured: the tunnel's numbers still matter to `detour status`. */
export function tunnelOnlyStatus(h: ReturnType<TelemetrySource["health"]>): TelemetryStatus {
  return {
    rttMs: h?.rttP50Ms ?? null,
    rttP95Ms: h?.rttP95Ms ?? null,
    jitterMs: h?.jitterMs ?? null,
    lossPct: h?.lossPct ?? null,
    samples: h?.samples ?? 0,
    export: null,
    reachability: [],
  };
}
