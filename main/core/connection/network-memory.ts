/**
 * Per-network memory: which leg won on which network, so the next connect on the same network races that
 * leg first (a UDP-hostile hotel network goes straight to TLS). Bounded, least recently used first out.
 */
import { z } from "zod";
import { LEG_KINDS, type LegKind } from "./types.ts";

/** Enough for every network a laptop sees in months; the oldest is forgotten first. */
export const MAX_NETWORKS = 64;

const Entry = z.object({
  key: z.string().min(1).max(128),
  gateway: z.string().min(1).max(64),
  kind: z.enum(LEG_KINDS),
  at: z.number(),
  wins: z.number().int().min(1),
});
const Memory = z.object({ version: z.literal(1), entries: z.array(Entry).max(MAX_NETWORKS) });

export type NetworkMemory = z.infer<typeof Memory>;

export function emptyMemory(): NetworkMemory {
  return { version: 1, entries: [] };
}

/** Reads stored memory; anything malformed is forgotten rather than trusted (it only orders a race). */
export function parseMemory(value: unknown): NetworkMemory {
  const r = Memory.safeParse(value);
  return r.success ? r.data : emptyMemory();
}

/**
 * A key is `<local>` or `<local>.<path>`: what the client sees of its own network, and, when a probe could tell,
 * its public-facing path. The same local network with another known path is another network; a path that could
 * not be learned (this time, or when the winner was stored) does not tell networks apart.
 */
export function recall(mem: NetworkMemory, key: string): { gateway: string; kind: LegKind } | null {
  const dot = key.indexOf(".");
  const local = dot < 0 ? key : key.slice(0, dot);
  const pathKnown = dot >= 0;
  // Entries are most recent first: the first match is the latest win.
  const e =
    mem.entries.find((x) => x.key === key) ??
    mem.entries.find((x) => x.key === local || (!pathKnown && x.key.startsWith(`${local}.`)));
  return e === undefined ? null : { gateway: e.gateway, kind: e.kind };
}

/** Records a win; the network becomes the most recent, and the store stays within MAX_NETWORKS. */
export function remember(
  mem: NetworkMemory,
  key: string,
  winner: { gateway: string; kind: LegKind },
  now: number,
): NetworkMemory {
  const old = mem.entries.find((x) => x.key === key);
  const same = old !== undefined && old.gateway === winner.gateway && old.kind === winner.kind;
  const entry = { key, gateway: winner.gateway, kind: winner.kind, at: now, wins: same ? old.wins + 1 : 1 };
  const rest = mem.entries.filter((x) => x.key !== key);
  return { version: 1, entries: [entry, ...rest].slice(0, MAX_NETWORKS) };
}
