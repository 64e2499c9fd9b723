/**
 * The contract between the desktop UI (renderer/) and whatever hosts it: the Electron main process through the
 * preload, or the loopback dev bridge in a browser. Types and names only, so the sandboxed page can import them
 * type-only and the preload stays free of validation code; main/app/ipc-contract.ts validates every call.
 *
 * Every call resolves to a value (AppResult), never rejects across the boundary: a page cannot tell a thrown
 * Electron IPC error from a bug, but it can show `message` to the user.
 */
import type { ConnectionEvent } from "../connection/types.ts";
import type { SettingKey } from "../policy/settings.ts";
import type { GatewaysPayload, StatusPayload } from "./messages.ts";

/** What a failed call says: a stable code for the UI's logic and one sentence for the user. */
export interface AppFailure {
  ok: false;
  /**
   * not-running / permission-denied / connection-lost / timeout / ...: the control client's codes;
   * locked: a managed policy sets this; invalid: the arguments are wrong; unavailable: this daemon cannot do it.
   */
  code: string;
  message: string;
}
export type AppResult<T> = { ok: true; value: T } | AppFailure;

/** The user's own preferences, kept by the app (electron-store), never by the daemon. */
export interface Preferences {
  /** Start the tray app when the user logs in. */
  startAtLogin: boolean;
  /** Connect as soon as the app starts. */
  connectOnLaunch: boolean;
  /** Which desktop notifications to show: failovers and errors, errors only, or none. */
  notifications: "all" | "errors" | "off";
  /** Colour scheme of the window. */
  theme: "system" | "light" | "dark";
}
export type PreferenceKey = keyof Preferences;
export const PREFERENCE_KEYS: readonly PreferenceKey[] = ["startAtLogin", "connectOnLaunch", "notifications", "theme"];

/** A key set by the organisation's managed policy: the value in force and who manages it. */
export interface PolicyLock {
  key: PreferenceKey;
  value: Preferences[PreferenceKey];
  /** Who to ask, e.g. "Example Corp IT (helpdesk@example.com)". */
  managedBy: string;
}

/** One setting as the Settings view shows it. */
export interface SettingView<K extends PreferenceKey = PreferenceKey> {
  key: K;
  value: Preferences[K];
  locked: boolean;
  managedBy: string | null;
}
/** One of detourd's settings that the managed policy sets, as the Settings view shows it: read-only, in words. */
export interface ManagedSettingView {
  /** detourd's dotted key, e.g. "standby.mode". */
  key: SettingKey;
  /** What it is, e.g. "Warm standby". */
  label: string;
  /** The value the policy enforces, e.g. "On", "gw2, gw3", "250 ms". */
  value: string;
}
/** detourd's settings that the organisation's managed policy sets (each locked), and who manages them. */
export interface ManagedSection {
  /** e.g. "Example Corp's policy". */
  managedBy: string;
  settings: ManagedSettingView[];
}
export interface SettingsView {
  settings: SettingView[];
  /** null while no policy is in force (or detourd cannot be reached). */
  managed: ManagedSection | null;
}

/** A diagnostic bundle written to disk. */
export interface DiagnosticsBundle {
  path: string;
  bytes: number;
  createdAt: number;
}

/** What the host pushes to the page: the daemon's status (after every change), its events, or that it is gone. */
export type AppUpdate =
  | { type: "status"; status: StatusPayload }
  | { type: "event"; event: ConnectionEvent }
  | { type: "daemon-unreachable"; code: string; message: string };

/** The API the page sees (window.detour in Electron; the bridge client in a browser). */
export interface DetourApi {
  status(): Promise<AppResult<StatusPayload>>;
  gateways(): Promise<AppResult<GatewaysPayload>>;
  connect(): Promise<AppResult<null>>;
  disconnect(): Promise<AppResult<null>>;
  /** The connection events the app has seen since it started (oldest first), for the history timeline. */
  history(): Promise<AppResult<ConnectionEvent[]>>;
  /** A gateway's name, or null for automatic. */
  setGateway(gateway: string | null): Promise<AppResult<string | null>>;
  settings(): Promise<AppResult<SettingsView>>;
  setSetting<K extends PreferenceKey>(key: K, value: Preferences[K]): Promise<AppResult<SettingsView>>;
  createDiagnostics(): Promise<AppResult<DiagnosticsBundle>>;
  uploadDiagnostics(path: string): Promise<AppResult<{ reference: string }>>;
  /**
   * Opens the sign-in page detourd found on a captive network (the page cannot choose the address) in the app's
   * locked-down sign-in window. The browser build has no such window: it answers "unavailable", with what to do.
   */
  openSignIn(): Promise<AppResult<null>>;
  /** Registers for updates; returns the function that removes the listener. */
  onUpdate(listener: (u: AppUpdate) => void): () => void;
}

/** The request/response calls, each with the IPC channel (and bridge path) it travels on. */
export const APP_CHANNELS = {
  status: "detour:status",
  gateways: "detour:gateways",
  connect: "detour:connect",
  disconnect: "detour:disconnect",
  history: "detour:history",
  setGateway: "detour:set-gateway",
  settings: "detour:settings",
  setSetting: "detour:set-setting",
  createDiagnostics: "detour:create-diagnostics",
  uploadDiagnostics: "detour:upload-diagnostics",
  openSignIn: "detour:open-sign-in",
} as const satisfies { [K in Exclude<keyof DetourApi, "onUpdate">]: `detour:${string}` };
export type AppCall = keyof typeof APP_CHANNELS;
/** The one channel the host pushes AppUpdates on. */
export const APP_UPDATE_CHANNEL = "detour:update";
