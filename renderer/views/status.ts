/** Status: the daemon's sentence, state, gateway, protocol, since, live latency and loss sparklines, connect/disconnect. */
import { h, setText, svg } from "../dom.ts";
import { clock, PROTOCOL_LABELS, since } from "../format.ts";
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
  const latency = sparkline("Latency");
  const loss = sparkline("Loss");
  const connect = h("button", { type: "button", class: "primary" }, "Connect");
  const disconnect = h("button", { type: "button" }, "Disconnect");
  const problem = h("p", { class: "problem", role: "alert" });
  const captive = captivePanel();
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
    sentence,
    captive.panel,
    h("div", { class: "actions" }, connect, disconnect),
    problem,
    h("dl", { class: "fields" }, stateRow, gwRow, protoRow, sinceRow, standbyRow),
    h("div", { class: "sparks" }, latency.figure, loss.figure),
  );
  return {
    id: "status",
    title: "Status",
    panel,
    update(m: Model): void {
      const s = m.status;
      captive.update(s, clock);
      if (s === null) {
        setText(sentence, m.unreachable ?? "Detour's service is not running");
        for (const el of [state, gateway, protocol, sinceDd, standby]) setText(el, "-");
        connect.disabled = true;
        disconnect.disabled = true;
      } else {
        setText(sentence, s.summary);
        setText(state, s.state);
        setText(gateway, s.gateway === null ? "-" : `${s.gateway}${s.gatewayChoice != null ? " (chosen)" : ""}`);
        setText(protocol, s.protocol === null ? "-" : PROTOCOL_LABELS[s.protocol]);
        setText(sinceDd, since(s.since, m.now));
        setText(
          standby,
          s.standby === null ? "none" : `${s.standby.gateway} over ${PROTOCOL_LABELS[s.standby.protocol]}`,
        );
        connect.disabled = !(s.state === "disconnected" || s.state === "error");
        // Always-on: detourd refuses a disconnect, so the button is greyed and says why.
        const alwaysOn = s.trusted?.allowDisconnect === false;
        disconnect.disabled = s.state === "disconnected" || alwaysOn;
        disconnect.title = alwaysOn ? "Your organisation's policy does not allow disconnecting" : "";
        if (s.state === "disconnected" && s.trusted?.trusted === true && s.trusted.policy === "disconnect")
          setText(sentence, `On trusted network ${s.trusted.rule ?? ""}: Detour stays disconnected here.`);
      }
      const rtt = m.rtt.at(-1) ?? null;
      const lossNow = m.loss.at(-1) ?? null;
      setText(latency.value, rtt === null ? "no data" : `${rtt.toFixed(1)} ms`);
      setText(loss.value, lossNow === null ? "no data" : `${lossNow.toFixed(1)} %`);
      latency.path.setAttribute("d", sparklinePath(m.rtt, SPARK));
      loss.path.setAttribute(
        "d",
        sparklinePath(m.loss, { ...SPARK, max: Math.max(5, ...m.loss.filter((x): x is number => x !== null)) }),
      );
    },
  };
}
