/** Ranks gateway candidates for a race and merges the lists that configuration, DNS and the portal supply. */
import type { Candidate, CandidateSource, LegKind } from "./types.ts";

/**
 * An equal-priority candidate overtakes one ranked before it only if it is faster by more than this. Tailscale's
 * home-DERP rule: a few milliseconds are measurement noise, and reordering on noise would make every race start
 * with a different gateway and defeat the cached warm paths.
 */
export const OVERTAKE_MIN_GAIN_MS = 10;
/**
 * ...and only if its latency is also below this fraction of the other's, so that on slow links (300 ms vs 290 ms)
 * the 10 ms rule alone does not reorder either. Tailscale's 2/3.
 */
export const OVERTAKE_MAX_RATIO = 2 / 3;

export interface RankOptions {
  /** Overrides OVERTAKE_MIN_GAIN_MS (tests, experiments). */
  minGainMs?: number;
  /** Overrides OVERTAKE_MAX_RATIO. */
  maxRatio?: number;
}

/** True when the candidate was probed and every leg kind it supports was found unreachable. */
export function allKindsUnreachable(c: Candidate): boolean {
  const probe = c.probe;
  if (probe === null || c.kinds.length === 0) return false;
  return c.kinds.every((k) => probe.reachable[k] === "no");
}

/** True when the last probe heard from the candidate at all: a TCP/TLS answer, or a kind reported reachable. */
export function reportsReachable(c: Candidate): boolean {
  const probe = c.probe;
  if (probe === null) return false;
  return probe.latencyMs !== null || c.kinds.some((k) => probe.reachable[k] === "yes");
}

/**
 * True when the candidate was probed and its host gave no answer at all while others may have: a gateway that
 * is down, or a whole data centre lost. Such gateways go after the ones that answered, whatever their priority.
 */
export function probedSilent(c: Candidate): boolean {
  return c.probe !== null && c.probe.answered === false && !reportsReachable(c);
}

/** True when the last probe heard the candidate's host: a SYN-ACK or a RST, a TLS handshake, a kind reachable. */
export function probeHeard(c: Candidate): boolean {
  return c.probe?.answered === true || reportsReachable(c);
}

/**
 * Orders candidates best first: answered (or not probed) before probed-and-silent before all-unreachable, then
 * by priority (lower first); within a priority band the ones the probe heard come before the ones it did not hear
 * from (not probed, or no answer to tell), however slow or unmeasured their answer (a RST carries no handshake
 * time), then by latency (unknown after known) with hysteresis against `previous` (the names in the last ranking's
 * order), so a candidate passes an answered one of its band only when clearly faster. The result is a new array;
 * input is not changed.
 */
export function rankCandidates(
  candidates: readonly Candidate[],
  previous: readonly string[] | null,
  opts: RankOptions = {},
): Candidate[] {
  const minGain = opts.minGainMs ?? OVERTAKE_MIN_GAIN_MS;
  const ratio = opts.maxRatio ?? OVERTAKE_MAX_RATIO;
  const prevIndex = new Map<string, number>((previous ?? []).map((n, i) => [n, i]));
  const lat = (c: Candidate): number => c.probe?.latencyMs ?? Number.POSITIVE_INFINITY;

  // Start from the previous order (incumbents keep their places), newcomers after them by latency, then name.
  const base = [...candidates].sort((a, b) => {
    const pa = prevIndex.get(a.name);
    const pb = prevIndex.get(b.name);
    if (pa !== undefined && pb !== undefined) return pa - pb;
    if (pa !== undefined) return -1;
    if (pb !== undefined) return 1;
    return lat(a) - lat(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  });
  // Tiers are strict: stable sort keeps the base order inside each (reachability, priority, heard) tier.
  const tier = (c: Candidate): [number, number, number] => [
    allKindsUnreachable(c) ? 2 : probedSilent(c) ? 1 : 0,
    c.priority,
    probeHeard(c) ? 0 : 1,
  ];
  const ordered = base.sort((a, b) => {
    const [ua, pa, ha] = tier(a);
    const [ub, pb, hb] = tier(b);
    return ua - ub || pa - pb || ha - hb;
  });

  /** Whether `later` should move ahead of `earlier` (same tier). Implies a strictly lower latency, so passes end. */
  const overtakes = (later: Candidate, earlier: Candidate): boolean => {
    const l = later.probe?.latencyMs ?? null;
    const e = earlier.probe?.latencyMs ?? null;
    if (l === null) return false;
    if (e === null) return true;
    return l < e - minGain && l < e * ratio;
  };
  const sameTier = (a: Candidate, b: Candidate): boolean => tier(a).every((x, i) => x === tier(b)[i]);
  // Adjacent swaps only ever lower the latency inversion count, so this terminates within n² swaps.
  for (let swapped = true; swapped;) {
    swapped = false;
    for (let i = 0; i + 1 < ordered.length; i++) {
      const a = ordered[i];
      const b = ordered[i + 1];
      if (a !== undefined && b !== undefined && sameTier(a, b) && overtakes(b, a)) {
        ordered[i] = b;
        ordered[i + 1] = a;
        swapped = true;
      }
    }
  }
  return ordered;
}

const SOURCE_ORDER: readonly CandidateSource[] = ["config", "dns", "portal"];

/**
 * Merges candidate lists by name: sources are unioned, configured values win over DNS and portal ones, and the
 * address comes from configuration, else DNS, else the portal, together with that source's addresses of both
 * families (a configured address pins the gateway; DNS may name it by A and AAAA). Order: configured first,
 * then DNS, then portal.
 */
export function mergeCandidates(
  configured: readonly Candidate[],
  dns: readonly Candidate[],
  portal: readonly Candidate[],
): Candidate[] {
  const byName = new Map<string, Candidate[]>();
  for (const list of [configured, dns, portal]) {
    for (const c of list) {
      const seen = byName.get(c.name);
      if (seen === undefined) byName.set(c.name, [c]);
      else seen.push(c);
    }
  }
  const out: Candidate[] = [];
  for (const [name, all] of byName) {
    const first = all[0];
    if (first === undefined) continue;
    const sources = new Set<CandidateSource>(all.flatMap((c) => c.sources));
    const kinds: LegKind[] = [];
    // Kinds come from the most authoritative list that names any, so a portal cannot add protocols to a configured gateway.
    for (const k of all.find((c) => c.kinds.length > 0)?.kinds ?? []) if (!kinds.includes(k)) kinds.push(k);
    const addressed = all.find((c) => c.address !== null);
    out.push({
      name,
      hostname: first.hostname,
      address: addressed?.address ?? null,
      ...(addressed?.addresses === undefined ? {} : { addresses: { ...addressed.addresses } }),
      priority: first.priority,
      region: first.region,
      kinds,
      sources: SOURCE_ORDER.filter((s) => sources.has(s)),
      probe: all.find((c) => c.probe !== null)?.probe ?? null,
    });
  }
  return out;
}
