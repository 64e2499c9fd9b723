/**
 * The lab as a library: bring it up, take it down (also after a crash), report status, impair the network,
 * kill and restore gateways, and run commands in its namespaces. The CLI (cli.ts) and tests both use this.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildClientConfig, writeClientConfig } from "./client-config.ts";
import { gatewayCertificate, ocservPasswordFile, randomSecret, wireGuardKeyPair, writeSecret } from "./credentials.ts";
import { collectorTokens, collectorUrl, startCollector } from "./collector.ts";
import { isAlive, stopPids } from "./exec.ts";
import {
  GATEWAY_ENGINES,
  startGatewayEngine,
  stopGatewayEngine,
  writeGatewayConfigs,
  type GatewayEngine,
  type GatewaySecrets,
  type IkeLifetimes,
} from "./gateway-engines.ts";
import { applyDistances, distanceStatus, type DistancePids, type DistanceStatus } from "./distance.ts";
import { applyImpairments, describeImpairment, validateSpec, type Impairment, type ImpairmentSpec } from "./impair.ts";
import { createNetwork, destroyNamespaces, enableFullTunnelGateways, listNamespaces } from "./netns.ts";
import { assertLabCanRun } from "./preflight.ts";
import { REPO_ROOT, startCorp, startCorpDns, startDns } from "./services.ts";
import {
  cgroupLeftovers,
  freezeClient,
  moveClient,
  removeClientCgroup,
  startMobileDns,
  thawClient,
  thawForTeardown,
  validateGapMs,
  validateSleepSeconds,
  type Frozen,
  type MoveReport,
} from "./roam.ts";
import {
  DEFAULT_NETWORK,
  gatewayByName,
  labNamespaces,
  labTopology,
  namespaceOf,
  networkByName,
  type DistanceProfile,
  type LabTopology,
  type NetworkName,
  type WifiShape,
} from "./topology.ts";

export const DEFAULT_LAB_ID = "lab";
/** Root of all lab run folders: tmpfs, root-only, gone at reboot like the namespaces themselves. */
export const LAB_ROOT = process.env.DETOUR_LAB_ROOT ?? "/run/detour-lab";

export function labDirOf(id: string): string {
  return join(LAB_ROOT, id);
}

/**
 * How a lab is built. `distance`: "user" gives each gateway the round trip users have to it (see topology.ts),
 * "none" a 0 ms world for the benchmarks that compare against baselines. `tunnel`: which protected networks the
 * client configuration asks for, the corp network only ("split") or everything ("full"). `wifi`: the client on the
 * lab's router directly ("direct") or behind a home router's NAT ("nat", what the roaming tests and bench use, so
 * that both of the client's networks are NATed).
 */
export interface UpOptions {
  distance?: DistanceProfile;
  tunnel?: "split" | "full";
  wifi?: WifiShape;
  /** Short IKEv2 lifetimes on every gateway (see gateway-engines.ts); null keeps strongSwan's defaults. */
  ikeLifetimes?: IkeLifetimes | null;
}

export interface LabState {
  id: string;
  /** The options the lab was built with, defaults filled in. */
  options: Required<UpOptions>;
  labDir: string;
  createdAt: string;
  upMs: number;
  clientConfig: string;
  secrets: {
    clientWgPrivateKeyFile: string;
    clientWgPublicKey: string;
    pskFile: string;
    passwordFile: string;
    gateways: Record<string, GatewaySecrets & { wgPublicKey: string; tlsPin: string }>;
  };
  pids: {
    corp: number;
    corpDns: number;
    dns: number;
    /** The mobile network's resolver on its router (0 until started; absent in a lab from before it existed). */
    mobileDns?: number;
    /** The telemetry collector in the collector namespace (0 until started). */
    collector?: number;
    gateways: Record<string, Record<GatewayEngine, number | null>>;
    /** The router's delayqs, one per delay impairment. */
    delayq: number[];
    /** The delayqs that put each gateway at its distance (in the gateway's namespace); empty for distance "none". */
    distance: DistancePids;
  };
  impairments: Impairment[];
  nextImpairment: number;
  /** The network the client is on (absent: "wifi", where `up` puts it; null: between networks). */
  network?: NetworkName | null;
  /** The client namespace while it sleeps (frozen); absent or null while awake. */
  asleep?: Frozen | null;
}

