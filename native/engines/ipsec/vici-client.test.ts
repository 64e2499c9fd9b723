/** The VICI client against fake charons on a temporary unix socket: good ones, rude ones and silent ones. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ViciFrameDecoder, encodePacket, viciSection, type ViciPacket, type ViciSection } from "./vici-codec.ts";
import { ViciClient, ViciClientError, checkSuccess } from "./vici-client.ts";

type Behaviour = (p: ViciPacket, reply: (p: ViciPacket) => void, socket: Socket) => void;

let dir = "";
let seq = 0;
const servers: Server[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), "vici-client-test-"));
});
after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  rmSync(dir, { recursive: true, force: true });
});

/** A fake charon: decodes what the client sends and lets the test decide what to answer. */
async function fakeCharon(behaviour: Behaviour): Promise<{ path: string; received: ViciPacket[] }> {
  const path = join(dir, `s${seq++}.vici`);
  const received: ViciPacket[] = [];
  const server = createServer((socket) => {
    const decoder = new ViciFrameDecoder();
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      for (const p of decoder.push(chunk)) {
        received.push(p);
        behaviour(p, (r) => socket.write(encodePacket(r)), socket);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return { path, received };
}

/** Answers like charon: known commands succeed, list-sas streams two events, unknown names are refused. */
const politeCharon: Behaviour = (p, reply) => {
  switch (p.type) {
    case "cmd-request":
      if (p.name === "version")
        reply({ type: "cmd-response", message: viciSection({ daemon: "charon-systemd", version: "5.9.8" }) });
      else if (p.name === "list-sas") {
        reply({ type: "event", name: "list-sa", message: viciSection({ a: { state: "ESTABLISHED" } }) });
        reply({ type: "event", name: "list-sa", message: viciSection({ b: { state: "CONNECTING" } }) });
        reply({ type: "cmd-response", message: new Map() });
      } else if (p.name === "load-conn")
        reply({ type: "cmd-response", message: viciSection({ success: "no", errmsg: "invalid value for: vips" }) });
      else reply({ type: "cmd-unknown" });
      return;
    case "event-register":
    case "event-unregister":
      reply(p.name === "ike-updown" || p.name === "list-sa" ? { type: "event-confirm" } : { type: "event-unknown" });
      if (p.type === "event-register" && p.name === "ike-updown") {
        reply({
          type: "event",
          name: "ike-updown",
          message: viciSection({ up: "yes", detour: { state: "ESTABLISHED" } }),
        });
      }
      return;
    case "cmd-response":
    case "cmd-unknown":
    case "event-confirm":
    case "event-unknown":
    case "event":
      return;
  }
};

function rejectsWith(code: ViciClientError["code"]): (e: unknown) => boolean {
  return (e: unknown) => e instanceof ViciClientError && e.code === code;
}

test("plain-command-returns-charons-answer", async () => {
  const s = await fakeCharon(politeCharon);
  const c = await ViciClient.connect(s.path);
  try {
    const r = await c.request("version");
    assert.equal(r.get("daemon"), "charon-systemd");
  } finally {
    c.close();
  }
});

test("success-no-becomes-command-failed-with-errmsg", async () => {
  const s = await fakeCharon(politeCharon);
  const c = await ViciClient.connect(s.path);
  try {
    await assert.rejects(
      c.requestOk("load-conn", viciSection({ x: { vips: ["bad"] } })),
      (e: unknown) =>
        e instanceof ViciClientError && e.code === "command-failed" && e.errmsg === "invalid value for: vips",
    );
    assert.throws(
      () => checkSuccess("x", new Map()),
      rejectsWith("command-failed"),
      "a response without success is not a success",
    );
  } finally {
    c.close();
  }
});

test("unknown-command-and-unknown-event-are-typed", async () => {
  const s = await fakeCharon(politeCharon);
  const c = await ViciClient.connect(s.path);
  try {
    await assert.rejects(c.request("no-such-command"), rejectsWith("unknown-command"));
    await assert.rejects(
      c.register("no-such-event", () => undefined),
      rejectsWith("unknown-event"),
    );
    assert.equal((await c.request("version")).get("version"), "5.9.8", "the connection stays usable");
  } finally {
    c.close();
  }
});

test("streamed-command-collects-events-then-unregisters", async () => {
  const s = await fakeCharon(politeCharon);
  const c = await ViciClient.connect(s.path);
  try {
    const seen: string[] = [];
    const { events, response } = await c.stream("list-sas", viciSection({ noblock: "yes" }), "list-sa", {
      onEvent: (m) => seen.push([...m.keys()].join()),
    });
    assert.deepEqual(
      events.map((e) => [...e.keys()][0]),
      ["a", "b"],
    );
    assert.deepEqual(seen, ["a", "b"]);
    assert.equal(response.size, 0);
    assert.deepEqual(
      s.received.map((p) => `${p.type}${"name" in p ? ` ${p.name}` : ""}`),
      ["event-register list-sa", "cmd-request list-sas", "event-unregister list-sa"],
    );
  } finally {
    c.close();
  }
});

test("registered-events-reach-their-handler-until-unsubscribed", async () => {
  const s = await fakeCharon(politeCharon);
  const c = await ViciClient.connect(s.path);
  try {
    const got: ViciSection[] = [];
    const unsubscribe = await c.register("ike-updown", (m) => got.push(m));
    await c.request("version"); // the event sent right after the confirm has arrived by now
    assert.equal(got.length, 1);
    assert.equal(got[0]?.get("up"), "yes");
    await unsubscribe();
    assert.equal(s.received.at(-1)?.type, "event-unregister");
  } finally {
    c.close();
  }
});

test("garbage-from-the-daemon-is-a-protocol-error-and-closes", async () => {
  const s = await fakeCharon((p, _reply, socket) => {
    if (p.type === "cmd-request") socket.write(Buffer.from([0, 0, 0, 3, 42, 42, 42]));
  });
  const c = await ViciClient.connect(s.path);
  let closedWith: ViciClientError | null = null;
  c.onClose((e) => (closedWith = e));
  await assert.rejects(c.request("version"), rejectsWith("protocol"));
  assert.ok(c.closed);
  assert.equal((closedWith as ViciClientError | null)?.code, "protocol");
  await assert.rejects(c.request("version"), rejectsWith("protocol"), "later requests fail with the same cause");
});

test("an-oversized-frame-header-is-a-protocol-error", async () => {
  const s = await fakeCharon((p, _reply, socket) => {
    if (p.type === "cmd-request") socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]));
  });
  const c = await ViciClient.connect(s.path);
  await assert.rejects(c.request("version"), rejectsWith("protocol"));
});

