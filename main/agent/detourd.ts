/**
 * detourd: loads and validates the configuration (a bad file never starts a half-configured daemon), reclaims what
 * a crashed predecessor left on the host (ownership.ts), opens the control socket and runs the connection loop until
 * SIGTERM, when it disconnects cleanly and exits.
 *
 * Faults that reach the top are never a silent exit; each is logged with its context and counted in status:
 * - an unhandled promise rejection is an operation whose failure nobody awaited: the loop's state is intact (the
 *   machine takes one input at a time and owns every decision), so detourd logs it, reports it and carries on;
 * - an uncaught exception interrupted some code half-way, whose state can no longer be trusted: detourd logs and
 *   reports it, runs the same guarded shutdown as SIGTERM (the kill switch last: kept under lockdown) and exits
 *   with EXIT_FAULT (faults.ts), for the service manager to restart it; the next start reclaims what it missed.
 */
import { mkdirSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseConfigText } from "../core/config/schema.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { CommandRefused, ControlServer } from "./control-server.ts";
import { systemClock } from "./clock.ts";
import { linuxPlatform, peerUidOf } from "../../native/platform/linux.ts";
import type { ControlFacade } from "./control-facade.ts";
import { networkCaptiveProbe } from "./captive-probe.ts";
import { Daemon } from "./daemon.ts";
import { adoptOwnGroup, DEFAULT_OWN_GROUP, ownGroupId } from "./own-group.ts";
import { installFaultHandlers, type FaultHandling } from "./faults.ts";
import { OwnershipError, OwnershipRecord } from "./ownership.ts";
import { createLogger, type Level } from "./log.ts";
import { createPolicyManager, policyHandlers, startPolicy } from "./policy/wiring.ts";
import { LogTail } from "./diag/log-tail.ts";
import { DiagService } from "./diag/service.ts";
import {
  disconnectRefusal,
  NETWORK_POLL_MS,
  NO_TRUSTED_RECHECK_MS,
  pollTrigger,
  TrustedNetworks,
  UNTRUSTED_POLL_MS,
} from "./trusted-networks.ts";

const VERSION = "0.1.0";
/**
 * Time for a clean disconnect before detourd exits anyway: the sum of the shutdown steps' own bounds
 * (control-facade.ts), so the kill switch step, which runs last, is reached before this fires.
 */
const SHUTDOWN_BUDGET_MS = 30_000;
/** Exit status after a clean stop in which some step failed (what failed is in the log). */
const EXIT_SHUTDOWN_INCOMPLETE = 1;

const USAGE = `usage: detourd --config <file> [--socket <path>] [--group <name>] [--work-dir <dir>] [--state-dir <dir>] [--resolv-conf <file>] [--ifname-prefix <p>] [--own-group <name|gid>] [--connect] [--policy-file <file>] [--trusted-keys <dir>] [--policy-url-file <file>] [--log-level debug|info|warn|error] [--log-file <path>]
       detourd --help | --version`;

