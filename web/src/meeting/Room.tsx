// In the meeting: the media connection (LiveKit's client, kept connected through drops and server
// restarts), the video layouts (grid, or speaker focus with a filmstrip; a pinned tile or a screen
// share takes focus), the control bar, and the side panels. Publishing follows the person's role
// as convene's events say it: a promoted viewer starts publishing, a demoted speaker stops.

import {
  CarouselLayout,
  ChatIcon,
  FocusLayoutContainer,
  FocusToggleIcon,
  GearIcon,
  LayoutContextProvider,
  LeaveIcon,
  ParticipantName,
  ParticipantPlaceholder,
  QualityExcellentIcon,
  QualityGoodIcon,
  QualityPoorIcon,
  QualityUnknownIcon,
  RoomAudioRenderer,
  RoomContext,
  ScreenShareIcon,
  ScreenShareStopIcon,
  StartAudio,
  TrackLoop,
  TrackMutedIndicator,
  TrackRefContext,
  TrackToggle,
  UnfocusToggleIcon,
  VideoTrack,
  isTrackReference,
  useConnectionQualityIndicator,
  useCreateLayoutContext,
  useEnsureTrackRef,
  useFocusToggle,
  useGridLayout,
  useIsSpeaking,
  useLocalParticipantPermissions,
  useMediaDeviceSelect,
  useParticipantTile,
  usePagination,
  usePinnedTracks,
  useSwipe,
  useTracks,
} from '@livekit/components-react';
import type { TrackReferenceOrPlaceholder } from '@livekit/components-core';
import { ConnectionQuality, DisconnectReason, type LocalParticipant, type Participant as LkParticipant, Room, RoomEvent, Track, VideoPresets } from 'livekit-client';
import { useEffect, useMemo, useRef, useState } from 'react';
import { ApiError } from '../shared/api';
import { t } from '../shared/strings';
import { Banner } from '../shared/ui';
import { HandIcon, PeopleIcon, SpeakerIcon, StageIcon } from './icons';
import { Invitation, Panels, type PanelName } from './Panels';
import type { DeviceChoices } from './PreJoin';
import type { Session, SessionState } from './session';

const canPublish = (role: string | null) => role === 'host' || role === 'speaker';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const RECONNECT_BACKOFF_MS = [500, 1000, 2000, 3000, 5000];

/** Resolves once the server lets this participant publish, or after `ms`. */
function publishAllowed(participant: LocalParticipant, ms: number): Promise<void> {
  if (participant.permissions?.canPublish) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      participant.off('participantPermissionsChanged', check);
      resolve();
    };
    const check = () => {
      if (participant.permissions?.canPublish) done();
    };
    const timer = setTimeout(done, ms);
    participant.on('participantPermissionsChanged', check);
  });
}