test("a-reply-nobody-asked-for-is-a-protocol-error", async () => {
  const s = await fakeCharon((p, reply) => {
    if (p.type === "event-register") reply({ type: "cmd-response", message: new Map() });
  });
  const c = await ViciClient.connect(s.path);
  await assert.rejects(
    c.register("ike-updown", () => undefined),
    rejectsWith("protocol"),
  );
});

test("a-daemon-that-never-answers-times-out-within-the-bound", async () => {
  const s = await fakeCharon(() => undefined);
  const c = await ViciClient.connect(s.path);
  const t0 = Date.now();
  await assert.rejects(c.request("version", new Map(), { timeoutMs: 200 }), rejectsWith("timeout"));
  const took = Date.now() - t0;
  assert.ok(took >= 190 && took < 1500, `timed out after ${took} ms`);
  assert.ok(c.closed, "a timed-out connection is not reused: a late reply would answer the wrong request");
});

test("queued-requests-fail-when-the-daemon-hangs-up", async () => {
  const s = await fakeCharon((p, _reply, socket) => {
    if (p.type === "cmd-request") socket.destroy();
  });
  const c = await ViciClient.connect(s.path);
  const first = c.request("version");
  const second = c.request("version");
  await assert.rejects(first, rejectsWith("closed"));
  await assert.rejects(second, rejectsWith("closed"));
});

test("close-rejects-what-is-pending-and-is-idempotent", async () => {
  const s = await fakeCharon(() => undefined);
  const c = await ViciClient.connect(s.path);
  const pending = c.request("version", new Map(), { timeoutMs: 5000 });
  c.close();
  c.close();
  await assert.rejects(pending, rejectsWith("closed"));
});

test("connecting-to-a-missing-socket-fails-fast-and-typed", async () => {
  const t0 = Date.now();
  await assert.rejects(ViciClient.connect(join(dir, "missing.vici")), rejectsWith("connect-failed"));
  assert.ok(Date.now() - t0 < 1000);
});
