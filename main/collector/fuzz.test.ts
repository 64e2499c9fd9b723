/**
 * The collector's OTLP and bundle endpoints fuzzed against a real collector on loopback: valid requests mutated
 * as JSON, as protobuf bytes, compressed or not, with right and wrong headers and tokens, diagnostic bundles with
 * mutated summaries and damaged archives, read paths with odd encodings, and raw garbage on the socket. No
 * request may crash the collector or get a 500; every refusal says what was wrong; retained heap stays bounded.
 * Seeded: a failure prints its seed; DETOUR_FUZZ_SEED=<seed> replays it.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { after, test } from "node:test";
import { c as tarCreate } from "tar";
import {
  deepNesting,
  fuzzer,
  mutateBytes,
  mutateJson,
  randomBytes,
  retainedHeap,
  type Fuzz,
} from "../../test/fakes/fuzz.ts";
import { plainLogs, plainMetrics } from "../../test/fakes/otlp-samples.ts";
import { encodeRequest } from "./otlp.ts";
import { startCollector, type RunningCollector } from "./server.ts";

const INGEST = "ingest-token-acme-0123456789";
const READ = "read-token-acme-0123456789abc";
/** Requests per run: every endpoint and mutation kind many times, within a few seconds. */
const REQUESTS = 500;
const PARALLEL = 6;
/** Retained heap may grow this much: stored rows live in SQLite, not on the JS heap. */
const HEAP_GROWTH_LIMIT = 32 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 5000;