export function MeetingRoom({ session, state, devices }: { session: Session; state: SessionState; devices: DeviceChoices }) {
  const room = useMemo(
    () =>
      new Room({
        // Each tile asks for the video size it shows (nothing while hidden), and the camera stops
        // encoding the simulcast layers nobody is shown: convene's SFU honours both.
        adaptiveStream: true,
        dynacast: true,
        // convene's SFU speaks the two-connection protocol: asking for it at once saves trying
        // the single-connection path first.
        singlePeerConnection: false,
        videoCaptureDefaults: { resolution: VideoPresets.h720.resolution },
        audioCaptureDefaults: devices.audioDeviceId ? { deviceId: devices.audioDeviceId } : undefined,
      }),
    // One room for the page's life in the meeting.
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [],
  );
  const [connection, setConnection] = useState<'connecting' | 'connected' | 'reconnecting'>('connecting');
  const wanted = useRef({ audio: devices.audio, video: devices.video });
  const publishedRole = useRef<string | null>(null);
  const leaving = useRef(false);

  // Connect, publish what the person chose, and come back after any drop for as long as the
  // meeting lets this person in.
  useEffect(() => {
    let cancelled = false;
    const publish = async () => {
      const role = session.getState().role;
      publishedRole.current = role;
      if (!canPublish(role)) return;
      const lp = room.localParticipant;
      await lp.setMicrophoneEnabled(wanted.current.audio, devices.audioDeviceId ? { deviceId: devices.audioDeviceId } : undefined).catch((e: Error) => session.fail({ code: 'devices', message: t.errors.deviceFailed(t.room.microphone, e.message) }));
      await lp.setCameraEnabled(wanted.current.video, devices.videoDeviceId ? { deviceId: devices.videoDeviceId } : undefined).catch((e: Error) => session.fail({ code: 'devices', message: t.errors.deviceFailed(t.room.camera, e.message) }));
    };
    const reconnect = async () => {
      setConnection('reconnecting');
      for (let attempt = 0; !cancelled; attempt++) {
        await sleep(RECONNECT_BACKOFF_MS[Math.min(attempt, RECONNECT_BACKOFF_MS.length - 1)]);
        if (cancelled || session.getState().phase !== 'live') return;
        try {
          const joined = await session.rejoin();
          if (cancelled) return;
          await room.connect(joined.url, joined.access_token);
          setConnection('connected');
          await publish();
          return;
        } catch (e) {
          if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
            session.refused(e);
            return;
          }
        }
      }
    };
    const onDisconnected = (reason?: DisconnectReason) => {
      if (cancelled || leaving.current || session.getState().phase !== 'live') return;
      if (reason === DisconnectReason.CLIENT_INITIATED || reason === DisconnectReason.DUPLICATE_IDENTITY) return;
      void reconnect();
    };
    room
      .on(RoomEvent.Reconnecting, () => setConnection('reconnecting'))
      .on(RoomEvent.SignalReconnecting, () => setConnection('reconnecting'))
      .on(RoomEvent.Reconnected, () => setConnection('connected'))
      .on(RoomEvent.Disconnected, onDisconnected)
      .on(RoomEvent.MediaDevicesError, (e: Error) => session.fail({ code: 'devices', message: e.message }));
    const media = session.getState().media;
    (async () => {
      if (!media) return;
      try {
        await room.connect(media.url, media.token);
      } catch (e) {
        if (cancelled) return;
        session.fail({ code: 'media', message: t.errors.mediaConnect(e instanceof Error ? e.message : String(e)) });
        void reconnect();
        return;
      }
      if (cancelled) return;
      setConnection('connected');
      await publish();
      room.startAudio().catch(() => undefined);
    })();
    const onPageHide = () => void room.disconnect();
    window.addEventListener('pagehide', onPageHide);
    return () => {
      cancelled = true;
      window.removeEventListener('pagehide', onPageHide);
      room.removeAllListeners();
      void room.disconnect();
    };
  }, [room, session, devices]);

  // Publishing follows the role: promoted starts camera and microphone, demoted stops them.
  useEffect(() => {
    if (connection !== 'connected') return;
    const before = publishedRole.current;
    publishedRole.current = state.role;
    const lp = room.localParticipant;
    if (canPublish(state.role) && !canPublish(before) && before !== null) {
      void (async () => {
        await publishAllowed(lp, 5000);
        wanted.current = { audio: true, video: true };
        await lp.setMicrophoneEnabled(true).catch((e: Error) => session.fail({ code: 'devices', message: t.errors.deviceFailed(t.room.microphone, e.message) }));
        await lp.setCameraEnabled(true).catch((e: Error) => session.fail({ code: 'devices', message: t.errors.deviceFailed(t.room.camera, e.message) }));
        session.say(t.room.promoted);
      })();
    } else if (!canPublish(state.role) && canPublish(before)) {
      void (async () => {
        for (const publication of [...lp.trackPublications.values()]) {
          if (publication.track) await lp.unpublishTrack(publication.track).catch(() => undefined);
        }
        session.say(t.room.demoted);
      })();
    }
  }, [state.role, connection, room, session]);

  // A host turned off one of this person's tracks: say so (the toggle shows it already).
  useEffect(() => {
    if (!state.mutedByHost) return;
    const what = state.mutedByHost.track === 'video' ? t.room.camera.toLowerCase() : t.room.microphone.toLowerCase();
    session.say(t.room.mutedByHost(what));
    if (state.mutedByHost.track === 'video') wanted.current.video = false;
    else wanted.current.audio = false;
  }, [state.mutedByHost, session]);

  useEffect(() => {
    (window as unknown as { __conveneRoom?: Room }).__conveneRoom = room;
  }, [room]);

  const [panel, setPanel] = useState<PanelName | null>(() => (matchMedia('(min-width: 1100px)').matches ? 'people' : null));
  const layoutContext = useCreateLayoutContext();
  const [layout, setLayout] = useState<'grid' | 'speaker'>('grid');
  const [lastRead, setLastRead] = useState(0);
  const unread = panel === 'chat' ? 0 : state.chat.filter((c) => c.seq > lastRead && c.from !== state.identity).length;
  useEffect(() => {
    if (panel === 'chat' && state.chat.length) setLastRead(state.chat[state.chat.length - 1].seq);
  }, [panel, state.chat]);

  const leave = async () => {
    leaving.current = true;
    await room.disconnect();
    await session.leave();
  };

  return (
    <RoomContext.Provider value={room}>
      <LayoutContextProvider value={layoutContext}>
        <div className={panel ? 'cv-room cv-room-with-panel' : 'cv-room'} data-connection={connection}>
          <div className="cv-room-messages">
            {connection === 'reconnecting' && <Banner notice={t.room.reconnecting} />}
            {connection !== 'reconnecting' && state.stream === 'reconnecting' && <Banner notice={t.room.eventsReconnecting} />}
          </div>
          <main className="cv-stage" aria-label={t.room.region}>
            {state.invited && <Invitation session={session} />}
            <VideoArea state={state} layout={layout} />
          </main>
          {panel && <Panels session={session} state={state} panel={panel} onPanel={setPanel} />}
          <ControlBar state={state} session={session} layout={layout} onLayout={setLayout} panel={panel} onPanel={setPanel} unread={unread} onLeave={leave} wanted={wanted} />
        </div>
        <RoomAudioRenderer />
      </LayoutContextProvider>
    </RoomContext.Provider>
  );
}

