/**
 * The Detour window: a tab list of five views over one model (status, samples, history) kept current from the
 * host's updates. The host is Electron (window.detour, from the preload) or, in a browser, the dev bridge.
 */
import type { DetourApi } from "../main/core/protocol/app-api.ts";
import { bridgeApi } from "./bridge-client.ts";
import { h } from "./dom.ts";
import { pushSample } from "./format.ts";
import { diagnosticsView } from "./views/diagnostics.ts";
import { gatewaysView } from "./views/gateways.ts";
import { historyView } from "./views/history.ts";
import { settingsView } from "./views/settings.ts";
import { statusView } from "./views/status.ts";
import type { Model, View, ViewContext } from "./views/view.ts";

/** Samples in each sparkline: two minutes at the host's one status per second. */
const SPARK_SAMPLES = 120;
/** The host pushes status every second; this only covers a host whose pushes stopped (a dropped bridge socket). */
const FALLBACK_POLL_MS = 5000;

declare global {
  interface Window {
    detour?: DetourApi;
  }
}

const api: DetourApi = window.detour ?? bridgeApi();
const model: Model = { status: null, unreachable: null, now: Date.now(), rtt: [], loss: [], history: [] };
const ctx: ViewContext = { api, refresh: () => void refresh() };
const views: View[] = [statusView(ctx), gatewaysView(ctx), historyView(), settingsView(ctx), diagnosticsView(ctx)];
let lastUpdate = 0;

function render(): void {
  model.now = Date.now();
  for (const v of views) v.update(model);
}

function onStatus(s: NonNullable<Model["status"]>): void {
  model.status = s;
  model.unreachable = null;
  const t = s.telemetry;
  const up = s.state === "connected";
  model.rtt = pushSample(model.rtt, up ? (t?.rttMs ?? null) : null, SPARK_SAMPLES);
  model.loss = pushSample(model.loss, up ? (t?.lossPct ?? null) : null, SPARK_SAMPLES);
  lastUpdate = Date.now();
  render();
}

async function refresh(): Promise<void> {
  const r = await api.status();
  if (r.ok) onStatus(r.value);
  else {
    model.status = null;
    model.unreachable = r.message;
    render();
  }
}

function buildTabs(): HTMLElement {
  const tabs = views.map((v, i) =>
    h(
      "button",
      {
        type: "button",
        role: "tab",
        id: `tab-${v.id}`,
        "aria-controls": `panel-${v.id}`,
        "aria-selected": i === 0 ? "true" : "false",
        tabindex: i === 0 ? 0 : -1,
      },
      v.title,
    ),
  );
  const select = (i: number, focus: boolean): void => {
    tabs.forEach((t, j) => {
      t.setAttribute("aria-selected", j === i ? "true" : "false");
      t.tabIndex = j === i ? 0 : -1;
    });
    views.forEach((v, j) => {
      v.panel.hidden = j !== i;
    });
    if (focus) tabs[i]?.focus();
    views[i]?.shown?.();
    history.replaceState(null, "", `#${views[i]?.id ?? ""}`);
  };
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => {
      select(i, false);
    });
    // The WAI-ARIA tabs pattern: arrows move between tabs, Home/End jump, Tab goes into the panel.
    t.addEventListener("keydown", (e) => {
      const n = tabs.length;
      const to =
        e.key === "ArrowRight"
          ? (i + 1) % n
          : e.key === "ArrowLeft"
            ? (i - 1 + n) % n
            : e.key === "Home"
              ? 0
              : e.key === "End"
                ? n - 1
                : null;
      if (to === null) return;
      e.preventDefault();
      select(to, true);
    });
  });
  const list = h("div", { role: "tablist", "aria-label": "Detour views", class: "tabs" }, ...tabs);
  views.forEach((v, i) => {
    v.panel.id = `panel-${v.id}`;
    v.panel.setAttribute("role", "tabpanel");
    v.panel.setAttribute("aria-labelledby", `tab-${v.id}`);
    v.panel.tabIndex = 0;
    v.panel.hidden = i !== 0;
  });
  const start = views.findIndex((v) => `#${v.id}` === location.hash);
  queueMicrotask(() => {
    select(start === -1 ? 0 : start, false);
  });
  return list;
}

function main(): void {
  const root = document.getElementById("app");
  if (root === null) return;
  root.replaceChildren(
    h("header", {}, h("h1", {}, "Detour")),
    h("nav", { "aria-label": "Views" }, buildTabs()),
    h("main", {}, ...views.map((v) => v.panel)),
  );
  api.onUpdate((u) => {
    switch (u.type) {
      case "status":
        onStatus(u.status);
        return;
      case "event":
        model.history = [...model.history, u.event];
        render();
        return;
      case "daemon-unreachable":
        model.status = null;
        model.unreachable = u.message;
        render();
        return;
    }
  });
  void api.history().then((r) => {
    if (r.ok) {
      model.history = [
        ...r.value,
        ...model.history.filter((e) => !r.value.some((x) => x.at === e.at && x.type === e.type)),
      ];
      render();
    }
  });
  void refresh();
  setInterval(() => {
    if (Date.now() - lastUpdate > FALLBACK_POLL_MS) void refresh();
    else render();
  }, 1000);
}

main();
