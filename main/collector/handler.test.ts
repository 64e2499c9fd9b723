/** The collector's HTTP behaviour through its pure handler: no sockets, a fake clock, an in-memory database. */
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { beforeEach, describe, test } from "node:test";
import {
  plainLogs,
  plainMetrics,
  sdkLogsBatch,
  sdkMetricsBatch,
  type AgentIdentity,
} from "../../test/fakes/otlp-samples.ts";
import { TokenTable } from "./auth.ts";
import {
  createHandler,
  MAX_BODY_BYTES,
  STORAGE_RETRY_AFTER_S,
  type CollectorRequest,
  type Handler,
  type HandlerResult,
} from "./handler.ts";
import { MAX_DECODED_BYTES, decodeStatus, encodeRequest } from "./otlp.ts";
import { StorageUnavailableError, type TelemetryStorage } from "./storage.ts";
import { CollectorStore, SqliteStorage } from "./store.ts";

const INGEST = "ingest-token-acme-0123456789";
const READ = "read-token-acme-0123456789abc";
const OTHER_ORG_INGEST = "ingest-token-globex-987654321";
const OTHER_ORG_READ = "read-token-globex-9876543210x";
const DAY = 24 * 3_600_000;
const RETENTION_MS = 30 * DAY;

let store: CollectorStore;
let clock: number;
let handle: Handler;

function tokensOf(): TokenTable {
  return TokenTable.parse(
    JSON.stringify({
      tokens: [
        { org: "acme", role: "ingest", token: INGEST },
        { org: "acme", role: "read", token: READ },
        { org: "globex", role: "ingest", token: OTHER_ORG_INGEST },
        { org: "globex", role: "read", token: OTHER_ORG_READ },
      ],
    }),
  );
}

beforeEach(() => {
  store = CollectorStore.open(":memory:");
  clock = Date.now();
  handle = createHandler({
    store: new SqliteStorage(store),
    tokens: tokensOf(),
    now: () => clock,
    retentionMs: RETENTION_MS,
  });
});

function post(
  path: string,
  body: Uint8Array | string,
  opts: { token?: string | null; type?: string; encoding?: string } = {},
): Promise<HandlerResult> {
  const headers: Record<string, string> = { "content-type": opts.type ?? "application/x-protobuf" };
  if (opts.token !== null) headers.authorization = `Bearer ${opts.token ?? INGEST}`;
  if (opts.encoding !== undefined) headers["content-encoding"] = opts.encoding;
  return handle({ method: "POST", url: path, headers, body: typeof body === "string" ? Buffer.from(body) : body });
}

function get(
  url: string,
  authorization: string | null = `Bearer ${READ}`,
  extra: Partial<CollectorRequest> = {},
): Promise<HandlerResult> {
  return handle({
    method: "GET",
    url,
    headers: authorization === null ? {} : { authorization },
    body: new Uint8Array(),
    ...extra,
  });
}

function text(r: { body: string | Uint8Array }): string {
  return typeof r.body === "string" ? r.body : Buffer.from(r.body).toString("utf8");
}

function statusMessage(r: HandlerResult): string {
  if (r.headers["content-type"] === "application/x-protobuf") return decodeStatus(r.body as Uint8Array).message;
  return text(r);
}

const alice: AgentIdentity = { deviceId: "laptop-alice", batchId: "m-1" };
const bob: AgentIdentity = { deviceId: "laptop-bob", batchId: "m-1" };

