// The side panels in the meeting: people (with the host console: waiting list, per-person
// moderation, lock, end), chat over convene's API, and the stage (audience count, speakers, raised
// hands in order, invitations). Every action calls the native API through the session; a refusal
// shows the server's message.

import { useLocalParticipantPermissions, useParticipants } from '@livekit/components-react';
import { type FormEvent, useEffect, useId, useRef, useState } from 'react';
import type { Participant, Policy, Role } from '../shared/api';
import { t } from '../shared/strings';
import { DeviceSelect } from './Room';
import { RecordingControl } from './Recording';
import type { ChatLine, Session, SessionState } from './session';

export type PanelName = 'people' | 'chat' | 'stage' | 'settings';

const titles: Record<PanelName, string> = { people: t.people.title, chat: t.chat.title, stage: t.stage.title, settings: t.room.settings };
const roleOrder: Record<Role, number> = { host: 0, speaker: 1, viewer: 2 };

export function Panels({ session, state, panel, onPanel }: { session: Session; state: SessionState; panel: PanelName; onPanel(panel: PanelName | null): void }) {
  return (
    <aside id="cv-panel" className="cv-panel" aria-labelledby="cv-panel-title">
      <div className="cv-panel-head">
        <h2 id="cv-panel-title">{titles[panel]}</h2>
        <button type="button" className="lk-button cv-dismiss" onClick={() => onPanel(null)} aria-label={t.room.closePanel}>
          ×
        </button>
      </div>
      <div className="cv-panel-body">
        {panel === 'people' && <People session={session} state={state} />}
        {panel === 'chat' && <Chat session={session} state={state} />}
        {panel === 'stage' && <Stage session={session} state={state} />}
        {panel === 'settings' && <Settings />}
      </div>
    </aside>
  );
}

function displayName(state: SessionState, identity: string): string {
  const name = state.people[identity]?.name ?? identity;
  return identity === state.identity ? t.room.you(name) : name;
}

const isHost = (state: SessionState) => state.role === 'host';
const inMeeting = (p: Participant) => p.state === 'joined' || p.state === 'admitted';

// ----- people and the host console ------------------------------------------------------------

export function People({ session, state }: { session: Session; state: SessionState }) {
  const host = isHost(state);
  const live = useParticipants();
  const media = new Map(live.map((p) => [p.identity, p]));
  const present = Object.values(state.people)
    .filter(inMeeting)
    .sort((a, b) => roleOrder[a.role] - roleOrder[b.role] || a.name.localeCompare(b.name));
  const waiting = Object.values(state.people)
    .filter((p) => p.state === 'waiting')
    .sort((a, b) => a.updated_at.localeCompare(b.updated_at));
  return (
    <>
      {host && <HostControls session={session} state={state} />}
      {host && waiting.length > 0 && (
        <section aria-labelledby="cv-waiting-title" className="cv-section" data-testid="waiting-list">
          <div className="cv-section-head">
            <h3 id="cv-waiting-title">{t.people.waiting(waiting.length)}</h3>
            <button type="button" className="lk-button" onClick={() => void session.admitAll()}>
              {t.people.admitAll}
            </button>
          </div>
          <ul className="cv-list">
            {waiting.map((p) => (
              <li key={p.identity} className="cv-person" data-identity={p.identity} data-state={p.state}>
                <span className="cv-person-name">{p.name}</span>
                <span className="cv-actions">
                  <button type="button" className="lk-button cv-small" aria-label={t.people.admitNamed(p.name)} onClick={() => void session.admit(p.identity)}>
                    {t.people.admit}
                  </button>
                  <button type="button" className="lk-button cv-small" aria-label={t.people.denyNamed(p.name)} onClick={() => void session.deny(p.identity)}>
                    {t.people.deny}
                  </button>
                </span>
              </li>
            ))}
          </ul>
        </section>
      )}
      <section aria-labelledby="cv-present-title" className="cv-section">
        <h3 id="cv-present-title">{t.people.inMeeting(present.length)}</h3>
        <ul className="cv-list" data-testid="people-list">
          {present.map((p) => {
            const lk = media.get(p.identity);
            const micOff = lk ? !lk.isMicrophoneEnabled : false;
            const camOff = lk ? !lk.isCameraEnabled : false;
            return (
              <li key={p.identity} className="cv-person" data-identity={p.identity} data-role={p.role} data-state={p.state} data-mic={lk ? (micOff ? 'off' : 'on') : 'none'} data-camera={lk ? (camOff ? 'off' : 'on') : 'none'}>
                <span className="cv-person-name">
                  {displayName(state, p.identity)}

                </span>
                <span className="cv-tags">
                  <span className={`cv-tag cv-tag-${p.role}`}>{t.role(p.role)}</span>
                  {p.state !== 'joined' && <span className="cv-tag">{t.state(p.state)}</span>}
                  {p.hand_raised && <span className="cv-tag cv-tag-hand">{t.people.handRaised}</span>}
                  {lk && canPublishRole(p.role) && micOff && <span className="cv-tag">{t.people.micMuted}</span>}
                  {lk && canPublishRole(p.role) && camOff && <span className="cv-tag">{t.people.camMuted}</span>}
                </span>
                {host && p.identity !== state.identity && <PersonActions session={session} state={state} person={p} />}
              </li>
            );
          })}
        </ul>
      </section>
    </>
  );
}

