/** Runs detourd in the lab's client namespace with the lab's client config: `npm run lab -- agent start|stop|logs`. */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { inNs, isAlive, readIfExists, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { loadState, labDirOf } from "./lab.ts";
import { daemonBundle } from "./daemon-bundle.ts";
import { REPO_ROOT } from "./services.ts";
import { labTopology } from "./topology.ts";

/** detourd opens its socket within a second here (through tsx, where a developer asks for it); CI machines are slower. */
const AGENT_READY_TIMEOUT_MS = 20_000;
/** The socket's appearance is polled this often: a cheap stat, and start-up times (bench footprint) stay exact. */
const AGENT_READY_POLL_MS = 10;
/** The gid detourd runs as in the lab: the kill switch binds its underlay allowances to it. */
export const LAB_OWN_GID = 64950;
/** detourd disconnects (engines send BYE/DELETE) before it exits; this is its whole budget. */
const AGENT_STOP_GRACE_MS = 8_000;

export interface AgentInfo {
  pid: number;
  socket: string;
  log: string;
  workDir: string;
}

export function agentPaths(id: string): { socket: string; log: string; workDir: string; pidFile: string } {
  const dir = labDirOf(id);
  return {
    socket: join(dir, "detourd.sock"),
    log: join(dir, "logs", "detourd.log"),
    workDir: join(dir, "detourd"),
    pidFile: join(dir, "detourd.pid"),
  };
}

export function agentRunning(id: string): AgentInfo | null {
  const p = agentPaths(id);
  if (!existsSync(p.pidFile)) return null;
  const pid = Number(readFileSync(p.pidFile, "utf8").trim());
  return Number.isInteger(pid) && isAlive(pid) ? { pid, socket: p.socket, log: p.log, workDir: p.workDir } : null;
}

/** Starts detourd in the client namespace and waits until its control socket answers to connect attempts. */
export async function agentStart(
  id: string,
  opts: {
    connect?: boolean;
    extraArgs?: string[];
    keepWorkDir?: boolean;
    /**
     * Runs this esbuild bundle of detourd (scripts/build-daemon.mjs). Default: the bundle of the sources as they
     * are (daemon-bundle.ts), as detourd ships.
     */
    bundle?: string;
    /** Runs bin/detourd through the tsx loader instead (development only; also DETOUR_LAB_TSX=1). */
    tsx?: boolean;
    /** Another configuration file than the lab's client.json (a bench's variant of it). */
    config?: string;
  } = {},
): Promise<AgentInfo> {
  const state = loadState(id);
  const topo = labTopology(id);
  const running = agentRunning(id);
  if (running !== null)
    throw new Error(
      `detourd already runs in lab "${id}" (pid ${running.pid}); run \`npm run lab -- agent stop\` first`,
    );
  const p = agentPaths(id);
  // A restart after a crash keeps the work folder, as a service manager would: what the dead daemon left is there.
  if (opts.keepWorkDir !== true) rmSync(p.workDir, { recursive: true, force: true });
  // A socket file left by an earlier detourd would look like this one's open socket before it listens.
  rmSync(p.socket, { force: true });
  mkdirSync(p.workDir, { recursive: true, mode: 0o700 });
  const tsx = opts.tsx ?? (opts.bundle === undefined && process.env.DETOUR_LAB_TSX === "1");
  const bundle = tsx ? null : (opts.bundle ?? (await daemonBundle()).detourd);
  const argv = [
    ...(bundle === null
      ? [join(REPO_ROOT, "bin", "detourd")]
      : // The memory settings the systemd unit and bin/detourd give detourd (resources/systemd/detourd.service).
        ["env", "MALLOC_ARENA_MAX=2", process.execPath, "--max-semi-space-size=1", "--optimize-for-size", bundle]),
    "--config",
    opts.config ?? state.clientConfig,
    "--socket",
    p.socket,
    "--work-dir",
    p.workDir,
    "--state-dir",
    join(labDirOf(id), "detourd-state"),
    // wireguard-go's socket path is host-wide: the lab id keeps two labs' daemons apart (and lab down cleans d<id>-*)
    "--ifname-prefix",
    `d${id}`,
    // detourd's own group (the package creates "detour-net"; the lab uses a gid no file or user has).
    "--own-group",
    String(LAB_OWN_GID),
    ...(opts.connect === true ? ["--connect"] : []),
    ...(opts.extraArgs ?? []),
  ];
  const pid = spawnDaemon(inNs(topo.client.ns, argv), { logFile: p.log, cwd: REPO_ROOT });
  writeFileSync(p.pidFile, `${pid}\n`);
  await waitFor(
    "detourd's control socket",
    () => {
      if (!isAlive(pid)) throw new Error(`detourd exited during start-up:\n${readIfExists(p.log).slice(-3000)}`);
      // The file appears at bind, a moment before the socket listens: only an accepted connection says it is open.
      return existsSync(p.socket) && accepts(p.socket);
    },
    { timeoutMs: AGENT_READY_TIMEOUT_MS, intervalMs: AGENT_READY_POLL_MS },
  );
  return { pid, socket: p.socket, log: p.log, workDir: p.workDir };
}

/** Whether a unix socket accepts a connection now (closed again at once). */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => {
      c.destroy();
      resolve(false);
    });
  });
}

/** SIGTERM (detourd disconnects cleanly), SIGKILL after the grace period; by PID. */
export async function agentStop(id: string): Promise<boolean> {
  const running = agentRunning(id);
  const p = agentPaths(id);
  if (running !== null) await stopPids([running.pid], "SIGTERM", AGENT_STOP_GRACE_MS);
  rmSync(p.pidFile, { force: true });
  return running !== null;
}

/**
 * Copies detourd's log into `artifactsDir` as detourd.log (if there is one): it outlives the lab, which `down`
 * removes with its folder, so a test's after() keeps what detourd did.
 */
export function keepAgentLog(id: string, artifactsDir: string): void {
  const log = agentPaths(id).log;
  if (!existsSync(log)) return;
  mkdirSync(artifactsDir, { recursive: true });
  copyFileSync(log, join(artifactsDir, "detourd.log"));
}

export function agentLogs(id: string, lines = 80): string {
  return readIfExists(agentPaths(id).log)
    .split("\n")
    .slice(-lines - 1)
    .join("\n");
}