describe("ingest of what the OpenTelemetry SDK sends", () => {
  for (const format of ["protobuf", "json"] as const) {
    test(`sdk-${format}-metrics-and-events-are-stored-and-shown`, async () => {
      const type = format === "json" ? "application/json" : "application/x-protobuf";
      const m = await post(
        "/v1/metrics",
        await sdkMetricsBatch(
          alice,
          { gateway: "gw1", protocol: "wireguard", rttMs: [10, 12, 14, 16], lossPercent: 2.5 },
          format,
        ),
        { type },
      );
      assert.equal(m.status, 200, statusMessage(m));
      assert.equal(m.headers["content-type"], type);
      assert.deepEqual(m.outcome.stored, { points: 4, events: 0 }, "rtt, loss, jitter and rx_bytes: one point each");
      const rtt = store.series("acme", "laptop-alice", "detour.tunnel.rtt", 0);
      assert.equal(rtt.length, 1);
      assert.deepEqual(
        [rtt[0]?.value, rtt[0]?.gateway],
        [13, "gw1"],
        "the histogram is stored as its mean, with its gateway",
      );

      const l = await post(
        "/v1/logs",
        await sdkLogsBatch(
          { ...alice, batchId: "l-1" },
          {
            failovers: [
              {
                from: "gw1",
                fromProtocol: "wireguard",
                to: "gw2",
                toProtocol: "ikev2",
                reason: "dead",
                detectedAfterMs: 612,
                restoredAfterMs: 790,
              },
            ],
            state: { state: "connected", gateway: "gw2", protocol: "ikev2" },
          },
          format,
        ),
        { type },
      );
      assert.equal(l.status, 200, statusMessage(l));
      assert.deepEqual(l.outcome.stored, { points: 0, events: 2 });
      const [agent] = store.fleet("acme");
      assert.deepEqual(
        [agent?.deviceId, agent?.state, agent?.gateway, agent?.protocol, agent?.serviceVersion],
        ["laptop-alice", "connected", "gw2", "ikev2", "0.1.0"],
      );
      const [fo] = store.failovers("acme", 0, 10);
      assert.deepEqual(
        [fo?.from, fo?.to, fo?.reason, fo?.detectedAfterMs, fo?.restoredAfterMs],
        ["gw1", "gw2", "dead", 612, 790],
      );
    });
  }

  test("unknown-metrics-and-events-are-reported-as-partial-success-not-stored", async () => {
    const r = await post(
      "/v1/logs",
      await sdkLogsBatch({ ...alice, batchId: "l-9" }, { other: "app.started" }, "json"),
      {
        type: "application/json",
      },
    );
    assert.equal(r.status, 200);
    const body = JSON.parse(text(r)) as { partialSuccess?: { rejectedLogRecords?: number; errorMessage?: string } };
    assert.deepEqual(body.partialSuccess, {
      rejectedLogRecords: 1,
      errorMessage: "not stored: unknown to Detour's collector: app.started",
    });
  });

  test("gzip-bodies-are-accepted", async () => {
    const body = gzipSync(
      await sdkMetricsBatch(alice, { gateway: "gw1", protocol: "wireguard", rttMs: [5], lossPercent: 0 }, "protobuf"),
    );
    const r = await post("/v1/metrics", body, { encoding: "gzip" });
    assert.equal(r.status, 200, statusMessage(r));
  });
});

