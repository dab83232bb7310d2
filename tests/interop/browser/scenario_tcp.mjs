// Two people on /meet whose UDP to the SFU is dropped (the test's nftables rule on loopback): each
// decodes the other's video, and every selected ICE candidate pair of both pages is TCP, so ICE
// over TCP carried the meeting, with nothing configured in the browser (issue 20, item 1).
//
// usage: node scenario_tcp.mjs <base-url> <api-key> <api-secret>

import { adminApi, decodes, run, until } from './lib.mjs';

const [, key, secret] = process.argv.slice(2);

/** Keeps every RTCPeerConnection the page makes, to read its stats. */
function recordPeerConnections() {
  const Native = window.RTCPeerConnection;
  window.__peerConnections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__peerConnections.push(this);
    }
  };
}

/** The protocol ('udp' or 'tcp') of the selected candidate pair of each connected peer connection. */
async function selectedProtocols(page) {
  return page.evaluate(async () => {
    const out = [];
    for (const pc of window.__peerConnections) {
      if (pc.connectionState !== 'connected') continue;
      const stats = [...(await pc.getStats()).values()];
      const byId = Object.fromEntries(stats.map((s) => [s.id, s]));
      const transport = stats.find((s) => s.type === 'transport' && s.selectedCandidatePairId);
      const pair = transport ? byId[transport.selectedCandidatePairId] : stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
      if (!pair) continue;
      const local = byId[pair.localCandidateId];
      const remote = byId[pair.remoteCandidateId];
      out.push({ local: local?.protocol, remote: remote?.protocol, tcpType: local?.tcpType, bytesReceived: pair.bytesReceived });
    }
    return out;
  });
}

await run(120, async ({ pages, limit, result, base }) => {
  const admin = adminApi(base, key, secret);
  const meeting = await admin('POST', '/v1/meetings', { name: 'Behind a firewall', policy: 'open' });
  const pins = meeting.credentials;
  const ids = {};
  const joined = {};
  for (const who of ['ann', 'bob']) {
    const page = await pages.open(who, { path: null });
    await page.addInitScript(recordPeerConnections);
    await page.goto(`${base}/meet?meeting=${encodeURIComponent(meeting.meeting_id)}`, { timeout: limit.remaining() });
    await page.getByLabel('PIN').fill(who === 'ann' ? pins.host : pins.participant);
    await page.getByLabel('Your name').fill(who);
    await page.getByRole('button', { name: 'Join', exact: true }).click();
    joined[who] = page;
  }
  for (const [who, page] of Object.entries(joined)) {
    ids[who] = (await until(page, (s) => s.phase === 'live', `${who} in the meeting`, limit)).identity;
  }
  result.step('decoding each other over TCP');
  await until(joined.ann, decodes(ids.bob), 'ann decoding bob', limit);
  await until(joined.bob, decodes(ids.ann), 'bob decoding ann', limit);
  result.details.identities = ids;
  for (const [who, page] of Object.entries(joined)) {
    const pairs = await selectedProtocols(page);
    result.details[who] = pairs;
    if (pairs.length === 0) throw new Error(`${who}: no selected candidate pair`);
    for (const pair of pairs) {
      if (pair.local !== 'tcp' || pair.remote !== 'tcp') throw new Error(`${who}: a selected pair is not TCP: ${JSON.stringify(pairs)}`);
    }
    if (!pairs.some((p) => p.bytesReceived > 0)) throw new Error(`${who}: nothing received: ${JSON.stringify(pairs)}`);
  }
});
