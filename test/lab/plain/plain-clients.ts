/**
 * Client-side tunnels built with the engines' own tools only (wireguard-go + wg, charon-systemd + swanctl,
 * openconnect + a minimal script), no Detour code: the selftest uses them to prove the lab, and benchmarks
 * use them as the "plain engine" baseline.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { strongswanConf } from "../gateway-engines.ts";
import { inNs, isAlive, nsRun, readIfExists, run, spawnDaemon, stopPids, waitFor } from "../exec.ts";
import { readSecret, type LabState } from "../lab.ts";
import { CORP_NETWORK, PORTS, type GatewayTopology, type LabTopology } from "../topology.ts";

const OC_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), "oc-script.sh");
/** wireguard-go creates its socket and link in tens of milliseconds; this catches a broken install only. */
const WG_READY_TIMEOUT_MS = 5_000;
const VICI_READY_TIMEOUT_MS = 5_000;

export type PlainLeg = "wireguard" | "ikev2" | "anyconnect-dtls" | "anyconnect-tls";
export const PLAIN_LEGS: readonly PlainLeg[] = ["wireguard", "ikev2", "anyconnect-dtls", "anyconnect-tls"];

export interface PlainTunnel {
  leg: PlainLeg;
  gateway: string;
  pid: number;
  /** Epoch ms at which the engine process was launched. */
  launchedAt: number;
  ifname: string;
  log: string;
  /** Orderly stop (TERM/INT), then SIGKILL; removes the run folder. Idempotent. */
  stop(): Promise<void>;
  /** What of this tunnel is still on the host (process, device, socket); empty when stopped cleanly. */
  leftovers(): Promise<string[]>;
}

function runDir(state: LabState, name: string): string {
  const d = join(state.labDir, "plain", name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d, { recursive: true, mode: 0o700 });
  return d;
}

async function linkExists(ns: string, ifname: string): Promise<boolean> {
  return (await run("ip", ["-n", ns, "link", "show", ifname])).code === 0;
}

function tunnel(
  leg: PlainLeg,
  gw: GatewayTopology,
  ns: string,
  pid: number,
  launchedAt: number,
  ifname: string,
  log: string,
  dir: string,
  signal: NodeJS.Signals,
  extra: { socket?: string } = {},
): PlainTunnel {
  let stopped = false;
  return {
    leg,
    gateway: gw.name,
    pid,
    launchedAt,
    ifname,
    log,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopPids([pid], signal);
      if (extra.socket !== undefined) rmSync(extra.socket, { force: true });
      rmSync(dir, { recursive: true, force: true });
    },
    async leftovers() {
      const out: string[] = [];
      if (isAlive(pid)) out.push(`process ${pid}`);
      if (await linkExists(ns, ifname)) out.push(`device ${ifname}`);
      if (extra.socket !== undefined && existsSync(extra.socket)) out.push(`socket ${extra.socket}`);
      return out;
    },
  };
}

/** wireguard-go configured with `wg set`: endpoint and keepalive in one call, so the handshake starts at once. */
export async function plainWireGuard(
  topo: LabTopology,
  state: LabState,
  gw: GatewayTopology,
  tag = "st",
): Promise<PlainTunnel> {
  const ns = topo.client.ns;
  const ifname = `wc-${topo.id}-${tag}`;
  const socket = `/run/wireguard/${ifname}.sock`;
  const dir = runDir(state, `wg-${gw.name}-${tag}`);
  const log = join(dir, "wireguard-go.log");
  const gwPub = state.secrets.gateways[gw.name]?.wgPublicKey;
  if (gwPub === undefined) throw new Error(`no WireGuard key for ${gw.name}`);
  rmSync(socket, { force: true });
  const launchedAt = Date.now();
  const pid = spawnDaemon(inNs(ns, ["wireguard-go", "-f", ifname]), { logFile: log });
  const t = tunnel("wireguard", gw, ns, pid, launchedAt, ifname, log, dir, "SIGTERM", { socket });
  try {
    await waitFor(
      `wireguard-go socket and link ${ifname}`,
      async () => existsSync(socket) && (await linkExists(ns, ifname)),
      { timeoutMs: WG_READY_TIMEOUT_MS, intervalMs: 5 },
    );
    await nsRun(ns, ["ip", "addr", "add", `${gw.wireguard.clientAddress}/32`, "dev", ifname]);
    await nsRun(ns, ["ip", "link", "set", ifname, "up"]);
    await nsRun(ns, ["ip", "route", "replace", CORP_NETWORK, "dev", ifname]);
    await nsRun(ns, [
      "wg",
      "set",
      ifname,
      "private-key",
      state.secrets.clientWgPrivateKeyFile,
      "peer",
      gwPub,
      "endpoint",
      `${gw.address}:${PORTS.wireguard}`,
      "persistent-keepalive",
      "25",
      "allowed-ips",
      CORP_NETWORK,
    ]);
  } catch (e) {
    await t.stop();
    throw e;
  }
  return t;
}

