/**
 * Proves the lab without any Detour code: every protocol to every gateway with the plain engine tools, corp
 * reached through each tunnel and seeing the right gateway, and every kind of impairment doing what it says.
 * Leaves the lab as it found it (no client engine running, no impairment added).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { run } from "./exec.ts";
import * as lab from "./lab.ts";
import { describeImpairment, type ImpairmentSpec } from "./impair.ts";
import { logOf, PLAIN_LEGS, startPlain, type PlainLeg, type PlainTunnel } from "./plain/plain-clients.ts";
import { ProbeClient } from "./probe-client.ts";
import type { RttSummary } from "./tools/probe-stats.ts";
import {
  CORP_ECHO_PORT,
  CORP_HTTP_PORT,
  gatewayByName,
  gatewayDistances,
  oneWayDelay,
  type GatewayName,
  type LabTopology,
} from "./topology.ts";

/** A working tunnel replies within ~0.2 s at 0 ms; 5 s also covers a loaded CI machine. */
const LEG_DEADLINE_MS = 5_000;
/**
 * Plus this many of the gateway's round trips: AnyConnect, the slowest leg, needs about 11 (TLS, authentication,
 * tunnel setup, then DTLS), 3.2 s to a 250 ms gateway.
 */
const LEG_ROUND_TRIPS = 12;
/** A blocked leg must still be silent this long after launch (a working one to gw1 or gw2 answers within ~1 s). */
const BLOCKED_OBSERVE_MS = 2_500;
const LOSS_PROBES = 600;
const LOSS_PROBE_INTERVAL_MS = 5;
const DELAY_PROBES = 40;
/** openconnect 9.01 says "DTLS connected" or "DTLS established" once DTLS carries the tunnel. */
const DTLS_UP_RE = /Established DTLS connection|DTLS (connected|established)/;
/** DTLS normally follows CSTP within milliseconds; openconnect's MTU detection can add up to about a second. */
const DTLS_SETTLE_POLL_MS = 100;
const DTLS_SETTLE_POLLS = 30;
/** One echo or TCP connect takes a gateway's round trip (at most 250 ms, to gw3); 1 s means it is not coming. */
const REACH_TIMEOUT_S = 1;

export interface LegRow {
  gateway: string;
  leg: PlainLeg;
  ok: boolean;
  firstReplyMs: number | null;
  corpSaw: string | null;
  note: string;
}

export interface CheckRow {
  name: string;
  ok: boolean;
  measured: string;
  expected: string;
}

export interface SelftestResult {
  ok: boolean;
  id: string;
  durationMs: number;
  legs: LegRow[];
  checks: CheckRow[];
}

const PROTOCOL_OF_LEG: Record<PlainLeg, string> = {
  wireguard: "wireguard",
  ikev2: "ikev2",
  "anyconnect-dtls": "anyconnect",
  "anyconnect-tls": "anyconnect",
};

interface Ctx {
  topo: LabTopology;
  state: lab.LabState;
  probe: ProbeClient;
  tunnels: Set<PlainTunnel>;
}

async function open(ctx: Ctx, leg: PlainLeg, gateway: string): Promise<PlainTunnel> {
  const t = await startPlain(leg, ctx.topo, ctx.state, gatewayByName(ctx.topo, gateway));
  ctx.tunnels.add(t);
  return t;
}

async function close(ctx: Ctx, t: PlainTunnel): Promise<string[]> {
  await t.stop();
  ctx.tunnels.delete(t);
  return t.leftovers();
}

async function firstReply(ctx: Ctx, t: PlainTunnel, deadlineMs: number): Promise<number | null> {
  const r = await ctx.probe.waitReply({ host: ctx.topo.corp.address, port: CORP_ECHO_PORT, intervalMs: 5, deadlineMs });
  return r.ok ? Math.round(r.firstReplyAt - t.launchedAt) : null;
}

async function whoami(ctx: Ctx): Promise<{ gateway: string | null; protocol: string | null } | null> {
  const r = await ctx.probe.http({ url: `http://${ctx.topo.corp.address}:${CORP_HTTP_PORT}/whoami`, timeoutMs: 2000 });
  if (!r.ok || r.status !== 200) return null;
  return JSON.parse(r.body) as { gateway: string | null; protocol: string | null };
}

/**
 * A gateway's own distance (the lab's --distance), which every delay the checks add comes on top of: the mean
 * round trip, its fixed part and how far its jitter can stretch it.
 */
