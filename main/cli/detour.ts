/**
 * The `detour` command: a thin client of detourd's control socket. Exit codes: 0 ok, 1 the daemon answered with
 * an error (or the connection failed), 2 usage, 3 detourd is not running, 4 a drill failed or was refused.
 */
import { parseArgs } from "node:util";
import { ControlClient, isControlError, type ControlClientOptions } from "../client/control-client.ts";
import { DEFAULT_SLA_MS, parseSlaMs } from "../core/drill.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { diagMain } from "./diag.ts";
import { formatDrill, formatEvent, formatGateways, formatKillSwitch, formatLastRace, formatStatus } from "./format.ts";
import { formatPolicyStatus, POLICY_USAGE, runPolicyCli } from "./policy-commands.ts";

const EXIT_OK = 0;
const EXIT_DAEMON_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_NOT_RUNNING = 3;
/** Scripts running quarterly drills tell "the SLA was not shown to be met" from "could not ask" by this code. */
const EXIT_DRILL_FAILED = 4;

const USAGE = `usage: detour [--socket <path>] <command> [--json]

commands:
  status [--json]     what the connection is doing, its last race and last failover
  connect             ask detourd to connect (follow with \`detour events\`)
  disconnect          ask detourd to disconnect
  gateways [--json]   gateway candidates with probe results, in ranking order
  race [--json]       the last race: every leg with its times and outcome
  events [--json]     stream connection events until Ctrl-C
  drill [--sla-ms N] [--json]
                      failover drill: block the active gateway for this host only, measure how long
                      detection and restoration take, lift the block, pass or fail against the SLA
                      (default ${DEFAULT_SLA_MS} ms); exit 4 if the drill failed or was refused
  policy ..., prefs ...  managed policy and preferences (see below)
  diag [--out <file>] [--upload]   write a diagnostic bundle (secrets removed; \`detour diag --help\`)
  diag inspect <file> print a bundle's summary and verify its hashes (offline)

options:
  --socket <path>     detourd's control socket (default: $DETOUR_SOCKET or ${DEFAULT_SOCKET_PATH})
  --json              machine-readable output (JSON; for events, one JSON object per line)
  -h, --help          this help

${POLICY_USAGE}`;

const JSON_COMMANDS = new Set(["status", "gateways", "race", "events", "drill"]);
const COMMANDS = new Set([...JSON_COMMANDS, "connect", "disconnect"]);

class UsageError extends Error {}

interface Invocation {
  command: string;
  json: boolean;
  socket: string;
  /** drill only: the SLA asked for, or undefined for the daemon's default. */
  slaMs?: number;
}

function parse(argv: string[]): Invocation | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: "string" },
        json: { type: "boolean", default: false },
        "sla-ms": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) return "help";
  const [command, ...rest] = positionals;
  if (command === undefined) throw new UsageError("a command is required");
  if (!COMMANDS.has(command)) throw new UsageError(`unknown command "${command}"`);
  if (rest.length > 0) throw new UsageError(`unexpected argument "${rest.join(" ")}"`);
  if (values.json && !JSON_COMMANDS.has(command)) throw new UsageError(`${command} has no --json output`);
  const slaText = values["sla-ms"];
  if (slaText !== undefined && command !== "drill") throw new UsageError(`--sla-ms is for drill, not ${command}`);
  const sla = slaText === undefined ? null : parseSlaMs(slaText);
  if (sla !== null && !sla.ok) throw new UsageError(`--sla-ms: ${sla.message}`);
  const socket = values.socket ?? process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH;
  if (socket === "") throw new UsageError("--socket needs a path");
  return { command, json: values.json, socket, ...(sla?.ok === true ? { slaMs: sla.slaMs } : {}) };
}

const print = (text: string): void => {
  process.stdout.write(text);
};
const printJson = (value: unknown): void => {
  print(JSON.stringify(value, null, 2) + "\n");
};

