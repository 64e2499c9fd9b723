/** The in-tunnel prober against a scripted UDP echo on loopback: loss, late and duplicate replies, strays, errors. */
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { once } from "node:events";
import { test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import type { ProbeSample } from "../core/connection/types.ts";
import { PROBE_BYTES, decodeProbe, encodeProbe, startMonitor } from "./monitor.ts";

/** Probes every 20 ms: fast enough for a short test, slow enough for a busy two-core machine. */
const INTERVAL_MS = 20;
/** Replies on loopback take well under a millisecond; 150 ms leaves room for a loaded CI box. */
const TIMEOUT_MS = 150;
/** "Late" replies arrive after the timeout. */
const LATE_MS = 300;
/** How long each scenario probes. */
const RUN_MS = 1000;

type Behaviour = "echo" | "drop" | "late" | "duplicate";

async function echoServer(
  behave: (seq: number) => Behaviour,
): Promise<{ socket: Socket; port: number; strayFrom: Socket; close(): Promise<void> }> {
  const socket = createSocket("udp4");
  const strayFrom = createSocket("udp4");
  const timers = new Set<NodeJS.Timeout>();
  socket.on("message", (msg, rinfo) => {
    const seq = msg.length === PROBE_BYTES ? msg.readUInt32BE(8) : 0;
    const reply = (): void => {
      socket.send(msg, rinfo.port, rinfo.address);
    };
    // Noise before every answer: garbage from the right address, and a perfect copy from the wrong port.
    socket.send(Buffer.from("not a probe"), rinfo.port, rinfo.address);
    strayFrom.send(msg, rinfo.port, rinfo.address);
    switch (behave(seq)) {
      case "echo":
        reply();
        return;
      case "drop":
        return;
      case "duplicate":
        reply();
        reply();
        return;
      case "late": {
        const t = setTimeout(() => {
          timers.delete(t);
          reply();
        }, LATE_MS);
        timers.add(t);
        return;
      }
    }
  });
  socket.bind(0, "127.0.0.1");
  strayFrom.bind(0, "127.0.0.1");
  await Promise.all([once(socket, "listening"), once(strayFrom, "listening")]);
  return {
    socket,
    port: socket.address().port,
    strayFrom,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      await Promise.all([
        new Promise<void>((r) => {
          socket.close(() => {
            r();
          });
        }),
        new Promise<void>((r) => {
          strayFrom.close(() => {
            r();
          });
        }),
      ]);
    },
  };
}

function behaviourOf(seq: number): Behaviour {
  if (seq % 5 === 0) return "drop";
  if (seq % 7 === 0) return "late";
  if (seq % 3 === 0) return "duplicate";
  return "echo";
}

test("probe-codec-round-trips-and-rejects-foreign-datagrams", () => {
  const b = encodeProbe(0xdeadbeef, 42, 1_700_000_000_123);
  assert.deepEqual(decodeProbe(b, 0xdeadbeef), { seq: 42, sentAt: 1_700_000_000_123 });
  assert.equal(decodeProbe(b, 0xdeadbeee), null, "another monitor's probe");
  assert.equal(decodeProbe(b.subarray(0, 19), 0xdeadbeef), null, "truncated");
  assert.equal(decodeProbe(Buffer.alloc(PROBE_BYTES), 0), null, "no magic");
});

