// Shared helpers for the browser scenarios: Debian's Chromium through playwright-core with fake
// media devices, pages driven through their accessible names, waits on page state (never fixed
// sleeps), axe-core checks and screenshots.

import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import { mkdirSync, writeFileSync } from 'node:fs';
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

/** Chromium; `fakeUi: false` leaves permission prompts to the context's grants (to deny them);
 * `audioFile` (a WAV file, looped) is what every fake microphone hears instead of Chromium's beep. */
export async function launch({ fakeUi = true, audioFile = null } = {}) {
  const args = fakeUi ? [...ARGS, '--use-fake-ui-for-media-stream'] : [...ARGS];
  if (audioFile) args.push(`--use-file-for-fake-audio-capture=${audioFile}`);
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

  /** A page for `who`; `init` (a function) runs in it before any of the page's own scripts. */
  async open(who, { width = 1280, height = 800, colorScheme = 'dark', grant = true, path = '/meet', init = null } = {}) {
    const context = await this.browser.newContext({ viewport: { width, height }, colorScheme, bypassCSP: true });
    if (init) await context.addInitScript(init);
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

/** A WAV file (16-bit mono PCM, 48 kHz) of `seconds` of a `hz` tone at `amplitude` (0..1): a voice
 * as steady as a test needs (Chromium's own fake microphone only beeps now and then, too little to count as speech). */
export function toneWav(path, { seconds = 5, hz = 440, amplitude = 0.5 } = {}) {
  const rate = 48000;
  const samples = seconds * rate;
  const wav = Buffer.alloc(44 + samples * 2);
  wav.write('RIFF', 0);
  wav.writeUInt32LE(36 + samples * 2, 4);
  wav.write('WAVEfmt ', 8);
  wav.writeUInt32LE(16, 16); // fmt chunk size
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // mono
  wav.writeUInt32LE(rate, 24);
  wav.writeUInt32LE(rate * 2, 28); // bytes a second
  wav.writeUInt16LE(2, 32); // bytes a frame
  wav.writeUInt16LE(16, 34); // bits a sample
  wav.write('data', 36);
  wav.writeUInt32LE(samples * 2, 40);
  for (let i = 0; i < samples; i++) {
    wav.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * hz * i) / rate)), 44 + i * 2);
  }
  writeFileSync(path, wav);
  return path;
}

/** Runs a scenario and prints its one JSON result line; the exit code says whether it passed. */
export async function run(seconds, body, { fakeUi = true, audioFile = null } = {}) {
  const limit = deadline(seconds);
  const browser = await launch({ fakeUi, audioFile });
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
