/** The VICI codec against the protocol's own example, chunked streams, broken input and random bytes. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom as rng } from "../../../test/fakes/seeded-random.ts";
import {
  EMPTY_SECTION,
  MAX_DEPTH,
  MAX_FRAME_BYTES,
  ViciError,
  ViciFrameDecoder,
  decodeMessage,
  decodePacket,
  encodeMessage,
  encodePacket,
  viciSection,
  type ViciPacket,
  type ViciSection,
  type ViciValue,
} from "./vici-codec.ts";

/** The encoding example of strongSwan's VICI README, byte for byte. */
const README_EXAMPLE = Buffer.from([
  3,
  4,
  ...Buffer.from("key1"),
  0,
  6,
  ...Buffer.from("value1"),
  1,
  8,
  ...Buffer.from("section1"),
  1,
  11,
  ...Buffer.from("sub-section"),
  3,
  4,
  ...Buffer.from("key2"),
  0,
  6,
  ...Buffer.from("value2"),
  2,
  4,
  5,
  ...Buffer.from("list1"),
  5,
  0,
  5,
  ...Buffer.from("item1"),
  5,
  0,
  5,
  ...Buffer.from("item2"),
  6,
  2,
]);
const README_TREE = viciSection({
  key1: "value1",
  section1: { "sub-section": { key2: "value2" }, list1: ["item1", "item2"] },
});

function frame(body: number[]): Buffer {
  const b = Buffer.alloc(4 + body.length);
  b.writeUInt32BE(body.length, 0);
  Buffer.from(body).copy(b, 4);
  return b;
}

function expectViciError(fn: () => unknown, code: ViciError["code"]): void {
  assert.throws(fn, (e: unknown) => e instanceof ViciError && e.code === code, `expected ViciError ${code}`);
}

test("readme-example-decodes-and-encodes-byte-for-byte", () => {
  assert.deepEqual(decodeMessage(README_EXAMPLE), README_TREE);
  assert.deepEqual(encodeMessage(README_TREE), README_EXAMPLE);
});

test("every-packet-type-round-trips", () => {
  const packets: ViciPacket[] = [
    { type: "cmd-request", name: "list-sas", message: viciSection({ ike: "detour", noblock: "yes" }) },
    { type: "cmd-response", message: viciSection({ success: "yes" }) },
    { type: "cmd-response", message: EMPTY_SECTION },
    { type: "cmd-unknown" },
    { type: "event-register", name: "ike-updown" },
    { type: "event-unregister", name: "ike-updown" },
    { type: "event-confirm" },
    { type: "event-unknown" },
    { type: "event", name: "list-sa", message: README_TREE },
  ];
  for (const p of packets) {
    const bytes = encodePacket(p);
    assert.equal(bytes.readUInt32BE(0), bytes.length - 4, `${p.type}: length prefix counts the body only`);
    assert.deepEqual(decodePacket(bytes.subarray(4)), p);
  }
});

test("section-order-is-kept-including-integer-like-keys", () => {
  const tree: ViciSection = new Map<string, ViciValue>([
    ["b", "1"],
    ["10", "x"],
    ["2", "y"],
    ["a", ["p", "q"]],
  ]);
  assert.deepEqual([...decodeMessage(encodeMessage(tree)).keys()], ["b", "10", "2", "a"]);
});

test("keys-named-like-object-internals-are-plain-keys", () => {
  const tree: ViciSection = new Map<string, ViciValue>([
    ["__proto__", "x"],
    ["constructor", new Map([["toString", "y"]])],
  ]);
  const back = decodeMessage(encodeMessage(tree));
  assert.equal(back.get("__proto__"), "x");
  assert.deepEqual(back, tree);
});

