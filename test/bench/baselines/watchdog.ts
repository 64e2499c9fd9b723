/**
 * The watchdog baselines: a plain tunnel (openconnect, or wireguard-go) plus the loop an admin would run next to
 * it: ping corp through the tunnel device, and after N seconds without a reply move the tunnel to the other
 * gateway (openconnect: start a new one against it; WireGuard: replace the peer and the tunnel address).
 */
import { setTimeout as sleep } from "node:timers/promises";
import { pingThrough } from "../../../native/platform/probe.linux.ts";
import { nsRun } from "../../lab/exec.ts";
import { plainAnyConnect, plainWireGuard, type PlainTunnel } from "../../lab/plain/plain-clients.ts";
import { CORP_NETWORK, PORTS, type GatewayTopology } from "../../lab/topology.ts";
import { firstReplyThrough, type Baseline, type BaselineContext } from "./common.ts";

/**
 * One liveness check every 200 ms (ping's own floor for unprivileged users, and 5 checks per second resolve
 * N = 1 s to within a fifth); each check sends echoes 50 ms apart until the first reply or the tick ends.
 */
export const WATCHDOG_TICK_MS = 200;
const WATCHDOG_ECHO_INTERVAL_MS = 50;
/** A watchdog lives at most this long (the longest false-alarm soak plus margin); the loop is bounded by it. */
const WATCHDOG_MAX_LIFETIME_MS = 3 * 60 * 60 * 1000;
/** The first tunnel of a baseline comes up in well under a second here; past this the baseline failed to start. */
const BASELINE_START_TIMEOUT_MS = 20_000;

interface Loop {
  switches: number;
  stop(): Promise<void>;
}

/**
 * Runs `check` every WATCHDOG_TICK_MS; when no reply came for `silenceMs`, awaits `act` once and gives the new
 * tunnel another full `silenceMs` before judging it (as `sleep N` after a restart would).
 */
function watchdogLoop(check: () => Promise<boolean>, silenceMs: number, act: () => Promise<void>): Loop {
  const ac = new AbortController();
  const loop: Loop = {
    switches: 0,
    stop: async () => {
      ac.abort();
      await done;
    },
  };
  const maxTicks = Math.ceil(WATCHDOG_MAX_LIFETIME_MS / WATCHDOG_TICK_MS);
  // A function, so every read sees stop() called during an await.
  const stopped = (): boolean => ac.signal.aborted;
  const done = (async () => {
    let lastReplyAt = Date.now();
    for (let i = 0; i < maxTicks && !stopped(); i++) {
      const tickStart = Date.now();
      if (await check()) lastReplyAt = Date.now();
      else if (Date.now() - lastReplyAt >= silenceMs && !stopped()) {
        await act();
        loop.switches++;
        lastReplyAt = Date.now();
      }
      const rest = WATCHDOG_TICK_MS - (Date.now() - tickStart);
      if (rest > 0 && !stopped()) await sleep(rest, undefined, { signal: ac.signal }).catch(() => undefined);
    }
  })();
  return loop;
}

function echoCheck(ctx: BaselineContext, ifname: () => string): () => Promise<boolean> {
  return async () => {
    const r = await pingThrough({
      ifname: ifname(),
      target: ctx.topo.corp.address,
      netns: ctx.topo.client.ns,
      deadlineAt: Date.now() + WATCHDOG_TICK_MS,
      intervalMs: WATCHDOG_ECHO_INTERVAL_MS,
    });
    return r.ok;
  };
}

function other(ctx: BaselineContext, gw: GatewayTopology): GatewayTopology {
  return gw.name === ctx.primary.name ? ctx.secondary : ctx.primary;
}

async function waitUp(ctx: BaselineContext, t: PlainTunnel, what: string): Promise<void> {
  if ((await firstReplyThrough(ctx.topo, t.ifname, Date.now() + BASELINE_START_TIMEOUT_MS)) === null) {
    await t.stop();
    throw new Error(`${what}: no reply through ${t.ifname} within ${BASELINE_START_TIMEOUT_MS} ms`);
  }
}

