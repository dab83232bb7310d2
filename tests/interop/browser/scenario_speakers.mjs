// Active speakers through /meet: two people whose fake microphones play a steady tone; one turns
// the microphone off. The other page's livekit-client `ActiveSpeakersChanged` names the one still
// speaking and, from then on, never the muted one; the speaking person's tile is marked as
// speaking (data-speaking, from the same SDK state). When the speaker's microphone goes off too,
// the list empties; back on, the speaker is named again.
//
// usage: node scenario_speakers.mjs <base-url> <api-key> <api-secret>

import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminApi, decodes, run, toneWav, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);
const audioFile = toneWav(join(tmpdir(), `convene-tone-${process.pid}.wav`));

await run(120, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Speakers', policy: 'wait_for_host' });
  const pins = meeting.credentials;

  result.step('two people in, each decoding the other');
  const ann = await pages.join('ann', meeting.meeting_id, pins.host, { name: 'Ann' });
  const bob = await pages.join('bob', meeting.meeting_id, pins.participant, { name: 'Bob' });
  const ids = {};
  for (const [who, page] of Object.entries({ ann, bob })) {
    ids[who] = (await until(page, (s) => s.phase === 'live', `${who} in the meeting`, limit)).identity;
  }
  // Bob's page keeps every ActiveSpeakersChanged it gets.
  await bob.evaluate(() => {
    window.__speakerEvents = [];
    window.__conveneRoom.on('activeSpeakersChanged', (speakers) => window.__speakerEvents.push(speakers.map((p) => p.identity)));
  });
  const events = () => bob.evaluate(() => window.__speakerEvents);
  /** Waits for an event after index `from` that `test` accepts; answers its index. */
  const awaitEvent = async (from, test, what) => {
    let seen = [];
    while (!limit.passed()) {
      seen = await events();
      const i = seen.findIndex((list, i) => i >= from && test(list));
      if (i >= 0) return i;
      await bob.waitForTimeout(150);
    }
    throw new Error(`timed out waiting for ${what}; speaker changes: ${JSON.stringify(seen)}`);
  };
  await until(ann, decodes(ids.bob), 'ann decoding bob', limit);
  await until(bob, decodes(ids.ann), 'bob decoding ann', limit);

  result.step('bob turns his microphone off: ann alone is speaking');
  await bob.getByRole('button', { name: 'Microphone', exact: true }).click();
  await until(ann, (s) => s.remote.some((r) => r.identity === ids.bob && r.microphone === false), 'ann seeing bob muted', limit);
  const alone = await awaitEvent(0, (l) => l.includes(ids.ann) && !l.includes(ids.bob), 'ann named alone');
  await bob.locator(`[data-identity="${ids.ann}"][data-source=camera][data-speaking=true]`).first().waitFor({ timeout: limit.remaining() });

  result.step("ann's microphone off, then on again");
  await ann.getByRole('button', { name: 'Microphone', exact: true }).click();
  const quiet = await awaitEvent(alone + 1, (l) => !l.includes(ids.ann), 'ann no longer named');
  await bob.locator(`[data-identity="${ids.ann}"][data-source=camera][data-speaking=false]`).first().waitFor({ timeout: limit.remaining() });
  await ann.getByRole('button', { name: 'Microphone', exact: true }).click();
  await awaitEvent(quiet + 1, (l) => l.includes(ids.ann), 'ann named again');

  const seen = await events();
  const named = seen.slice(alone).filter((l) => l.includes(ids.bob));
  if (named.length) throw new Error(`bob, muted, was named a speaker: ${JSON.stringify(seen)}`);
  result.details = { identities: ids, speakerEvents: seen };
});
