/** Gateways: every candidate with probe latency, health and ranking, and the choice: automatic or one of them. */
import type { RankedCandidate } from "../../main/core/protocol/messages.ts";
import { h, setText } from "../dom.ts";
import { health, PROTOCOL_LABELS, probeLatency } from "../format.ts";
import type { Model, View, ViewContext } from "./view.ts";

export function gatewaysView(ctx: ViewContext): View {
  const note = h("p", { class: "problem", role: "status", "aria-live": "polite" });
  const group = h("fieldset", { class: "choice" }, h("legend", {}, "Connect through"));
  const tbody = h("tbody");
  const table = h(
    "table",
    {},
    h("caption", {}, "Candidates, best-ranked first"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ...["Rank", "Gateway", "Region", "Probe latency", "Health", "Protocols", "In use"].map((c) =>
          h("th", { scope: "col" }, c),
        ),
      ),
    ),
    tbody,
  );
  let ranked: RankedCandidate[] = [];
  let drawnChoices = "";
  let drawnRows = "";
  let status: Model["status"] = null;

  const choose = (gateway: string | null): void => {
    setText(note, gateway === null ? "Switching to automatic..." : `Switching to ${gateway}...`);
    void ctx.api.setGateway(gateway).then((r) => {
      setText(
        note,
        r.ok
          ? r.value === null
            ? "Detour picks the best gateway automatically."
            : `Detour connects through ${r.value} only.`
          : r.message,
      );
      ctx.refresh();
    });
  };

  const drawChoices = (choice: string | null): void => {
    const key = JSON.stringify([choice, ranked.map((c) => c.name)]);
    if (key === drawnChoices) return;
    drawnChoices = key;
    const focused =
      document.activeElement instanceof HTMLInputElement && group.contains(document.activeElement)
        ? document.activeElement.value
        : null;
    group.replaceChildren(group.firstChild ?? h("legend", {}, "Connect through"));
    const radio = (value: string, label: string, checked: boolean): HTMLElement => {
      const input = h("input", { type: "radio", name: "gateway-choice", id: `gw-choice-${value}`, value, checked });
      input.addEventListener("change", () => {
        if (input.checked) choose(value === "" ? null : value);
      });
      return h("div", { class: "radio" }, input, h("label", { for: `gw-choice-${value}` }, label));
    };
    group.append(radio("", "Automatic (best gateway)", choice === null));
    for (const c of ranked)
      group.append(radio(c.name, c.region === "" ? c.name : `${c.name} (${c.region})`, choice === c.name));
    if (focused !== null) document.getElementById(`gw-choice-${focused}`)?.focus();
  };

  const drawRows = (): void => {
    const rows = ranked.map((c) => {
      const use = status?.gateway === c.name ? "active" : status?.standby?.gateway === c.name ? "standby" : "";
      return [
        String(c.rank),
        c.name,
        c.region,
        probeLatency(c),
        health(c),
        c.kinds.map((k) => PROTOCOL_LABELS[k]).join(", "),
        use,
      ];
    });
    const key = JSON.stringify(rows);
    if (key === drawnRows) return;
    drawnRows = key;
    tbody.replaceChildren(
      ...rows.map((r) =>
        h("tr", {}, ...r.map((cell, i) => (i === 1 ? h("th", { scope: "row" }, cell) : h("td", {}, cell)))),
      ),
    );
  };

  const load = (): void => {
    void ctx.api.gateways().then((r) => {
      if (!r.ok) {
        setText(note, r.message);
        return;
      }
      ranked = r.value.candidates;
      drawChoices(status?.gatewayChoice ?? null);
      drawRows();
    });
  };

  return {
    id: "gateways",
    title: "Gateways",
    panel: h("section", {}, h("h2", {}, "Gateways"), group, note, h("div", { class: "table-wrap" }, table)),
    update(m: Model): void {
      status = m.status;
      if (ranked.length === 0 && m.status !== null) ranked = m.status.candidates.map((c, i) => ({ ...c, rank: i + 1 }));
      drawChoices(m.status?.gatewayChoice ?? null);
      drawRows();
    },
    shown: load,
  };
}
