/**
 * Routing for tunnels through iproute2: per-leg source routing (so each leg can be probed from its own tunnel
 * address while another leg carries the traffic) and the protected networks, swapped between legs in one batch.
 *
 * Layout in the namespace (every rule sits below kernel-libipsec's rule 220, so its table can never win):
 *
 *   pref <leg pref>  from <leg address>/32 lookup <leg table>   (table: default dev <leg device>)
 *   pref 200         lookup 5000                                 (table 5000: <protected prefix> dev <active device>,
 *                                                                 throw <gateway>/32 for every gateway inside one,
 *                                                                 throw <prefix> for every allowed local network)
 *   pref 220         lookup 220                                  (kernel-libipsec; the IPsec driver deletes it)
 *   pref 32766       lookup main
 *
 * Gateways stay out of the tunnel the way wg-quick keeps its endpoint out (there with a fwmark and
 * suppress_prefixlength 0): a `throw` route ends the protected table's lookup for that address, so the rules after
 * it (the main table) route the engines' packets to their gateway as before the tunnel was up. A per-address
 * throw rather than a socket mark, because openconnect cannot mark its sockets; the throws live in the protected
 * table itself, so they go in and out in the same `ip -batch` as the routes they carve a hole in.
 *
 * Local network access (main/core/net/local-networks.ts) uses the same mechanism: an allowed connected network
 * inside a protected prefix gets a throw of exactly its prefix, so the main table's connected route carries it (a
 * longer protected or pushed route inside it still wins, and goes into the tunnel).
 *
 * Every function states a desired state and is safe to repeat: rules are read before they are added, routes
 * are written with `replace`, and deleting what is already gone is not an error.
 */
import { run, CommandError } from "./run.ts";
import { ipArgs, ipJson } from "./ip.linux.ts";

/** The table holding the protected networks: far from the named tables (253-255) and charon's default 220. */
export const PROTECTED_TABLE = 5000;
/**
 * Rule preference of the protected table: below kernel-libipsec's 220 so table 220 can never take precedence,
 * and above every leg's source rule, so a socket bound to a standby leg's address keeps using that leg.
 */
export const PROTECTED_RULE_PREF = 200;
/** kernel-libipsec's rule preference; every rule of ours must sit below it. */
export const LIBIPSEC_RULE_PREF = 220;
/** Linux's reserved tables (unspec 0, compat 252, default 253, main 254, local 255) are never ours. */
const RESERVED_TABLES: ReadonlySet<number> = new Set([0, 252, 253, 254, 255]);

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** Linux interface names: at most 15 bytes, no whitespace or '/'. */
const IFNAME_RE = /^[A-Za-z0-9._-]{1,15}$/;

export interface LegSource {
  /** The leg's TUN device. */
  ifname: string;
  /** The leg's tunnel address (without prefix length), e.g. 198.19.11.2. */
  address: string;
  /** The leg's own routing table. */
  table: number;
  /** Rule preference of the leg's source rule: unique per leg, below PROTECTED_RULE_PREF. */
  pref: number;
  /** Namespace to act in (lab tests); unset inside detourd, which already runs where its tunnels are. */
  netns?: string;
}

export interface ProtectedRoutes {
  /** The device that carries the protected networks from now on. */
  ifname: string;
  /** IPv4 prefixes such as 198.19.0.0/24. */
  routes: readonly string[];
  table?: number;
  netns?: string;
  /**
   * Gateway addresses (IPv4, "a.b.c.d/32" or bare) that the table throws back to the rules after it, so the
   * engines' packets to them never enter a tunnel: every gateway inside one of `routes`.
   */
  bypass?: readonly string[];
  /**
   * What the protected table holds now, when the caller knows it (it staged the rule with stageProtectedRule and
   * is the table's only writer): the apply is then one iproute2 run with nothing read first.
   */
  present?: readonly RouteEntry[];
  /** Allowed local networks (IPv4 prefixes, host bits clear) thrown back to the main table; none when absent. */
  local?: readonly string[];
}

export interface TableOptions {
  table?: number;
  netns?: string;
}

export interface RouteEntry {
  dst: string;
  /** Empty for a throw. */
  dev: string;
  /** Set for a gateway's bypass; absent for a route through a device. */
  type?: "throw";
}

/** One `ip rule` as iproute2 prints it with -j (IPv4 only). */
export interface RuleEntry {
  priority: number;
  src: string;
  table: string;
}

function checkTable(table: number): void {
  if (
    !Number.isInteger(table) ||
    table < 1 ||
    table > 0xfffffffe ||
    RESERVED_TABLES.has(table) ||
    table === LIBIPSEC_RULE_PREF
  ) {
    throw new Error(`routing table ${String(table)} is reserved or out of range`);
  }
}