function VideoArea({ state, layout }: { state: SessionState; layout: 'grid' | 'speaker' }) {
  const all = useTracks(
    [
      { source: Track.Source.Camera, withPlaceholder: true },
      { source: Track.Source.ScreenShare, withPlaceholder: false },
    ],
    { updateOnlyOn: [RoomEvent.ActiveSpeakersChanged], onlySubscribed: false },
  );
  // On a stage, viewers are an audience, not tiles.
  const stage = state.meeting?.mode === 'stream';
  const tracks = all.filter((ref) => !stage || isTrackReference(ref) || canPublish(state.people[ref.participant.identity]?.role ?? null) || (ref.participant.isLocal && canPublish(state.role)));
  const screenShares = tracks.filter(isTrackReference).filter((ref) => ref.publication.source === Track.Source.ScreenShare);
  const pinned = usePinnedTracks()?.[0];
  const speaker = tracks.find((ref) => ref.participant.isSpeaking && !ref.participant.isLocal && ref.source === Track.Source.Camera) ?? tracks.find((ref) => !ref.participant.isLocal) ?? tracks[0];
  const focus: TrackReferenceOrPlaceholder | undefined = pinned ?? screenShares[0] ?? (layout === 'speaker' ? speaker : undefined);
  if (tracks.length === 0) return <p className="cv-empty">{t.room.noVideo}</p>;
  if (!focus) {
    return (
      <div className="lk-grid-layout-wrapper">
        <Grid tracks={tracks} />
      </div>
    );
  }
  const others = tracks.filter((ref) => !(ref.participant.identity === focus.participant.identity && ref.source === focus.source));
  return (
    <div className="lk-focus-layout-wrapper">
      <FocusLayoutContainer>
        <CarouselLayout tracks={others}>
          <Tile />
        </CarouselLayout>
        <TrackRefContext.Provider value={focus}>
          <Tile />
        </TrackRefContext.Provider>
      </FocusLayoutContainer>
    </div>
  );
}

/** LiveKit's grid (its layout and pagination hooks), with page buttons that say what they do. */
function Grid({ tracks }: { tracks: TrackReferenceOrPlaceholder[] }) {
  const grid = useRef<HTMLDivElement>(null);
  const { layout } = useGridLayout(grid as React.RefObject<HTMLDivElement>, tracks.length);
  const pagination = usePagination(layout.maxTiles, tracks);
  useSwipe(grid as React.RefObject<HTMLDivElement>, { onLeftSwipe: pagination.nextPage, onRightSwipe: pagination.prevPage });
  return (
    <div ref={grid} className="lk-grid-layout" data-lk-pagination={pagination.totalPageCount > 1}>
      <TrackLoop tracks={pagination.tracks}>
        <Tile />
      </TrackLoop>
      {pagination.totalPageCount > 1 && (
        <div className="lk-pagination-control" data-lk-user-interaction="true">
          <button type="button" className="lk-button" onClick={pagination.prevPage} aria-label={t.room.previousPage}>
            ‹
          </button>
          <span className="lk-pagination-count">{t.room.pageOf(pagination.currentPage, pagination.totalPageCount)}</span>
          <button type="button" className="lk-button" onClick={pagination.nextPage} aria-label={t.room.nextPage}>
            ›
          </button>
        </div>
      )}
    </div>
  );
}