/**
 * openconnect (DTLS on, its own defaults otherwise) against the primary; the watchdog starts a new openconnect
 * against the other gateway on a second device first and only then stops the old one, so a dead gateway's
 * slow logoff never delays the new tunnel.
 */
export async function startOpenconnectWatchdog(ctx: BaselineContext, silenceMs: number): Promise<Baseline> {
  const tags = ["wa", "wb"] as const;
  let n = 0;
  let gw = ctx.primary;
  let tunnel = plainAnyConnect(ctx.topo, ctx.state, gw, true, tags[0]);
  await waitUp(ctx, tunnel, "openconnect watchdog baseline");
  const loop = watchdogLoop(
    echoCheck(ctx, () => tunnel.ifname),
    silenceMs,
    async () => {
      const old = tunnel;
      gw = other(ctx, gw);
      n++;
      tunnel = plainAnyConnect(ctx.topo, ctx.state, gw, true, tags[n % 2] ?? "wa");
      await old.stop();
    },
  );
  return {
    name: `openconnect + watchdog, N = ${silenceMs / 1000} s`,
    settings: `openconnect with DTLS, defaults; watchdog pings corp through the tunnel every ${WATCHDOG_TICK_MS} ms, after ${silenceMs / 1000} s without a reply starts openconnect against the other gateway, then stops the old one`,
    failovers: () => loop.switches,
    async stop() {
      await loop.stop();
      await tunnel.stop();
    },
  };
}

/**
 * wireguard-go configured with `wg` against the primary; the watchdog replaces the peer with the other gateway
 * (endpoint, key, keepalive in one `wg set`, so the handshake starts at once) and swaps the tunnel address,
 * because each gateway accepts the client only from its own inner address.
 */
export async function startWireguardWatchdog(ctx: BaselineContext, silenceMs: number): Promise<Baseline> {
  let gw = ctx.primary;
  const tunnel = await plainWireGuard(ctx.topo, ctx.state, gw, "ww");
  await waitUp(ctx, tunnel, "WireGuard watchdog baseline");
  const ns = ctx.topo.client.ns;
  const pub = (g: GatewayTopology): string => {
    const k = ctx.state.secrets.gateways[g.name]?.wgPublicKey;
    if (k === undefined) throw new Error(`no WireGuard key for ${g.name}`);
    return k;
  };
  const loop = watchdogLoop(
    echoCheck(ctx, () => tunnel.ifname),
    silenceMs,
    async () => {
      const from = gw;
      gw = other(ctx, gw);
      await nsRun(ns, [
        "wg",
        "set",
        tunnel.ifname,
        "peer",
        pub(from),
        "remove",
        "peer",
        pub(gw),
        "endpoint",
        `${gw.address}:${PORTS.wireguard}`,
        "persistent-keepalive",
        "25",
        "allowed-ips",
        CORP_NETWORK,
      ]);
      await nsRun(ns, ["ip", "addr", "flush", "dev", tunnel.ifname]);
      await nsRun(ns, ["ip", "addr", "add", `${gw.wireguard.clientAddress}/32`, "dev", tunnel.ifname]);
      await nsRun(ns, ["ip", "route", "replace", CORP_NETWORK, "dev", tunnel.ifname]);
    },
  );
  return {
    name: `WireGuard + watchdog, N = ${silenceMs / 1000} s`,
    settings: `wireguard-go + wg, keepalive 25 s; watchdog pings corp through the tunnel every ${WATCHDOG_TICK_MS} ms, after ${silenceMs / 1000} s without a reply replaces the peer with the other gateway and swaps the tunnel address`,
    failovers: () => loop.switches,
    async stop() {
      await loop.stop();
      await tunnel.stop();
    },
  };
}
