/**
 * The Electron main process of the tray app: thin glue from the plain modules (tray-model, notify-rules,
 * settings-model, ipc-contract, app-host) to Electron's Tray, Menu, Notification, BrowserWindow and ipcMain.
 * Unprivileged: it only talks to detourd's control socket. Bundled by scripts/build-app.mjs to .build/app.
 */
import {
  app,
  BrowserWindow,
  ipcMain,
  Menu,
  nativeImage,
  Notification,
  session,
  shell,
  Tray,
  type IpcMainInvokeEvent,
  type MenuItemConstructorOptions,
} from "electron";
import Store from "electron-store";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { APP_CHANNELS, APP_UPDATE_CHANNEL, type AppUpdate, type Preferences } from "../core/protocol/app-api.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { AppHost } from "./app-host.ts";
import { daemonDiagnostics } from "./diagnostics.ts";
import { callForChannel, invokeCall } from "./ipc-contract.ts";
import { NotifyRules } from "./notify-rules.ts";
import { DaemonPolicyLocks } from "./policy-locks.ts";
import { Settings, type PreferenceStore } from "./settings-model.ts";
import { SignInNavigation, signInWindowOptions } from "./sign-in-window.ts";
import { trayIconFile, trayMenu, trayState, trayTooltip, type MenuItemModel, type TrayAction } from "./tray-model.ts";

/** The window's size: the five views fit without scrolling at 100 % zoom; it reflows at 200 %. */
const WINDOW_SIZE = { width: 880, height: 640, minWidth: 420, minHeight: 480 };

const root = app.getAppPath();
const iconDir = join(root, "resources", "icons");
const pageFile = join(root, ".build", "renderer-web", "index.html");
const pageUrl = pathToFileURL(pageFile).href;

let tray: Tray | null = null;
let win: BrowserWindow | null = null;
let deadline: NodeJS.Timeout | null = null;

if (!app.requestSingleInstanceLock()) {
  // Another instance owns the tray; it shows its window (second-instance below) and this one leaves.
  app.quit();
} else {
  app.on("second-instance", () => {
    showWindow();
  });
  void app.whenReady().then(start);
}

function storeFor(): PreferenceStore {
  const store = new Store<Partial<Preferences>>({ name: "preferences", defaults: {} });
  return {
    read: () => ({ ...store.store }),
    write: (key, value) => {
      store.set(key, value);
    },
  };
}

/** The managed policy's locks, as detourd reports them after each status refresh. */
const policyLocks = new DaemonPolicyLocks();

function start(): void {
  // No web permission (camera, notifications from the page, geolocation, ...) is ever granted to the window.
  session.defaultSession.setPermissionRequestHandler((_wc, _permission, callback) => {
    callback(false);
  });
  const settings = new Settings(storeFor(), policyLocks);
  const host = new AppHost({
    socket: process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH,
    settings,
    diagnostics: daemonDiagnostics,
    clientName: `detour-app/${app.getVersion()}`,
    policyLocks,
    openSignIn: showSignInWindow,
  });
  const rules = new NotifyRules();
  applyLoginItem(settings.current());

  for (const channel of Object.values(APP_CHANNELS)) {
    ipcMain.handle(channel, (event: IpcMainInvokeEvent, ...args: unknown[]) => {
      // Only our own page may call: not another frame, not a page the window was navigated to.
      if (event.senderFrame?.url !== pageUrl || win === null || event.sender !== win.webContents)
        return { ok: false, code: "invalid", message: "not the Detour window" };
      const call = callForChannel(channel);
      return invokeCall(host, call, args).then((r) => {
        if (call === "setSetting" && r.ok) applyLoginItem(settings.current());
        return r;
      });
    });
  }

  tray = new Tray(icon("disconnected"));
  const onUpdate = (u: AppUpdate): void => {
    if (u.type !== "event") refreshTray(host, settings.current().notifications, rules);
    win?.webContents.send(APP_UPDATE_CHANNEL, u);
  };
  host.onUpdate(onUpdate);
  host.start();
  refreshTray(host, settings.current().notifications, rules);
  if (settings.current().connectOnLaunch) void host.connect();

  app.on("window-all-closed", () => {
    // The tray keeps running with no window, as a tray app should.
  });
  app.on("before-quit", () => {
    host.stop();
    if (deadline !== null) clearTimeout(deadline);
  });

  function act(a: TrayAction): void {
    switch (a.type) {
      case "connect":
        void host.connect();
        return;
      case "disconnect":
        void host.disconnect();
        return;
      case "set-gateway":
        void host.setGateway(a.gateway);
        return;
      case "open-window":
        showWindow();
        return;
      case "open-sign-in":
        if (!showSignInWindow(a.url))
          new Notification({ title: "No sign-in page", body: `This address cannot be opened safely: ${a.url}` }).show();
        return;
      case "diagnostics":
        void host.createDiagnostics().then((r) => {
          new Notification(
            r.ok
              ? { title: "Diagnostic bundle created", body: r.value.path }
              : { title: "No diagnostic bundle", body: r.message },
          ).show();
        });
        return;
      case "quit":
        app.quit();
        return;
    }
  }

  function toElectron(items: MenuItemModel[]): MenuItemConstructorOptions[] {
    return items.map((m): MenuItemConstructorOptions => {
      switch (m.kind) {
        case "label":
          return { label: m.label, enabled: false };
        case "separator":
          return { type: "separator" };
        case "action":
          return {
            label: m.label,
            enabled: m.enabled,
            click: () => {
              act(m.action);
            },
          };
        case "radio":
          return {
            type: "radio",
            label: m.label,
            checked: m.checked,
            enabled: m.enabled,
            click: () => {
              act(m.action);
            },
          };
        case "submenu":
          return { label: m.label, enabled: m.enabled, submenu: toElectron(m.items) };
      }
    });
  }

  function refreshTray(h: AppHost, level: Preferences["notifications"], r: NotifyRules): void {
    const s = h.latest;
    tray?.setImage(icon(trayState(s)));
    tray?.setToolTip(trayTooltip(s, h.unreachable));
    tray?.setContextMenu(Menu.buildFromTemplate(toElectron(trayMenu(s, h.unreachable))));
    for (const n of r.observe(s, Date.now(), level)) new Notification({ title: n.title, body: n.body }).show();
    const next = r.nextDeadline();
    if (deadline !== null) clearTimeout(deadline);
    deadline =
      next === null
        ? null
        : setTimeout(
            () => {
              refreshTray(h, settings.current().notifications, r);
            },
            Math.max(0, next - Date.now()),
          );
  }
}