function distanceOf(ctx: Ctx, gateway: GatewayName): { rttMs: number; fixedMs: number; jitterSpanMs: number } {
  const d = gatewayDistances(ctx.state.options.distance)[gateway];
  if (d === undefined) return { rttMs: 0, fixedMs: 0, jitterSpanMs: 0 };
  const w = oneWayDelay(d);
  return { rttMs: d.rttMs, fixedMs: 2 * w.delayMs, jitterSpanMs: 2 * w.jitterMs };
}

/** How long a leg to `gateway` may take to its first reply: the 0 ms deadline plus its distance's round trips. */
function legDeadlineMs(ctx: Ctx, gateway: GatewayName): number {
  return LEG_DEADLINE_MS + LEG_ROUND_TRIPS * distanceOf(ctx, gateway).rttMs;
}

async function legRow(ctx: Ctx, gateway: GatewayName, leg: PlainLeg): Promise<LegRow> {
  const t = await open(ctx, leg, gateway);
  const deadlineMs = legDeadlineMs(ctx, gateway);
  try {
    const ms = await firstReply(ctx, t, deadlineMs);
    const saw = ms === null ? null : await whoami(ctx);
    const corpSaw = saw === null ? null : `${saw.gateway ?? "?"}/${saw.protocol ?? "?"}`;
    const right = saw !== null && saw.gateway === gateway && saw.protocol === PROTOCOL_OF_LEG[leg];
    let note = "";
    if (leg === "anyconnect-dtls") {
      // openconnect may hand over the tunnel while DTLS is still being set up ("DTLS in progress"); give it a moment.
      let log = logOf(t);
      for (let i = 0; i < DTLS_SETTLE_POLLS && !DTLS_UP_RE.test(log); i++) {
        await sleep(DTLS_SETTLE_POLL_MS);
        log = logOf(t);
      }
      note = DTLS_UP_RE.test(log)
        ? "DTLS up"
        : `no DTLS: ${log
            .split("\n")
            .filter((l) => /DTLS|Configured/.test(l))
            .slice(-3)
            .join(" / ")}`;
    }
    if (ms === null) note = `no reply within ${deadlineMs} ms`;
    else if (!right) note = `corp saw ${corpSaw ?? "nothing"}`;
    const left = await close(ctx, t);
    if (left.length > 0) note += ` left behind: ${left.join(", ")}`;
    return {
      gateway,
      leg,
      ok: ms !== null && right && left.length === 0 && (leg !== "anyconnect-dtls" || note.startsWith("DTLS up")),
      firstReplyMs: ms,
      corpSaw,
      note,
    };
  } finally {
    await close(ctx, t);
  }
}

interface UdpStats {
  sent: number;
  received: number;
  lossPct: number;
  rttMs: RttSummary;
}
const NO_RTT: RttSummary = { min: NaN, p50: NaN, avg: NaN, p95: NaN, max: NaN };

async function udpProbe(ctx: Ctx, count: number, intervalMs: number, timeoutMs: number): Promise<UdpStats> {
  const r = await ctx.probe.udp({ host: ctx.topo.corp.address, port: CORP_ECHO_PORT, count, intervalMs, timeoutMs });
  if (!r.ok) throw new Error(`UDP probe failed: ${r.error}`);
  return { sent: r.sent, received: r.received, lossPct: r.lossPct, rttMs: r.rttMs ?? NO_RTT };
}

/** Runs `body` with one impairment in force, and lifts it whatever happens. */
async function withImpairment<T>(ctx: Ctx, spec: ImpairmentSpec, body: (label: string) => Promise<T>): Promise<T> {
  const imp = await lab.impair(spec, ctx.topo.id);
  try {
    return await body(describeImpairment(imp));
  } finally {
    await lab.lift(imp.id, ctx.topo.id);
  }
}

async function blockedLeg(
  ctx: Ctx,
  name: string,
  spec: ImpairmentSpec,
  leg: PlainLeg,
  gateway: string,
): Promise<CheckRow> {
  return withImpairment(ctx, spec, async () => {
    const t = await open(ctx, leg, gateway);
    try {
      const ms = await firstReply(ctx, t, BLOCKED_OBSERVE_MS);
      return {
        name,
        ok: ms === null,
        measured: ms === null ? `no reply in ${BLOCKED_OBSERVE_MS} ms` : `reply after ${ms} ms`,
        expected: "no reply",
      };
    } finally {
      await close(ctx, t);
    }
  });
}

/** Whether the client reaches `address` with one echo (family from the address). */
async function pings(ctx: Ctx, address: string): Promise<boolean> {
  const r = await run("ip", [
    "netns",
    "exec",
    ctx.topo.client.ns,
    "ping",
    address.includes(":") ? "-6" : "-4",
    "-c1",
    "-n",
    "-W",
    String(REACH_TIMEOUT_S),
    address,
  ]);
  return r.code === 0;
}

