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
 */
import { BlockList, isIP } from "node:net";
import { ipArgs, ipJson } from "./ip.linux.ts";
import type { CaptiveTarget } from "./platform.ts";
import { CommandError, run } from "./run.ts";

/** Before every leg's source rule (100-189, main/agent/leg-slots.ts) and the protected rule (200). */
export const CAPTIVE_RULE_PREF = 99;
/** A handful of rules at most (the check host's addresses and the network's resolvers); bounds the cleanup loop. */
const MAX_RULES = 32;

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

/** Removes every rule at the captive preference, both families; absence is not an error. */
export async function clearCaptivePath(opts: { netns?: string } = {}): Promise<void> {
  for (const fam of ["-4", "-6"]) {
    for (let i = 0; i < MAX_RULES; i++) {
      const r = await run("ip", ipArgs(opts.netns, [fam, "rule", "del", "pref", String(CAPTIVE_RULE_PREF)]));
      if (r.code !== 0) break;
    }
  }
}

/**
 * The check's way out, as state: `bind` finds the underlay address toward the targets and puts exactly their
 * rules in force (repeated with the same answer, it touches nothing), `clear` removes them.
 */
export class CaptivePath {
  readonly #opts: CaptivePathOptions;
  #applied: string | null = null;
  #chain: Promise<unknown> = Promise.resolve();

  constructor(opts: CaptivePathOptions = {}) {
    this.#opts = opts;
  }

  /**
   * Binds the check to the underlay toward `targets` (all of one family; `ifnamePrefix` names detourd's devices):
   * returns the address to bind its sockets to. Rejects when the main table has no underlay route to them (the
   * check then has no way out but a tunnel).
   */
  bind(targets: readonly CaptiveTarget[], ifnamePrefix: string): Promise<string> {
    // One at a time: a check begun on a new network may bind while the previous one's is still being stated.
    const next = this.#chain.then(() => this.#bind(targets, ifnamePrefix));
    this.#chain = next.catch(() => undefined);
    return next;
  }

  async #bind(targets: readonly CaptiveTarget[], ifnamePrefix: string): Promise<string> {
    const first = targets[0];
    if (first === undefined) throw new Error("no destination to bind the captive check to");
    const fam = isIP(first.address) === 6 ? "-6" : "-4";
    const [routes, addresses] = await Promise.all([
      ipJson(this.#opts.netns, [fam, "route", "show", "table", "main"]),
      ipJson(this.#opts.netns, [fam, "addr", "show"]),
    ]);
    const source = underlaySource(routes, addresses, first.address, ifnamePrefix);
    if (source === null) throw new Error(`no route on the underlay to ${first.address}`);
    const mine = targets.filter((t) => (isIP(t.address) === 6 ? "-6" : "-4") === fam);
    const key = JSON.stringify([source, mine]);
    if (key === this.#applied) return source;
    await clearCaptivePath(this.#opts);
    this.#applied = null;
    const batch = mine.map((t) => `rule add ${captiveRuleArgs(source, t).join(" ")}\n`).join("");
    const argv = ipArgs(this.#opts.netns, [fam, "-batch", "-"]);
    const r = await run("ip", argv, { input: batch });
    if (r.code !== 0) throw new CommandError(["ip", ...argv], r);
    this.#applied = key;
    return source;
  }

  clear(): Promise<void> {
    const next = this.#chain.then(async () => {
      this.#applied = null;
      await clearCaptivePath(this.#opts);
    });
    this.#chain = next.catch(() => undefined);
    return next;
  }
}
