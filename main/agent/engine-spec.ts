/** Turns configuration, a candidate and a leg into the EngineSpec a driver takes: the daemon's one mapping. */
import { mkdtempSync } from "node:fs";
import { join } from "node:path";
import type { DetourConfig } from "../core/config/schema.ts";
import type { Candidate, Leg } from "../core/connection/types.ts";
import type { Secret } from "../core/secret.ts";
import type { EngineSpec } from "../../native/engines/engine.ts";
import { loadSecret } from "./secrets.ts";

export interface IdentitySecrets {
  wireguard: Secret | null;
  ikev2: Secret | null;
  anyconnect: Secret | null;
}

/** Loads every credential the config names, once at start-up, so a bad reference fails early and clearly. */
export function loadIdentity(config: DetourConfig): IdentitySecrets {
  const id = config.identity;
  return {
    wireguard: id.wireguard === undefined ? null : loadSecret(id.wireguard.privateKey, "identity.wireguard.privateKey"),
    ikev2: id.ikev2 === undefined ? null : loadSecret(id.ikev2.psk, "identity.ikev2.psk"),
    anyconnect: id.anyconnect === undefined ? null : loadSecret(id.anyconnect.password, "identity.anyconnect.password"),
  };
}

export interface RuntimeOptions {
  /** Where per-leg work folders go. */
  workRoot: string;
  /** Device name prefix, unique per daemon on the host (wireguard-go's socket path is host-wide). */
  ifnamePrefix: string;
  netns?: string;
  /** A device and work folder prepared ahead (a spare wireguard-go) for this leg, instead of new ones. */
  device?: { ifname: string; workDir: string };
}

/** Device name for a leg: prefix + leg number, within Linux's 15 characters. */
export function legIfname(prefix: string, leg: Leg): string {
  return deviceName(prefix, leg.id.toLowerCase());
}

/** Device name for the n-th spare wireguard-go: prefix + "s" + n, within Linux's 15 characters. */
export function spareIfname(prefix: string, n: number): string {
  return deviceName(prefix, `s${String(n)}`);
}

function deviceName(prefix: string, suffix: string): string {
  const name = `${prefix}-${suffix}`;
  if (name.length > 15)
    throw new Error(`device name ${name} is longer than 15 characters; use a shorter --ifname-prefix`);
  return name;
}

export function engineSpecFor(
  config: DetourConfig,
  candidate: Candidate,
  leg: Leg,
  identity: IdentitySecrets,
  rt: RuntimeOptions,
): EngineSpec {
  const gw = config.gateways.find((g) => g.name === candidate.name);
  if (gw === undefined)
    throw new Error(`gateway ${candidate.name} has no configuration (pinned identities come only from the config)`);
  if (candidate.address === null) throw new Error(`gateway ${candidate.name} has no known address`);
  const runtime = {
    workDir: rt.device?.workDir ?? mkdtempSync(join(rt.workRoot, `${leg.id}-`)),
    ifname: rt.device?.ifname ?? legIfname(rt.ifnamePrefix, leg),
    ...(rt.netns === undefined ? {} : { netns: rt.netns }),
  };
  const base = {
    gateway: { name: gw.name, address: candidate.address },
    runtime,
    probe: { address: config.probe.address },
  };
  switch (leg.kind) {
    case "wireguard": {
      const p = gw.protocols.wireguard;
      if (p === undefined || identity.wireguard === null)
        throw new Error(`${gw.name} has no WireGuard configuration or identity`);
      return {
        ...base,
        protocol: "wireguard",
        params: {
          port: p.port,
          publicKey: p.publicKey,
          tunnelAddress: p.tunnelAddress,
          persistentKeepaliveSec: p.persistentKeepaliveSec,
          allowedIps: config.protectedRoutes,
        },
        credentials: { privateKey: identity.wireguard },
      };
    }
    case "ikev2": {
      const p = gw.protocols.ikev2;
      const ike = config.identity.ikev2;
      if (p === undefined || ike === undefined || identity.ikev2 === null)
        throw new Error(`${gw.name} has no IKEv2 configuration or identity`);
      return {
        ...base,
        protocol: "ikev2",
        params: {
          port: p.port,
          natTraversalPort: p.natTraversalPort,
          remoteId: p.remoteId,
          proposals: p.proposals,
          espProposals: p.espProposals,
          remoteTs: config.protectedRoutes,
        },
        credentials: { localId: ike.localId, psk: identity.ikev2 },
      };
    }
    case "anyconnect-tls":
    case "anyconnect-dtls": {
      const p = gw.protocols.anyconnect;
      const ac = config.identity.anyconnect;
      if (p === undefined || ac === undefined || identity.anyconnect === null)
        throw new Error(`${gw.name} has no AnyConnect configuration or identity`);
      return {
        ...base,
        protocol: "anyconnect",
        params: { port: p.port, pin: p.pin, dtls: leg.kind === "anyconnect-dtls" },
        credentials: { username: ac.username, password: identity.anyconnect },
      };
    }
  }
}
