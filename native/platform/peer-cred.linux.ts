/**
 * The uid on the other end of an accepted unix socket. Node cannot read SO_PEERCRED, so this asks the kernel's
 * socket diagnostics through `ss -xp`: our socket's inode (from /proc/self/fd) names its peer's inode, and the
 * peer's line names every process holding it; their uids come from /proc/<pid>/status. The answer is a uid only
 * when every holder has the same effective uid; anything unclear is null, which callers treat as "not root".
 */
import { execFile } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import type { Socket } from "node:net";

/** `ss` reads the kernel's table and /proc in milliseconds; 2 s means something is wrong, and the answer is null. */
const SS_TIMEOUT_MS = 2000;
/** `ss -xp` on a busy host lists some thousand sockets; 8 MiB is far above and still bounded. */
const SS_MAX_OUTPUT = 8 * 1024 * 1024;

/** The inode of a socket file descriptor of this process, from /proc/self/fd. */
function inodeOfFd(fd: number): number | null {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
    return m?.[1] === undefined ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** The file descriptor behind a net.Socket (libuv's handle exposes it on Unix). */
function fdOf(socket: Socket): number | null {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : null;
}

/** Effective uid of a process, from /proc/<pid>/status ("Uid: real effective saved fs"). */
function euidOf(pid: number): number | null {
  try {
    const m = /^Uid:\s+\d+\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] === undefined ? null : Number(m[1]);
  } catch {
    return null;
  }
}

interface SsLine {
  localInode: number;
  peerInode: number;
  pids: number[];
}

/** Parses `ss -xpnH` output: "<netid> <state> <recvq> <sendq> <local> <inode> <peer> <peer inode> [users:((...))]". */
export function parseSsUnix(text: string): SsLine[] {
  const out: SsLine[] = [];
  for (const line of text.split("\n")) {
    const m = /^\S+\s+\S+\s+\d+\s+\d+\s+\S+\s+(\d+)\s+\S+\s+(\d+)(.*)$/.exec(line.trim());
    if (m === null) continue;
    const pids = [...(m[3] ?? "").matchAll(/pid=(\d+)/g)].map((p) => Number(p[1]));
    out.push({ localInode: Number(m[1]), peerInode: Number(m[2]), pids });
  }
  return out;
}

function runSs(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "ss",
      ["-xpnH"],
      { timeout: SS_TIMEOUT_MS, maxBuffer: SS_MAX_OUTPUT, env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } },
      (err, stdout) => {
        if (err !== null) reject(new Error(`ss -xp failed: ${err.message}`));
        else resolve(stdout);
      },
    );
  });
}

/** The effective uid of the process(es) connected to this accepted unix socket, or null if it cannot be told. */
export async function peerUidOf(socket: Socket): Promise<number | null> {
  const fd = fdOf(socket);
  const inode = fd === null ? null : inodeOfFd(fd);
  if (inode === null) return null;
  const lines = parseSsUnix(await runSs());
  const ours = lines.find((l) => l.localInode === inode);
  if (ours === undefined) return null;
  const peer = lines.find((l) => l.localInode === ours.peerInode);
  if (peer === undefined || peer.pids.length === 0) return null;
  const uids = new Set(peer.pids.map(euidOf));
  if (uids.size !== 1) return null;
  const [uid] = uids;
  return uid ?? null;
}
