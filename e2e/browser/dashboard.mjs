// The dashboard in headless Chromium against a running `kaa up`, with a real MQTT device
// (e2e/clients/dashboard_meter.py). Run by e2e/tests/dashboard.rs, which starts the platform.
//
// Environment: KAA_URL (http base), KAA_ADMIN_TOKEN, KAA_MQTT_PORT, KAA_SCREENSHOTS (a directory),
// CHROMIUM (default /usr/bin/chromium). Every wait polls against a deadline; nothing sleeps to
// synchronise. Prints one JSON line with what it saw; exits 1 (with failure.png) on any failure.

import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const base = env('KAA_URL');
const token = env('KAA_ADMIN_TOKEN');
const mqttPort = env('KAA_MQTT_PORT');
const shots = env('KAA_SCREENSHOTS');
const APP_VERSION = 'demo_application_v1';
const DEVICE_TOKEN = 'my-meter';
const DEADLINE_MS = 20_000;
const here = dirname(fileURLToPath(import.meta.url));

mkdirSync(shots, { recursive: true });
const report = { screenshots: shots };

// Polls `check` (async, returns a truthy value when done) until it holds or the deadline passes.
async function until(what, check, ms = DEADLINE_MS) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

const text = (page, selector) => page.locator(selector).first().textContent({ timeout: 1000 });

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  // Root in a container has no user namespace for Chromium's sandbox.
  args: ['--no-sandbox'],
});
const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
const logged = [];
page.on('console', (m) => logged.push(m.text()));
page.on('request', (r) => logged.push(r.url()));
// The list's polls: 304 while nothing changed (If-None-Match), 200 when something did.
const listAnswers = [];
page.on('response', (r) => {
  if (new URL(r.url()).pathname === '/epr/api/v1/endpoints' && r.request().method() === 'GET') listAnswers.push(r.status());
});
let device;

