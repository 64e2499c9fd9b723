/**
 * Writes the lab's client configuration: a real instance of Detour's configuration format (main/core/config),
 * validated before it is written so the lab can never hand the daemon a file it would reject.
 */
import { writeFileSync } from "node:fs";
import { parseConfig, type DetourConfigInput } from "../../main/core/config/schema.ts";
import { CORP_DOMAIN, SRV_NAMES } from "./services.ts";
import { CORP_ECHO_PORT, CORP_NETWORK, FULL_TUNNEL, PORTS, type LabTopology } from "./topology.ts";

export interface ClientSecrets {
  wgPrivateKeyFile: string;
  /** The collector's ingest token for this lab, and where it listens. */
  telemetry?: { tokenFile: string; endpoint: string };
  pskFile: string;
  passwordFile: string;
  gateways: Record<string, { wgPublicKey: string; tlsPin: string }>;
}

/** `tunnel`: the protected networks are corp's ("split") or everything ("full", the common enterprise setup). */
export function buildClientConfig(
  topo: LabTopology,
  s: ClientSecrets,
  tunnel: "split" | "full" = "split",
): DetourConfigInput {
  return {
    version: 1,
    organisation: `Detour lab ${topo.id}`,
    identity: {
      wireguard: { privateKey: { file: s.wgPrivateKeyFile } },
      ikev2: { localId: topo.clientIkeId, psk: { file: s.pskFile } },
      anyconnect: { username: topo.anyconnectUser, password: { file: s.passwordFile } },
    },
    gateways: topo.gateways.map((g) => {
      const pub = s.gateways[g.name];
      if (pub === undefined) throw new Error(`no credentials for ${g.name}`);
      return {
        name: g.name,
        hostname: g.hostname,
        address: g.address,
        priority: g.priority,
        region: g.region,
        protocols: {
          wireguard: {
            port: PORTS.wireguard,
            publicKey: pub.wgPublicKey,
            tunnelAddress: `${g.wireguard.clientAddress}/32`,
            persistentKeepaliveSec: 25,
          },
          ikev2: {
            port: PORTS.ike,
            natTraversalPort: PORTS.ikeNatT,
            remoteId: g.ikev2.id,
            proposals: ["aes256-sha256-x25519"],
            espProposals: ["aes128-sha256"],
          },
          anyconnect: { port: PORTS.anyconnect, pin: pub.tlsPin, dtls: true },
        },
      };
    }),
    protectedRoutes: [tunnel === "full" ? FULL_TUNNEL : CORP_NETWORK],
    probe: { address: topo.corp.address, port: CORP_ECHO_PORT },
    discovery: {
      dns: { servers: [topo.dns.address], srv: [SRV_NAMES.wireguard, SRV_NAMES.ikev2, SRV_NAMES.anyconnect] },
    },
    // The lab demonstrates brownout failover with 15 % loss each way (~28 % of probes lost): a threshold of
    // 20 % sits between that and a 5 % lossy link (~10 %), which must not move the tunnel. 5 s windows hold
    // ~200 probes, so the 10 % link's loss reads 10 +/- 2 points: 20 % is 5 standard deviations away (15 %, the
    // earlier setting, was 2.5 and a busy machine's bursts crossed it: 2 false failovers in the 10-minute soak).
    health: { brownout: { lossPct: 20 } },
    // corp's resolver, reachable only through the tunnel: intranet names resolve while connected.
    tunnelDns: { servers: [topo.corp.address], searchDomains: [CORP_DOMAIN] },
    // The lab's collector; exports every 5 s so a test or a demo sees data within seconds, and corp's web
    // service as the internal application whose reachability through the tunnel is measured.
    ...(s.telemetry === undefined
      ? {}
      : {
          telemetry: {
            endpoint: s.telemetry.endpoint,
            token: { file: s.telemetry.tokenFile },
            intervalMs: 5000,
            reachability: [{ name: "corp-web", url: `http://${topo.corp.address}/whoami`, intervalMs: 5000 }],
          },
        }),
  };
}

export function writeClientConfig(path: string, config: DetourConfigInput): void {
  const r = parseConfig(config);
  if (!r.ok)
    throw new Error(
      `the lab built an invalid client config:\n${r.issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}`,
    );
  writeFileSync(path, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
}
