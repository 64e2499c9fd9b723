/**
 * The corp server as the lab runs it (a child process reading a JSON config), on loopback: no namespaces, no root.
 * Loopback accepts any 127/8 source address, which stands in for the tunnel pools.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { isAlive } from "../exec.ts";

/** tsx start-up plus binding two sockets; generous for a loaded CI machine. */
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 5_000;

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const serverPath = fileURLToPath(new URL("./corp-server.ts", import.meta.url));

interface CorpProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly pid: number;
  readonly httpPort: number;
  readonly echoPort: number;
  readonly output: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns corp-server with `config` and waits (bounded) for its exit or its ready line. */
function spawnCorp(
  dir: string,
  config: unknown,
): {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  stderr: () => string;
  exited: CorpProcess["exited"];
} {
  const file = join(dir, `corp-${String(Date.now())}-${String(Math.random()).slice(2, 8)}.json`);
  writeFileSync(file, JSON.stringify(config));
  const child = spawn(process.execPath, ["--import", "tsx", serverPath, "--config", file], {
    cwd: repoRoot,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (t: string) => (out += t));
  child.stderr.setEncoding("utf8").on("data", (t: string) => (err += t));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on("exit", (code, signal) => {
      resolve({ code, signal });
    });
  });
  return { child, output: () => out, stderr: () => err, exited };
}

async function startCorp(dir: string, config: unknown): Promise<CorpProcess> {
  const { child, output, stderr, exited } = spawnCorp(dir, config);
  const pid = child.pid;
  assert.ok(pid !== undefined, "corp-server did not start");
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!output().includes("corp-server ready\n") && isAlive(pid) && Date.now() < deadline) await sleep(20);
  if (!output().includes("corp-server ready\n")) {
    child.kill("SIGKILL");
    assert.fail(`corp-server not ready within ${START_TIMEOUT_MS} ms: ${output()} ${stderr()}`);
  }
  const start = JSON.parse(output().split("\n")[0] ?? "") as {
    event: string;
    http: { port: number };
    echo: { port: number };
  };
  assert.equal(start.event, "start");
  return { child, pid, httpPort: start.http.port, echoPort: start.echo.port, output, exited };
}

async function stopCorp(corp: CorpProcess | undefined): Promise<void> {
  if (corp === undefined || !isAlive(corp.pid)) return;
  process.kill(corp.pid, "SIGTERM");
  const timer = new AbortController();
  const clean = await Promise.race([
    corp.exited.then(() => true),
    sleep(STOP_TIMEOUT_MS, false, { signal: timer.signal }).catch(() => false),
  ]);
  timer.abort();
  if (!clean && isAlive(corp.pid)) process.kill(corp.pid, "SIGKILL");
}

interface Reply {
  status: number;
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
}

