// The meeting page at /meet: pre-join, waiting room, the meeting or the stage, and the end.
// Entry by form (meeting ID, PIN, name; `?meeting=`, `?name=` and `#pin=` prefill it), by a
// one-time `?join=` link (BigBlueButton surface), or by `#token=` a convene token an app handed
// over (the live-stream surface's `api_token`). Links and tokens are taken out of the address bar
// before anything else.
//
// `window.__convene` is a read-only hook for the browser tests (state, decoded-video statistics).

import '@livekit/components-styles';
import '../shared/theme.css';
import type { RemoteAudioTrack, RemoteVideoTrack, Room } from 'livekit-client';
import { StrictMode, useState, useSyncExternalStore } from 'react';
import { createRoot } from 'react-dom/client';
import { t } from '../shared/strings';
import { Banner, ErrorBoundary, Header, catchStrayErrors } from '../shared/ui';
import { Ended } from './Ended';
import { type DeviceChoices, PreJoin } from './PreJoin';
import { MeetingRoom } from './Room';
import { Session } from './session';
import { WaitingRoom } from './Waiting';
import { RecordingAnnouncer, RecordingIndicator } from './Recording';

const session = new Session();

/** What the address bar brought, read once; secrets are removed from it at once. */
function takeFromAddress() {
  const url = new URL(location.href);
  const hash = new URLSearchParams(url.hash.slice(1));
  const found = {
    meetingId: url.searchParams.get('meeting') ?? '',
    name: url.searchParams.get('name') ?? '',
    pin: hash.get('pin') ?? '',
    token: hash.get('token'),
    link: url.searchParams.get('join'),
  };
  if (found.link || url.hash) {
    url.searchParams.delete('join');
    url.hash = '';
    history.replaceState(null, '', url);
  }
  return found;
}

const address = takeFromAddress();

function App() {
  const state = useSyncExternalStore(session.subscribe, session.getState);
  const [devices, setDevices] = useState<DeviceChoices>({ audio: true, video: true, audioDeviceId: '', videoDeviceId: '' });
  const [defaults, setDefaults] = useState({ meetingId: address.meetingId, pin: address.pin, name: address.name });
  const [entry, setEntry] = useState<'form' | 'link' | 'token'>(address.link ? 'link' : address.token && address.meetingId ? 'token' : 'form');

  const join = (values: { meetingId: string; pin: string; name: string }, choices: DeviceChoices) => {
    setDevices(choices);
    if (entry === 'link' && address.link) {
      void session.enterWithLink(address.link);
      setEntry('form');
    } else if (entry === 'token' && address.token) {
      void session.enterWithToken(address.meetingId, address.token);
      setEntry('form');
    } else {
      setDefaults(values);
      const url = new URL(location.href);
      url.searchParams.set('meeting', values.meetingId);
      history.replaceState(null, '', url);
      void session.enter(values.meetingId, values.pin, values.name);
    }
  };

  const title = state.meeting?.name ?? t.product;
  // In the meeting or its waiting room, everyone sees whether it is being recorded.
  const inMeeting = state.phase === 'waiting' || state.phase === 'joining' || state.phase === 'live';
  let body;
  switch (state.phase) {
    case 'prejoin':
    case 'entering':
      body = <PreJoin askCredentials={entry === 'form'} defaults={defaults} busy={state.phase === 'entering'} onJoin={join} />;
      break;
    case 'waiting':
      body = <WaitingRoom session={session} state={state} />;
      break;
    case 'joining':
      body = (
        <main className="cv-page">
          <p role="status">{t.prejoin.joining}</p>
        </main>
      );
      break;
    case 'live':
      body = <MeetingRoom session={session} state={state} devices={devices} />;
      break;
    case 'ended':
      body = <Ended state={state} onAgain={() => session.reset()} />;
      break;
  }
  return (
    <div className="cv-app" data-phase={state.phase}>
      <Header title={title}>{inMeeting && state.recording && <RecordingIndicator />}</Header>
      <RecordingAnnouncer active={inMeeting} recording={state.recording} />
      <div className="cv-messages">
        <Banner error={state.error} onDismiss={() => session.clearError()} />
        <Banner notice={state.notice} onDismiss={() => session.clearNotice()} />
      </div>
      {body}
    </div>
  );
}

catchStrayErrors((message) => session.fail({ code: 'error', message }));

async function videoStats() {
  const room = (window as unknown as { __conveneRoom?: Room }).__conveneRoom;
  if (!room) return [];
  const out = [];
  for (const participant of room.remoteParticipants.values()) {
    for (const publication of participant.videoTrackPublications.values()) {
      const track = publication.videoTrack as RemoteVideoTrack | undefined;
      if (!track) continue;
      let framesDecoded = 0;
      let frameWidth = 0;
      if (track.receiver) {
        const report = await track.receiver.getStats();
        report.forEach((s: { type: string; kind?: string; framesDecoded?: number; frameWidth?: number }) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') {
            framesDecoded += s.framesDecoded ?? 0;
            frameWidth = Math.max(frameWidth, s.frameWidth ?? 0);
          }
        });
      }
      const element = track.attachedElements[0] as HTMLVideoElement | undefined;
      out.push({
        identity: participant.identity,
        source: publication.source,
        muted: publication.isMuted,
        videoWidth: element ? element.videoWidth : frameWidth,
        framesDecoded,
      });
    }
  }
  return out;
}

async function audioStats() {
  const room = (window as unknown as { __conveneRoom?: Room }).__conveneRoom;
  if (!room) return [];
  const out = [];
  for (const participant of room.remoteParticipants.values()) {
    for (const publication of participant.audioTrackPublications.values()) {
      const track = publication.audioTrack as RemoteAudioTrack | undefined;
      if (!track?.receiver) continue;
      let packetsReceived = 0;
      (await track.receiver.getStats()).forEach((s: { type: string; kind?: string; packetsReceived?: number }) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') packetsReceived += s.packetsReceived ?? 0;
      });
      out.push({ identity: participant.identity, source: publication.source, muted: publication.isMuted, packetsReceived });
    }
  }
  return out;
}

function remote() {
  const room = (window as unknown as { __conveneRoom?: Room }).__conveneRoom;
  if (!room) return [];
  return [...room.remoteParticipants.values()].map((p) => ({
    identity: p.identity,
    microphone: p.isMicrophoneEnabled,
    camera: p.isCameraEnabled,
    screenShare: p.isScreenShareEnabled,
    tracks: [...p.trackPublications.values()].map((pub) => ({ source: pub.source, muted: pub.isMuted, subscribed: pub.isSubscribed })),
  }));
}

(window as unknown as { __convene: unknown }).__convene = {
  get state() {
    return session.getState();
  },
  get phase() {
    return session.getState().phase;
  },
  get identity() {
    return session.getState().identity;
  },
  get role() {
    return session.getState().role;
  },
  get lastError() {
    return session.getState().error;
  },
  videoStats,
  audioStats,
  remote,
};

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <ErrorBoundary>
      <App />
    </ErrorBoundary>
  </StrictMode>,
);
