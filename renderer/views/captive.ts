/**
 * "Sign in to this network": the panel the status view shows while detourd finds a captive portal in the way. The
 * browser build cannot open the app's locked-down sign-in window, so it says what to open and why; the page's URL
 * is text to copy, never a link this page follows (the portal's page is not for this page's origin).
 */
import { h, setText } from "../dom.ts";
import type { AppResult } from "../../main/core/protocol/app-api.ts";
import type { StatusPayload } from "../../main/core/protocol/messages.ts";

export interface CaptiveWords {
  headline: string;
  reason: string;
  url: string | null;
  /** What the kill switch's sign-in exception allows, and until when (or why there is none). */
  exception: string;
}

function until(at: number | null, clock: (ms: number) => string): string {
  return at === null ? "the time runs out" : clock(at);
}

/** The panel's words for a status, or null when the network needs no sign-in. */
export function captiveWords(s: StatusPayload | null, clock: (ms: number) => string): CaptiveWords | null {
  const c = s?.captive;
  if (c?.state !== "sign-in-required" || s?.state === "connected") return null;
  const ex = c.exception;
  const exception =
    ex.state === "open"
      ? s?.killSwitch?.mode === "blocking"
        ? `Until ${until(ex.closesAt, clock)}, this computer may reach only this network's sign-in page and its name servers outside the VPN; everything else stays blocked.`
        : `Until ${until(ex.closesAt, clock)}, sign in as you would without Detour; your organisation's networks stay blocked outside the VPN.`
      : ex.state === "forbidden"
        ? "Your organisation does not allow signing in to networks like this one while Detour blocks traffic."
        : ex.closedReason === "timed out"
          ? "The time to sign in ran out. Connect again to get a few more minutes."
          : "Detour will allow the sign-in page when you connect.";
  return {
    headline: "Sign in to this network",
    reason: c.reason ?? "This network shows a sign-in page before it lets traffic through.",
    url: c.portalUrl,
    exception,
  };
}

/**
 * The panel; `openSignIn` asks the host to open the page detourd found in the app's sign-in window (the browser
 * build's host answers with what to open instead, shown under the button).
 */
export function captivePanel(openSignIn: () => Promise<AppResult<null>>): {
  panel: HTMLElement;
  update(s: StatusPayload | null, clock: (ms: number) => string): void;
} {
  const headline = h("h3", {}, "Sign in to this network");
  const reason = h("p", { "data-testid": "captive-reason" });
  const open = h(
    "p",
    {},
    "Open this page in a web browser on this computer and sign in; Detour connects by itself once the network lets it through. In the Detour app, “Open sign-in page” (here or in the tray menu) opens it in a separate, locked-down window.",
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
    reason,
    open,
    h("p", {}, "Sign-in page: ", url),
    exception,
    h("div", { class: "actions" }, button),
    answer,
  );
  return {
    panel,
    update(s, clock) {
      const w = captiveWords(s, clock);
      panel.hidden = w === null;
      if (w === null) {
        setText(answer, "");
        return;
      }
      button.disabled = w.url === null;
      setText(headline, w.headline);
      setText(reason, w.reason);
      setText(url, w.url ?? "(the network did not say; open any http:// address, such as http://neverssl.com)");
      setText(exception, w.exception);
    },
  };
}
