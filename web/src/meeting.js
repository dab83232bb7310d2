// The meeting page served at /meet: enter with a PIN (or a one-time `?join=` link from the
// BigBlueButton surface), wait to be admitted, join the media room
// with the official livekit-client, show a video grid, leave. Host controls: admit waiting guests.
//
// `window.__convene` is a small read-only hook for the browser interop test (phase, identity,
// and decoded-video statistics per remote participant).

import { Room, RoomEvent, Track } from 'livekit-client';

const WAIT_POLL_MS = 1000;
const HOST_POLL_MS = 2000;

const $ = (id) => document.getElementById(id);

const session = {
  phase: 'prejoin', // prejoin | waiting | joining | live | left | error
  meetingId: null,
  identity: null,
  role: null,
  waitingToken: null,
  accessToken: null,
  meeting: null,
  room: null,
  lastError: null,
  timers: [],
  // Recent room events, newest last, for diagnostics (the test prints them on failure).
  events: [],
};

function note(what, participant, extra = '') {
  session.events.push(`${new Date().toISOString().slice(11, 23)} ${what} ${participant ? participant.identity : ''} ${extra}`.trim());
  if (session.events.length > 100) session.events.shift();
}

/** An API error with the server's `{"error": {"code", "message"}}` fields. */
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.authorization = 'Bearer ' + token;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'network', 'cannot reach the server: ' + e.message);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const err = data && data.error;
    throw new ApiError(response.status, err ? err.code : 'http_' + response.status, err ? err.message : text || response.statusText);
  }
  return data;
}

const meetingPath = (suffix) => `/v1/meetings/${encodeURIComponent(session.meetingId)}${suffix}`;

function show(phase) {
  session.phase = phase;
  for (const section of document.querySelectorAll('[data-phase]')) {
    section.hidden = section.dataset.phase !== phase;
  }
  document.body.dataset.phase = phase;
}

function showError(error) {
  const box = $('error');
  if (!error) {
    box.hidden = true;
    box.textContent = '';
    return;
  }
  session.lastError = { code: error.code || 'error', message: error.message };
  box.textContent = error.code ? `${error.message} (${error.code})` : error.message;
  box.hidden = false;
}

function setStatus(text) {
  $('status').textContent = text;
}

function stopTimers() {
  for (const t of session.timers) clearTimeout(t);
  session.timers = [];
}

function later(fn, ms) {
  session.timers.push(setTimeout(fn, ms));
}

// ---- pre-join and waiting room ----