function get(port: number, path: string, opts: { localAddress?: string; method?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: opts.method ?? "GET",
        localAddress: opts.localAddress,
        agent: false,
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

/** Sends one datagram to the echo port and returns what came back (bounded). */
async function echo(port: number, payload: Buffer): Promise<Buffer> {
  const socket = createSocket("udp4");
  try {
    const reply = new Promise<Buffer>((resolve) => socket.once("message", resolve));
    socket.send(payload, port, "127.0.0.1");
    const timer = new AbortController();
    const got = await Promise.race([
      reply,
      sleep(REQUEST_TIMEOUT_MS, null, { signal: timer.signal }).catch(() => null),
    ]);
    timer.abort();
    assert.ok(got !== null, `no echo within ${REQUEST_TIMEOUT_MS} ms`);
    return got;
  } finally {
    socket.close();
  }
}

const MIB = 1024 * 1024;

void describe("corp-server on loopback", () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-corp-test-"));
  let corp: CorpProcess | undefined;
  const server = (): CorpProcess => {
    assert.ok(corp !== undefined, "corp-server did not start");
    return corp;
  };

  before(async () => {
    corp = await startCorp(dir, {
      httpAddress: "127.0.0.1",
      httpPort: 0,
      echoAddress: "127.0.0.1",
      echoPort: 0,
      sources: [
        { cidr: "127.0.0.0/9", gateway: "gw9", protocol: "wireguard" },
        { cidr: "127.0.0.5/32", gateway: "gw8", protocol: "anyconnect" },
      ],
    });
  });

  after(async () => {
    await stopCorp(corp);
    rmSync(dir, { recursive: true, force: true });
  });

  void it("announces itself with a JSON start line, then the ready line", () => {
    const [startLine, readyLine] = server().output().split("\n");
    const start = JSON.parse(startLine ?? "") as Record<string, unknown>;
    assert.equal(start.service, "corp-server");
    assert.equal(start.pid, server().pid);
    assert.equal(typeof start.at, "number");
    assert.equal(readyLine, "corp-server ready");
  });

  void it("whoami names the gateway and protocol the source address belongs to", async () => {
    const r = await get(server().httpPort, "/whoami");
    assert.equal(r.status, 200);
    assert.match(String(r.headers["content-type"]), /application\/json/);
    const who = JSON.parse(r.body.toString()) as Record<string, unknown>;
    assert.equal(who.gateway, "gw9");
    assert.equal(who.protocol, "wireguard");
    assert.equal(who.clientAddress, "127.0.0.1");
    assert.equal(typeof who.servedAt, "number");
    assert.ok(Math.abs((who.servedAt as number) - Date.now()) < 5000, "servedAt is epoch milliseconds");
  });

  void it("whoami picks the most specific pool", async () => {
    const who = JSON.parse(
      (await get(server().httpPort, "/whoami", { localAddress: "127.0.0.5" })).body.toString(),
    ) as Record<string, unknown>;
    assert.deepEqual([who.gateway, who.protocol, who.clientAddress], ["gw8", "anyconnect", "127.0.0.5"]);
  });

  void it("whoami answers nulls for a source in no pool", async () => {
    const who = JSON.parse(
      (await get(server().httpPort, "/whoami", { localAddress: "127.200.0.1" })).body.toString(),
    ) as Record<string, unknown>;
    assert.deepEqual([who.gateway, who.protocol, who.clientAddress], [null, null, "127.200.0.1"]);
  });

  void it("health says ok", async () => {
    const r = await get(server().httpPort, "/health");
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), "ok");
  });

  void it("bytes serves exactly n bytes, up to 10 MiB", async () => {
    for (const n of [0, 1, 65_537, 10 * MIB]) {
      const r = await get(server().httpPort, `/bytes?n=${n}`);
      assert.equal(r.status, 200, `n=${n}`);
      assert.equal(r.body.length, n, `n=${n}`);
      assert.equal(r.headers["content-length"], String(n));
    }
  });

  void it("bytes refuses a size over 10 MiB or not a number", async () => {
    for (const q of [`n=${10 * MIB + 1}`, "n=abc", "n=-1", "n=1.5", "n=1e6", ""]) {
      assert.equal((await get(server().httpPort, `/bytes?${q}`)).status, 400, q);
    }
  });

  void it("answers 404 for anything else, and 405 for another method on a known path", async () => {
    assert.equal((await get(server().httpPort, "/")).status, 404);
    assert.equal((await get(server().httpPort, "/whoami/x")).status, 404);
    const post = await get(server().httpPort, "/health", { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, "GET, HEAD");
  });

  void it("echoes every datagram back unchanged", async () => {
    const small = Buffer.from("probe 1");
    assert.deepEqual(await echo(server().echoPort, small), small);
    const large = Buffer.alloc(1400, 0xa5);
    assert.deepEqual(await echo(server().echoPort, large), large);
  });

  void it("stops cleanly on SIGTERM: exit 0, a JSON stop line, the port free again", async () => {
    const c = server();
    process.kill(c.pid, "SIGTERM");
    const timer = new AbortController();
    const exit = await Promise.race([
      c.exited,
      sleep(STOP_TIMEOUT_MS, null, { signal: timer.signal }).catch(() => null),
    ]);
    timer.abort();
    assert.deepEqual(exit, { code: 0, signal: null });
    const stop = JSON.parse(c.output().trim().split("\n").at(-1) ?? "") as Record<string, unknown>;
    assert.equal(stop.event, "stop");
    assert.equal(stop.signal, "SIGTERM");
    assert.equal(stop.clean, true);
    assert.ok(!isAlive(c.pid));
    await assert.rejects(get(c.httpPort, "/health"), /ECONNREFUSED/);
  });
});

void describe("corp-server with a bad config", () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-corp-test-"));
  const children: ChildProcessWithoutNullStreams[] = [];

  after(() => {
    for (const c of children) if (c.pid !== undefined && isAlive(c.pid)) process.kill(c.pid, "SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  async function refusal(config: unknown): Promise<{ code: number | null; stderr: string }> {
    const run = spawnCorp(dir, config);
    children.push(run.child);
    const timer = new AbortController();
    const exit = await Promise.race([
      run.exited,
      sleep(START_TIMEOUT_MS, null, { signal: timer.signal }).catch(() => null),
    ]);
    timer.abort();
    assert.ok(exit !== null, "corp-server should have exited");
    assert.ok(!run.output().includes("corp-server ready"));
    return { code: exit.code, stderr: run.stderr() };
  }

  void it("exits non-zero naming the bad field", async () => {
    const r = await refusal({
      httpAddress: "127.0.0.1",
      httpPort: 0,
      echoAddress: "127.0.0.1",
      echoPort: 0,
      sources: [{ cidr: "127.0.0.0/8", gateway: "gw9", protocol: "ipsec" }],
    });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /sources\[0\]\.protocol: expected one of wireguard, ikev2, anyconnect, got "ipsec"/);
  });

  void it("exits non-zero when it cannot bind, naming the address", async () => {
    const r = await refusal({
      httpAddress: "127.0.0.1",
      httpPort: 0,
      echoAddress: "192.0.2.77",
      echoPort: 0,
      sources: [],
    });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot bind UDP echo to 192\.0\.2\.77:0/);
  });
});
