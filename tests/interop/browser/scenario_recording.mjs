// Recording from the meeting page and the admin console: a host and a guest in a meeting; the
// host starts recording from the host console and both pages show the indicator (and say so to
// screen readers); the guest has no start or stop button; the host stops it and the indicator
// goes away on both; the recording then becomes ready (or failed, with a reason). The admin
// console turns on automatic recording, lists the recording with its files, downloads one and
// deletes the recording. axe-core on every screen, screenshots at 375 and 1280 px.
//
// usage: node scenario_recording.mjs <base-url> <api-key> <api-secret>

import { adminApi, axe, decodes, run, shot, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);
const INDICATOR = { name: 'This meeting is being recorded' };

await run(240, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Recorded sync', policy: 'open' });
  const id = meeting.meeting_id;

  result.step('join');
  const host = await pages.join('host', id, meeting.credentials.host, { name: 'Hana' });
  const guest = await pages.join('guest', id, meeting.credentials.participant, { name: 'Gus', width: 375, height: 740 });
  const ids = {};
  for (const [who, page] of Object.entries({ host, guest })) ids[who] = (await until(page, (s) => s.phase === 'live', `${who} in the meeting`, limit)).identity;
  await until(host, decodes(ids.guest), 'the host decoding the guest', limit);
  await until(guest, decodes(ids.host), 'the guest decoding the host', limit);
  for (const [who, page] of Object.entries({ host, guest })) {
    if ((await page.getByRole('status', INDICATOR).count()) !== 0) throw new Error(`${who} sees a recording indicator before any recording`);
  }

  // Only hosts have the button: the guest's People panel has none.
  await guest.getByRole('button', { name: 'People' }).click();
  await guest.getByTestId('people-list').waitFor();
  for (const name of ['Start recording', 'Stop recording']) {
    if ((await guest.getByRole('button', { name }).count()) !== 0) throw new Error(`the guest has a "${name}" button`);
  }

  result.step('start');
  await host.getByRole('button', { name: 'Start recording', exact: true }).click();
  for (const [who, page] of Object.entries({ host, guest })) {
    await page.getByRole('status', INDICATOR).waitFor();
    await page.getByTestId('recording-news').getByText('Recording started').waitFor();
    await until(page, (s) => s.error === null, `${who} without an error`, limit);
  }
  const stop = host.getByRole('button', { name: 'Stop recording', exact: true });
  await stop.waitFor();
  for (const name of ['Start recording', 'Stop recording']) {
    if ((await guest.getByRole('button', { name }).count()) !== 0) throw new Error(`the guest has a "${name}" button while recording`);
  }
  const running = (await admin('GET', `/v1/meetings/${id}/recordings`)).recordings;
  if (running.length !== 1 || running[0].state !== 'recording' || running[0].started_by !== ids.host) throw new Error(`unexpected recordings: ${JSON.stringify(running)}`);
  const rid = running[0].recording_id;
  // The SFU's flag, as livekit-client reads it (the page follows convene's events).
  result.details.livekitIsRecording = await guest
    .waitForFunction(() => window.__conveneRoom?.isRecording === true, null, { timeout: 10_000 })
    .then(() => true)
    .catch(() => false);
  result.axe.push(...(await axe(host, 'recording-host')));
  result.axe.push(...(await axe(guest, 'recording-guest-375')));
  await shot(host, 'recording-host');
  await shot(guest, 'recording-guest');
  // A few seconds of both people's media in the recording.
  await host.waitForTimeout(3000);

  result.step('stop');
  await stop.click();
  for (const [who, page] of Object.entries({ host, guest })) {
    await page.getByRole('status', INDICATOR).waitFor({ state: 'detached' });
    await page.getByTestId('recording-news').getByText('Recording stopped').waitFor();
    await until(page, (s) => s.error === null && s.phase === 'live', `${who} still in, without an error`, limit);
  }
  await host.getByRole('button', { name: 'Start recording', exact: true }).waitFor();

  result.step('finished');
  let done = null;
  while (!limit.passed()) {
    done = await admin('GET', `/v1/meetings/${id}/recordings/${rid}`);
    if (done.state === 'ready' || done.state === 'failed') break;
    await host.waitForTimeout(500);
  }
  if (!done || (done.state !== 'ready' && done.state !== 'failed')) throw new Error(`the recording did not finish: ${JSON.stringify(done)}`);
  result.details.recording = { state: done.state, error: done.error, stop_reason: done.stop_reason, duration_ms: done.duration_ms, bytes: done.bytes, files: done.files.map((f) => [f.name, f.kind, f.bytes]) };
  if (done.stop_reason !== 'requested') throw new Error(`stop reason ${done.stop_reason}`);

  // The admin console: automatic recording on, the recording listed, a file saved, deleted.
  result.step('admin console');
  const console_ = await pages.open('admin', { path: '/admin' });
  await console_.getByLabel('API key').fill(key);
  await console_.getByLabel('API secret').fill(secret);
  await console_.getByRole('button', { name: 'Sign in' }).click();
  await console_.getByRole('heading', { name: 'Meetings' }).waitFor();
  await console_.goto(`${base}/admin#/m/${id}`);
  await console_.getByTestId('meeting-title').waitFor();
  const auto = console_.getByRole('checkbox', { name: 'Record automatically' });
  if (await auto.isChecked()) throw new Error('automatic recording is on before it was turned on');
  await auto.check();
  await console_.getByText('This meeting will be recorded whenever it goes live.').waitFor();
  if (!(await admin('GET', `/v1/meetings/${id}`)).auto_record) throw new Error('auto_record not saved');
  const row = console_.locator(`[data-testid=recordings] tr[data-recording="${rid}"]`);
  await row.waitFor();
  const state = await row.getAttribute('data-state');
  if (state !== done.state) throw new Error(`the console shows ${state}, the API ${done.state}`);
  result.axe.push(...(await axe(console_, 'admin-recordings')));
  await row.scrollIntoViewIfNeeded();
  await shot(console_, 'admin-recordings');
  if (done.files.length > 0) {
    const file = done.files[0];
    const [saved] = await Promise.all([console_.waitForEvent('download'), row.getByRole('button', { name: `Download ${file.name}` }).click()]);
    const path = await saved.path();
    const { statSync } = await import('node:fs');
    const size = statSync(path).size;
    result.details.downloaded = { name: saved.suggestedFilename(), size };
    if (saved.suggestedFilename() !== file.name || size !== file.bytes) throw new Error(`downloaded ${saved.suggestedFilename()} of ${size} bytes, expected ${file.name} of ${file.bytes}`);
  }
  const at = (await row.locator('th').textContent()).trim();
  await row.getByRole('button', { name: `Delete recording ${at}` }).click();
  await console_.getByRole('group', { name: `Delete recording ${at}` }).getByRole('button', { name: 'Delete', exact: true }).click();
  await console_.getByText('Recording deleted.').waitFor();
  await row.waitFor({ state: 'detached' });
  const left = (await admin('GET', `/v1/meetings/${id}/recordings`)).recordings;
  if (left.some((r) => r.recording_id === rid)) throw new Error('the recording is still listed after its deletion');
});
