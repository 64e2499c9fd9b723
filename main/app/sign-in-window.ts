/**
 * The captive portal's sign-in window, as plain data and rules (main.ts applies them to Electron): a window of its
 * own with no preload (so no access to the app's API), sandboxed, isolated, in an in-memory session of its own (the
 * portal's cookies never mix with anything else and go with the window), and navigation restricted to the portal's
 * origin and the origins the portal itself redirected to. A hostile portal can show a page; it cannot reach
 * detourd, the app's settings or another site in this window.
 */

/** An in-memory partition (no "persist:" prefix): nothing the portal sets survives the window. */
export const SIGN_IN_PARTITION = "detour-captive-sign-in";

export const SIGN_IN_WINDOW_SIZE = { width: 900, height: 720 } as const;

/** The BrowserWindow options, minus what needs Electron objects. No preload: the page gets no bridge at all. */
export function signInWindowOptions(): {
  width: number;
  height: number;
  title: string;
  autoHideMenuBar: boolean;
  webPreferences: Record<string, boolean | string>;
} {
  return {
    ...SIGN_IN_WINDOW_SIZE,
    title: "Sign in to this network",
    autoHideMenuBar: true,
    webPreferences: {
      partition: SIGN_IN_PARTITION,
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      webviewTag: false,
      javascript: true,
      spellcheck: false,
      navigateOnDragDrop: false,
    },
  };
}

/** The origin of an http(s) URL ("http://198.18.205.1"), or null for anything else. */
export function webOrigin(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return null;
  if (u.username !== "" || u.password !== "") return null;
  return u.origin;
}

/**
 * Which origins the window may show: the portal's, plus each origin the portal redirected to (a payment page, the
 * hotel chain's login host). A navigation the page starts itself (a link, a form, script) must stay inside them.
 */
export class SignInNavigation {
  readonly #allowed = new Set<string>();

  /** Null when `portalUrl` is not an http(s) URL: no window is opened for it. */
  static for(portalUrl: string): SignInNavigation | null {
    const o = webOrigin(portalUrl);
    if (o === null) return null;
    const n = new SignInNavigation();
    n.#allowed.add(o);
    return n;
  }

  /** A page-initiated navigation (will-navigate, will-frame-navigate): allowed only inside the known origins. */
  mayNavigate(url: string): boolean {
    const o = webOrigin(url);
    return o !== null && this.#allowed.has(o);
  }

  /**
   * A server redirect (will-redirect) from an allowed page: followed if it is http(s), and its origin becomes
   * allowed, as portals hand over to their login or payment host this way.
   */
  followRedirect(from: string | null, to: string): boolean {
    const o = webOrigin(to);
    if (o === null) return false;
    if (from !== null && !this.mayNavigate(from)) return false;
    this.#allowed.add(o);
    return true;
  }

  origins(): string[] {
    return [...this.#allowed].sort();
  }
}
