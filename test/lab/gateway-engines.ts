/**
 * The three real gateway engines of one lab gateway: wireguard-go (configured with `wg`), strongSwan's
 * charon-systemd as IKEv2 responder (kernel-libipsec, configured with swanctl) and ocserv with DTLS.
 * Each writes its own config under the gateway's folder and runs in the gateway's namespace.
 */
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { inNs, isAlive, nsRun, processTree, run, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { CORP_NETWORK, FULL_TUNNEL, PORTS, type GatewayTopology, type LabTopology } from "./topology.ts";

export type GatewayEngine = "wireguard" | "ikev2" | "anyconnect";
export const GATEWAY_ENGINES: readonly GatewayEngine[] = ["wireguard", "ikev2", "anyconnect"];

/**
 * What the gateways route for their clients: the corp network only ("split"), or everything ("full"), as a
 * full-tunnel gateway does: IKEv2 offers 0.0.0.0/0, ocserv pushes the default route, and the client's traffic to
 * anything but corp leaves on the underlay masqueraded (see netns.ts). WireGuard needs nothing: a gateway's
 * allowed-ips for a peer is the peer's own address, whatever the peer sends through it.
 */
export type TunnelMode = "split" | "full";

/**
 * Short IKEv2 lifetimes on the gateways, to make rekeying and reauthentication happen within a test: the gateway
 * rekeys the CHILD_SA itself every `childRekeyS`, rekeys the IKE_SA every `ikeRekeyS` (0: never), and asks the
 * client to reauthenticate every `ikeReauthS` (0: never) with an AUTH_LIFETIME notify (RFC 4478): a responder
 * that handed out a virtual IP cannot reauthenticate itself, so it deletes an IKE_SA the client did not renew
 * `overS` after that. Production gateways use hours; the lab's default is strongSwan's.
 */
export interface IkeLifetimes {
  childRekeyS: number;
  ikeRekeyS: number;
  ikeReauthS: number;
  overS: number;
}

/**
 * The CHILD_SA rekeyed by the gateway every 15 s, the IKE_SA every 20 s, and the client asked to reauthenticate
 * within 55 s, which it does 25 s ahead (REAUTH_MARGIN_S in native/engines/ipsec/charon-config.ts), so every
 * ~30 s: several of each in a two-minute run, and they collide now and then, as they do in the field.
 */
export const SHORT_IKE_LIFETIMES: IkeLifetimes = { childRekeyS: 15, ikeRekeyS: 20, ikeReauthS: 55, overS: 10 };

/**
 * How long the gateways keep a client that fell silent (a laptop asleep, a phone in a tunnel), set the way production
 * gateways are, so that a short sleep keeps the session and a long one loses it (README, lab sleep):
 * - IKEv2: the responder sends a DPD once it has heard nothing from the client for GATEWAY_IKE_DPD_DELAY_S and gives
 *   up after its retransmits (~7.1 s, strongswanConf), deleting the IKE_SA and its virtual IP lease: 37 s after the
 *   client's last packet. A 30 s sleep keeps the session, a sleep of a minute or more loses it.
 * - AnyConnect: ocserv drops the TLS/DTLS connection of a client that misses its DPDs (dpd 5 s) within seconds, but
 *   keeps the session GATEWAY_OCSERV_COOKIE_TIMEOUT_S after that: openconnect then reconnects with its cookie
 *   (a 30 s sleep), and after a longer sleep (5 min) the cookie is refused and the user must log in again.
 * - WireGuard keeps no session to drop: the peer stays configured, and the session keys expire 180 s after the last
 *   handshake (REJECT_AFTER_TIME), so after a 5 min sleep the first packet costs one new handshake.
 */
export const GATEWAY_IKE_DPD_DELAY_S = 30;
export const GATEWAY_OCSERV_COOKIE_TIMEOUT_S = 120;

/** What every gateway needs to know about the lab's secrets. */
export interface GatewaySecrets {
  wgPrivateKeyFile: string;
  clientWgPublicKey: string;
  pskFile: string;
  psk: string;
  certFile: string;
  keyFile: string;
  ocpasswdFile: string;
}

export interface GatewayPaths {
  dir: string;
  wgSocket: string;
  ipsecDir: string;
  strongswanConf: string;
  swanctlConf: string;
  vici: string;
  ocservDir: string;
  ocservConf: string;
  logs: { wireguard: string; charon: string; charonStdout: string; ocserv: string };
}

/** Engine start-up is local and takes tens of milliseconds; this bound only catches a broken install. */
const ENGINE_READY_TIMEOUT_MS = 10_000;

export function gatewayPaths(labDir: string, gw: GatewayTopology): GatewayPaths {
  const dir = join(labDir, gw.name);
  const ipsecDir = join(dir, "ipsec");
  const ocservDir = join(dir, "ocserv");
  const logDir = join(labDir, "logs");
  return {
    dir,
    wgSocket: `/run/wireguard/${gw.wireguard.ifname}.sock`,
    ipsecDir,
    strongswanConf: join(ipsecDir, "strongswan.conf"),
    swanctlConf: join(ipsecDir, "swanctl.conf"),
    vici: join(ipsecDir, "charon.vici"),
    ocservDir,
    ocservConf: join(ocservDir, "ocserv.conf"),
    logs: {
      wireguard: join(logDir, `${gw.name}-wireguard.log`),
      charon: join(logDir, `${gw.name}-charon.log`),
      charonStdout: join(logDir, `${gw.name}-charon.stdout`),
      ocserv: join(logDir, `${gw.name}-ocserv.log`),
    },
  };
}

/**
 * strongswan.conf for one charon instance. Plugins are listed explicitly: the system's plugin folder turns on
 * `resolve`, which would rewrite the host's /etc/resolv.conf. Retransmits are tuned so a dead peer is given up
 * after ~7 s instead of the default ~165 s (1 + 1.4 + 1.96 + 2.744 s).
 */
export function strongswanConf(vici: string, logFile: string): string {
  return `charon {
  retransmit_timeout = 1.0
  retransmit_base = 1.4
  retransmit_tries = 3
  load_modular = no
  load = random nonce aes sha1 sha2 hmac kdf gmp curve25519 x509 pem pkcs1 pubkey attr kernel-libipsec kernel-netlink socket-default vici updown
  plugins {
    vici {
      socket = unix://${vici}
    }
  }
  filelog {
    main {
      path = ${logFile}
      time_format = %T
      time_add_ms = yes
      default = 1
      ike = 2
      cfg = 2
      flush_line = yes
      append = yes
    }
  }
  journal {
    default = -1
  }
}
charon-systemd {
  journal {
    default = -1
  }
}
swanctl {
  socket = unix://${vici}
  load = random nonce pem pkcs1 pkcs8 x509 pubkey
}
`;
}

/**
 * swanctl.conf of a gateway: one road-warrior connection handing out addresses from the gateway's IKE pool,
 * offering corp (split tunnel) or everything (full tunnel) as its traffic selector.
 */
export function gatewaySwanctlConf(
  topo: LabTopology,
  gw: GatewayTopology,
  psk: string,
  opts: { localId?: string; tunnel?: TunnelMode; lifetimes?: IkeLifetimes | null } = {},
): string {
  const localId = opts.localId ?? gw.ikev2.id;
  const lt = opts.lifetimes ?? null;
  // rand_time 0: the test knows when each rekey comes (strongSwan otherwise subtracts a random part).
  const ikeTimes =
    lt === null
      ? ""
      : `
    rekey_time = ${String(lt.ikeRekeyS)}s
    reauth_time = ${String(lt.ikeReauthS)}s
    over_time = ${String(lt.overS)}s
    rand_time = 0s`;
  const childTimes =
    lt === null
      ? ""
      : `
        rekey_time = ${String(lt.childRekeyS)}s
        life_time = ${String(lt.childRekeyS + lt.overS)}s
        rand_time = 0s`;
  return `connections {
  rw {
    version = 2
    local_addrs = ${gw.address}, ${gw.address6}
    proposals = aes256-sha256-x25519
    encap = yes
    pools = rw-pool
    dpd_delay = ${String(GATEWAY_IKE_DPD_DELAY_S)}s${ikeTimes}
    local {
      auth = psk
      id = ${localId}
    }
    remote {
      auth = psk
      id = ${topo.clientIkeId}
    }
    children {
      rw {
        local_ts = ${opts.tunnel === "full" ? FULL_TUNNEL : CORP_NETWORK}
        esp_proposals = aes128-sha256
        dpd_action = clear${childTimes}
      }
    }
  }
}
pools {
  rw-pool {
    addrs = ${gw.ikev2.poolRange}
  }
}
secrets {
  ike-client {
    id-gw = ${localId}
    id-client = ${topo.clientIkeId}
    secret = "${psk}"
  }
}
`;
}

/**
 * ocserv.conf of a gateway. No listen-host: ocserv takes only one, and without it binds the wildcard of both
 * families, so the gateway answers on its IPv4 and its IPv6 underlay address (the namespace has no others that
 * a client could reach). Full tunnel pushes the default route, split tunnel corp only.
 */
export function ocservConf(
  gw: GatewayTopology,
  paths: GatewayPaths,
  secrets: GatewaySecrets,
  tunnel: TunnelMode = "split",
): string {
  const d = paths.ocservDir;
  return `auth = "plain[passwd=${secrets.ocpasswdFile}]"
tcp-port = ${PORTS.anyconnect}
udp-port = ${PORTS.anyconnect}
run-as-user = ocserv
run-as-group = ocserv
socket-file = ${join(d, "ocserv-socket")}
pid-file = ${join(d, "ocserv.pid")}
use-occtl = true
occtl-socket-file = ${join(d, "occtl.socket")}
server-cert = ${secrets.certFile}
server-key = ${secrets.keyFile}
isolate-workers = true
max-clients = 64
max-same-clients = 16
rate-limit-ms = 0
max-ban-score = 0
keepalive = 10
dpd = 5
mobile-dpd = 5
switch-to-tcp-timeout = 10
try-mtu-discovery = false
tls-priorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.3"
auth-timeout = 60
cookie-timeout = ${String(GATEWAY_OCSERV_COOKIE_TIMEOUT_S)}
deny-roaming = false
rekey-time = 172800
rekey-method = ssl
log-level = 2
device = ${gw.anyconnect.device}
predictable-ips = true
ipv4-network = ${gw.anyconnect.network}
ipv4-netmask = 255.255.255.0
route = ${tunnel === "full" ? "default" : "198.19.0.0/255.255.255.0"}
dns = 198.19.0.1
ping-leases = false
cisco-client-compat = true
dtls-legacy = true
`;
}

/** Writes every config file of one gateway; safe to repeat. */
export function writeGatewayConfigs(
  topo: LabTopology,
  labDir: string,
  gw: GatewayTopology,
  secrets: GatewaySecrets,
  tunnel: TunnelMode = "split",
  lifetimes: IkeLifetimes | null = null,
): GatewayPaths {
  const p = gatewayPaths(labDir, gw);
  mkdirSync(p.dir, { recursive: true, mode: 0o711 });
  // The ocserv user must traverse the gateway folder to reach its sockets.
  chmodSync(p.dir, 0o711);
  mkdirSync(p.ipsecDir, { recursive: true, mode: 0o700 });
  // ocserv's workers run as the ocserv user and must reach their sockets in this folder.
  mkdirSync(p.ocservDir, { recursive: true, mode: 0o755 });
  for (const sub of ["x509", "x509ca", "private", "pubkey", "rsa", "ecdsa", "pkcs8"])
    mkdirSync(join(p.ipsecDir, sub), { recursive: true });
  writeFileSync(p.strongswanConf, strongswanConf(p.vici, p.logs.charon), { mode: 0o600 });
  writeFileSync(p.swanctlConf, gatewaySwanctlConf(topo, gw, secrets.psk, { tunnel, lifetimes }), { mode: 0o600 });
  writeFileSync(p.ocservConf, ocservConf(gw, p, secrets, tunnel), { mode: 0o600 });
  return p;
}

async function linkExists(ns: string, ifname: string): Promise<boolean> {
  const r = await run("ip", ["-n", ns, "link", "show", ifname]);
  return r.code === 0;
}

async function listening(ns: string, proto: "tcp" | "udp", port: number): Promise<boolean> {
  const r = await run("ip", ["netns", "exec", ns, "ss", "-Hln", proto === "tcp" ? "-t" : "-u", `sport = :${port}`]);
  return r.code === 0 && r.stdout.trim() !== "";
}

/** Starts one engine on a gateway and waits until it serves; returns its PID. */
export async function startGatewayEngine(
  engine: GatewayEngine,
  topo: LabTopology,
  labDir: string,
  gw: GatewayTopology,
  secrets: GatewaySecrets,
): Promise<number> {
  const p = gatewayPaths(labDir, gw);
  switch (engine) {
    case "wireguard": {
      const ifname = gw.wireguard.ifname;
      // A socket left by a SIGKILLed wireguard-go would make the readiness check pass too early.
      rmSync(p.wgSocket, { force: true });
      const pid = spawnDaemon(inNs(gw.ns, ["wireguard-go", "-f", ifname]), {
        logFile: p.logs.wireguard,
        env: { ...process.env, LOG_LEVEL: "verbose" },
      });
      await waitFor(
        `wireguard-go on ${gw.name} (socket and link ${ifname})`,
        async () =>
          isAliveOrThrow(pid, "wireguard-go", p.logs.wireguard) &&
          existsSync(p.wgSocket) &&
          (await linkExists(gw.ns, ifname)),
        { timeoutMs: ENGINE_READY_TIMEOUT_MS },
      );
      await nsRun(gw.ns, [
        "wg",
        "set",
        ifname,
        "listen-port",
        String(PORTS.wireguard),
        "private-key",
        secrets.wgPrivateKeyFile,
        "peer",
        secrets.clientWgPublicKey,
        "allowed-ips",
        `${gw.wireguard.clientAddress}/32`,
      ]);
      await nsRun(gw.ns, ["ip", "addr", "add", `${gw.wireguard.gatewayAddress}/24`, "dev", ifname]);
      await nsRun(gw.ns, ["ip", "link", "set", ifname, "up"]);
      return pid;
    }
    case "ikev2": {
      rmSync(p.vici, { force: true });
      const env = { ...process.env, STRONGSWAN_CONF: p.strongswanConf };
      const pid = spawnDaemon(inNs(gw.ns, ["/usr/sbin/charon-systemd"]), { logFile: p.logs.charonStdout, env });
      await waitFor(
        `charon on ${gw.name} (VICI socket)`,
        () => isAliveOrThrow(pid, "charon-systemd", p.logs.charonStdout) && existsSync(p.vici),
        { timeoutMs: ENGINE_READY_TIMEOUT_MS },
      );
      await nsRun(gw.ns, ["swanctl", "--load-all", "--file", p.swanctlConf], { env });
      return pid;
    }
    case "anyconnect": {
      const pid = spawnDaemon(inNs(gw.ns, ["ocserv", "-f", "-c", p.ocservConf]), { logFile: p.logs.ocserv });
      await waitFor(
        `ocserv on ${gw.name} (TCP and UDP ${PORTS.anyconnect})`,
        async () =>
          isAliveOrThrow(pid, "ocserv", p.logs.ocserv) &&
          (await listening(gw.ns, "tcp", PORTS.anyconnect)) &&
          (await listening(gw.ns, "udp", PORTS.anyconnect)),
        { timeoutMs: ENGINE_READY_TIMEOUT_MS },
      );
      return pid;
    }
  }
}

function isAliveOrThrow(pid: number, what: string, log: string): boolean {
  if (!isAlive(pid)) throw new Error(`${what} (pid ${pid}) exited during start-up; see ${log}`);
  return true;
}

/**
 * Stops one gateway engine and its children (ocserv's sec-mod and workers) by PID. `hard` sends SIGKILL at
 * once, as a crash would: no BYE, no IKE DELETE, a stale socket left behind.
 */
export async function stopGatewayEngine(pid: number, hard: boolean): Promise<void> {
  const tree = processTree(pid);
  await stopPids(tree, hard ? "SIGKILL" : "SIGTERM");
}
