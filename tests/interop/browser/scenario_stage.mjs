// The live stage (a `stream` meeting) through /meet. The host and one viewer come through the
// seed 001 live-stream surface (its tokens handed to the page as `#token=`), another viewer with
// the viewer PIN: viewers watch without publishing; hands are raised and shown to the host in
// order; the host invites, the viewer accepts and publishes camera and microphone without a
// reload, the host decodes that video, then moves the speaker back to the audience and the
// publishing stops; a second invitation is declined; the viewer count follows throughout.
//
// usage: node scenario_stage.mjs <base-url> <api-key> <api-secret> <live-stream passcode>

import { adminApi, axe, decodes, run, shot, until } from './lib.mjs';

const [, key, secret, passcode] = process.argv.slice(2);

await run(180, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const live = async (route, body) => {
    const response = await fetch(`${base}/compat/live-stream/${route}`, { method: 'POST', headers: { authorization: passcode, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
    return response.json();
  };
  const stream = `town-hall-${Date.now()}`;
  const created = await live('create-stream', { user_identity: 'hana', stream_name: stream });
  const vicToken = await live('join-stream-as-viewer', { user_identity: 'vic', stream_name: stream });
  const meetingId = created.meeting_id;
  const viewerPin = (await admin('GET', `/v1/meetings/${meetingId}`)).credentials.viewer;

  // Handed-over tokens: the page asks only for the devices.
  const handOver = async (who, token, options = {}) => {
    const page = await pages.open(who, { ...options, path: `/meet?meeting=${meetingId}#token=${encodeURIComponent(token)}` });
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    return page;
  };
  const hana = await handOver('hana', created.api_token);
  const vic = await handOver('vic', vicToken.api_token, { width: 375, height: 740 });
  const wen = await pages.join('wen', meetingId, viewerPin, { name: 'Wen' });
  await until(hana, (s) => s.phase === 'live' && s.role === 'host', 'the host on stage', limit);
  for (const [who, page] of Object.entries({ vic, wen })) {
    await until(page, (s) => s.phase === 'live' && s.role === 'viewer', `${who} watching`, limit);
    await until(page, decodes('hana'), `${who} decoding the host`, limit);
    if (await page.getByRole('button', { name: 'Microphone', exact: true }).count()) throw new Error(`${who}, a viewer, has publishing controls`);
  }
  const wenId = (await until(wen, (s) => s.identity, 'wen identity', limit)).identity;
  await vic.getByRole('button', { name: 'Raise hand' }).waitFor();
  result.axe.push(...(await axe(vic, 'stage-viewer-375')));
  await shot(vic, 'stage-viewer');

  // The host's stage panel: the audience, then raised hands in order.
  result.step('hands');
  await hana.getByRole('button', { name: 'Stage' }).click();
  const count = (n) => hana.locator(`[data-testid=viewer-count][data-count="${n}"]`).waitFor();
  await count(2);
  await vic.getByRole('button', { name: 'Raise hand' }).click();
  await wen.getByRole('button', { name: 'Raise hand' }).click();
  await until(hana, (s) => s.hands.join() === ['vic', wenId].join(), 'the hands in order', limit);
  await hana.locator('[data-testid=hands] li').nth(1).getByText('Wen').waitFor();
  result.axe.push(...(await axe(hana, 'stage-host')));
  await shot(hana, 'stage-host');

  // Invite Vic; Vic accepts and publishes without a reload.
  result.step('invite');
  await hana.getByRole('button', { name: 'Invite to speak: vic' }).click();
  await vic.getByRole('alertdialog').waitFor();
  result.axe.push(...(await axe(vic, 'invitation-375')));
  await shot(vic, 'invitation');
  await vic.getByRole('button', { name: 'Join the stage' }).click();
  await until(vic, (s) => s.role === 'speaker', 'vic a speaker', limit);
  await until(hana, decodes('vic'), 'the host decoding vic', limit);
  await until(wen, decodes('vic'), 'wen decoding vic', limit);
  await count(1);
  await until(hana, (s) => s.hands.join() === wenId, 'vic off the hands list', limit);
  await shot(hana, 'stage-with-speaker');

  // Back to the audience: the publishing stops.
  result.step('demote');
  await hana.getByRole('button', { name: 'Move to audience: vic' }).click();
  await until(vic, (s) => s.role === 'viewer', 'vic a viewer again', limit);
  await until(hana, (s) => s.remote.some((r) => r.identity === 'vic' && r.tracks.length === 0), 'vic publishing nothing', limit);
  await count(2);

  // A declined invitation.
  result.step('decline');
  await hana.getByRole('button', { name: 'Invite to speak: Wen' }).click();
  await wen.getByRole('button', { name: 'Not now' }).click();
  await until(hana, (s) => s.people[wenId]?.invited === false && s.hands.join() === wenId, 'the declined invitation', limit);
  await until(wen, (s) => s.role === 'viewer' && !s.invited, 'wen still watching', limit);
  await wen.getByRole('button', { name: 'Lower hand' }).click();
  await until(hana, (s) => s.hands.length === 0, 'no hands left', limit);
});