/** Whether a TCP connection from the client to address:port is accepted (bash's /dev/tcp, any family). */
async function tcpConnects(ctx: Ctx, address: string, port: number): Promise<boolean> {
  const r = await run("ip", [
    "netns",
    "exec",
    ctx.topo.client.ns,
    "timeout",
    String(REACH_TIMEOUT_S),
    "bash",
    "-c",
    `exec 3<>/dev/tcp/${address}/${String(port)}`,
  ]);
  return r.code === 0;
}

/** The IPv6 underlay: every gateway answers on it, and impairments cover it unless they name IPv4 only. */
async function ipv6Checks(ctx: Ctx): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  for (const g of ctx.topo.gateways) {
    const [echo, tls] = [await pings(ctx, g.address6), await tcpConnects(ctx, g.address6, 443)];
    rows.push({
      name: `${g.name} over IPv6: echo and ocserv's TCP 443 answer`,
      ok: echo && tls,
      measured: `echo ${echo ? "yes" : "no"}, tcp ${tls ? "yes" : "no"}`,
      expected: "both yes",
    });
  }
  const gw1 = gatewayByName(ctx.topo, "gw1");
  rows.push(
    await withImpairment(ctx, { kind: "block", target: "gw1", proto: "all", dir: "both" }, async () => {
      const [v4, v6] = [await pings(ctx, gw1.address), await pings(ctx, gw1.address6)];
      return {
        name: "gw1 block all: silent over IPv4 and IPv6",
        ok: !v4 && !v6,
        measured: `v4 ${v4 ? "answers" : "silent"}, v6 ${v6 ? "answers" : "silent"}`,
        expected: "both silent",
      };
    }),
  );
  rows.push(
    await withImpairment(ctx, { kind: "block", target: "gw1", proto: "all", dir: "both", family: "ipv4" }, async () => {
      const [v4, v6] = [await pings(ctx, gw1.address), await tcpConnects(ctx, gw1.address6, 443)];
      return {
        name: "gw1 block all ipv4: IPv4 silent, IPv6 answers",
        ok: !v4 && v6,
        measured: `v4 ${v4 ? "answers" : "silent"}, v6 tcp ${v6 ? "answers" : "silent"}`,
        expected: "v4 silent, v6 answers",
      };
    }),
  );
  return rows;
}

