// The peer of convene's join-storm benchmark (docs/benchmarks.md, "Join storms"): seed 002's
// room-join function as its authors ran it, on Node's `http` and `livekit-server-sdk`, with no
// store. POST / (any path) with JSON `roomName` and `uid` answers
// `{"msg": "Success", "livekit_socket_url", "access_token"}`, the token a LiveKit access token
// with a room-join grant for that room and identity. So that both servers authenticate, the
// caller must send the key pair as Basic credentials (`key:secret`), as convene's admin does;
// the check is one compare against the expected header value.
// Usage: node server.js [port]; PORT, API_KEY, API_SECRET, LIVEKIT_SOCKET_URL from the environment.
'use strict';

const http = require('http');
const crypto = require('crypto');
const { AccessToken } = require('livekit-server-sdk');

const port = Number(process.argv[2] || process.env.PORT || 7891);
const apiKey = process.env.API_KEY || 'APIbench';
const apiSecret = process.env.API_SECRET || 'bench-secret-0123456789-0123456789-abcdef';
const socketUrl = process.env.LIVEKIT_SOCKET_URL || `ws://127.0.0.1:${port}`;
const expected = Buffer.from(`Basic ${Buffer.from(`${apiKey}:${apiSecret}`).toString('base64')}`);

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function authorized(req) {
  const given = Buffer.from(req.headers.authorization || '');
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function join(req, res) {
  if (!authorized(req)) return json(res, 401, { msg: 'Unauthorized' });
  let body;
  try {
    body = JSON.parse((await readBody(req)) || '{}');
  } catch {
    return json(res, 400, { msg: 'Invalid JSON body' });
  }
  for (const name of ['roomName', 'uid']) {
    if (typeof body[name] !== 'string' || body[name] === '') {
      return json(res, 400, { msg: `Missing required parameter: ${name}` });
    }
  }
  try {
    const token = new AccessToken(apiKey, apiSecret, { identity: body.uid });
    token.addGrant({ roomJoin: true, room: body.roomName });
    const accessToken = await token.toJwt();
    return json(res, 200, { msg: 'Success', livekit_socket_url: socketUrl, access_token: accessToken });
  } catch (error) {
    console.error(error);
    return json(res, 500, { msg: 'Error joining room' });
  }
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') return json(res, 200, { status: 'ok' });
  if (req.method === 'POST') return join(req, res);
  return json(res, 404, { msg: 'Not found' });
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1');
