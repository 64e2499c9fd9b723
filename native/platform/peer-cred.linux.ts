/**
 * The uid on the other end of an accepted unix socket, from the kernel's SO_PEERCRED (the credentials the peer had
 * when it connected). Node cannot call getsockopt, so a tiny perl program (perl-base is Essential on Debian, so it
 * is always there) gets a duplicate of the socket as its fd 3 and prints the option's pid, uid and gid. Unlike a
 * /proc scan this needs no ptrace right over the peer (detourd's systemd unit bounds its capabilities) and cannot
 * be fooled by a descriptor passed on after connect(2). Anything unclear is null, which callers treat as "not root".
 */
import { spawn } from "node:child_process";
import type { Socket } from "node:net";

/** perl starts and answers in milliseconds; 2 s means something is wrong, and the answer is null. */
const PEERCRED_TIMEOUT_MS = 2000;

const PERL_PEERCRED = [
  "-MSocket",
  "-e",
  'open(my $s, "+<&=", 3) or die "fd 3: $!\\n"; my $c = getsockopt($s, SOL_SOCKET, SO_PEERCRED) or die "getsockopt: $!\\n"; my ($pid, $uid, $gid) = unpack("iII", $c); print "$pid $uid $gid\\n";',
];

/** Parses the helper's "pid uid gid" line; null unless it is exactly that. */
export function parsePeerCred(text: string): { pid: number; uid: number; gid: number } | null {
  const m = /^(-?\d+) (\d+) (\d+)\n?$/.exec(text);
  if (m === null) return null;
  return { pid: Number(m[1]), uid: Number(m[2]), gid: Number(m[3]) };
}

/** The uid of the process that connected to this accepted unix socket, or null if it cannot be told. */
export function peerUidOf(socket: Socket): Promise<number | null> {
  // The descriptor's number, not the Socket: given a stream, Node stops reading it for the child's sake.
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return Promise.resolve(null);
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn("perl", PERL_PEERCRED, {
        stdio: ["ignore", "pipe", "pipe", fd],
        env: { PATH: "/usr/bin:/bin" },
      });
    } catch {
      resolve(null);
      return;
    }
    let out = "";
    let done = false;
    const finish = (uid: number | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(uid);
    };
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      finish(null);
    }, PEERCRED_TIMEOUT_MS);
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (d: string) => {
      if (out.length < 100) out += d;
    });
    child.stderr?.resume();
    child.on("error", () => {
      finish(null);
    });
    child.on("close", (code) => {
      finish(code === 0 ? (parsePeerCred(out)?.uid ?? null) : null);
    });
  });
}
