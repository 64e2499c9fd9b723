/**
 * Captive networks: what the check URL's answer (and the network's DNS answer for its host) says about the network,
 * and the status detourd shows while the user signs in. Pure: the agent fetches, resolves and times (captive.ts
 * there); this module only judges.
 *
 *   check answer                      verdict
 *   204, or 200 with an empty body    open: the network lets traffic through
 *   3xx with a Location               captive: the redirect target is the sign-in page
 *   511, or 200 with content          captive: the portal answered in place of the check host
 *   anything else, or no answer       unknown: nothing to act on (no exception is opened on a guess)
 *
 * A DNS answer for the check host inside private or special-use space (RFC 1918, CGNAT, loopback, link-local) is
 * captive too: public check hosts never live there, portals that answer every name with themselves often do.
 */
import { ipFamily } from "./ip-address.ts";
import { parseAddress, prefixCovers, specialUseReason, parsePrefix } from "./net/address-guard.ts";

export type CaptiveVerdict =
  | { kind: "open" }
  | { kind: "captive"; reason: string; portalUrl: string | null }
  | { kind: "unknown"; reason: string };

/** What the agent's fetch of the check URL saw (redirects are not followed). */
export interface CheckAnswer {
  status: number;
  /** The Location header, if any. */
  location: string | null;
  /** Bytes of body received (the agent reads at most a few kilobytes). */
  bodyBytes: number;
}

const PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"];

/** Why the check answer says the network is captive, open, or nothing certain. */
export function judgeCheckAnswer(checkUrl: string, a: CheckAnswer): CaptiveVerdict {
  if (a.status === 204 || (a.status === 200 && a.bodyBytes === 0)) return { kind: "open" };
  if (a.status >= 300 && a.status < 400) {
    if (a.location === null || a.location === "")
      return { kind: "unknown", reason: `the check URL answered ${String(a.status)} without a Location` };
    const target = portalTarget(checkUrl, a.location);
    return target === null
      ? { kind: "captive", reason: `the check URL was redirected to a URL that is not http(s)`, portalUrl: null }
      : { kind: "captive", reason: `the check URL was redirected to ${target}`, portalUrl: target };
  }
  if (a.status === 511)
    return { kind: "captive", reason: "the network answered 511 Network Authentication Required", portalUrl: checkUrl };
  if (a.status === 200)
    return {
      kind: "captive",
      reason: `the check URL answered with ${String(a.bodyBytes)} bytes of content instead of 204`,
      portalUrl: checkUrl,
    };
  return { kind: "unknown", reason: `the check URL answered ${String(a.status)}` };
}

const ABSOLUTE_RE = /^(https?):\/\/([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(\/[^\s]*)?$/;

/**
 * The absolute http(s) URL a redirect points to (a path is taken relative to the check URL's origin), or null for
 * anything else: javascript:, data:, credentials in the URL, spaces, garbage. The core has no URL parser, and a
 * portal's Location needs no more than this.
 */
export function portalTarget(base: string, location: string): string | null {
  const abs = ABSOLUTE_RE.exec(location);
  if (abs !== null)
    return `${(abs[1] ?? "").toLowerCase()}://${(abs[2] ?? "").toLowerCase()}${abs[3] ?? ""}${abs[4] ?? "/"}`;
  if (location.startsWith("/") && !location.startsWith("//") && !/\s/.test(location)) {
    const origin = ABSOLUTE_RE.exec(base);
    if (origin === null) return null;
    return `${(origin[1] ?? "").toLowerCase()}://${(origin[2] ?? "").toLowerCase()}${origin[3] ?? ""}${location}`;
  }
  return null;
}

/** Why the network's DNS answer for the check host says captive (a private or special-use address), or null. */
export function judgeCheckHostAnswer(host: string, addresses: readonly string[]): CaptiveVerdict | null {
  for (const a of addresses) {
    if (ipFamily(a) === null) continue;
    const special = specialUseReason(a);
    const p = parseAddress(a);
    const priv =
      p !== null &&
      PRIVATE_RANGES.some((r) => {
        const q = parsePrefix(r);
        return q !== null && prefixCovers(q, p);
      });
    if (special !== null || priv)
      return {
        kind: "captive",
        reason: `the network's DNS answers ${host} with ${a} (${special ?? "a private address"})`,
        portalUrl: null,
      };
  }
  return null;
}

/**
 * What `detour status` shows of captive networks. `sign-in-required` is "Sign in to this network". Times are wall
 * ms.
 */
export interface CaptiveStatus {
  state: "unknown" | "checking" | "open" | "sign-in-required";
  /** Why the last check decided what it did. */
  reason: string | null;
  /** The sign-in page, when the check found one. */
  portalUrl: string | null;
  checkedAt: number | null;
  checks: number;
  exception: CaptiveExceptionStatus;
}

export interface CaptiveExceptionStatus {
  /** open: the kill switch lets DNS and HTTP(S) to the portal through; forbidden: configuration or policy says no. */
  state: "closed" | "open" | "forbidden";
  openedAt: number | null;
  closesAt: number | null;
  portalAddresses: string[];
  resolvers: string[];
  /** Why the last exception closed: "signed in", "timed out", "connected", "disconnected". */
  closedReason: string | null;
  /** Exceptions opened since detourd started. */
  opened: number;
}

export function initialCaptiveStatus(): CaptiveStatus {
  return {
    state: "unknown",
    reason: null,
    portalUrl: null,
    checkedAt: null,
    checks: 0,
    exception: {
      state: "closed",
      openedAt: null,
      closesAt: null,
      portalAddresses: [],
      resolvers: [],
      closedReason: null,
      opened: 0,
    },
  };
}

/** The sentence the CLI and the app show for the state. */
export function captiveHeadline(s: CaptiveStatus): string | null {
  return s.state === "sign-in-required" ? "Sign in to this network" : null;
}
