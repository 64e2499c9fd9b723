// Renders resources/icons/<state>.svg to the tray PNGs Electron loads: <state>.png (16 px), @2x (32 px) and
// @4x (64 px), with Chromium through playwright-core (transparent background). `CHROMIUM=<path>` picks the
// browser (e.g. a wrapper that runs it in a network namespace); it renders local markup only, no network.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const dir = new URL("../resources/icons/", import.meta.url).pathname;
const STATES = ["disconnected", "connecting", "connected", "degraded", "error"];
const SIZES = [
  [16, ""],
  [32, "@2x"],
  [64, "@4x"],
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  chromiumSandbox: false,
  args: [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
try {
  const page = await browser.newPage();
  for (const state of STATES) {
    const svg = readFileSync(join(dir, `${state}.svg`), "utf8");
    for (const [px, suffix] of SIZES) {
      await page.setViewportSize({ width: px, height: px });
      await page.setContent(
        `<html><body style="margin:0;background:transparent">${svg.replace('width="64" height="64"', `width="${px}" height="${px}"`)}</body></html>`,
      );
      await page.screenshot({
        path: join(dir, `${state}${suffix}.png`),
        omitBackground: true,
        clip: { x: 0, y: 0, width: px, height: px },
      });
    }
  }
} finally {
  await browser.close();
}
console.log(`rendered ${STATES.length * SIZES.length} PNGs into ${dir}`);
