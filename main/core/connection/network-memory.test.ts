import assert from "node:assert/strict";
import { test } from "node:test";
import { emptyMemory, MAX_NETWORKS, parseMemory, recall, remember } from "./network-memory.ts";
import { planLegs } from "./race.ts";
import type { Candidate } from "./types.ts";

test("the-winner-on-a-network-is-recalled-on-that-network-only", () => {
  let m = remember(emptyMemory(), "net-a", { gateway: "gw1", kind: "anyconnect-tls" }, 1);
  m = remember(m, "net-b", { gateway: "gw2", kind: "wireguard" }, 2);
  assert.deepEqual(recall(m, "net-a"), { gateway: "gw1", kind: "anyconnect-tls" });
  assert.deepEqual(recall(m, "net-b"), { gateway: "gw2", kind: "wireguard" });
  assert.equal(recall(m, "net-c"), null);
  m = remember(m, "net-a", { gateway: "gw1", kind: "anyconnect-tls" }, 3);
  assert.equal(m.entries[0]?.wins, 2, "a repeated win counts");
});

test("memory-is-bounded-and-forgets-the-least-recent-network", () => {
  let m = emptyMemory();
  for (let i = 0; i <= MAX_NETWORKS; i++) m = remember(m, `net-${i}`, { gateway: "gw1", kind: "wireguard" }, i);
  assert.equal(m.entries.length, MAX_NETWORKS);
  assert.equal(recall(m, "net-0"), null);
  assert.notEqual(recall(m, `net-${MAX_NETWORKS}`), null);
});

test("malformed-stored-memory-is-forgotten-not-trusted", () => {
  assert.deepEqual(
    parseMemory({ version: 1, entries: [{ key: "x", gateway: "gw1", kind: "carrier-pigeon", at: 1, wins: 1 }] }),
    emptyMemory(),
  );
  assert.deepEqual(parseMemory("nonsense"), emptyMemory());
  const good = remember(emptyMemory(), "k", { gateway: "gw1", kind: "ikev2" }, 5);
  assert.deepEqual(parseMemory(JSON.parse(JSON.stringify(good))), good);
});

test("the-remembered-leg-is-raced-first-and-the-rest-keep-their-order", () => {
  const c = (name: string): Candidate => ({
    name,
    hostname: `${name}.x`,
    address: "198.18.1.2",
    priority: 10,
    region: "r",
    kinds: ["wireguard", "ikev2", "anyconnect-tls"],
    sources: ["config"],
    probe: null,
  });
  let n = 0;
  const policy = {
    staggerMs: 250,
    legDeadlineMs: 5000,
    order: ["wireguard", "ikev2", "anyconnect-tls", "anyconnect-dtls"] as const,
    maxGateways: 3,
  };
  const legs = planLegs(
    [c("gw1"), c("gw2")],
    { ...policy, order: [...policy.order] },
    { nextId: () => `L${String((n += 1))}`, preferred: { gateway: "gw2", kind: "anyconnect-tls" } },
  );
  assert.deepEqual(
    legs.map((l) => `${l.gateway}/${l.kind}`),
    ["gw2/anyconnect-tls", "gw1/wireguard", "gw1/ikev2", "gw2/wireguard", "gw1/anyconnect-tls", "gw2/ikev2"],
  );
  const none = planLegs(
    [c("gw1")],
    { ...policy, order: [...policy.order] },
    { nextId: () => "L", preferred: { gateway: "gw9", kind: "wireguard" } },
  );
  assert.equal(none[0]?.kind, "wireguard", "a remembered leg that is not on offer changes nothing");
});

test("a-known-public-facing-path-tells-networks-apart-an-unknown-one-does-not", () => {
  let m = remember(emptyMemory(), "aaaa.p1", { gateway: "gw1", kind: "anyconnect-tls" }, 1);
  assert.deepEqual(recall(m, "aaaa.p1"), { gateway: "gw1", kind: "anyconnect-tls" });
  assert.equal(recall(m, "aaaa.p2"), null, "the same local network behind another upstream is another network");
  assert.deepEqual(
    recall(m, "aaaa"),
    { gateway: "gw1", kind: "anyconnect-tls" },
    "a path that could not be probed matches on the rest",
  );
  m = remember(m, "aaaa.p2", { gateway: "gw2", kind: "wireguard" }, 2);
  assert.deepEqual(recall(m, "aaaa"), { gateway: "gw2", kind: "wireguard" }, "then the latest win there counts");
  m = remember(m, "bbbb", { gateway: "gw3", kind: "ikev2" }, 3);
  assert.deepEqual(
    recall(m, "bbbb.p9"),
    { gateway: "gw3", kind: "ikev2" },
    "a win stored without a path serves a later lookup with one",
  );
  assert.equal(recall(m, "cccc"), null);
});
