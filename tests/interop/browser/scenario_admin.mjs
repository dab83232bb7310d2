// The admin console at /admin: sign in with the API key pair, create a meeting, copy the links;
// a host and a guest join through the copied links; the console shows them live and finds the
// meeting by name with its head count; ending it from the console ends the call on every page.
// A wrong key pair is refused with the server's message. axe-core on every screen, screenshots.
//
// usage: node scenario_admin.mjs <base-url> <api-key> <api-secret>

import { axe, run, shot, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);

await run(150, async ({ pages, limit, result }) => {
  const console_ = await pages.open('admin', { path: '/admin', colorScheme: 'light' });
  result.axe.push(...(await axe(console_, 'admin-sign-in')));
  await shot(console_, 'admin-sign-in');
  await console_.getByLabel('API key').fill(key);
  await console_.getByLabel('API secret').fill('not-the-secret');
  await console_.getByRole('button', { name: 'Sign in' }).click();
  await console_.locator('[role=alert][data-code=unauthenticated]').waitFor();
  await console_.getByLabel('API secret').fill(secret);
  await console_.getByRole('button', { name: 'Sign in' }).click();
  await console_.getByRole('heading', { name: 'Meetings' }).waitFor();
  const stored = await console_.evaluate(() => ({ url: location.href, storage: sessionStorage.getItem('convene-admin') }));
  if (stored.url.includes(secret) || !stored.storage?.includes(key)) throw new Error(`the key pair is not where it belongs: ${JSON.stringify(stored)}`);

  // Create a meeting.
  result.step('create');
  const name = `Board meeting ${Date.now()}`;
  await console_.getByLabel('Name', { exact: true }).fill(name);
  await console_.getByLabel('Who gets in').selectOption('wait_for_host');
  await console_.getByLabel('Capacity (optional)').fill('10');
  await console_.getByRole('button', { name: 'Create meeting' }).click();
  await console_.getByTestId('meeting-title').getByText(name).waitFor();
  result.axe.push(...(await axe(console_, 'admin-meeting')));
  await shot(console_, 'admin-meeting');

  // The links, copied from the console.
  result.step('links');
  const copy = async (label) => {
    await console_.getByRole('button', { name: `Copy ${label}` }).click();
    await console_.getByText('Copied to the clipboard.').waitFor();
    return console_.evaluate(() => navigator.clipboard.readText());
  };
  const guestLink = await copy('Link for participants');
  const hostLink = await copy('Link for hosts');
  if (!guestLink.includes('#pin=') || !hostLink.includes('/meet?meeting=')) throw new Error(`unexpected links ${guestLink} ${hostLink}`);

  const viaLink = async (who, link, options = {}) => {
    const page = await pages.open(who, { ...options, path: null });
    await page.goto(link);
    if (await page.evaluate(() => location.hash !== '')) throw new Error('the PIN stayed in the address bar');
    await page.getByLabel('Your name').fill(who);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    return page;
  };
  const guest = await viaLink('Guest', guestLink, { width: 375, height: 740 });
  await until(guest, (s) => s.phase === 'waiting', 'the guest waiting for the host', limit);
  const host = await viaLink('Host', hostLink);
  await until(host, (s) => s.phase === 'live', 'the host in the meeting', limit);
  await until(guest, (s) => s.phase === 'live', 'the guest let in when the host came', limit);

  // The console follows who is in, live.
  result.step('live people');
  await console_.locator('[data-testid=admin-people] [data-state=joined]').nth(1).waitFor();
  await console_.getByTestId('event-log').getByText('participant.joined').first().waitFor();
  await console_.setViewportSize({ width: 375, height: 740 });
  await shot(console_, 'admin-meeting');
  result.axe.push(...(await axe(console_, 'admin-meeting-375')));
  await console_.setViewportSize({ width: 1280, height: 800 });

  // The list finds it by name, with its head count.
  await console_.getByRole('button', { name: 'All meetings' }).click();
  await console_.getByLabel('Search by name or ID').fill(name.slice(0, 18).toUpperCase());
  await console_.getByRole('button', { name: 'Search', exact: true }).click();
  const row = console_.locator('[data-testid=meetings] tbody tr');
  await row.getByText('2 in, 0 waiting').waitFor();
  if ((await row.count()) < 1) throw new Error('the search found nothing');
  result.axe.push(...(await axe(console_, 'admin-list')));
  await shot(console_, 'admin-list');
  await row.first().getByRole('link').click();

  // End it from the console: every page's call ends.
  result.step('end');
  await console_.getByRole('button', { name: 'End meeting' }).click();
  await console_.getByRole('group', { name: 'End meeting' }).getByRole('button', { name: 'End meeting' }).click();
  for (const [who, page] of Object.entries({ host, guest })) {
    await until(page, (s) => s.phase === 'ended' && s.end?.kind === 'ended', `${who}'s call ended`, limit);
    await page.getByRole('heading', { name: 'The meeting has ended.' }).waitFor();
  }
  await console_.getByRole('button', { name: 'Restart meeting' }).waitFor();
  result.axe.push(...(await axe(guest, 'ended-375')));
  await shot(guest, 'ended');
});