function checkIfname(ifname: string): void {
  if (!IFNAME_RE.test(ifname)) throw new Error(`invalid interface name ${JSON.stringify(ifname)}`);
}

function checkPrefix(cidr: string): void {
  const [addr, len, ...rest] = cidr.split("/");
  const n = Number(len);
  if (
    rest.length > 0 ||
    addr === undefined ||
    !IPV4_RE.test(addr) ||
    len === undefined ||
    !/^\d{1,2}$/.test(len) ||
    n > 32
  ) {
    throw new Error(`invalid IPv4 prefix ${JSON.stringify(cidr)}`);
  }
}

/** A bypass is one IPv4 address, given bare or as a /32; returned as the /32. */
function checkBypass(a: string): string {
  const host = a.endsWith("/32") ? a.slice(0, -3) : a;
  if (!IPV4_RE.test(host))
    throw new Error(`invalid gateway bypass ${JSON.stringify(a)} (expected an IPv4 address or /32)`);
  return `${host}/32`;
}

function checkLegSource(s: LegSource): void {
  checkIfname(s.ifname);
  if (!IPV4_RE.test(s.address))
    throw new Error(
      `invalid leg address ${JSON.stringify(s.address)} (expected an IPv4 address without prefix length)`,
    );
  checkTable(s.table);
  if (s.table === PROTECTED_TABLE)
    throw new Error(`table ${PROTECTED_TABLE} holds the protected networks; a leg needs its own`);
  if (!Number.isInteger(s.pref) || s.pref < 1 || s.pref >= PROTECTED_RULE_PREF) {
    throw new Error(
      `leg rule preference ${String(s.pref)} must be 1-${PROTECTED_RULE_PREF - 1}: above the protected rule and kernel-libipsec's 220`,
    );
  }
}

/** The rule text of a leg's source rule, as `ip rule add|del` takes it. */
export function legRuleArgs(s: Pick<LegSource, "address" | "table" | "pref">): string[] {
  return ["from", `${s.address}/32`, "lookup", String(s.table), "pref", String(s.pref)];
}

/** Plan: the commands that make a leg's source routing exist (given the rules now at its preference). */
export function planInstallLegSource(s: LegSource, rulesAtPref: readonly RuleEntry[]): string[][] {
  checkLegSource(s);
  const wanted = (r: RuleEntry): boolean => r.src === s.address && r.table === String(s.table);
  const cmds: string[][] = [
    ipArgs(s.netns, ["-4", "route", "replace", "default", "dev", s.ifname, "table", String(s.table)]),
  ];
  // The preference belongs to this leg: a stale rule there (an earlier leg's address) would misroute its probes.
  for (const r of rulesAtPref) {
    if (!wanted(r)) cmds.push(ipArgs(s.netns, ["-4", "rule", "del", "pref", String(s.pref), ...ruleSelector(r)]));
  }
  if (!rulesAtPref.some(wanted)) cmds.push(ipArgs(s.netns, ["-4", "rule", "add", ...legRuleArgs(s)]));
  return cmds;
}

function ruleSelector(r: RuleEntry): string[] {
  return [...(r.src === "all" ? [] : ["from", r.src.includes("/") ? r.src : `${r.src}/32`]), "lookup", r.table];
}

/** Plan: the commands that remove a leg's source routing; each may find nothing to remove. */
export function planRemoveLegSource(s: LegSource): string[][] {
  checkLegSource(s);
  return [
    ipArgs(s.netns, ["-4", "rule", "del", ...legRuleArgs(s)]),
    ipArgs(s.netns, ["-4", "route", "flush", "table", String(s.table)]),
  ];
}

/**
 * Plan: the `ip -batch -` input that throws every `bypass` address out of the table, points every protected
 * prefix at `ifname` (each line a replace), then deletes what the table holds beyond them (`present`: its
 * routes now), so the table ends up exactly `bypass` + `routes`. The throws come first: on a first apply, no
 * packet to a gateway may meet a route that covers it before its throw is in. A bypass wins over a route to the
 * same prefix.
 */
