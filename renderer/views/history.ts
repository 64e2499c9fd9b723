/** History: why the user is on this gateway: the last race leg by leg, the last failover, and the events since the app started. */
import { h, setText } from "../dom.ts";
import { clock, duration, eventText, failoverText, PROTOCOL_LABELS, raceText } from "../format.ts";
import type { Model, View } from "./view.ts";

export function historyView(): View {
  const race = h("p", { "data-testid": "last-race" }, "No race yet.");
  const legs = h("tbody");
  const failover = h("p", { "data-testid": "last-failover" }, "No failover yet.");
  const list = h("ol", { class: "timeline", "aria-label": "Events since the app started, newest first" });
  let drawnLegs = "";
  let drawnEvents = 0;
  return {
    id: "history",
    title: "History",
    panel: h(
      "section",
      {},
      h("h2", {}, "History"),
      h("h3", {}, "Last race"),
      race,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, "Legs of the last race"),
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["Leg", "Gateway", "Protocol", "Started", "Outcome", "Error"].map((c) => h("th", { scope: "col" }, c)),
            ),
          ),
          legs,
        ),
      ),
      h("h3", {}, "Last failover"),
      failover,
      h("h3", {}, "Timeline"),
      list,
    ),
    update(m: Model): void {
      const s = m.status;
      const r = s?.lastRace ?? null;
      setText(race, r === null ? "No race yet." : `${raceText(r)} Started at ${clock(r.startedAt)}.`);
      const rows =
        r === null
          ? []
          : r.legs.map((l) => [
              l.leg.id,
              l.leg.gateway,
              PROTOCOL_LABELS[l.leg.kind],
              l.startedAt === null ? "-" : `+${duration(l.startedAt - r.startedAt)}`,
              l.outcome,
              l.error === null ? "" : `${l.error.code}: ${l.error.message}`,
            ]);
      const key = JSON.stringify(rows);
      if (key !== drawnLegs) {
        drawnLegs = key;
        legs.replaceChildren(...rows.map((row) => h("tr", {}, ...row.map((cell) => h("td", {}, cell)))));
      }
      const f = s?.lastFailover ?? null;
      setText(failover, f === null ? "No failover yet." : `${clock(f.detectedAt)}: ${failoverText(f)}`);
      // Newest first; only new events are added, so a reader's place in the list is kept.
      for (const e of m.history.slice(drawnEvents)) {
        const text = eventText(e);
        if (text !== null)
          list.prepend(h("li", {}, h("time", { datetime: new Date(e.at).toISOString() }, clock(e.at)), " ", text));
      }
      drawnEvents = m.history.length;
    },
  };
}