const canPublishRole = (role: Role) => role === 'host' || role === 'speaker';

function PersonActions({ session, state, person }: { session: Session; state: SessionState; person: Participant }) {
  const [open, setOpen] = useState(false);
  const [banFor, setBanFor] = useState('3600');
  const menuId = useId();
  const selectId = useId();
  const root = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!open) return;
    const onDown = (e: MouseEvent) => {
      if (root.current && !root.current.contains(e.target as Node)) setOpen(false);
    };
    document.addEventListener('mousedown', onDown);
    return () => document.removeEventListener('mousedown', onDown);
  }, [open]);
  const act = (action: () => Promise<boolean>) => async () => {
    if (await action()) setOpen(false);
  };
  const stage = state.meeting?.mode === 'stream';
  return (
    <div className="cv-menu" ref={root} onKeyDown={(e) => e.key === 'Escape' && setOpen(false)}>
      <button type="button" className="lk-button cv-small" aria-expanded={open} aria-controls={menuId} aria-label={t.people.actionsFor(person.name)} onClick={() => setOpen(!open)}>
        ⋯
      </button>
      {open && (
        <div className="cv-menu-body" id={menuId}>
          {canPublishRole(person.role) && (
            <>
              <button type="button" className="lk-button cv-small" onClick={act(() => session.mute(person.identity, 'audio'))}>
                {t.people.muteMic}
              </button>
              <button type="button" className="lk-button cv-small" onClick={act(() => session.mute(person.identity, 'video'))}>
                {t.people.muteCam}
              </button>
            </>
          )}
          {(['viewer', 'speaker', 'host'] as Role[])
            .filter((role) => role !== person.role)
            .map((role) => (
              <button key={role} type="button" className="lk-button cv-small" onClick={act(() => session.setRole(person.identity, role))}>
                {stage && role === 'viewer' ? t.stage.toAudience : t.people.makeRole(t.role(role))}
              </button>
            ))}
          {person.role !== 'host' && (
            <button type="button" className="lk-button cv-small" onClick={act(() => session.sendBack(person.identity))}>
              {t.people.sendBack}
            </button>
          )}
          <button type="button" className="lk-button cv-small" onClick={act(() => session.remove(person.identity))}>
            {t.people.remove}
          </button>
          <div className="cv-ban">
            <label htmlFor={selectId}>{t.people.banFor}</label>
            <select id={selectId} className="lk-form-control cv-select" value={banFor} onChange={(e) => setBanFor(e.target.value)}>
              {Object.entries(t.people.banDurations).map(([value, label]) => (
                <option key={value} value={value}>
                  {label}
                </option>
              ))}
            </select>
            <button type="button" className="lk-button cv-small cv-danger" onClick={act(() => session.ban(person.identity, banFor === 'forever' ? null : Number(banFor)))}>
              {t.people.ban}
            </button>
          </div>
        </div>
      )}
    </div>
  );
}

