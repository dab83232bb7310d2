// Shared helpers for the browser scenarios: Debian's Chromium through playwright-core with fake
// media devices, pages driven through their accessible names, waits on page state (never fixed
// sleeps), axe-core checks and screenshots.

import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, '..', '..', '..');
export const SHOTS = process.env.CONVENE_SCREENSHOTS || join(ROOT, 'target', 'screenshots');
const AXE = require.resolve('axe-core/axe.min.js');

export const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Fake camera and microphones (three of them, to switch between).
  '--use-fake-device-for-media-stream',
  // Pages in the background must keep decoding.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  // Screen capture without a picker: the fake capture source.
  '--auto-select-desktop-capture-source=Entire screen',
  '--enable-usermedia-screen-capturing',
];

/** Chromium; `fakeUi: false` leaves permission prompts to the context's grants (to deny them). */
export async function launch({ fakeUi = true } = {}) {
  const args = fakeUi ? [...ARGS, '--use-fake-ui-for-media-stream'] : ARGS;
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args });
}

/** A scenario's deadline: every wait is bounded by it. */
export function deadline(seconds) {
  const end = Date.now() + seconds * 1000;
  return { remaining: () => Math.max(1, end - Date.now()), passed: () => Date.now() > end };
}

export class Pages {
  constructor(browser, base, limit) {
    this.browser = browser;
    this.base = base;
    this.limit = limit;
    this.logs = {};
    this.pages = {};
  }

  async open(who, { width = 1280, height = 800, colorScheme = 'dark', grant = true, path = '/meet' } = {}) {
    const context = await this.browser.newContext({ viewport: { width, height }, colorScheme, bypassCSP: true });
    if (grant) await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: this.base });
    const page = await context.newPage();
    this.logs[who] = [];
    page.on('console', (m) => this.logs[who].push(`${m.type()}: ${m.text()}`.slice(0, 400)));
    page.on('pageerror', (e) => this.logs[who].push(`pageerror: ${e.message}`));
    page.setDefaultTimeout(this.limit.remaining());
    this.pages[who] = page;
    if (path) await page.goto(this.base + path, { timeout: this.limit.remaining() });
    return page;
  }

  /** The form's way in: meeting ID, PIN, name, Join. */
  async join(who, meetingId, pin, options = {}) {
    const page = await this.open(who, { ...options, path: `/meet?meeting=${encodeURIComponent(meetingId)}` });
    await page.getByLabel('PIN').fill(pin);
    await page.getByLabel('Your name').fill(options.name || who);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    return page;
  }

  async close() {
    await this.browser.close();
  }

  /** The last console lines of every page, for a failure report. */
  tails(n = 30) {
    return Object.fromEntries(Object.entries(this.logs).map(([who, lines]) => [who, lines.slice(-n)]));
  }
}

/** Waits until `predicate(state)` holds for the page's `window.__convene` snapshot. */
export async function until(page, predicate, what, limit) {
  let last = null;
  while (!limit.passed()) {
    last = await snapshot(page).catch((e) => ({ error: e.message }));
    if (predicate(last)) return last;
    await page.waitForTimeout(150);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last).slice(0, 1500)}`);
}

export async function snapshot(page) {
  return page.evaluate(async () => {
    const c = window.__convene;
    if (!c) return { phase: 'no-hook' };
    const s = c.state;
    return {
      phase: s.phase,
      end: s.end,
      identity: s.identity,
      role: s.role,
      error: s.error,
      notice: s.notice,
      position: s.position,
      invited: s.invited,
      stream: s.stream,
      hands: s.hands,
      meeting: s.meeting,
      people: Object.fromEntries(Object.entries(s.people).map(([k, p]) => [k, { role: p.role, state: p.state, hand: p.hand_raised, invited: p.invited }])),
      chat: s.chat.map((l) => ({ from: l.from, to: l.to, text: l.text, waitingRoom: l.waitingRoom })),
      video: await c.videoStats(),
      audio: await c.audioStats(),
      remote: c.remote(),
    };
  });
}

/** Whether `page` decodes video from `identity` (`source` camera or screen_share). */
export const decodes = (identity, source = 'camera') => (s) => (s.video || []).some((v) => v.identity === identity && v.source === source && v.framesDecoded > 0 && v.videoWidth > 0);

/** Whether `page` receives more audio from `identity` than `packets`. */
export const hears = (identity, packets = 0) => (s) => (s.audio || []).some((a) => a.identity === identity && a.packetsReceived > packets);

/** axe-core on the page as it is: serious and critical violations, one line each. */
export async function axe(page, screen) {
  await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({ screen, ...v }));
}

/** A screenshot under target/screenshots for review. */
export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const width = page.viewportSize()?.width ?? 0;
  await page.screenshot({ path: join(SHOTS, `${name}-${width}.png`) });
}

/** The admin API, as the test's own client. */
export function adminApi(base, key, secret) {
  const auth = 'Basic ' + Buffer.from(`${key}:${secret}`).toString('base64');
  return async (method, path, body) => {
    const response = await fetch(base + path, { method, headers: { authorization: auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    const data = text ? JSON.parse(text) : null;
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return data;
  };
}

/** Runs a scenario and prints its one JSON result line; the exit code says whether it passed. */
export async function run(seconds, body, { fakeUi = true } = {}) {
  const limit = deadline(seconds);
  const browser = await launch({ fakeUi });
  const [base] = process.argv.slice(2);
  const pages = new Pages(browser, base, limit);
  const started = Date.now();
  const result = { ok: false, failure: null, axe: [], details: {}, steps: [] };
  result.step = (name) => result.steps.push([name, Date.now() - started]);
  try {
    await body({ pages, base, limit, result });
    result.ok = result.axe.length === 0;
    if (!result.ok) result.failure = 'axe-core found serious or critical violations';
  } catch (e) {
    result.failure = e.stack || String(e);
    result.console = pages.tails();
    result.states = {};
    for (const [who, page] of Object.entries(pages.pages)) result.states[who] = await snapshot(page).catch((err) => ({ error: err.message }));
  }
  await pages.close().catch(() => undefined);
  console.log(JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}