/** Streams events until Ctrl-C (exit 0) or until the daemon goes away (exit 1). */
async function events(client: ControlClient, json: boolean): Promise<number> {
  const sub = await client.subscribe(
    (e) => {
      print(json ? JSON.stringify(e) + "\n" : formatEvent(e) + "\n");
    },
    (e) => {
      const what =
        e.change === "applied"
          ? `version ${e.version} applied from ${e.source}${e.moved ? "; the tunnel moves off a leg it no longer allows" : ""}`
          : `rejected ${e.code}${e.field === undefined ? "" : ` (${e.field})`} from ${e.source}: ${e.message}`;
      print(json ? JSON.stringify(e) + "\n" : `${new Date(e.at).toLocaleTimeString()}  policy    ${what}\n`);
    },
  );
  if (!json) print(`${sub.snapshot.state}: ${sub.snapshot.summary} (following events; Ctrl-C to stop)\n`);
  const interrupted = new Promise<"interrupted">((resolve) => {
    const stop = (): void => {
      resolve("interrupted");
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  const why = await Promise.race([sub.closed, interrupted]);
  sub.close();
  if (why === "interrupted" || why === null) return EXIT_OK;
  process.stderr.write(`detour: ${why.message}\n`);
  return EXIT_DAEMON_ERROR;
}

async function run(inv: Invocation, client: ControlClient): Promise<number> {
  const opts = { now: Date.now() };
  switch (inv.command) {
    case "status": {
      const s = await client.status();
      if (inv.json) printJson(s);
      else print(formatStatus(s, { now: Date.now() }) + (s.policy === undefined ? "" : formatPolicyStatus(s.policy)));
      return EXIT_OK;
    }
    case "connect":
    case "disconnect": {
      const answer = inv.command === "connect" ? await client.connect() : (await client.disconnect(), null);
      const s = await client.status();
      print(`${inv.command} requested; detourd is ${s.state}: ${s.summary}\n`);
      if (answer !== null) {
        print(`kill switch: ${formatKillSwitch(answer.killSwitch, opts)}\n`);
        // Connecting without the kill switch in force is an error the user must see, not a success.
        if (answer.killSwitch.state !== "in-force") return EXIT_DAEMON_ERROR;
      }
      return EXIT_OK;
    }
    case "gateways": {
      const g = await client.gateways();
      if (inv.json) printJson(g);
      else print(formatGateways(g));
      return EXIT_OK;
    }
    case "race": {
      const r = await client.race();
      if (inv.json) printJson(r);
      else print(formatLastRace(r, opts));
      return EXIT_OK;
    }
    case "events":
      return events(client, inv.json);
    case "drill": {
      if (!inv.json)
        process.stderr.write("drill: blocking the active gateway for this host and watching the failover...\n");
      const d = await client.drill(inv.slaMs === undefined ? {} : { slaMs: inv.slaMs });
      if (inv.json) printJson(d);
      else print(formatDrill(d, { now: Date.now() }));
      return d.verdict === "pass" ? EXIT_OK : EXIT_DRILL_FAILED;
    }
    default:
      throw new UsageError(`unknown command "${inv.command}"`);
  }
}

/** The first positional word, skipping `--socket <path>`: which command family runs. */
function firstWord(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    if (a === "--socket") i++;
    else if (!a.startsWith("-")) return a;
  }
  return undefined;
}

async function main(argv: string[]): Promise<number> {
  // diag has its own arguments (inspect <file>, --out, --upload); the first positional decides.
  if (argv.find((a, i) => !a.startsWith("-") && argv[i - 1] !== "--socket") === "diag") return diagMain(argv);
  const family = firstWord(argv);
  if (family === "policy" || family === "prefs") return runPolicyCli(argv);
  let inv: Invocation | "help";
  try {
    inv = parse(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`detour: ${e.message}\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (inv === "help") {
    print(USAGE);
    return EXIT_OK;
  }
  const clientOpts: ControlClientOptions = { client: "detour-cli/0.1" };
  let client: ControlClient | null = null;
  try {
    client = await ControlClient.connect(inv.socket, clientOpts);
    return await run(inv, client);
  } catch (e) {
    if (!isControlError(e)) throw e; // a bug: crash loudly with the stack
    process.stderr.write(`detour: ${e.message}\n`);
    return e.code === "not-running" ? EXIT_NOT_RUNNING : EXIT_DAEMON_ERROR;
  } finally {
    client?.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