test("each-probe-is-reported-once-loss-and-late-replies-as-null", { timeout: 10_000 }, async () => {
  const server = await echoServer(behaviourOf);
  const samples: ProbeSample[] = [];
  const errors: string[] = [];
  const m = startMonitor({
    legId: "L1",
    sourceAddress: "127.0.0.1",
    target: { address: "127.0.0.1", port: server.port },
    intervalMs: INTERVAL_MS,
    timeoutMs: TIMEOUT_MS,
    onSample: (s) => samples.push(s),
    onError: (e) => errors.push(e),
  });
  try {
    await delay(RUN_MS);
    // Let every probe sent so far time out or be answered, then stop.
    const sentBeforeWait = Math.max(...samples.map((s) => s.seq), 0);
    await delay(TIMEOUT_MS + 100);
    m.stop();
    const countAtStop = samples.length;
    await delay(LATE_MS + 50);
    assert.equal(samples.length, countAtStop, "nothing is reported after stop");
    assert.equal(m.outstanding, 0);

    const seqs = samples.map((s) => s.seq);
    assert.equal(new Set(seqs).size, seqs.length, "no probe is reported twice (duplicates ignored)");
    const bySeq = new Map(samples.map((s) => [s.seq, s]));
    for (let seq = 1; seq <= sentBeforeWait; seq++) assert.ok(bySeq.has(seq), `probe ${seq} was reported`);
    for (const s of samples) {
      const b = behaviourOf(s.seq);
      if (b === "drop" || b === "late") assert.equal(s.rttMs, null, `probe ${s.seq} (${b}) counts as lost`);
      else {
        assert.ok(
          s.rttMs !== null && s.rttMs >= 0 && s.rttMs < TIMEOUT_MS,
          `probe ${s.seq} (${b}) has its RTT: ${String(s.rttMs)}`,
        );
      }
      assert.ok(Math.abs(s.sentAt - performance.now()) < 10_000, "sentAt is on the monotonic clock");
    }
    const lost = samples.filter((s) => s.rttMs === null).length;
    const rtts = samples.flatMap((s) => (s.rttMs === null ? [] : [s.rttMs])).sort((a, b) => a - b);
    console.log(
      `${samples.length} probes: ${lost} lost (expected ${samples.filter((s) => ["drop", "late"].includes(behaviourOf(s.seq))).length}), median RTT ${String(rtts[Math.floor(rtts.length / 2)])} ms`,
    );
    assert.ok(samples.length >= (RUN_MS / INTERVAL_MS) * 0.5, `about one probe per interval (${samples.length})`);
    assert.deepEqual(errors, []);
  } finally {
    m.stop();
    await server.close();
  }
});

test("with-late-replies-a-reply-after-the-timeout-follows-its-loss-as-a-late-sample", { timeout: 10_000 }, async () => {
  const server = await echoServer(behaviourOf);
  const samples: ProbeSample[] = [];
  const m = startMonitor({
    legId: "L1",
    sourceAddress: "127.0.0.1",
    target: { address: "127.0.0.1", port: server.port },
    intervalMs: INTERVAL_MS,
    timeoutMs: TIMEOUT_MS,
    lateReplies: true,
    onSample: (s) => samples.push(s),
  });
  try {
    await delay(RUN_MS);
    const sent = Math.max(...samples.map((s) => s.seq), 0);
    await delay(TIMEOUT_MS + LATE_MS + 100);
    m.stop();
    const of = (seq: number): ProbeSample[] => samples.filter((s) => s.seq === seq);
    let lateSeen = 0;
    for (let seq = 1; seq <= sent; seq++) {
      const b = behaviourOf(seq);
      const got = of(seq);
      if (b === "late") {
        lateSeen++;
        assert.equal(got.length, 2, `probe ${seq}: lost at the timeout, then answered late`);
        const [lost, answered] = got;
        assert.ok(lost !== undefined && answered !== undefined);
        assert.equal(lost.rttMs, null);
        assert.equal(answered.late, true);
        assert.ok((answered.rttMs ?? 0) >= LATE_MS - 5, `probe ${seq} late by its real RTT: ${String(answered.rttMs)}`);
        assert.equal(answered.sentAt, lost.sentAt);
      } else {
        assert.equal(got.length, 1, `probe ${seq} (${b}) reported once`);
        assert.equal(got[0]?.rttMs === null, b === "drop");
      }
    }
    assert.ok(lateSeen > 0, "the scenario had late replies");
  } finally {
    m.stop();
    await server.close();
  }
});

