/**
 * Seeded input mutation for the fuzz tests (control protocol, collector): random values, JSON-shaped mutations of a
 * valid message and byte-level mutations of its encoding. Everything comes from one seeded generator, so a failing
 * case replays from the seed the test prints (DETOUR_FUZZ_SEED overrides the default). No library: fast-check
 * would add a dev dependency for what fifty lines do, and its shrinking matters little for inputs this small.
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { seededRandom } from "./seeded-random.ts";

export interface Fuzz {
  readonly seed: number;
  /** A float in [0, 1). */
  next(): number;
  int(maxExclusive: number): number;
  pick<T>(xs: readonly T[]): T;
  chance(p: number): boolean;
}

/** The generator for a test: DETOUR_FUZZ_SEED when set, else the test's fixed default. */
export function fuzzer(defaultSeed: number): Fuzz {
  const env = Number(process.env.DETOUR_FUZZ_SEED);
  const seed = Number.isInteger(env) && env > 0 ? env : defaultSeed;
  const next = seededRandom(seed);
  const int = (n: number): number => Math.floor(next() * n);
  return {
    seed,
    next,
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)] as T,
    chance: (p) => next() < p,
  };
}

const STRINGS = [
  "",
  " ",
  "hello",
  "request",
  "status",
  "__proto__",
  "constructor",
  "\u0000",
  "\u2028",
  "é",
  "😀",
  "\ud800",
  "<script>alert(1)</script>",
  "../../etc/passwd",
  "%00",
  "null",
  "-1",
];
const NUMBERS = [0, -1, 1, 2, 1.5, -0, 2 ** 31, 2 ** 53 + 2, -(2 ** 63), 1e308, -1e-308, Number.MAX_SAFE_INTEGER];

/** A random JSON value, at most `depth` levels deep (deep nesting is a case of its own). */
export function randomJson(f: Fuzz, depth = 3): unknown {
  switch (f.int(depth <= 0 ? 4 : 7)) {
    case 0:
      return null;
    case 1:
      return f.chance(0.5);
    case 2:
      return f.pick(NUMBERS);
    case 3:
      return f.chance(0.05) ? "x".repeat(f.int(70_000)) : f.pick(STRINGS);
    case 4:
      return Array.from({ length: f.int(4) }, () => randomJson(f, depth - 1));
    case 5: {
      const o: Record<string, unknown> = {};
      for (let i = f.int(4); i > 0; i--) o[f.pick(STRINGS)] = randomJson(f, depth - 1);
      return o;
    }
    default: {
      // Deep nesting: a recursive parser's stack, or a validator's, is the target.
      let v: unknown = 1;
      // (Kept within what JSON.stringify itself can write; deepNesting gives text far deeper.)
      for (let i = f.int(1000); i > 0; i--) v = f.chance(0.5) ? [v] : { a: v };
      return v;
    }
  }
}

/** A structural mutation of a JSON value: a field dropped, added, retyped, or the whole replaced. */
export function mutateJson(f: Fuzz, value: unknown): unknown {
  if (f.chance(0.1)) return randomJson(f);
  if (value === null || typeof value !== "object") return f.chance(0.5) ? randomJson(f, 1) : value;
  if (Array.isArray(value)) {
    const out = [...(value as unknown[])];
    if (out.length > 0 && f.chance(0.5)) out[f.int(out.length)] = mutateJson(f, out[f.int(out.length)]);
    else out.push(randomJson(f, 2));
    return out;
  }
  const keys = Object.keys(value);
  const key = keys.length === 0 ? f.pick(STRINGS) : f.pick(keys);
  if (f.chance(0.25))
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).filter(([k]) => k !== key));
  const out: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  switch (f.int(3)) {
    case 1:
      Object.defineProperty(out, f.pick(STRINGS), { value: randomJson(f, 2), enumerable: true });
      break;
    case 2:
      out[key] = randomJson(f, 2);
      break;
    default:
      out[key] = mutateJson(f, out[key]);
  }
  return out;
}

/** A byte-level mutation: truncated, a byte flipped, inserted or deleted, a part repeated, invalid UTF-8 added. */
export function mutateBytes(f: Fuzz, input: Uint8Array): Buffer {
  const b = Buffer.from(input);
  if (b.length === 0) return Buffer.from([f.int(256)]);
  switch (f.int(6)) {
    case 0:
      return b.subarray(0, f.int(b.length));
    case 1: {
      const i = f.int(b.length);
      b[i] = (b[i] ?? 0) ^ (1 << f.int(8));
      return b;
    }
    case 2: {
      const i = f.int(b.length);
      return Buffer.concat([b.subarray(0, i), Buffer.from([f.int(256)]), b.subarray(i)]);
    }
    case 3: {
      const i = f.int(b.length);
      return Buffer.concat([b.subarray(0, i), b.subarray(i + 1)]);
    }
    case 4: {
      const i = f.int(b.length);
      const j = i + f.int(b.length - i);
      return Buffer.concat([b.subarray(0, j), b.subarray(i, j), b.subarray(j)]);
    }
    default:
      return Buffer.concat([b, Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80])]);
  }
}

/** JSON text nested `levels` deep, far past what a recursive reader or writer survives. */
export function deepNesting(f: Fuzz, levels: number): string {
  const open = f.chance(0.5) ? "[" : '{"a":';
  const close = open === "[" ? "]" : "}";
  return open.repeat(levels) + "1" + close.repeat(levels);
}

/** Random bytes, `max` at most. */
export function randomBytes(f: Fuzz, max: number): Buffer {
  return Buffer.from(Array.from({ length: f.int(max) }, () => f.int(256)));
}

/**
 * A full garbage collection, so heap figures before and after a run compare what is retained rather than what
 * happened to be collected. Node exposes gc() only with --expose-gc; the flag can be set at run time and the
 * function fetched from a fresh context.
 */
export function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

/** heapUsed after a full collection, in bytes. */
export function retainedHeap(): number {
  collectGarbage();
  return process.memoryUsage().heapUsed;
}
