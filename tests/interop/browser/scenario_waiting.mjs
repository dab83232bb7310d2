// The waiting room from both sides, through the pages' own controls: guests queue with their
// place shown; a waiting guest and the host chat; the host denies one, admits all, sends one back,
// removes one and bans one; the banned guest's new attempt is refused with the server's message.
// axe-core on the waiting room, the host console and the end screens; screenshots.
//
// usage: node scenario_waiting.mjs <base-url> <api-key> <api-secret>

import { adminApi, axe, run, shot, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);

await run(180, async ({ pages, base, limit, result }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Clinic', policy: 'ask_host', waiting_room_chat: true });
  const pins = meeting.credentials;
  const host = await pages.join('host', meeting.meeting_id, pins.host, { name: 'Dr Lee' });
  await until(host, (s) => s.phase === 'live', 'the host in the meeting', limit);

  // Guests queue in order, and know their place.
  result.step('queue');
  const guests = {};
  const ids = {};
  for (const [n, who] of ['pat', 'sam', 'kim', 'max'].entries()) {
    const page = await pages.join(who, meeting.meeting_id, pins.participant, { name: who[0].toUpperCase() + who.slice(1), width: n === 0 ? 375 : 1280, height: n === 0 ? 740 : 800 });
    guests[who] = page;
    const state = await until(page, (s) => s.phase === 'waiting' && s.position === n + 1, `${who} waiting as number ${n + 1}`, limit);
    ids[who] = state.identity;
  }
  await guests.sam.getByText('You are number 2 in line.').waitFor();
  result.axe.push(...(await axe(guests.pat, 'waiting-room-375')));
  await shot(guests.pat, 'waiting-room');

  // A waiting guest writes to the host; the host answers that guest.
  result.step('waiting-room chat');
  await guests.pat.getByLabel('Message', { exact: true }).fill('Is the doctor running late?');
  await guests.pat.getByRole('button', { name: 'Send' }).click();
  await host.getByRole('button', { name: 'Chat' }).click();
  await host.getByTestId('chat-log').getByText('Is the doctor running late?').waitFor();
  await host.getByLabel('To').selectOption(ids.pat);
  await host.getByLabel('Message', { exact: true }).fill('Five minutes, thank you for waiting');
  await host.getByRole('button', { name: 'Send' }).click();
  await guests.pat.getByTestId('chat-log').getByText('Five minutes, thank you for waiting').waitFor();
  const samChat = await guests.sam.evaluate(() => window.__convene.state.chat.length);
  if (samChat !== 0) throw new Error(`another waiting guest read that conversation (${samChat} lines)`);
  await shot(guests.pat, 'waiting-room-chat');
  await shot(host, 'host-chat-waiting-room');

  // The host console: deny Sam, then admit everyone else at once.
  result.step('deny and admit all');
  await host.getByRole('button', { name: 'People' }).click();
  await host.getByTestId('waiting-list').waitFor();
  result.axe.push(...(await axe(host, 'host-console')));
  await shot(host, 'host-console');
  await host.getByRole('button', { name: 'Deny Sam' }).click();
  await until(guests.sam, (s) => s.phase === 'ended' && s.end?.kind === 'denied', 'sam told he was denied', limit);
  await guests.sam.getByRole('heading', { name: 'The host did not let you in.' }).waitFor();
  result.axe.push(...(await axe(guests.sam, 'denied')));
  await host.getByRole('button', { name: 'Admit all' }).click();
  for (const who of ['pat', 'kim', 'max']) await until(guests[who], (s) => s.phase === 'live', `${who} let in`, limit);

  // Send Kim back: she is in the waiting room again, and told so.
  result.step('send back');
  const actions = (who) => host.getByRole('button', { name: `Actions for ${who}` });
  await actions('Kim').click();
  await host.getByRole('button', { name: 'Send to waiting room' }).click();
  await until(guests.kim, (s) => s.phase === 'waiting', 'kim back in the waiting room', limit);
  await guests.kim.getByText('The host sent you back to the waiting room.').waitFor();
  await until(host, (s) => s.people[ids.kim]?.state === 'waiting', 'the host seeing kim waiting', limit);

  // Remove Max.
  result.step('remove');
  await actions('Max').click();
  await host.getByRole('button', { name: 'Remove', exact: true }).click();
  await until(guests.max, (s) => s.phase === 'ended' && s.end?.kind === 'removed', 'max removed', limit);
  await guests.max.getByRole('heading', { name: 'You were removed from the meeting.' }).waitFor();
  result.axe.push(...(await axe(guests.max, 'removed')));
  await shot(guests.max, 'removed');

  // Ban Pat for an hour; her new attempt is refused with the server's message.
  result.step('ban');
  await actions('Pat').click();
  await host.getByLabel('Ban for').selectOption('3600');
  await host.getByRole('button', { name: 'Ban', exact: true }).click();
  await until(guests.pat, (s) => s.phase === 'ended' && s.end?.kind === 'banned', 'pat banned', limit);
  await guests.pat.getByRole('heading', { name: /You are banned from this meeting/ }).waitFor();
  await shot(guests.pat, 'banned');
  await guests.pat.getByRole('button', { name: 'Join again' }).click();
  await guests.pat.getByLabel('PIN').fill(pins.participant);
  await guests.pat.getByLabel('Your name').fill('Pat');
  // The page enters with the identity it keeps for this meeting, so the ban holds.
  await guests.pat.getByRole('button', { name: 'Join', exact: true }).click();
  const refused = await until(guests.pat, (s) => s.error?.code === 'banned', 'the new attempt refused', limit);
  await guests.pat.locator('[role=alert][data-code=banned]').waitFor();
  result.axe.push(...(await axe(guests.pat, 'banned-retry-375')));
  await shot(guests.pat, 'banned-retry');
  result.details.refusal = refused.error;
  result.details.identities = ids;
});