describe("bad input gets a 4xx that says what was wrong", () => {
  test("no-token-is-401-and-nothing-is-stored", async () => {
    const r = await post(
      "/v1/metrics",
      await sdkMetricsBatch(alice, { gateway: "gw1", protocol: "wireguard", rttMs: [5], lossPercent: 0 }, "protobuf"),
      { token: null },
    );
    assert.equal(r.status, 401);
    assert.match(r.headers["www-authenticate"] ?? "", /^Bearer/);
    assert.match(statusMessage(r), /unauthenticated: missing credentials/);
    assert.deepEqual(store.fleet("acme"), []);
  });

  test("unknown-token-is-401-and-the-message-does-not-echo-it", async () => {
    const r = await post("/v1/metrics", "{}", { token: "not-a-token-at-all-xyz", type: "application/json" });
    assert.equal(r.status, 401);
    assert.doesNotMatch(statusMessage(r), /not-a-token/);
  });

  test("a-read-token-cannot-ingest-and-an-ingest-token-cannot-read", async () => {
    assert.equal((await post("/v1/metrics", "{}", { token: READ, type: "application/json" })).status, 403);
    assert.equal((await get("/", `Bearer ${INGEST}`)).status, 403);
    assert.equal((await get("/metrics", `Bearer ${INGEST}`)).status, 403);
  });

  test("malformed-protobuf-is-400-naming-the-message", async () => {
    const r = await post("/v1/metrics", new Uint8Array([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]));
    assert.equal(r.status, 400);
    assert.match(statusMessage(r), /malformed: the body is not a protobuf ExportMetricsServiceRequest/);
  });

  test("malformed-json-is-400", async () => {
    const r1 = await post("/v1/logs", "{not json", { type: "application/json" });
    assert.equal(r1.status, 400);
    assert.match(text(r1), /the body is not JSON/);
    const r2 = await post("/v1/logs", JSON.stringify({ resourceLogs: "nope" }), { type: "application/json" });
    assert.equal(r2.status, 400);
    assert.match(text(r2), /resourceLogs: array expected/);
  });

  test("a-batch-without-device-or-batch-id-is-400-naming-the-attribute", async () => {
    const req = plainMetrics(alice, [
      { tsMs: clock, gateway: "gw1", protocol: "wireguard", rttMs: 10, lossPercent: 0 },
    ]);
    const attrs = req.resourceMetrics?.[0]?.resource?.attributes ?? [];
    req.resourceMetrics = [
      { ...req.resourceMetrics?.[0], resource: { attributes: attrs.filter((a) => a.key !== "detour.batch.id") } },
    ];
    const r = await post("/v1/metrics", encodeRequest("metrics", req));
    assert.equal(r.status, 400);
    assert.match(statusMessage(r), /missing-attribute: resource 0 has no detour\.batch\.id/);
  });

  test("wrong-content-type-is-415", async () => {
    const r = await post("/v1/metrics", "hello", { type: "text/plain" });
    assert.equal(r.status, 415);
    assert.match(text(r), /unsupported-media-type/);
    assert.equal((await post("/v1/metrics", "x", { type: "application/json", encoding: "br" })).status, 415);
  });

  test("oversized-bodies-are-413-also-after-gunzip", async () => {
    const big = await post("/v1/metrics", new Uint8Array(MAX_BODY_BYTES + 1));
    assert.equal(big.status, 413);
    const bomb = gzipSync(Buffer.alloc(MAX_DECODED_BYTES + 1024, 0));
    assert.ok(bomb.length < MAX_BODY_BYTES, "the compressed bomb itself is small");
    const r = await post("/v1/metrics", bomb, { encoding: "gzip" });
    assert.equal(r.status, 413);
    assert.match(statusMessage(r), /too-large: the body expands to more than/);
  });

  test("records-far-in-the-future-are-refused-as-clock-skew", async () => {
    const r = await post(
      "/v1/metrics",
      encodeRequest(
        "metrics",
        plainMetrics(alice, [{ tsMs: clock + DAY, gateway: "gw1", protocol: "wireguard", rttMs: 10, lossPercent: 0 }]),
      ),
    );
    assert.equal(r.status, 400);
    assert.match(statusMessage(r), /clock-skew/);
  });

  test("a-bad-request-does-not-disturb-the-next-one", async () => {
    assert.equal((await post("/v1/metrics", "garbage")).status, 400);
    const ok = await post(
      "/v1/metrics",
      await sdkMetricsBatch(bob, { gateway: "gw3", protocol: "anyconnect", rttMs: [30], lossPercent: 1 }, "protobuf"),
    );
    assert.equal(ok.status, 200);
  });

  test("unknown-paths-are-404-and-wrong-methods-405", async () => {
    assert.equal((await get("/v1/traces")).status, 404);
    assert.equal((await get("/v1/metrics")).status, 405);
    assert.equal((await post("/", "x")).status, 405);
  });
});