export function planProtectedBatch(
  ifname: string,
  routes: readonly string[],
  table = PROTECTED_TABLE,
  present: readonly RouteEntry[] = [],
  bypass: readonly string[] = [],
  local: readonly string[] = [],
): string {
  checkIfname(ifname);
  checkTable(table);
  for (const r of routes) checkPrefix(r);
  for (const l of local) checkPrefix(l);
  const gatewayThrows = bypass.map(checkBypass);
  // A local network never displaces a protected route of the same prefix: that one stays in the tunnel.
  const routedSet = new Set(routes.map(canonicalPrefix));
  const localThrows = local.map(canonicalPrefix).filter((l) => !routedSet.has(l));
  const throws = [...new Set([...gatewayThrows, ...localThrows])];
  const thrown = new Set(gatewayThrows);
  const routed = routes.filter((r) => !thrown.has(canonicalPrefix(r)));
  const wanted = new Set([...throws, ...routed.map(canonicalPrefix)]);
  const t = String(table);
  const throwLines = throws.map((b) => `route replace throw ${b} table ${t}\n`);
  const replace = routed.map((r) => `route replace ${r} dev ${ifname} table ${t}\n`);
  const extra = present
    .filter((p) => !wanted.has(canonicalPrefix(p.dst)))
    .map((p) => `route del ${p.dst} table ${t}\n`);
  return [...throwLines, ...replace, ...extra].join("");
}

/** iproute2 prints a /32 without its length: "198.19.0.1/32" and "198.19.0.1" are the same route. */
function canonicalPrefix(p: string): string {
  return p.includes("/") ? p : `${p}/32`;
}

/**
 * Plan: the `ip -force -batch -` input that deletes the protected prefixes, then the gateways' throws (missing
 * ones are skipped): a throw goes only once no route that covers its gateway is left.
 */
export function planClearBatch(
  routes: readonly string[],
  table = PROTECTED_TABLE,
  bypass: readonly string[] = [],
  local: readonly string[] = [],
): string {
  checkTable(table);
  for (const r of routes) checkPrefix(r);
  for (const l of local) checkPrefix(l);
  const throws = [...new Set([...bypass.map(checkBypass), ...local.map(canonicalPrefix)])];
  const thrown = new Set(throws);
  const routed = routes.filter((r) => !thrown.has(canonicalPrefix(r)));
  return [...routed, ...throws].map((r) => `route del ${r} table ${String(table)}\n`).join("");
}

/** The rule that sends lookups to the protected table. */
export function protectedRuleArgs(table = PROTECTED_TABLE): string[] {
  return ["lookup", String(table), "pref", String(PROTECTED_RULE_PREF)];
}

async function ip(netns: string | undefined, args: readonly string[], input?: string): Promise<void> {
  const argv = ipArgs(netns, args);
  const r = await run("ip", argv, input === undefined ? {} : { input });
  if (r.code !== 0) throw new CommandError(["ip", ...argv], r);
}

/** IPv4 rules at one preference (all of them when pref is undefined). */
export async function rulesAt(pref: number | undefined, netns?: string): Promise<RuleEntry[]> {
  const rows = await ipJson(netns, ["-4", "rule", "show", ...(pref === undefined ? [] : ["pref", String(pref)])]);
  return rows.flatMap((row) => {
    const r = row as { priority?: number; src?: string; srclen?: number; table?: string };
    if (typeof r.priority !== "number" || typeof r.table !== "string") return [];
    const src = r.src ?? "all";
    return [
      {
        priority: r.priority,
        src: r.srclen !== undefined && r.srclen !== 32 ? `${src}/${String(r.srclen)}` : src,
        table: r.table,
      },
    ];
  });
}

/** Routes in one table of the namespace, as {dst, dev}. */
export async function routesIn(table: number, netns?: string): Promise<RouteEntry[]> {
  const rows = await ipJson(netns, ["-4", "route", "show", "table", String(table)]);
  return rows.flatMap((row) => {
    const r = row as { dst?: string; dev?: string; type?: string };
    if (r.dst === undefined) return [];
    const dst = r.dst === "default" ? "0.0.0.0/0" : r.dst;
    return [r.type === "throw" ? { dst, dev: "", type: "throw" as const } : { dst, dev: r.dev ?? "" }];
  });
}

async function runPlan(cmds: readonly (readonly string[])[], tolerate: boolean): Promise<void> {
  for (const argv of cmds) {
    const r = await run("ip", argv);
    if (r.code !== 0 && !tolerate) throw new CommandError(["ip", ...argv], r);
  }
}

/**
 * Packets from the leg's tunnel address leave through the leg's device, whatever the protected routes say:
 * the leg's table holds `default dev <ifname>`, and a rule at `pref` sends `from <address>/32` there.
 * The device must exist and be up. Safe to repeat; replaces a stale rule at the same preference.
 */
export async function installLegSource(s: LegSource): Promise<void> {
  checkLegSource(s);
  await runPlan(planInstallLegSource(s, await rulesAt(s.pref, s.netns)), false);
}

