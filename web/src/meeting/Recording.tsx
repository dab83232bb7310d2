// Recording, as everyone in a meeting sees it (consent): a persistent indicator in the top bar
// while the meeting is recorded, and a short announcement for screen readers when recording
// starts or stops. Hosts start and stop it from their console. The event stream is the source of
// truth (`recording.started` / `recording.stopped`, and its snapshot), seeded from the meeting
// as the person enters.

import { useEffect, useRef, useState } from 'react';
import { t } from '../shared/strings';
import type { Session, SessionState } from './session';

/** The red dot and "Recording", shown for as long as the meeting is recorded. */
export function RecordingIndicator() {
  return (
    <span className="cv-recording" role="status" aria-label={t.recording.label} data-testid="recording-indicator">
      <span className="cv-recording-dot" aria-hidden="true" />
      <span aria-hidden="true">{t.recording.indicator}</span>
    </span>
  );
}

/** A polite live region, always in the page, that says when recording starts or stops (and, on
 *  arriving, that the meeting is being recorded). `active`: the person is in the meeting or its
 *  waiting room. */
export function RecordingAnnouncer({ active, recording }: { active: boolean; recording: boolean }) {
  const [text, setText] = useState('');
  const before = useRef<boolean | null>(null);
  useEffect(() => {
    if (!active) {
      before.current = null;
      return;
    }
    if (before.current === null) {
      if (recording) setText(t.recording.already);
    } else if (recording !== before.current) {
      setText(recording ? t.recording.started : t.recording.stopped);
    }
    before.current = recording;
  }, [active, recording]);
  return (
    <div className="cv-visually-hidden" aria-live="polite" aria-atomic="true" data-testid="recording-news">
      {text}
    </div>
  );
}

/** The host's button: start recording, or stop it; disabled while the call is in flight (a
 *  refusal shows the server's message). */
export function RecordingControl({ session, state }: { session: Session; state: SessionState }) {
  const [busy, setBusy] = useState(false);
  const act = async () => {
    setBusy(true);
    try {
      await (state.recording ? session.stopRecording() : session.startRecording());
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="cv-row cv-recording-control">
      <button type="button" className={state.recording ? 'lk-button cv-danger' : 'lk-button'} disabled={busy} aria-busy={busy} onClick={() => void act()}>
        {!state.recording && <span className="cv-recording-dot" aria-hidden="true" />}
        {state.recording ? t.recording.stop : t.recording.start}
      </button>
      <span className="cv-hint">{t.recording.hint}</span>
    </div>
  );
}
