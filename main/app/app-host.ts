/**
 * The app's side of the page's API, shared by the Electron main process and the dev bridge: one control-socket
 * client of detourd (reconnected when the daemon restarts), its event subscription turned into AppUpdates, and
 * the user's settings. Unprivileged: everything it changes on the network it asks detourd to do.
 */
import { ControlClient, isControlError, type Subscription } from "../client/control-client.ts";
import type { ConnectionEvent } from "../core/connection/types.ts";
import type {
  AppResult,
  AppUpdate,
  DiagnosticsBundle,
  PreferenceKey,
  Preferences,
  SettingsView,
} from "../core/protocol/app-api.ts";
import type { GatewaysPayload, StatusPayload } from "../core/protocol/messages.ts";
import type { DiagnosticsProvider } from "./diagnostics.ts";
import type { DaemonPolicyLocks } from "./policy-locks.ts";
import type { AppHostApi } from "./ipc-contract.ts";
import type { Settings } from "./settings-model.ts";
import type { Unreachable } from "./tray-model.ts";

/**
 * How often status is fetched while the app runs: the sparklines plot one latency and loss sample per tick, and
 * detourd answers status from memory in well under a millisecond, so once a second costs nothing.
 */
export const STATUS_POLL_MS = 1000;
/** Events kept for the history view: a working day of ordinary use, or a few bad hours of flapping. */
export const HISTORY_SIZE = 300;

export interface AppHostOptions {
  socket: string;
  settings: Settings;
  /** Makes and uploads diagnostic bundles; gets the daemon's name for its messages and the control connection. */
  diagnostics: (daemon: () => string | null, client: () => Promise<ControlClient>) => DiagnosticsProvider;
  /** Name sent in the control hello, e.g. "detour-app/0.1". */
  clientName: string;
  /** Fed with the daemon's preferences (and their policy locks) after each status refresh, when given. */
  policyLocks?: DaemonPolicyLocks;
  /**
   * Opens a captive portal's page in the locked-down sign-in window; false when the address cannot be opened
   * safely. Absent where there is no such window (the dev bridge).
   */
  openSignIn?: (url: string) => boolean;
}

function failure(e: unknown): { ok: false; code: string; message: string } {
  if (isControlError(e)) return { ok: false, code: e.code, message: e.message };
  return { ok: false, code: "internal", message: e instanceof Error ? e.message : String(e) };
}

/**
 * Opens the sign-in page detourd found (only while the network wants a sign-in) with `open`, or says why not: no
 * page found, no sign-in window here (the browser build: what to open instead), or an address that is not safe.
 */
export function openSignInFor(s: StatusPayload | null, open: ((url: string) => boolean) | undefined): AppResult<null> {
  const c = s?.captive;
  if (c?.state !== "sign-in-required" || c.portalUrl === null)
    return { ok: false, code: "refused", message: "Detour has not found a sign-in page on this network." };
  if (open === undefined)
    return {
      ok: false,
      code: "unavailable",
      message: `This browser page cannot open the sign-in window: open ${c.portalUrl} in a web browser on this computer.`,
    };
  return open(c.portalUrl)
    ? { ok: true, value: null }
    : { ok: false, code: "invalid", message: `The sign-in page's address cannot be opened safely: ${c.portalUrl}` };
}

export class AppHost implements AppHostApi {
  readonly #opts: AppHostOptions;
  readonly #diagnostics: DiagnosticsProvider;
  readonly #listeners = new Set<(u: AppUpdate) => void>();
  readonly #history: ConnectionEvent[] = [];
  #client: ControlClient | null = null;
  #connecting: Promise<ControlClient> | null = null;
  #sub: Subscription | null = null;
  #status: StatusPayload | null = null;
  #unreachable: Unreachable | null = null;
  #timer: NodeJS.Timeout | null = null;
  #refreshing = false;
  #refreshAgain = false;
  #stopped = false;