test("a-stream-split-at-every-byte-boundary-gives-the-same-packets", () => {
  const packets: ViciPacket[] = [
    {
      type: "event",
      name: "ike-updown",
      message: viciSection({ up: "yes", detour: { state: "ESTABLISHED", "local-vips": ["198.19.12.10"] } }),
    },
    { type: "cmd-response", message: viciSection({ success: "yes" }) },
    { type: "event-confirm" },
  ];
  const stream = Buffer.concat(packets.map(encodePacket));
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new ViciFrameDecoder();
    const got = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    assert.deepEqual(got, packets, `cut at ${cut}`);
    assert.equal(d.buffered, 0);
  }
  const d = new ViciFrameDecoder();
  const oneByOne = [...stream].flatMap((b) => d.push(Uint8Array.of(b)));
  assert.deepEqual(oneByOne, packets, "one byte at a time");
});

test("a-partial-frame-waits-instead-of-failing", () => {
  const d = new ViciFrameDecoder();
  const bytes = encodePacket({ type: "cmd-response", message: viciSection({ success: "yes" }) });
  assert.deepEqual(d.push(bytes.subarray(0, 3)), []);
  assert.deepEqual(d.push(bytes.subarray(3, bytes.length - 1)), []);
  assert.equal(d.push(bytes.subarray(bytes.length - 1)).length, 1);
});

test("oversized-frame-is-refused-from-its-length-alone", () => {
  const d = new ViciFrameDecoder();
  const header = Buffer.alloc(4);
  header.writeUInt32BE(MAX_FRAME_BYTES + 1);
  expectViciError(() => d.push(header), "oversized");
  assert.equal(d.buffered, 0, "nothing of the oversized frame is buffered");
  expectViciError(() => d.push(encodePacket({ type: "event-confirm" })), "oversized");
});

test("malformed-frames-give-typed-errors", () => {
  const cases: [string, number[], ViciError["code"]][] = [
    ["empty packet", [], "malformed"],
    ["unknown packet type", [9], "bad-type"],
    ["named packet without its name", [3, 5, 0x61], "truncated"],
    ["named packet with an empty name", [3, 0], "malformed"],
    ["confirm with trailing bytes", [5, 1], "malformed"],
    ["response with an unknown element", [1, 9], "bad-type"],
    ["response with a value longer than the frame", [1, 3, 1, 0x6b, 0, 9, 0x76], "truncated"],
    ["section never closed", [1, 1, 1, 0x73], "truncated"],
    ["section end without a section", [1, 2], "malformed"],
    ["list never closed", [1, 4, 1, 0x6c], "truncated"],
    ["list item outside a list", [1, 5, 0, 0], "malformed"],
    ["list end without a list", [1, 6], "malformed"],
    ["key inside a list", [1, 4, 1, 0x6c, 3, 1, 0x6b, 0, 0, 6], "malformed"],
    ["nested list", [1, 4, 1, 0x6c, 4, 1, 0x6d, 6, 6], "malformed"],
    ["duplicate key", [1, 3, 1, 0x6b, 0, 0, 3, 1, 0x6b, 0, 0], "malformed"],
  ];
  for (const [what, body, code] of cases) {
    assert.throws(
      () => new ViciFrameDecoder().push(frame(body)),
      (e: unknown) => e instanceof ViciError && e.code === code,
      what,
    );
  }
  expectViciError(() => new ViciFrameDecoder().push(frame([])), "malformed");
});

test("nesting-beyond-the-bound-is-refused-both-ways", () => {
  const deep = [1];
  for (let i = 0; i < MAX_DEPTH + 1; i++) deep.push(1, 1, 0x73);
  for (let i = 0; i < MAX_DEPTH + 1; i++) deep.push(2);
  expectViciError(() => decodePacket(Buffer.from(deep)), "too-deep");
  let tree: ViciSection = new Map();
  for (let i = 0; i < MAX_DEPTH + 1; i++) tree = new Map([["s", tree]]);
  expectViciError(() => encodeMessage(tree), "unencodable");
  // a hostile nest far deeper than any stack still ends in a typed error, not a RangeError
  const hostile = Buffer.concat([Buffer.from([1]), Buffer.alloc(300_000, Buffer.from([1, 0]))]);
  expectViciError(() => decodePacket(hostile), "too-deep");
});

