// Active speakers through /meet: two people whose fake microphones play a steady tone; one turns
// the microphone off. The other page's livekit-client active speakers (from the SFU's
// SpeakersChanged) name the one still speaking and, from then on, never the muted one; the speaking person's tile is marked as
// speaking (data-speaking, from the same SDK state). When the speaker's microphone goes off too,
// the list empties; back on, the speaker is named again.
//
// Both microphones hear the tone file (not Chromium's default fake beep, which is too short to
// count as speech). The pages ask for the microphone without echo cancellation, noise suppression
// and gain control: the two pages share one browser, so its echo canceller hears ann's tone played
// back in bob's page and may learn it away, and a noise suppressor learns a steady tone as noise;
// either silences ann after a while, which would test Chromium rather than the SFU.
//
// usage: node scenario_speakers.mjs <base-url> <api-key> <api-secret>

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminApi, decodes, run, toneWav, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);
const audioFile = toneWav(join(tmpdir(), `convene-tone-${process.pid}.wav`));

/** Runs in each page before its scripts: every microphone request asks for the raw signal. */
function rawMicrophone() {
  const devices = navigator.mediaDevices;
  const getUserMedia = devices.getUserMedia.bind(devices);
  const raw = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  devices.getUserMedia = (constraints) => {
    if (constraints && constraints.audio) {
      const audio = constraints.audio === true ? {} : constraints.audio;
      constraints = { ...constraints, audio: { ...audio, ...raw } };
    }
    return getUserMedia(constraints);
  };
}

await run(120, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Speakers', policy: 'wait_for_host' });
  const pins = meeting.credentials;

  result.step('two people in, each decoding the other');
  const ann = await pages.join('ann', meeting.meeting_id, pins.host, { name: 'Ann', init: rawMicrophone });
  const bob = await pages.join('bob', meeting.meeting_id, pins.participant, { name: 'Bob', init: rawMicrophone });
  const ids = {};
  for (const [who, page] of Object.entries({ ann, bob })) {
    ids[who] = (await until(page, (s) => s.phase === 'live', `${who} in the meeting`, limit)).identity;
  }
  // Bob's page keeps every ActiveSpeakersChanged it gets; the SDK's current list is read too,
  // since a change made before the listener was there is not repeated.
  await bob.evaluate(() => {
    window.__speakerEvents = [];
    window.__conveneRoom.on('activeSpeakersChanged', (speakers) => window.__speakerEvents.push(speakers.map((p) => p.identity)));
  });
  const events = () => bob.evaluate(() => window.__speakerEvents);
  const speakers = () => bob.evaluate(() => window.__conveneRoom.activeSpeakers.map((p) => p.identity));
  /** Waits until bob's page's current speakers pass `test`; answers how many changes it had seen. */
  const awaitSpeakers = async (test, what) => {
    let now = [];
    while (!limit.passed()) {
      now = await speakers();
      if (test(now)) return (await events()).length;
      await bob.waitForTimeout(150);
    }
    throw new Error(`timed out waiting for ${what}; speakers now: ${JSON.stringify(now)}, changes: ${JSON.stringify(await events())}`);
  };
  await until(ann, decodes(ids.bob), 'ann decoding bob', limit);
  await until(bob, decodes(ids.ann), 'bob decoding ann', limit);

  result.step('bob turns his microphone off: ann alone is speaking');
  await bob.getByRole('button', { name: 'Microphone', exact: true }).click();
  await until(ann, (s) => s.remote.some((r) => r.identity === ids.bob && r.microphone === false), 'ann seeing bob muted', limit);
  const alone = await awaitSpeakers((l) => l.includes(ids.ann) && !l.includes(ids.bob), 'ann named alone');
  await bob.locator(`[data-identity="${ids.ann}"][data-source=camera][data-speaking=true]`).first().waitFor({ timeout: limit.remaining() });

  result.step("ann's microphone off, then on again");
  await ann.getByRole('button', { name: 'Microphone', exact: true }).click();
  await awaitSpeakers((l) => !l.includes(ids.ann), 'ann no longer named');
  await bob.locator(`[data-identity="${ids.ann}"][data-source=camera][data-speaking=false]`).first().waitFor({ timeout: limit.remaining() });
  await ann.getByRole('button', { name: 'Microphone', exact: true }).click();
  await awaitSpeakers((l) => l.includes(ids.ann), 'ann named again');

  // From the moment ann was named alone, no change named bob, muted all along.
  const seen = await events();
  const named = seen.slice(alone).filter((l) => l.includes(ids.bob));
  if (named.length) throw new Error(`bob, muted, was named a speaker: ${JSON.stringify(seen)}`);
  result.details = { identities: ids, speakerEvents: seen };
}, { audioFile });
