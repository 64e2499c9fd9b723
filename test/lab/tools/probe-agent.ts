/**
 * The lab's data-plane prober, run inside a namespace (`ip netns exec <ns> node --import tsx probe-agent.ts`):
 * one JSON command per stdin line, one JSON result per stdout line, operations running side by side, each on its
 * own socket and bounded by its own deadline. A bad command gets an error result and never stops the agent.
 */
import { randomInt } from "node:crypto";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { lookup } from "node:dns/promises";
import { request } from "node:http";
import { createInterface } from "node:readline";
import { setTimeout as delay } from "node:timers/promises";
import {
  HTTP_BODY_TEXT_LIMIT,
  MAX_REPORTED_GAPS,
  idKey,
  operationBudgetMs,
  parseCommandLine,
  type ErrorResult,
  type HttpCommand,
  type HttpOutcome,
  type OperationCommand,
  type ProbeResult,
  type ReadyLine,
  type StreamCommand,
  type StreamOutcome,
  type UdpCommand,
  type UdpOutcome,
  type WaitReplyCommand,
  type WaitReplyOutcome,
} from "./probe-commands.ts";
import { ProbeLedger, decodeProbe, encodeProbe, roundMs, type ProbePayload } from "./probe-stats.ts";

/** Keeps a 1000-per-second stream's replies from overflowing the socket while the event loop is busy. */
const PROBE_RECV_BUFFER_BYTES = 1024 * 1024;
/** A sender with nothing to wait for yields to the event loop this often, so replies are timed while it sends. */
const SENDS_PER_YIELD = 64;

function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

function emit(line: ProbeResult | ReadyLine): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** Resolves after `ms`, on `notify()`, or when the signal aborts, whichever comes first. One waiter at a time. */
class Waker {
  private wake: (() => void) | null = null;

  notify(): void {
    this.wake?.();
  }

  wait(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal.addEventListener("abort", done, { once: true });
      this.wake = done;
    });
  }
}

/** A sleep that ends early, without throwing, when the signal aborts; true if it was not aborted. */
async function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (ms > 0 && !signal.aborted) await delay(ms, undefined, { signal }).catch(() => undefined);
  return !signal.aborted;
}

/**
 * One operation's UDP socket: probes out, replies into the ledger. Send errors (no route while the tunnel comes
 * up) are counted, never thrown, so a prober can keep trying through them.
 */
class ProbeSocket {
  sendErrors = 0;
  lastSendError: string | null = null;
  readonly waker = new Waker();

  private constructor(
    private readonly socket: UdpSocket,
    private readonly address: string,
    private readonly port: number,
    readonly ledger: ProbeLedger,
  ) {
    socket.on("message", (msg) => {
      const at = epochMs();
      const payload = decodeProbe(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
      this.onReply(payload, this.ledger.record(payload, at), at);
      this.waker.notify();
    });
    socket.on("error", (err) => {
      this.lastSendError = errorText(err);
    });
  }

  /** Called for every datagram after the ledger classified it. */
  onReply: (payload: ProbePayload | null, kind: ReturnType<ProbeLedger["record"]>, at: number) => void = () =>
    undefined;

  static async open(host: string, port: number, replyTimeoutMs: number): Promise<ProbeSocket> {
    const { address } = await lookup(host, { family: 4 });
    const socket = createSocket({ type: "udp4", recvBufferSize: PROBE_RECV_BUFFER_BYTES });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    return new ProbeSocket(socket, address, port, new ProbeLedger(randomInt(2 ** 32), replyTimeoutMs));
  }

  sendNext(): void {
    const payload = this.ledger.nextProbe(epochMs());
    this.socket.send(encodeProbe(payload), this.port, this.address, (err) => {
      if (err) {
        this.sendErrors++;
        this.lastSendError = errorText(err);
      }
    });
  }

  /** Sends probe i at start + i * intervalMs until `count` probes, `until`, or the signal; drift-free pacing. */
  async sendPaced(intervalMs: number, count: number, until: number, stop: AbortSignal): Promise<void> {
    const start = epochMs();
    let sinceYield = 0;
    for (let i = 0; i < count && !stop.aborted; i++) {
      const due = start + i * intervalMs;
      if (due >= until) break;
      const wait = due - epochMs();
      if (wait > 0) {
        if (!(await sleep(wait, stop))) break;
        sinceYield = 0;
      } else if (++sinceYield >= SENDS_PER_YIELD) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        sinceYield = 0;
      }
      this.sendNext();
    }
  }

