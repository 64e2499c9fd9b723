/**
 * The captive check's way out on Linux: always the underlay (the physical network), never a tunnel, whatever
 * detourd's own tables route (a full tunnel's 0.0.0.0/0, a half-dead tunnel while it retries, kernel-libipsec's
 * table 220). The check's sockets are bound to the underlay's own address (the source the main table's route to
 * the check host would use), and a rule for exactly that source, destination, protocol and port sends the lookup to
 * the main table ahead of every table of detourd's:
 *
 *   pref 99     from <underlay address> to <check host or resolver> ipproto tcp|udp dport <port> lookup main
 *   pref 100+   the legs' source rules, pref 200 the protected table, pref 220 kernel-libipsec, 32766 main
 *
 * Why a bound source plus a rule, not the alternatives: Node cannot set SO_BINDTODEVICE or SO_MARK on its sockets
 * (no setsockopt), and a rule keyed on the destination alone would take every process's traffic to the check host
 * out of the tunnel, where the kill switch would then drop it; a rule keyed on the bound source only matches
 * sockets that asked for the underlay's address, and the kill switch still lets only detourd's group through it.
 * Bound, the check also leaves with the underlay's source address, which a route change alone would not give it.
 * The rules exist only while a lookup or GET of the check runs (a lease each), so none stays in the routing
 * policy between checks; a crashed detourd's are reclaimed at its next start by their preference.
 */
import { BlockList, isIP } from "node:net";
import { ipArgs, ipJson } from "./ip.linux.ts";
import type { CaptiveTarget } from "./platform.ts";
import { CommandError, run } from "./run.ts";

/** Before every leg's source rule (100-189, main/agent/leg-slots.ts) and the protected rule (200). */
export const CAPTIVE_RULE_PREF = 99;

interface MainRoute {
  dst: string;
  dev: string;
  gateway: string | null;
  prefsrc: string | null;
  metric: number;
}

function family(address: string): "ipv4" | "ipv6" | null {
  const v = isIP(address);
  return v === 4 ? "ipv4" : v === 6 ? "ipv6" : null;
}

/** detourd's tunnel devices (and loopback) are never the underlay. */
function ownDevice(dev: string, ifnamePrefix: string): boolean {
  return dev === "lo" || dev.startsWith(`${ifnamePrefix}-`) || /^ipsec\d+$/.test(dev);
}

function covers(dst: string, address: string): number | null {
  const fam = family(address);
  if (fam === null) return null;
  if (dst === "default") return 0;
  const [net, lenText] = dst.split("/");
  if (net === undefined || family(net) !== fam) return null;
  const len = lenText === undefined ? (fam === "ipv4" ? 32 : 128) : Number(lenText);
  const b = new BlockList();
  b.addSubnet(net, len, fam);
  return b.check(address, fam) ? len : null;
}

/**
 * The underlay address a socket to `destination` should be bound to: the main table's most specific usable route
 * to it (lowest metric among equals; never one of detourd's devices), its preferred source, or else the device's
 * address of that family whose subnet holds the next hop (or the destination), or else its first global one.
 * Null: the main table has no underlay route there. Pure: `routes` is `ip -j route show table main` of the
 * destination's family, `addresses` is `ip -j addr show`.
 */
export function underlaySource(
  routes: readonly unknown[],
  addresses: readonly unknown[],
  destination: string,
  ifnamePrefix: string,
): string | null {
  const fam = family(destination);
  if (fam === null) return null;
  let best: { route: MainRoute; len: number } | null = null;
  for (const row of routes) {
    const r = row as Record<string, unknown>;
    if (typeof r.dst !== "string" || typeof r.dev !== "string") continue;
    if ((r.type ?? "unicast") !== "unicast" || ownDevice(r.dev, ifnamePrefix)) continue;
    if (Array.isArray(r.flags) && r.flags.includes("linkdown")) continue;
    const len = covers(r.dst, destination);
    if (len === null) continue;
    const route: MainRoute = {
      dst: r.dst,
      dev: r.dev,
      gateway: typeof r.gateway === "string" ? r.gateway : null,
      prefsrc: typeof r.prefsrc === "string" ? r.prefsrc : null,
      metric: typeof r.metric === "number" ? r.metric : 0,
    };
    if (best === null || len > best.len || (len === best.len && route.metric < best.route.metric))
      best = { route, len };
  }
  if (best === null) return null;
  if (best.route.prefsrc !== null) return best.route.prefsrc;
  const link = addresses.find((a) => (a as { ifname?: unknown }).ifname === best.route.dev) as
    { addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[] } | undefined;
  const own = (link?.addr_info ?? []).filter(
    (i) =>
      i.family === (fam === "ipv4" ? "inet" : "inet6") &&
      typeof i.local === "string" &&
      (i.scope ?? "global") === "global",
  );
  const toward = best.route.gateway ?? destination;
  const onLink = own.find(
    (i) => i.prefixlen !== undefined && covers(`${String(i.local)}/${String(i.prefixlen)}`, toward) !== null,
  );
  return (onLink ?? own[0])?.local ?? null;
}

