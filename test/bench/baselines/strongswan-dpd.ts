/**
 * The strongSwan failover baseline: one charon-systemd in the client namespace with two connections (primary
 * and secondary gateway), dead-peer detection as tight as its options go, `dpd_action = clear`, and an updown
 * hook (strongswan-updown.sh) that initiates the other connection when a CHILD_SA goes down.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { inNs, isAlive, nsRun, processTree, spawnDaemon, stopPids, waitFor } from "../../lab/exec.ts";
import { readSecret } from "../../lab/lab.ts";
import { CORP_NETWORK, type GatewayTopology } from "../../lab/topology.ts";
import { firstReplyThrough, type Baseline, type BaselineContext } from "./common.ts";

const UPDOWN = join(dirname(fileURLToPath(import.meta.url)), "strongswan-updown.sh");
/** charon opens its VICI socket within tens of milliseconds; this bound only catches a broken install. */
const VICI_READY_TIMEOUT_MS = 5_000;
/** The first tunnel comes up in well under a second here; past this the baseline failed to start. */
const START_TIMEOUT_MS = 20_000;
/** kernel-libipsec's TUN device: one charon per namespace, so the name is fixed. */
const IFNAME = "ipsec0";

/**
 * Tightest liveness strongSwan offers: DPD is configured in whole seconds (1 s is the floor) and sent only
 * after that long without inbound traffic; its retransmits are 0.5 s apart (base 1.0: no back-off), 2 of them,
 * so a silent peer is given up 1.5 s after the DPD went out, about 2.5 s after the last packet.
 */
export const STRONGSWAN_SETTINGS = {
  dpdDelayS: 1,
  retransmitTimeoutS: 0.5,
  retransmitBase: 1.0,
  retransmitTries: 2,
} as const;

function strongswanConf(vici: string, log: string): string {
  const s = STRONGSWAN_SETTINGS;
  return `charon {
  retransmit_timeout = ${s.retransmitTimeoutS}
  retransmit_base = ${s.retransmitBase}
  retransmit_tries = ${s.retransmitTries}
  load_modular = no
  load = random nonce aes sha1 sha2 hmac kdf gmp curve25519 x509 pem pkcs1 pubkey attr kernel-libipsec kernel-netlink socket-default vici updown
  plugins {
    vici {
      socket = unix://${vici}
    }
  }
  filelog {
    main {
      path = ${log}
      time_format = %T
      time_add_ms = yes
      default = 1
      ike = 2
      flush_line = yes
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

function connection(ctx: BaselineContext, gw: GatewayTopology, updown: string): string {
  return `  ${gw.name} {
    version = 2
    remote_addrs = ${gw.address}
    vips = 0.0.0.0
    proposals = aes256-sha256-x25519
    encap = yes
    dpd_delay = ${STRONGSWAN_SETTINGS.dpdDelayS}s
    keyingtries = 1
    local {
      auth = psk
      id = ${ctx.topo.clientIkeId}
    }
    remote {
      auth = psk
      id = ${gw.ikev2.id}
    }
    children {
      ${gw.name} {
        remote_ts = ${CORP_NETWORK}
        esp_proposals = aes128-sha256
        start_action = none
        dpd_action = clear
        updown = ${updown}
      }
    }
  }
`;
}

export async function startStrongswanDpd(ctx: BaselineContext): Promise<Baseline> {
  const ns = ctx.topo.client.ns;
  const dir = join(ctx.state.labDir, "plain", "ipsec-failover");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const sub of ["x509", "x509ca", "private", "pubkey", "rsa", "ecdsa", "pkcs8"]) mkdirSync(join(dir, sub));
  const vici = join(dir, "charon.vici");
  const switchLog = join(dir, "switches.log");
  const conf = join(dir, "strongswan.conf");
  const swanctl = join(dir, "swanctl.conf");
  writeFileSync(switchLog, "");
  writeFileSync(conf, strongswanConf(vici, join(dir, "charon.log")), { mode: 0o600 });
  const updown = `"${UPDOWN} unix://${vici} ${switchLog}"`;
  const psk = readSecret(ctx.state.secrets.pskFile);
  writeFileSync(
    swanctl,
    `connections {
${connection(ctx, ctx.primary, updown)}${connection(ctx, ctx.secondary, updown)}}
secrets {
  ike-gateways {
    id-client = ${ctx.topo.clientIkeId}
    id-a = ${ctx.primary.ikev2.id}
    id-b = ${ctx.secondary.ikev2.id}
    secret = "${psk}"
  }
}
`,
    { mode: 0o600 },
  );
  const env = { ...process.env, STRONGSWAN_CONF: conf };
  const pid = spawnDaemon(inNs(ns, ["/usr/sbin/charon-systemd"]), { logFile: join(dir, "charon.stdout"), env });
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    writeFileSync(`${switchLog}.stop`, "");
    // charon and any hook it is running (with its swanctl), by PID.
    await stopPids(isAlive(pid) ? processTree(pid) : [], "SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor("the baseline charon's VICI socket", () => existsSync(vici), {
      timeoutMs: VICI_READY_TIMEOUT_MS,
      intervalMs: 5,
    });
    await nsRun(ns, ["swanctl", "--load-all", "--file", swanctl], { env });
    await nsRun(ns, ["swanctl", "--initiate", "--child", ctx.primary.name, "--timeout", "10"], {
      env,
      timeoutMs: 15_000,
    });
    if ((await firstReplyThrough(ctx.topo, IFNAME, Date.now() + START_TIMEOUT_MS)) === null)
      throw new Error(`strongSwan baseline: no reply through ${IFNAME}`);
  } catch (e) {
    await stop();
    throw e;
  }
  const s = STRONGSWAN_SETTINGS;
  return {
    name: "strongSwan, 2 connections + DPD + updown",
    settings: `charon-systemd (kernel-libipsec), dpd_delay ${s.dpdDelayS} s, retransmit ${s.retransmitTimeoutS} s x base ${s.retransmitBase}, ${s.retransmitTries} tries, dpd_action clear, updown initiates the other connection`,
    failovers: () =>
      existsSync(switchLog)
        ? readFileSync(switchLog, "utf8")
            .split("\n")
            .filter((l) => l.trim() !== "").length
        : 0,
    stop,
  };
}