function usage(msg: string): never {
  process.stderr.write(`detourd: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

// A log reader that went away (a closed pipe) must cost the log lines, not the daemon: without a listener the
// EPIPE would be thrown at the top. The log file, when configured, still gets every line.
process.stdout.on("error", () => undefined);
process.stderr.on("error", () => undefined);

/** Until the daemon exists a fault goes to stderr, and an uncaught exception ends the start-up with EXIT_FAULT. */
let faults: FaultHandling = {
  report: (kind, err) => {
    process.stderr.write(`detourd: ${kind}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  },
  stop: (_why, code) => process.exit(code),
};
installFaultHandlers(process, () => faults);

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
        "own-group": { type: "string", default: DEFAULT_OWN_GROUP },
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

  // Before anything is started: every socket and engine from here on carries the group the kill switch allows.
  let ownGroup: number;
  try {
    ownGroup = ownGroupId(values["own-group"]);
    adoptOwnGroup(ownGroup);
  } catch (e) {
    process.stderr.write(`detourd: ${(e as Error).message}\n`);
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

  const platform = linuxPlatform();
  const bindCaptive = platform.network.bindCaptiveCheck?.bind(platform.network);
  let ownership: OwnershipRecord;
  try {
    mkdirSync(values["state-dir"], { recursive: true, mode: 0o700 });
    mkdirSync(values["work-dir"], { recursive: true, mode: 0o700 });
    ownership = await OwnershipRecord.takeOver({
      stateDir: values["state-dir"],
      workDir: values["work-dir"],
      // The second copy of the record: the work folder is on /run (a tmpfs, RuntimeDirectory=detour), not the state
      // disk, and per instance (the lab gives each namespace its own).
      runtimeDir: values["work-dir"],
      ifnamePrefix: values["ifname-prefix"],
      platform,
      log,
    });
  } catch (e) {
    process.stderr.write(`detourd: ${(e as Error).message}\n`);
    process.exit(e instanceof OwnershipError ? 2 : 1);
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
        ownGroup,
        log,
        version: VERSION,
      },
      {
        platform,
        ownership,
        // The check leaves on the underlay whatever the tunnel's routes are (a full tunnel's included).
        captiveProbe: networkCaptiveProbe(
          bindCaptive === undefined ? undefined : { bind: (targets) => bindCaptive(targets, values["ifname-prefix"]) },
        ),
      },
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
  const trusted = new TrustedNetworks(
    {
      config: () => policy.effective().config,
      autoConnect: () => policy.effective().autoConnect,
      state: () => daemon.connectionState(),
      resolvConfPath: () => daemon.networkResolvConfPath(),
      networkKey: () => daemon.networkKey(),
      connect: () => daemon.connect(),
      disconnect: () => {
        daemon.disconnect();
      },
      report: (name, body, attrs) => {
        daemon.emitTelemetry(name, body, attrs);
      },
      log,
    },
    systemClock,
  );
  const server = await ControlServer.start({
    path: values.socket,
    version: VERSION,
    log,
    ...(values.group === undefined ? {} : { group: values.group }),
    peerUid: peerUidOf,
    handlers: {
      status: () => Promise.resolve({ ...daemon.status(), policy: policy.status(), trusted: trusted.status() }),
      connect: async () => {
        const refused = await trusted.connectRefusal();
        if (refused !== null) throw new CommandRefused(refused);
        return daemon.connect();
      },
      disconnect: () => {
        const refused = disconnectRefusal(policy.effective().config);
        if (refused !== null) return Promise.reject(new CommandRefused(refused));
        trusted.userDisconnected();
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
  // A predecessor that died holding a connection the user wanted (kill -9, a crash): resume it at once. Connecting
  // first puts the connecting kill switch in place of the one the predecessor left (one nft transaction), so
  // protected traffic is blocked from the crash until the new tunnel is up; a refresh for "disconnected" first
  // would lift it for the moment in between.
  const r = ownership.reclaimed;
  const resume = r.previousConnectIntent;
  if (resume)
    log.warn("resuming the connection the previous detourd held when it died", { previousPid: r.previousPid });
  // warmUp starts the network lookup the connect waits for (briefly) and sets no kill switch itself; nothing runs
  // between it and connect's kill switch.
  // With trusted networks configured, a connect at start waits for the verdict (bounded by its TLS check); a resumed
  // connection does not (its kill switch holds), and is taken down by the verdict if the network is trusted.
  const hasTrusted = policy.effective().config.trustedNetworks !== undefined;
  const connectNow = resume || (!hasTrusted && (values.connect || policy.effective().autoConnect));
  if (!connectNow) daemon.refreshKillSwitch();
  // Probe the candidates before the first race, so its ranking already has latencies when the user connects.
  daemon.warmUp();
  if (connectNow)
    daemon.connect().catch((err: unknown) => {
      log.error("connect at start-up failed", { err });
    });
  if (hasTrusted) void trusted.evaluate(resume ? "recheck" : "start", { wanted: values.connect && !resume });
  // The network monitor's changes re-evaluate at once; the poll stays as the backstop (and the periodic recheck).
  const polled = pollTrigger(
    systemClock,
    () => trusted.identity(),
    () => policy.effective().config.trustedNetworks?.recheckMs ?? NO_TRUSTED_RECHECK_MS,
    () => (policy.effective().config.trustedNetworks === undefined ? UNTRUSTED_POLL_MS : NETWORK_POLL_MS),
  );
  trusted.start((fire) => {
    const stopPoll = polled(fire);
    const stopWatch = daemon.onNetworkChange(() => {
      fire("network-change");
    });
    return () => {
      stopPoll();
      stopWatch();
    };
  });
  startPolicy(policy, daemon);
  if (r.removed.length > 0 || r.failed.length > 0 || r.recordError !== null || resume)
    daemon.emitTelemetry(
      "detour.daemon.reclaimed",
      {
        previousPid: r.previousPid,
        removed: r.removed,
        failed: r.failed,
        recordError: r.recordError,
        resumedConnection: resume,
      },
      { failed: r.failed.length > 0 || r.recordError !== null },
    );

  let stopping = false;
  const stop = (why: string, exitCode: number): void => {
    if (stopping) return;
    stopping = true;
    log.info("stopping", { why });
    const hard = setTimeout(() => {
      log.error("shutdown budget exceeded; exiting");
      process.exit(exitCode === 0 ? EXIT_SHUTDOWN_INCOMPLETE : exitCode);
    }, SHUTDOWN_BUDGET_MS);
    hard.unref();
    const guarded = async (what: string, fn: () => unknown): Promise<boolean> => {
      try {
        await fn();
        return true;
      } catch (err) {
        log.error(`shutdown: ${what} failed`, { err });
        return false;
      }
    };
    void (async () => {
      let ok = await guarded("stopping the policy poller", () => {
        policy.stop();
        trusted.stop();
      });
      const report = await daemon.shutdown().catch((err: unknown) => {
        log.error("shutdown failed", { err });
        return { ran: [], failed: [{ step: "shutdown", error: String(err) }] };
      });
      ok &&= report.failed.length === 0;
      ok = (await guarded("closing the control socket", () => server.close())) && ok;
      ok =
        (await guarded("closing the ownership record", () => {
          ownership.close();
        })) && ok;
      log.info("detourd stopped", { failed: report.failed });
      process.exit(exitCode !== 0 ? exitCode : ok ? 0 : EXIT_SHUTDOWN_INCOMPLETE);
    })();
  };
  faults = {
    report: (kind, err) => {
      let state = "unknown";
      try {
        state = daemon.status().state;
      } catch {
        // the fault may be in status itself
      }
      log.error(kind === "uncaught-exception" ? "uncaught exception" : "unhandled promise rejection", {
        err,
        stack: err instanceof Error ? err.stack : undefined,
        state,
        stopping,
      });
      daemon.reportFault(kind, err);
    },
    stop,
  };
  process.on("SIGTERM", () => {
    stop("SIGTERM", 0);
  });
  process.on("SIGINT", () => {
    stop("SIGINT", 0);
  });
}

main().catch((err: unknown) => {
  process.stderr.write(
    `detourd: start-up failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