function icon(state: ReturnType<typeof trayState>): Electron.NativeImage {
  // createFromPath picks up the @2x/@4x siblings for high-density screens.
  return nativeImage.createFromPath(join(iconDir, trayIconFile(state)));
}

function applyLoginItem(p: Preferences): void {
  app.setLoginItemSettings({ openAtLogin: p.startAtLogin });
}

let signIn: BrowserWindow | null = null;

/**
 * The captive portal's page in a window of its own (sign-in-window.ts): no preload, sandboxed, an in-memory session,
 * navigation kept to the portal's origin and where it redirected; new windows refused.
 */
function showSignInWindow(url: string): boolean {
  const nav = SignInNavigation.for(url);
  if (nav === null) return false;
  signIn?.close();
  const w = new BrowserWindow({ ...signInWindowOptions(), show: true });
  signIn = w;
  const wc = w.webContents;
  wc.setWindowOpenHandler(() => ({ action: "deny" }));
  wc.on("will-navigate", (e) => {
    if (!nav.mayNavigate(e.url)) e.preventDefault();
  });
  wc.on("will-frame-navigate", (e) => {
    if (!nav.mayNavigate(e.url)) e.preventDefault();
  });
  wc.on("will-redirect", (e) => {
    if (!nav.followRedirect(wc.getURL() === "" ? null : wc.getURL(), e.url)) e.preventDefault();
  });
  wc.on("will-attach-webview", (e) => {
    e.preventDefault();
  });
  w.webContents.session.setPermissionRequestHandler((_wc, _permission, callback) => {
    callback(false);
  });
  w.on("closed", () => {
    if (signIn === w) signIn = null;
  });
  void w.loadURL(url);
  return true;
}

function showWindow(): void {
  if (win !== null) {
    if (win.isMinimized()) win.restore();
    win.show();
    win.focus();
    return;
  }
  win = new BrowserWindow({
    ...WINDOW_SIZE,
    title: "Detour",
    show: false,
    autoHideMenuBar: true,
    webPreferences: {
      preload: join(root, ".build", "app", "preload.cjs"),
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      webviewTag: false,
      spellcheck: false,
    },
  });
  const wc = win.webContents;
  // The window shows our bundled page and nothing else: no navigation, no new windows; links open in the browser.
  wc.setWindowOpenHandler(({ url }) => {
    if (url.startsWith("https://")) void shell.openExternal(url);
    return { action: "deny" };
  });
  wc.on("will-navigate", (e) => {
    e.preventDefault();
  });
  wc.on("will-redirect", (e) => {
    e.preventDefault();
  });
  wc.on("will-attach-webview", (e) => {
    e.preventDefault();
  });
  win.once("ready-to-show", () => win?.show());
  win.on("closed", () => {
    win = null;
  });
  void win.loadFile(pageFile);
}
