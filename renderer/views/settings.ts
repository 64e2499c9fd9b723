/**
 * Settings: the user's preferences, and the detourd settings the organisation's managed policy sets. Keys set by
 * the policy are shown locked with who manages them: the app's own are disabled controls, detourd's are read-only
 * fields (focusable, so a keyboard or screen-reader user reaches each value and its lock).
 */
import type {
  ManagedSection,
  ManagedSettingView,
  PreferenceKey,
  SettingView,
  SettingsView,
} from "../../main/core/protocol/app-api.ts";
import { h, setText } from "../dom.ts";
import type { Model, View, ViewContext } from "./view.ts";

const LABELS: Record<PreferenceKey, string> = {
  startAtLogin: "Start Detour when I log in",
  connectOnLaunch: "Connect when Detour starts",
  notifications: "Notifications",
  theme: "Appearance",
};
const OPTIONS: Partial<Record<PreferenceKey, [string, string][]>> = {
  notifications: [
    ["all", "Failovers and errors"],
    ["errors", "Errors only"],
    ["off", "None"],
  ],
  theme: [
    ["system", "Follow the system"],
    ["light", "Light"],
    ["dark", "Dark"],
  ],
};

export function settingsView(ctx: ViewContext): View {
  const form = h("form", { class: "settings", "aria-label": "Preferences" });
  const note = h("p", { class: "problem", role: "status", "aria-live": "polite", "data-testid": "settings-note" });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
  });

  const save = (key: PreferenceKey, value: unknown): void => {
    void ctx.api.setSetting(key, value as never).then((r) => {
      if (r.ok) {
        setText(note, "Saved.");
        draw(r.value);
      } else {
        setText(note, r.message);
        void ctx.api.settings().then((v) => {
          if (v.ok) draw(v.value);
        });
      }
    });
  };

  const control = (s: SettingView): HTMLElement => {
    const id = `setting-${s.key}`;
    const hintId = `${id}-managed`;
    const hint = s.locked
      ? h("p", { class: "managed", id: hintId }, `Locked: managed by ${s.managedBy ?? "your organisation"}`)
      : null;
    const described = s.locked ? hintId : null;
    const options = OPTIONS[s.key];
    if (options === undefined) {
      const input = h("input", {
        type: "checkbox",
        id,
        checked: s.value === true,
        disabled: s.locked,
        "aria-describedby": described,
      });
      input.addEventListener("change", () => {
        save(s.key, input.checked);
      });
      return h("div", { class: "setting" }, input, h("label", { for: id }, LABELS[s.key]), hint);
    }
    const select = h(
      "select",
      { id, disabled: s.locked, "aria-describedby": described },
      ...options.map(([v, label]) => h("option", { value: v, selected: s.value === v }, label)),
    );
    select.addEventListener("change", () => {
      save(s.key, select.value);
    });
    return h("div", { class: "setting" }, h("label", { for: id }, LABELS[s.key]), select, hint);
  };

  const managedHeading = h("h3", { id: "managed-heading" });
  const managedList = h("div", { class: "managed-list" });
  const managed = h(
    "section",
    { class: "managed-section", "aria-labelledby": "managed-heading", hidden: true },
    managedHeading,
    h("p", {}, "Your organisation sets these for this device. Ask your IT team if one needs to change."),
    managedList,
  );

  const managedRow = (s: ManagedSettingView, managedBy: string): HTMLElement => {
    const id = `managed-${s.key.replaceAll(".", "-")}`;
    const hintId = `${id}-managed`;
    const value = h("input", {
      type: "text",
      id,
      class: "managed-value",
      value: s.value,
      readonly: true,
      size: Math.min(Math.max(s.value.length, 4), 40),
      "aria-describedby": hintId,
    });
    return h(
      "div",
      { class: "setting" },
      h("label", { for: id }, s.label),
      value,
      h("p", { class: "managed", id: hintId }, `Locked: managed by ${managedBy}`),
    );
  };

  const drawManaged = (m: ManagedSection | null): void => {
    managed.hidden = m === null;
    setText(managedHeading, m === null ? "" : `Managed by ${m.managedBy}`);
    managedList.replaceChildren(...(m === null ? [] : m.settings.map((s) => managedRow(s, m.managedBy))));
  };

  /** The policy in force as of the last status (version and when it applied): a change reloads this view. */
  let policySeen: string | null = null;
  let loaded = false;

  const load = (): void => {
    void ctx.api.settings().then((r) => {
      loaded = true;
      if (r.ok) draw(r.value);
      else setText(note, r.message);
    });
  };

  const draw = (v: SettingsView): void => {
    const focused = document.activeElement?.id ?? null;
    form.replaceChildren(...v.settings.map(control));
    drawManaged(v.managed);
    if (focused !== null) document.getElementById(focused)?.focus();
    const theme = v.settings.find((s) => s.key === "theme")?.value;
    document.documentElement.dataset.theme = typeof theme === "string" ? theme : "system";
  };

  return {
    id: "settings",
    title: "Settings",
    panel: h("section", {}, h("h2", {}, "Settings"), form, note, managed),
    update(m: Model): void {
      // Preferences change only through this view; the managed policy changes whenever IT installs a new one.
      const p = m.status?.policy;
      const seen = JSON.stringify([p?.version ?? null, p?.appliedAt ?? null]);
      if (m.status === null || seen === policySeen) return;
      policySeen = seen;
      if (loaded) load();
    },
    shown: load,
  };
}
