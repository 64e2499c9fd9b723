/** `npm run lab -- <command>`: the lab's command line. Run `npm run lab -- help` for the commands. */
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import { collectorPaths, collectorUrl, DASHBOARD_PORT, dashboardForwarder, LAB_ORG } from "./collector.ts";
import { GATEWAY_ENGINES, SHORT_IKE_LIFETIMES, type GatewayEngine } from "./gateway-engines.ts";
import { describeDistance } from "./distance.ts";
import {
  DIRECTIONS,
  IMPAIR_FAMILIES,
  IMPAIR_PROTOS,
  IMPAIR_TARGETS,
  describeImpairment,
  type ImpairmentSpec,
} from "./impair.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import { portalCommand } from "./captive.ts";
import * as lab from "./lab.ts";
import { formatSelftest, selftest } from "./selftest.ts";
import { DISTANCE_PROFILES, GATEWAY_NAMES, NETWORK_NAMES, USER_DISTANCES, WIFI_SHAPES } from "./topology.ts";

const userDistances = GATEWAY_NAMES.map((g) => `${g} ${String(USER_DISTANCES[g].rttMs)} ms`).join(", ");

const HELP = `Detour network lab: real WireGuard, IKEv2 and AnyConnect gateways in network namespaces.

usage: npm run lab -- <command> [options]

  up [--distance user|none] [--tunnel split|full] [--wifi direct|nat] [--short-ike-lifetimes]
                             create namespaces, credentials, gateways (3 x wireguard-go, charon, ocserv), corp, DNS,
                             the telemetry collector. --distance user (default): each gateway is as far as users
                             have it, ${userDistances} round trip with a few ms of jitter; none: 0 ms
                             everywhere, for benchmarks that compare against baselines. --tunnel full: the client
                             protects 0.0.0.0/0 and the gateways carry everything (IKEv2 offers 0.0.0.0/0, ocserv
                             the default route, NAT to the underlay); default split: corp only.
                             --wifi nat: the client's wifi is behind a home router's NAT (detour-<id>-home; the
                             client at 198.18.202.2, gateways see 198.18.0.2), as the mobile network is behind
                             its carrier's, so a move shows the gateway one NAT address for another (the roaming
                             tests and bench build this); default direct: the client on the lab's router itself
                             --short-ike-lifetimes: the IKEv2 gateways rekey the CHILD_SA every 15 s, the IKE_SA
                             every 20 s, and ask for reauthentication every ~30 s (default: strongSwan's hours)
  down                       remove everything of the lab (also after a crash or kill -9)
  status [--json]            namespaces, engines and PIDs, addresses, distances, client config path, impairments,
                             the client's network and whether it sleeps
  selftest [--json]          prove every gateway, protocol and impairment with the plain engine tools
  impair <target> block|reject [proto] [--dir both|up|down] [--family ipv4|ipv6]
  impair <target> loss <percent> [proto] [--dir both|up|down] [--family ipv4|ipv6]
  impair <target> delay <ms> [proto] [--jitter <ms>] [--dir both|up|down] [--family ipv4|ipv6]
                             target: ${IMPAIR_TARGETS.join(", ")} (client = the client's uplink)
                             proto:  ${IMPAIR_PROTOS.join(", ")} (default all)
                             loss and delay apply to each selected direction
  lift <impairment-id>       remove one impairment (ids are shown by impair and status)
  heal                       lift every impairment and restart every killed engine (the distances stay)
  kill <gateway> [engine]    SIGKILL one engine (${GATEWAY_ENGINES.join(", ")}) or, default, the whole gateway
                             (all engines, and its link goes silent)
  restore <gateway> [engine] restart killed engines with the same keys; lifts a whole-gateway kill
  move client <network> [--gap <ms>]
                             move the client to ${NETWORK_NAMES.join(" or ")} as an OS does: the old link goes down and
                             loses its addresses, --gap ms (default 0) offline, then the new link comes up with its
                             address, default routes via that network's router and its resolver in resolv.conf.
                             wifi: the lab's router, no NAT (where \`up\` puts the client); mobile: its own router
                             (detour-<id>-mob) behind a NAT, its own resolver: a gateway sees another source address
  sleep client <seconds>     freeze every process of the client namespace (detourd, its engines) as a suspended
                             laptop, then thaw them; the gateways drop the client on their own timers meanwhile
                             (IKEv2 DPD: after ~37-67 s; AnyConnect: TLS after ~15 s, the cookie after 2 min;
                             WireGuard keys after 180 s). The clocks do not jump (see README). Ctrl-C wakes it early
  exec <namespace> -- <cmd>  run a command in a lab namespace (client, router, mob, gw1..gw3, corp, dns, collector);
                             \`detour\` there is this checkout's CLI, talking to the lab's detourd
  agent start [--connect]    run detourd in the client namespace with the lab's client config
  agent stop | agent logs    stop it (it disconnects cleanly first) | print the end of its log
  dashboard [--port N]       serve the collector's dashboard on 127.0.0.1:N (default ${DASHBOARD_PORT}) for a browser on
                             this host, until Ctrl-C (a socat forwarder into the collector namespace; not used by tests)
  leftovers                  list anything of the lab still on the host (exit 1 if any)
  portal on|off              put the client behind a captive portal (DNS and HTTP answered by a sign-in page,
                             everything else dropped, until a form POST signs it in) or take the portal away

options: --id <lab id> (default "${lab.DEFAULT_LAB_ID}", or DETOUR_LAB_ID) to run several labs side by side.`;

