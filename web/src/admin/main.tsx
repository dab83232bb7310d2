// The admin console at /admin: sign in with an API key pair (kept in this tab's session storage,
// never in a URL), find meetings (status, people in them now), create one, and open one: its
// credentials and ready-to-send links per role, the people in it live, its event log, start or
// end it, and its webhook deliveries; whether it is recorded automatically, and its recordings
// (download each file, delete).

import '@livekit/components-styles';
import '../shared/theme.css';
import { type FormEvent, StrictMode, useCallback, useEffect, useId, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { type Auth, type EventView, type MeetingView, type Mode, type Policy, type RecordingFile, type RecordingView, type WebhookDelivery, ApiError, api, authHeader, meetingPath } from '../shared/api';
import { SseStream, type StreamStatus, isSnapshot } from '../shared/events';
import { type Roster, applyEvent, isPresent } from '../shared/roster';
import { t } from '../shared/strings';
import { Banner, type BannerMessage, ErrorBoundary, Header, catchStrayErrors, copyText } from '../shared/ui';

type Keys = { key: string; secret: string };
const STORAGE = 'convene-admin';

function loadKeys(): Keys | null {
  try {
    const raw = sessionStorage.getItem(STORAGE);
    const keys = raw ? (JSON.parse(raw) as Keys) : null;
    return keys && keys.key && keys.secret ? keys : null;
  } catch {
    return null;
  }
}

function problem(e: unknown): BannerMessage {
  if (e instanceof ApiError) return { code: e.code, message: e.code === 'network' ? t.errors.network : e.message };
  return { message: e instanceof Error ? e.message : String(e) };
}

/** The console's place: the list, or one meeting (`#/m/<id>`). */
function useRoute(): [string | null, (id: string | null) => void] {
  const read = () => {
    const match = /^#\/m\/(\d+)$/.exec(location.hash);
    return match ? match[1] : null;
  };
  const [id, setId] = useState<string | null>(read);
  useEffect(() => {
    const onHash = () => setId(read());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  const go = (next: string | null) => {
    location.hash = next ? `#/m/${next}` : '#/';
  };
  return [id, go];
}

function App() {
  const [keys, setKeys] = useState<Keys | null>(loadKeys);
  const [error, setError] = useState<BannerMessage | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [meetingId, go] = useRoute();
  useEffect(() => catchStrayErrors((message) => setError({ message })), []);
  const signOut = () => {
    sessionStorage.removeItem(STORAGE);
    setKeys(null);
  };
  const auth: Auth = keys;
  const report = useCallback((e: unknown) => {
    setNotice(null);
    setError(problem(e));
    if (e instanceof ApiError && e.code === 'unauthenticated') {
      sessionStorage.removeItem(STORAGE);
      setKeys(null);
    }
  }, []);
  const say = useCallback((text: string) => {
    setError(null);
    setNotice(text);
  }, []);
  return (
    <div className="cv-app">
      <Header title={t.admin.title}>
        {keys && (
          <button type="button" className="lk-button" onClick={signOut}>
            {t.admin.signOut}
          </button>
        )}
      </Header>
      <div className="cv-messages">
        <Banner error={error} onDismiss={() => setError(null)} />
        <Banner notice={notice} onDismiss={() => setNotice(null)} />
      </div>
      <main className="cv-page cv-admin">
        {!keys ? (
          <SignIn
            onSignedIn={(k) => {
              sessionStorage.setItem(STORAGE, JSON.stringify(k));
              setError(null);
              setKeys(k);
            }}
            onError={report}
          />
        ) : meetingId ? (
          <MeetingDetail key={meetingId} auth={auth} meetingId={meetingId} onBack={() => go(null)} onError={report} onNotice={say} />
        ) : (
          <>
            <MeetingList auth={auth} onOpen={go} onError={report} />
            <CreateMeeting auth={auth} onCreated={(m) => { say(t.admin.created(m.name)); go(m.meeting_id); }} onError={report} />
          </>
        )}
      </main>
    </div>
  );
}

function SignIn({ onSignedIn, onError }: { onSignedIn(keys: Keys): void; onError(e: unknown): void }) {
  const [key, setKey] = useState('');
  const [secret, setSecret] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    const keys = { key: key.trim(), secret: secret.trim() };
    try {
      await api('GET', '/v1/meetings?limit=1', keys);
      onSignedIn(keys);
    } catch (e) {
      onError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="signin-title" className="cv-signin">
      <h2 id="signin-title">{t.admin.signIn}</h2>
      <p className="cv-hint">{t.admin.signInHelp}</p>
      <form className="cv-form" onSubmit={submit} style={{ maxWidth: '28rem' }}>
        <label>
          {t.admin.key}
          <input className="lk-form-control" name="key" autoComplete="username" required value={key} onChange={(e) => setKey(e.target.value)} />
        </label>
        <label>
          {t.admin.secret}
          <input className="lk-form-control" name="secret" type="password" autoComplete="current-password" required value={secret} onChange={(e) => setSecret(e.target.value)} />
        </label>
        <button type="submit" className="lk-button cv-primary" disabled={busy}>
          {t.admin.signIn}
        </button>
      </form>
    </section>
  );
}

function MeetingList({ auth, onOpen, onError }: { auth: Auth; onOpen(id: string): void; onError(e: unknown): void }) {
  const [query, setQuery] = useState('');
  const [meetings, setMeetings] = useState<MeetingView[] | null>(null);
  const [next, setNext] = useState<string | null>(null);
  const searchId = useId();
  const load = useCallback(
    async (q: string, after: string | null) => {
      try {
        const params = new URLSearchParams({ limit: '50' });
        if (q.trim()) params.set('q', q.trim());
        if (after) params.set('after', after);
        const page = await api<{ meetings: MeetingView[]; next: string | null }>('GET', `/v1/meetings?${params}`, auth);
        setMeetings((before) => (after && before ? [...before, ...page.meetings] : page.meetings));
        setNext(page.next);
      } catch (e) {
        onError(e);
      }
    },
    [auth, onError],
  );
  useEffect(() => {
    void load('', null);
  }, [load]);
  return (
    <section aria-labelledby="list-title" className="cv-section">
      <h2 id="list-title">{t.admin.meetings}</h2>
      <form
        className="cv-row"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          void load(query, null);
        }}
      >
        <label htmlFor={searchId} className="cv-visually-hidden">
          {t.admin.search}
        </label>
        <input id={searchId} type="search" className="lk-form-control cv-grow" placeholder={t.admin.search} value={query} onChange={(e) => setQuery(e.target.value)} />
        <button type="submit" className="lk-button">
          {t.admin.searchButton}
        </button>
        <button type="button" className="lk-button" onClick={() => void load(query, null)}>
          {t.admin.refresh}
        </button>
      </form>
      {meetings && meetings.length === 0 && <p className="cv-hint">{t.admin.none}</p>}
      {meetings && meetings.length > 0 && (
        <div className="cv-table-wrap">
          <table className="cv-table" data-testid="meetings">
            <thead>
              <tr>
                <th scope="col">{t.admin.columns.name}</th>
                <th scope="col">{t.admin.columns.id}</th>
                <th scope="col">{t.admin.columns.status}</th>
                <th scope="col">{t.admin.columns.mode}</th>
                <th scope="col">{t.admin.columns.people}</th>
              </tr>
            </thead>
            <tbody>
              {meetings.map((m) => (
                <tr key={m.meeting_id} data-meeting={m.meeting_id}>
                  <td>
                    <a
                      href={`#/m/${m.meeting_id}`}
                      onClick={(e) => {
                        e.preventDefault();
                        onOpen(m.meeting_id);
                      }}
                    >
                      {m.name}
                    </a>
                  </td>
                  <td>{m.meeting_id}</td>
                  <td>{t.admin.status[m.status]}</td>
                  <td>{m.mode === 'stream' ? t.room.stage : t.room.region}</td>
                  <td>{t.admin.peopleCount(m.people?.joined ?? 0, m.people?.waiting ?? 0)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {next && (
        <button type="button" className="lk-button" onClick={() => void load(query, next)}>
          {t.admin.more}
        </button>
      )}
    </section>
  );
}

/** `datetime-local` text as RFC 3339 in the browser's time zone. */
function rfc3339(local: string): string | null {
  if (!local) return null;
  const at = new Date(local);
  return Number.isNaN(at.getTime()) ? null : at.toISOString();
}

function CreateMeeting({ auth, onCreated, onError }: { auth: Auth; onCreated(m: MeetingView): void; onError(e: unknown): void }) {
  const [name, setName] = useState('');
  const [mode, setMode] = useState<Mode>('meeting');
  const [policy, setPolicy] = useState<Policy>('wait_for_host');
  const [capacity, setCapacity] = useState('');
  const [startsAt, setStartsAt] = useState('');
  const [endsAt, setEndsAt] = useState('');
  const [waitingChat, setWaitingChat] = useState(false);
  const [autoRecord, setAutoRecord] = useState(false);
  const [busy, setBusy] = useState(false);
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setBusy(true);
    const body: Record<string, unknown> = { name: name.trim(), mode, policy, waiting_room_chat: waitingChat };
    if (autoRecord) body.auto_record = true;
    if (capacity) body.capacity = Number(capacity);
    const starts = rfc3339(startsAt);
    if (starts) body.schedule = { starts_at: starts, ends_at: rfc3339(endsAt) };
    try {
      onCreated(await api<MeetingView>('POST', '/v1/meetings', auth, body));
    } catch (e) {
      onError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section aria-labelledby="create-title" className="cv-section cv-card">
      <h2 id="create-title">{t.admin.newMeeting}</h2>
      <form className="cv-form" onSubmit={submit}>
        <label>
          {t.admin.name}
          <input className="lk-form-control" name="name" required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} />
        </label>
        <label>
          {t.admin.mode}
          <select className="lk-form-control cv-select" value={mode} onChange={(e) => setMode(e.target.value as Mode)}>
            {(['meeting', 'stream'] as Mode[]).map((m) => (
              <option key={m} value={m}>
                {t.admin.modes[m]}
              </option>
            ))}
          </select>
        </label>
        <label>
          {t.admin.policy}
          <select className="lk-form-control cv-select" value={policy} onChange={(e) => setPolicy(e.target.value as Policy)}>
            {(['open', 'wait_for_host', 'ask_host', 'deny'] as Policy[]).map((p) => (
              <option key={p} value={p}>
                {t.policy(p)}
              </option>
            ))}
          </select>
        </label>
        <label>
          {t.admin.capacity}
          <input className="lk-form-control" type="number" min={1} inputMode="numeric" value={capacity} onChange={(e) => setCapacity(e.target.value)} />
        </label>
        <label>
          {t.admin.startsAt}
          <input className="lk-form-control" type="datetime-local" value={startsAt} onChange={(e) => setStartsAt(e.target.value)} />
        </label>
        <label>
          {t.admin.endsAt}
          <input className="lk-form-control" type="datetime-local" value={endsAt} onChange={(e) => setEndsAt(e.target.value)} />
        </label>
        <label className="cv-check">
          <input type="checkbox" checked={waitingChat} onChange={(e) => setWaitingChat(e.target.checked)} />
          {t.admin.waitingRoomChat}
        </label>
        <label className="cv-check">
          <input type="checkbox" checked={autoRecord} onChange={(e) => setAutoRecord(e.target.checked)} />
          {t.admin.autoRecord}
        </label>
        <button type="submit" className="lk-button cv-primary" disabled={busy}>
          {t.admin.create}
        </button>
      </form>
    </section>
  );
}

function CopyField({ label, value, onNotice, onError }: { label: string; value: string; onNotice(text: string): void; onError(e: unknown): void }) {
  const id = useId();
  return (
    <div className="cv-link">
      <label htmlFor={id} className="cv-link-label">
        {label}
      </label>
      <input id={id} className="lk-form-control" readOnly value={value} onFocus={(e) => e.target.select()} />
      <button type="button" className="lk-button cv-small" aria-label={t.admin.copyNamed(label)} onClick={async () => ((await copyText(value)) ? onNotice(t.admin.copied) : onError(new Error(t.admin.copyFailed)))}>
        {t.admin.copy}
      </button>
    </div>
  );
}

function MeetingDetail({ auth, meetingId, onBack, onError, onNotice }: { auth: Auth; meetingId: string; onBack(): void; onError(e: unknown): void; onNotice(text: string): void }) {
  const [meeting, setMeeting] = useState<MeetingView | null>(null);
  const [people, setPeople] = useState<Roster>({});
  const [events, setEvents] = useState<EventView[]>([]);
  const [live, setLive] = useState<StreamStatus>('connecting');
  const [deliveries, setDeliveries] = useState<WebhookDelivery[] | null>(null);
  const [recordings, setRecordings] = useState<RecordingView[] | null>(null);
  const [confirming, setConfirming] = useState(false);
  /** The automatic-recording choice being saved (shown checked or not until the server answers). */
  const [autoRecordSaving, setAutoRecordSaving] = useState<boolean | null>(null);

  const reload = useCallback(async () => {
    try {
      setMeeting(await api<MeetingView>('GET', meetingPath(meetingId), auth));
    } catch (e) {
      onError(e);
    }
  }, [auth, meetingId, onError]);
  const loadDeliveries = useCallback(async () => {
    try {
      const page = await api<{ deliveries: WebhookDelivery[] }>('GET', `/v1/webhooks/deliveries?meeting_id=${encodeURIComponent(meetingId)}&limit=100`, auth);
      setDeliveries(page.deliveries);
    } catch (e) {
      onError(e);
    }
  }, [auth, meetingId, onError]);

  const loadRecordings = useCallback(async () => {
    try {
      setRecordings((await api<{ recordings: RecordingView[] }>('GET', meetingPath(meetingId, '/recordings'), auth)).recordings);
    } catch (e) {
      onError(e);
    }
  }, [auth, meetingId, onError]);

  useEffect(() => {
    void reload();
    void loadDeliveries();
    void loadRecordings();
    const stream = new SseStream(
      meetingId,
      auth,
      (frame) => {
        if (isSnapshot(frame)) {
          const roster: Roster = {};
          for (const p of frame.data.participants ?? []) roster[p.identity] = p;
          setPeople(roster);
          const from = Math.max(0, frame.seq - 200);
          void api<{ events: EventView[] }>('GET', `${meetingPath(meetingId, '/events')}?after=${from}&limit=200`, auth)
            .then((page) => setEvents((later) => [...page.events.filter((e) => e.seq <= frame.seq), ...later.filter((e) => e.seq > frame.seq)]))
            .catch(onError);
          return;
        }
        setPeople((roster) => applyEvent(roster, frame));
        setEvents((log) => [...log.slice(-499), frame]);
        if (frame.type.startsWith('meeting.')) void reload();
        if (frame.type.startsWith('recording.')) {
          void reload();
          void loadRecordings();
        }
      },
      setLive,
    );
    stream.start();
    return () => stream.stop();
  }, [auth, meetingId, reload, loadDeliveries, loadRecordings, onError]);

  const setAutoRecord = async (on: boolean) => {
    setAutoRecordSaving(on);
    try {
      setMeeting(await api<MeetingView>('PATCH', meetingPath(meetingId), auth, { auto_record: on }));
      onNotice(on ? t.admin.autoRecordOn : t.admin.autoRecordOff);
    } catch (e) {
      onError(e);
    } finally {
      setAutoRecordSaving(null);
    }
  };

  const act = async (path: string, done: string) => {
    try {
      setMeeting(await api<MeetingView>('POST', meetingPath(meetingId, path), auth));
      onNotice(done);
    } catch (e) {
      onError(e);
    }
    setConfirming(false);
  };

  if (!meeting) {
    return (
      <button type="button" className="lk-button" onClick={onBack}>
        {t.admin.back}
      </button>
    );
  }
  const present = Object.values(people).filter(isPresent);
  const link = (pin: string) => `${location.origin}/meet?meeting=${encodeURIComponent(meeting.meeting_id)}#pin=${encodeURIComponent(pin)}`;
  const roles: [keyof MeetingView['credentials'], string][] = [
    ['host', t.role('host')],
    ['participant', meeting.mode === 'stream' ? t.role('speaker') : t.admin.participantRole],
    ['viewer', t.role('viewer')],
  ];
  return (
    <>
      <div className="cv-row">
        <button type="button" className="lk-button" onClick={onBack}>
          ← {t.admin.back}
        </button>
      </div>
      <h2 data-testid="meeting-title">
        {meeting.name} <span className="cv-tag" data-status={meeting.status}>{t.admin.status[meeting.status]}</span>
      </h2>
      <p className="cv-hint">
        {meeting.meeting_id} · {meeting.mode === 'stream' ? t.room.stage : t.room.region} · {t.policy(meeting.policy)}
      </p>
      <div className="cv-row">
        {meeting.status !== 'live' && (
          <button type="button" className="lk-button cv-primary" onClick={() => void act('/start', t.admin.status.live)}>
            {meeting.status === 'ended' ? t.admin.restart : t.admin.start}
          </button>
        )}
        {meeting.status === 'live' &&
          (!confirming ? (
            <button type="button" className="lk-button cv-danger" onClick={() => setConfirming(true)}>
              {t.admin.end}
            </button>
          ) : (
            <span role="group" aria-label={t.admin.end} className="cv-confirm">
              <span>{t.admin.endConfirm}</span>
              <button type="button" className="lk-button cv-danger" autoFocus onClick={() => void act('/end', t.admin.status.ended)}>
                {t.admin.end}
              </button>
              <button type="button" className="lk-button" onClick={() => setConfirming(false)}>
                {t.cancel}
              </button>
            </span>
          ))}
      </div>
      <div className="cv-cards">
        <section className="cv-card" aria-labelledby="links-title">
          <h3 id="links-title">{t.admin.credentials}</h3>
          {roles.map(([key, label]) => (
            <div key={key} className="cv-section" data-role={key}>
              <CopyField label={`${label} ${t.admin.pin}`} value={meeting.credentials[key]} onNotice={onNotice} onError={onError} />
              <CopyField label={t.admin.roleLink(label)} value={link(meeting.credentials[key])} onNotice={onNotice} onError={onError} />
            </div>
          ))}
        </section>
        <section className="cv-card" aria-labelledby="people-title">
          <h3 id="people-title">
            {t.admin.peopleNow} <span className="cv-tag" data-live={live}>{live === 'open' ? t.admin.live : (t.admin.streamStatus[live] ?? live)}</span>
          </h3>
          {present.length === 0 ? (
            <p className="cv-hint">{t.admin.nobody}</p>
          ) : (
            <ul className="cv-list" data-testid="admin-people">
              {present.map((p) => (
                <li key={p.identity} className="cv-person" data-identity={p.identity} data-state={p.state}>
                  <span className="cv-person-name">{p.name}</span>
                  <span className="cv-tag">{t.role(p.role)}</span>
                  <span className="cv-tag">{t.state(p.state)}</span>
                </li>
              ))}
            </ul>
          )}
        </section>
      </div>
      <section className="cv-section" aria-labelledby="recordings-title">
        <div className="cv-section-head">
          <h3 id="recordings-title">{t.admin.recordings}</h3>
          <button type="button" className="lk-button cv-small" aria-label={`${t.admin.refresh}: ${t.admin.recordings}`} onClick={() => void loadRecordings()}>
            {t.admin.refresh}
          </button>
        </div>
        <label className="cv-check">
          <input type="checkbox" checked={autoRecordSaving ?? Boolean(meeting.auto_record)} disabled={autoRecordSaving !== null} onChange={(e) => void setAutoRecord(e.target.checked)} aria-describedby="auto-record-hint" />
          {t.admin.autoRecord}
        </label>
        <p className="cv-hint" id="auto-record-hint">
          {t.admin.autoRecordHint}
          {meeting.recording_id ? ` ${t.admin.recordingNow}` : ''}
        </p>
        <Recordings auth={auth} meetingId={meetingId} recordings={recordings} nameOf={(identity) => people[identity]?.name ?? identity} onChanged={loadRecordings} onError={onError} onNotice={onNotice} />
      </section>
      <section className="cv-section" aria-labelledby="events-title">
        <h3 id="events-title">{t.admin.events}</h3>
        {events.length === 0 ? (
          <p className="cv-hint">{t.admin.noEvents}</p>
        ) : (
          <ol className="cv-list cv-events" data-testid="event-log" tabIndex={0} aria-labelledby="events-title">
            {[...events].reverse().map((e) => (
              <li key={e.seq} data-type={e.type}>
                #{e.seq} {new Date(e.at).toLocaleTimeString()} {e.type} {describe(e)}
              </li>
            ))}
          </ol>
        )}
      </section>
      <section className="cv-section" aria-labelledby="hooks-title">
        <div className="cv-section-head">
          <h3 id="hooks-title">{t.admin.webhooks}</h3>
          <button type="button" className="lk-button cv-small" onClick={() => void loadDeliveries()}>
            {t.admin.refresh}
          </button>
        </div>
        {!deliveries || deliveries.length === 0 ? (
          <p className="cv-hint">{t.admin.noWebhooks}</p>
        ) : (
          <div className="cv-table-wrap">
            <table className="cv-table" data-testid="deliveries">
              <thead>
                <tr>
                  {Object.values(t.admin.webhookColumns).map((c) => (
                    <th key={c} scope="col">
                      {c}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {deliveries.map((d) => (
                  <tr key={`${d.seq}-${d.url}`}>
                    <td>#{d.seq}</td>
                    <td>{d.event_type}</td>
                    <td>{d.url}</td>
                    <td>{d.status}</td>
                    <td>{d.attempts}</td>
                    <td>{d.last_status ?? ''} {d.last_error ?? ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>
    </>
  );
}

/** Saves a recording's file: fetched with the admin's key pair (a plain link could not send it)
 *  and handed to the browser as a download. */
async function download(auth: Auth, file: RecordingFile): Promise<void> {
  const headers: Record<string, string> = {};
  const authorization = authHeader(auth);
  if (authorization) headers.authorization = authorization;
  let response: Response;
  try {
    response = await fetch(file.url, { headers });
  } catch (e) {
    throw new ApiError(0, 'network', e instanceof Error ? e.message : String(e));
  }
  if (!response.ok) {
    const text = await response.text();
    let error: { code?: string; message?: string } | undefined;
    try {
      error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    } catch {
      error = undefined;
    }
    throw new ApiError(response.status, error?.code ?? `http_${response.status}`, error?.message ?? (text || response.statusText));
  }
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = file.name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function Recordings(props: {
  auth: Auth;
  meetingId: string;
  recordings: RecordingView[] | null;
  nameOf(identity: string): string;
  onChanged(): Promise<void>;
  onError(e: unknown): void;
  onNotice(text: string): void;
}) {
  const { auth, meetingId, recordings, nameOf, onChanged, onError, onNotice } = props;
  const [confirming, setConfirming] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  if (!recordings || recordings.length === 0) return <p className="cv-hint">{t.admin.noRecordings}</p>;
  const remove = async (r: RecordingView) => {
    setBusy(r.recording_id);
    try {
      await api('DELETE', meetingPath(meetingId, `/recordings/${encodeURIComponent(r.recording_id)}`), auth);
      onNotice(t.admin.deleted);
      await onChanged();
    } catch (e) {
      onError(e);
    } finally {
      setBusy(null);
      setConfirming(null);
    }
  };
  const save = async (file: RecordingFile) => {
    setBusy(file.url);
    onNotice(t.admin.downloading(file.name));
    try {
      await download(auth, file);
    } catch (e) {
      onError(e);
    } finally {
      setBusy(null);
    }
  };
  const columns = t.admin.recordingColumns;
  return (
    <div className="cv-table-wrap">
      <table className="cv-table cv-recordings" data-testid="recordings">
        <thead>
          <tr>
            <th scope="col">{columns.started}</th>
            <th scope="col">{columns.state}</th>
            <th scope="col">{columns.duration}</th>
            <th scope="col">{columns.size}</th>
            <th scope="col">{columns.files}</th>
            <th scope="col">{columns.actions}</th>
          </tr>
        </thead>
        <tbody>
          {[...recordings].reverse().map((r) => {
            const at = new Date(r.started_at).toLocaleString();
            const running = r.state === 'recording' || r.state === 'processing';
            return (
              <tr key={r.recording_id} data-recording={r.recording_id} data-state={r.state}>
                <th scope="row">{at}</th>
                <td>
                  {t.admin.recordingStates[r.state] ?? r.state}
                  {r.error && <span className="cv-hint"> · {r.error}</span>}
                </td>
                <td>{t.admin.duration(r.duration_ms)}</td>
                <td>{t.admin.size(r.bytes)}</td>
                <td>
                  {r.files.length === 0 ? (
                    <span className="cv-hint">{t.admin.noFiles}</span>
                  ) : (
                    <ul className="cv-files">
                      {[...r.files].sort((a, b) => Number(b.kind === 'composite') - Number(a.kind === 'composite')).map((f) => (
                        <li key={f.name}>
                          <button type="button" className="lk-button cv-small" aria-label={t.admin.download(f.name)} disabled={busy === f.url} onClick={() => void save(f)}>
                            {f.name}
                          </button>{' '}
                          <span className="cv-hint">
                            {t.admin.fileKinds[f.kind] ?? f.kind}
                            {f.identity ? ` ${nameOf(f.identity)}` : ''} · {t.admin.size(f.bytes)}
                          </span>
                        </li>
                      ))}
                    </ul>
                  )}
                </td>
                <td>
                  {confirming !== r.recording_id ? (
                    <button type="button" className="lk-button cv-small cv-danger" aria-label={t.admin.deleteRecording(at)} disabled={running} onClick={() => setConfirming(r.recording_id)}>
                      {t.admin.delete}
                    </button>
                  ) : (
                    <span role="group" aria-label={t.admin.deleteRecording(at)} className="cv-confirm">
                      <span>{t.admin.deleteConfirm}</span>
                      <button type="button" className="lk-button cv-small cv-danger" autoFocus disabled={busy === r.recording_id} onClick={() => void remove(r)}>
                        {t.admin.delete}
                      </button>
                      <button type="button" className="lk-button cv-small" onClick={() => setConfirming(null)}>
                        {t.cancel}
                      </button>
                    </span>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

/** A short reading of an event's data for the log. */
function describe(e: EventView): string {
  const d = e.data as Record<string, unknown>;
  if (e.type === 'chat.message') return `${d.from}: ${String(d.text).slice(0, 80)}`;
  if (Array.isArray(d.identities)) return (d.identities as string[]).join(', ');
  const parts = ['identity', 'role', 'state', 'policy', 'recording_id', 'reason'].filter((k) => d[k] !== undefined && d[k] !== null).map((k) => String(d[k]));
  return parts.join(' ');
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <ErrorBoundary>
      <App />
    </ErrorBoundary>
  </StrictMode>,
);
