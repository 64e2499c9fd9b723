/** Linux's Platform (platform.ts): iproute2 routes and rules, resolv.conf, nftables, netid, the engine drivers. */
import { createEngine } from "../engines/create-engine.ts";
import { WireGuardSpare } from "../engines/wireguard/wireguard-spare.ts";
import { applyDns, restoreDns } from "./dns.linux.ts";
import { applyDrillBlock, drillBlockPresent, removeDrillBlock } from "./drill-firewall.linux.ts";
import { applyKillSwitch } from "./firewall.linux.ts";
import { networkId } from "./netid.linux.ts";
import type { Platform } from "./platform.ts";
import {
  applyProtectedRoutes,
  clearProtectedRoutes,
  installLegSource,
  removeLegSource,
  stageProtectedRule,
} from "./routes.linux.ts";

export function linuxPlatform(): Platform {
  return {
    name: "linux",
    routes: {
      stageProtectedRule: () => stageProtectedRule(),
      applyProtectedRoutes: (p) => applyProtectedRoutes(p),
      clearProtectedRoutes: (routes, opts) => clearProtectedRoutes(routes, opts),
      installLegSource: (s) => installLegSource(s),
      removeLegSource: (s) => removeLegSource(s),
    },
    dns: {
      apply: (settings, files) => {
        applyDns(settings, files);
      },
      restore: (files) => restoreDns(files),
    },
    firewall: {
      applyKillSwitch: (rules) => applyKillSwitch(rules),
      drillBlock: {
        apply: (gateway, endpoints) => applyDrillBlock(gateway, endpoints),
        remove: () => removeDrillBlock(),
        present: () => drillBlockPresent(),
      },
    },
    network: { networkId: (input) => networkId(input) },
    engines: {
      // Only a spare this platform launched can be adopted; anything else is not a wireguard-go it knows.
      create: (spec, spare) => createEngine(spec, spare instanceof WireGuardSpare ? { wireguardSpare: spare } : {}),
      launchSpare: (runtime, deadlineAt, signal) => WireGuardSpare.launch(runtime, deadlineAt, signal),
    },
    // No network monitor on Linux yet: nothing is reported, and the daemon keeps its own rechecks.
    netmon: { subscribe: () => () => undefined },
  };
}

/** The uid behind an accepted control connection (the control server asks it for the slots reserved for root). */
export { peerUidOf } from "./peer-cred.linux.ts";
