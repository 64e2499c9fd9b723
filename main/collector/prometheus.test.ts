/** The Prometheus text formatter: the exposition format's escaping and layout rules. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { escapeLabelValue, formatFamilies } from "./prometheus.ts";

test("families-print-help-type-and-samples-in-text-format-0.0.4", () => {
  const out = formatFamilies([
    {
      name: "detour_agents",
      help: "Agents\nby state",
      type: "gauge",
      samples: [{ labels: { state: "connected" }, value: 3 }, { value: 0.5 }],
    },
    {
      name: "x_total",
      help: "odd values",
      type: "counter",
      samples: [{ value: Number.NaN }, { value: Infinity }, { value: -Infinity }],
    },
  ]);
  assert.equal(
    out,
    '# HELP detour_agents Agents\\nby state\n# TYPE detour_agents gauge\ndetour_agents{state="connected"} 3\ndetour_agents 0.5\n# HELP x_total odd values\n# TYPE x_total counter\nx_total NaN\nx_total +Inf\nx_total -Inf\n',
  );
});

test("label-values-escape-backslash-quote-and-newline", () => {
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
});

test("an-invalid-metric-name-is-a-bug-not-output", () => {
  assert.throws(
    () => formatFamilies([{ name: "detour.agents", help: "", type: "gauge", samples: [] }]),
    /invalid metric name/,
  );
});
