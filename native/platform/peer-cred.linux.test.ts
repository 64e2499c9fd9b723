/** peerUidOf against real connections: this process (root) and a child running as user nobody. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parseSsUnix, peerUidOf } from "./peer-cred.linux.ts";

// Under /tmp itself (mode 1777), so that user nobody can reach the socket.
const dir = mkdtempSync("/tmp/detour-peer-");
chmodSync(dir, 0o755);
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function eventually(what: string, pred: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("ss-unix-lines-give-inodes-and-the-holding-pids", () => {
  const text = [
    'u_str ESTAB 0 0 /run/detour/detourd.sock 2572492 * 2572493 users:(("node",pid=6231,fd=29))',
    'u_str ESTAB 0 0 * 2572493 * 2572492 users:(("detour",pid=700,fd=3),("detour",pid=701,fd=3))',
    "u_str ESTAB 0 0 * 1206 * 1207",
    "garbage",
  ].join("\n");
  assert.deepEqual(parseSsUnix(text), [
    { localInode: 2572492, peerInode: 2572493, pids: [6231] },
    { localInode: 2572493, peerInode: 2572492, pids: [700, 701] },
    { localInode: 1206, peerInode: 1207, pids: [] },
  ]);
});

describe("peer uid from the kernel", () => {
  const isRoot = process.getuid?.() === 0;
  test("the-peer-uid-of-a-real-connection-is-read-for-root-and-for-another-user", { skip: !isRoot }, async () => {
    const sub = mkdtempSync(join(dir, "peer-"));
    chmodSync(sub, 0o755);
    const path = join(sub, "p.sock");
    const accepted: Socket[] = [];
    const server = createServer((c) => {
      accepted.push(c);
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    chmodSync(path, 0o666);
    let child: ReturnType<typeof spawn> | null = null;
    let mine: Socket | null = null;
    try {
      mine = createConnection(path);
      await eventually("our connection", () => accepted.length === 1);
      assert.equal(await peerUidOf(accepted[0] as Socket), 0);
      // A process of user nobody holds a connection until its stdin closes.
      child = spawn(
        "setpriv",
        [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          process.execPath,
          "-e",
          `const s=require("net").createConnection(${JSON.stringify(path)});process.stdin.on("end",()=>s.destroy());process.stdin.resume();`,
        ],
        { stdio: ["pipe", "ignore", "inherit"] },
      );
      await eventually("nobody's connection", () => accepted.length === 2, 5000);
      assert.equal(await peerUidOf(accepted[1] as Socket), 65534);
    } finally {
      child?.stdin?.end();
      if (child !== null && child.exitCode === null) {
        const c = child;
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            c.kill("SIGKILL");
            resolve();
          }, 2000);
          c.once("exit", () => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      mine?.destroy();
      for (const a of accepted) a.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    }
  });
});