async function checks(ctx: Ctx): Promise<CheckRow[]> {
  const rows: CheckRow[] = [...(await ipv6Checks(ctx))];
  rows.push(
    await blockedLeg(
      ctx,
      "gw1 block wireguard: WireGuard fails",
      { kind: "block", target: "gw1", proto: "wireguard", dir: "both" },
      "wireguard",
      "gw1",
    ),
  );
  rows.push(
    await blockedLeg(
      ctx,
      "gw1 block ike: IPsec fails",
      { kind: "block", target: "gw1", proto: "ike", dir: "both" },
      "ikev2",
      "gw1",
    ),
  );
  rows.push(
    await blockedLeg(
      ctx,
      "gw1 block tls: AnyConnect fails",
      { kind: "block", target: "gw1", proto: "tls", dir: "both" },
      "anyconnect-tls",
      "gw1",
    ),
  );
  rows.push(
    await blockedLeg(
      ctx,
      "client uplink block udp: WireGuard fails",
      { kind: "block", target: "client", proto: "udp", dir: "both" },
      "wireguard",
      "gw2",
    ),
  );

  // Reject gives a fast, explicit failure: openconnect exits when its TCP connection is reset.
  rows.push(
    await withImpairment(ctx, { kind: "reject", target: "gw2", proto: "tls", dir: "both" }, async () => {
      const t = await open(ctx, "anyconnect-tls", "gw2");
      try {
        const t0 = Date.now();
        let exited = false;
        for (let i = 0; i < 100 && Date.now() - t0 < BLOCKED_OBSERVE_MS; i++) {
          if ((await t.leftovers()).every((l) => !l.startsWith("process"))) {
            exited = true;
            break;
          }
          await sleep(25);
        }
        const ms = Date.now() - t.launchedAt;
        return {
          name: "gw2 reject tls: openconnect is refused at once",
          ok: exited,
          measured: exited ? `exited after ${ms} ms` : "still running",
          expected: `exits within ${BLOCKED_OBSERVE_MS} ms`,
        };
      } finally {
        await close(ctx, t);
      }
    }),
  );

  // With all UDP blocked on the client's network only TLS gets through, and it does.
  rows.push(
    await withImpairment(ctx, { kind: "block", target: "client", proto: "udp", dir: "both" }, async () => {
      const t = await open(ctx, "anyconnect-tls", "gw2");
      try {
        const ms = await firstReply(ctx, t, legDeadlineMs(ctx, "gw2"));
        return {
          name: "client uplink block udp: AnyConnect TLS-only works",
          ok: ms !== null,
          measured: ms === null ? "no reply" : `first reply after ${ms} ms`,
          expected: "works",
        };
      } finally {
        await close(ctx, t);
      }
    }),
  );

  // Loss and delay are measured through an established WireGuard tunnel to gw1.
  const wg = await open(ctx, "wireguard", "gw1");
  try {
    if ((await firstReply(ctx, wg, legDeadlineMs(ctx, "gw1"))) === null)
      throw new Error("WireGuard to gw1 did not come up for the loss and delay checks");
    const udp = async (count: number, intervalMs: number): Promise<UdpStats> => udpProbe(ctx, count, intervalMs, 1000);
    const clean = await udp(200, LOSS_PROBE_INTERVAL_MS);
    rows.push({
      name: "gw1 clean: no loss",
      ok: clean.lossPct === 0,
      measured: `${clean.lossPct.toFixed(1)}% of ${clean.sent}, p50 ${clean.rttMs.p50.toFixed(2)} ms`,
      expected: "0%",
    });

    rows.push(
      await withImpairment(
        ctx,
        { kind: "loss", target: "gw1", proto: "wireguard", dir: "up", percent: 10 },
        async () => {
          const r = await udp(LOSS_PROBES, LOSS_PROBE_INTERVAL_MS);
          // 600 probes at p = 0.1: standard deviation 1.2 points, so 6-14 % is more than 3 sigma.
          return {
            name: "gw1 loss 10% one way: probe loss ~10%",
            ok: r.lossPct >= 6 && r.lossPct <= 14,
            measured: `${r.lossPct.toFixed(1)}% of ${r.sent}`,
            expected: "10% (6-14)",
          };
        },
      ),
    );
    rows.push(
      await withImpairment(
        ctx,
        { kind: "loss", target: "gw1", proto: "wireguard", dir: "both", percent: 10 },
        async () => {
          const r = await udp(LOSS_PROBES, LOSS_PROBE_INTERVAL_MS);
          // Each way independently: 1 - 0.9^2 = 19 %; standard deviation 1.6 points.
          return {
            name: "gw1 loss 10% each way: probe loss ~19%",
            ok: r.lossPct >= 14 && r.lossPct <= 24,
            measured: `${r.lossPct.toFixed(1)}% of ${r.sent}`,
            expected: "19% (14-24)",
          };
        },
      ),
    );
    // Delays add to gw1's own distance (0 in a lab built with --distance none).
    const dist = distanceOf(ctx, "gw1");
    const plus = dist.rttMs === 0 ? "" : ` on top of its ${dist.rttMs} ms distance`;
    rows.push(
      await withImpairment(
        ctx,
        { kind: "delay", target: "gw1", proto: "all", dir: "both", delayMs: 50, jitterMs: 0 },
        async () => {
          const r = await udp(DELAY_PROBES, 20);
          const [lo, hi] = [dist.rttMs + 98, dist.rttMs + 115];
          return {
            name: `gw1 delay 50 ms each way${plus}: RTT ~${dist.rttMs + 100} ms`,
            ok: r.lossPct === 0 && r.rttMs.p50 >= lo && r.rttMs.p50 <= hi,
            measured: `p50 ${r.rttMs.p50.toFixed(1)} ms, p95 ${r.rttMs.p95.toFixed(1)} ms, loss ${r.lossPct.toFixed(1)}%`,
            expected: `${dist.rttMs + 100} ms (${lo}-${hi}), no loss`,
          };
        },
      ),
    );
    rows.push(
      await withImpairment(
        ctx,
        { kind: "delay", target: "gw1", proto: "wireguard", dir: "both", delayMs: 20, jitterMs: 20 },
        async () => {
          const r = await udp(DELAY_PROBES, 20);
          // Each way 20 + U(0, 20) ms: mean RTT 60 ms, spread between 40 and 80, plus the distance's fixed part and jitter.
          // The floor is exact (nothing makes a packet faster); the ceiling is judged on the p95, because a busy
          // two-core machine that schedules delayq late stretches the odd packet past any delay it was given.
          const [lo, hi] = [dist.fixedMs + 40, dist.fixedMs + dist.jitterSpanMs + 80];
          return {
            name: `gw1 delay 20 ms + 0-20 ms jitter each way${plus}: RTT ${lo}-${hi} ms`,
            ok: r.lossPct === 0 && r.rttMs.min >= lo - 1 && r.rttMs.p95 <= hi + 10 && r.rttMs.p95 - r.rttMs.min > 5,
            measured: `min ${r.rttMs.min.toFixed(1)}, p50 ${r.rttMs.p50.toFixed(1)}, p95 ${r.rttMs.p95.toFixed(1)}, max ${r.rttMs.max.toFixed(1)} ms`,
            expected: `${lo}-${hi} ms, spread, no loss`,
          };
        },
      ),
    );
  } finally {
    await close(ctx, wg);
  }

  // A killed gateway goes silent; restored, it serves again with the same keys.
  const t3 = await open(ctx, "wireguard", "gw3");
  try {
    const up = await firstReply(ctx, t3, legDeadlineMs(ctx, "gw3"));
    await lab.kill("gw3", "all", ctx.topo.id);
    const during = await udpProbe(ctx, 20, 20, 500);
    rows.push({
      name: "kill gw3: its tunnel goes silent",
      ok: up !== null && during.received === 0,
      measured: `${during.received}/${during.sent} replies`,
      expected: "0 replies",
    });
  } finally {
    await close(ctx, t3);
    await lab.restore("gw3", "all", ctx.topo.id);
  }
  const after = await open(ctx, "wireguard", "gw3");
  try {
    const ms = await firstReply(ctx, after, legDeadlineMs(ctx, "gw3"));
    rows.push({
      name: "restore gw3: a new tunnel works",
      ok: ms !== null,
      measured: ms === null ? "no reply" : `first reply after ${ms} ms`,
      expected: "works",
    });
  } finally {
    await close(ctx, after);
  }
  return rows;
}

