/**
 * The probe client and agent end to end on loopback (prefix [], no namespaces, no root), against a real
 * corp-server child process and, for outages, an echo in this process that can be told to go silent.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { isAlive, stopPids } from "./exec.ts";
import { ProbeClient, ProbeClientError } from "./probe-client.ts";

/** tsx start-up plus binding two sockets; generous for a loaded CI machine. */
const START_TIMEOUT_MS = 10_000;

const corpServerPath = fileURLToPath(new URL("./services/corp-server.ts", import.meta.url));
const repoRoot = fileURLToPath(new URL("../../", import.meta.url));

interface Corp {
  readonly pid: number;
  readonly httpPort: number;
  readonly echoPort: number;
}

async function startCorp(dir: string, pids: number[]): Promise<Corp> {
  const file = join(dir, "corp.json");
  const sources = [{ cidr: "127.0.0.0/8", gateway: "gw9", protocol: "wireguard" }];
  writeFileSync(
    file,
    JSON.stringify({ httpAddress: "127.0.0.1", httpPort: 0, echoAddress: "127.0.0.1", echoPort: 0, sources }),
  );
  const child = spawn(process.execPath, ["--import", "tsx", corpServerPath, "--config", file], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  assert.ok(child.pid !== undefined, "corp-server did not start");
  pids.push(child.pid);
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (t: string) => (out += t));
  child.stderr.setEncoding("utf8").on("data", (t: string) => (err += t));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!out.includes("corp-server ready\n") && isAlive(child.pid) && Date.now() < deadline) await sleep(20);
  assert.ok(out.includes("corp-server ready\n"), `corp-server not ready: ${out} ${err}`);
  const start = JSON.parse(out.split("\n")[0] ?? "") as { http: { port: number }; echo: { port: number } };
  return { pid: child.pid, httpPort: start.http.port, echoPort: start.echo.port };
}

