/** Diagnostics: create a bundle for the helpdesk, show where it was written, upload it. */
import { h, setText } from "../dom.ts";
import type { View, ViewContext } from "./view.ts";

export function diagnosticsView(ctx: ViewContext): View {
  const create = h("button", { type: "button", class: "primary" }, "Create diagnostic bundle");
  const upload = h("button", { type: "button", disabled: true }, "Upload bundle");
  const result = h(
    "p",
    { role: "status", "aria-live": "polite", "data-testid": "diag-result" },
    "No bundle created yet.",
  );
  const where = h("p", { class: "path", "data-testid": "diag-path" });
  let path: string | null = null;
  create.addEventListener("click", () => {
    create.disabled = true;
    setText(result, "Creating a diagnostic bundle...");
    void ctx.api.createDiagnostics().then((r) => {
      create.disabled = false;
      if (r.ok) {
        path = r.value.path;
        setText(result, `Bundle created (${Math.round(r.value.bytes / 1024)} KiB). It was written to:`);
        setText(where, r.value.path);
      } else {
        path = null;
        setText(result, r.message);
        setText(where, "");
      }
      upload.disabled = path === null;
    });
  });
  upload.addEventListener("click", () => {
    if (path === null) return;
    setText(result, "Uploading...");
    void ctx.api.uploadDiagnostics(path).then((r) => {
      setText(result, r.ok ? `Uploaded. Give the helpdesk this reference: ${r.value.reference}` : r.message);
    });
  });
  return {
    id: "diagnostics",
    title: "Diagnostics",
    panel: h(
      "section",
      {},
      h("h2", {}, "Diagnostics"),
      h(
        "p",
        {},
        "A diagnostic bundle holds Detour's status, recent events and logs, without passwords or keys. Your IT helpdesk may ask for one.",
      ),
      h("div", { class: "actions" }, create, upload),
      result,
      where,
    ),
    update(): void {
      // Nothing here follows the connection.
    },
  };
}