function Quality({ participant }: { participant: LkParticipant }) {
  const { quality } = useConnectionQualityIndicator({ participant });
  return (
    <span role="img" aria-label={t.room.quality(quality)} className="cv-quality">
      <span className="lk-participant-metadata-item lk-connection-quality" data-lk-quality={quality}>
        {quality === ConnectionQuality.Excellent ? <QualityExcellentIcon /> : quality === ConnectionQuality.Good ? <QualityGoodIcon /> : quality === ConnectionQuality.Poor ? <QualityPoorIcon /> : <QualityUnknownIcon />}
      </span>
    </span>
  );
}

/** One participant's tile: video (or a placeholder), name, muted microphone, connection quality,
 *  a pin button, and the active speaker highlighted. LiveKit's tile hook and parts, with a pin
 *  button a screen reader can name. */
function Tile() {
  const ref = useEnsureTrackRef();
  const speaking = useIsSpeaking(ref.participant);
  const name = ref.participant.name || ref.participant.identity;
  const screen = ref.source === Track.Source.ScreenShare;
  const { elementProps } = useParticipantTile<HTMLDivElement>({
    trackRef: ref,
    htmlProps: { className: 'lk-participant-tile', role: 'group', 'aria-label': screen ? t.room.screenOf(name) : name },
  });
  return (
    <div {...elementProps} style={{ position: 'relative' }} data-identity={ref.participant.identity} data-source={ref.source} data-speaking={speaking}>
      {isTrackReference(ref) && !ref.publication.isMuted ? <VideoTrack trackRef={ref} muted={ref.participant.isLocal} /> : null}
      <div className="lk-participant-placeholder">
        <ParticipantPlaceholder />
      </div>
      <div className="lk-participant-metadata">
        <div className="lk-participant-metadata-item">
          {screen ? <ScreenShareIcon style={{ marginRight: '0.25rem' }} /> : <TrackMutedIndicator trackRef={{ participant: ref.participant, source: Track.Source.Microphone }} show="muted" />}
          <ParticipantName participant={ref.participant} />
          {ref.participant.isLocal && <span className="cv-you"> ({t.you})</span>}
        </div>
        <Quality participant={ref.participant} />
      </div>
      <PinButton trackRef={ref} label={screen ? t.room.pinScreen(name) : t.room.pin(name)} />
    </div>
  );
}

/** Pins a tile to the focus (LiveKit's focus toggle, with a name a screen reader can say). */
function PinButton({ trackRef, label }: { trackRef: TrackReferenceOrPlaceholder; label: string }) {
  const { mergedProps, inFocus } = useFocusToggle({ trackRef, props: {} });
  return (
    <button type="button" {...mergedProps} aria-pressed={inFocus}>
      {inFocus ? <UnfocusToggleIcon /> : <FocusToggleIcon />}
      <span className="cv-visually-hidden">{label}</span>
    </button>
  );
}

/** A device list (LiveKit's device-select hook) as a plain select: keyboard and screen-reader
 *  friendly. `labelled`: a visible label wraps it. */
export function DeviceSelect({ kind, label, labelled = false }: { kind: MediaDeviceKind; label: string; labelled?: boolean }) {
  const { devices, activeDeviceId, setActiveMediaDevice } = useMediaDeviceSelect({ kind });
  if (devices.length < 1) return null;
  return (
    <select className={labelled ? 'lk-form-control cv-select' : 'lk-form-control cv-select cv-device-select'} aria-label={labelled ? undefined : label} value={activeDeviceId} onChange={(e) => void setActiveMediaDevice(e.target.value)}>
      {devices.map((d) => (
        <option key={d.deviceId} value={d.deviceId}>
          {d.label || d.deviceId}
        </option>
      ))}
    </select>
  );
}