export async function selftest(id = lab.DEFAULT_LAB_ID): Promise<SelftestResult> {
  const t0 = performance.now();
  const state = lab.loadState(id);
  const st = await lab.status(id);
  if (!st.up) throw new Error(`lab "${id}" is not fully up; run \`npm run lab -- down\` and \`npm run lab -- up\``);
  if (st.impairments.length > 0)
    throw new Error(
      `lab "${id}" has impairments in force (${st.impairments.map((i) => i.id).join(", ")}); run \`npm run lab -- heal\` first`,
    );
  const topo = lab.topologyOf(id);
  const probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
  const ctx: Ctx = { topo, state, probe, tunnels: new Set() };
  try {
    const legs: LegRow[] = [];
    for (const g of topo.gateways) {
      for (const leg of PLAIN_LEGS) legs.push(await legRow(ctx, g.name, leg));
    }
    const checkRows = await checks(ctx);
    return {
      ok: legs.every((l) => l.ok) && checkRows.every((c) => c.ok),
      id,
      durationMs: Math.round(performance.now() - t0),
      legs,
      checks: checkRows,
    };
  } finally {
    for (const t of ctx.tunnels) await t.stop();
    await probe.close();
  }
}

export function formatSelftest(r: SelftestResult): string {
  const lines: string[] = [];
  const legs = [...new Set(r.legs.map((l) => l.leg))];
  const gws = [...new Set(r.legs.map((l) => l.gateway))];
  lines.push("Time from engine launch to first corp echo reply through the tunnel (plain engine tools):", "");
  lines.push(`| gateway | ${legs.join(" | ")} |`);
  lines.push(`|---|${legs.map(() => "---:").join("|")}|`);
  for (const g of gws) {
    const cells = legs.map((leg) => {
      const row = r.legs.find((l) => l.gateway === g && l.leg === leg);
      if (row === undefined) return "-";
      return `${row.ok ? "" : "FAIL "}${row.firstReplyMs === null ? "-" : `${row.firstReplyMs} ms`}${row.note !== "" && !row.ok ? ` (${row.note})` : ""}`;
    });
    lines.push(`| ${g} | ${cells.join(" | ")} |`);
  }
  lines.push(
    "",
    `corp saw the expected gateway and protocol on ${r.legs.filter((l) => l.corpSaw !== null && l.ok).length}/${r.legs.length} legs`,
    "",
  );
  lines.push("| check | result | measured | expected |", "|---|---|---|---|");
  for (const c of r.checks) lines.push(`| ${c.name} | ${c.ok ? "pass" : "FAIL"} | ${c.measured} | ${c.expected} |`);
  lines.push("", `selftest ${r.ok ? "passed" : "FAILED"} in ${(r.durationMs / 1000).toFixed(1)} s`);
  return lines.join("\n");
}