test("pending-since-is-the-oldest-probe-sent-after-the-newest-answer", { timeout: 10_000 }, async () => {
  // Answers until seq 10, then silence: the oldest unanswered probe is seq 11, whatever was lost before.
  const server = await echoServer((seq) => (seq === 5 || seq > 10 ? "drop" : "echo"));
  const samples: ProbeSample[] = [];
  const m = startMonitor({
    legId: "L1",
    sourceAddress: "127.0.0.1",
    target: { address: "127.0.0.1", port: server.port },
    intervalMs: INTERVAL_MS,
    timeoutMs: 5000,
    onSample: (s) => samples.push(s),
  });
  try {
    for (let i = 0; i < 100 && samples.filter((s) => s.rttMs !== null).length < 9; i++) await delay(INTERVAL_MS);
    await delay(INTERVAL_MS * 4);
    const since = m.pendingSince();
    const answeredMax = Math.max(...samples.flatMap((s) => (s.rttMs === null ? [] : [s.sentAt])));
    assert.ok(
      since !== null && since > answeredMax,
      `pending since ${String(since)}, newest answer sent at ${answeredMax}`,
    );
    assert.ok(m.outstanding >= 3, "seq 5 and the silent ones are in flight");
  } finally {
    m.stop();
    await server.close();
  }
  assert.equal(m.pendingSince(), null, "nothing is pending after stop");
});

test("a-missing-source-address-means-lost-probes-not-a-crash", { timeout: 10_000 }, async () => {
  const samples: ProbeSample[] = [];
  const errors: string[] = [];
  // 192.0.2.77 (TEST-NET-1) is on no interface: the bind fails with EADDRNOTAVAIL and nothing is ever sent.
  const m = startMonitor({
    legId: "L2",
    sourceAddress: "192.0.2.77",
    target: { address: "127.0.0.1", port: 9 },
    intervalMs: INTERVAL_MS,
    timeoutMs: TIMEOUT_MS,
    onSample: (s) => samples.push(s),
    onError: (e) => errors.push(e),
  });
  try {
    await delay(400);
  } finally {
    m.stop();
  }
  assert.ok(samples.length >= 5, `probes keep being reported (${samples.length})`);
  assert.ok(
    samples.every((s) => s.rttMs === null),
    "all lost",
  );
  assert.ok(
    errors.some((e) => e.includes("EADDRNOTAVAIL")),
    `the bind error is reported: ${errors.join("; ")}`,
  );
});

test("send-errors-count-as-lost-probes", { timeout: 10_000 }, async () => {
  const samples: ProbeSample[] = [];
  const errors: string[] = [];
  // Broadcast without SO_BROADCAST: the kernel refuses the send (EACCES) before anything leaves loopback.
  const m = startMonitor({
    legId: "L3",
    sourceAddress: "127.0.0.1",
    target: { address: "255.255.255.255", port: 9 },
    intervalMs: INTERVAL_MS,
    timeoutMs: 5000,
    onSample: (s) => samples.push(s),
    onError: (e) => errors.push(e),
  });
  try {
    await delay(300);
  } finally {
    m.stop();
  }
  assert.ok(
    samples.length >= 5 && samples.every((s) => s.rttMs === null),
    `each refused send is a lost probe at once (${samples.length})`,
  );
  assert.ok(
    errors.some((e) => e.includes("send failed")),
    errors.join("; "),
  );
});

test("a-throwing-listener-does-not-stop-probing", { timeout: 10_000 }, async () => {
  const server = await echoServer(() => "echo");
  let n = 0;
  const m = startMonitor({
    legId: "L4",
    sourceAddress: "127.0.0.1",
    target: { address: "127.0.0.1", port: server.port },
    intervalMs: INTERVAL_MS,
    timeoutMs: TIMEOUT_MS,
    onSample: () => {
      n += 1;
      throw new Error("listener bug");
    },
  });
  try {
    await delay(300);
  } finally {
    m.stop();
    await server.close();
  }
  assert.ok(n >= 5, `samples keep coming (${n})`);
});
