/**
 * "Sign in to this network": the panel the status view shows while detourd finds a captive portal in the way. The
 * status line above it already says why (detourd's reason), the time left and what happens after (status-words.ts),
 * so the panel adds only how to sign in: the page, the button, and what is reachable meanwhile. The browser build
 * cannot open the app's locked-down sign-in window, so it says what to open; the page's URL is text to copy, never
 * a link this page follows (the portal's page is not for this page's origin).
 */
import { h, setText } from "../dom.ts";
import type { AppResult } from "../../main/core/protocol/app-api.ts";
import type { StatusPayload } from "../../main/core/protocol/messages.ts";

export interface CaptiveWords {
  headline: string;
  url: string | null;
  /**
   * What is reachable outside the VPN while the sign-in exception is open; null otherwise (the status line says
   * then why there is none: the time ran out, the policy forbids it, or a connect opens it).
   */
  exception: string | null;
}

/** The panel's words for a status, or null when the network needs no sign-in. */
export function captiveWords(s: StatusPayload | null): CaptiveWords | null {
  const c = s?.captive;
  if (c?.state !== "sign-in-required" || s?.state === "connected") return null;
  const exception =
    c.exception.state !== "open"
      ? null
      : s?.killSwitch?.mode === "blocking"
        ? "Meanwhile this computer may reach only this network's sign-in page and its name servers outside the VPN; everything else stays blocked."
        : "Meanwhile sign in as you would without Detour; your organisation's networks stay blocked outside the VPN.";
  return { headline: "Sign in to this network", url: c.portalUrl, exception };
}

/**
 * The panel; `openSignIn` asks the host to open the page detourd found in the app's sign-in window (the browser
 * build's host answers with what to open instead, shown under the button).
 */
export function captivePanel(openSignIn: () => Promise<AppResult<null>>): {
  panel: HTMLElement;
  update(s: StatusPayload | null): void;
} {
  const headline = h("h3", {}, "Sign in to this network");
  const open = h(
    "p",
    {},
    "Open the network's sign-in page and sign in there. In the Detour app, “Open sign-in page” (here or in the tray menu) opens it in a separate, locked-down window; otherwise open it in a web browser on this computer.",
  );
  const button = h("button", { type: "button", "data-testid": "open-sign-in" }, "Open sign-in page");
  const answer = h("p", { class: "why", role: "status", "data-testid": "open-sign-in-answer" });
  button.addEventListener("click", () => {
    void openSignIn().then((r) => {
      setText(answer, r.ok ? "The sign-in page is open in its own window." : r.message);
    });
  });
  const url = h("code", { class: "captive-url", "data-testid": "captive-url" });
  const exception = h("p", { "data-testid": "captive-exception" });
  const panel = h(
    "section",
    {
      class: "captive",
      role: "region",
      "aria-label": "Sign in to this network",
      "data-testid": "captive",
      hidden: true,
    },
    headline,
    open,
    h("p", {}, "Sign-in page: ", url),
    exception,
    h("div", { class: "actions" }, button),
    answer,
  );
  return {
    panel,
    update(s) {
      const w = captiveWords(s);
      panel.hidden = w === null;
      if (w === null) {
        setText(answer, "");
        return;
      }
      button.disabled = w.url === null;
      setText(headline, w.headline);
      setText(url, w.url ?? "(the network did not say; open any http:// address, such as http://neverssl.com)");
      exception.hidden = w.exception === null;
      setText(exception, w.exception ?? "");
    },
  };
}