describe("replay and idempotency", () => {
  test("a-redelivered-batch-is-409-and-stored-once", async () => {
    const body = await sdkMetricsBatch(
      alice,
      { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 },
      "protobuf",
    );
    assert.equal((await post("/v1/metrics", body)).status, 200);
    const again = await post("/v1/metrics", body);
    assert.equal(again.status, 409);
    assert.match(
      statusMessage(again),
      /^duplicate-batch: batch m-1 of device laptop-alice \(metrics\) was stored at .*; it is not stored again$/,
    );
    assert.equal(store.series("acme", "laptop-alice", "detour.tunnel.rtt", 0).length, 1, "stored once");
  });

  test("a-reused-batch-id-with-other-content-is-409-and-says-so", async () => {
    const one = plainMetrics(alice, [
      { tsMs: clock, gateway: "gw1", protocol: "wireguard", rttMs: 10, lossPercent: 0 },
    ]);
    const two = plainMetrics(alice, [
      { tsMs: clock, gateway: "gw1", protocol: "wireguard", rttMs: 99, lossPercent: 0 },
    ]);
    assert.equal((await post("/v1/metrics", encodeRequest("metrics", one))).status, 200);
    const r = await post("/v1/metrics", encodeRequest("metrics", two));
    assert.equal(r.status, 409);
    assert.match(statusMessage(r), /with different content/);
  });

  test("batch-ids-are-per-device-signal-and-organisation", async () => {
    const m = await sdkMetricsBatch(
      alice,
      { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 },
      "protobuf",
    );
    assert.equal((await post("/v1/metrics", m)).status, 200);
    assert.equal(
      (await post("/v1/metrics", m, { token: OTHER_ORG_INGEST })).status,
      200,
      "another organisation's device may use the same ids",
    );
    assert.equal(
      (
        await post(
          "/v1/metrics",
          await sdkMetricsBatch(
            bob,
            { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 },
            "protobuf",
          ),
        )
      ).status,
      200,
    );
    assert.equal(
      (
        await post(
          "/v1/logs",
          encodeRequest(
            "logs",
            plainLogs(alice, [{ tsMs: clock, state: { state: "connected", gateway: "gw1", protocol: "wireguard" } }]),
          ),
          {},
        )
      ).status,
      200,
      "logs batch m-1 is not metrics batch m-1",
    );
  });

  test("a-batch-older-than-retention-is-refused-as-stale-so-a-forgotten-id-cannot-be-replayed", async () => {
    const old = plainMetrics(alice, [
      { tsMs: clock - RETENTION_MS - DAY, gateway: "gw1", protocol: "wireguard", rttMs: 10, lossPercent: 0 },
    ]);
    const r = await post("/v1/metrics", encodeRequest("metrics", old));
    assert.equal(r.status, 400);
    assert.match(statusMessage(r), /stale-batch/);
  });
});

describe("retention", () => {
  test("data-batch-ids-and-silent-agents-go-after-the-retention-window", async () => {
    const t0 = clock;
    assert.equal(
      (
        await post(
          "/v1/metrics",
          encodeRequest(
            "metrics",
            plainMetrics(alice, [{ tsMs: t0, gateway: "gw1", protocol: "wireguard", rttMs: 10, lossPercent: 0 }]),
          ),
        )
      ).status,
      200,
    );
    clock = t0 + 20 * DAY;
    assert.equal(
      (
        await post(
          "/v1/metrics",
          encodeRequest(
            "metrics",
            plainMetrics(bob, [{ tsMs: clock, gateway: "gw2", protocol: "ikev2", rttMs: 20, lossPercent: 0 }]),
          ),
        )
      ).status,
      200,
    );
    clock = t0 + RETENTION_MS + DAY;
    const report = store.prune(clock - RETENTION_MS);
    assert.deepEqual(report, { bundles: 0, batches: 1, points: 2, events: 0, agents: 1 });
    assert.deepEqual(
      store.fleet("acme").map((a) => a.deviceId),
      ["laptop-bob"],
    );
  });
});