function statePath(id: string): string {
  return join(labDirOf(id), "state.json");
}

export function loadState(id: string): LabState {
  const p = statePath(id);
  if (!existsSync(p)) throw new Error(`lab "${id}" is not up (no ${p}); run \`npm run lab -- up\` first`);
  return JSON.parse(readFileSync(p, "utf8")) as LabState;
}

function saveState(s: LabState): void {
  writeFileSync(statePath(s.id), JSON.stringify(s, null, 2) + "\n", { mode: 0o600 });
}

export function readSecret(path: string): string {
  return readFileSync(path, "utf8").trim();
}

/**
 * Creates the whole lab: namespaces and links, per-run credentials, the three engines on every gateway, corp,
 * DNS, an empty impairment table and the gateways' distances, then writes the client config. On any failure it
 * removes what it made.
 */
export async function up(id = DEFAULT_LAB_ID, opts: UpOptions = {}): Promise<LabState> {
  assertLabCanRun();
  const options: Required<UpOptions> = {
    distance: opts.distance ?? "user",
    tunnel: opts.tunnel ?? "split",
    wifi: opts.wifi ?? "direct",
    ikeLifetimes: opts.ikeLifetimes ?? null,
  };
  const topo = labTopology(id, { wifi: options.wifi });
  const labDir = labDirOf(id);
  if (existsSync(statePath(id)) && (await listNamespaces(topo.prefix)).length > 0) {
    throw new Error(`lab "${id}" is already up; run \`npm run lab -- down\` first`);
  }
  await down(id); // leftovers of a crashed run
  const t0 = performance.now();
  try {
    mkdirSync(LAB_ROOT, { recursive: true, mode: 0o711 });
    mkdirSync(labDir, { recursive: true, mode: 0o711 });
    mkdirSync(join(labDir, "logs"), { recursive: true, mode: 0o700 });
    mkdirSync(join(labDir, "engines"), { recursive: true, mode: 0o700 });
    const secretsDir = join(labDir, "secrets");
    mkdirSync(secretsDir, { recursive: true, mode: 0o700 });

    await createNetwork(topo);
    if (options.tunnel === "full") await enableFullTunnelGateways(topo);

    const clientWg = wireGuardKeyPair();
    const clientWgPrivateKeyFile = writeSecret(join(secretsDir, "client-wg.key"), clientWg.privateKey + "\n");
    const psk = randomSecret(24);
    const pskFile = writeSecret(join(secretsDir, "ike.psk"), psk + "\n");
    const password = randomSecret(12);
    const passwordFile = writeSecret(join(secretsDir, "anyconnect.password"), password + "\n");
    const ocpasswdFile = join(secretsDir, "ocpasswd");
    await ocservPasswordFile(ocpasswdFile, topo.anyconnectUser, password);

    const gwSecrets: LabState["secrets"]["gateways"] = {};
    await Promise.all(
      topo.gateways.map(async (g) => {
        const kp = wireGuardKeyPair();
        const cert = await gatewayCertificate(join(labDir, g.name, "tls"), g);
        gwSecrets[g.name] = {
          wgPrivateKeyFile: writeSecret(join(secretsDir, `${g.name}-wg.key`), kp.privateKey + "\n"),
          wgPublicKey: kp.publicKey,
          clientWgPublicKey: clientWg.publicKey,
          pskFile,
          psk,
          certFile: cert.certFile,
          keyFile: cert.keyFile,
          tlsPin: cert.pin,
          ocpasswdFile,
        };
      }),
    );

    const state: LabState = {
      id,
      options,
      labDir,
      createdAt: new Date().toISOString(),
      upMs: 0,
      clientConfig: join(labDir, "client.json"),
      secrets: {
        clientWgPrivateKeyFile,
        clientWgPublicKey: clientWg.publicKey,
        pskFile,
        passwordFile,
        gateways: gwSecrets,
      },
      pids: { corp: 0, corpDns: 0, dns: 0, gateways: {}, delayq: [], distance: {} },
      impairments: [],
      nextImpairment: 1,
    };
    // The state file is written before anything starts, so `down` finds every PID even if `up` dies midway.
    saveState(state);

    const services = Promise.all([
      startCorp(topo, labDir),
      startDns(topo, labDir),
      startCorpDns(topo, labDir),
      startCollector(topo, labDir),
      startMobileDns(topo, labDir),
    ]);
    await Promise.all(
      topo.gateways.map(async (g) => {
        const secrets = gwSecrets[g.name];
        if (secrets === undefined) throw new Error(`no secrets for ${g.name}`);
        writeGatewayConfigs(topo, labDir, g, secrets, options.tunnel, options.ikeLifetimes);
        const pids: Record<GatewayEngine, number | null> = { wireguard: null, ikev2: null, anyconnect: null };
        for (const e of GATEWAY_ENGINES) pids[e] = await startGatewayEngine(e, topo, labDir, g, secrets);
        state.pids.gateways[g.name] = pids;
        saveState(state);
      }),
    );
    const [corpPid, dnsPid, corpDnsPid, collectorPid, mobileDnsPid] = await services;
    state.pids.mobileDns = mobileDnsPid;
    state.pids.corp = corpPid;
    state.pids.dns = dnsPid;
    state.pids.corpDns = corpDnsPid;
    state.pids.collector = collectorPid;
    state.pids.delayq = await applyImpairments(topo, labDir, [], []);
    state.pids.distance = await applyDistances(topo, labDir, options.distance);

    const telemetryTokenFile = writeSecret(join(labDir, "telemetry-token"), collectorTokens(labDir).ingest);
    writeClientConfig(
      state.clientConfig,
      buildClientConfig(
        topo,
        {
          wgPrivateKeyFile: clientWgPrivateKeyFile,
          telemetry: { tokenFile: telemetryTokenFile, endpoint: collectorUrl(topo) },
          pskFile,
          passwordFile,
          gateways: Object.fromEntries(
            Object.entries(gwSecrets).map(([n, s]) => [n, { wgPublicKey: s.wgPublicKey, tlsPin: s.tlsPin }]),
          ),
        },
        options.tunnel,
      ),
    );
    state.upMs = Math.round(performance.now() - t0);
    saveState(state);
    return state;
  } catch (e) {
    await down(id).catch(() => undefined);
    throw e;
  }
}

