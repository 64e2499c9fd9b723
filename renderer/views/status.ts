/**
 * Status: the situation in a word and a line (main/core/status-words.ts), the always-on note, connect/disconnect with
 * why one is not offered, state, gateway, protocol, since, and live latency and loss sparklines.
 */
import { h, setText, svg } from "../dom.ts";
import {
  clock,
  latestReading,
  localNetworksText,
  minutesLeft,
  PROTOCOL_LABELS,
  since,
  STATE_LABELS,
} from "../format.ts";
import { actions, alwaysOnNote, explanation, situation, SITUATION_LABELS } from "../../main/core/status-words.ts";
import { captivePanel } from "./captive.ts";
import { sparklinePath } from "../sparkline.ts";
import type { Model, View, ViewContext } from "./view.ts";

const SPARK = { width: 240, height: 48 };

function sparkline(label: string): { figure: HTMLElement; path: SVGPathElement; value: HTMLElement } {
  const path = svg("path", {
    fill: "none",
    stroke: "currentColor",
    "stroke-width": 2,
    "vector-effect": "non-scaling-stroke",
  });
  const box = svg("svg", {
    viewBox: `0 0 ${SPARK.width} ${SPARK.height}`,
    class: "spark",
    role: "img",
    "aria-hidden": "true",
    preserveAspectRatio: "none",
  });
  box.append(path);
  const value = h("span", { class: "spark-value" }, "-");
  const figure = h("figure", { class: "spark-figure" }, h("figcaption", {}, `${label}: `, value), box);
  return { figure, path, value };
}

export function statusView(ctx: ViewContext): View {
  const headline = h("p", { class: "headline", "data-testid": "headline", "data-situation": "" }, "Detour");
  const sentence = h(
    "p",
    { class: "sentence", role: "status", "aria-live": "polite", "data-testid": "sentence" },
    "Asking Detour for its status...",
  );
  const field = (label: string, testid: string): [HTMLElement, HTMLElement] => {
    const dd = h("dd", { "data-testid": testid }, "-");
    return [h("div", { class: "field" }, h("dt", {}, label), dd), dd];
  };
  const [stateRow, state] = field("State", "state");
  const [gwRow, gateway] = field("Gateway", "gateway");
  const [protoRow, protocol] = field("Protocol", "protocol");
  const [sinceRow, sinceDd] = field("Since", "since");
  const [standbyRow, standby] = field("Standby", "standby");
  const [localRow, local] = field("Local networks", "local-networks");
  const latency = sparkline("Latency");
  const loss = sparkline("Loss");
  const alwaysOn = h("p", { class: "always-on", "data-testid": "always-on", hidden: true });
  const connect = h("button", { type: "button", class: "primary", "aria-describedby": "action-why" }, "Connect");
  const disconnect = h("button", { type: "button", "aria-describedby": "action-why" }, "Disconnect");
  // Why a button is greyed: disabled buttons take no focus, so the reason is text next to them, not a tooltip.
  const why = h("p", { class: "why", id: "action-why", "data-testid": "action-why" });
  const problem = h("p", { class: "problem", role: "alert" });
  const captive = captivePanel(() => ctx.api.openSignIn());
  connect.addEventListener("click", () => {
    void ctx.api.connect().then((r) => {
      setText(problem, r.ok ? "" : r.message);
      ctx.refresh();
    });
  });
  disconnect.addEventListener("click", () => {
    void ctx.api.disconnect().then((r) => {
      setText(problem, r.ok ? "" : r.message);
      ctx.refresh();
    });
  });
  const panel = h(
    "section",
    {},
    h("h2", {}, "Status"),
    headline,
    sentence,
    alwaysOn,
    captive.panel,
    h("div", { class: "actions" }, connect, disconnect),
    why,
    problem,
    h("dl", { class: "fields" }, stateRow, gwRow, protoRow, sinceRow, standbyRow, localRow),
    h("div", { class: "sparks" }, latency.figure, loss.figure),
  );
  return {
    id: "status",
    title: "Status",
    panel,
    update(m: Model): void {
      const s = m.status;
      captive.update(s);
      if (s === null) {
        setText(headline, "Not running");
        headline.dataset.situation = "not-running";
        setText(sentence, m.unreachable ?? "Detour's service is not running");
        for (const el of [state, gateway, protocol, sinceDd, standby, local]) setText(el, "-");
        state.dataset.state = "";
        alwaysOn.hidden = true;
        connect.disabled = true;
        disconnect.disabled = true;
        setText(why, "");
      } else {
        const sit = situation(s);
        setText(headline, SITUATION_LABELS[sit]);
        headline.dataset.situation = sit;
        // The sentence is a live region: the sign-in time left in minutes, so it is not announced every second.
        const line = explanation(s, { now: m.now, clock, duration: minutesLeft });
        setText(sentence, line);
        const note = alwaysOnNote(s);
        alwaysOn.hidden = note === null;
        setText(alwaysOn, note ?? "");
        // Behind a portal the connection state is an error only because the network wants a sign-in first.
        setText(state, sit === "sign-in" ? "Waiting for sign-in" : STATE_LABELS[s.state]);
        const ln = localNetworksText(s.localNetworks);
        setText(local, ln.text);
        local.title = ln.title;
        state.dataset.state = s.state;
        setText(gateway, s.gateway === null ? "-" : `${s.gateway}${s.gatewayChoice != null ? " (chosen)" : ""}`);
        setText(protocol, s.protocol === null ? "-" : PROTOCOL_LABELS[s.protocol]);
        setText(sinceDd, since(s.since, m.now));
        setText(
          standby,
          s.standby === null ? "none" : `${s.standby.gateway} over ${PROTOCOL_LABELS[s.standby.protocol]}`,
        );
        const a = actions(s);
        setText(connect, a.connect.label);
        connect.disabled = !a.connect.enabled;
        connect.title = a.connect.why ?? "";
        setText(disconnect, a.disconnect.label);
        disconnect.disabled = !a.disconnect.enabled;
        disconnect.title = a.disconnect.why ?? "";
        // A reason the line above already gives is not said twice (the buttons' titles keep it).
        setText(
          why,
          [a.connect.why, a.disconnect.why].filter((x): x is string => x !== null && !line.includes(x)).join(" "),
        );
      }
      setText(latency.value, latestReading(m.rtt, "ms"));
      setText(loss.value, latestReading(m.loss, "%"));
      latency.path.setAttribute("d", sparklinePath(m.rtt, SPARK));
      loss.path.setAttribute(
        "d",
        sparklinePath(m.loss, { ...SPARK, max: Math.max(5, ...m.loss.filter((x): x is number => x !== null)) }),
      );
    },
  };
}