function fail(msg: string): never {
  throw new UsageError(msg);
}
class UsageError extends Error {}

function oneOf<T extends string>(what: string, v: string | undefined, allowed: readonly T[]): T {
  if (v === undefined || !(allowed as readonly string[]).includes(v))
    fail(`${what} must be one of ${allowed.join(", ")}; got ${v ?? "nothing"}`);
  return v as T;
}

function num(what: string, v: string | undefined): number {
  const n = Number(v);
  if (v === undefined || v === "" || !Number.isFinite(n)) fail(`${what} must be a number; got ${v ?? "nothing"}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const dashdash = argv.indexOf("--");
  const own = dashdash >= 0 ? argv.slice(0, dashdash) : argv;
  const rest = dashdash >= 0 ? argv.slice(dashdash + 1) : [];
  const { values, positionals } = parseArgs({
    args: own,
    allowPositionals: true,
    options: {
      id: { type: "string", default: process.env.DETOUR_LAB_ID ?? lab.DEFAULT_LAB_ID },
      json: { type: "boolean", default: false },
      dir: { type: "string", default: "both" },
      jitter: { type: "string", default: "0" },
      family: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
      connect: { type: "boolean", default: false },
      port: { type: "string", default: String(DASHBOARD_PORT) },
      distance: { type: "string", default: "user" },
      tunnel: { type: "string", default: "split" },
      wifi: { type: "string", default: "direct" },
      "short-ike-lifetimes": { type: "boolean", default: false },
      gap: { type: "string", default: "0" },
    },
  });
  const id = values.id;
  const [cmd, ...args] = positionals;
  if (values.help || cmd === undefined || cmd === "help") {
    console.log(HELP);
    return cmd === undefined && !values.help ? 2 : 0;
  }
  switch (cmd) {
    case "up": {
      const s = await lab.up(id, {
        distance: oneOf("--distance", values.distance, DISTANCE_PROFILES),
        tunnel: oneOf("--tunnel", values.tunnel, ["split", "full"] as const),
        wifi: oneOf("--wifi", values.wifi, WIFI_SHAPES),
        ikeLifetimes: values["short-ike-lifetimes"] ? SHORT_IKE_LIFETIMES : null,
      });
      console.log(`lab "${id}" is up in ${s.upMs} ms (${s.options.tunnel} tunnel, ${s.options.wifi} wifi)`);
      const distances = (await lab.status(id)).distances;
      console.log(
        `  distances:     ${distances.length === 0 ? "none (every gateway at 0 ms)" : distances.map(describeDistance).join("; ")}`,
      );
      console.log(`  client config: ${s.clientConfig}`);
      console.log(
        `  collector:     ${collectorUrl(lab.topologyOf(id))} (OTLP/HTTP); dashboard: npm run lab -- dashboard`,
      );
      console.log(`  look around:   npm run lab -- status   |   npm run lab -- selftest`);
      console.log(`  take it down:  npm run lab -- down`);
      return 0;
    }
    case "down": {
      const r = await lab.down(id);
      console.log(
        r.namespaces.length === 0 && !r.labDir
          ? `lab "${id}" was not up; nothing to remove`
          : `lab "${id}" removed: ${r.namespaces.length} namespaces${r.sockets.length > 0 ? `, ${r.sockets.length} stale sockets` : ""}`,
      );
      const left = await lab.leftovers(id);
      if (left.length > 0) {
        console.error(`still present after down:\n  ${left.join("\n  ")}`);
        return 1;
      }
      return 0;
    }
    case "status": {
      const s = await lab.status(id);
      if (values.json) {
        console.log(JSON.stringify(s, null, 2));
        return 0;
      }
      console.log(
        `lab "${s.id}": ${s.up ? "up" : "down"}${s.upMs !== undefined ? ` (up took ${s.upMs} ms)` : ""}${s.tunnel !== undefined ? `, ${s.tunnel} tunnel` : ""}${s.wifi !== undefined ? `, ${s.wifi} wifi` : ""}`,
      );
      if (s.clientConfig !== undefined) console.log(`client config: ${s.clientConfig}`);
      if (s.network !== undefined)
        console.log(
          `client network: ${s.network ?? "none (between networks)"}${s.asleep ? `, asleep since ${new Date(s.asleep.since).toISOString()}` : ""}`,
        );
      for (const n of s.namespaces) console.log(`  ns ${n.name.padEnd(24)} ${n.exists ? "present" : "missing"}`);
      for (const e of s.engines)
        console.log(
          `  ${e.gateway} ${e.engine.padEnd(10)} pid ${String(e.pid ?? "-").padEnd(8)} ${e.alive ? "running" : "stopped"}`,
        );
      for (const v of s.services)
        console.log(`  ${v.name.padEnd(14)} pid ${String(v.pid).padEnd(8)} ${v.alive ? "running" : "stopped"}`);
      for (const [k, v] of Object.entries(s.addresses)) console.log(`  ${k.padEnd(10)} ${v}`);
      if (s.distance !== undefined)
        console.log(
          s.distances.length === 0 ? `  distance ${s.distance}: every gateway at 0 ms` : `  distance ${s.distance}:`,
        );
      for (const d of s.distances)
        console.log(
          `    ${describeDistance(d)}, delayq pids ${d.pids.up} ${d.pids.down} ${d.alive ? "running" : "NOT running (heal restarts them)"}`,
        );
      console.log(
        s.impairments.length === 0 ? "  no impairments" : s.impairments.map((i) => `  ${i.description}`).join("\n"),
      );
      return 0;
    }
    case "impair": {
      const target = oneOf("target", args[0], IMPAIR_TARGETS);
      const kind = oneOf("impairment", args[1], ["block", "reject", "loss", "delay"] as const);
      const dir = oneOf("--dir", values.dir, DIRECTIONS);
      let spec: ImpairmentSpec;
      if (kind === "block" || kind === "reject") {
        spec = { kind, target, dir, proto: args[2] === undefined ? "all" : oneOf("proto", args[2], IMPAIR_PROTOS) };
      } else if (kind === "loss") {
        spec = {
          kind,
          target,
          dir,
          percent: num("loss percent", args[2]),
          proto: args[3] === undefined ? "all" : oneOf("proto", args[3], IMPAIR_PROTOS),
        };
      } else {
        spec = {
          kind,
          target,
          dir,
          delayMs: num("delay ms", args[2]),
          jitterMs: num("--jitter", values.jitter),
          proto: args[3] === undefined ? "all" : oneOf("proto", args[3], IMPAIR_PROTOS),
        };
      }
      if (values.family !== undefined) spec = { ...spec, family: oneOf("--family", values.family, IMPAIR_FAMILIES) };
      const imp = await lab.impair(spec, id);
      console.log(describeImpairment(imp));
      return 0;
    }
    case "lift":
      await lab.lift(args[0] ?? fail("lift needs an impairment id such as i1"), id);
      return 0;
    case "heal":
      await lab.heal(id);
      console.log("every impairment lifted, every engine running");
      return 0;
    case "kill":
    case "restore": {
      const gw = args[0] ?? fail(`${cmd} needs a gateway name`);
      const engine =
        args[1] === undefined ? "all" : oneOf<GatewayEngine | "all">("engine", args[1], [...GATEWAY_ENGINES, "all"]);
      if (cmd === "kill") await lab.kill(gw, engine, id);
      else await lab.restore(gw, engine, id);
      console.log(`${gw} ${engine === "all" ? "(whole gateway)" : engine}: ${cmd === "kill" ? "killed" : "restored"}`);
      return 0;
    }
    case "move": {
      oneOf("move: the namespace", args[0], ["client"] as const);
      const to = oneOf("move: the network", args[1], NETWORK_NAMES);
      const r = await lab.move(to, { gapMs: num("--gap", values.gap) }, id);
      console.log(
        `client moved ${r.from ?? "(between networks)"} -> ${r.to}: offline for ${String(r.onlineAt - r.offlineAt)} ms` +
          (r.resolverChanged ? `, resolver now ${lab.topologyOf(id).networks[r.to].resolver}` : ""),
      );
      return 0;
    }
    case "sleep": {
      oneOf("sleep: the namespace", args[0], ["client"] as const);
      const seconds = num("sleep seconds", args[1]);
      const abort = new AbortController();
      const onSignal = (): void => {
        abort.abort();
      };
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      try {
        const r = await lab.sleepClient(seconds, id, abort.signal);
        console.log(
          `client slept ${((r.wokeAt - r.frozen.at) / 1000).toFixed(1)} s (${String(r.frozen.pids.length)} processes, ${r.frozen.method})`,
        );
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
      return 0;
    }
    case "exec":
      return lab.execIn(
        args[0] ?? fail("exec needs a namespace: client, router, gw1..gw3, corp, dns, collector"),
        rest,
        id,
      );
    case "selftest": {
      const r = await selftest(id);
      console.log(values.json ? JSON.stringify(r, null, 2) : formatSelftest(r));
      return r.ok ? 0 : 1;
    }
    case "agent": {
      const sub = oneOf("agent command", args[0], ["start", "stop", "logs"] as const);
      if (sub === "start") {
        const a = await agentStart(id, { connect: values.connect });
        console.log(`detourd runs in ${lab.topologyOf(id).client.ns} (pid ${a.pid}); socket ${a.socket}; log ${a.log}`);
        console.log("  try: npm run lab -- exec client -- detour status");
      } else if (sub === "stop") {
        console.log((await agentStop(id)) ? "detourd stopped" : "detourd was not running");
      } else {
        console.log(agentLogs(id));
      }
      return 0;
    }
    case "dashboard": {
      const state = lab.loadState(id);
      const port = num("--port", values.port);
      const [file, ...argv] = dashboardForwarder(lab.topologyOf(id), port);
      console.log(`Detour dashboard of lab "${id}": open http://127.0.0.1:${port}/ in a browser on this host`);
      console.log(
        `  log in as "${LAB_ORG}" with the read token as password: ${collectorPaths(state.labDir).tokensFile} (role "read")`,
      );
      console.log("  Prometheus: GET /metrics with Authorization: Bearer <read token>. Ctrl-C stops the forwarder.");
      const r = spawnSync(file ?? "socat", argv, { stdio: "inherit" });
      if (r.error !== undefined) throw r.error;
      return r.status ?? 1;
    }
    case "portal":
      console.log(await portalCommand(oneOf("portal", args[0], ["on", "off"] as const), id));
      return 0;
    case "leftovers": {
      const left = await lab.leftovers(id);
      console.log(left.length === 0 ? "nothing left" : left.join("\n"));
      return left.length === 0 ? 0 : 1;
    }
    default:
      fail(`unknown command "${cmd}"; run \`npm run lab -- help\``);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(
      e instanceof UsageError ? `usage error: ${e.message}` : `lab: ${e instanceof Error ? e.message : String(e)}`,
    );
    process.exitCode = e instanceof UsageError ? 2 : 1;
  },
);
