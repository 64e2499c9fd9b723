/** Picks the driver for a spec: the one place that knows which class serves which protocol. */
import type { EngineSpec, TunnelEngine } from "./engine.ts";
import { IpsecEngine } from "./ipsec/ipsec-engine.ts";
import { OpenConnectEngine } from "./openconnect/openconnect-engine.ts";
import { WireGuardEngine } from "./wireguard/wireguard-engine.ts";

export function createEngine(spec: EngineSpec): TunnelEngine {
  switch (spec.protocol) {
    case "wireguard":
      return new WireGuardEngine(spec);
    case "ikev2":
      return new IpsecEngine(spec);
    case "anyconnect":
      return new OpenConnectEngine(spec);
  }
}
