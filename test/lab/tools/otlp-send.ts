/**
 * A small OTLP/HTTP client for the lab, run inside a lab namespace (`ip netns exec detour-<id>-client node
 * --import tsx otlp-send.ts ...`): posts what the OpenTelemetry SDK serializes for a Detour agent, or GETs a
 * collector page, and prints one JSON line {status, contentType, message|body} so tests can assert on it.
 *
 *   post --url http://198.18.100.2:4318 --tokens <file> --signal metrics|logs --format protobuf|json
 *        --device <id> --batch <id> [--gateway gw1 --protocol wireguard --rtt 10,12 --loss 1.5]
 *        [--failover from:fromProto:to:toProto:reason:detectedMs:restoredMs] [--state state:gateway:protocol]
 *        [--token-role ingest|read|none]
 *   get  --url http://198.18.100.2:4318/metrics[,<another url>...] --tokens <file> [--token-role read|ingest|none]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { decodeStatus } from "../../../main/collector/otlp.ts";
import { sdkLogsBatch, sdkMetricsBatch, type Format } from "../../fakes/otlp-samples.ts";

/** One request over a lab veth answers in milliseconds; this only stops a wedged collector from hanging a test. */
const REQUEST_TIMEOUT_MS = 10_000;

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string" },
    tokens: { type: "string" },
    "token-role": { type: "string", default: "" },
    signal: { type: "string", default: "metrics" },
    format: { type: "string", default: "protobuf" },
    device: { type: "string", default: "lab-device" },
    batch: { type: "string", default: "1" },
    gateway: { type: "string", default: "gw1" },
    protocol: { type: "string", default: "wireguard" },
    rtt: { type: "string", default: "10,12" },
    loss: { type: "string", default: "0" },
    failover: { type: "string" },
    state: { type: "string" },
  },
});

function token(role: string): string | null {
  if (role === "none") return null;
  if (values.tokens === undefined) throw new Error("--tokens <file> is required unless --token-role none");
  const file = JSON.parse(readFileSync(values.tokens, "utf8")) as { tokens: { role: string; token: string }[] };
  const t = file.tokens.find((x) => x.role === role);
  if (t === undefined) throw new Error(`no ${role} token in ${values.tokens}`);
  return t.token;
}

async function main(): Promise<void> {
  const [mode] = positionals;
  if (values.url === undefined) throw new Error("--url is required");
  if (mode === "get") {
    const t = token(values["token-role"] || "read");
    // Several URLs (comma-separated): one line each, in order, e.g. the same page of every collector replica.
    for (const url of values.url.split(",")) {
      const res = await fetch(url, {
        headers: t === null ? {} : { authorization: `Bearer ${t}` },
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      console.log(
        JSON.stringify({ status: res.status, contentType: res.headers.get("content-type"), body: await res.text() }),
      );
    }
    return;
  }
  if (mode !== "post") throw new Error(`expected post or get; got ${mode ?? "nothing"}`);
  const format = values.format as Format;
  const id = { deviceId: values.device, batchId: values.batch };
  let body: Uint8Array;
  if (values.signal === "metrics") {
    body = await sdkMetricsBatch(
      id,
      {
        gateway: values.gateway,
        protocol: values.protocol,
        rttMs: values.rtt.split(",").map(Number),
        lossPercent: Number(values.loss),
      },
      format,
    );
  } else {
    const failovers =
      values.failover === undefined
        ? []
        : [values.failover.split(":")].map(
            ([from = "", fromProtocol = "", to = "", toProtocol = "", reason = "", d = "0", r = "0"]) => ({
              from,
              fromProtocol,
              to,
              toProtocol,
              reason,
              detectedAfterMs: Number(d),
              restoredAfterMs: Number(r),
            }),
          );
    const [state = "", gateway = "", protocol = ""] = values.state?.split(":") ?? [];
    body = await sdkLogsBatch(
      id,
      { failovers, ...(values.state === undefined ? {} : { state: { state, gateway, protocol } }) },
      format,
    );
  }
  const t = token(values["token-role"] || "ingest");
  const headers: Record<string, string> = {
    "content-type": format === "json" ? "application/json" : "application/x-protobuf",
  };
  if (t !== null) headers.authorization = `Bearer ${t}`;
  const res = await fetch(`${values.url}/v1/${values.signal}`, {
    method: "POST",
    headers,
    body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const raw = new Uint8Array(await res.arrayBuffer());
  const contentType = res.headers.get("content-type");
  const status =
    res.status === 200
      ? { code: null, message: "" }
      : contentType === "application/x-protobuf"
        ? decodeStatus(raw)
        : { code: null, message: Buffer.from(raw).toString("utf8") };
  console.log(
    JSON.stringify({
      status: res.status,
      contentType,
      message: status.message,
      code: status.code,
      retryAfter: res.headers.get("retry-after"),
    }),
  );
}

main().catch((e: unknown) => {
  console.error(`otlp-send: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