  /** Waits for the replies that could still count, up to one reply timeout after the last send. */
  async drain(hard: AbortSignal): Promise<void> {
    const until = (this.ledger.lastSentAt() ?? epochMs()) + this.ledger.replyTimeoutMs;
    while (!hard.aborted && epochMs() < until && this.ledger.pending(epochMs()) > 0) {
      await this.waker.wait(until - epochMs(), hard);
    }
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

async function runUdp(cmd: UdpCommand, cancel: AbortSignal, hard: AbortSignal): Promise<UdpOutcome> {
  const stop = AbortSignal.any([cancel, hard]);
  const probe = await ProbeSocket.open(cmd.host, cmd.port, cmd.timeoutMs);
  try {
    const startedAt = epochMs();
    await probe.sendPaced(cmd.intervalMs, cmd.count, Number.POSITIVE_INFINITY, stop);
    await probe.drain(hard);
    const counts = probe.ledger.counts();
    return {
      id: cmd.id,
      op: "udp",
      ok: true,
      ...counts,
      sendErrors: probe.sendErrors,
      lastSendError: probe.lastSendError,
      startedAt,
      endedAt: epochMs(),
      cancelled: cancel.aborted,
    };
  } finally {
    probe.close();
  }
}

async function runWaitReply(cmd: WaitReplyCommand, cancel: AbortSignal, hard: AbortSignal): Promise<WaitReplyOutcome> {
  const stop = AbortSignal.any([cancel, hard]);
  const startedAt = epochMs();
  const deadline = startedAt + cmd.deadlineMs;
  // Every reply before the deadline counts, however slow.
  const probe = await ProbeSocket.open(cmd.host, cmd.port, cmd.deadlineMs);
  let first: { at: number; rttMs: number } | null = null;
  probe.onReply = (payload, kind, at) => {
    if (kind === "reply" && payload !== null) first ??= { at, rttMs: roundMs(at - payload.sentAt) };
  };
  // Read through a function: the reply handler sets `first` while this function awaits.
  const firstReply = (): { at: number; rttMs: number } | null => first;
  const done = (): boolean => firstReply() !== null || stop.aborted || epochMs() >= deadline;
  try {
    // Probe i is due at startedAt + i * intervalMs; between probes, and after the last one until the deadline,
    // wait for a reply. Each pass either sends the next due probe or waits, so the loop ends by the deadline.
    let next = 0;
    while (!done()) {
      const due = startedAt + next * cmd.intervalMs;
      const now = epochMs();
      if (now < due) {
        await probe.waker.wait(Math.min(due, deadline) - now, stop);
        continue;
      }
      probe.sendNext();
      next++;
    }
    const base = {
      id: cmd.id,
      op: "wait-reply" as const,
      startedAt,
      probesSent: probe.ledger.sent,
      sendErrors: probe.sendErrors,
      lastSendError: probe.lastSendError,
    };
    const got = firstReply();
    if (got !== null) return { ...base, ok: true, firstReplyAt: got.at, rttMs: got.rttMs };
    const error = cancel.aborted ? "cancelled" : `no reply within ${cmd.deadlineMs} ms`;
    return { ...base, ok: false, error, cancelled: cancel.aborted };
  } finally {
    probe.close();
  }
}

function runHttp(cmd: HttpCommand, cancel: AbortSignal): Promise<HttpOutcome> {
  const startedAt = epochMs();
  const timeout = AbortSignal.timeout(cmd.timeoutMs);
  const signal = AbortSignal.any([cancel, timeout]);
  return new Promise((resolve) => {
    let settled = false;
    const fail = (err: unknown): void => {
      if (settled) return;
      settled = true;
      const error = cancel.aborted
        ? "cancelled"
        : timeout.aborted
          ? `timed out after ${cmd.timeoutMs} ms`
          : errorText(err);
      resolve({
        id: cmd.id,
        op: "http",
        ok: false,
        error,
        startedAt,
        elapsedMs: roundMs(epochMs() - startedAt),
        cancelled: cancel.aborted,
      });
    };
    // A fresh connection per request: a pooled one could outlive the tunnel the probe means to test.
    const req = request(cmd.url, { method: "GET", agent: false, signal, headers: { connection: "close" } }, (res) => {
      const kept: Buffer[] = [];
      let keptBytes = 0;
      let bodyBytes = 0;
      res.on("data", (chunk: Buffer) => {
        bodyBytes += chunk.length;
        if (keptBytes < HTTP_BODY_TEXT_LIMIT) {
          const part = chunk.subarray(0, HTTP_BODY_TEXT_LIMIT - keptBytes);
          kept.push(part);
          keptBytes += part.length;
        }
      });
      res.on("error", fail);
      res.on("close", () => {
        if (!res.complete) fail(new Error("connection closed before the body ended"));
      });
      res.on("end", () => {
        if (settled) return;
        settled = true;
        resolve({
          id: cmd.id,
          op: "http",
          ok: true,
          status: res.statusCode ?? 0,
          body: Buffer.concat(kept).toString("utf8"),
          bodyBytes,
          bodyTruncated: bodyBytes > keptBytes,
          startedAt,
          elapsedMs: roundMs(epochMs() - startedAt),
        });
      });
    });
    req.on("error", fail);
    req.end();
  });
}

async function runStream(cmd: StreamCommand, cancel: AbortSignal, hard: AbortSignal): Promise<StreamOutcome> {
  const stop = AbortSignal.any([cancel, hard]);
  const probe = await ProbeSocket.open(cmd.host, cmd.port, cmd.timeoutMs);
  try {
    const startedAt = epochMs();
    await probe.sendPaced(1000 / cmd.ratePerSec, Number.POSITIVE_INFINITY, startedAt + cmd.durationMs, stop);
    const sendingEndedAt = epochMs();
    await probe.drain(hard);
    const counts = probe.ledger.counts();
    const gaps = probe.ledger.gaps(sendingEndedAt, MAX_REPORTED_GAPS);
    return {
      id: cmd.id,
      op: "stream",
      ok: true,
      ...counts,
      lost: counts.sent - counts.received,
      longestGapMs: gaps.longestGapMs,
      gaps: gaps.gaps,
      gapCount: gaps.gapCount,
      sendErrors: probe.sendErrors,
      lastSendError: probe.lastSendError,
      startedAt,
      endedAt: epochMs(),
      cancelled: cancel.aborted,
    };
  } finally {
    probe.close();
  }
}

async function runOperation(cmd: OperationCommand, cancel: AbortSignal, hard: AbortSignal): Promise<ProbeResult> {
  try {
    switch (cmd.op) {
      case "udp":
        return await runUdp(cmd, cancel, hard);
      case "wait-reply":
        return await runWaitReply(cmd, cancel, hard);
      case "http":
        return await runHttp(cmd, cancel);
      case "stream":
        return await runStream(cmd, cancel, hard);
    }
  } catch (err) {
    // Resolving the host or binding the socket failed before any probe went out.
    return { id: cmd.id, op: cmd.op, ok: false, error: errorText(err) };
  }
}

const running = new Map<string, AbortController>();

function start(cmd: OperationCommand): void {
  const key = idKey(cmd.id);
  if (running.has(key)) {
    emit({
      id: cmd.id,
      op: cmd.op,
      ok: false,
      error: `id ${JSON.stringify(cmd.id)} belongs to an operation still running`,
    });
    return;
  }
  const cancel = new AbortController();
  running.set(key, cancel);
  // The watchdog: loops are bounded by their own clocks, this bounds them even if those clocks misbehave.
  const hard = AbortSignal.timeout(operationBudgetMs(cmd));
  runOperation(cmd, cancel.signal, hard)
    .catch((err: unknown): ErrorResult => {
      process.stderr.write(
        `probe-agent: bug in ${cmd.op}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      return { id: cmd.id, op: cmd.op, ok: false, error: `internal error: ${errorText(err)}` };
    })
    .then((result) => {
      running.delete(key);
      emit(result);
    })
    .catch((err: unknown) => {
      process.stderr.write(`probe-agent: cannot write a result: ${errorText(err)}\n`);
    });
}

function exit(code: number): never {
  for (const cancel of running.values()) cancel.abort();
  process.exit(code);
}

function dispatch(line: string): void {
  if (line.trim() === "") return;
  const parsed = parseCommandLine(line);
  if (!parsed.ok) {
    emit(parsed);
    return;
  }
  const cmd = parsed.command;
  switch (cmd.op) {
    case "exit":
      exit(0);
      break;
    case "cancel": {
      const target = running.get(idKey(cmd.id));
      if (target === undefined) {
        emit({
          id: cmd.id,
          op: "cancel",
          ok: false,
          error: `cancel: no running operation with id ${JSON.stringify(cmd.id)}`,
        });
      } else {
        target.abort();
      }
      break;
    }
    case "udp":
    case "wait-reply":
    case "http":
    case "stream":
      start(cmd);
      break;
  }
}

// The parent reading our results is gone: nobody is left to report to.
process.stdout.on("error", () => {
  exit(0);
});
const input = createInterface({ input: process.stdin, crlfDelay: Number.POSITIVE_INFINITY });
input.on("line", dispatch);
input.on("close", () => {
  exit(0);
});
emit({ ready: true, pid: process.pid });
