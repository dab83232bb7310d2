// Two headless Chromium pages join the same convene meeting through /meet (livekit-client) and
// each must decode the other's video. Driven by test_browser.py; prints one JSON line of results.
//
// usage: node two_pages.mjs <base-url> <meeting-id> <host-pin> <participant-pin> <timeout-seconds> [host-first|guest-first]
// With guest-first the guest must land in the waiting room before the host enters.
// Uses Debian's Chromium (CHROMIUM or /usr/bin/chromium); playwright-core never downloads one.

import { chromium } from 'playwright-core';

const [base, meetingId, hostPin, guestPin, timeoutArg, order = 'host-first'] = process.argv.slice(2);
const deadline = Date.now() + Number(timeoutArg || 60) * 1000;
const remaining = () => Math.max(1, deadline - Date.now());

const ARGS = [
  '--no-sandbox',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  // Pages in the background must keep decoding.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

const logs = { host: [], guest: [] };

async function openPage(browser, who, pin) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  await context.grantPermissions(['camera', 'microphone'], { origin: base });
  const page = await context.newPage();
  page.on('console', (m) => logs[who].push(`${m.type()}: ${m.text()}`.slice(0, 500)));
  page.on('pageerror', (e) => logs[who].push(`pageerror: ${e.message}`));
  await page.goto(`${base}/meet?meeting=${encodeURIComponent(meetingId)}`, { timeout: remaining() });
  await page.getByLabel('PIN').fill(pin);
  await page.getByLabel('Your name').fill(who === 'host' ? 'Host Page' : 'Guest Page');
  await page.getByRole('button', { name: 'Enter' }).click({ timeout: remaining() });
  return page;
}

async function state(page) {
  return page.evaluate(async () => {
    const c = window.__convene;
    if (!c) return { phase: 'no-hook', video: [] };
    return { phase: c.phase, identity: c.identity, role: c.role, lastError: c.lastError, video: await c.videoStats(), events: c.events };
  });
}

/** Polls the page's state until `predicate` holds, or throws at the deadline with the last state. */
async function waitUntil(page, predicate, what) {
  let last = null;
  while (Date.now() < deadline) {
    last = await state(page);
    if (last.phase === 'left' || (last.phase === 'prejoin' && last.lastError)) break;
    if (predicate(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out waiting for ${what}; last state: ${JSON.stringify(last)}`);
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS });
let pages = {};
let ok = false;
let failure = null;
try {
  if (order === 'guest-first') {
    pages.guest = await openPage(browser, 'guest', guestPin);
    await waitUntil(pages.guest, (s) => s.phase === 'waiting', 'the guest page to show the waiting room');
    pages.host = await openPage(browser, 'host', hostPin);
  } else {
    pages.host = await openPage(browser, 'host', hostPin);
    pages.guest = await openPage(browser, 'guest', guestPin);
  }
  // Each page must reach the meeting, then decode the other's video: a real width and decoded
  // frames. Polled from here until the deadline (page.waitForFunction cannot await a promise).
  for (const [who, page] of Object.entries(pages)) {
    await waitUntil(page, (s) => s.phase === 'live', `${who} page to reach the meeting`);
  }
  for (const [who, page] of Object.entries(pages)) {
    await waitUntil(page, (s) => s.video.some((v) => v.videoWidth > 0 && v.framesDecoded > 0), `${who} page to decode remote video`);
  }
  ok = true;
} catch (e) {
  failure = e.message;
}
const result = { ok, failure, pages: {} };
for (const [who, page] of Object.entries(pages)) {
  result.pages[who] = await state(page).catch((e) => ({ error: e.message }));
  if (!ok) result.pages[who].console = logs[who].slice(-40);
}
await browser.close();
console.log(JSON.stringify(result));
process.exit(ok ? 0 : 1);
