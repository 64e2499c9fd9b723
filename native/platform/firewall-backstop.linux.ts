/**
 * The kill switch's second layer, independent of nftables: while the kill switch holds the protected networks
 * back, a routing table that the kernel consults after the tunnel's (and before main) makes them unroutable
 * outside a tunnel. `nft flush ruleset` (a firewall manager's reload, an admin) leaves it alone, so protected
 * traffic stays blocked in the gap until detourd restores its table.
 *
 *   pref 200    lookup 5000   the protected table (routes.linux.ts): protected networks via the active tunnel
 *   pref 220    lookup 220    kernel-libipsec's
 *   pref 230    lookup 5001   this backstop: `prohibit <protected prefix>`, and `throw <gateway>/32` for every
 *                             gateway inside one, so the engines still reach it through main (and `throw
 *                             <prefix>` for every allowed local network, which main routes to its device)
 *   pref 32766  lookup main
 *
 * Only split tunnels get it: in a full tunnel the protected network is everything, and a prohibit default route
 * would also need an exception for the local network, the resolvers and DHCP; there, nftables is the only layer.
 * Applying states the whole desired table: new entries go in before stale ones go, so no lookup finds it empty.
 */
import { CommandError, inNetns, run } from "./run.ts";

export const BACKSTOP_TABLE = 5001;
/** After kernel-libipsec's 220 (its routes carry IPsec legs) and before main (32766). */
export const BACKSTOP_RULE_PREF = 230;

export interface Backstop {
  /** IPv4 prefixes made unroutable outside a tunnel. */
  prefixes: readonly string[];
  /** IPv4 gateway addresses (and allowed local networks) inside them that stay reachable through the main table. */
  bypass: readonly string[];
}

export interface BackstopOptions {
  netns?: string;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

function checkPrefix(p: string): string {
  const [a, len, ...rest] = p.split("/");
  if (
    rest.length > 0 ||
    a === undefined ||
    !IPV4_RE.test(a) ||
    (len !== undefined && !/^([0-9]|[12]\d|3[0-2])$/.test(len))
  )
    throw new Error(`backstop: invalid IPv4 prefix ${JSON.stringify(p)}`);
  return len === undefined ? `${a}/32` : p;
}

async function ip(args: readonly string[], opts: BackstopOptions, input?: string): Promise<string> {
  const argv = inNetns(opts.netns, ["ip", ...args]);
  const [file, ...rest] = argv;
  const r = await run(file, rest, input === undefined ? {} : { input });
  if (r.code !== 0) throw new CommandError(argv, r);
  return r.stdout;
}

interface RouteJson {
  dst?: string;
  type?: string;
}

/** The table's entries as "type dst" (e.g. "prohibit 198.19.0.0/24", "throw 198.19.0.7/32"). */
async function present(opts: BackstopOptions): Promise<Set<string>> {
  const argv = inNetns(opts.netns, ["ip", "-4", "-j", "route", "show", "table", String(BACKSTOP_TABLE)]);
  const [file, ...rest] = argv;
  const r = await run(file, rest);
  // A table that never held a route does not exist yet: that is an empty one.
  if (r.code !== 0 && /table does not exist/.test(r.stderr)) return new Set();
  if (r.code !== 0) throw new CommandError(argv, r);
  const out = r.stdout;
  const routes = (out.trim() === "" ? [] : JSON.parse(out)) as RouteJson[];
  return new Set(
    routes.map((r) => {
      const dst = r.dst === undefined ? "" : r.dst.includes("/") ? r.dst : `${r.dst}/32`;
      return `${r.type ?? "unicast"} ${dst}`;
    }),
  );
}

async function ruleIn(opts: BackstopOptions): Promise<boolean> {
  const out = await ip(["-4", "-j", "rule", "show", "pref", String(BACKSTOP_RULE_PREF)], opts);
  const rules = (out.trim() === "" ? [] : JSON.parse(out)) as { table?: string }[];
  return rules.some((r) => r.table === String(BACKSTOP_TABLE));
}

/** Puts the backstop in force (null or no prefixes: removes it). Safe to repeat. */
export async function applyBackstop(b: Backstop | null, opts: BackstopOptions = {}): Promise<void> {
  if (b === null || b.prefixes.length === 0) return removeBackstop(opts);
  const want = new Set([
    ...b.prefixes.map((p) => `prohibit ${checkPrefix(p)}`),
    ...b.bypass.map((g) => `throw ${checkPrefix(g)}`),
  ]);
  const have = await present(opts);
  const lines = [
    ...[...want].map((e) => `route replace ${e} table ${String(BACKSTOP_TABLE)}`),
    ...[...have].filter((e) => !want.has(e)).map((e) => `route del ${e} table ${String(BACKSTOP_TABLE)}`),
  ];
  if (!(await ruleIn(opts))) lines.push(`rule add pref ${String(BACKSTOP_RULE_PREF)} lookup ${String(BACKSTOP_TABLE)}`);
  await ip(["-4", "-batch", "-"], opts, lines.join("\n") + "\n");
}

/** Removes the rule and empties the table; absence is not an error. */
export async function removeBackstop(opts: BackstopOptions = {}): Promise<void> {
  // The rule goes first: with it gone, the table is no longer consulted while it empties.
  for (let i = 0; i < 8 && (await ruleIn(opts)); i++)
    await ip(["-4", "rule", "del", "pref", String(BACKSTOP_RULE_PREF), "lookup", String(BACKSTOP_TABLE)], opts);
  const have = await present(opts);
  if (have.size > 0)
    await ip(
      ["-4", "-batch", "-"],
      opts,
      [...have].map((e) => `route del ${e} table ${String(BACKSTOP_TABLE)}`).join("\n") + "\n",
    );
}