/** What `down` found and removed. */
export interface DownReport {
  namespaces: string[];
  sockets: string[];
  labDir: boolean;
  /** The cgroup the client namespace was frozen in, if a sleep made one. */
  cgroups: string[];
}

/**
 * Removes everything of the lab: every process in its namespaces (orderly first, then SIGKILL), the namespaces
 * with their links and TUN devices, wireguard-go sockets, per-namespace resolv.conf and the run folder.
 * Idempotent, and needs no state, so it also cleans up after `kill -9` of every lab process.
 */
export async function down(id = DEFAULT_LAB_ID): Promise<DownReport> {
  const topo = labTopology(id);
  // A sleeping client's processes only take the orderly SIGTERM once thawed.
  if ((await listNamespaces(topo.prefix)).includes(topo.client.ns)) await thawForTeardown(topo);
  const namespaces = await destroyNamespaces(topo.prefix);
  const cgroups = await removeClientCgroup(topo);
  const sockets: string[] = [];
  for (const f of safeReaddir("/run/wireguard")) {
    if (isLabSocket(f, id)) {
      rmSync(join("/run/wireguard", f), { force: true });
      sockets.push(join("/run/wireguard", f));
    }
  }
  for (const d of safeReaddir("/etc/netns")) {
    if (d.startsWith(topo.prefix)) rmSync(join("/etc/netns", d), { recursive: true, force: true });
  }
  const labDir = labDirOf(id);
  const hadDir = existsSync(labDir);
  rmSync(labDir, { recursive: true, force: true });
  return { namespaces, sockets, labDir: hadDir, cgroups };
}

