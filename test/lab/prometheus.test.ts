/** The lab's Prometheus: its config never holds the token itself, and query answers become samples. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseVector, prometheusConfig } from "./prometheus.ts";

test("the-config-scrapes-the-collector-every-second-with-the-token-from-a-file", () => {
  const yml = prometheusConfig({
    target: "198.18.100.2:4318",
    tokenFile: "/run/detour-lab/prom/prometheus/read.token",
  });
  assert.match(yml, /^ {2}scrape_interval: 1s$/m);
  assert.match(yml, /^ {2}scrape_timeout: 1s$/m);
  assert.match(yml, /^ {4}metrics_path: \/metrics$/m);
  assert.match(yml, /^ {6}credentials_file: "\/run\/detour-lab\/prom\/prometheus\/read\.token"$/m);
  assert.match(yml, /^ {6}- targets: \["198\.18\.100\.2:4318"\]$/m);
  assert.doesNotMatch(yml, /credentials:|bearer_token:/, "the token itself is never in the config");
});

test("an-instant-query-answer-becomes-labelled-samples", () => {
  const body = JSON.stringify({
    status: "success",
    data: {
      resultType: "vector",
      result: [
        {
          metric: { __name__: "detour_agents", state: "connected", job: "detour-collector" },
          value: [1763800000.1, "1"],
        },
      ],
    },
  });
  assert.deepEqual(parseVector(body), [
    { labels: { __name__: "detour_agents", state: "connected", job: "detour-collector" }, value: 1 },
  ]);
  assert.deepEqual(parseVector(JSON.stringify({ status: "success", data: { resultType: "vector", result: [] } })), []);
  assert.throws(
    () => parseVector(JSON.stringify({ status: "error", errorType: "bad_data", error: "parse error" })),
    /parse error/,
  );
  assert.throws(
    () => parseVector(JSON.stringify({ status: "success", data: { resultType: "matrix", result: [] } })),
    /expected a vector/,
  );
});
