/**
 * Engine specs for the lab's gateways, built from a running lab's state: what the engine drivers' lab tests,
 * the benchmarks and the daemon's lab runs hand to native/engines.
 */
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import { Secret } from "../../main/core/secret.ts";
import type { EngineSpec } from "../../native/engines/engine.ts";
import { readSecret, type LabState } from "./lab.ts";
import { CORP_NETWORK, PORTS, gatewayByName, type LabTopology } from "./topology.ts";

export type LabLeg = "wireguard" | "ikev2" | "anyconnect-dtls" | "anyconnect-tls";

export interface LabSpecOptions {
  /** TUN device name, unique on the host, at most 15 characters. */
  ifname: string;
  /** Parent folder for the instance's private work folder (default: the lab's run folder). */
  workRoot?: string;
  /** Override what the client pins, to play a gateway that presents another identity. */
  pin?: { wireguardPublicKey?: string; ikeRemoteId?: string; tlsPin?: string };
}

export function labEngineSpec(
  topo: LabTopology,
  state: LabState,
  gateway: string,
  leg: LabLeg,
  opts: LabSpecOptions,
): EngineSpec {
  const gw = gatewayByName(topo, gateway);
  const secrets = state.secrets.gateways[gw.name];
  if (secrets === undefined) throw new Error(`the lab has no credentials for ${gw.name}`);
  const workDir = mkdtempSync(join(opts.workRoot ?? join(state.labDir, "engines"), `${leg}-${gw.name}-`));
  const base = {
    gateway: { name: gw.name, address: gw.address },
    runtime: { netns: topo.client.ns, workDir, ifname: opts.ifname },
    probe: { address: topo.corp.address },
  };
  switch (leg) {
    case "wireguard":
      return {
        ...base,
        protocol: "wireguard",
        params: {
          port: PORTS.wireguard,
          publicKey: opts.pin?.wireguardPublicKey ?? secrets.wgPublicKey,
          tunnelAddress: `${gw.wireguard.clientAddress}/32`,
          persistentKeepaliveSec: 25,
          allowedIps: [CORP_NETWORK],
        },
        credentials: { privateKey: new Secret(readSecret(state.secrets.clientWgPrivateKeyFile)) },
      };
    case "ikev2":
      return {
        ...base,
        protocol: "ikev2",
        params: {
          port: PORTS.ike,
          natTraversalPort: PORTS.ikeNatT,
          remoteId: opts.pin?.ikeRemoteId ?? gw.ikev2.id,
          proposals: ["aes256-sha256-x25519"],
          espProposals: ["aes128-sha256"],
          remoteTs: [CORP_NETWORK],
        },
        credentials: { localId: topo.clientIkeId, psk: new Secret(readSecret(state.secrets.pskFile)) },
      };
    case "anyconnect-dtls":
    case "anyconnect-tls":
      return {
        ...base,
        protocol: "anyconnect",
        params: { port: PORTS.anyconnect, pin: opts.pin?.tlsPin ?? secrets.tlsPin, dtls: leg === "anyconnect-dtls" },
        credentials: { username: topo.anyconnectUser, password: new Secret(readSecret(state.secrets.passwordFile)) },
      };
  }
}
