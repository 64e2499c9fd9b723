/**
 * Trusted network detection, pure: what the network hands out (its resolv.conf), which rules that matches, the
 * verdict once each matching rule's pinned TLS host was checked, and what detourd should do about it. A rule counts
 * only when its TLS host answered with a pinned key: the DNS facts only pick which hosts are worth checking.
 */
import type { TrustedNetworkRuleConfig, TrustedNetworksConfig } from "./config/schema.ts";
import { canonicalIp } from "./ip-address.ts";
import type { TrustedStatus } from "./protocol/messages.ts";
import { parseAddress, parsePrefix, prefixCovers } from "./net/address-guard.ts";

/** What the underlay's resolv.conf says about the network. */
export interface NetworkDnsFacts {
  /** `domain` and `search` entries, lowercase, without a trailing dot. */
  domains: string[];
  /** `nameserver` entries, canonical. */
  servers: string[];
}

/** Reads the DNS domain and resolvers a network handed out from resolv.conf text; unknown lines are ignored. */
export function dnsFactsOf(resolvConf: string): NetworkDnsFacts {
  const domains: string[] = [];
  const servers: string[] = [];
  for (const raw of resolvConf.split("\n")) {
    const line = raw.replace(/[#;].*$/, "").trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === "domain" || key === "search") {
      for (const d of rest) {
        const v = d.toLowerCase().replace(/\.$/, "");
        if (v !== "" && !domains.includes(v)) domains.push(v);
      }
    } else if (key === "nameserver" && rest[0] !== undefined) {
      // A scoped IPv6 resolver (fe80::1%eth0) is named without its zone.
      const addr = rest[0].replace(/%.*$/, "");
      if (parseAddress(addr) !== null) {
        const c = canonicalIp(addr);
        if (!servers.includes(c)) servers.push(c);
      }
    }
  }
  return { domains, servers };
}

/**
 * Whether a rule's DNS conditions hold: every condition the rule names must (a domain among its domains, a resolver
 * among its resolvers). This alone never makes a network trusted.
 */
export function dnsMatches(rule: TrustedNetworkRuleConfig, facts: NetworkDnsFacts): boolean {
  const domainOk =
    rule.dnsDomains.length === 0 ||
    rule.dnsDomains.some((d) => facts.domains.includes(d.toLowerCase().replace(/\.$/, "")));
  const serverOk = rule.dnsServers.length === 0 || rule.dnsServers.some((s) => facts.servers.includes(canonicalIp(s)));
  return domainOk && serverOk;
}

/** The rules whose DNS conditions hold, in configuration order: their TLS hosts are the ones to check. */
export function candidateRules(config: TrustedNetworksConfig, facts: NetworkDnsFacts): TrustedNetworkRuleConfig[] {
  return config.rules.filter((r) => dnsMatches(r, facts));
}

/**
 * Whether a TLS check to `address` would be decided by the tunnel rather than the network: an address inside a
 * network the tunnel may carry (protected or allowed to be pushed) is routed into the tunnel while one is up, and
 * the organisation's own host answering there proves nothing about the network the device sits on.
 */
export function routedIntoTunnel(address: string, tunnelPrefixes: readonly string[]): boolean {
  const a = parseAddress(address);
  if (a === null) return false;
  return tunnelPrefixes.some((p) => {
    const prefix = parsePrefix(p);
    return prefix !== null && prefixCovers(prefix, a);
  });
}

/** One TLS check's outcome: the host answered with a pinned key, or why it does not count. */
export type TlsCheckResult = { ok: true } | { ok: false; reason: string };

/** What status shows: trusted by which rule, or untrusted and why (each DNS-matching rule's failure). */
export type TrustedVerdict =
  { trusted: true; rule: string; reason: string } | { trusted: false; rule: null; reason: string };

/**
 * The verdict from the DNS facts and the TLS check of each DNS-matching rule (by rule name). The first rule, in
 * configuration order, whose DNS conditions hold and whose TLS host answered with a pinned key wins; a rule whose
 * host was not checked counts as failed.
 */
export function verdictOf(
  config: TrustedNetworksConfig,
  facts: NetworkDnsFacts,
  checks: ReadonlyMap<string, TlsCheckResult>,
): TrustedVerdict {
  const candidates = candidateRules(config, facts);
  if (candidates.length === 0)
    return {
      trusted: false,
      rule: null,
      reason: `no trusted network rule matches this network's DNS (domains: ${facts.domains.join(", ") || "none"}; servers: ${facts.servers.join(", ") || "none"})`,
    };
  const failures: string[] = [];
  for (const r of candidates) {
    const c = checks.get(r.name) ?? { ok: false, reason: "its TLS host was not checked" };
    if (c.ok)
      return {
        trusted: true,
        rule: r.name,
        reason: `trusted network "${r.name}": DNS matches and ${r.tlsHost.address}:${String(r.tlsHost.port)} answered with a pinned key`,
      };
    failures.push(`"${r.name}": ${c.reason}`);
  }
  return {
    trusted: false,
    rule: null,
    reason: `the DNS matches, but no pinned TLS host answered (${failures.join("; ")})`,
  };
}

export type TrustedAction = { type: "connect" } | { type: "disconnect" } | { type: "none" };

/**
 * What to do after a verdict. On a trusted network with policy "disconnect", a tunnel is taken down and none is
 * started. Elsewhere a connection starts when always-on (autoConnect) wants one, or when the tunnel was taken down
 * because of a trusted network the device has now left; never while one is up or being made.
 */
export function trustedAction(input: {
  verdict: TrustedVerdict;
  policy: TrustedNetworksConfig["policy"];
  /** The connection is down (disconnected, not connecting). */
  idle: boolean;
  autoConnect: boolean;
  /** detourd took the tunnel down (or kept it down) because the network was trusted. */
  heldDownByTrust: boolean;
}): TrustedAction {
  const stayDown = input.verdict.trusted && input.policy === "disconnect";
  if (stayDown) return input.idle ? { type: "none" } : { type: "disconnect" };
  if (input.idle && (input.autoConnect || input.heldDownByTrust)) return { type: "connect" };
  return { type: "none" };
}

/**
 * One sentence for `detour status` and the tray: which rule matched and what that means, or null when there is
 * nothing to say (no trusted networks configured and no always-on).
 */
export function trustedSentence(t: TrustedStatus | undefined): string | null {
  if (t === undefined) return null;
  const alwaysOn = t.allowDisconnect ? "" : " Always on: your organisation does not allow disconnecting.";
  if (!t.configured) return alwaysOn === "" ? null : alwaysOn.trim();
  if (t.trusted && t.rule !== null)
    return t.policy === "disconnect"
      ? `On trusted network ${t.rule}: Detour stays disconnected here.${alwaysOn}`
      : `On trusted network ${t.rule}; your organisation's policy connects here anyway.${alwaysOn}`;
  return `Not a trusted network: ${t.reason}.${alwaysOn}`;
}
