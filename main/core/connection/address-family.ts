/**
 * Which address family a gateway with both an IPv4 and an IPv6 address is reached over: RFC 8305 (Happy
 * Eyeballs v2) in spirit, applied to the outside-the-tunnel port probes, which try both addresses at once.
 *
 *   - IPv6 is preferred when it works: the probe's TCP port answered (SYN-ACK or RST) over IPv6, and it rules
 *     out no more of the gateway's leg kinds than IPv4 does (a gateway whose AnyConnect answers on IPv4 only
 *     is reached over IPv4, where all its protocols are).
 *   - IPv4 wins only when IPv6 is silent, or when IPv4 is clearly faster (by more than FAMILY_MIN_GAIN_MS and
 *     below FAMILY_MAX_RATIO of IPv6's time), so measurement noise never moves a gateway off IPv6.
 *   - Hysteresis: a gateway already on IPv4 (the incumbent) goes back to IPv6 only once IPv6 is at least as
 *     fast, not merely "not clearly worse", so a latency near the threshold cannot flip it every recheck.
 *   - With no evidence (no probe yet, or both families silent) the incumbent stays, else IPv4: a leg has no
 *     per-family fallback of its own, and a broken IPv6 path would cost the whole leg deadline, while IPv4
 *     is the family every gateway network is known to route. The next probe moves it to IPv6 when it works.
 *
 * Pure: the probing itself (and the fast fallback, abandoning the slower family) lives in main/agent/discovery.
 */
import { ipFamily, type IpFamily } from "../ip-address.ts";
import type { Candidate, CandidateAddresses, FamilyProbe } from "./types.ts";

/** IPv4 must beat IPv6 by more than this: a few milliseconds between two paths to one host are noise. */
export const FAMILY_MIN_GAIN_MS = 10;
/** ...and take under this fraction of IPv6's time, so on slow links 10 ms alone does not decide (Tailscale's 2/3). */
export const FAMILY_MAX_RATIO = 2 / 3;

/** The candidate's addresses per family, from `addresses` or, without it, from `address` alone. */
export function candidateAddresses(c: Pick<Candidate, "address" | "addresses">): CandidateAddresses {
  const out: CandidateAddresses = { ipv4: c.addresses?.ipv4 ?? null, ipv6: c.addresses?.ipv6 ?? null };
  const fam = c.address === null ? null : ipFamily(c.address);
  if (fam !== null && out[fam] === null) out[fam] = c.address;
  return out;
}

/** The address to use before any probe: the incumbent when it is still one of them, else IPv4, else IPv6. */
export function unprobedAddress(a: CandidateAddresses, incumbent: string | null = null): string | null {
  if (incumbent !== null && (incumbent === a.ipv4 || incumbent === a.ipv6)) return incumbent;
  return a.ipv4 ?? a.ipv6;
}

function clearlyFaster(a: number, b: number): boolean {
  return a < b - FAMILY_MIN_GAIN_MS && a < b * FAMILY_MAX_RATIO;
}

/**
 * The family to use given each family's probe (null: no address of that family) and the address in use now.
 * Returns null only when neither family has an address.
 */
export function chooseFamily(
  v6: FamilyProbe | null,
  v4: FamilyProbe | null,
  incumbent: string | null,
): IpFamily | null {
  if (v6 === null) return v4 === null ? null : "ipv4";
  if (v4 === null) return "ipv6";
  if (v6.works && !v4.works) return "ipv6";
  if (v4.works && !v6.works) return "ipv4";
  if (v6.works && v6.usableKinds !== v4.usableKinds) return v6.usableKinds > v4.usableKinds ? "ipv6" : "ipv4";
  const onV4 = incumbent === v4.address;
  if (!v6.works) return onV4 || incumbent !== v6.address ? "ipv4" : "ipv6";
  const l6 = v6.latencyMs ?? Number.POSITIVE_INFINITY;
  const l4 = v4.latencyMs ?? Number.POSITIVE_INFINITY;
  if (onV4) return l6 <= l4 ? "ipv6" : "ipv4";
  return clearlyFaster(l4, l6) ? "ipv4" : "ipv6";
}
