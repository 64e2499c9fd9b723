/**
 * A private system bus for lab tests: a dbus-daemon inside a lab namespace, listening on a socket in a folder of
 * its own, with a policy that lets every peer own and call anything (the services on it are the test's own).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isAlive, spawnDaemon, stopPids, waitFor } from "./exec.ts";

/** dbus-daemon creates its socket in tens of milliseconds; this bounds a loaded, shared machine. */
const BUS_READY_MS = 10_000;
/** A dbus-daemon that ignores SIGTERM this long gets SIGKILL. */
const BUS_STOP_GRACE_MS = 3_000;

export interface LabBus {
  /** The bus address, for DBUS_SYSTEM_BUS_ADDRESS or a client's argument. */
  readonly address: string;
  readonly pid: number;
  /** Stops the daemon by its PID and removes its folder; safe to call twice. */
  stop(): Promise<void>;
}

function busConfig(socket: string): string {
  return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
`;
}

/**
 * Starts a dbus-daemon in `ns` with `dir` (emptied first) as its folder, and waits for its socket. A bus that does
 * not come up is stopped and its folder removed before the error (with the daemon's log) is thrown.
 */
export async function startLabBus(ns: string, dir: string): Promise<LabBus> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const socket = join(dir, "bus.sock");
  const config = join(dir, "bus.conf");
  const log = join(dir, "dbus.log");
  writeFileSync(config, busConfig(socket));
  const pid = spawnDaemon(
    ["ip", "netns", "exec", ns, "dbus-daemon", `--config-file=${config}`, "--nofork", "--nopidfile"],
    { logFile: log },
  );
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await stopPids([pid], "SIGTERM", BUS_STOP_GRACE_MS);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      `the private bus in ${ns}`,
      () => {
        if (!isAlive(pid)) throw new Error(`dbus-daemon exited`);
        return existsSync(socket);
      },
      { timeoutMs: BUS_READY_MS, intervalMs: 50 },
    );
  } catch (err) {
    const tail = existsSync(log) ? readFileSync(log, "utf8").slice(-2000) : "";
    await stop();
    throw new Error(`${(err as Error).message}\n${tail}`, { cause: err });
  }
  return { address: `unix:path=${socket}`, pid, stop };
}
