// Before entering: meeting ID, PIN and name (or a one-time link / handed-over token, then only the
// devices), a camera preview, microphone and camera on or off, and the device to use. A blocked
// camera or microphone is said on the page and the person joins without it.

import { CameraDisabledIcon, CameraIcon, MicDisabledIcon, MicIcon, useMediaDevices, usePreviewTracks } from '@livekit/components-react';
import { type LocalAudioTrack, type LocalVideoTrack, Track } from 'livekit-client';
import { type FormEvent, type ReactNode, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { t } from '../shared/strings';

export interface DeviceChoices {
  audio: boolean;
  video: boolean;
  audioDeviceId: string;
  videoDeviceId: string;
}

export interface PreJoinProps {
  /** Ask for meeting ID, PIN and name (false with a link or a token that says who you are). */
  askCredentials: boolean;
  defaults: { meetingId: string; pin: string; name: string };
  busy: boolean;
  onJoin(values: { meetingId: string; pin: string; name: string }, devices: DeviceChoices): void;
}

/** An on/off switch for a device before joining (no room yet, so not LiveKit's TrackToggle). */
function Toggle({ on, disabled, onChange, icon, children }: { on: boolean; disabled: boolean; onChange(on: boolean): void; icon: ReactNode; children: ReactNode }) {
  return (
    <button type="button" className="lk-button cv-toggle" aria-pressed={on} disabled={disabled} onClick={() => onChange(!on)}>
      {icon}
      {children}
    </button>
  );
}

function blocked(error: Error): boolean {
  return error.name === 'NotAllowedError' || error.name === 'SecurityError' || /permission/i.test(error.message);
}

export function PreJoin({ askCredentials, defaults, busy, onJoin }: PreJoinProps) {
  const [meetingId, setMeetingId] = useState(defaults.meetingId);
  const [pin, setPin] = useState(defaults.pin);
  const [name, setName] = useState(defaults.name);
  const [video, setVideo] = useState(true);
  const [audio, setAudio] = useState(true);
  const [videoDeviceId, setVideoDeviceId] = useState('');
  const [audioDeviceId, setAudioDeviceId] = useState('');
  const [cameraBlocked, setCameraBlocked] = useState(false);
  const [micBlocked, setMicBlocked] = useState(false);
  const [deviceError, setDeviceError] = useState<string | null>(null);

  const onVideoError = useCallback((e: Error) => {
    if (blocked(e)) setCameraBlocked(true);
    else setDeviceError(t.errors.deviceFailed(t.prejoin.camera, e.message));
    setVideo(false);
  }, []);
  const onAudioError = useCallback((e: Error) => {
    if (blocked(e)) setMicBlocked(true);
    else setDeviceError(t.errors.deviceFailed(t.prejoin.microphone, e.message));
    setAudio(false);
  }, []);
  const videoTracks = usePreviewTracks({ video: video ? { deviceId: videoDeviceId || undefined } : false }, onVideoError);
  const audioTracks = usePreviewTracks({ audio: audio ? { deviceId: audioDeviceId || undefined } : false }, onAudioError);
  const videoTrack = videoTracks?.find((track) => track.kind === Track.Kind.Video) as LocalVideoTrack | undefined;
  const audioTrack = audioTracks?.find((track) => track.kind === Track.Kind.Audio) as LocalAudioTrack | undefined;

  const videoElement = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const element = videoElement.current;
    if (!element || !videoTrack) return;
    videoTrack.attach(element);
    return () => {
      videoTrack.detach(element);
    };
  }, [videoTrack]);

  // Device lists have labels once a preview has the permission.
  const cameras = useMediaDevices({ kind: 'videoinput' });
  const microphones = useMediaDevices({ kind: 'audioinput' });
  const cameraId = useMemo(() => videoDeviceId || videoTrack?.mediaStreamTrack.getSettings().deviceId || '', [videoDeviceId, videoTrack]);
  const microphoneId = useMemo(() => audioDeviceId || audioTrack?.mediaStreamTrack.getSettings().deviceId || '', [audioDeviceId, audioTrack]);

  const blockedMessage =
    cameraBlocked && micBlocked ? t.errors.devicesDenied.both : cameraBlocked ? t.errors.devicesDenied.camera : micBlocked ? t.errors.devicesDenied.microphone : null;

  const submit = (event: FormEvent) => {
    event.preventDefault();
    onJoin(
      { meetingId: meetingId.replace(/\s+/g, ''), pin: pin.trim(), name: name.trim() },
      { audio: audio && !micBlocked, video: video && !cameraBlocked, audioDeviceId: microphoneId, videoDeviceId: cameraId },
    );
  };

  return (
    <main className="cv-page cv-prejoin" aria-labelledby="prejoin-title">
      <h2 id="prejoin-title">{t.prejoin.title}</h2>
      <div className="cv-prejoin-grid">
        <section className="cv-preview" aria-label={t.prejoin.preview}>
          <div className="cv-preview-video">
            {video && videoTrack ? (
              <video ref={videoElement} muted playsInline aria-label={t.prejoin.preview} data-testid="preview" />
            ) : (
              <p className="cv-preview-off">{t.prejoin.noPreview}</p>
            )}
          </div>
          <div className="cv-device-row">
            <Toggle on={audio && !micBlocked} disabled={micBlocked} onChange={setAudio} icon={audio && !micBlocked ? <MicIcon /> : <MicDisabledIcon />}>
              {t.prejoin.microphone}
            </Toggle>
            <label className="cv-visually-hidden" htmlFor="prejoin-mic">
              {t.prejoin.microphoneDevice}
            </label>
            <select id="prejoin-mic" className="lk-form-control cv-select" value={microphoneId} disabled={!audio || microphones.length === 0} onChange={(e) => setAudioDeviceId(e.target.value)}>
              {microphones.map((d) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label || d.deviceId}
                </option>
              ))}
            </select>
          </div>
          <div className="cv-device-row">
            <Toggle on={video && !cameraBlocked} disabled={cameraBlocked} onChange={setVideo} icon={video && !cameraBlocked ? <CameraIcon /> : <CameraDisabledIcon />}>
              {t.prejoin.camera}
            </Toggle>
            <label className="cv-visually-hidden" htmlFor="prejoin-cam">
              {t.prejoin.cameraDevice}
            </label>
            <select id="prejoin-cam" className="lk-form-control cv-select" value={cameraId} disabled={!video || cameras.length === 0} onChange={(e) => setVideoDeviceId(e.target.value)}>
              {cameras.map((d) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label || d.deviceId}
                </option>
              ))}
            </select>
          </div>
          {blockedMessage && (
            <p className="cv-hint" role="status" data-testid="devices-blocked">
              {blockedMessage}
            </p>
          )}
          {deviceError && (
            <p className="cv-hint" role="status">
              {deviceError}
            </p>
          )}
        </section>
        <form className="cv-form" onSubmit={submit}>
          {askCredentials && (
            <>
              <label>
                {t.prejoin.meetingId}
                <input className="lk-form-control" name="meeting" inputMode="numeric" autoComplete="off" required value={meetingId} onChange={(e) => setMeetingId(e.target.value)} />
              </label>
              <label>
                {t.prejoin.pin}
                <input className="lk-form-control" name="credential" inputMode="numeric" autoComplete="off" required value={pin} onChange={(e) => setPin(e.target.value)} />
              </label>
              <label>
                {t.prejoin.name}
                <input className="lk-form-control" name="name" autoComplete="name" maxLength={200} required value={name} onChange={(e) => setName(e.target.value)} />
              </label>
            </>
          )}
          <button type="submit" className="lk-button cv-primary" disabled={busy}>
            {busy ? t.prejoin.joining : t.prejoin.join}
          </button>
        </form>
      </div>
    </main>
  );
}
