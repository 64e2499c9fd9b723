/** Status fixtures for the app's unit tests: a connected daemon, with helpers to vary it. */
import type { Candidate } from "../core/connection/types.ts";
import type { StatusPayload } from "../core/protocol/messages.ts";

export const CANDIDATES: Candidate[] = [
  {
    name: "Frankfurt",
    hostname: "fra.example.com",
    address: "198.18.1.2",
    priority: 10,
    region: "eu-central",
    kinds: ["wireguard", "ikev2"],
    sources: ["config"],
    probe: { at: 5, latencyMs: 12, reachable: { ikev2: "yes" } },
  },
  {
    name: "Paris",
    hostname: "par.example.com",
    address: "198.18.2.2",
    priority: 20,
    region: "eu-west",
    kinds: ["wireguard"],
    sources: ["config"],
    probe: null,
  },
];

export function status(over: Partial<StatusPayload> = {}): StatusPayload {
  return {
    state: "connected",
    summary: "Connected to Frankfurt over WireGuard",
    gateway: "Frankfurt",
    protocol: "wireguard",
    activeLegId: "L1",
    standby: null,
    since: 1000,
    candidates: CANDIDATES,
    lastRace: null,
    lastFailover: null,
    error: null,
    daemon: { version: "0.1.0", pid: 42, startedAt: 1, configPath: "/etc/detour/client.json" },
    telemetry: { rttMs: 18.2, rttP95Ms: 25, jitterMs: 1, lossPct: 0, samples: 100, export: null, reachability: [] },
    gatewayChoice: null,
    ...over,
  };
}

export function failedOver(at: number, to = "Paris"): Partial<StatusPayload> {
  return {
    gateway: to,
    summary: `Connected to ${to} over WireGuard`,
    lastFailover: {
      from: { gateway: "Frankfurt", kind: "wireguard" },
      to: { gateway: to, kind: "wireguard" },
      reason: "dead: no reply for 600 ms",
      via: "standby",
      lastReplyAt: at - 600,
      detectedAt: at,
      restoredAt: at + 20,
      detectedAfterMs: 600,
      restoredAfterMs: 620,
    },
  };
}
