// The guest's side of the waiting room: what they wait for (the host to start, or to be let in),
// their place in the queue where hosts admit one by one, chat with the hosts where the meeting
// allows it, and a way out.

import { t } from '../shared/strings';
import { ChatComposer, ChatLog } from './Panels';
import type { Session, SessionState } from './session';

export function WaitingRoom({ session, state }: { session: Session; state: SessionState }) {
  const meeting = state.meeting;
  const reason = !meeting || meeting.status !== 'live' ? t.waiting.forStart : meeting.policy === 'deny' ? t.waiting.locked : t.waiting.forHost;
  return (
    <main className="cv-page cv-waiting" aria-labelledby="waiting-title">
      <h2 id="waiting-title">{t.waiting.title}</h2>
      {state.sentBack && (
        <p className="cv-hint" role="status">
          {t.waiting.sentBack}
        </p>
      )}
      <p aria-live="polite" data-testid="waiting-reason">
        {state.phase === 'joining' ? t.prejoin.joining : reason}
      </p>
      {state.position !== null && (
        <p aria-live="polite" data-testid="queue-position" data-position={state.position}>
          {t.waiting.position(state.position)}
        </p>
      )}
      {meeting?.waiting_room_chat && (
        <section className="cv-section cv-waiting-chat" aria-labelledby="waiting-chat-title">
          <h3 id="waiting-chat-title">{t.waiting.chatTitle}</h3>
          <ChatLog state={state} />
          <ChatComposer session={session} recipients={[]} />
        </section>
      )}
      <button type="button" className="lk-button" onClick={() => void session.leave()}>
        {t.waiting.leave}
      </button>
    </main>
  );
}