describe("dashboard and /metrics", () => {
  beforeEach(async () => {
    const t = clock - 60_000;
    const send = async (id: AgentIdentity, token = INGEST): Promise<void> => {
      const r = await post(
        "/v1/metrics",
        encodeRequest(
          "metrics",
          plainMetrics(id, [
            { tsMs: t, gateway: "gw1", protocol: "wireguard", rttMs: 40, lossPercent: 8 },
            { tsMs: t + 30_000, gateway: "gw2", protocol: "ikev2", rttMs: 20, lossPercent: 0 },
          ]),
        ),
        { token },
      );
      assert.equal(r.status, 200, statusMessage(r));
    };
    await send(alice);
    await send(bob);
    await send({ deviceId: "globex-host", batchId: "1" }, OTHER_ORG_INGEST);
    const fo = {
      from: "gw1",
      fromProtocol: "wireguard",
      to: "gw2",
      toProtocol: "ikev2",
      reason: "brownout-loss",
      detectedAfterMs: 1500,
      restoredAfterMs: 1800,
    };
    for (const id of [alice, bob]) {
      const r = await post(
        "/v1/logs",
        encodeRequest(
          "logs",
          plainLogs({ ...id, batchId: "l-1" }, [
            { tsMs: t + 20_000, failover: fo },
            { tsMs: t + 20_001, state: { state: "connected", gateway: "gw2", protocol: "ikev2" } },
          ]),
        ),
      );
      assert.equal(r.status, 200, statusMessage(r));
    }
  });

  test("the-fleet-page-lists-agents-gateways-and-failovers-of-the-organisation-only", async () => {
    const r = await get("/");
    assert.equal(r.status, 200);
    assert.match(r.headers["content-security-policy"] ?? "", /default-src 'none'/);
    const html = text(r);
    assert.match(html, /laptop-alice/);
    assert.match(html, /laptop-bob/);
    assert.doesNotMatch(html, /globex-host/, "another organisation's agents never show");
    assert.equal((html.match(/<tr class="agent">/g) ?? []).length, 2);
    assert.match(
      html,
      /<tr class="gateway"><td>gw1<\/td><td class="num">0<\/td><td class="num">2<\/td>\s*<td class="num">40\.0<\/td><td class="num">8\.0<\/td><td class="num bad">2<\/td>\s*<td class="num">0<\/td><td>brownout-loss<\/td>/,
      "gw1: two agents failed away from it",
    );
    assert.equal((html.match(/<tr class="failover">/g) ?? []).length, 2);
    assert.doesNotMatch(html, /<script|https?:\/\/(?!www\.w3)/, "no script and no external fetch");
  });

  test("the-agent-page-draws-latency-and-loss-charts", async () => {
    const r = await get("/agents/laptop-alice?hours=1");
    assert.equal(r.status, 200);
    const html = text(r);
    assert.equal((html.match(/<svg class="chart"/g) ?? []).length, 2, "latency and loss");
    assert.match(html, /<polyline[^>]*points="[\d., ]+"><title>gw1<\/title>/);
    assert.equal((await get("/agents/globex-host")).status, 404, "another organisation's agent is not found");
  });

  test("the-dashboard-asks-browsers-for-basic-auth-with-the-token-as-password", async () => {
    const r = await get("/", null);
    assert.equal(r.status, 401);
    assert.match(r.headers["www-authenticate"] ?? "", /^Basic realm=/);
    assert.equal((await get("/", `Basic ${Buffer.from(`acme:${READ}`).toString("base64")}`)).status, 200);
  });

  test("html-in-device-ids-is-escaped", async () => {
    // device ids are restricted by the contract, but gateway names and reasons are free text
    const r = await post(
      "/v1/logs",
      encodeRequest(
        "logs",
        plainLogs({ deviceId: "x", batchId: "1" }, [
          {
            tsMs: clock,
            failover: {
              from: "<img src=x>",
              fromProtocol: "wireguard",
              to: "gw2",
              toProtocol: "ikev2",
              reason: '"><script>',
              detectedAfterMs: 1,
              restoredAfterMs: 2,
            },
          },
        ]),
      ),
    );
    assert.equal(r.status, 200);
    const html = text(await get("/"));
    assert.doesNotMatch(html, /<img src=x>|<script>/);
    assert.match(html, /&lt;img src=x&gt;/);
  });

  test("metrics-are-prometheus-text-of-the-fleet", async () => {
    const r = await get("/metrics");
    assert.equal(r.status, 200);
    assert.equal(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    const body = text(r);
    assert.match(body, /^# TYPE detour_agents gauge$/m);
    assert.match(body, /^detour_agents\{state="connected"\} 2$/m);
    assert.match(body, /^detour_gateway_agents_connected\{gateway="gw2"\} 2$/m);
    assert.match(body, /^detour_gateway_rtt_ms\{gateway="gw1"\} 40$/m);
    assert.match(body, /^detour_gateway_loss_percent\{gateway="gw1"\} 8$/m);
    assert.match(body, /^detour_failovers_last_hour\{from="gw1",to="gw2",reason="brownout-loss"\} 2$/m);
    assert.equal(
      (await get("/metrics", null)).headers["www-authenticate"]?.startsWith("Bearer"),
      true,
      "Prometheus gets a Bearer challenge",
    );
  });

  test("under-mtls-the-certificate-must-belong-to-the-tokens-organisation", async () => {
    assert.equal((await get("/metrics", `Bearer ${READ}`, { mtls: { certOrg: "acme" } })).status, 200);
    const r = await get("/metrics", `Bearer ${READ}`, { mtls: { certOrg: "globex" } });
    assert.equal(r.status, 403);
    assert.match(text(r), /organisation "globex"/);
  });
});

test("healthz-needs-no-token-and-shows-no-data", async () => {
  const r = await get("/healthz", null);
  assert.equal(r.status, 200);
  assert.equal(text(r), "ok\n");
});

test("odd-request-targets-are-a-400-or-404-never-an-exception", async () => {
  for (const [url, status] of [
    ["//", 404],
    ["//evil.example/v1/metrics", 404],
    ["*", 400],
    ["http://collector.example/", 400],
  ] as const) {
    const r = await get(url);
    assert.equal(r.status, status, `${url}: ${text(r)}`);
    assert.equal(handle.authorize({ method: "GET", url, headers: {} }), null, `${url}: left to the handler`);
  }
});

describe("a storage outage", () => {
  /** Every call fails as PostgreSQL's does while its server is down. */
  const down = (): TelemetryStorage =>
    new Proxy(new SqliteStorage(store), {
      get: (target, key): unknown =>
        key === "kind"
          ? "postgresql"
          : typeof Reflect.get(target, key) === "function"
            ? () =>
                Promise.reject(new StorageUnavailableError("PostgreSQL: ingest: connect ECONNREFUSED 127.0.0.1:5432"))
            : Reflect.get(target, key),
    });

  test("ingest-is-503-unavailable-with-retry-after-so-the-agent-keeps-the-batch", async () => {
    handle = createHandler({ store: down(), tokens: tokensOf(), now: () => clock, retentionMs: RETENTION_MS });
    for (const format of ["protobuf", "json"] as const) {
      const type = format === "json" ? "application/json" : "application/x-protobuf";
      const r = await post(
        "/v1/metrics",
        await sdkMetricsBatch(alice, { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 }, format),
        { type },
      );
      assert.equal(r.status, 503, statusMessage(r));
      assert.equal(r.headers["retry-after"], String(STORAGE_RETRY_AFTER_S));
      assert.equal(r.headers["content-type"], type, "answered in the request's encoding, as OTLP asks");
      assert.match(statusMessage(r), /storage-unavailable: .*send the same batch again later/);
      assert.doesNotMatch(statusMessage(r), /ECONNREFUSED|127\.0\.0\.1/, "the storage's own words stay in the log");
      assert.equal(r.outcome.code, "storage-unavailable");
      assert.match(r.outcome.storageError ?? "", /ECONNREFUSED/, "the log says why");
    }
    const r = await post(
      "/v1/metrics",
      await sdkMetricsBatch(alice, { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 }, "protobuf"),
    );
    assert.equal(
      r.headers["content-type"] === "application/x-protobuf" ? decodeStatus(r.body as Uint8Array).code : null,
      14,
      "gRPC UNAVAILABLE: OTLP's retryable code",
    );
  });

  test("reads-are-503-too-and-the-same-batch-is-stored-once-the-storage-is-back", async () => {
    handle = createHandler({ store: down(), tokens: tokensOf(), now: () => clock, retentionMs: RETENTION_MS });
    for (const path of ["/", "/metrics", "/agents/laptop-alice"]) assert.equal((await get(path)).status, 503, path);
    const body = await sdkMetricsBatch(
      alice,
      { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 },
      "protobuf",
    );
    assert.equal((await post("/v1/metrics", body)).status, 503);
    handle = createHandler({
      store: new SqliteStorage(store),
      tokens: tokensOf(),
      now: () => clock,
      retentionMs: RETENTION_MS,
    });
    assert.equal((await post("/v1/metrics", body)).status, 200, "the retry is stored");
    assert.equal((await post("/v1/metrics", body)).status, 409, "and only once");
  });

  test("a-bug-in-the-storage-is-not-mistaken-for-an-outage", async () => {
    const buggy = new Proxy(new SqliteStorage(store), {
      get: (target, key): unknown =>
        key === "ingest" ? () => Promise.reject(new TypeError("x is undefined")) : Reflect.get(target, key),
    });
    handle = createHandler({ store: buggy, tokens: tokensOf(), now: () => clock, retentionMs: RETENTION_MS });
    await assert.rejects(
      post(
        "/v1/metrics",
        await sdkMetricsBatch(
          alice,
          { gateway: "gw1", protocol: "wireguard", rttMs: [10], lossPercent: 0 },
          "protobuf",
        ),
      ),
      TypeError,
      "thrown on to the server, which logs it and answers 500",
    );
  });
});
