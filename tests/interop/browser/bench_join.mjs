// Benchmark (not a test): the time from clicking Join on /meet to the first decoded frame of a
// remote video, over loopback, for ten joins into a meeting whose host is publishing; prints each
// join, the median (p50), and the size of what the meeting page downloads (gzip).
//
// usage: node bench_join.mjs <convene binary> [joins]
// Starts the binary on a free port with a fresh data directory; Debian's Chromium, fake devices.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pages, adminApi, deadline, launch, until } from './lib.mjs';

const [binary, joinsArg = '10'] = process.argv.slice(2);
if (!binary) {
  console.error('usage: node bench_join.mjs <convene binary> [joins]');
  process.exit(2);
}
const joins = Number(joinsArg);
const KEY = 'APIbench';
const SECRET = 'bench-secret-0123456789-0123456789-abcdef';

const port = await new Promise((resolve) => {
  const probe = createServer().listen(0, '127.0.0.1', () => {
    const { port } = probe.address();
    probe.close(() => resolve(port));
  });
});
const dataDir = mkdtempSync(join(tmpdir(), 'convene-bench-web-'));
const server = spawn(binary, [], {
  env: { ...process.env, CONVENE_HTTP_ADDR: `127.0.0.1:${port}`, CONVENE_RTC_UDP_PORT: '0', CONVENE_RTC_TCP_PORT: '0', CONVENE_DATA_DIR: dataDir, CONVENE_API_KEY: KEY, CONVENE_API_SECRET: SECRET, RUST_LOG: 'warn' },
  stdio: 'ignore',
});
const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${base}/healthz`)).ok) break;
  } catch {
    if (i > 300) throw new Error('convene did not start');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Marks the click on Join and the first frame any remote video element presents. */
function timing() {
  window.__bench = { click: null, frame: null };
  document.addEventListener('click', (e) => {
    if (e.target instanceof Element && e.target.closest('button[type=submit]')) window.__bench.click = performance.now();
  }, true);
  const seen = new WeakSet();
  new MutationObserver(() => {
    for (const video of document.querySelectorAll('video')) {
      if (seen.has(video) || video.closest('[data-lk-local-participant="true"]') || video.closest('.cv-preview-video')) continue;
      seen.add(video);
      video.requestVideoFrameCallback(() => {
        if (window.__bench.frame === null) window.__bench.frame = performance.now();
      });
    }
  }).observe(document, { childList: true, subtree: true });
}

const limit = deadline(60 + joins * 30);
const browser = await launch();
const pages = new Pages(browser, base, limit);
const samples = [];
try {
  const admin = adminApi(base, KEY, SECRET);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Benchmark', policy: 'open' });
  const host = await pages.join('host', meeting.meeting_id, meeting.credentials.host, { name: 'Host' });
  await until(host, (s) => s.phase === 'live' && s.remote !== undefined, 'the host publishing', limit);
  await host.waitForFunction(() => window.__conveneRoom?.localParticipant.getTrackPublication('camera')?.track);
  for (let i = 0; i < joins; i++) {
    const page = await pages.open(`guest${i}`, { path: null });
    await page.addInitScript(timing);
    await page.goto(`${base}/meet?meeting=${meeting.meeting_id}`);
    await page.getByTestId('preview').waitFor();
    await page.getByLabel('PIN').fill(meeting.credentials.participant);
    await page.getByLabel('Your name').fill(`Guest ${i}`);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    await page.waitForFunction(() => window.__bench.frame !== null, null, { timeout: limit.remaining() });
    samples.push(await page.evaluate(() => window.__bench.frame - window.__bench.click));
    await page.context().close();
  }
  // What the meeting page downloads, compressed as the server sends it.
  const html = await (await fetch(`${base}/meet`)).text();
  const assets = [...html.matchAll(/\/assets\/[^"]+/g)].map((m) => m[0]);
  let bytes = 0;
  for (const path of ['/meet', ...assets]) {
    const response = await fetch(base + path, { headers: { 'accept-encoding': 'gzip' } });
    bytes += (await response.arrayBuffer()).byteLength === 0 ? 0 : Number(response.headers.get('content-length') ?? 0);
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const p50 = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  console.log(`join to first decoded remote frame, ${samples.length} joins (ms): ${samples.map((s) => s.toFixed(0)).join(' ')}`);
  console.log(`p50 ${p50.toFixed(0)} ms, min ${sorted[0].toFixed(0)} ms, max ${sorted[sorted.length - 1].toFixed(0)} ms`);
  console.log(`meeting page download, gzip: ${bytes} bytes (${(bytes / 1024).toFixed(1)} KiB) in ${assets.length + 1} files`);
} finally {
  await pages.close().catch(() => undefined);
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  rmSync(dataDir, { recursive: true, force: true });
}
