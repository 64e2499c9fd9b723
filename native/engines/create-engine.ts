/** Picks the driver for a spec: the one place that knows which class serves which protocol. */
import type { EngineSpec, TunnelEngine } from "./engine.ts";
import { IpsecEngine } from "./ipsec/ipsec-engine.ts";
import { OpenConnectEngine } from "./openconnect/openconnect-engine.ts";
import { WireGuardEngine } from "./wireguard/wireguard-engine.ts";
import type { WireGuardSpare } from "./wireguard/wireguard-spare.ts";

/** `wireguardSpare`: a pre-started wireguard-go a WireGuard spec for its device may adopt (see wireguard-spare.ts). */
export function createEngine(spec: EngineSpec, opts: { wireguardSpare?: WireGuardSpare } = {}): TunnelEngine {
  switch (spec.protocol) {
    case "wireguard":
      return new WireGuardEngine(spec, opts.wireguardSpare === undefined ? {} : { spare: opts.wireguardSpare });
    case "ikev2":
      return new IpsecEngine(spec);
    case "anyconnect":
      return new OpenConnectEngine(spec);
  }
}
