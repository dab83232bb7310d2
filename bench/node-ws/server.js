// The comparison server of convene's waiting-room fan-out benchmark (docs/benchmarks.md): a
// minimal Node.js server on the `ws` package, the stack the seed backends were written in. It
// speaks the subset of convene's API the load generator uses (create a meeting, enter, the
// events WebSocket with ?access_token=, the host's join) and does the same fan-out: when the
// host joins, every waiting guest gets its `participant.admitted` frame. No store, no auth
// beyond random tokens: the cheapest version anyone would write themselves.
'use strict';

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const port = Number(process.env.PORT || 7890);
const meetings = new Map(); // id -> { hostPin, guestPin, live, seq, waiting: Map<identity, ws>, tokens: Map<token, {identity, role}> }

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => { try { resolve(JSON.parse(data || '{}')); } catch { resolve({}); } });
  });
}

function pin() {
  return String(crypto.randomInt(10000000, 99999999));
}

function event(meeting, type, data) {
  meeting.seq += 1;
  return JSON.stringify({ seq: meeting.seq, at: new Date().toISOString(), type, data });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const parts = url.pathname.split('/').filter(Boolean);
  if (req.method === 'GET' && url.pathname === '/healthz') return json(res, 200, { status: 'ok' });
  if (req.method === 'POST' && url.pathname === '/v1/meetings') {
    const id = String(crypto.randomInt(1000000000, 9999999999));
    const meeting = { hostPin: pin(), guestPin: pin(), live: false, seq: 0, waiting: new Map(), tokens: new Map() };
    meetings.set(id, meeting);
    return json(res, 201, { meeting_id: id, credentials: { host: meeting.hostPin, participant: meeting.guestPin } });
  }
  const meeting = parts[0] === 'v1' && parts[1] === 'meetings' ? meetings.get(parts[2]) : undefined;
  if (!meeting) return json(res, 404, { error: { code: 'not_found' } });
  if (req.method === 'POST' && parts[3] === 'enter') {
    const body = await readBody(req);
    const role = body.credential === meeting.hostPin ? 'host' : body.credential === meeting.guestPin ? 'speaker' : null;
    if (!role) return json(res, 403, { error: { code: 'meeting_access_denied' } });
    const token = crypto.randomBytes(24).toString('hex');
    meeting.tokens.set(token, { identity: body.identity, role });
    const state = role === 'host' || meeting.live ? 'admitted' : 'waiting';
    return json(res, 200, { identity: body.identity, role, state, token });
  }
  if (req.method === 'POST' && parts[3] === 'join') {
    const caller = meeting.tokens.get((req.headers.authorization || '').replace(/^Bearer /, ''));
    if (!caller || caller.role !== 'host') return json(res, 403, { error: { code: 'forbidden' } });
    if (!meeting.live) {
      meeting.live = true;
      for (const [identity, socket] of meeting.waiting) {
        socket.send(event(meeting, 'participant.admitted', { identity, status: 'live' }));
      }
      meeting.waiting.clear();
    }
    return json(res, 200, { identity: caller.identity, role: caller.role });
  }
  return json(res, 404, { error: { code: 'not_found' } });
});

const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  const parts = url.pathname.split('/').filter(Boolean);
  const meeting = meetings.get(parts[2]);
  const caller = meeting && parts[3] === 'events' ? meeting.tokens.get(url.searchParams.get('access_token')) : undefined;
  if (!caller) {
    socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.send(JSON.stringify({ type: 'snapshot', seq: meeting.seq, data: { meeting: { status: meeting.live ? 'live' : 'created' }, you: { identity: caller.identity, state: 'waiting' } } }));
    if (!meeting.live) meeting.waiting.set(caller.identity, ws);
    ws.on('close', () => { if (meeting.waiting.get(caller.identity) === ws) meeting.waiting.delete(caller.identity); });
  });
});

server.listen(port, '127.0.0.1');
