/** The lab's supporting services: the corp resources behind the gateways, and dnsmasq for gateway names. */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { inNs, isAlive, readIfExists, run, spawnDaemon, waitFor } from "./exec.ts";
import { CORP_ECHO_PORT, CORP_HTTP_PORT, DOMAIN, PORTS, TUNNEL_PROTOCOLS, type LabTopology } from "./topology.ts";

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Starting Node with the TypeScript loader takes about a second on this machine; allow for a loaded CI box. */
const NODE_SERVICE_READY_TIMEOUT_MS = 20_000;
const DNSMASQ_READY_TIMEOUT_MS = 5_000;

export const SRV_NAMES = {
  wireguard: `_detour-wireguard._udp.${DOMAIN}`,
  ikev2: `_detour-ikev2._udp.${DOMAIN}`,
  anyconnect: `_detour-anyconnect._tcp.${DOMAIN}`,
} as const;

export async function startCorp(topo: LabTopology, labDir: string): Promise<number> {
  const dir = join(labDir, "corp");
  mkdirSync(dir, { recursive: true });
  const configFile = join(dir, "corp.json");
  const sources = topo.gateways.flatMap((g) =>
    TUNNEL_PROTOCOLS.map((p) => ({ cidr: g.pools[p], gateway: g.name, protocol: p })),
  );
  writeFileSync(
    configFile,
    JSON.stringify(
      {
        httpAddress: topo.corp.address,
        httpPort: CORP_HTTP_PORT,
        echoAddress: topo.corp.address,
        echoPort: CORP_ECHO_PORT,
        sources,
      },
      null,
      2,
    ),
  );
  const log = join(labDir, "logs", "corp.log");
  const script = join(REPO_ROOT, "test", "lab", "services", "corp-server.ts");
  const pid = spawnDaemon(inNs(topo.corp.ns, [process.execPath, "--import", "tsx", script, "--config", configFile]), {
    logFile: log,
    cwd: REPO_ROOT,
  });
  await waitFor(
    "the corp service to be ready",
    () => {
      if (!isAlive(pid)) throw new Error(`corp service exited during start-up:\n${readIfExists(log).slice(-2000)}`);
      return readIfExists(log).includes("corp-server ready");
    },
    { timeoutMs: NODE_SERVICE_READY_TIMEOUT_MS, intervalMs: 50 },
  );
  return pid;
}

/** The intranet name corp's resolver answers, reachable only through the tunnel. */
export const CORP_DOMAIN = "corp.detour.test";
export const INTRANET_NAME = `intranet.${CORP_DOMAIN}`;

/** corp's own resolver on the corp service address: what the tunnel's DNS points at while connected. */
export async function startCorpDns(topo: LabTopology, labDir: string): Promise<number> {
  const dir = join(labDir, "corp");
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, "dnsmasq.conf");
  const stdout = join(labDir, "logs", "corp-dns.stdout");
  writeFileSync(
    conf,
    [
      "no-resolv",
      "no-hosts",
      "no-poll",
      "bind-interfaces",
      `listen-address=${topo.corp.address}`,
      "port=53",
      `local=/${CORP_DOMAIN}/`,
      `log-facility=${join(labDir, "logs", "corp-dns.log")}`,
      "log-queries",
      `host-record=${INTRANET_NAME},${topo.corp.address}`,
      "",
    ].join("\n"),
  );
  const pid = spawnDaemon(
    inNs(topo.corp.ns, ["dnsmasq", "--keep-in-foreground", `--conf-file=${conf}`, "--pid-file="]),
    { logFile: stdout },
  );
  await waitFor(
    "corp's dnsmasq to listen",
    async () => {
      if (!isAlive(pid))
        throw new Error(`corp's dnsmasq exited during start-up:\n${readIfExists(stdout).slice(-2000)}`);
      const r = await run("ip", ["netns", "exec", topo.corp.ns, "ss", "-Hlun", "sport = :53"]);
      return r.stdout.trim() !== "";
    },
    { timeoutMs: DNSMASQ_READY_TIMEOUT_MS },
  );
  return pid;
}

/** Names the lab's DNS answers with addresses no gateway may have: an intranet host and loopback. */
export const HOSTILE_NAMES: Readonly<Record<string, string>> = {
  [`intranet-gw.${DOMAIN}`]: "198.19.0.1",
  [`loopback-gw.${DOMAIN}`]: "127.0.0.1",
};

/** `listenAddress`: where this resolver answers (the lab's DNS by default; the mobile network runs a second one). */
export function dnsmasqConf(topo: LabTopology, logFile: string, listenAddress: string = topo.dns.address): string {
  const lines = [
    "# Authoritative answers for the lab's gateway names; nothing is forwarded anywhere.",
    "no-resolv",
    "no-hosts",
    "no-poll",
    "bind-interfaces",
    `listen-address=${listenAddress}`,
    "port=53",
    `local=/${DOMAIN}/`,
    `log-facility=${logFile}`,
    "log-queries",
  ];
  for (const g of topo.gateways) {
    // One host-record with both families: dnsmasq answers A and AAAA queries for the name.
    lines.push(`host-record=${g.hostname},${g.address},${g.address6}`);
    const weight = 10;
    lines.push(`srv-host=${SRV_NAMES.wireguard},${g.hostname},${PORTS.wireguard},${g.priority},${weight}`);
    lines.push(`srv-host=${SRV_NAMES.ikev2},${g.hostname},${PORTS.ike},${g.priority},${weight}`);
    lines.push(`srv-host=${SRV_NAMES.anyconnect},${g.hostname},${PORTS.anyconnect},${g.priority},${weight}`);
  }
  lines.push(`host-record=collector.${DOMAIN},${topo.collector.address}`);
  // A hostile network's answers, for the tests that show detourd refuses them as gateway addresses.
  for (const [name, address] of Object.entries(HOSTILE_NAMES)) lines.push(`host-record=${name},${address}`);
  return lines.join("\n") + "\n";
}

export async function startDns(topo: LabTopology, labDir: string): Promise<number> {
  const dir = join(labDir, "dns");
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, "dnsmasq.conf");
  const log = join(labDir, "logs", "dnsmasq.log");
  writeFileSync(conf, dnsmasqConf(topo, log));
  const pid = spawnDaemon(
    inNs(topo.dns.ns, ["dnsmasq", "--keep-in-foreground", `--conf-file=${conf}`, "--pid-file="]),
    { logFile: join(labDir, "logs", "dnsmasq.stdout") },
  );
  await waitFor(
    "dnsmasq to listen",
    async () => {
      if (!isAlive(pid))
        throw new Error(
          `dnsmasq exited during start-up:\n${readIfExists(join(labDir, "logs", "dnsmasq.stdout")).slice(-2000)}`,
        );
      const r = await run("ip", ["netns", "exec", topo.dns.ns, "ss", "-Hlun", "sport = :53"]);
      return r.stdout.trim() !== "";
    },
    { timeoutMs: DNSMASQ_READY_TIMEOUT_MS },
  );
  // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf for that namespace only.
  mkdirSync(`/etc/netns/${topo.client.ns}`, { recursive: true });
  writeFileSync(`/etc/netns/${topo.client.ns}/resolv.conf`, `nameserver ${topo.dns.address}\nsearch ${DOMAIN}\n`);
  return pid;
}
