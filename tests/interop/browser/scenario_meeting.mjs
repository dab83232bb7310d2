// Four people in one meeting through /meet: each decodes the others; a microphone and a camera
// turned off (by their owner or by the host) are seen by the others; a microphone switched to another device is still heard; a screen
// share is decoded by the others and takes the focus; chat is sent and received, and a late
// joiner reads the history. axe-core on every screen, screenshots at 375 and 1280 px.
//
// usage: node scenario_meeting.mjs <base-url> <api-key> <api-secret>

import { adminApi, axe, decodes, hears, run, shot, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);

await run(180, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Team sync', policy: 'wait_for_host' });
  const pins = meeting.credentials;

  // The pre-join screen, before anyone is in.
  result.step('The pre-join screen, before anyone is in');
  const ann = await pages.open('ann', { path: `/meet?meeting=${meeting.meeting_id}` });
  await ann.getByTestId('preview').waitFor();
  result.axe.push(...(await axe(ann, 'prejoin')));
  await shot(ann, 'prejoin');
  await ann.setViewportSize({ width: 375, height: 740 });
  await shot(ann, 'prejoin');
  result.axe.push(...(await axe(ann, 'prejoin-375')));
  await ann.setViewportSize({ width: 1280, height: 800 });
  await ann.getByLabel('PIN').fill(pins.host);
  await ann.getByLabel('Your name').fill('Ann');
  await ann.getByRole('button', { name: 'Join', exact: true }).click();

  const bob = await pages.join('bob', meeting.meeting_id, pins.participant, { name: 'Bob' });
  const cy = await pages.join('cy', meeting.meeting_id, pins.participant, { name: 'Cy' });
  const ids = {};
  for (const [who, page] of Object.entries({ ann, bob, cy })) {
    ids[who] = (await until(page, (s) => s.phase === 'live', `${who} in the meeting`, limit)).identity;
  }
  result.details.identities = ids;
  for (const [who, page] of Object.entries({ ann, bob, cy })) {
    for (const other of Object.keys(ids).filter((o) => o !== who)) {
      await until(page, decodes(ids[other]), `${who} decoding ${other}`, limit);
    }
  }

  // A device switch: Cy moves to another microphone and is still heard.
  result.step('device switch');
  await cy.getByRole('button', { name: 'Settings' }).click();
  const micSelect = cy.getByLabel('Choose microphone');
  const mics = await micSelect.locator('option').evaluateAll((os) => os.map((o) => o.value));
  const micBefore = await cy.evaluate(() => window.__conveneRoom.localParticipant.getTrackPublication('microphone').track.mediaStreamTrack.getSettings().deviceId);
  const micNext = mics.find((m) => m !== micBefore && m !== 'default');
  if (!micNext) throw new Error(`only one microphone: ${mics}`);
  await micSelect.selectOption(micNext);
  await cy.waitForFunction((id) => window.__conveneRoom.localParticipant.getTrackPublication('microphone')?.track?.mediaStreamTrack.getSettings().deviceId === id, micNext);
  const heard = (await until(ann, hears(ids.cy), 'ann hearing cy', limit)).audio.find((a) => a.identity === ids.cy).packetsReceived;
  await until(ann, hears(ids.cy, heard + 50), 'ann hearing cy after the switch', limit);
  result.details.microphoneSwitch = { from: micBefore, to: micNext };

  // Chat before the fourth person comes: sent and received.
  result.step('Chat before the fourth person comes: sen');
  await ann.getByRole('button', { name: 'Chat' }).click();
  await ann.getByLabel('Message', { exact: true }).fill('Welcome, everyone');
  await ann.getByRole('button', { name: 'Send' }).click();
  await bob.getByRole('button', { name: 'Chat' }).click();
  await bob.getByTestId('chat-log').getByText('Welcome, everyone').waitFor();
  await bob.getByLabel('Message', { exact: true }).fill('Hi Ann');
  await bob.getByRole('button', { name: 'Send' }).click();
  await until(cy, (s) => s.chat.some((l) => l.text === 'Hi Ann' && l.from === ids.bob), 'cy receiving chat', limit);
  result.axe.push(...(await axe(bob, 'chat-panel')));
  await shot(bob, 'chat');

  // The late joiner reads what was said before.
  result.step('The late joiner reads what was said befo');
  const dee = await pages.join('dee', meeting.meeting_id, pins.participant, { name: 'Dee' });
  ids.dee = (await until(dee, (s) => s.phase === 'live', 'dee in the meeting', limit)).identity;
  await dee.getByRole('button', { name: 'Chat' }).click();
  await dee.getByTestId('chat-log').getByText('Welcome, everyone').waitFor();
  await dee.getByTestId('chat-log').getByText('Hi Ann').waitFor();
  await until(ann, decodes(ids.dee), 'ann decoding dee', limit);

  // Microphone and camera off: the others see it.
  result.step('Microphone and camera off: the others se');
  await bob.getByRole('button', { name: 'Microphone', exact: true }).click();
  await until(ann, (s) => s.remote.some((r) => r.identity === ids.bob && r.microphone === false), 'ann seeing bob muted', limit);
  await until(dee, (s) => s.remote.some((r) => r.identity === ids.bob && r.microphone === false), 'dee seeing bob muted', limit);
  await bob.getByRole('button', { name: 'Camera', exact: true }).click();
  await until(cy, (s) => s.remote.some((r) => r.identity === ids.bob && r.camera === false), 'cy seeing bob camera off', limit);
  await ann.getByRole('button', { name: 'People' }).click();
  await ann.locator(`[data-testid=people-list] [data-identity="${ids.bob}"][data-mic=off][data-camera=off]`).waitFor();
  result.axe.push(...(await axe(ann, 'people-panel')));
  await shot(ann, 'host-people');

  // The host turns off Cy's microphone: Cy is told, the others see it off.
  result.step('host mute');
  await ann.getByRole('button', { name: 'Actions for Cy' }).click();
  result.axe.push(...(await axe(ann, 'person-actions')));
  await ann.getByRole('button', { name: 'Turn off microphone' }).click();
  await until(cy, (s) => s.notice === 'A host turned off your microphone.', 'cy told of the mute', limit);
  await until(dee, (s) => s.remote.some((r) => r.identity === ids.cy && r.microphone === false), 'dee seeing cy muted by the host', limit);

  // A screen share: decoded by the others, in focus.
  result.step('A screen share: decoded by the others, i');
  await dee.getByRole('button', { name: 'Share screen' }).click();
  for (const [who, page] of Object.entries({ ann, bob })) {
    await until(page, decodes(ids.dee, 'screen_share'), `${who} decoding dee's screen`, limit);
  }
  await ann.locator(`.lk-focus-layout [data-identity="${ids.dee}"][data-source=screen_share]`).waitFor();
  result.axe.push(...(await axe(ann, 'screen-share-focus')));
  await shot(ann, 'screen-share');

  // Pinning a tile (by keyboard) puts it in focus; unpinning returns to the screen share.
  result.step('pin');
  await bob.getByRole('button', { name: 'Pin Ann' }).focus();
  await bob.keyboard.press('Enter');
  await bob.locator(`.lk-focus-layout > [data-identity="${ids.ann}"][data-source=camera]`).waitFor();
  await bob.getByRole('button', { name: 'Pin Ann' }).press('Enter');
  await bob.locator(`.lk-focus-layout > [data-identity="${ids.dee}"][data-source=screen_share]`).waitFor();

  // Layouts: speaker focus and back.
  result.step('Layouts: speaker focus and back.');
  await bob.getByRole('button', { name: 'Speaker layout' }).click();
  await bob.locator('.lk-focus-layout').waitFor();
  await bob.getByRole('button', { name: 'Speaker layout' }).click();
  await dee.getByRole('button', { name: 'Stop sharing' }).click();
  await until(ann, (s) => !s.remote.some((r) => r.identity === ids.dee && r.screenShare), 'the share ending', limit);
  await ann.locator('.lk-grid-layout').waitFor();

  // The meeting at phone width.
  result.step('The meeting at phone width.');
  await cy.setViewportSize({ width: 375, height: 740 });
  await shot(cy, 'meeting');
  result.axe.push(...(await axe(cy, 'meeting-375')));
  await cy.getByRole('button', { name: 'People' }).click();
  await shot(cy, 'people-panel');
  await cy.setViewportSize({ width: 1280, height: 800 });
  await shot(cy, 'meeting');
  await bob.emulateMedia({ colorScheme: 'light' });
  await bob.evaluate(() => (document.documentElement.dataset.theme = 'light'));
  await shot(bob, 'meeting-light');
  result.axe.push(...(await axe(bob, 'meeting-light')));
  result.details.identities = ids;
});
