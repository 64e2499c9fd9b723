/**
 * A tunnel's inner MTU from the underlay's path MTU toward its gateway, per protocol, and the search for the
 * largest size that really crosses the path when full-size packets vanish (a black hole: a hop with a smaller MTU
 * whose ICMP "fragmentation needed" / "packet too big" never arrives). Pure: the caller probes.
 */

/** The smallest inner MTU detourd keeps a tunnel at: IPv6's minimum link MTU (RFC 8200), which a tunnel must carry. */
export const MIN_TUNNEL_MTU = 1280;
/** Ethernet's MTU: what a path is taken to allow when nothing better is known. */
export const DEFAULT_PATH_MTU = 1500;

/** WireGuard's outer headers: IP (20 or 40) + UDP 8 + its own 32 (type, receiver, counter, Poly1305 tag). */
export function wireguardOverhead(family: 4 | 6): number {
  return (family === 4 ? 20 : 40) + 8 + 32;
}

/**
 * ESP in UDP (kernel-libipsec always encapsulates): IP + UDP 8 + ESP header 8 + IV 16 + ICV 16, and the payload
 * plus its 2-byte trailer padded to the cipher's 16-byte block (AES-CBC; AES-GCM's 4-byte alignment needs less).
 * The largest inner packet whose ESP packet fits `pathMtu`.
 */
export function espInnerMtu(pathMtu: number, family: 4 | 6): number {
  const room = pathMtu - (family === 4 ? 20 : 40) - 8 - 8 - 16 - 16;
  return Math.floor(room / 16) * 16 - 2;
}

/** The inner MTU for a WireGuard tunnel over a path of `pathMtu` toward a gateway of this family. */
export function wireguardMtu(pathMtu: number, family: 4 | 6): number {
  return pathMtu - wireguardOverhead(family);
}

/** The outcome of checking a tunnel's path with full-size echoes. */
export type PathVerdict =
  /** The tunnel's MTU crosses the path both ways. */
  | { kind: "ok"; mtu: number }
  /** Full-size packets vanish but `mtu` (smaller) crosses: the tunnel should use it. */
  | { kind: "lowered"; from: number; mtu: number }
  /** Small packets cross but nothing of MIN_TUNNEL_MTU does: this path cannot carry a usable tunnel. */
  | { kind: "black-hole"; from: number }
  /** Not even small echoes came back: not a size problem (the in-tunnel monitor judges a dead tunnel). */
  | { kind: "silent"; mtu: number };

/** A small echo (an IPv4 packet of this size) that any working tunnel carries. */
export const SMALL_PROBE_SIZE = 84;

/**
 * Checks `mtu` with a full-size probe; when it fails, checks a small one (a dead tunnel is not a black hole), then
 * searches for the largest size between MIN_TUNNEL_MTU and `mtu` that passes (binary search: about log2(mtu -
 * 1280) probes, half of them waiting out their timeout). `probe(size)` resolves whether an echo of `size` bytes
 * with DF set came back.
 */
export async function checkPath(mtu: number, probe: (size: number) => Promise<boolean>): Promise<PathVerdict> {
  if (await probe(mtu)) return { kind: "ok", mtu };
  if (!(await probe(SMALL_PROBE_SIZE))) return { kind: "silent", mtu };
  if (mtu <= MIN_TUNNEL_MTU || !(await probe(MIN_TUNNEL_MTU))) return { kind: "black-hole", from: mtu };
  // Invariant: lo passes, hi fails.
  let lo = MIN_TUNNEL_MTU;
  let hi = mtu;
  for (let i = 0; i < 16 && hi - lo > 1; i++) {
    const mid = Math.floor((lo + hi) / 2);
    if (await probe(mid)) lo = mid;
    else hi = mid;
  }
  return { kind: "lowered", from: mtu, mtu: lo };
}
