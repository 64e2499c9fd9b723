/**
 * The sample OpenTelemetry Collector configuration (resources/otel-collector/detour-agents.yaml) stays consistent
 * with itself and with Detour's ingest contract: every component a pipeline names is defined, the agents' port and
 * batch-id header are the ones Detour uses, each request to Detour's collector keeps one agent batch with its id,
 * and no secret is written in the file.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { BATCH_HEADER } from "../core/telemetry/names.ts";

const FILE = join(import.meta.dirname, "..", "..", "resources", "otel-collector", "detour-agents.yaml");

interface Pipeline {
  receivers: string[];
  processors?: string[];
  exporters: string[];
}
interface OtelConfig {
  extensions: Record<string, Record<string, unknown>>;
  receivers: Record<
    string,
    { protocols: { http: { endpoint: string; include_metadata?: boolean; auth?: { authenticator: string } } } }
  >;
  processors: Record<string, { metadata_keys?: string[] } | null>;
  exporters: Record<string, { auth?: { authenticator: string }; retry_on_failure?: { enabled: boolean } }>;
  service: { extensions: string[]; pipelines: Record<string, Pipeline> };
}

const text = readFileSync(FILE, "utf8");
const config = parse(text) as OtelConfig;

test("every-component-a-pipeline-or-authenticator-names-is-defined", () => {
  for (const [name, p] of Object.entries(config.service.pipelines)) {
    for (const r of p.receivers) assert.ok(r in config.receivers, `${name}: receiver ${r}`);
    for (const x of p.processors ?? []) assert.ok(x in config.processors, `${name}: processor ${x}`);
    for (const e of p.exporters) assert.ok(e in config.exporters, `${name}: exporter ${e}`);
    assert.match(name, /^(metrics|logs)\//, "agents send metrics and logs only");
  }
  for (const e of config.service.extensions) assert.ok(e in config.extensions, `extension ${e}`);
  const authenticators = [
    ...Object.values(config.receivers).map((r) => r.protocols.http.auth?.authenticator),
    ...Object.values(config.exporters).map((e) => e.auth?.authenticator),
  ].filter((a): a is string => a !== undefined);
  for (const a of authenticators) assert.ok(config.service.extensions.includes(a), `${a} is enabled`);
});

test("agents-reach-it-on-otlp-https-port-with-a-token-and-their-batch-id-reaches-detour", () => {
  const http = config.receivers["otlp/agents"]?.protocols.http;
  assert.equal(http?.endpoint.split(":").at(-1), "4318", "OTLP/HTTP's port, the agents' default");
  assert.equal(http.include_metadata, true, "request headers stay with the data");
  assert.equal(http.auth?.authenticator, "bearertokenauth/agents");
  for (const signal of ["metrics", "logs"]) {
    const p = config.service.pipelines[`${signal}/detour`];
    assert.ok(p !== undefined, `${signal}/detour pipeline`);
    const batchers = (p.processors ?? []).filter((x) => x.startsWith("batch"));
    for (const b of batchers)
      assert.deepEqual(config.processors[b]?.metadata_keys, [BATCH_HEADER], `${b} keeps one agent batch per request`);
    const [exporter] = p.exporters;
    const auth = config.exporters[exporter ?? ""]?.auth?.authenticator ?? "";
    const headers = (config.extensions[auth]?.headers ?? []) as {
      key: string;
      value?: string;
      from_context?: string;
    }[];
    assert.deepEqual(
      headers.find((h) => h.key === BATCH_HEADER),
      { action: "upsert", key: BATCH_HEADER, from_context: BATCH_HEADER },
      "the agent's batch id is forwarded",
    );
    assert.match(headers.find((h) => h.key === "authorization")?.value ?? "", /^Bearer \$\{env:[A-Z_]+\}$/);
    assert.equal(config.exporters[exporter ?? ""]?.retry_on_failure?.enabled, true, "a 503 is retried");
  }
});

test("no-secret-is-written-in-the-sample", () => {
  const settings = text
    .split("\n")
    .filter((l) => !l.trim().startsWith("#"))
    .join("\n");
  for (const m of settings.matchAll(/Bearer\s+(\S+)/g))
    assert.match(m[1] ?? "", /^\$\{env:/, "tokens from the environment");
  assert.doesNotMatch(settings, /token:\s*["']?[A-Za-z0-9]{12,}/);
});