/**
 * wireguard-go sockets of this lab: gateways (wg-<id>-*), plain selftest clients (wc-<id>-*) and Detour's
 * own drivers under test (d<id>-*); a killed run leaves them behind.
 */
function isLabSocket(file: string, id: string): boolean {
  return [`wg-${id}-`, `wc-${id}-`, `d${id}-`].some((p) => file.startsWith(p));
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Anything of lab `id` still on the host; empty means fully clean. */
export async function leftovers(id = DEFAULT_LAB_ID): Promise<string[]> {
  const topo = labTopology(id);
  const out: string[] = [];
  for (const ns of await listNamespaces(topo.prefix)) out.push(`namespace ${ns}`);
  for (const f of safeReaddir("/run/wireguard")) if (isLabSocket(f, id)) out.push(`socket /run/wireguard/${f}`);
  for (const d of safeReaddir("/etc/netns")) if (d.startsWith(topo.prefix)) out.push(`folder /etc/netns/${d}`);
  if (existsSync(labDirOf(id))) out.push(`folder ${labDirOf(id)}`);
  out.push(...cgroupLeftovers(topo));
  const marker = labDirOf(id);
  for (const p of safeReaddir("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    let cmd = "";
    try {
      cmd = readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ");
    } catch {
      continue;
    }
    if ((cmd.includes(marker + "/") || cmd.includes(topo.prefix)) && isAlive(Number(p)))
      out.push(`process ${p}: ${cmd.trim().slice(0, 160)}`);
  }
  return out;
}

export interface LabStatus {
  id: string;
  up: boolean;
  labDir: string;
  upMs?: number;
  /** What the client configuration protects: corp only ("split") or everything ("full"). */
  tunnel?: "split" | "full";
  clientConfig?: string;
  /** The wifi network's shape (absent while the lab is down). */
  wifi?: WifiShape;
  /** The network the client is on (null: between networks); absent while the lab is down. */
  network?: NetworkName | null;
  /** Since when (epoch ms) the client namespace sleeps, and how it was frozen; null while awake. */
  asleep?: { since: number; method: Frozen["method"]; processes: number } | null;
  namespaces: { name: string; role: string; exists: boolean }[];
  engines: { gateway: string; engine: GatewayEngine; pid: number | null; alive: boolean }[];
  services: { name: string; pid: number; alive: boolean }[];
  gateways: {
    name: string;
    hostname: string;
    address: string;
    address6: string;
    priority: number;
    region: string;
    wireguardPublicKey: string;
    ikeId: string;
    tlsPin: string;
  }[];
  addresses: Record<string, string>;
  /** The distance profile the lab was built with (absent while it is down). */
  distance?: DistanceProfile;
  /** Each gateway's round trip from the client and the delayqs that make it; empty for distance "none". */
  distances: DistanceStatus[];
  impairments: (Impairment & { description: string })[];
}

export async function status(id = DEFAULT_LAB_ID): Promise<LabStatus> {
  const topo = topologyOf(id);
  const existing = new Set(await listNamespaces(topo.prefix));
  const namespaces = labNamespaces(topo).map(([role, name]) => ({ name, role, exists: existing.has(name) }));
  let state: LabState | undefined;
  try {
    state = loadState(id);
  } catch {
    state = undefined;
  }
  const base: LabStatus = {
    id,
    up: state !== undefined && namespaces.every((n) => n.exists),
    labDir: labDirOf(id),
    namespaces,
    engines: [],
    services: [],
    gateways: [],
    addresses: {
      client: topo.client.address,
      dns: topo.dns.address,
      collector: topo.collector.address,
      corp: topo.corp.address,
      ...Object.fromEntries(topo.gateways.map((g) => [g.name, g.address])),
      client6: topo.client.address6,
      wifiPublic: topo.networks.wifi.publicAddress,
      mobileClient: topo.networks.mobile.address,
      mobilePublic: topo.networks.mobile.publicAddress,
      mobileResolver: topo.networks.mobile.resolver,
      dns6: topo.dns.address6,
      ...Object.fromEntries(topo.gateways.map((g) => [`${g.name}6`, g.address6])),
    },
    distances: [],
    impairments: [],
  };
  if (state === undefined) return base;
  const s = state;
  return {
    ...base,
    upMs: s.upMs,
    // A state file from before the option existed describes a split-tunnel lab.
    tunnel: (s.options as Partial<LabState["options"]> | undefined)?.tunnel ?? "split",
    wifi: topo.wifiShape,
    clientConfig: s.clientConfig,
    network: s.network === undefined ? DEFAULT_NETWORK : s.network,
    asleep:
      s.asleep === undefined || s.asleep === null
        ? null
        : { since: s.asleep.at, method: s.asleep.method, processes: s.asleep.pids.length },
    engines: topo.gateways.flatMap((g) =>
      GATEWAY_ENGINES.map((e) => {
        const pid = s.pids.gateways[g.name]?.[e] ?? null;
        return { gateway: g.name, engine: e, pid, alive: pid !== null && isAlive(pid) };
      }),
    ),
    services: [
      { name: "corp", pid: s.pids.corp, alive: s.pids.corp > 0 && isAlive(s.pids.corp) },
      {
        name: "mobile-dns",
        pid: s.pids.mobileDns ?? 0,
        alive: (s.pids.mobileDns ?? 0) > 0 && isAlive(s.pids.mobileDns ?? 0),
      },
      { name: "dns", pid: s.pids.dns, alive: s.pids.dns > 0 && isAlive(s.pids.dns) },
      { name: "corp-dns", pid: s.pids.corpDns, alive: s.pids.corpDns > 0 && isAlive(s.pids.corpDns) },
      {
        name: "collector",
        pid: s.pids.collector ?? 0,
        alive: (s.pids.collector ?? 0) > 0 && isAlive(s.pids.collector ?? 0),
      },
      ...s.pids.delayq.map((p) => ({ name: "delayq", pid: p, alive: isAlive(p) })),
    ],
    gateways: topo.gateways.map((g) => ({
      name: g.name,
      hostname: g.hostname,
      address: g.address,
      address6: g.address6,
      priority: g.priority,
      region: g.region,
      wireguardPublicKey: s.secrets.gateways[g.name]?.wgPublicKey ?? "",
      ikeId: g.ikev2.id,
      tlsPin: s.secrets.gateways[g.name]?.tlsPin ?? "",
    })),
    distance: s.options.distance,
    distances: distanceStatus(topo, s.options.distance, s.pids.distance),
    impairments: s.impairments.map((i) => ({ ...i, description: describeImpairment(i) })),
  };
}

async function setImpairments(state: LabState, impairments: Impairment[]): Promise<void> {
  const topo = labTopology(state.id);
  state.pids.delayq = await applyImpairments(topo, state.labDir, impairments, state.pids.delayq);
  state.impairments = impairments;
  saveState(state);
}

/** Adds one impairment; returns it with its id (used to lift it again). */
export async function impair(spec: ImpairmentSpec, id = DEFAULT_LAB_ID): Promise<Impairment> {
  const state = loadState(id);
  const imp: Impairment = { ...validateSpec(spec), id: `i${state.nextImpairment}` };
  state.nextImpairment += 1;
  await setImpairments(state, [...state.impairments, imp]);
  return imp;
}

/** Lifts one impairment by id. */
export async function lift(impairmentId: string, id = DEFAULT_LAB_ID): Promise<void> {
  const state = loadState(id);
  if (!state.impairments.some((i) => i.id === impairmentId)) {
    throw new Error(
      `no impairment "${impairmentId}"; active: ${state.impairments.map((i) => i.id).join(", ") || "none"}`,
    );
  }
  await setImpairments(
    state,
    state.impairments.filter((i) => i.id !== impairmentId),
  );
}

function gatewaySecrets(state: LabState, gw: string): GatewaySecrets {
  const s = state.secrets.gateways[gw];
  if (s === undefined) throw new Error(`no secrets for ${gw}`);
  return s;
}

/**
 * Kills one engine of a gateway with SIGKILL (a crash: no BYE, no DELETE), or with engine "all" the whole
 * gateway: every engine, and its link goes silent as if the machine lost power.
 */
export async function kill(gateway: string, engine: GatewayEngine | "all", id = DEFAULT_LAB_ID): Promise<void> {
  const state = loadState(id);
  const gw = gatewayByName(labTopology(id), gateway);
  const pids = state.pids.gateways[gw.name];
  if (pids === undefined) throw new Error(`no engines recorded for ${gw.name}`);
  // A power loss makes the link silent first: without the blackhole the dying gateway's kernel would reset
  // connections and answer with port-unreachable, which clients notice at once.
  if (engine === "all" && !state.impairments.some((i) => i.origin === "kill" && i.target === gw.name)) {
    const imp: Impairment = {
      kind: "block",
      target: gw.name,
      proto: "all",
      dir: "both",
      id: `i${state.nextImpairment}`,
      origin: "kill",
    };
    state.nextImpairment += 1;
    await setImpairments(state, [...state.impairments, imp]);
  }
  const engines = engine === "all" ? GATEWAY_ENGINES : [engine];
  for (const e of engines) {
    const pid = pids[e];
    if (pid !== null) await stopGatewayEngine(pid, true);
    pids[e] = null;
  }
  saveState(state);
}

/** Stops the telemetry collector (by PID); its database and tokens stay for `collectorStart`. */
export async function collectorStop(id = DEFAULT_LAB_ID): Promise<void> {
  const state = loadState(id);
  const pid = state.pids.collector ?? 0;
  if (pid > 0) await stopPids([pid]);
  state.pids.collector = 0;
  saveState(state);
}

/** Starts the collector again with the same database and tokens (after `collectorStop`). */
export async function collectorStart(id = DEFAULT_LAB_ID): Promise<void> {
  const state = loadState(id);
  if ((state.pids.collector ?? 0) > 0 && isAlive(state.pids.collector ?? 0)) return;
  state.pids.collector = await startCollector(labTopology(id), labDirOf(id));
  saveState(state);
}

/** Restarts killed engines of a gateway (same keys and config) and lifts its power-off blackhole. */
export async function restore(
  gateway: string,
  engine: GatewayEngine | "all" = "all",
  id = DEFAULT_LAB_ID,
): Promise<void> {
  const state = loadState(id);
  const topo = labTopology(id);
  const gw = gatewayByName(topo, gateway);
  const pids = state.pids.gateways[gw.name];
  if (pids === undefined) throw new Error(`no engines recorded for ${gw.name}`);
  const engines = engine === "all" ? GATEWAY_ENGINES : [engine];
  for (const e of engines) {
    const pid = pids[e];
    if (pid !== null && isAlive(pid)) continue;
    pids[e] = await startGatewayEngine(e, topo, state.labDir, gw, gatewaySecrets(state, gw.name));
    saveState(state);
  }
  if (engine === "all") {
    const rest = state.impairments.filter((i) => !(i.origin === "kill" && i.target === gw.name));
    if (rest.length !== state.impairments.length) await setImpairments(state, rest);
  }
}

/**
 * Back to a pristine lab: every impairment lifted and every killed engine restarted. The gateways' distances stay
 * (they are the lab's geography, not impairments); a distance delayq that died is started again.
 */
export async function heal(id = DEFAULT_LAB_ID): Promise<void> {
  await wake(id);
  const state = loadState(id);
  state.pids.distance = await applyDistances(
    labTopology(id),
    state.labDir,
    state.options.distance,
    state.pids.distance,
  );
  await setImpairments(state, []);
  for (const g of labTopology(id).gateways) await restore(g.name, "all", id);
}

/**
 * Runs a command in a lab namespace with the terminal attached; returns its exit code. `detour` and `detourd`
 * mean this checkout's commands, and `detour` talks to the lab's daemon.
 */
export function execIn(role: string, argv: string[], id = DEFAULT_LAB_ID): number {
  const ns = namespaceOf(labTopology(id), role);
  const [cmd, ...rest] = argv;
  if (cmd === undefined) throw new Error("exec needs a command after --");
  const resolved = cmd === "detour" || cmd === "detourd" ? [join(REPO_ROOT, "bin", cmd), ...rest] : argv;
  const env = { ...process.env, DETOUR_SOCKET: process.env.DETOUR_SOCKET ?? join(labDirOf(id), "detourd.sock") };
  const r = spawnSync("ip", ["netns", "exec", ns, ...resolved], { stdio: "inherit", env });
  if (r.error !== undefined) throw r.error;
  return r.status ?? 1;
}

/**
 * The lab's topology as it was built: the wifi shape comes from its state file (a lab that is down, or one from
 * before the option existed, has the direct wifi). A test that needs the topology before `up` names the shape it
 * will build with labTopology itself.
 */
export function topologyOf(id = DEFAULT_LAB_ID): LabTopology {
  const wifi = existsSync(statePath(id)) ? (loadState(id).options as Partial<LabState["options"]>).wifi : undefined;
  return labTopology(id, { wifi: wifi ?? "direct" });
}

/**
 * Moves the client to another network the way an OS does: the old link goes down and loses its addresses, the
 * client stays offline for `gapMs` (default 0), then the new link comes up with its addresses, default routes
 * via that network's router and, if the resolver differs, a rewritten resolv.conf (see roam.ts). Moving to the
 * network the client is on reconnects it (down, gap, up). `onOffline` runs while the client is offline.
 */
export async function move(
  network: string,
  opts: { gapMs?: number; onOffline?: () => Promise<void> | void } = {},
  id = DEFAULT_LAB_ID,
): Promise<MoveReport> {
  const topo = topologyOf(id);
  const to = networkByName(topo, network).name;
  const gapMs = validateGapMs(opts.gapMs ?? 0);
  const state = loadState(id);
  const from = state.network === undefined ? DEFAULT_NETWORK : state.network;
  // Recorded before the links change: a move that fails halfway leaves the client between networks, and says so.
  state.network = null;
  saveState(state);
  const report = await moveClient(topo, from, to, gapMs, opts.onOffline);
  state.network = to;
  saveState(state);
  return report;
}

/**
 * Puts the client to sleep: every process of its namespace (detourd, its engines, anything a test runs there) is
 * frozen until `wake`. Nothing else changes: the gateways keep running and drop the client's state on their own
 * timers (see gateway-engines.ts), the clocks keep running (see the README: no wall-clock jump).
 */
export async function freeze(id = DEFAULT_LAB_ID): Promise<Frozen> {
  const state = loadState(id);
  if (state.asleep !== undefined && state.asleep !== null) throw new Error(`the client of lab "${id}" already sleeps`);
  const frozen = await freezeClient(labTopology(id));
  state.asleep = frozen;
  saveState(state);
  return frozen;
}

/** Wakes a sleeping client (thaws what `freeze` froze); does nothing if it is awake. */
export async function wake(id = DEFAULT_LAB_ID): Promise<void> {
  const state = loadState(id);
  if (state.asleep === undefined || state.asleep === null) return;
  await thawClient(state.asleep);
  state.asleep = null;
  saveState(state);
}

/** Sleeps the client for `seconds` (freeze, wait, wake); it is woken also when the wait is cut short. */
export async function sleepClient(
  seconds: number,
  id = DEFAULT_LAB_ID,
  signal?: AbortSignal,
): Promise<{ frozen: Frozen; wokeAt: number }> {
  validateSleepSeconds(seconds);
  const frozen = await freeze(id);
  try {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, seconds * 1000);
      signal?.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      });
    });
  } finally {
    await wake(id);
  }
  return { frozen, wokeAt: Date.now() };
}
