/** Settings: the user's preferences; keys set by managed policy are shown locked, with who manages them. */
import type { PreferenceKey, SettingView, SettingsView } from "../../main/core/protocol/app-api.ts";
import { h, setText } from "../dom.ts";
import type { View, ViewContext } from "./view.ts";

const LABELS: Record<PreferenceKey, string> = {
  startAtLogin: "Start Detour when I log in",
  connectOnLaunch: "Connect when Detour starts",
  notifications: "Notifications",
  theme: "Appearance",
};
const OPTIONS: Partial<Record<PreferenceKey, [string, string][]>> = {
  notifications: [["all", "Failovers and errors"], ["errors", "Errors only"], ["off", "None"]],
  theme: [["system", "Follow the system"], ["light", "Light"], ["dark", "Dark"]],
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
    const hint = s.locked ? h("p", { class: "managed", id: hintId }, `Locked: managed by ${s.managedBy ?? "your organisation"}`) : null;
    const described = s.locked ? hintId : null;
    const options = OPTIONS[s.key];
    if (options === undefined) {
      const input = h("input", { type: "checkbox", id, checked: s.value === true, disabled: s.locked, "aria-describedby": described });
      input.addEventListener("change", () => {
        save(s.key, input.checked);
      });
      return h("div", { class: "setting" }, input, h("label", { for: id }, LABELS[s.key]), hint);
    }
    const select = h("select", { id, disabled: s.locked, "aria-describedby": described }, ...options.map(([v, label]) => h("option", { value: v, selected: s.value === v }, label)));
    select.addEventListener("change", () => {
      save(s.key, select.value);
    });
    return h("div", { class: "setting" }, h("label", { for: id }, LABELS[s.key]), select, hint);
  };

  const draw = (v: SettingsView): void => {
    const focused = document.activeElement?.id ?? null;
    form.replaceChildren(...v.settings.map(control));
    if (focused !== null) document.getElementById(focused)?.focus();
    const theme = v.settings.find((s) => s.key === "theme")?.value;
    document.documentElement.dataset.theme = typeof theme === "string" ? theme : "system";
  };

  return {
    id: "settings",
    title: "Settings",
    panel: h("section", {}, h("h2", {}, "Settings"), form, note),
    update(): void {
      // Settings change only through this view.
    },
    shown(): void {
      void ctx.api.settings().then((r) => {
        if (r.ok) draw(r.value);
        else setText(note, r.message);
      });
    },
  };
}
