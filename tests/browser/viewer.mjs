// Drives Debian's chromium (headless, through playwright-core) against the
// viewer of a running `chexnet serve`, as a person would: open the page,
// choose a file, wait for the result. Run by tests/py/test_viewer.py:
//
//   node viewer.mjs URL OUT.json FILE...
//
// For each FILE it records the probabilities the page shows (text and exact
// value), the warnings, the status line, the colour scale shown, and the
// overlay canvas as PNG data
// at opacity 0.5 (the default), 0 and 1. The checks are in the Python test.
import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const [url, out, ...files] = process.argv.slice(2);
if (!url || !out || !files.length) {
  console.error("usage: node viewer.mjs URL OUT.json FILE...");
  process.exit(2);
}

// a fresh profile every run; flags so that the browser talks to nobody but
// the server under test
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "chexnet-chromium-"));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const results = { version: ctx.browser() ? ctx.browser().version() : null, files: [],
                  requests: [] };
try {
  const page = await ctx.newPage();
  page.on("request", (r) => results.requests.push(r.url()));
  page.on("pageerror", (e) => { results.pageErrors = (results.pageErrors || []).concat(String(e)); });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("cam-class").options.length > 0,
                             null, { timeout: 60000 });
  results.notice = await page.textContent("#notice");
  results.title = await page.title();
  let done = 0;
  for (const f of files) {
    const before = await page.evaluate(() => Number(document.body.dataset.done || 0));
    await page.setInputFiles("#file", f);
    await page.waitForFunction(
      (n) => Number(document.body.dataset.done || 0) > n ||
             document.getElementById("status").classList.contains("error"),
      before, { timeout: 120000 });
    const r = { file: f };
    r.status = await page.textContent("#status");
    r.error = await page.evaluate(() => document.getElementById("status").classList.contains("error"));
    r.warnings = await page.$$eval("#warnings li", (els) => els.map((e) => e.textContent));
    r.rows = await page.$$eval(".bar-row", (rows) => rows.map((row) => ({
      cls: row.dataset.class,
      text: row.querySelector(".prob").textContent,
      p: row.querySelector(".prob").dataset.p,
      above: row.classList.contains("above"),
      positive: row.dataset.positive,
      fill: row.querySelector(".fill").style.width,
      threshold: row.querySelector(".threshold").style.left,
    })));
    if (!r.error) {
      done++;
      r.rendered = await page.$eval("#overlay", (c) => c.dataset.rendered === "1" &&
                                                     c.style.display === "block");
      r.camClass = await page.$eval("#overlay", (c) => c.dataset.camClass);
      r.scale = await page.evaluate(() => ({
        value: document.getElementById("cam-scale").value,
        options: [...document.getElementById("cam-scale").options].map((o) => [o.value, o.disabled]),
        caption: document.getElementById("cb-scale").textContent,
        lo: document.getElementById("cb-lo").textContent,
        hi: document.getElementById("cb-hi").textContent,
      }));
      r.canvas = {};
      for (const a of ["0.5", "0", "1"]) {
        await page.$eval("#opacity", (el, v) => {
          el.value = v;
          el.dispatchEvent(new Event("input", { bubbles: true }));
        }, a);
        r.canvas[a] = await page.$eval("#overlay", (c) => c.toDataURL("image/png"));
      }
      await page.$eval("#opacity", (el) => {
        el.value = "0.5";
        el.dispatchEvent(new Event("input", { bubbles: true }));
      });
    }
    results.files.push(r);
  }
  results.done = done;
} finally {
  await ctx.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
fs.writeFileSync(out, JSON.stringify(results));