test("values-vici-cannot-carry-are-refused-when-encoding", () => {
  expectViciError(() => encodeMessage(new Map([["k".repeat(256), "v"]])), "unencodable");
  expectViciError(() => encodeMessage(new Map([["k", "v".repeat(65_536)]])), "unencodable");
  expectViciError(() => encodeMessage(new Map([["k", [1 as unknown as string]]])), "unencodable");
  expectViciError(() => encodePacket({ type: "cmd-request", name: "", message: EMPTY_SECTION }), "unencodable");
  const big = new Map<string, ViciValue>();
  for (let i = 0; i < 10; i++) big.set(`k${i}`, "v".repeat(60_000));
  expectViciError(() => encodeMessage(big), "unencodable");
});

// ------------------------------------------------------------------------------------------- property tests

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_. /:é✓";

function randomString(r: () => number, max: number): string {
  const n = Math.floor(r() * max);
  let s = "";
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(r() * ALPHABET.length)] ?? "a";
  return s;
}

function randomTree(r: () => number, depth: number): ViciSection {
  const out = new Map<string, ViciValue>();
  const n = Math.floor(r() * 6);
  for (let i = 0; i < n; i++) {
    const key = `${randomString(r, 8)}${i}`;
    const pick = r();
    if (pick < 0.5) out.set(key, randomString(r, 20));
    else if (pick < 0.75)
      out.set(
        key,
        Array.from({ length: Math.floor(r() * 4) }, () => randomString(r, 12)),
      );
    else if (depth < 4) out.set(key, randomTree(r, depth + 1));
  }
  return out;
}

function checkOutcome(fn: () => unknown, what: string): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof ViciError)) throw new Error(`${what}: threw ${String(e)} instead of a ViciError`, { cause: e });
  }
}

const SEED = Number(process.env.VICI_FUZZ_SEED ?? Date.now() % 1_000_000);
const ITERATIONS = 3000;
/** The whole property run must stay cheap enough for every unit test run. */
const FUZZ_BUDGET_MS = 10_000;

test(`random-trees-round-trip (seed ${SEED})`, () => {
  const r = rng(SEED);
  for (let i = 0; i < ITERATIONS; i++) {
    const tree = randomTree(r, 1);
    const p: ViciPacket = { type: "event", name: `e${i}`, message: tree };
    const bytes = encodePacket(p);
    assert.deepEqual(new ViciFrameDecoder().push(bytes), [p], `iteration ${i}`);
  }
});

test(`random-and-mutated-bytes-give-packets-or-typed-errors (seed ${SEED})`, () => {
  const r = rng(SEED + 1);
  const started = Date.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const noise = Buffer.from(Array.from({ length: Math.floor(r() * 64) }, () => Math.floor(r() * 256)));
    checkOutcome(() => decodePacket(noise), `random packet body, iteration ${i}`);
    checkOutcome(() => decodeMessage(noise), `random message, iteration ${i}`);
    checkOutcome(() => new ViciFrameDecoder().push(noise), `random stream, iteration ${i}`);

    const valid = encodePacket({ type: "cmd-response", message: randomTree(r, 1) });
    const mutated = Buffer.from(valid);
    const flips = 1 + Math.floor(r() * 4);
    for (let f = 0; f < flips; f++) mutated[Math.floor(r() * mutated.length)] = Math.floor(r() * 256);
    const cut = mutated.subarray(0, Math.floor(r() * (mutated.length + 1)));
    for (const bytes of [mutated, cut]) {
      const d = new ViciFrameDecoder();
      checkOutcome(() => {
        // feed in random chunk sizes, as a socket would
        let off = 0;
        while (off < bytes.length) {
          const n = 1 + Math.floor(r() * 16);
          d.push(bytes.subarray(off, off + n));
          off += n;
        }
      }, `mutated stream, iteration ${i}`);
    }
  }
  assert.ok(Date.now() - started < FUZZ_BUDGET_MS, `fuzzing took ${Date.now() - started} ms`);
});
