/**
 * detourd: loads and validates the configuration (a bad file never starts a half-configured daemon), opens
 * the control socket and runs the connection loop until SIGTERM, when it disconnects cleanly and exits.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseConfigText } from "../core/config/schema.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { ControlServer } from "./control-server.ts";
import { linuxPlatform, peerUidOf } from "../../native/platform/linux.ts";
import type { ControlFacade } from "./control-facade.ts";
import { Daemon } from "./daemon.ts";
import { createLogger, type Level } from "./log.ts";
import { createPolicyManager, policyHandlers, startPolicy } from "./policy/wiring.ts";
import { LogTail } from "./diag/log-tail.ts";
import { DiagService } from "./diag/service.ts";

const VERSION = "0.1.0";
/** Time for a clean disconnect (engines' orderly stops run in parallel) before detourd exits anyway. */
const SHUTDOWN_BUDGET_MS = 15_000;

const USAGE = `usage: detourd --config <file> [--socket <path>] [--group <name>] [--work-dir <dir>] [--state-dir <dir>] [--resolv-conf <file>] [--ifname-prefix <p>] [--connect] [--policy-file <file>] [--trusted-keys <dir>] [--policy-url-file <file>] [--log-level debug|info|warn|error] [--log-file <path>]
       detourd --help | --version`;

function usage(msg: string): never {
  process.stderr.write(`detourd: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        config: { type: "string" },
        socket: { type: "string", default: process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH },
        group: { type: "string" },
        "work-dir": { type: "string", default: "/run/detour/legs" },
        "state-dir": { type: "string", default: "/var/lib/detour" },
        "resolv-conf": { type: "string", default: "/etc/resolv.conf" },
        "ifname-prefix": { type: "string", default: "dt" },
        connect: { type: "boolean", default: false },
        "policy-file": { type: "string" },
        "trusted-keys": { type: "string" },
        "policy-url-file": { type: "string" },
        // Refused below: kept so the refusal can say what to do instead.
        "policy-url": { type: "string" },
        "log-level": { type: "string", default: "info" },
        "log-file": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
        version: { type: "boolean", default: false },
      },
    }));
  } catch (e) {
    usage((e as Error).message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (values.version) {
    process.stdout.write(`detourd ${VERSION}\n`);
    process.exit(0);
  }
  if (values["policy-url"] !== undefined)
    usage(
      "--policy-url is refused: a command line is readable by every local user (/proc/<pid>/cmdline), and the URL may carry credentials; write the URL to a root-owned file (mode 0600) and pass --policy-url-file <file>",
    );
  const configPath = values.config ?? usage("--config is required");
  const level = values["log-level"];
  if (!["debug", "info", "warn", "error"].includes(level))
    usage(`--log-level must be debug, info, warn or error; got ${level}`);
  const logTail = new LogTail();
  const logFile = values["log-file"];
  const log = createLogger({
    level: level as Level,
    tee: (line) => {
      logTail.push(line);
    },
    ...(logFile === undefined ? {} : { file: logFile }),
  });

  let text: string;
  try {
    text = readFileSync(configPath, "utf8");
  } catch (e) {
    process.stderr.write(
      `detourd: cannot read ${configPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`,
    );
    process.exit(2);
  }
  const parsed = parseConfigText(text);
  if (!parsed.ok) {
    process.stderr.write(
      `detourd: ${configPath} is not a valid configuration:\n${parsed.issues.map((i) => `  ${i.path}: ${i.message}`).join("\n")}\n`,
    );
    process.exit(2);
  }

  // The managed policy and the user's preferences layer over the file before anything runs on it.
  let policy;
  try {
    policy = createPolicyManager(
      parsed.config,
      values["state-dir"],
      {
        policyFile: values["policy-file"],
        trustedKeysDir: values["trusted-keys"],
        policyUrlFile: values["policy-url-file"],
      },
      log,
    );
  } catch (e) {
    process.stderr.write(`detourd: ${(e as Error).message}\n`);
    process.exit(2);
  }

  let daemon: ControlFacade;
  try {
    ({ control: daemon } = new Daemon(
      {
        config: policy.effective().config,
        configPath,
        workDir: values["work-dir"],
        stateDir: values["state-dir"],
        resolvConf: values["resolv-conf"],
        ifnamePrefix: values["ifname-prefix"],
        log,
        version: VERSION,
      },
      { platform: linuxPlatform() },
    ));
  } catch (e) {
    process.stderr.write(`detourd: ${(e as Error).message}\n`);
    process.exit(2);
  }

  const diag = new DiagService({
    config: parsed.config,
    stateDir: values["state-dir"],
    inputs: () => daemon.diagInputs(),
    logTail,
    log,
    ...(logFile === undefined ? {} : { logFile }),
  });
  const server = await ControlServer.start({
    path: values.socket,
    version: VERSION,
    log,
    ...(values.group === undefined ? {} : { group: values.group }),
    peerUid: peerUidOf,
    handlers: {
      status: () => Promise.resolve({ ...daemon.status(), policy: policy.status() }),
      connect: () => daemon.connect(),
      disconnect: () => {
        daemon.disconnect();
        return Promise.resolve();
      },
      gateways: () => Promise.resolve(daemon.candidates()),
      race: () => Promise.resolve(daemon.lastRace()),
      subscribe: (listener) => daemon.subscribe(listener),
      drill: (params) => daemon.drill(params),
      ...policyHandlers(policy),
      diag: () => diag.create(),
      diagUpload: () => diag.upload(),
      setGateway: (gateway) => Promise.resolve(daemon.setGateway(gateway)),
    },
  });
  log.info("detourd started", {
    version: VERSION,
    pid: process.pid,
    socket: values.socket,
    config: configPath,
    gateways: parsed.config.gateways.map((g) => g.name),
  });
  // Probe the candidates before the first race, so its ranking already has latencies when the user connects.
  daemon.refreshKillSwitch();
  daemon.warmUp();
  startPolicy(policy, daemon);
  if (values.connect || policy.effective().autoConnect) void daemon.connect();

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { signal });
    const hard = setTimeout(() => {
      log.error("shutdown budget exceeded; exiting");
      process.exit(1);
    }, SHUTDOWN_BUDGET_MS);
    hard.unref();
    policy.stop();
    void daemon
      .shutdown()
      .then(() => server.close())
      .then(() => {
        log.info("detourd stopped");
        process.exit(0);
      });
  };
  process.on("SIGTERM", () => {
    stop("SIGTERM");
  });
  process.on("SIGINT", () => {
    stop("SIGINT");
  });
}

void main();
