/**
 * The lab's captive network (`npm run lab -- portal on|off`): the router treats the client like a hotel network
 * does until it signs in. Its DNS (to any resolver) is answered by the portal with the portal's address, its HTTP
 * (port 80, to anywhere) lands on the portal's sign-in page, and everything else it sends is dropped; a form POST
 * on the page adds the client to the router's `signed_in` set and it is let through from then on.
 *
 * The router also counts what the client sent, by the destination it had when it arrived (before the portal's
 * redirection), so a test can prove that only DNS and the portal's HTTP left the client and nothing to corp.
 *
 *   client --- router: [count by original destination] -> [53 and 80 -> portal 198.18.205.1] -> [drop the rest]
 *                      portal 198.18.205.1 (DNS, sign-in page)   check host 198.18.204.1 (GET /generate_204: 204)
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { inNs, isAlive, readIfExists, runOk, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { labDirOf, loadState } from "./lab.ts";
import { REPO_ROOT } from "./services.ts";
import { labTopology, type LabTopology } from "./topology.ts";

/** The portal's own address (the router's loopback): DNS and the sign-in page. */
export const PORTAL_ADDRESS = "198.18.205.1";
/** The connectivity-check host (the router's loopback): 204 to a signed-in client, or with the portal off. */
export const CHECK_ADDRESS = "198.18.204.1";
/** What detourd's `captive.checkUrl` is in the captive lab tests. */
export const CHECK_URL = `http://${CHECK_ADDRESS}/generate_204`;
export const PORTAL_SIGN_IN_URL = `http://${PORTAL_ADDRESS}/signin`;
export const CAPTIVE_TABLE = "detour_captive";
/** Node with the TypeScript loader starts in about a second here; a loaded machine gets more. */
const SERVER_READY_TIMEOUT_MS = 20_000;

/** What the router counted from the client while captive, by original destination. */
export interface CaptiveCounts {
  dns: number;
  portal: number;
  check: number;
  gateway: number;
  corp: number;
  other: number;
  ipv6: number;
}
export const COUNT_NAMES: readonly (keyof CaptiveCounts)[] = [
  "dns",
  "portal",
  "check",
  "gateway",
  "corp",
  "other",
  "ipv6",
];

/** The router's captive table (pure, so a unit test can read it). */
export function captiveRuleset(topo: LabTopology): string {
  const gateways = topo.gateways.map((g) => g.address).join(", ");
  const fromClient = `iifname "to-client"`;
  return `table inet ${CAPTIVE_TABLE} {
\tset signed_in { type ipv4_addr; }
\tchain tally {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tip saddr @signed_in accept
\t\t${fromClient} ip daddr 198.19.0.0/16 counter accept comment "corp"
\t\t${fromClient} ip daddr { ${gateways} } counter accept comment "gateway"
\t\t${fromClient} meta l4proto { tcp, udp } th dport 53 counter accept comment "dns"
\t\t${fromClient} ip daddr ${PORTAL_ADDRESS} tcp dport { 80, 443 } counter accept comment "portal"
\t\t${fromClient} ip daddr ${CHECK_ADDRESS} tcp dport 80 counter accept comment "check"
\t\t${fromClient} meta nfproto ipv4 counter accept comment "other"
\t\t${fromClient} meta nfproto ipv6 meta l4proto != icmpv6 counter accept comment "ipv6"
\t}
\tchain to_portal {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip saddr @signed_in accept
\t\t${fromClient} meta l4proto { tcp, udp } th dport 53 dnat ip to ${PORTAL_ADDRESS}:53
\t\t${fromClient} tcp dport 80 dnat ip to ${PORTAL_ADDRESS}:80
\t}
\tchain to_router {
\t\ttype filter hook input priority filter; policy accept;
\t\tip saddr @signed_in accept
\t\t${fromClient} ip daddr ${PORTAL_ADDRESS} meta l4proto { tcp, udp } th dport { 53, 80, 443 } accept
\t\t${fromClient} meta nfproto ipv6 meta l4proto icmpv6 accept
\t\t${fromClient} drop
\t}
\tchain through {
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr @signed_in accept
\t\t${fromClient} drop
\t}
}
`;
}

function stateFile(id: string): string {
  return join(labDirOf(id), "captive", "server.json");
}

/** Whether the lab's client is behind the portal (the router's captive table exists). */
export function portalIsOn(id: string): boolean {
  return existsSync(stateFile(id));
}

