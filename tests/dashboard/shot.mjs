// Loads the sqlite-insights dashboard in Debian's headless Chromium and
// reports what a person would see: console errors, the queries table, the
// charts' drawn shapes; saves a screenshot.
// usage: node shot.mjs URL OUT.png [width height]
import { chromium } from "playwright-core";

const [url, out, w = "1440", h = "1700"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const result = { console: [], pageErrors: [], requests: [] };
try {
  const page = await browser.newPage({ viewport: { width: +w, height: +h }, colorScheme: "dark" });
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") result.console.push(m.type() + ": " + m.text()); });
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  page.on("request", (r) => result.requests.push(r.url()));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => document.body.dataset.loaded === "1", null, { timeout: 20000 });
  // a second refresh cycle so the charts have settled
  await page.waitForTimeout(2500);
  Object.assign(result, await page.evaluate(() => {
    const shapes = (id) => document.querySelectorAll(`#${id} svg path, #${id} svg rect, #${id} svg circle`).length;
    return {
      title: document.title,
      banner: getComputedStyle(document.getElementById("banner")).display,
      queries: [...document.querySelectorAll("#queries tr.qrow code")].map((c) => c.textContent),
      headers: [...document.querySelectorAll("#queries th")].map((t) => t.textContent),
      charts: { qps: shapes("ch-qps"), latency: shapes("ch-lat"), errors: shapes("ch-err") },
      nodata: [...document.querySelectorAll(".nodata")].map((n) => n.closest(".panel")?.querySelector("h2")?.textContent),
      kpis: [...document.querySelectorAll(".kpi .value")].map((k) => k.textContent),
      errors: document.querySelectorAll("#errors tr").length,
      sizes: document.getElementById("sizes").textContent,
    };
  }));
  // sorting by calls puts the most called query first
  await page.click('#queries th[data-k="calls"]');
  result.sortedByCalls = await page.evaluate(() => document.querySelector("#queries th.active")?.dataset.k);
  await page.click("#queries tr.qrow");
  result.detailOpen = await page.evaluate(() => !!document.querySelector("#queries tr.detail"));
  await page.click('#queries th[data-k="total_ms"]');
  await page.screenshot({ path: out, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
