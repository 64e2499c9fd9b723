/**
 * The router's leak witness: the client is given a leak path on purpose (a plain route to corp's networks via the
 * router), and the router counts every packet to those networks that arrives on it, that is outside a tunnel. The
 * count lives in the router's namespace, where nothing detourd does can reset it.
 */
import { nsRun } from "./exec.ts";
import type { ProbeClient } from "./probe-client.ts";
import { CORP_ECHO_PORT, type LabTopology } from "./topology.ts";

export const LEAK_WITNESS_TABLE = "detour_leak_witness";
/** corp's networks: what the kill switch must keep inside a tunnel. */
const PROTECTED = "198.19.0.0/16";
/** Below every route a tunnel installs, so the leak path only carries what no tunnel route takes. */
const LEAK_PATH_METRIC = "500";
/** Packets the control sends down the leak path with no detourd running; every one must be counted. */
const CONTROL_PACKETS = 5;
/** nft answers in milliseconds; this bounds a loaded, shared machine. */
const NFT_TIMEOUT_MS = 10_000;

/** Adds the leak path in the client and the counting table in the router. */
export async function armLeakWitness(topo: LabTopology): Promise<void> {
  await nsRun(topo.client.ns, [
    "ip",
    "route",
    "add",
    PROTECTED,
    "via",
    topo.client.routerAddress,
    "metric",
    LEAK_PATH_METRIC,
  ]).catch((err: unknown) => {
    throw new Error(`cannot add the leak path: ${(err as Error).message}`, { cause: err });
  });
  await nsRun(topo.router.ns, ["nft", "-f", "-"], {
    input: `table inet ${LEAK_WITNESS_TABLE} {\n chain witness {\n  type filter hook prerouting priority -300; policy accept;\n  iifname "to-client" ip daddr ${PROTECTED} counter\n }\n}\n`,
  }).catch((err: unknown) => {
    throw new Error(`cannot load the leak witness: ${(err as Error).message}`, { cause: err });
  });
}

/** Packets to corp's networks that reached the router from the client outside a tunnel; throws if it cannot read. */
export async function leakedToRouter(topo: LabTopology): Promise<number> {
  const out = await nsRun(topo.router.ns, ["nft", "-j", "list", "table", "inet", LEAK_WITNESS_TABLE], {
    timeoutMs: NFT_TIMEOUT_MS,
  });
  const m = /"packets":\s*(\d+)/.exec(out);
  return m === null ? NaN : Number(m[1]);
}

/**
 * The control, run before detourd starts: corp traffic down the leak path must be counted, or the witness would
 * miss leaks. Returns the count afterwards; throws naming the count if the witness saw too little.
 */
export async function checkLeakWitness(topo: LabTopology, probe: ProbeClient): Promise<number> {
  await probe.udp({
    host: topo.corp.address,
    port: CORP_ECHO_PORT,
    count: CONTROL_PACKETS,
    intervalMs: 10,
    timeoutMs: 200,
  });
  const n = await leakedToRouter(topo);
  if (!(n >= CONTROL_PACKETS))
    throw new Error(`the leak witness counts nothing without detourd (${String(n)} packets): it would miss leaks`);
  return n;
}
