/** Linux's Platform (platform.ts): iproute2 routes and rules, resolv.conf or systemd-resolved, nftables, netid, the engine drivers, crash recovery, logind's sleep signal. */
import { createEngine } from "../engines/create-engine.ts";
import { WireGuardSpare } from "../engines/wireguard/wireguard-spare.ts";
import { watchChildren } from "./child-watch.ts";
import { applyDns, reassertDns, restoreDns, watchDns } from "./dns.linux.ts";
import { applyDrillBlock, drillBlockPresent, removeDrillBlock } from "./drill-firewall.linux.ts";
import { localNetworks } from "./local-networks.linux.ts";
import { connectedRoutes } from "./connected-routes.linux.ts";
import { CaptivePath } from "./captive-path.linux.ts";
import { watchSleep } from "./logind.linux.ts";
import { applyKillSwitch, applyKillSwitchFallback, readKillSwitch } from "./firewall.linux.ts";
import { watchFirewall } from "./firewall-watch.linux.ts";
import { applyBackstop } from "./firewall-backstop.linux.ts";
import { networkId } from "./netid.linux.ts";
import { applyLinkDns, dnsBackend, readLinkDns, revertLinkDns } from "./resolved.linux.ts";
import { applyMssClamp, probeSize, setLinkMtu } from "./mss.linux.ts";
import { watchNetwork } from "./netmon.linux.ts";
import type { Platform } from "./platform.ts";
import { identifyProcess, reclaim } from "./reclaim.linux.ts";
import {
  applyProtectedRoutes,
  clearProtectedRoutes,
  installLegSource,
  removeLegSource,
  stageProtectedRule,
} from "./routes.linux.ts";

export function linuxPlatform(): Platform {
  const captivePath = new CaptivePath();
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
      reassert: (settings, files) => reassertDns(settings, files),
      watch: (files, changed) => watchDns(files, changed),
      links: {
        backend: (files) => dnsBackend(files.path),
        apply: (ifname, settings) => applyLinkDns(ifname, settings),
        revert: (ifname) => revertLinkDns(ifname),
        read: (ifname) => readLinkDns(ifname),
      },
    },
    firewall: {
      applyKillSwitch: (rules) => applyKillSwitch(rules),
      applyKillSwitchFallback: (p) => applyKillSwitchFallback(p),
      readKillSwitch: () => readKillSwitch(),
      applyBackstop: (b) => applyBackstop(b),
      watchFirewall: (listener) => watchFirewall(listener),
      drillBlock: {
        apply: (gateway, endpoints) => applyDrillBlock(gateway, endpoints),
        remove: () => removeDrillBlock(),
        present: () => drillBlockPresent(),
      },
    },
    network: {
      networkId: (input) => networkId(input),
      localNetworks: () => localNetworks(),
      connectedRoutes: () => connectedRoutes(),
      bindCaptiveCheck: (targets, ifnamePrefix) => captivePath.lease(targets, ifnamePrefix),
    },
    engines: {
      // Only a spare this platform launched can be adopted; anything else is not a wireguard-go it knows.
      create: (spec, spare) => createEngine(spec, spare instanceof WireGuardSpare ? { wireguardSpare: spare } : {}),
      launchSpare: (runtime, deadlineAt, signal) => WireGuardSpare.launch(runtime, deadlineAt, signal),
    },
    mtu: {
      // Two echoes 20 ms apart: one lost echo is not taken for a size that does not cross.
      probeSize: (p) => probeSize({ ...p, count: 2, intervalMs: 20 }),
      setLinkMtu: (ifname, mtu) => setLinkMtu(ifname, mtu),
      applyMssClamp: (devices) => applyMssClamp(devices),
    },
    netmon: { subscribe: (listener, opts) => watchNetwork(listener, opts) },
    sleep: { subscribe: (listener) => watchSleep(listener) },
    reclaim: {
      identify: (pid) => identifyProcess(pid),
      reclaim: (owned, naming) => reclaim(owned, naming),
      watchEngineProcesses: (listener) => watchChildren(listener),
    },
  };
}

/** The uid behind an accepted control connection (the control server asks it for the slots reserved for root). */
export { peerUidOf } from "./peer-cred.linux.ts";