function ControlBar(props: {
  state: SessionState;
  session: Session;
  layout: 'grid' | 'speaker';
  onLayout(layout: 'grid' | 'speaker'): void;
  panel: PanelName | null;
  onPanel(panel: PanelName | null): void;
  unread: number;
  onLeave(): void;
  wanted: { current: { audio: boolean; video: boolean } };
}) {
  const { state, session, layout, onLayout, panel, onPanel, unread, onLeave, wanted } = props;
  const permissions = useLocalParticipantPermissions();
  const publishing = Boolean(permissions?.canPublish) && canPublish(state.role);
  const stage = state.meeting?.mode === 'stream';
  const me = state.people[state.identity];
  const toggle = (name: PanelName) => onPanel(panel === name ? null : name);
  const [sharing, setSharing] = useState(false);
  return (
    <nav className="lk-control-bar cv-control-bar" aria-label={t.room.controls}>
      {publishing && (
        <div className="lk-button-group">
          <TrackToggle source={Track.Source.Microphone} showIcon onChange={(on, byUser) => byUser && (wanted.current.audio = on)} onDeviceError={(e) => session.fail({ code: 'devices', message: t.errors.deviceFailed(t.room.microphone, e.message) })}>
            <span className="cv-label">{t.room.microphone}</span>
          </TrackToggle>
        </div>
      )}
      {publishing && (
        <div className="lk-button-group">
          <TrackToggle source={Track.Source.Camera} showIcon onChange={(on, byUser) => byUser && (wanted.current.video = on)} onDeviceError={(e) => session.fail({ code: 'devices', message: t.errors.deviceFailed(t.room.camera, e.message) })}>
            <span className="cv-label">{t.room.camera}</span>
          </TrackToggle>
        </div>
      )}
      {publishing && 'getDisplayMedia' in (navigator.mediaDevices ?? {}) && (
        <TrackToggle
          source={Track.Source.ScreenShare}
          captureOptions={{ audio: true, selfBrowserSurface: 'include' }}
          showIcon={false}
          onChange={(on) => setSharing(on)}
          onDeviceError={(e) => session.fail({ code: 'screen_share', message: t.errors.screenShare(e.message) })}
        >
          {sharing ? <ScreenShareStopIcon /> : <ScreenShareIcon />}
          <span className="cv-label">{sharing ? t.room.stopShare : t.room.shareScreen}</span>
        </TrackToggle>
      )}
      {stage && me && me.role === 'viewer' && (
        <button type="button" className="lk-button" aria-pressed={me.hand_raised} onClick={() => void session.raiseHand(!me.hand_raised)}>
          <HandIcon />
          <span className="cv-label">{me.hand_raised ? t.stage.lower : t.stage.raise}</span>
        </button>
      )}
      <button type="button" className="lk-button" aria-pressed={layout === 'speaker'} onClick={() => onLayout(layout === 'grid' ? 'speaker' : 'grid')}>
        <SpeakerIcon />
        <span className="cv-label">{t.room.layoutSpeaker}</span>
      </button>
      <button type="button" className="lk-button" aria-expanded={panel === 'people'} aria-controls="cv-panel" onClick={() => toggle('people')}>
        <PeopleIcon />
        <span className="cv-label">{t.room.people}</span>
      </button>
      {stage && (
        <button type="button" className="lk-button" aria-expanded={panel === 'stage'} aria-controls="cv-panel" onClick={() => toggle('stage')}>
          <StageIcon />
          <span className="cv-label">{t.room.stage}</span>
          {state.role === 'host' && state.hands.length > 0 && <span className="cv-badge">{state.hands.length}</span>}
        </button>
      )}
      <button type="button" className="lk-button" aria-expanded={panel === 'chat'} aria-controls="cv-panel" onClick={() => toggle('chat')}>
        <ChatIcon />
        <span className="cv-label">{t.room.chat}</span>
        {unread > 0 && (
          <span className="cv-badge">
            <span aria-hidden="true">{unread}</span>
            <span className="cv-visually-hidden">{t.room.unread(unread)}</span>
          </span>
        )}
      </button>
      <button type="button" className="lk-button" aria-expanded={panel === 'settings'} aria-controls="cv-panel" onClick={() => toggle('settings')}>
        <GearIcon />
        <span className="cv-label">{t.room.settings}</span>
      </button>
      <StartAudio label={t.room.startAudio} className="lk-button" />
      <button type="button" className="lk-button lk-disconnect-button" onClick={onLeave}>
        <LeaveIcon />
        <span className="cv-label">{t.room.leave}</span>
      </button>
    </nav>
  );
}
