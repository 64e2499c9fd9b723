/**
 * An SFTP drop for the lab: Debian's OpenSSH server (/usr/sbin/sshd) in the lab's collector namespace on port
 * 2222, with its own config, host key and authorized_keys in the lab's run folder (nothing of the host's sshd is
 * used), key authentication only and internal-sftp forced. Started and stopped by PID.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { inNs, isAlive, readIfExists, runOk, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { labDirOf } from "./lab.ts";
import { labTopology } from "./topology.ts";

export const SFTP_PORT = 2222;
/** sshd reads its config and host key and listens within milliseconds; a loaded CI machine gets ten seconds. */
const SSHD_READY_TIMEOUT_MS = 10_000;
/** sshd exits at once on SIGTERM; the grace only matters if it is stuck. */
const SSHD_STOP_GRACE_MS = 3000;
/** sshd's privilege-separation folder; Debian's unit creates it at boot, a host without the service lacks it. */
const PRIVSEP_DIR = "/run/sshd";

export interface SftpDrop {
  pid: number;
  host: string;
  port: number;
  user: string;
  /** Client private key file (mode 0600) for the agent's SecretRef. */
  privateKeyFile: string;
  hostKeySha256: string;
  /** Folder the uploads land in (absolute; the same path on the server, which shares the filesystem). */
  dropDir: string;
  log: string;
  createdPrivsep: boolean;
}

function sftpDir(id: string): string {
  return join(labDirOf(id), "sftp");
}

export function sshdConfig(dir: string, listen: string): string {
  return [
    `Port ${SFTP_PORT}`,
    `ListenAddress ${listen}`,
    `HostKey ${join(dir, "host_ed25519")}`,
    `PidFile none`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "AuthenticationMethods publickey",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PermitRootLogin prohibit-password",
    "UsePAM no",
    // The run folder lives under /run/detour-lab, which sshd's owner checks need not know about.
    "StrictModes no",
    "Subsystem sftp internal-sftp",
    "ForceCommand internal-sftp",
    "AllowTcpForwarding no",
    "AllowAgentForwarding no",
    "X11Forwarding no",
    "PermitTTY no",
    "LogLevel VERBOSE",
    "",
  ].join("\n");
}

/** Starts sshd in detour-<id>-collector; the lab must be up. */
export async function startSftpDrop(id: string): Promise<SftpDrop> {
  const topo = labTopology(id);
  const dir = sftpDir(id);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const dropDir = join(dir, "drop");
  mkdirSync(dropDir, { mode: 0o700 });
  await runOk("ssh-keygen", [
    "-q",
    "-t",
    "ed25519",
    "-N",
    "",
    "-C",
    `detour-lab-${id}-host`,
    "-f",
    join(dir, "host_ed25519"),
  ]);
  await runOk("ssh-keygen", [
    "-q",
    "-t",
    "ed25519",
    "-N",
    "",
    "-C",
    `detour-lab-${id}-client`,
    "-f",
    join(dir, "client_ed25519"),
  ]);
  writeFileSync(
    join(dir, "authorized_keys"),
    `restrict ${readFileSync(join(dir, "client_ed25519.pub"), "utf8").trim()}\n`,
    { mode: 0o600 },
  );
  const fp =
    (await runOk("ssh-keygen", ["-l", "-E", "sha256", "-f", join(dir, "host_ed25519.pub")])).split(/\s+/)[1] ?? "";
  if (!fp.startsWith("SHA256:")) throw new Error(`ssh-keygen printed no SHA-256 fingerprint: ${fp}`);
  const conf = join(dir, "sshd_config");
  writeFileSync(conf, sshdConfig(dir, topo.collector.address), { mode: 0o600 });
  const createdPrivsep = !existsSync(PRIVSEP_DIR);
  if (createdPrivsep) mkdirSync(PRIVSEP_DIR, { mode: 0o755 });
  await runOk("/usr/sbin/sshd", ["-t", "-f", conf]);
  const log = join(dir, "sshd.log");
  const pid = spawnDaemon(inNs(topo.collector.ns, ["/usr/sbin/sshd", "-D", "-e", "-f", conf]), { logFile: log });
  const drop: SftpDrop = {
    pid,
    host: topo.collector.address,
    port: SFTP_PORT,
    user: "root",
    privateKeyFile: join(dir, "client_ed25519"),
    hostKeySha256: fp,
    dropDir,
    log,
    createdPrivsep,
  };
  writeFileSync(join(dir, "state.json"), JSON.stringify(drop) + "\n", { mode: 0o600 });
  try {
    await waitFor(
      "sshd to listen",
      () => {
        if (!isAlive(pid)) throw new Error(`sshd exited during start-up:\n${readIfExists(log).slice(-2000)}`);
        return readIfExists(log).includes(`Server listening on ${topo.collector.address} port ${SFTP_PORT}`);
      },
      { timeoutMs: SSHD_READY_TIMEOUT_MS, intervalMs: 50 },
    );
  } catch (e) {
    await stopSftpDrop(id);
    throw e;
  }
  return drop;
}

/** Stops sshd by its PID and removes the drop's folder (and /run/sshd if this module created it). */
export async function stopSftpDrop(id: string): Promise<boolean> {
  const dir = sftpDir(id);
  const statePath = join(dir, "state.json");
  if (!existsSync(statePath)) return false;
  const drop = JSON.parse(readFileSync(statePath, "utf8")) as SftpDrop;
  if (isAlive(drop.pid)) await stopPids([drop.pid], "SIGTERM", SSHD_STOP_GRACE_MS);
  if (drop.createdPrivsep && existsSync(PRIVSEP_DIR) && readdirSync(PRIVSEP_DIR).length === 0)
    rmSync(PRIVSEP_DIR, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
  return true;
}
