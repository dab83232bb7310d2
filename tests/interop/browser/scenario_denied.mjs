// A person who blocks the camera and microphone: the pre-join says so and still lets them in;
// they watch and hear the others, with no error page and no uncaught error. (Chromium runs
// without the fake permission prompt here, so the denial is the browser's own.)
//
// usage: node scenario_denied.mjs <base-url> <api-key> <api-secret>

import { adminApi, axe, decodes, run, shot, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);

await run(
  120,
  async ({ pages, base, limit, result }) => {
    const admin = adminApi(base, key, secret);
    const meeting = await admin('POST', '/v1/meetings', { name: 'No devices', policy: 'open' });
    const host = await pages.join('host', meeting.meeting_id, meeting.credentials.host, { name: 'Host' });
    const hostId = (await until(host, (s) => s.phase === 'live', 'the host in', limit)).identity;

    const shy = await pages.open('shy', { grant: false, width: 375, height: 740, path: `/meet?meeting=${meeting.meeting_id}` });
    const blocked = shy.getByTestId('devices-blocked');
    await blocked.waitFor();
    result.details.message = await blocked.textContent();
    if (!/blocked/.test(result.details.message)) throw new Error(`unexpected message: ${result.details.message}`);
    result.axe.push(...(await axe(shy, 'prejoin-blocked-375')));
    await shot(shy, 'prejoin-blocked');
    await shy.getByLabel('PIN').fill(meeting.credentials.participant);
    await shy.getByLabel('Your name').fill('Shy');
    await shy.getByRole('button', { name: 'Join', exact: true }).click();
    const state = await until(shy, (s) => s.phase === 'live' && s.error === null, 'the person without devices in', limit);
    await until(shy, decodes(hostId), 'watching the host', limit);
    await until(host, (s) => s.people[state.identity]?.state === 'joined', 'the host seeing them', limit);
    const errors = pages.logs.shy.filter((line) => line.startsWith('pageerror'));
    if (errors.length) throw new Error(`uncaught errors: ${errors.join('; ')}`);
    if (await shy.evaluate(() => window.__conveneRoom.localParticipant.trackPublications.size) !== 0) throw new Error('published without devices');
  },
  { fakeUi: false },
);