async function onEnter(event) {
  event.preventDefault();
  showError(null);
  const form = event.target;
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  session.meetingId = form.meeting.value.trim().replace(/\s+/g, '');
  try {
    const entered = await api('POST', meetingPath('/enter'), {
      body: { credential: form.credential.value.trim(), name: form.name.value.trim() },
    });
    session.identity = entered.identity;
    session.role = entered.role;
    session.waitingToken = entered.token;
    session.meeting = entered.meeting;
    $('meeting-title').textContent = entered.meeting.name || `Meeting ${entered.meeting.meeting_id}`;
    const url = new URL(location.href);
    url.searchParams.set('meeting', session.meetingId);
    history.replaceState(null, '', url);
    if (entered.state === 'waiting') {
      show('waiting');
      waitForAdmission();
    } else {
      await join();
    }
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

async function waitForAdmission() {
  if (session.phase !== 'waiting') return;
  try {
    const me = await api('GET', meetingPath('/me'), { token: session.waitingToken });
    session.meeting = me.meeting;
    const state = me.participant.state;
    if (state === 'admitted' || state === 'joined') {
      await join();
      return;
    }
    if (state === 'removed' || state === 'banned' || state === 'left') {
      showError({ code: state, message: `You were not admitted (${state}).` });
      show('prejoin');
      return;
    }
    $('waiting-detail').textContent =
      me.meeting.status === 'live' ? 'Waiting to be admitted by the host.' : 'Waiting for the host to start the meeting.';
  } catch (e) {
    showError(e);
  }
  later(waitForAdmission, WAIT_POLL_MS);
}

async function join() {
  show('joining');
  let joined;
  try {
    joined = await api('POST', meetingPath('/join'), { token: session.waitingToken });
  } catch (e) {
    if (e.code === 'meeting_not_live' || e.code === 'not_admitted') {
      show('waiting');
      later(waitForAdmission, WAIT_POLL_MS);
      return;
    }
    showError(e);
    show('prejoin');
    return;
  }
  // For convene's own API (events, admit...): with an external LiveKit, access_token is for LiveKit only.
  session.accessToken = joined.api_token || joined.access_token;
  session.role = joined.role;
  session.meeting = joined.meeting;
  await connect(joined.url, joined.access_token);
}

// ---- one-time join links (the BigBlueButton surface redirects here with ?join=...) ----

async function enterWithJoinLink(link) {
  // The link works once: take it out of the address bar and history before anything else.
  const url = new URL(location.href);
  url.searchParams.delete('join');
  history.replaceState(null, '', url);
  show('joining');
  try {
    const entered = await api('POST', '/v1/join-links/exchange', { body: { join_link: link } });
    session.meetingId = entered.meeting.meeting_id;
    session.identity = entered.identity;
    session.role = entered.role;
    session.waitingToken = entered.token;
    session.meeting = entered.meeting;
    $('meeting-title').textContent = entered.meeting.name || `Meeting ${entered.meeting.meeting_id}`;
    if (entered.state === 'waiting') {
      show('waiting');
      waitForAdmission();
    } else if (entered.join) {
      session.accessToken = entered.join.api_token || entered.join.access_token;
      await connect(entered.join.url, entered.join.access_token);
    } else {
      await join();
    }
  } catch (e) {
    showError(e);
    show('prejoin');
  }
}

// ---- media ----

async function connect(url, token) {
  const room = new Room({ adaptiveStream: false, dynacast: false });
  session.room = room;
  room
    .on(RoomEvent.TrackSubscribed, (track, publication, participant) => {
      note('track-subscribed', participant, track.kind);
      attachTrack(track, participant);
    })
    .on(RoomEvent.TrackUnsubscribed, (track, publication, participant) => {
      note('track-unsubscribed', participant, track.kind);
      track.detach().forEach((el) => el.remove());
    })
    .on(RoomEvent.TrackPublished, (publication, participant) => note('track-published', participant, publication.kind))
    .on(RoomEvent.TrackUnpublished, (publication, participant) => note('track-unpublished', participant, publication.kind))
    .on(RoomEvent.Reconnecting, () => note('reconnecting'))
    .on(RoomEvent.Reconnected, () => note('reconnected'))
    .on(RoomEvent.ParticipantConnected, (participant) => {
      note('participant-connected', participant);
      renderRoster();
    })
    .on(RoomEvent.ParticipantDisconnected, (participant) => {
      note('participant-disconnected', participant);
      tileFor(participant.identity, null, false)?.remove();
      renderRoster();
    })
    .on(RoomEvent.Disconnected, (reason) => {
      note('disconnected', null, String(reason));
      if (session.phase === 'live') {
        showError({ code: 'disconnected', message: 'The media connection ended.' });
        finish();
      }
    });
  try {
    await room.connect(url, token);
  } catch (e) {
    showError({ code: 'media', message: 'Cannot connect to the media server: ' + e.message });
    show('prejoin');
    return;
  }
  show('live');
  setStatus(`In the meeting as ${room.localParticipant.name || session.identity} (${session.role}).`);
  renderRoster();
  await room.startAudio().catch(() => {});
  if (session.role === 'host' || session.role === 'speaker') {
    try {
      await room.localParticipant.enableCameraAndMicrophone();
      const camera = room.localParticipant.getTrackPublication(Track.Source.Camera);
      if (camera && camera.videoTrack) attachTrack(camera.videoTrack, room.localParticipant, true);
    } catch (e) {
      showError({ code: 'devices', message: 'Camera or microphone unavailable: ' + e.message });
    }
  }
  if (session.role === 'host') pollWaitingList();
}

function tileFor(identity, name, create = true) {
  const id = 'tile-' + identity;
  let tile = document.getElementById(id);
  if (!tile && create) {
    tile = document.createElement('figure');
    tile.id = id;
    tile.className = 'tile';
    tile.dataset.identity = identity;
    const caption = document.createElement('figcaption');
    caption.textContent = name || identity;
    tile.append(caption);
    $('grid').append(tile);
  }
  return tile;
}

function attachTrack(track, participant, local = false) {
  const element = track.attach();
  if (track.kind === Track.Kind.Video) {
    const tile = tileFor(participant.identity, (participant.name || participant.identity) + (local ? ' (you)' : ''));
    element.dataset.identity = participant.identity;
    element.dataset.local = String(local);
    if (local) element.muted = true;
    element.setAttribute('aria-label', `Video of ${participant.name || participant.identity}`);
    tile.prepend(element);
  } else if (track.kind === Track.Kind.Audio) {
    element.hidden = true;
    $('audio').append(element);
  }
}

function renderRoster() {
  const room = session.room;
  if (!room) return;
  const names = [room.localParticipant, ...room.remoteParticipants.values()].map((p) => p.name || p.identity);
  $('roster').textContent = `${names.length} in the meeting: ${names.join(', ')}`;
}

async function pollWaitingList() {
  if (session.phase !== 'live') return;
  try {
    const list = await api('GET', meetingPath('/participants?state=waiting'), { token: session.accessToken });
    const ul = $('waiting-list');
    ul.replaceChildren(
      ...list.participants.map((p) => {
        const li = document.createElement('li');
        const button = document.createElement('button');
        button.type = 'button';
        button.textContent = 'Admit';
        button.setAttribute('aria-label', `Admit ${p.name}`);
        button.addEventListener('click', async () => {
          button.disabled = true;
          try {
            await api('POST', meetingPath(`/participants/${encodeURIComponent(p.identity)}/admit`), { token: session.accessToken });
            li.remove();
          } catch (e) {
            showError(e);
            button.disabled = false;
          }
        });
        li.append(document.createTextNode(p.name + ' '), button);
        return li;
      }),
    );
    $('host-panel').hidden = list.participants.length === 0;
  } catch (e) {
    showError(e);
  }
  later(pollWaitingList, HOST_POLL_MS);
}

// ---- leave ----

async function leave() {
  stopTimers();
  const token = session.accessToken || session.waitingToken;
  if (token) {
    await api('POST', meetingPath('/leave'), { token }).catch((e) => showError(e));
  }
  finish();
}

function finish() {
  stopTimers();
  const room = session.room;
  session.room = null;
  show('left');
  if (room) room.disconnect().catch(() => {});
  $('grid').replaceChildren();
  $('audio').replaceChildren();
  const logout = session.meeting && session.meeting.logout_url;
  if (logout && /^https?:\/\//i.test(logout)) location.assign(logout);
}

// ---- test hook ----

async function videoStats() {
  const room = session.room;
  if (!room) return [];
  const out = [];
  for (const participant of room.remoteParticipants.values()) {
    for (const publication of participant.videoTrackPublications.values()) {
      const track = publication.videoTrack;
      if (!track) continue;
      let framesDecoded = 0;
      if (track.receiver) {
        const report = await track.receiver.getStats();
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded || 0;
        });
      }
      const element = track.attachedElements[0];
      out.push({
        identity: participant.identity,
        videoWidth: element ? element.videoWidth : 0,
        videoHeight: element ? element.videoHeight : 0,
        framesDecoded,
      });
    }
  }
  return out;
}

window.__convene = {
  get phase() {
    return session.phase;
  },
  get identity() {
    return session.identity;
  },
  get role() {
    return session.role;
  },
  get lastError() {
    return session.lastError;
  },
  get events() {
    return session.events.slice();
  },
  videoStats,
};

// ---- start ----

function start() {
  const params = new URLSearchParams(location.search);
  const form = $('enter-form');
  if (params.get('meeting')) form.meeting.value = params.get('meeting');
  if (params.get('name')) form.name.value = params.get('name');
  form.addEventListener('submit', onEnter);
  $('leave').addEventListener('click', leave);
  $('cancel-wait').addEventListener('click', leave);
  window.addEventListener('pagehide', () => session.room && session.room.disconnect());
  show('prejoin');
  (form.meeting.value ? form.credential : form.meeting).focus();
  if (params.get('join')) enterWithJoinLink(params.get('join'));
}

start();