/** A UDP echo in this process that drops everything while `silent` is set: a gateway outage on demand. */
async function flakyEcho(): Promise<{ socket: UdpSocket; port: number; setSilent: (s: boolean) => void }> {
  const socket = createSocket("udp4");
  let silent = false;
  socket.on("message", (msg, peer) => {
    if (!silent) socket.send(msg, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { socket, port: socket.address().port, setSilent: (s) => (silent = s) };
}

void describe("probe client and agent on loopback", () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-probe-test-"));
  /** Every process this suite started, for the cleanup and the final check. */
  const pids: number[] = [];
  const clients: ProbeClient[] = [];
  const sockets: UdpSocket[] = [];
  let corp: Corp | undefined;
  let probe: ProbeClient | undefined;

  const c = (): Corp => {
    assert.ok(corp !== undefined, "corp-server did not start");
    return corp;
  };
  const p = (): ProbeClient => {
    assert.ok(probe !== undefined, "the probe agent did not start");
    return probe;
  };
  const startClient = async (prefix: readonly string[], readyTimeoutMs?: number): Promise<ProbeClient> => {
    const client = await ProbeClient.start({ prefix, readyTimeoutMs });
    clients.push(client);
    pids.push(client.pid);
    return client;
  };

  before(async () => {
    corp = await startCorp(dir, pids);
    probe = await startClient([]);
  });

  after(async () => {
    await Promise.all(clients.map((client) => client.close()));
    for (const s of sockets) s.close();
    await stopPids(pids);
    rmSync(dir, { recursive: true, force: true });
  });

  void it("udp: 200 probes at 2 ms on loopback lose nothing", async () => {
    const r = await p().udp({ host: "127.0.0.1", port: c().echoPort, count: 200, intervalMs: 2, timeoutMs: 1000 });
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.sent, 200);
    assert.equal(r.received, 200);
    assert.equal(r.lossPct, 0);
    assert.equal(r.duplicates, 0);
    assert.equal(r.late, 0);
    assert.equal(r.sendErrors, 0);
    assert.ok(r.rttMs !== null);
    assert.ok(r.rttMs.min <= r.rttMs.p50 && r.rttMs.p50 <= r.rttMs.p95 && r.rttMs.p95 <= r.rttMs.max);
    assert.ok(r.firstReplyAt !== null && r.firstReplyAt >= r.startedAt && r.firstReplyAt <= r.endedAt);
    assert.ok(Math.abs(r.startedAt - Date.now()) < 10_000, "times are epoch milliseconds");
    assert.ok(r.endedAt - r.startedAt >= 199 * 2 - 5, "probes were paced, not burst");
  });

  void it("wait-reply: answers at the first reply", async () => {
    const r = await p().waitReply({ host: "127.0.0.1", port: c().echoPort, intervalMs: 10, deadlineMs: 5000 });
    assert.ok(r.ok, JSON.stringify(r));
    assert.ok(r.probesSent >= 1);
    assert.ok(r.firstReplyAt >= r.startedAt && r.firstReplyAt - r.startedAt < 2000);
  });

  void it("wait-reply: reports no reply from a silent port by its deadline", async () => {
    const silent = await flakyEcho();
    sockets.push(silent.socket);
    silent.setSilent(true);
    const t0 = performance.now();
    const r = await p().waitReply({ host: "127.0.0.1", port: silent.port, intervalMs: 20, deadlineMs: 300 });
    assert.ok(!r.ok);
    assert.equal(r.error, "no reply within 300 ms");
    assert.ok("probesSent" in r && r.probesSent >= 10 && r.probesSent <= 16, JSON.stringify(r));
    assert.ok(performance.now() - t0 < 2000);
  });

  void it("http: whoami through loopback is gw9 over WireGuard", async () => {
    const r = await p().http({ url: `http://127.0.0.1:${c().httpPort}/whoami`, timeoutMs: 2000 });
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.status, 200);
    const who = JSON.parse(r.body) as Record<string, unknown>;
    assert.deepEqual([who.gateway, who.protocol, who.clientAddress], ["gw9", "wireguard", "127.0.0.1"]);
    assert.ok(r.elapsedMs > 0 && r.elapsedMs < 2000);
  });

  void it("http: a large body is counted in full and returned cut short", async () => {
    const r = await p().http({ url: `http://127.0.0.1:${c().httpPort}/bytes?n=1000000`, timeoutMs: 5000 });
    assert.ok(r.ok, JSON.stringify(r).slice(0, 300));
    assert.equal(r.bodyBytes, 1_000_000);
    assert.equal(r.bodyTruncated, true);
    assert.ok(r.body.length <= 4096);
  });

  void it("http: a refused connection is a failed probe, not an exception", async () => {
    const closed = await flakyEcho(); // a UDP port: nothing listens on TCP there
    closed.socket.close();
    const r = await p().http({ url: `http://127.0.0.1:${closed.port}/whoami`, timeoutMs: 2000 });
    assert.ok(!r.ok);
    assert.match(r.error, /ECONNREFUSED/);
  });

  void it("stream: cancelled early, it returns what it measured so far", async () => {
    const stop = new AbortController();
    const t0 = performance.now();
    const pending = p().stream({
      host: "127.0.0.1",
      port: c().echoPort,
      ratePerSec: 200,
      durationMs: 30_000,
      signal: stop.signal,
    });
    await sleep(500);
    stop.abort();
    const r = await pending;
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.cancelled, true);
    assert.ok(performance.now() - t0 < 5000, "the cancel ended the stream");
    assert.ok(r.sent >= 40 && r.sent <= 130, `sent ${r.sent}`);
    assert.equal(r.lost, 0);
    assert.equal(r.received, r.sent);
    assert.deepEqual(r.gaps, []);
    assert.equal(r.longestGapMs, 0);
  });

  void it("stream: an outage shows up as one gap about as long as the outage", async () => {
    const echo = await flakyEcho();
    sockets.push(echo.socket);
    const pending = p().stream({
      host: "127.0.0.1",
      port: echo.port,
      ratePerSec: 200,
      durationMs: 1200,
      timeoutMs: 300,
    });
    await sleep(400);
    echo.setSilent(true);
    await sleep(300);
    echo.setSilent(false);
    const r = await pending;
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(r.gapCount, 1, JSON.stringify(r.gaps));
    const gap = r.gaps[0];
    assert.ok(gap !== undefined && gap.toAt !== null);
    assert.ok(r.longestGapMs >= 200 && r.longestGapMs <= 450, `longest gap ${r.longestGapMs} ms`);
    assert.equal(r.lost, gap.lost);
    assert.ok(r.lost >= 40 && r.lost <= 90, `lost ${r.lost}`);
    assert.equal(r.cancelled, false);
  });

  void it("runs overlapping commands and matches each result to its command", async () => {
    const [u, h, w] = await Promise.all([
      p().udp({ host: "127.0.0.1", port: c().echoPort, count: 50, intervalMs: 5, timeoutMs: 1000 }),
      p().http({ url: `http://127.0.0.1:${c().httpPort}/health`, timeoutMs: 2000 }),
      p().waitReply({ host: "127.0.0.1", port: c().echoPort, intervalMs: 10, deadlineMs: 2000 }),
    ]);
    assert.ok(u.ok && u.sent === 50 && u.received === 50, JSON.stringify(u));
    assert.ok(h.ok && h.body === "ok", JSON.stringify(h));
    assert.ok(w.ok, JSON.stringify(w));
  });

  void it("a malformed command gets an error and the agent keeps working", async () => {
    const notJson = await p().sendRaw("this is not json", { timeoutMs: 5000 });
    assert.deepEqual([notJson.ok, "id" in notJson], [false, false]);
    assert.ok(!notJson.ok);
    assert.match(notJson.error, /invalid JSON/);

    const badField = await p().sendRaw(
      '{"id":"bad-1","op":"udp","host":"127.0.0.1","port":70000,"count":1,"intervalMs":1,"timeoutMs":100}',
      { expectId: "bad-1", timeoutMs: 5000 },
    );
    assert.ok(!badField.ok);
    assert.equal(badField.id, "bad-1");
    assert.match(badField.error, /^udp\.port: /);

    const unknownCancel = await p().sendRaw('{"op":"cancel","id":424242}', { expectId: 424242, timeoutMs: 5000 });
    assert.ok(!unknownCancel.ok);
    assert.match(unknownCancel.error, /no running operation/);

    await assert.rejects(
      p().udp({ host: "127.0.0.1", port: c().echoPort, count: 0, intervalMs: 1, timeoutMs: 100 }),
      (e: unknown) => e instanceof ProbeClientError && e.code === "invalid-options" && /udp\.count/.test(e.message),
    );

    const still = await p().udp({ host: "127.0.0.1", port: c().echoPort, count: 10, intervalMs: 2, timeoutMs: 1000 });
    assert.ok(still.ok && still.received === 10, JSON.stringify(still));
    assert.ok(isAlive(p().pid));
  });

  void it("runs the agent behind a command prefix", async () => {
    const prefixed = await startClient(["env", "DETOUR_PROBE_TEST=1"]);
    const r = await prefixed.http({ url: `http://127.0.0.1:${c().httpPort}/health`, timeoutMs: 2000 });
    assert.ok(r.ok && r.body === "ok");
    await prefixed.close();
    assert.ok(!isAlive(prefixed.pid));
  });

  void it("gives up on an agent that never gets ready, and stops it", async () => {
    // A prefix that runs a node process ignoring the agent's arguments and stdin: it never prints the ready line
    // and ignores the exit command, so close() must escalate to SIGTERM.
    const t0 = performance.now();
    let failure: unknown;
    try {
      await startClient([process.execPath, "-e", "setTimeout(() => {}, 60_000)"], 500);
    } catch (err) {
      failure = err;
    }
    assert.ok(failure instanceof ProbeClientError, String(failure));
    if (failure.pid !== undefined) pids.push(failure.pid);
    assert.equal(failure.code, "start-failed");
    assert.match(failure.message, /no ready line within 500 ms/);
    assert.ok(failure.pid !== undefined && !isAlive(failure.pid), "the stuck process was stopped");
    assert.ok(performance.now() - t0 < 8000);
  });

  void it("reports a prefix command that does not exist", async () => {
    await assert.rejects(
      ProbeClient.start({ prefix: ["/nonexistent/detour-prefix"] }),
      (e: unknown) => e instanceof ProbeClientError && e.code === "start-failed" && /ENOENT/.test(e.message),
    );
  });

  void it("close stops the agent by PID, and is safe to call twice", async () => {
    const client = p();
    await Promise.all([client.close(), client.close()]);
    await client.close();
    assert.ok(!isAlive(client.pid));
    await assert.rejects(
      client.http({ url: `http://127.0.0.1:${c().httpPort}/health`, timeoutMs: 2000 }),
      (e: unknown) => e instanceof ProbeClientError && e.code === "closed",
    );
  });

  void it("leaves no process behind", async () => {
    await Promise.all(clients.map((client) => client.close()));
    await stopPids([c().pid]);
    for (const pid of pids) assert.ok(!isAlive(pid), `process ${pid} is still running`);
  });
});
