/**
 * The lab's "internal resources" behind the gateways: a UDP echo for latency and loss probes and an HTTP server
 * whose /whoami tells which gateway and protocol a request came through (the gateways route without NAT, so the
 * source address is the client's tunnel address). Run as `node --import tsx corp-server.ts --config <file.json>`.
 */
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { identifySource, peerIpv4, validateCorpConfig, type CorpConfig } from "./corp-map.ts";

/** The largest /bytes body: enough for a throughput sample over a lab tunnel, small enough to never hurt the box. */
export const MAX_BYTES_BODY = 10 * 1024 * 1024;
/** Closing both sockets takes milliseconds; past this something is wedged and we exit non-zero rather than hang. */
const SHUTDOWN_TIMEOUT_MS = 2000;
/** Large enough that a 1000-per-second probe stream never overflows the echo socket while the loop is busy. */
const ECHO_RECV_BUFFER_BYTES = 1024 * 1024;
/**
 * /bytes is written in chunks of this size, honouring backpressure, so a slow reader does not balloon memory.
 * Printable filler rather than zeros, so a body quoted in a log or a JSON result stays readable.
 */
const BYTES_CHUNK = Buffer.alloc(64 * 1024, "detour ");

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

function logLine(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ service: "corp-server", at: epochMs(), ...fields })}\n`);
}

function fail(message: string, code = EXIT_FAILURE): never {
  process.stderr.write(`corp-server: ${message}\n`);
  process.exit(code);
}

async function loadConfig(argv: readonly string[]): Promise<CorpConfig> {
  let path: string | undefined;
  try {
    path = parseArgs({ args: [...argv], options: { config: { type: "string" } }, strict: true }).values.config;
  } catch (err) {
    fail(`${(err as Error).message}\nusage: corp-server.ts --config <file.json>`, EXIT_USAGE);
  }
  if (path === undefined) fail("missing --config <file.json>", EXIT_USAGE);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    fail(`cannot read config ${path}: ${(err as Error).message}`, EXIT_USAGE);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    fail(`config ${path} is not valid JSON: ${(err as Error).message}`, EXIT_USAGE);
  }
  const checked = validateCorpConfig(raw);
  if (!checked.ok) fail(`invalid config ${path}: ${checked.error}`, EXIT_USAGE);
  return checked.value;
}

function startEcho(address: string, port: number): Promise<UdpSocket> {
  const socket = createSocket({ type: "udp4", recvBufferSize: ECHO_RECV_BUFFER_BYTES });
  socket.on("message", (msg, peer) => {
    // A failed echo is a lost probe, which is exactly what the prober measures; nothing to report here.
    socket.send(msg, peer.port, peer.address, () => undefined);
  });
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(port, address, () => {
      socket.off("error", reject);
      socket.on("error", (err) => {
        process.stderr.write(`corp-server: UDP echo socket error: ${err.message}\n`);
      });
      resolve(socket);
    });
  });
}

function send(res: ServerResponse, status: number, contentType: string, body: string, head: boolean): void {
  res.writeHead(status, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
  });
  res.end(head ? undefined : body);
}

function* zeroChunks(total: number): Generator<Buffer> {
  for (let left = total; left > 0; left -= BYTES_CHUNK.length) {
    yield left >= BYTES_CHUNK.length ? BYTES_CHUNK : BYTES_CHUNK.subarray(0, left);
  }
}

function handle(config: CorpConfig, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://corp.invalid");
  const route = url.pathname;
  if (route !== "/whoami" && route !== "/health" && route !== "/bytes") {
    send(res, 404, "text/plain", "not found\n", req.method === "HEAD");
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    send(res, 405, "text/plain", "method not allowed\n", false);
    return;
  }
  const head = req.method === "HEAD";
  switch (route) {
    case "/health":
      send(res, 200, "text/plain", "ok", head);
      return;
    case "/whoami": {
      const clientAddress = peerIpv4(req.socket.remoteAddress);
      const { gateway, protocol } = identifySource(config.sources, clientAddress);
      const body = JSON.stringify({
        gateway,
        protocol,
        clientAddress: clientAddress ?? req.socket.remoteAddress ?? null,
        servedAt: epochMs(),
      });
      send(res, 200, "application/json", body, head);
      return;
    }
    case "/bytes": {
      const n = url.searchParams.get("n");
      if (n === null || !/^\d{1,9}$/.test(n) || Number(n) > MAX_BYTES_BODY) {
        send(res, 400, "text/plain", `n must be an integer 0..${MAX_BYTES_BODY}\n`, head);
        return;
      }
      const total = Number(n);
      res.writeHead(200, {
        "content-type": "application/octet-stream",
        "content-length": total,
        "cache-control": "no-store",
      });
      if (head) {
        res.end();
        return;
      }
      // A reader that hangs up mid-body is not our failure; the socket is destroyed either way.
      pipeline(Readable.from(zeroChunks(total)), res).catch(() => undefined);
      return;
    }
  }
}

function startHttp(config: CorpConfig): Promise<Server> {
  const server = createServer((req, res) => {
    handle(config, req, res);
  });
  server.on("clientError", (_err, socket) => {
    socket.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: config.httpAddress, port: config.httpPort }, () => {
      server.off("error", reject);
      resolve(server);
    });
  });
}

function closeBoth(echo: UdpSocket, http: Server): Promise<void> {
  const udpClosed = new Promise<void>((resolve) => {
    echo.close(() => {
      resolve();
    });
  });
  const httpClosed = new Promise<void>((resolve) => {
    http.close(() => {
      resolve();
    });
    http.closeAllConnections();
  });
  return Promise.all([udpClosed, httpClosed]).then(() => undefined);
}

async function main(): Promise<void> {
  const config = await loadConfig(process.argv.slice(2));
  let echo: UdpSocket;
  try {
    echo = await startEcho(config.echoAddress, config.echoPort);
  } catch (err) {
    fail(`cannot bind UDP echo to ${config.echoAddress}:${config.echoPort}: ${(err as Error).message}`);
  }
  let http: Server;
  try {
    http = await startHttp(config);
  } catch (err) {
    fail(`cannot listen for HTTP on ${config.httpAddress}:${config.httpPort}: ${(err as Error).message}`);
  }
  const httpBound = http.address() as AddressInfo;
  const echoBound = echo.address();
  logLine({
    event: "start",
    pid: process.pid,
    http: { address: httpBound.address, port: httpBound.port },
    echo: { address: echoBound.address, port: echoBound.port },
    sources: config.sources.map((s) => ({ cidr: s.cidr.text, gateway: s.gateway, protocol: s.protocol })),
  });
  process.stdout.write("corp-server ready\n");

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    const timer = setTimeout(() => {
      logLine({ event: "stop", signal, clean: false, reason: `sockets still open after ${SHUTDOWN_TIMEOUT_MS} ms` });
      process.exit(EXIT_FAILURE);
    }, SHUTDOWN_TIMEOUT_MS);
    closeBoth(echo, http)
      .then(() => {
        clearTimeout(timer);
        logLine({ event: "stop", signal, clean: true });
        process.exit(0);
      })
      .catch((err: unknown) => {
        clearTimeout(timer);
        logLine({ event: "stop", signal, clean: false, reason: String(err) });
        process.exit(EXIT_FAILURE);
      });
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err: unknown) => {
  fail(`crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
});
