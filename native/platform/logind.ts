/**
 * logind's PrepareForSleep as `busctl monitor --json=short` prints it, and who may send it: any client of the system
 * bus can emit a signal named org.freedesktop.login1.Manager.PrepareForSleep, so a signal counts only when its
 * sender is the unique name that owns org.freedesktop.login1 (tracked from GetNameOwner and the bus's own
 * NameOwnerChanged). No I/O here: logind.linux.ts feeds it lines and answers.
 */

export const LOGIND_NAME = "org.freedesktop.login1";
export const LOGIND_PATH = "/org/freedesktop/login1";
export const LOGIND_MANAGER = "org.freedesktop.login1.Manager";
/** The bus itself: the only sender of NameOwnerChanged, a name no client can own. */
export const BUS_DRIVER = "org.freedesktop.DBus";

/**
 * The monitor's match rules (busctl --match): the bus delivers only logind's PrepareForSleep and the changes of
 * login1's owner. The bus already filters on the sender; the owner check below holds even where it does not.
 */
export const MONITOR_MATCHES: readonly string[] = [
  `type='signal',sender='${LOGIND_NAME}',path='${LOGIND_PATH}',interface='${LOGIND_MANAGER}',member='PrepareForSleep'`,
  `type='signal',sender='${BUS_DRIVER}',path='/org/freedesktop/DBus',interface='${BUS_DRIVER}',member='NameOwnerChanged',arg0='${LOGIND_NAME}'`,
];

/** busctl prints this on stderr once the bus made it a monitor: from then on nothing is missed. */
export const MONITOR_READY_LINE = "Monitoring bus message stream.";

/** A monitor line longer than this is nothing of ours (both our signals print in well under 1 KiB). */
const MAX_LINE = 16 * 1024;
const UNIQUE_NAME_RE = /^:[0-9A-Za-z._-]{1,254}$/;

export type MonitorEvent =
  /** PrepareForSleep(true): about to sleep; (false): resumed. `sender` is the bus's unique name of whoever sent it. */
  | { kind: "prepare-for-sleep"; sleeping: boolean; sender: string }
  /** login1 changed hands (logind restarted, or gone: `owner` null). Only ever from the bus driver. */
  | { kind: "owner-changed"; owner: string | null };

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/**
 * One line of `busctl monitor --json=short`; null for anything that is not one of our two signals well formed
 * (method calls, other members, a payload of another type, garbage): the watcher ignores it.
 */
export function parseMonitorLine(line: string): MonitorEvent | null {
  if (line.length === 0 || line.length > MAX_LINE || line[0] !== "{") return null;
  let m: unknown;
  try {
    m = JSON.parse(line);
  } catch {
    return null;
  }
  if (!isRecord(m) || m.type !== "signal" || typeof m.sender !== "string") return null;
  const payload = m.payload;
  if (!isRecord(payload) || !Array.isArray(payload.data)) return null;
  const data = payload.data as unknown[];
  if (m.member === "PrepareForSleep" && m.interface === LOGIND_MANAGER && m.path === LOGIND_PATH) {
    if (payload.type !== "b" || data.length !== 1 || typeof data[0] !== "boolean") return null;
    return { kind: "prepare-for-sleep", sleeping: data[0], sender: m.sender };
  }
  if (
    m.member === "NameOwnerChanged" &&
    m.interface === BUS_DRIVER &&
    m.sender === BUS_DRIVER &&
    payload.type === "sss" &&
    data.length === 3 &&
    data[0] === LOGIND_NAME &&
    typeof data[2] === "string"
  ) {
    const owner = data[2];
    if (owner === "") return { kind: "owner-changed", owner: null };
    return UNIQUE_NAME_RE.test(owner) ? { kind: "owner-changed", owner } : null;
  }
  return null;
}

/**
 * `busctl call org.freedesktop.DBus ... GetNameOwner s org.freedesktop.login1`'s answer (`s ":1.5"`): the unique
 * name, or null when the output is not one.
 */
export function parseNameOwner(stdout: string): string | null {
  const m = /^s "([^"]*)"$/.exec(stdout.trim());
  const name = m?.[1];
  return name !== undefined && UNIQUE_NAME_RE.test(name) ? name : null;
}

/** Whether busctl's error says nobody owns the name (logind not running), as opposed to a bus that failed. */
export function isNoOwnerError(stderr: string): boolean {
  return /NameHasNoOwner|no such name|not activatable|has no owner/i.test(stderr);
}

/**
 * Who owns login1, as far as the watcher knows. An owner query's answer is dropped when an owner change was seen
 * after the query went out (the change is newer than the answer).
 */
export class LogindOwner {
  /** undefined: not known yet (no answer, or the last query failed); null: nobody owns login1. */
  #owner: string | null | undefined = undefined;
  #changes = 0;

  get owner(): string | null | undefined {
    return this.#owner;
  }

  /** Call before sending a query; hand the token to `answered`. */
  asking(): number {
    return this.#changes;
  }

  /** A query's answer (undefined: the query failed). Whether it was taken. */
  answered(token: number, owner: string | null | undefined): boolean {
    if (token !== this.#changes) return false;
    this.#owner = owner;
    return true;
  }

  changed(owner: string | null): void {
    this.#changes++;
    this.#owner = owner;
  }

  /** Forgets the owner (the monitor restarts: changes may be missed until it listens again). */
  forget(): void {
    this.#changes++;
    this.#owner = undefined;
  }

  /** "trusted": sent by login1's owner; "impostor": by anyone else while the owner is known; "unknown": ask first. */
  judge(sender: string): "trusted" | "impostor" | "unknown" {
    if (this.#owner === undefined) return "unknown";
    return this.#owner !== null && sender === this.#owner ? "trusted" : "impostor";
  }
}
