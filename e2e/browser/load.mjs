// Times the dashboard's endpoint list in headless Chromium against a running platform: `runs`
// fresh page loads (log in, first page of 25 rows drawn) and searches (typed, the one match drawn).
// Run by the ignored bench in e2e/tests/dashboard_10k.rs. Environment: KAA_URL, KAA_ADMIN_TOKEN,
// KAA_SEARCH (text matching exactly one endpoint), KAA_RUNS, CHROMIUM. Prints one JSON line (ms).

import { chromium } from 'playwright-core';

const base = process.env.KAA_URL;
const token = process.env.KAA_ADMIN_TOKEN;
const needle = process.env.KAA_SEARCH;
const runs = Number(process.env.KAA_RUNS ?? 5);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
const loads = [];
const searches = [];
try {
  for (let i = 0; i < runs; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const start = performance.now();
    await page.goto(`${base}/`);
    await page.fill('#token', token);
    await page.click('#login-form button');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-endpoint]').length === 25, null, { timeout: 30_000 });
    loads.push(performance.now() - start);

    const typed = performance.now();
    await page.fill('#search', needle);
    await page.waitForFunction(() => document.querySelectorAll('tr[data-endpoint]').length === 1, null, { timeout: 30_000 });
    // Includes the page's 250 ms pause after typing.
    searches.push(performance.now() - typed);
    await context.close();
  }
  console.log(JSON.stringify({ loads, searches }));
} finally {
  await browser.close();
}
