// Adaptive streams and dynacast with livekit-client itself (the npm package, loaded into a page on
// convene's origin; the web app turns both off): a publisher sends a simulcast camera (720p fake
// device: three layers) with `dynacast: true`; a subscriber
//   (b) asks for the low layer (`setVideoQuality(LOW)`): it receives a narrower picture and keeps
//       decoding;
//   (c) being the only subscriber, on low: the publisher's top encoding stops sending (dynacast);
//   (a) disables the track (`setEnabled(false)`, what adaptiveStream does for a hidden element):
//       its inbound bytes stop growing; enabled again, it decodes again;
//   and back to high: the top layer comes back, wider than the low one.
// Every wait polls the pages' WebRTC statistics under the scenario's deadline.
//
// usage: node scenario_adaptive.mjs <base-url> <api-key> <api-secret>

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { adminApi, run } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);
const HERE = dirname(fileURLToPath(import.meta.url));
const LIVEKIT = join(HERE, 'node_modules', 'livekit-client', 'dist', 'livekit-client.umd.js');

/** Enter and join the meeting through convene's API: the join answer (`url`, `access_token`). */
async function joinAs(base, meeting, role, identity) {
  const post = async (path, body, token) => {
    const headers = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${base}/v1/meetings/${meeting.meeting_id}${path}`, { method: 'POST', headers, body: body && JSON.stringify(body) });
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
    return response.json();
  };
  const entered = await post('/enter', { credential: meeting.credentials[role], name: identity, identity });
  return post('/join', undefined, entered.token);
}

/** A page on convene's origin with livekit-client connected as `answer`, with `options`. */
async function livekitPage(pages, who, answer, options) {
  const page = await pages.open(who, { path: '/' });
  await page.addScriptTag({ path: LIVEKIT });
  await page.evaluate(async ({ url, token, options }) => {
    const room = new LivekitClient.Room(options);
    window.room = room;
    await room.connect(url, token);
  }, { url: answer.url, token: answer.access_token, options });
  return page;
}

/** The subscriber's inbound video statistics for the one remote camera. */
const inbound = (page) =>
  page.evaluate(async () => {
    const pub = [...window.room.remoteParticipants.values()].flatMap((p) => [...p.videoTrackPublications.values()])[0];
    const receiver = pub?.track?.receiver;
    if (!receiver) return null;
    for (const s of (await receiver.getStats()).values()) {
      if (s.type === 'inbound-rtp') return { bytes: s.bytesReceived || 0, width: s.frameWidth || 0, decoded: s.framesDecoded || 0 };
    }
    return null;
  });

/** The publisher's outbound statistics per simulcast layer (rid). */
const outbound = (page) =>
  page.evaluate(async () => {
    const pub = [...window.room.localParticipant.videoTrackPublications.values()][0];
    const sender = pub?.track?.sender;
    if (!sender) return {};
    const layers = {};
    for (const s of (await sender.getStats()).values()) {
      if (s.type === 'outbound-rtp') layers[s.rid || '-'] = { bytes: s.bytesSent || 0, width: s.frameWidth || 0, active: s.active !== false };
    }
    return layers;
  });

/** Polls `read` until `test(previous, current)` holds between two reads `gap` ms apart. */
async function untilBetween(page, read, test, what, limit, gap = 1200) {
  let last = null;
  while (!limit.passed()) {
    const before = await read(page);
    await page.waitForTimeout(gap);
    const after = await read(page);
    last = [before, after];
    if (before && after && test(before, after)) return after;
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

const setQuality = (page, quality) =>
  page.evaluate((quality) => {
    const pub = [...window.room.remoteParticipants.values()].flatMap((p) => [...p.videoTrackPublications.values()])[0];
    pub.setVideoQuality(LivekitClient.VideoQuality[quality]);
  }, quality);

const setEnabled = (page, enabled) =>
  page.evaluate((enabled) => {
    const pub = [...window.room.remoteParticipants.values()].flatMap((p) => [...p.videoTrackPublications.values()])[0];
    pub.setEnabled(enabled);
  }, enabled);

await run(240, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Adaptive', policy: 'open' });
  const publisher = await livekitPage(pages, 'publisher', await joinAs(base, meeting, 'host', 'pub'), { dynacast: true, singlePeerConnection: false });
  const subscriber = await livekitPage(pages, 'subscriber', await joinAs(base, meeting, 'participant', 'sub'), { adaptiveStream: false, dynacast: false, singlePeerConnection: false });
  await publisher.evaluate(() =>
    window.room.localParticipant.setCameraEnabled(true, { resolution: LivekitClient.VideoPresets.h720.resolution }, { simulcast: true, videoCodec: 'vp8' }),
  );
  // The subscriber shows the video (a decoder runs only for a track with a sink).
  await subscriber.waitForFunction(() => [...window.room.remoteParticipants.values()].some((p) => [...p.videoTrackPublications.values()].some((v) => v.track)), null, { timeout: limit.remaining() });
  await subscriber.evaluate(() => {
    const pub = [...window.room.remoteParticipants.values()].flatMap((p) => [...p.videoTrackPublications.values()])[0];
    const element = pub.track.attach();
    element.muted = true;
    document.body.append(element);
  });
  result.step('subscribed');

  // The publisher sends more than one layer, and the subscriber gets the best it has.
  const layers = await untilBetween(publisher, outbound, (a, b) => Object.keys(b).filter((rid) => b[rid].bytes > (a[rid]?.bytes ?? 0)).length >= 2, 'two layers sending', limit);
  result.details.layers = layers;
  const top = await untilBetween(subscriber, inbound, (a, b) => b.decoded > a.decoded + 5 && b.width > 0, 'decoding the camera', limit);
  const widest = Math.max(...Object.values(layers).map((l) => l.width));
  const high = await untilBetween(subscriber, inbound, (a, b) => b.decoded > a.decoded + 5 && b.width >= Math.min(widest, top.width + 1) , 'the widest layer', limit).catch(() => top);
  result.details.high = high;
  result.step('high');

  // (b) The low layer: a narrower picture, still decoding.
  await setQuality(subscriber, 'LOW');
  const low = await untilBetween(subscriber, inbound, (a, b) => b.width > 0 && b.width < high.width && b.decoded > a.decoded + 5, 'a narrower layer, decoding', limit);
  result.details.low = low;
  result.step('low');

  // (c) Dynacast: nobody needs the top layer; the publisher stops sending it.
  const topRid = Object.entries(layers).sort((x, y) => y[1].width - x[1].width)[0][0];
  const paused = await untilBetween(publisher, outbound, (a, b) => !b[topRid].active || b[topRid].bytes === a[topRid].bytes, `the top layer (${topRid}) paused`, limit, 1500);
  result.details.paused = { rid: topRid, ...paused[topRid] };
  // The low layer still flows to the subscriber meanwhile.
  await untilBetween(subscriber, inbound, (a, b) => b.decoded > a.decoded + 5, 'still decoding while paused', limit);
  result.step('dynacast');

  // (a) Disabled: no bytes for the track; enabled again, it decodes again.
  await setEnabled(subscriber, false);
  const stopped = await untilBetween(subscriber, inbound, (a, b) => b.bytes === a.bytes, 'inbound bytes stopping', limit, 1500);
  // ...and they stay stopped.
  const still = await untilBetween(subscriber, inbound, () => true, 'a second look', limit, 2000);
  if (still.bytes !== stopped.bytes) throw new Error(`bytes kept coming while disabled: ${stopped.bytes} -> ${still.bytes}`);
  result.details.disabled = still;
  await setEnabled(subscriber, true);
  await untilBetween(subscriber, inbound, (a, b) => b.bytes > a.bytes && b.decoded > a.decoded + 5, 'decoding again after enabling', limit);
  result.step('disabled');

  // Back to high: the publisher sends the top layer again and the subscriber gets it.
  await setQuality(subscriber, 'HIGH');
  const again = await untilBetween(subscriber, inbound, (a, b) => b.width > low.width && b.decoded > a.decoded + 5, 'a wider layer again', limit);
  result.details.highAgain = again;
  result.step('high again');
});