/** Puts the client behind the captive portal (again: a fresh table, nobody signed in). */
export async function portalOn(id: string): Promise<{ pid: number; log: string }> {
  loadState(id); // the lab must be up
  await portalOff(id);
  const topo = labTopology(id);
  const dir = join(labDirOf(id), "captive");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const r = topo.router.ns;
  await runOk("ip", ["-n", r, "addr", "add", `${PORTAL_ADDRESS}/32`, "dev", "lo"]);
  await runOk("ip", ["-n", r, "addr", "add", `${CHECK_ADDRESS}/32`, "dev", "lo"]);
  await runOk("ip", ["netns", "exec", r, "nft", "-f", "-"], { input: captiveRuleset(topo) });
  const log = join(labDirOf(id), "logs", "captive-server.log");
  const script = join(REPO_ROOT, "test", "lab", "services", "captive-server.ts");
  const argv = ["--portal", PORTAL_ADDRESS, "--check", CHECK_ADDRESS, "--table", CAPTIVE_TABLE];
  const pid = spawnDaemon(inNs(r, [process.execPath, "--import", "tsx", script, ...argv]), {
    logFile: log,
    cwd: REPO_ROOT,
  });
  writeFileSync(stateFile(id), JSON.stringify({ pid }) + "\n", { mode: 0o600 });
  await waitFor(
    "the captive portal to be ready",
    () => {
      if (!isAlive(pid))
        throw new Error(`the captive portal exited during start-up:\n${readIfExists(log).slice(-2000)}`);
      return readIfExists(log).includes("captive-server ready");
    },
    { timeoutMs: SERVER_READY_TIMEOUT_MS, intervalMs: 50 },
  );
  return { pid, log };
}

/** Takes the portal away: the server stops, the table and the addresses go. Safe to repeat. */
export async function portalOff(id: string): Promise<boolean> {
  const topo = labTopology(id);
  const r = topo.router.ns;
  const file = stateFile(id);
  let was = false;
  if (existsSync(file)) {
    was = true;
    const { pid } = JSON.parse(readFileSync(file, "utf8")) as { pid: number };
    await stopPids([pid]);
    rmSync(file, { force: true });
  }
  // Each step tolerates absence: a portal half set up, or a lab already gone.
  await runOk("ip", ["netns", "exec", r, "nft", "delete", "table", "inet", CAPTIVE_TABLE]).catch(() => undefined);
  for (const a of [PORTAL_ADDRESS, CHECK_ADDRESS])
    await runOk("ip", ["-n", r, "addr", "del", `${a}/32`, "dev", "lo"]).catch(() => undefined);
  return was;
}

/** The router's counts of what the client sent while not signed in. */
export async function captiveCounts(id: string): Promise<CaptiveCounts> {
  const topo = labTopology(id);
  const out = await runOk("ip", [
    "netns",
    "exec",
    topo.router.ns,
    "nft",
    "-j",
    "list",
    "chain",
    "inet",
    CAPTIVE_TABLE,
    "tally",
  ]);
  return parseCaptiveCounts(out);
}

/** Sums the counted packets per comment in `nft -j list chain` output. */
export function parseCaptiveCounts(json: string): CaptiveCounts {
  const counts: CaptiveCounts = { dns: 0, portal: 0, check: 0, gateway: 0, corp: 0, other: 0, ipv6: 0 };
  const doc = JSON.parse(json) as { nftables?: { rule?: { comment?: string; expr?: unknown[] } }[] };
  for (const item of doc.nftables ?? []) {
    const rule = item.rule;
    const name = rule?.comment as keyof CaptiveCounts | undefined;
    if (rule === undefined || name === undefined || !COUNT_NAMES.includes(name)) continue;
    for (const e of rule.expr ?? []) {
      const c = (e as { counter?: { packets?: number } }).counter;
      if (c?.packets !== undefined) counts[name] += c.packets;
    }
  }
  return counts;
}

/** `npm run lab -- portal on|off`: what it did, in a sentence. */
export async function portalCommand(what: "on" | "off", id: string): Promise<string> {
  if (what === "off")
    return (await portalOff(id)) ? "portal off: the client reaches the network again" : "the portal was not on";
  const { pid, log } = await portalOn(id);
  return [
    `portal on (pid ${String(pid)}, log ${log}): the client's DNS and HTTP reach only the sign-in page`,
    `  check URL: ${CHECK_URL}   sign-in page: ${PORTAL_SIGN_IN_URL}`,
    `  sign in:   npm run lab -- exec client -- curl -s -d accept=yes ${PORTAL_SIGN_IN_URL}`,
  ].join("\n");
}
