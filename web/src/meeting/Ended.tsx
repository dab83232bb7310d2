// The end of a session on this page: left, ended, denied, removed, banned, expired; with the
// server's own words where it gave some, and a way to join again.

import { t } from '../shared/strings';
import type { SessionState } from './session';

export function Ended({ state, onAgain }: { state: SessionState; onAgain(): void }) {
  const end = state.end;
  const banned = state.people[state.identity]?.banned_until;
  const text =
    end?.kind === 'left'
      ? t.ended.left
      : end?.kind === 'ended'
        ? t.ended.ended
        : end?.kind === 'denied'
          ? t.ended.denied
          : end?.kind === 'banned'
            ? banned
              ? t.ended.bannedUntil(new Date(banned).toLocaleString())
              : t.ended.banned
            : end?.kind === 'expired'
              ? t.ended.expired
              : end?.kind === 'new_run'
                ? t.ended.newRun
                : t.ended.removed;
  return (
    <main className="cv-page cv-ended" aria-labelledby="ended-title">
      <h2 id="ended-title" data-end={end?.kind}>
        {text}
      </h2>
      {end?.detail && <p className="cv-hint">{end.detail}</p>}
      <button type="button" className="lk-button cv-primary" onClick={onAgain}>
        {t.ended.again}
      </button>
    </main>
  );
}
