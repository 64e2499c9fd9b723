/** peerUidOf against real connections: this process (root) and a child running as user nobody. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { parsePeerCred, peerUidOf } from "./peer-cred.linux.ts";

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

test("the-helpers-answer-is-parsed-strictly", () => {
  assert.deepEqual(parsePeerCred("2544 0 0\n"), { pid: 2544, uid: 0, gid: 0 });
  assert.deepEqual(parsePeerCred("17 65534 65534"), { pid: 17, uid: 65534, gid: 65534 });
  for (const bad of ["", "0 0", "a b c", "1 2 3\n4 5 6", "1 -2 3"]) assert.equal(parsePeerCred(bad), null, bad);
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
      const ours = accepted[0] as Socket;
      assert.equal(await peerUidOf(ours), 0);
      // The lookup lends the socket to a helper for a moment; it still carries data both ways afterwards.
      const echoed = new Promise<string>((resolve) => {
        mine?.once("data", (d: Buffer) => {
          resolve(d.toString());
        });
      });
      ours.once("data", (d: Buffer) => ours.write(d));
      mine.write("ping");
      assert.equal(await echoed, "ping");
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
