// One-time join links (the BigBlueButton surface's `/join` redirects to `/meet?join=...`): the
// page takes the link out of the address bar, asks only for the devices, and lets the person in;
// a guest waits until the moderator admits them; a link used twice is refused with the server's
// message; leaving goes to the meeting's logout URL (`redirect_at_logout`).
//
// usage: node scenario_links.mjs <base-url> <api-key> <api-secret> <bbb token>

import { decodes, run, until } from './lib.mjs';

const [, , , bbbToken] = process.argv.slice(2);

await run(120, async ({ pages, base, limit, result }) => {
  const bbb = async (route, body, redirect = 'follow') => {
    const response = await fetch(`${base}/compat/bbb/${route}`, { method: 'POST', redirect, headers: { authorization: bbbToken, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (redirect === 'manual') return response.headers.get('location');
    if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
    return response.json();
  };
  const meeting = await bbb('create', { name: 'Lecture', redirect_at_logout: `${base}/?from=lecture` });
  const link = (name, password, extra = {}) => bbb('join', { name, password, meeting_id: meeting.meeting_id, create_time: meeting.create_time, ...extra }, 'manual');
  const viaLink = async (who, location) => {
    const page = await pages.open(who, { path: null });
    await page.goto(location);
    if (await page.evaluate(() => new URL(location.href).searchParams.has('join'))) throw new Error('the link stayed in the address bar');
    if (await page.getByLabel('PIN').count()) throw new Error('a link asks for a PIN');
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    return page;
  };
  const lecturerLink = await link('Lecturer', meeting.moderator_pass);
  const lecturer = await viaLink('lecturer', lecturerLink);
  const lecturerId = (await until(lecturer, (s) => s.phase === 'live' && s.role === 'host', 'the lecturer in', limit)).identity;
  const student = await viaLink('student', await link('Student', meeting.attendee_pass, { is_guest: true }));
  const studentId = (await until(student, (s) => s.phase === 'waiting', 'the student waiting', limit)).identity;
  await lecturer.getByRole('button', { name: 'Admit Student' }).click();
  await until(student, decodes(lecturerId), 'the student watching the lecturer', limit);
  await until(lecturer, decodes(studentId), 'the lecturer seeing the student', limit);

  // The lecturer's link again: used already.
  const again = await viaLink('again', lecturerLink);
  const refused = await until(again, (s) => s.phase === 'prejoin' && s.error, 'the second use refused', limit);
  if (refused.error.code !== 'join_link_used') throw new Error(`unexpected answer ${JSON.stringify(refused.error)}`);
  result.details.refused = refused.error;

  // Leaving goes to the meeting's logout URL.
  await student.getByRole('button', { name: 'Leave' }).click();
  await student.waitForURL(`${base}/?from=lecture`);
});
