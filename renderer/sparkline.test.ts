import assert from "node:assert/strict";
import { test } from "node:test";
import { sparklinePath } from "./sparkline.ts";

test("samples-map-left-to-right-with-the-largest-at-the-top", () => {
  assert.equal(sparklinePath([0, 10, 5], { width: 100, height: 20 }), "M0 20 L50 0 L100 10");
});

test("an-outage-breaks-the-line-instead-of-drawing-zero", () => {
  assert.equal(sparklinePath([10, null, 10], { width: 10, height: 10 }), "M0 0 M10 0");
});

test("a-fixed-scale-clamps-spikes", () => {
  assert.equal(sparklinePath([200, 50], { width: 10, height: 10, max: 100 }), "M0 0 L10 5");
});

test("nothing-to-draw-gives-an-empty-path", () => {
  assert.equal(sparklinePath([], { width: 10, height: 10 }), "");
  assert.equal(sparklinePath([null, null], { width: 10, height: 10 }), "");
  assert.equal(sparklinePath([1], { width: 0, height: 10 }), "");
});
