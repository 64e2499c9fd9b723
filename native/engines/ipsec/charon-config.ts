/**
 * What one charon instance is configured with: its strongswan.conf (written to its work folder) and the VICI
 * messages that load its connection and PSK. Pure, so every setting and its reason can be tested as text.
 */
import type { Ikev2Spec } from "../engine.ts";
import { viciSection, type ViciSection } from "./vici-codec.ts";

/** The IKE and CHILD config names inside an instance; each charon carries one tunnel, so they are fixed. */
export const CONN_NAME = "detour";
export const CHILD_NAME = "detour";

/**
 * Plugins, listed so nothing else loads: Debian's /etc/strongswan.d turns on `resolve` (rewrites the host's
 * /etc/resolv.conf), `dhcp`, `farp`, `ha` and `updown`. sha1 is needed for NAT detection hashes, gmp for MODP
 * groups a gateway may propose, kernel-libipsec for userspace ESP (this kernel has no CONFIG_INET_ESP).
 */
export const CHARON_PLUGINS = [
  "random",
  "nonce",
  "aes",
  "sha1",
  "sha2",
  "hmac",
  "kdf",
  "gmp",
  "curve25519",
  "kernel-libipsec",
  "kernel-netlink",
  "socket-default",
  "vici",
] as const;

/**
 * IKE retransmits: charon gives up on a silent gateway after the sum of timeout * base^k for k = 0..tries,
 * here 1 + 1.4 + 1.96 + 2.744 = 7.1 s (charon's default 4 s, x1.8, 5 tries is ~165 s), so a leg to an
 * unreachable gateway fails on its own well within a race's deadline.
 */
export const RETRANSMIT = { timeoutS: 1.0, base: 1.4, tries: 3 } as const;

export function retransmitGiveUpMs(r: { timeoutS: number; base: number; tries: number } = RETRANSMIT): number {
  let total = 0;
  for (let k = 0; k <= r.tries; k++) total += r.timeoutS * r.base ** k;
  return Math.round(total * 1000);
}

/**
 * DPD after this much silence from the gateway: the gateway's own DPD is 10 s, and the daemon's data-plane
 * monitor notices a dead tunnel sooner; DPD is the backstop for an idle tunnel.
 * A dead peer is declared after DPD_DELAY_S + the retransmit give-up time, ~17 s.
 */
export const DPD_DELAY_S = 10;

/**
 * How long before the gateway's hard limit charon reauthenticates (its `over_time`): a gateway that wants to be
 * reauthenticated says when with AUTH_LIFETIME (RFC 4478), charon starts `over_time` ahead of it (at once if the
 * lifetime is shorter) and deletes the IKE_SA itself when the lifetime runs out. charon's default is 10 % of the
 * IKE rekey time (24 min of 4 h): a gateway asking for less would be reauthenticated immediately, again and again.
 * 25 s leaves room for the worst delay charon adds on its own: a reauthentication that finds a just-rekeyed
 * CHILD_SA still being deleted (charon keeps it `delete_rekeyed_delay`, 5 s) waits 5-15 s and tries again, and
 * the retry may itself need the retransmit give-up (~7.1 s) to get through a short outage. It is also the grace
 * after charon's own IKE rekey time before an IKE_SA that could not be rekeyed is deleted.
 */
export const REAUTH_MARGIN_S: number = 25;

/**
 * Priority of the rule charon adds for its routing table at start-up. The driver deletes that rule before
 * initiating (see strongswanConf); until then it sits just above `main`, below any rule an admin or the
 * daemon installs.
 */
export const ROUTING_RULE_PRIO = 32765;

/** Routing tables the driver picks from: far above the named tables (220 = charon's default, 253-255 system). */
export const ROUTING_TABLE_MIN = 0x10000;
export const ROUTING_TABLE_MAX = 0x7fffffff;

export interface CharonConfInput {
  /** Absolute path of this instance's VICI socket. */
  viciSocket: string;
  /** This instance's private routing table (see strongswanConf). */
  routingTable: number;
}

/** Characters that cannot break strongswan.conf's syntax (no spaces, braces, quotes, '#' or newlines). */
const SAFE_PATH = /^\/[A-Za-z0-9._/-]+$/;
/** sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_UNIX_SOCKET_PATH = 107;

/**
 * strongswan.conf for one instance. Routes: kernel-libipsec in strongSwan 5.9.8 installs a route per remote
 * TS through its TUN device whatever `install_routes` says, in `routing_table` (default 220, rule priority
 * 220, shared by every charon in the namespace: a second instance replaces the first one's route and, when
 * it exits, deletes the shared rule). So each instance gets a private table; the driver deletes the rule
 * charon adds for it, which leaves charon's routes inert: they are reported, and the caller applies routes.
 */
