/**
 * Puts each gateway at its distance from the client, as the propagation delay of the gateway's underlay link: in
 * the gateway's own namespace, one delayq holds what arrives on ul0 and another what leaves on it. Router
 * impairments run in another namespace, so each of them (a delay too) adds to the distance; a second NFQUEUE
 * delay in the router would not, because a delayq verdict is terminal for the chain.
 */
import { join } from "node:path";
import { startDelayq } from "./delayq.ts";
import { isAlive, runOk } from "./exec.ts";
import {
  gatewayDistances,
  oneWayDelay,
  type DistanceProfile,
  type GatewayDistance,
  type GatewayName,
  type LabTopology,
} from "./topology.ts";

/** `up` is client towards gateway (arriving on the gateway's ul0), `down` gateway towards client (leaving on it). */
export type LinkDirection = "up" | "down";
export const LINK_DIRECTIONS: readonly LinkDirection[] = ["up", "down"];

/**
 * NFQUEUE numbers are per namespace, so every gateway uses the same two; the router's impairments use 100 and up.
 * One queue per direction: the two directions of a link are independent, and a shared FIFO would hold a packet
 * behind one going the other way.
 */
const DISTANCE_QUEUE: Record<LinkDirection, number> = { up: 10, down: 11 };
const IPTABLES_COMMANDS = ["iptables", "ip6tables"] as const;
/**
 * ICMPv6 neighbour discovery (router solicitation/advertisement, neighbour solicitation/advertisement, redirect)
 * passes undelayed, as ARP does: it resolves the next hop on the gateway's own wire, not across the distance, and
 * delayed it would add several round trips to the first IPv6 packet after every neighbour entry expires.
 */
const NDP_ICMPV6_TYPES = [133, 134, 135, 136, 137];
/** iptables waits this long for the host-wide xtables lock, which other labs may hold for a moment. */
const XTABLES_WAIT_S = "5";

/** The delayq of one direction of one gateway's link, and the mangle rules that queue to it (IPv4 and IPv6). */
export interface DistanceLeg {
  gateway: GatewayName;
  ns: string;
  dir: LinkDirection;
  queue: number;
  delayMs: number;
  jitterMs: number;
  /** In order, each for the command it names: the arguments after `-t mangle -A`, chain first. */
  rules: { command: (typeof IPTABLES_COMMANDS)[number]; args: string[] }[];
}

/** PIDs of the distance delayqs, per gateway and direction. */
export type DistancePids = Partial<Record<GatewayName, Record<LinkDirection, number>>>;

export function distanceLegs(topo: LabTopology, profile: DistanceProfile): DistanceLeg[] {
  const distances = gatewayDistances(profile);
  return topo.gateways.flatMap((g) => {
    const d = distances[g.name];
    if (d === undefined) return [];
    const { delayMs, jitterMs } = oneWayDelay(d);
    return LINK_DIRECTIONS.map((dir): DistanceLeg => {
      const queue = DISTANCE_QUEUE[dir];
      // PREROUTING and POSTROUTING see every packet on the link, to the gateway's engines and through it alike.
      const where = dir === "up" ? ["PREROUTING", "-i", "ul0"] : ["POSTROUTING", "-o", "ul0"];
      const queueIt = [...where, "-j", "NFQUEUE", "--queue-num", String(queue), "--queue-bypass"];
      return {
        gateway: g.name,
        ns: g.ns,
        dir,
        queue,
        delayMs,
        jitterMs,
        rules: [
          { command: "iptables", args: queueIt },
          ...NDP_ICMPV6_TYPES.map((t) => ({
            command: "ip6tables" as const,
            args: [...where, "-p", "ipv6-icmp", "--icmpv6-type", String(t), "-j", "RETURN"],
          })),
          { command: "ip6tables", args: queueIt },
        ],
      };
    });
  });
}

/** The iptables-restore input that makes a gateway's mangle table exactly these rules (arguments after `-A`). */
export function mangleScript(rules: readonly (readonly string[])[]): string {
  return ["*mangle", ...rules.map((r) => `-A ${r.join(" ")}`), "COMMIT", ""].join("\n");
}

/**
 * Puts the profile's distances in force and returns the delayq PIDs: keeps each delayq in `current` that still
 * runs, starts the missing ones, and replaces each gateway's mangle table with the queue rules (the table holds
 * nothing else, so replacing it whole is atomic and safe to repeat; `heal` does, to restore the distances).
 */
export async function applyDistances(
  topo: LabTopology,
  labDir: string,
  profile: DistanceProfile,
  current: DistancePids = {},
): Promise<DistancePids> {
  const pids: DistancePids = {};
  // Gateways side by side: each delayq takes a few milliseconds to bind its queue.
  await Promise.all(
    topo.gateways.map(async (g) => {
      const legs = distanceLegs(topo, profile).filter((l) => l.gateway === g.name);
      if (legs.length === 0) return;
      const mine: Record<LinkDirection, number> = { up: 0, down: 0 };
      pids[g.name] = mine;
      for (const leg of legs) {
        const running = current[g.name]?.[leg.dir] ?? 0;
        mine[leg.dir] =
          running > 0 && isAlive(running)
            ? running
            : await startDelayq(
                leg.ns,
                leg.queue,
                leg.delayMs,
                leg.jitterMs,
                join(labDir, "logs", `distance-${g.name}-${leg.dir}.log`),
              );
      }
      for (const command of IPTABLES_COMMANDS) {
        const rules = legs.flatMap((l) => l.rules.filter((r) => r.command === command).map((r) => r.args));
        await runOk("ip", ["netns", "exec", g.ns, `${command}-restore`, "-w", XTABLES_WAIT_S], {
          input: mangleScript(rules),
        });
      }
    }),
  );
  return pids;
}

/** One gateway's distance as `lab status` shows it. */
export interface DistanceStatus {
  gateway: GatewayName;
  rttMs: number;
  /** Each direction: `delayMs` plus uniform(0, `jitterMs`). */
  oneWay: { delayMs: number; jitterMs: number };
  pids: Record<LinkDirection, number>;
  /** Both directions' delayq run; otherwise the link is shorter than it should be (`heal` restarts them). */
  alive: boolean;
}

export function distanceStatus(topo: LabTopology, profile: DistanceProfile, pids: DistancePids): DistanceStatus[] {
  const distances = gatewayDistances(profile);
  return topo.gateways.flatMap((g) => {
    const d: GatewayDistance | undefined = distances[g.name];
    if (d === undefined) return [];
    const p = pids[g.name] ?? { up: 0, down: 0 };
    return [
      {
        gateway: g.name,
        rttMs: d.rttMs,
        oneWay: oneWayDelay(d),
        pids: p,
        alive: LINK_DIRECTIONS.every((dir) => p[dir] > 0 && isAlive(p[dir])),
      },
    ];
  });
}

export function describeDistance(s: DistanceStatus): string {
  const jitter = s.oneWay.jitterMs > 0 ? ` + 0-${String(s.oneWay.jitterMs)} ms jitter` : "";
  return `${s.gateway}: ${String(s.rttMs)} ms round trip (${String(s.oneWay.delayMs)} ms${jitter} each way)`;
}