/** Removes the leg's source rule and empties its table; nothing there is not an error. */
export async function removeLegSource(s: LegSource): Promise<void> {
  await runPlan(planRemoveLegSource(s), true);
}

/**
 * Routes the protected networks through `ifname`: one `ip -batch -` of `route replace` lines, so a failover
 * swap happens in a single iproute2 run and each prefix always has a route (old device, then new); the gateways'
 * throws (`bypass`) go in first, in the same run, and prefixes the table holds beyond both are deleted in it
 * too. The rule to the protected table is added when it is missing, after the table's content. Safe to repeat.
 */
export async function applyProtectedRoutes(p: ProtectedRoutes): Promise<void> {
  const table = p.table ?? PROTECTED_TABLE;
  const bypass = p.bypass ?? [];
  const local = p.local ?? [];
  planProtectedBatch(p.ifname, p.routes, table, [], bypass, local); // validate before touching anything
  // One read of each in parallel and one batch: a failover's route change is on the outage's clock, and every
  // `ip` process costs milliseconds. The routes go in before the rule that sends lookups to them.
  if (p.present !== undefined) {
    const known = planProtectedBatch(p.ifname, p.routes, table, p.present, bypass, local);
    if (known !== "") await ip(p.netns, ["-4", "-batch", "-"], known);
    return;
  }
  const [present, rules] = await Promise.all([routesIn(table, p.netns), rulesAt(PROTECTED_RULE_PREF, p.netns)]);
  let batch = planProtectedBatch(p.ifname, p.routes, table, present, bypass, local);
  if (!rules.some((r) => r.src === "all" && r.table === String(table)))
    batch += `rule add ${protectedRuleArgs(table).join(" ")}\n`;
  if (batch !== "") await ip(p.netns, ["-4", "-batch", "-"], batch);
}

/**
 * Prepares a connect's route change before there is a leg to route to: the rule that sends lookups to the
 * protected table goes in now (while the table is empty, lookups fall through it to the main table, so nothing
 * changes yet), and the table's content is read once. Returns that content, for applyProtectedRoutes' `present`.
 */
export async function stageProtectedRule(opts: TableOptions = {}): Promise<RouteEntry[]> {
  const table = opts.table ?? PROTECTED_TABLE;
  checkTable(table);
  const [present, rules] = await Promise.all([routesIn(table, opts.netns), rulesAt(PROTECTED_RULE_PREF, opts.netns)]);
  if (!rules.some((r) => r.src === "all" && r.table === String(table)))
    await ip(opts.netns, ["-4", "rule", "add", ...protectedRuleArgs(table)]);
  return present;
}

/**
 * Deletes the given protected prefixes from the table, then the gateways' throws (`bypass`), and the rule once
 * the table is empty (an entry that is already gone is skipped). Afterwards the protected networks follow the
 * main table again. `keepRule` leaves the rule (an empty table is looked through) for the next connect, which
 * then needs one iproute2 run.
 */
export async function clearProtectedRoutes(
  routes: readonly string[],
  opts: TableOptions & { keepRule?: boolean; bypass?: readonly string[]; local?: readonly string[] } = {},
): Promise<void> {
  const table = opts.table ?? PROTECTED_TABLE;
  const batch = planClearBatch(routes, table, opts.bypass ?? [], opts.local ?? []);
  // -force: keep going past prefixes that are already gone (iproute2 then exits 1, which is expected here).
  if (batch !== "") await run("ip", ipArgs(opts.netns, ["-4", "-force", "-batch", "-"]), { input: batch });
  if (opts.keepRule === true) return;
  const left = await routesIn(table, opts.netns);
  if (left.length === 0) {
    for (const r of await rulesAt(PROTECTED_RULE_PREF, opts.netns)) {
      if (r.src === "all" && r.table === String(table))
        await run("ip", ipArgs(opts.netns, ["-4", "rule", "del", ...protectedRuleArgs(table)]));
    }
  }
}

/** The protected table as it is now (status, diagnostics): each prefix and the device that carries it, or its throw. */
export async function currentProtectedRoutes(
  opts: TableOptions = {},
): Promise<{ ruleInstalled: boolean; routes: RouteEntry[] }> {
  const table = opts.table ?? PROTECTED_TABLE;
  const [rules, routes] = await Promise.all([rulesAt(PROTECTED_RULE_PREF, opts.netns), routesIn(table, opts.netns)]);
  return { ruleInstalled: rules.some((r) => r.src === "all" && r.table === String(table)), routes };
}