/** The `ip rule` arguments of one target's rule (without add/del). */
export function captiveRuleArgs(source: string, t: CaptiveTarget): string[] {
  const host = isIP(t.address) === 6 ? "128" : "32";
  const src = isIP(source) === 6 ? "128" : "32";
  return [
    "from",
    `${source}/${src}`,
    "to",
    `${t.address}/${host}`,
    "ipproto",
    t.protocol,
    "dport",
    String(t.port),
    "lookup",
    "main",
    "pref",
    String(CAPTIVE_RULE_PREF),
  ];
}

export interface CaptivePathOptions {
  /** Namespace to act in (lab tests); unset inside detourd. */
  netns?: string;
}

/** The check's hold on the underlay: the address to bind to, and the release of its rules once done. */
export interface CaptiveLease {
  source: string;
  release(): Promise<void>;
}

/** A rule as a comparable key: source, destination, protocol, port. */
function ruleKey(source: string, t: CaptiveTarget): string {
  return `${source}|${t.address}|${t.protocol}|${String(t.port)}`;
}

function familyFlag(address: string): "-4" | "-6" {
  return isIP(address) === 6 ? "-6" : "-4";
}

/** The rules at the captive preference now (one family), by key, each with the arguments that delete it. */
async function presentRules(fam: "-4" | "-6", netns: string | undefined): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for (const row of await ipJson(netns, [fam, "rule", "show", "pref", String(CAPTIVE_RULE_PREF)])) {
    const r = row as { src?: string; dst?: string; ipproto?: string; dport?: number };
    if (r.src === undefined || r.dst === undefined || r.dport === undefined) continue;
    if (r.ipproto !== "tcp" && r.ipproto !== "udp") continue;
    const t: CaptiveTarget = { address: r.dst, protocol: r.ipproto, port: r.dport };
    out.set(ruleKey(r.src, t), captiveRuleArgs(r.src, t));
  }
  return out;
}

/**
 * The check's way out, as state: a lease finds the underlay address toward its targets and puts their rules in
 * force for as long as it is held (a check's lookup, or its GET); the rules in force are always exactly those of
 * the leases held, so none outlives the check that needed it. Changes are made one at a time and touch only the
 * rules that differ, so a check in flight never loses its rule to another one's.
 */
export class CaptivePath {
  readonly #opts: CaptivePathOptions;
  readonly #leases = new Map<number, { source: string; targets: readonly CaptiveTarget[] }>();
  #nextLease = 0;
  #chain: Promise<unknown> = Promise.resolve();

  constructor(opts: CaptivePathOptions = {}) {
    this.#opts = opts;
  }

  /**
   * Binds the check to the underlay toward `targets` (all of one family; `ifnamePrefix` names detourd's devices):
   * resolves with the address to bind its sockets to and the release of the rules. Rejects when the main table has
   * no underlay route to them (the check then has no way out but a tunnel).
   */
  lease(targets: readonly CaptiveTarget[], ifnamePrefix: string): Promise<CaptiveLease> {
    return this.#serial(async () => {
      const first = targets[0];
      if (first === undefined) throw new Error("no destination to bind the captive check to");
      const fam = familyFlag(first.address);
      const [routes, addresses] = await Promise.all([
        ipJson(this.#opts.netns, [fam, "route", "show", "table", "main"]),
        ipJson(this.#opts.netns, [fam, "addr", "show"]),
      ]);
      const source = underlaySource(routes, addresses, first.address, ifnamePrefix);
      if (source === null) throw new Error(`no route on the underlay to ${first.address}`);
      const id = this.#nextLease++;
      this.#leases.set(id, { source, targets: targets.filter((t) => familyFlag(t.address) === fam) });
      try {
        await this.#state(fam);
      } catch (err) {
        this.#leases.delete(id);
        throw err;
      }
      return {
        source,
        release: () =>
          this.#serial(async () => {
            if (this.#leases.delete(id)) await this.#state(fam);
          }),
      };
    });
  }

  #serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.#chain.then(f);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  /** Puts exactly the held leases' rules of one family in force: adds the missing ones, deletes the rest. */
  async #state(fam: "-4" | "-6"): Promise<void> {
    const wanted = new Map<string, string[]>();
    for (const { source, targets } of this.#leases.values())
      for (const t of targets)
        if (familyFlag(t.address) === fam) wanted.set(ruleKey(source, t), captiveRuleArgs(source, t));
    const present = await presentRules(fam, this.#opts.netns);
    const lines = [
      ...[...wanted].filter(([k]) => !present.has(k)).map(([, a]) => `rule add ${a.join(" ")}\n`),
      ...[...present].filter(([k]) => !wanted.has(k)).map(([, a]) => `rule del ${a.join(" ")}\n`),
    ];
    if (lines.length === 0) return;
    const argv = ipArgs(this.#opts.netns, [fam, "-batch", "-"]);
    const r = await run("ip", argv, { input: lines.join("") });
    if (r.code !== 0) throw new CommandError(["ip", ...argv], r);
  }
}
