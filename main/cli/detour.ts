/**
 * The `detour` command: a thin client of detourd's control socket. Exit codes: 0 ok, 1 the daemon answered with
 * an error (or the connection failed), 2 usage, 3 detourd is not running.
 */
import { parseArgs } from "node:util";
import { ControlClient, isControlError, type ControlClientOptions } from "../client/control-client.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { diagMain } from "./diag.ts";
import { formatEvent, formatGateways, formatLastRace, formatStatus } from "./format.ts";

const EXIT_OK = 0;
const EXIT_DAEMON_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_NOT_RUNNING = 3;

const USAGE = `usage: detour [--socket <path>] <command> [--json]

commands:
  status [--json]     what the connection is doing, its last race and last failover
  connect             ask detourd to connect (follow with \`detour events\`)
  disconnect          ask detourd to disconnect
  gateways [--json]   gateway candidates with probe results, in ranking order
  race [--json]       the last race: every leg with its times and outcome
  events [--json]     stream connection events until Ctrl-C
  diag [--out <file>] [--upload]   write a diagnostic bundle (secrets removed; \`detour diag --help\`)
  diag inspect <file> print a bundle's summary and verify its hashes (offline)

options:
  --socket <path>     detourd's control socket (default: $DETOUR_SOCKET or ${DEFAULT_SOCKET_PATH})
  --json              machine-readable output (JSON; for events, one JSON object per line)
  -h, --help          this help
`;

const JSON_COMMANDS = new Set(["status", "gateways", "race", "events"]);
const COMMANDS = new Set([...JSON_COMMANDS, "connect", "disconnect"]);

class UsageError extends Error {}

interface Invocation {
  command: string;
  json: boolean;
  socket: string;
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
  const socket = values.socket ?? process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH;
  if (socket === "") throw new UsageError("--socket needs a path");
  return { command, json: values.json, socket };
}

const print = (text: string): void => {
  process.stdout.write(text);
};
const printJson = (value: unknown): void => {
  print(JSON.stringify(value, null, 2) + "\n");
};

/** Streams events until Ctrl-C (exit 0) or until the daemon goes away (exit 1). */
async function events(client: ControlClient, json: boolean): Promise<number> {
  const sub = await client.subscribe((e) => {
    print(json ? JSON.stringify(e) + "\n" : formatEvent(e) + "\n");
  });
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
      else print(formatStatus(s, { now: Date.now() }));
      return EXIT_OK;
    }
    case "connect":
    case "disconnect": {
      if (inv.command === "connect") await client.connect();
      else await client.disconnect();
      const s = await client.status();
      print(`${inv.command} requested; detourd is ${s.state}: ${s.summary}\n`);
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
    default:
      throw new UsageError(`unknown command "${inv.command}"`);
  }
}

async function main(argv: string[]): Promise<number> {
  // diag has its own arguments (inspect <file>, --out, --upload); the first positional decides.
  if (argv.find((a, i) => !a.startsWith("-") && argv[i - 1] !== "--socket") === "diag") return diagMain(argv);
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
