/** The UAPI client against a fake wireguard-go on a temporary unix socket: good, broken, silent and dead servers. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";
import { Secret } from "../../../main/core/secret.ts";
import { UapiError, encodeSet, type UapiErrorCode } from "./uapi-codec.ts";
import { UapiClient } from "./uapi-client.ts";

/** Short enough that the silent-server case costs little, long enough for a loaded CI machine to answer. */
const TEST_TIMEOUT_MS = 300;
/** A child node process creates its socket in well under a second; this bounds a broken one. */
const CHILD_READY_MS = 10_000;
const POLL_MS = 10;

const PRIVATE_B64 = randomBytes(32).toString("base64");
const PEER_HEX = randomBytes(32).toString("hex");
const DUMP = `private_key=${Buffer.from(PRIVATE_B64, "base64").toString("hex")}\nlisten_port=1\npublic_key=${PEER_HEX}\nrx_bytes=5\nerrno=0\n\n`;

let dir = "";
const servers: Server[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "uapi-client-"));
});
after(async () => {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) =>
          s.close(() => {
            resolve();
          }),
        ),
    ),
  );
  rmSync(dir, { recursive: true, force: true });
});

/** A fake device: `respond` gets each request as it completes (ends with a blank line) and answers on the socket. */
async function fakeDevice(
  name: string,
  respond: (request: string, sock: Socket) => void,
): Promise<{ path: string; requests: string[] }> {
  const path = join(dir, `${name}.sock`);
  const requests: string[] = [];
  const server = createServer((sock) => {
    let buf = "";
    sock.on("error", () => undefined);
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => {
      buf += d;
      if (buf.endsWith("\n\n")) {
        requests.push(buf);
        respond(buf, sock);
        buf = "";
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) =>
    server.listen(path, () => {
      resolve();
    }),
  );
  return { path, requests };
}

async function rejectsWith(p: Promise<unknown>, code: UapiErrorCode): Promise<UapiError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof UapiError, `typed error, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.ok(!e.message.includes(Buffer.from(PRIVATE_B64, "base64").toString("hex")), "no private key in the message");
    return e;
  }
  assert.fail(`expected a UapiError ${code}`);
}

describe("uapi client", () => {
  test("get-parses-the-dump-and-drops-the-private-key", async () => {
    const dev = await fakeDevice("get", (_req, sock) => sock.write(DUMP));
    const dump = await new UapiClient(dev.path).get();
    assert.equal(dev.requests[0], "get=1\n\n");
    assert.equal(dump.peers[0]?.rxBytes, 5);
    assert.equal(dump.hasPrivateKey, true);
    assert.ok(!JSON.stringify(dump).includes(PRIVATE_B64));
  });

  test("reply-split-across-writes-and-connection-kept-open", async () => {
    const dev = await fakeDevice("split", (_req, sock) => {
      sock.write(DUMP.slice(0, 10));
      setTimeout(() => sock.write(DUMP.slice(10, -1)), 20);
      setTimeout(() => sock.write("\n"), 40);
    });
    const dump = await new UapiClient(dev.path, { timeoutMs: 2000 }).get();
    assert.equal(dump.listenPort, 1);
  });

  test("set-writes-the-transaction-and-accepts-errno-0", async () => {
    const dev = await fakeDevice("set", (_req, sock) => sock.write("errno=0\n\n"));
    const tx = encodeSet({
      privateKey: new Secret(PRIVATE_B64),
      peer: {
        publicKey: Buffer.from(PEER_HEX, "hex").toString("base64"),
        endpoint: "198.18.1.2:51820",
        persistentKeepaliveSec: 25,
        allowedIps: ["198.19.0.0/24"],
      },
    });
    await new UapiClient(dev.path).set(tx);
    assert.equal(dev.requests[0], tx.reveal());
  });

  test("set-refused-by-errno-is-typed", async () => {
    const dev = await fakeDevice("errno", (_req, sock) => sock.write("errno=-22\n\n"));
    const e = await rejectsWith(new UapiClient(dev.path).set(new Secret("set=1\nbogus=1\n\n")), "errno");
    assert.equal(e.errno, -22);
  });

  test("malformed-reply", async () => {
    const dev = await fakeDevice("malformed", (_req, sock) => sock.write("hello world\n\n"));
    await rejectsWith(new UapiClient(dev.path).get(), "malformed");
  });

  test("data-after-the-reply-is-malformed", async () => {
    const dev = await fakeDevice("trailing", (_req, sock) => sock.write("errno=0\n\ngarbage"));
    await rejectsWith(new UapiClient(dev.path).get(), "malformed");
  });

  test("server-closes-mid-reply-truncated", async () => {
    const dev = await fakeDevice("truncated", (_req, sock) => sock.end(DUMP.slice(0, 50)));
    await rejectsWith(new UapiClient(dev.path).get(), "truncated");
  });

  test("oversized-reply-is-cut-off", async () => {
    const dev = await fakeDevice("big", (_req, sock) => {
      const line = `x_pad=${"a".repeat(1000)}\n`;
      for (let i = 0; i < 200 && !sock.destroyed; i++) sock.write(line);
    });
    await rejectsWith(new UapiClient(dev.path, { maxReplyBytes: 64 * 1024 }).get(), "too-large");
  });

  test("server-that-never-answers-times-out", async () => {
    const dev = await fakeDevice("silent", () => undefined);
    const t0 = Date.now();
    await rejectsWith(new UapiClient(dev.path, { timeoutMs: TEST_TIMEOUT_MS }).get(), "timeout");
    const took = Date.now() - t0;
    assert.ok(took >= TEST_TIMEOUT_MS - 20 && took < TEST_TIMEOUT_MS + 1000, `gave up after ${took} ms`);
  });

  test("deadline-shorter-than-the-timeout-wins", async () => {
    const dev = await fakeDevice("deadline", () => undefined);
    const t0 = Date.now();
    await rejectsWith(new UapiClient(dev.path, { timeoutMs: 5000 }).get({ deadlineAt: Date.now() + 100 }), "timeout");
    assert.ok(Date.now() - t0 < 1000);
    await rejectsWith(new UapiClient(dev.path).get({ deadlineAt: Date.now() - 1 }), "timeout");
  });

  test("abort-cancels", async () => {
    const dev = await fakeDevice("abort", () => undefined);
    const ac = new AbortController();
    setTimeout(() => {
      ac.abort();
    }, 50);
    await rejectsWith(new UapiClient(dev.path, { timeoutMs: 5000 }).get({ signal: ac.signal }), "cancelled");
  });

  test("missing-socket-is-no-socket", async () => {
    await rejectsWith(new UapiClient(join(dir, "absent.sock")).get(), "no-socket");
  });

  test("stale-socket-of-a-killed-process-is-refused", async () => {
    // Node unlinks its socket on close, so a SIGKILLed child is the honest way to leave one behind.
    const path = join(dir, "stale.sock");
    const child = spawn(
      process.execPath,
      ["-e", `require("node:net").createServer().listen(${JSON.stringify(path)})`],
      { stdio: "ignore" },
    );
    try {
      for (let i = 0; i < CHILD_READY_MS / POLL_MS && !existsSync(path); i++) await sleep(POLL_MS);
      assert.ok(existsSync(path), "the child created its socket");
    } finally {
      child.kill("SIGKILL");
      await new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve(null);
        else child.once("exit", resolve);
      });
    }
    assert.ok(existsSync(path), "the stale socket is still there");
    await rejectsWith(new UapiClient(path).get(), "refused");
  });
});