  constructor(opts: AppHostOptions) {
    this.#opts = opts;
    this.#diagnostics = opts.diagnostics(
      () => this.#client?.daemon ?? null,
      () => this.#clientNow(),
    );
  }

  /** The latest status, or null while the daemon cannot be reached (then `unreachable` says why). */
  get latest(): StatusPayload | null {
    return this.#status;
  }

  get unreachable(): Unreachable | null {
    return this.#unreachable;
  }

  /** The sign-in page of the latest status, never an address from the page. */
  openSignIn(): Promise<AppResult<null>> {
    return Promise.resolve(openSignInFor(this.#status, this.#opts.openSignIn));
  }

  /** Starts following the daemon: subscription plus a status fetch every STATUS_POLL_MS. */
  start(): void {
    if (this.#timer !== null || this.#stopped) return;
    void this.#refresh();
    this.#timer = setInterval(() => void this.#refresh(), STATUS_POLL_MS);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    this.#drop();
    this.#listeners.clear();
  }

  onUpdate(listener: (u: AppUpdate) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(u: AppUpdate): void {
    for (const l of this.#listeners) {
      try {
        l(u);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  #drop(): void {
    this.#sub?.close();
    this.#sub = null;
    this.#client?.close();
    this.#client = null;
    this.#connecting = null;
  }

  async #clientNow(): Promise<ControlClient> {
    if (this.#client !== null) return this.#client;
    this.#connecting ??= ControlClient.connect(this.#opts.socket, { client: this.#opts.clientName }).then(
      (c) => {
        this.#client = c;
        this.#connecting = null;
        void c.closed.then(() => {
          if (this.#client === c) this.#client = null;
        });
        return c;
      },
      (e: unknown) => {
        this.#connecting = null;
        throw e;
      },
    );
    return this.#connecting;
  }

  async #ensureSubscribed(c: ControlClient): Promise<void> {
    if (this.#sub !== null) return;
    const sub = await c.subscribe((event) => {
      this.#history.push(event);
      if (this.#history.length > HISTORY_SIZE) this.#history.shift();
      this.#emit({ type: "event", event });
      void this.#refresh();
    });
    this.#sub = sub;
    void sub.closed.then(() => {
      if (this.#sub === sub) this.#sub = null;
    });
  }

  /** Fetches status and tells the listeners; one at a time, with one more queued if asked meanwhile. */
  async #refresh(): Promise<void> {
    if (this.#stopped) return;
    if (this.#refreshing) {
      this.#refreshAgain = true;
      return;
    }
    this.#refreshing = true;
    try {
      const c = await this.#clientNow();
      await this.#ensureSubscribed(c);
      const s = await c.status();
      this.#status = s;
      this.#unreachable = null;
      // A daemon without managed policy (an older one) answers unknown-command: no locks then.
      if (this.#opts.policyLocks !== undefined) this.#opts.policyLocks.update(await c.prefs().catch(() => null));
      this.#emit({ type: "status", status: s });
    } catch (e) {
      const f = failure(e);
      this.#drop();
      this.#status = null;
      this.#unreachable = { code: f.code, message: f.message };
      this.#emit({ type: "daemon-unreachable", code: f.code, message: f.message });
    } finally {
      this.#refreshing = false;
    }
    if (this.#refreshAgain) {
      this.#refreshAgain = false;
      await this.#refresh();
    }
  }

  async #call<T>(f: (c: ControlClient) => Promise<T>): Promise<AppResult<T>> {
    try {
      const value = await f(await this.#clientNow());
      void this.#refresh();
      return { ok: true, value };
    } catch (e) {
      return failure(e);
    }
  }

  status(): Promise<AppResult<StatusPayload>> {
    return this.#call((c) => c.status());
  }

  gateways(): Promise<AppResult<GatewaysPayload>> {
    return this.#call((c) => c.gateways());
  }

  connect(): Promise<AppResult<null>> {
    return this.#call(async (c) => {
      await c.connect();
      return null;
    });
  }

  disconnect(): Promise<AppResult<null>> {
    return this.#call(async (c) => {
      await c.disconnect();
      return null;
    });
  }

  history(): Promise<AppResult<ConnectionEvent[]>> {
    return Promise.resolve({ ok: true, value: [...this.#history] });
  }

  setGateway(gateway: string | null): Promise<AppResult<string | null>> {
    return this.#call((c) => c.setGateway(gateway));
  }

  settings(): Promise<AppResult<SettingsView>> {
    return Promise.resolve({ ok: true, value: this.#opts.settings.view() });
  }

  setSetting<K extends PreferenceKey>(key: K, value: Preferences[K]): Promise<AppResult<SettingsView>> {
    return Promise.resolve(this.#opts.settings.set(key, value));
  }

  createDiagnostics(): Promise<AppResult<DiagnosticsBundle>> {
    return this.#diagnostics.create();
  }

  uploadDiagnostics(path: string): Promise<AppResult<{ reference: string }>> {
    return this.#diagnostics.upload(path);
  }
}