function HostControls({ session, state }: { session: Session; state: SessionState }) {
  const policy = state.meeting?.policy ?? 'wait_for_host';
  const policyId = useId();
  const [confirming, setConfirming] = useState(false);
  return (
    <section aria-labelledby="cv-host-title" className="cv-section cv-host">
      <h3 id="cv-host-title">{t.host.title}</h3>
      <div className="cv-row">
        <label htmlFor={policyId}>{t.host.policy}</label>
        <select id={policyId} className="lk-form-control cv-select" value={policy} onChange={(e) => void session.setPolicy(e.target.value as Policy)}>
          {(['open', 'wait_for_host', 'ask_host', 'deny'] as Policy[]).map((p) => (
            <option key={p} value={p}>
              {t.policy(p)}
            </option>
          ))}
        </select>
      </div>
      <div className="cv-row">
        <button type="button" className="lk-button" aria-pressed={policy === 'deny'} onClick={() => void session.setPolicy(policy === 'deny' ? 'ask_host' : 'deny')}>
          {policy === 'deny' ? t.host.unlock : t.host.lock}
        </button>
        {!confirming ? (
          <button type="button" className="lk-button cv-danger" onClick={() => setConfirming(true)}>
            {t.host.end}
          </button>
        ) : (
          <span role="group" aria-label={t.host.end} className="cv-confirm">
            <span>{t.host.endConfirm}</span>
            <button type="button" className="lk-button cv-danger" autoFocus onClick={() => void session.endMeeting()}>
              {t.host.end}
            </button>
            <button type="button" className="lk-button" onClick={() => setConfirming(false)}>
              {t.cancel}
            </button>
          </span>
        )}
      </div>
      {policy === 'deny' && <p className="cv-hint">{t.host.locked}</p>}
      <RecordingControl session={session} state={state} />
    </section>
  );
}

// ----- devices ---------------------------------------------------------------------------------

function Settings() {
  const permissions = useLocalParticipantPermissions();
  return (
    <div className="cv-settings">
      {permissions?.canPublish && (
        <>
          <label className="cv-setting">
            {t.room.microphoneDevice}
            <DeviceSelect kind="audioinput" label={t.room.microphoneDevice} labelled />
          </label>
          <label className="cv-setting">
            {t.room.cameraDevice}
            <DeviceSelect kind="videoinput" label={t.room.cameraDevice} labelled />
          </label>
        </>
      )}
      <label className="cv-setting">
        {t.room.speakerDevice}
        <DeviceSelect kind="audiooutput" label={t.room.speakerDevice} labelled />
      </label>
    </div>
  );
}

// ----- chat ------------------------------------------------------------------------------------

function chatHeading(state: SessionState, line: ChatLine): string {
  const from = displayName(state, line.from);
  if (line.waitingRoom) {
    const toWhom = line.to ? displayName(state, line.to) : t.chat.hosts;
    return `${t.chat.fromTo(from, toWhom)} · ${t.chat.waitingRoom}`;
  }
  return line.to ? t.chat.fromTo(from, displayName(state, line.to)) : from;
}

export function ChatLog({ state }: { state: SessionState }) {
  const end = useRef<HTMLLIElement>(null);
  useEffect(() => {
    end.current?.scrollIntoView?.({ block: 'nearest' });
  }, [state.chat.length]);
  if (state.chat.length === 0) return <p className="cv-hint">{t.chat.empty}</p>;
  return (
    <div className="cv-chat-log" role="log" aria-label={t.chat.log} aria-live="polite" data-testid="chat-log">
      <ol className="cv-list">
      {state.chat.map((line, i) => (
        <li key={line.seq} ref={i === state.chat.length - 1 ? end : undefined} className={line.from === state.identity ? 'cv-chat-line cv-mine' : 'cv-chat-line'} data-seq={line.seq}>
          <span className="cv-chat-from">{chatHeading(state, line)}</span>
          <span className="cv-chat-text">{line.text}</span>
        </li>
      ))}
      </ol>
    </div>
  );
}

export function ChatComposer({ session, recipients }: { session: Session; recipients: { value: string; label: string }[] }) {
  const [text, setText] = useState('');
  const [to, setTo] = useState('');
  const [sending, setSending] = useState(false);
  const textId = useId();
  const toId = useId();
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const message = text.trim();
    if (!message) return;
    setSending(true);
    if (await session.sendChat(message, to || null)) setText('');
    setSending(false);
  };
  return (
    <form className="cv-chat-form" onSubmit={submit}>
      {recipients.length > 0 && (
        <div className="cv-row">
          <label htmlFor={toId}>{t.chat.to}</label>
          <select id={toId} className="lk-form-control cv-select" value={to} onChange={(e) => setTo(e.target.value)}>
            <option value="">{t.chat.everyone}</option>
            {recipients.map((r) => (
              <option key={r.value} value={r.value}>
                {r.label}
              </option>
            ))}
          </select>
        </div>
      )}
      <div className="cv-row">
        <label htmlFor={textId} className="cv-visually-hidden">
          {t.chat.message}
        </label>
        <input id={textId} className="lk-form-control cv-grow" maxLength={4096} autoComplete="off" value={text} onChange={(e) => setText(e.target.value)} placeholder={t.chat.message} />
        <button type="submit" className="lk-button cv-primary" disabled={sending || !text.trim()}>
          {t.chat.send}
        </button>
      </div>
    </form>
  );
}