try {
  // 1. Log in: a wrong token is refused, the right one opens the endpoint list.
  await page.goto(`${base}/`);
  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button');
  await until('the wrong token to be refused', async () => (await text(page, '#login-error')).includes('not the admin token'));
  await page.screenshot({ path: join(shots, '1-login.png') });
  await page.fill('#token', token);
  await page.click('#login-form button');
  await until('the endpoint list', async () => (await text(page, '#view h1')) === 'Endpoints');

  // 2. Register the tutorial's meter with its token and a field entered at registration.
  await page.click('nav >> text=Register endpoint');
  await page.fill('#reg-token', DEVICE_TOKEN);
  await page.fill('#reg-metadata', '{"meterDescription": "Kitchen meter"}');
  await page.click('#view form button[type=submit]');
  await until('the token shown once', async () => (await text(page, '#new-token')) === DEVICE_TOKEN);
  const command = await text(page, '#device-command');
  if (!command.includes(`mosquitto_pub -h 127.0.0.1 -p 1883 -t kp1/${APP_VERSION}/epmx/${DEVICE_TOKEN}/update/keys`)) {
    throw new Error(`unexpected device command: ${command}`);
  }
  const endpointId = await text(page, '#new-endpoint');
  report.endpointId = endpointId;
  await page.screenshot({ path: join(shots, '2-registered.png') });

  // 3. The list, with metadata columns chosen by the user; the meter is offline.
  await page.click('nav >> text=Endpoints');
  await page.fill('#columns', 'model,mac,meterDescription');
  await page.press('#columns', 'Enter');
  await page.locator('#columns').blur();
  const row = `tr[data-endpoint="${endpointId}"]`;
  await until('the meter listed offline', async () => (await text(page, row)).includes('offline'));
  // A marker that a reload would wipe: the list must update in place.
  await page.evaluate(() => {
    window.notReloaded = true;
  });
  // Nothing changes while the meter is away: the polls are answered 304, without a body.
  await until('a poll answered 304 Not Modified', async () => listAnswers.slice(-1)[0] === 304);
  const quiet = listAnswers.length;

  // 4. The device connects, reports metadata and telemetry: online, with its metadata, live.
  device = spawn('python3', [join(here, '../clients/dashboard_meter.py'), '--port', mqttPort,
    '--app-version', APP_VERSION, '--token', DEVICE_TOKEN], { stdio: ['pipe', 'pipe', 'inherit'] });
  const events = [];
  device.stdout.on('data', (d) => events.push(...d.toString().trim().split('\n')));
  await until('the meter online with its model', async () => {
    const cells = await text(page, row);
    return cells.includes('online') && (await text(page, `${row} td[data-key="model"]`)) === 'MySmartMeter A300';
  });
  if ((await text(page, `${row} td[data-key="mac"]`)) !== '00-14-22-01-23-45') throw new Error('mac column');
  if (!(await page.evaluate(() => window.notReloaded))) throw new Error('the page reloaded');
  if (!listAnswers.slice(quiet).includes(200)) throw new Error(`the change came without a 200: ${listAnswers}`);
  report.listPolls = { notModified: listAnswers.filter((s) => s === 304).length, changed: listAnswers.filter((s) => s === 200).length };
  // The README's picture (docs/dashboard.png): the tutorial's meter, online, in the list.
  await page.screenshot({ path: join(shots, '3-list-online.png'), clip: { x: 0, y: 0, width: 1200, height: 380 } });

  // 5. Its page: connectivity, metadata, and the chart with the samples.
  await page.click(`${row} a`);
  await until('the endpoint page', async () => (await text(page, '#view h1')).includes(endpointId));
  await until('connectivity online', async () => (await text(page, '#connectivity')).includes('online'));
  await until('the temperature series', async () => (await page.locator('#series option').allTextContents()).includes('auto~temperature'));
  await page.selectOption('#series', 'auto~temperature');
  report.chartPoints = await until('a chart with at least 5 points', async () => {
    const points = Number(await page.locator('svg.chart').getAttribute('data-points', { timeout: 1000 }));
    const dots = await page.locator('svg.chart circle').count();
    return points >= 5 && dots === points && points;
  });

  // 6. Push a configuration: the device applies it, the page shows APPLIED.
  await page.fill('#config-json', '{"reportEveryS": 30}');
  await page.click('text=Push to this endpoint');
  await until('the configuration applied', async () => (await text(page, '#config-state')).startsWith('APPLIED'));

  // 7. Send a command and see the device's answer.
  await page.fill('#command-type', 'reboot');
  await page.fill('#command-payload', '{"delayS": 5}');
  await page.click('text=Send command');
  const answer = await until('the command answered', async () => {
    const item = page.locator('#command-results li[data-state="completed"]');
    return (await item.count()) > 0 && item.first().textContent();
  });
  if (!answer.includes('"done": "reboot"')) throw new Error(`unexpected command result: ${answer}`);
  report.command = answer.replace(/\s+/g, ' ');

  // 8. Edit the metadata on the page.
  const metadata = JSON.parse(await page.inputValue('#metadata-json'));
  await page.fill('#metadata-json', JSON.stringify({ ...metadata, meterDescription: 'Hall meter' }));
  await page.click('text=Save metadata');
  await until('the edited metadata', async () => (await text(page, 'dd[data-key="meterDescription"]')) === 'Hall meter');
  await page.screenshot({ path: join(shots, '4-endpoint.png'), fullPage: true });

  // The token never left the Authorization header.
  if (logged.some((line) => line.includes(token))) throw new Error('the admin token appeared in a URL or the console');
  report.device = events;
  report.ok = true;
  console.log(JSON.stringify(report));
} catch (e) {
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  report.error = String(e?.stack ?? e);
  console.log(JSON.stringify(report));
  process.exitCode = 1;
} finally {
  device?.stdin.end();
  device?.kill();
  await browser.close();
}