const tmp = mkdtempSync(join(tmpdir(), "detour-collector-fuzz-"));
after(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function summary(sentence: string): Record<string, unknown> {
  return {
    generatedAt: 1_795_000_000_000,
    agentVersion: "0.1.0",
    deviceId: "laptop-alice",
    policyHash: "none",
    state: "connected",
    sentence,
    failures: [{ at: 1_795_000_000_000, what: "gw2", reason: "timeout" }],
    chart: [{ at: 1_795_000_000_000, rttP50Ms: 12, rttP95Ms: 20, lossPct: 0 }],
    chartResolution: "10s",
    gateways: [],
    races: [],
    redactions: null,
  };
}

/** A bundle (.tar.gz) holding this summary.json text and a summary.html the collector must never serve. */
function bundle(summaryText: string): Buffer {
  const root = mkdtempSync(join(tmp, "b-"));
  const dir = join(root, "detour-diag-20261207T0600-fuzz");
  mkdirSync(dir);
  writeFileSync(join(dir, "summary.json"), summaryText);
  writeFileSync(join(dir, "summary.html"), "<script>alert(1)</script>");
  const file = join(root, "b.tar.gz");
  tarCreate({ gzip: true, sync: true, file, cwd: root }, ["detour-diag-20261207T0600-fuzz"]);
  const b = readFileSync(file);
  rmSync(root, { recursive: true, force: true });
  return b;
}

interface Req {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

function otlp(f: Fuzz, now: number): Req {
  const logs = f.chance(0.5);
  const id = { deviceId: `dev-${f.int(5)}`, batchId: `b-${f.int(1_000_000)}` };
  const valid = logs
    ? plainLogs(id, [{ tsMs: now, state: { state: "connected", gateway: "gw1", protocol: "wireguard" } }])
    : plainMetrics(id, [{ tsMs: now, gateway: "gw1", protocol: "wireguard", rttMs: 12, lossPercent: 0 }]);
  const json = f.chance(0.5);
  let body: Buffer;
  if (json) {
    const r = f.int(4);
    body =
      r === 0
        ? Buffer.from(JSON.stringify(valid))
        : r === 1
          ? Buffer.from(deepNesting(f, 1 + f.int(50_000)))
          : Buffer.from(JSON.stringify(mutateJson(f, mutateJson(f, valid))));
  } else {
    const bytes = Buffer.from(encodeRequest(logs ? "logs" : "metrics", valid));
    body = f.chance(0.2) ? bytes : mutateBytes(f, bytes);
  }
  if (f.chance(0.1)) body = randomBytes(f, 2000);
  const headers: Record<string, string> = {
    "content-type": f.chance(0.9)
      ? json
        ? "application/json"
        : "application/x-protobuf"
      : f.pick(["text/plain", "", "application/json; charset=utf-8", "application/x-protobuf;x=1"]),
    authorization: f.chance(0.9) ? `Bearer ${INGEST}` : f.pick(["", "Bearer x", `Bearer ${READ}`, "Basic Og=="]),
  };
  if (f.chance(0.3)) {
    body = f.chance(0.8) ? gzipSync(body) : mutateBytes(f, gzipSync(body));
    headers["content-encoding"] = "gzip";
  } else if (f.chance(0.05)) headers["content-encoding"] = f.pick(["br", "deflate", "gzip, gzip", "identity"]);
  if (f.chance(0.1)) headers["x-detour-batch-id"] = f.pick(["", "1", "x".repeat(300), "../"]);
  return {
    method: f.chance(0.95) ? "POST" : f.pick(["GET", "PUT"]),
    path: logs ? "/v1/logs" : "/v1/metrics",
    headers,
    body,
  };
}

function diagnostics(f: Fuzz, bundles: readonly Buffer[]): Req {
  let body = f.pick(bundles);
  if (f.chance(0.3)) body = mutateBytes(f, body);
  const sha = createHash("sha256").update(body).digest("hex");
  return {
    method: "POST",
    path: "/v1/diagnostics",
    headers: {
      authorization: f.chance(0.9) ? `Bearer ${INGEST}` : "Bearer wrong-token-0000000000",
      "content-type": f.chance(0.9) ? "application/gzip" : "text/html",
      "x-detour-device-id": f.chance(0.9) ? `dev-${f.int(3)}` : f.pick(["", "a b", "x".repeat(200)]),
      "x-detour-bundle-name": f.chance(0.9) ? "detour-diag-20261207T0600-fuzz.tar.gz" : "../../etc/passwd",
      "x-detour-bundle-sha256": f.chance(0.9) ? sha : "00".repeat(32),
    },
    body,
  };
}

function read(f: Fuzz, ids: readonly string[]): Req {
  const path = f.pick([
    "/",
    `/?hours=${f.pick(["1", "-1", "1e309", "NaN", "99999999", "%00"])}`,
    "/metrics",
    `/agents/${f.pick(["dev-1", "%E0%A4%A", "%00", "..%2F..%2F", "x".repeat(300), "%3Cscript%3E"])}`,
    `/bundles/${ids.length > 0 && f.chance(0.6) ? f.pick(ids) : f.pick(["0123456789abcdef", "zz", ""])}${f.pick(["", "/summary"])}`,
    "//",
    "/healthz",
    "/%2e%2e/",
    "/nope",
  ]);
  return {
    method: f.pick(["GET", "GET", "HEAD", "POST", "DELETE"]),
    path,
    headers: { authorization: f.chance(0.8) ? `Bearer ${READ}` : f.pick(["", `Bearer ${INGEST}`, "Basic !!"]) },
    body: Buffer.alloc(0),
  };
}

function send(port: number, r: Req): Promise<{ status: number; body: string } | null> {
  return new Promise((resolve, reject) => {
    let req;
    try {
      req = httpRequest({
        host: "127.0.0.1",
        port,
        method: r.method,
        path: r.path,
        headers: { ...r.headers, "content-length": String(r.body.length), connection: "close" },
        timeout: REQUEST_TIMEOUT_MS,
      });
    } catch {
      resolve(null); // a header Node itself will not send: nothing reaches the collector
      return;
    }
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
      });
    });
    req.on("timeout", () => {
      req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms: ${r.method} ${r.path}`));
    });
    req.on("error", reject);
    req.end(r.body);
  });
}

/** Raw garbage on a socket: the server answers 400 (or closes), never hangs or crashes. */
function raw(f: Fuzz, port: number): Promise<string> {
  const text = f.pick([
    "GARBAGE\r\n\r\n",
    "GET / HTTP/9.9\r\n\r\n",
    `POST /v1/metrics HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n`,
    `POST /v1/metrics HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nauthorization: Bearer ${INGEST}\r\ncontent-type: application/json\r\n\r\nzz\r\n`,
    `GET /${"a".repeat(20_000)} HTTP/1.1\r\nhost: x\r\n\r\n`,
    `GET / HTTP/1.1\r\n${"x-h: y\r\n".repeat(3000)}\r\n`,
  ]);
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    let got = "";
    const timer = setTimeout(() => {
      s.destroy();
      resolve(got);
    }, 2000);
    s.setEncoding("utf8");
    s.on("data", (d: string) => (got += d));
    s.on("error", () => undefined);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
    s.end(Buffer.concat([Buffer.from(text), randomBytes(f, 64)]));
  });
}

test("the-collectors-endpoints-survive-random-and-mutated-requests-with-clear-errors-and-bounded-memory", async () => {
  const f = fuzzer(20261207);
  const tokensFile = join(tmp, "tokens.json");
  writeFileSync(
    tokensFile,
    JSON.stringify({
      tokens: [
        { org: "acme", role: "ingest", token: INGEST },
        { org: "acme", role: "read", token: READ },
      ],
    }),
    { mode: 0o600 },
  );
  const c: RunningCollector = await startCollector({
    log: () => undefined,
    host: "127.0.0.1",
    port: 0,
    storage: { kind: "sqlite", path: join(tmp, "fuzz.db") },
    tokensFile,
    retentionDays: 30,
    tls: null,
  });
  const port = c.address.port;
  const now = Date.now();
  const valid = JSON.stringify(summary("Connected to gw1"));
  const bundles = [
    bundle(valid),
    ...Array.from({ length: 10 }, () => bundle(JSON.stringify(mutateJson(f, summary("x"))))),
    bundle(deepNesting(f, 100_000)),
    bundle(mutateBytes(f, Buffer.from(valid)).toString("latin1")),
  ];
  const ids: string[] = [];
  const statuses = new Map<number, number>();
  try {
    const one = async (): Promise<void> => {
      const kind = f.int(10);
      if (kind === 9) {
        const answer = await raw(f, port);
        assert.doesNotMatch(answer, /^HTTP\/1\.1 5\d\d/, `seed ${f.seed}: garbage is not a server error`);
        return;
      }
      const r = kind < 5 ? otlp(f, now) : kind < 7 ? diagnostics(f, bundles) : read(f, ids);
      const res = await send(port, r);
      if (res === null) return;
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      const what = `seed ${f.seed}: ${r.method} ${r.path} -> ${res.status} ${res.body.slice(0, 300)}`;
      assert.ok(res.status >= 200 && res.status < 500, what);
      if (res.status >= 400 && r.method !== "HEAD") assert.ok(res.body.length > 0, `${what}: a refusal says why`);
      if (r.path === "/v1/diagnostics" && res.status === 200) ids.push((JSON.parse(res.body) as { id: string }).id);
      if (/\/summary$/.test(r.path) && res.status === 200)
        assert.doesNotMatch(res.body, /<script/, `${what}: the device's page is never served`);
    };
    for (let i = 0; i < 30; i++) await one(); // warm-up: JIT and caches, before the heap is measured
    const heapBefore = retainedHeap();
    for (let i = 0; i < REQUESTS; i += PARALLEL) await Promise.all(Array.from({ length: PARALLEL }, one));
    const growth = retainedHeap() - heapBefore;
    console.log(
      `collector fuzz seed ${f.seed}: ${REQUESTS} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}, ${ids.length} bundles stored, retained heap growth ${Math.round(growth / 1024)} KiB`,
    );
    assert.ok(growth < HEAP_GROWTH_LIMIT, `seed ${f.seed}: retained heap grew ${growth} bytes`);
    assert.ok((statuses.get(200) ?? 0) > 20, `seed ${f.seed}: valid requests got through`);
    // Still serving: a valid batch is stored and the health check answers.
    const ok = await send(port, {
      method: "POST",
      path: "/v1/metrics",
      headers: { authorization: `Bearer ${INGEST}`, "content-type": "application/json" },
      body: Buffer.from(
        JSON.stringify(
          plainMetrics({ deviceId: "after", batchId: "after-1" }, [
            { tsMs: now, gateway: "gw1", protocol: "wireguard", rttMs: 10, lossPercent: 0 },
          ]),
        ),
      ),
    });
    assert.equal(ok?.status, 200, `seed ${f.seed}: ${ok?.body ?? ""}`);
  } finally {
    await c.close();
  }
});