function Chat({ session, state }: { session: Session; state: SessionState }) {
  const waitingGuests = isHost(state) && state.meeting?.waiting_room_chat ? Object.values(state.people).filter((p) => p.state === 'waiting') : [];
  const members = Object.values(state.people).filter((p) => inMeeting(p) && p.identity !== state.identity);
  const recipients = [
    ...members.map((p) => ({ value: p.identity, label: p.name })),
    ...waitingGuests.map((p) => ({ value: p.identity, label: t.chat.waitingGuest(p.name) })),
  ];
  return (
    <div className="cv-chat">
      <ChatLog state={state} />
      <ChatComposer session={session} recipients={recipients} />
    </div>
  );
}

// ----- the stage -------------------------------------------------------------------------------

function Stage({ session, state }: { session: Session; state: SessionState }) {
  const host = isHost(state);
  const people = Object.values(state.people).filter(inMeeting);
  const viewers = people.filter((p) => p.role === 'viewer' && p.state === 'joined');
  const speakers = people.filter((p) => p.role !== 'viewer').sort((a, b) => roleOrder[a.role] - roleOrder[b.role] || a.name.localeCompare(b.name));
  const me = state.people[state.identity];
  return (
    <>
      <p className="cv-viewer-count" data-testid="viewer-count" data-count={viewers.length}>
        {t.stage.viewers(viewers.length)}
      </p>
      {me?.role === 'viewer' && (
        <div className="cv-row">
          <button type="button" className="lk-button" aria-pressed={me.hand_raised} onClick={() => void session.raiseHand(!me.hand_raised)}>
            {me.hand_raised ? t.stage.lower : t.stage.raise}
          </button>
        </div>
      )}
      <section className="cv-section" aria-labelledby="cv-speakers-title">
        <h3 id="cv-speakers-title">{t.stage.speakers}</h3>
        <ul className="cv-list" data-testid="speakers">
          {speakers.map((p) => (
            <li key={p.identity} className="cv-person" data-identity={p.identity}>
              <span className="cv-person-name">{displayName(state, p.identity)}</span>
              <span className={`cv-tag cv-tag-${p.role}`}>{t.role(p.role)}</span>
              {host && p.role === 'speaker' && (
                <button type="button" className="lk-button cv-small" aria-label={t.stage.toAudienceNamed(p.name)} onClick={() => void session.setRole(p.identity, 'viewer')}>
                  {t.stage.toAudience}
                </button>
              )}
            </li>
          ))}
        </ul>
      </section>
      <section className="cv-section" aria-labelledby="cv-hands-title">
        <h3 id="cv-hands-title">{t.stage.hands}</h3>
        {state.hands.length === 0 ? (
          <p className="cv-hint">{t.stage.noHands}</p>
        ) : (
          <ol className="cv-list" data-testid="hands">
            {state.hands.map((identity) => {
              const p = state.people[identity];
              const name = p?.name ?? identity;
              return (
                <li key={identity} className="cv-person" data-identity={identity}>
                  <span className="cv-person-name">{displayName(state, identity)}</span>
                  {host &&
                    (p?.invited ? (
                      <span className="cv-tag">{t.stage.invited}</span>
                    ) : (
                      <button type="button" className="lk-button cv-small" aria-label={t.stage.inviteNamed(name)} onClick={() => void session.invite(identity)}>
                        {t.stage.invite}
                      </button>
                    ))}
                </li>
              );
            })}
          </ol>
        )}
      </section>
    </>
  );
}

/** The invited viewer's answer, shown over the stage until answered. */
export function Invitation({ session }: { session: Session }) {
  const accept = useRef<HTMLButtonElement>(null);
  useEffect(() => accept.current?.focus(), []);
  return (
    <div className="cv-invitation" role="alertdialog" aria-labelledby="cv-invitation-text">
      <p id="cv-invitation-text">{t.stage.invitation}</p>
      <button type="button" ref={accept} className="lk-button cv-primary" onClick={() => void session.answerInvitation(true)}>
        {t.stage.accept}
      </button>
      <button type="button" className="lk-button" onClick={() => void session.answerInvitation(false)}>
        {t.stage.decline}
      </button>
    </div>
  );
}