export function strongswanConf(input: CharonConfInput): string {
  if (!SAFE_PATH.test(input.viciSocket))
    throw new Error(
      `VICI socket path ${JSON.stringify(input.viciSocket)} must be absolute and use only [A-Za-z0-9._/-]`,
    );
  if (input.viciSocket.length > MAX_UNIX_SOCKET_PATH)
    throw new Error(`VICI socket path is ${input.viciSocket.length} bytes; unix sockets allow ${MAX_UNIX_SOCKET_PATH}`);
  if (
    !Number.isInteger(input.routingTable) ||
    input.routingTable < ROUTING_TABLE_MIN ||
    input.routingTable > ROUTING_TABLE_MAX
  ) {
    throw new Error(`routing table ${input.routingTable} is outside ${ROUTING_TABLE_MIN}-${ROUTING_TABLE_MAX}`);
  }
  return `# One charon-systemd of Detour's IKEv2 driver; generated per tunnel instance.
charon {
  # give up on a silent gateway after ${(retransmitGiveUpMs() / 1000).toFixed(1)} s (default ~165 s)
  retransmit_timeout = ${RETRANSMIT.timeoutS.toFixed(1)}
  retransmit_base = ${RETRANSMIT.base}
  retransmit_tries = ${RETRANSMIT.tries}
  # random local ports: several instances share a namespace, and UDP 500/4500 bind only once per namespace
  port = 0
  port_nat_t = 0
  # a client: never answer someone else's IKE_SA_INIT
  initiator_only = yes
  # reauthentication builds the new IKE_SA and its CHILD_SA before it deletes the old: no gap in the tunnel
  make_before_break = yes
  # private table; its rule is deleted by the driver, so routes here are reported, never applied.
  # Without installed routes kernel-netlink finds the source for a path to the gateway by asking the kernel
  # (RTM_GETROUTE, no dump): the namespace's own rules decide, and detourd throws gateway addresses out of the
  # protected table, so a MOBIKE move always leaves from the underlay, never from another tunnel's address
  install_routes = no
  routing_table = ${input.routingTable}
  routing_table_prio = ${ROUTING_RULE_PRIO}
  # MOBIKE moves an SA only when its path is gone: an address appearing on another instance's TUN or a WireGuard
  # device (a roam event for every charon in the namespace) leaves a working path alone
  prefer_best_path = no
  load_modular = no
  load = ${CHARON_PLUGINS.join(" ")}
  plugins {
    vici {
      socket = unix://${input.viciSocket}
    }
  }
  # to stderr, which the driver reads (TUN name, failure reasons) and keeps in the work folder's charon.log
  filelog {
    stderr {
      default = 1
      time_format = %T
      time_add_ms = yes
      ike_name = yes
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
`;
}

/** Problems that make a spec unusable, in words for a `bad-config` error; empty when it can work. */
export function specProblems(spec: Ikev2Spec): string[] {
  const out: string[] = [];
  const p = spec.params;
  const port = (n: number, what: string): void => {
    if (!Number.isInteger(n) || n < 1 || n > 65535) out.push(`${what} ${n} is not a UDP port`);
  };
  port(p.port, "IKE port");
  port(p.natTraversalPort, "NAT-T port");
  // charon floats to 4500 only from 500 and otherwise stays on the configured port; it has no other NAT-T port.
  const natT = p.port === 500 ? 4500 : p.port;
  if (p.natTraversalPort !== natT)
    out.push(`NAT-T port ${p.natTraversalPort} cannot work with IKE port ${p.port}: charon uses ${natT}`);
  if (!/^[0-9A-Fa-f.:]+$/.test(spec.gateway.address))
    out.push(`gateway address "${spec.gateway.address}" is not an IP address`);
  if (p.remoteId.trim() === "") out.push("remote IKE identity is empty");
  if (spec.credentials.localId.trim() === "") out.push("local IKE identity is empty");
  if (p.proposals.length === 0) out.push("no IKE proposals");
  if (p.espProposals.length === 0) out.push("no ESP proposals");
  if (p.remoteTs.length === 0) out.push("no remote traffic selectors");
  for (const ts of p.remoteTs)
    if (!/^[0-9A-Fa-f.:]+\/\d{1,3}$/.test(ts)) out.push(`remote traffic selector "${ts}" is not a prefix`);
  if (spec.credentials.psk.reveal() === "") out.push("the PSK is empty");
  return out;
}

/** load-conn: one IKE_SA with one CHILD_SA, virtual IP requested, remote identity pinned. */
export function connMessage(spec: Ikev2Spec): ViciSection {
  return viciSection({
    [CONN_NAME]: {
      version: "2",
      remote_addrs: [spec.gateway.address],
      remote_port: String(spec.params.port),
      vips: ["0.0.0.0"],
      proposals: spec.params.proposals,
      // kernel-libipsec only does ESP in UDP; forcing it also keeps ESP on the NAT-T port the gateway expects
      encap: "yes",
      // RFC 4555: on a network change charon moves this IKE_SA and its CHILD_SA to the new address itself, so the
      // leg (and its tunnel device, routes and kill-switch allowances) stays; see strongswanConf for the new path
      mobike: "yes",
      dpd_delay: `${DPD_DELAY_S}s`,
      // reauthenticate this long before the gateway's AUTH_LIFETIME runs out (see REAUTH_MARGIN_S)
      over_time: `${REAUTH_MARGIN_S}s`,
      // one attempt: the driver reports the failure and the connection core decides what to try next
      keyingtries: "1",
      send_certreq: "no",
      local: { auth: "psk", id: spec.credentials.localId },
      remote: { auth: "psk", id: spec.params.remoteId },
      children: {
        [CHILD_NAME]: {
          remote_ts: spec.params.remoteTs,
          esp_proposals: spec.params.espProposals,
          start_action: "none",
          // a dead peer ends the tunnel; charon must not re-initiate behind the driver's back
          dpd_action: "clear",
          close_action: "none",
        },
      },
    },
  });
}

/** load-shared: the PSK for exactly this pair of identities. The only place the secret is revealed. */
export function sharedKeyMessage(spec: Ikev2Spec): ViciSection {
  return viciSection({
    type: "IKE",
    data: spec.credentials.psk.reveal(),
    owners: [spec.credentials.localId, spec.params.remoteId],
  });
}
