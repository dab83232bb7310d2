// Both connections of two pages are cut by a server restart (the harness restarts it on the same
// port and data when this script prints {"restart": true}, and answers on stdin): each page keeps
// its meeting, its event stream resumes (a chat message sent after the restart arrives) and its
// media comes back (the other's video is decoded again).
//
// usage: node scenario_reconnect.mjs <base-url> <api-key> <api-secret>

import { createInterface } from 'node:readline';
import { adminApi, decodes, run, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

await run(150, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Resilient', policy: 'wait_for_host' });
  const host = await pages.join('host', meeting.meeting_id, meeting.credentials.host, { name: 'Host' });
  const guest = await pages.join('guest', meeting.meeting_id, meeting.credentials.participant, { name: 'Guest' });
  const ids = {};
  for (const [who, page] of Object.entries({ host, guest })) ids[who] = (await until(page, (s) => s.phase === 'live', `${who} in`, limit)).identity;
  const before = {};
  for (const [who, page] of Object.entries({ host, guest })) {
    const other = who === 'host' ? ids.guest : ids.host;
    before[who] = (await until(page, decodes(other), `${who} decoding`, limit)).video.find((v) => v.identity === other).framesDecoded;
  }
  // Each page notes when its connections drop, to show they did.
  for (const page of [host, guest]) {
    await page.evaluate(() => {
      window.__drops = { media: 0, events: 0 };
      window.__conveneRoom.on('reconnecting', () => (window.__drops.media += 1)).on('disconnected', () => (window.__drops.media += 1));
      let last = window.__convene.state.stream;
      setInterval(() => {
        const now = window.__convene.state.stream;
        if (now !== last && now !== 'open') window.__drops.events += 1;
        last = now;
      }, 20);
    });
  }

  result.step('restart');
  console.log(JSON.stringify({ restart: true }));
  const answer = await lines.next();
  if (answer.done || answer.value.trim() !== 'go') throw new Error('the harness did not restart the server');

  result.step('recover');
  for (const [who, page] of Object.entries({ host, guest })) {
    const other = who === 'host' ? ids.guest : ids.host;
    await until(page, (s) => s.phase === 'live' && s.stream === 'open', `${who}'s events back`, limit);
    await until(page, (s) => s.video.some((v) => v.identity === other && v.framesDecoded > 0 && v.framesDecoded !== before[who]) && s.remote.some((r) => r.identity === other), `${who} decoding again`, limit);
  }
  await host.getByRole('button', { name: 'Chat' }).click();
  await host.getByLabel('Message', { exact: true }).fill('Still here after the restart');
  await host.getByRole('button', { name: 'Send' }).click();
  await until(guest, (s) => s.chat.some((l) => l.text === 'Still here after the restart'), 'the guest reading chat after the restart', limit);
  result.details.drops = {};
  for (const [who, page] of Object.entries({ host, guest })) result.details.drops[who] = await page.evaluate(() => window.__drops);
  for (const [who, drops] of Object.entries(result.details.drops)) {
    if (drops.media === 0 || drops.events === 0) throw new Error(`${who}'s connections never dropped: ${JSON.stringify(drops)}`);
  }
});
