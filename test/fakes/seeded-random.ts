/**
 * A seeded pseudo-random generator (mulberry32) for fuzz and property tests: a failing case replays from its printed
 * seed. It stays pure (no node:*): main/core's tests use it too, compiled on their own (main/core/tsconfig.test.json).
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