/** charon-systemd with its own strongswan.conf and VICI socket, loaded and initiated with swanctl. */
export async function plainIkev2(
  topo: LabTopology,
  state: LabState,
  gw: GatewayTopology,
  tag = "st",
): Promise<PlainTunnel> {
  const ns = topo.client.ns;
  const dir = runDir(state, `ipsec-${gw.name}-${tag}`);
  const vici = join(dir, "charon.vici");
  const log = join(dir, "charon.log");
  const conf = join(dir, "strongswan.conf");
  const swanctl = join(dir, "swanctl.conf");
  for (const sub of ["x509", "x509ca", "private", "pubkey", "rsa", "ecdsa", "pkcs8"]) mkdirSync(join(dir, sub));
  writeFileSync(conf, strongswanConf(vici, log), { mode: 0o600 });
  writeFileSync(
    swanctl,
    `connections {
  gw {
    version = 2
    remote_addrs = ${gw.address}
    vips = 0.0.0.0
    proposals = aes256-sha256-x25519
    encap = yes
    dpd_delay = 10s
    local {
      auth = psk
      id = ${topo.clientIkeId}
    }
    remote {
      auth = psk
      id = ${gw.ikev2.id}
    }
    children {
      gw {
        remote_ts = ${CORP_NETWORK}
        esp_proposals = aes128-sha256
        start_action = none
        dpd_action = restart
      }
    }
  }
}
secrets {
  ike-gw {
    id-gw = ${gw.ikev2.id}
    id-client = ${topo.clientIkeId}
    secret = "${readSecret(state.secrets.pskFile)}"
  }
}
`,
    { mode: 0o600 },
  );
  const env = { ...process.env, STRONGSWAN_CONF: conf };
  const launchedAt = Date.now();
  const pid = spawnDaemon(inNs(ns, ["/usr/sbin/charon-systemd"]), { logFile: join(dir, "charon.stdout"), env });
  const t = tunnel("ikev2", gw, ns, pid, launchedAt, "ipsec0", log, dir, "SIGTERM");
  try {
    await waitFor("charon's VICI socket", () => existsSync(vici), { timeoutMs: VICI_READY_TIMEOUT_MS, intervalMs: 5 });
    await nsRun(ns, ["swanctl", "--load-all", "--file", swanctl], { env });
    // Initiation runs in the background: the caller's probe decides when (and whether) the tunnel works.
    void run("ip", ["netns", "exec", ns, "swanctl", "--initiate", "--child", "gw", "--timeout", "10"], {
      env,
      timeoutMs: 15_000,
    });
  } catch (e) {
    await t.stop();
    throw e;
  }
  return t;
}

/** openconnect with the password on stdin, the gateway pinned, a clean environment and the lab's script. */
export function plainAnyConnect(
  topo: LabTopology,
  state: LabState,
  gw: GatewayTopology,
  dtls: boolean,
  tag = "st",
): PlainTunnel {
  const ns = topo.client.ns;
  const ifname = `oc-${topo.id}-${tag}`;
  const dir = runDir(state, `oc-${gw.name}-${tag}`);
  const log = join(dir, "openconnect.log");
  const pin = state.secrets.gateways[gw.name]?.tlsPin;
  if (pin === undefined) throw new Error(`no TLS pin for ${gw.name}`);
  const argv = [
    "openconnect",
    "--protocol=anyconnect",
    `--user=${topo.anyconnectUser}`,
    "--passwd-on-stdin",
    "--non-inter",
    `--servercert=${pin}`,
    `--script=${OC_SCRIPT}`,
    `--interface=${ifname}`,
    "--timestamp",
    "-v",
    ...(dtls ? [] : ["--no-dtls"]),
    `https://${gw.address}:${PORTS.anyconnect}/`,
  ];
  const launchedAt = Date.now();
  const pid = spawnDaemon(inNs(ns, argv), {
    logFile: log,
    env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    input: readSecret(state.secrets.passwordFile) + "\n",
  });
  return tunnel(dtls ? "anyconnect-dtls" : "anyconnect-tls", gw, ns, pid, launchedAt, ifname, log, dir, "SIGINT");
}

export async function startPlain(
  leg: PlainLeg,
  topo: LabTopology,
  state: LabState,
  gw: GatewayTopology,
  tag = "st",
): Promise<PlainTunnel> {
  switch (leg) {
    case "wireguard":
      return plainWireGuard(topo, state, gw, tag);
    case "ikev2":
      return plainIkev2(topo, state, gw, tag);
    case "anyconnect-dtls":
      return plainAnyConnect(topo, state, gw, true, tag);
    case "anyconnect-tls":
      return plainAnyConnect(topo, state, gw, false, tag);
  }
}

export function logOf(t: PlainTunnel): string {
  return readIfExists(t.log);
}
