// Who is in a meeting, as convene's events tell it: the snapshot's participants, then each event
// applied in order. Used by the meeting page and the admin console alike.

import type { EventView, Participant, Role } from './api';

export type Roster = Record<string, Participant>;

/** The roster with one person changed (or added, as far as the event tells). */
export function withPerson(people: Roster, identity: string, patch: Partial<Participant>): Roster {
  const now = new Date().toISOString();
  const existing: Participant = people[identity] ?? {
    identity,
    name: identity,
    role: 'speaker',
    state: 'admitted',
    hand_raised: false,
    invited: false,
    media_connected: false,
    banned_until: null,
    created_at: now,
    updated_at: now,
  };
  return { ...people, [identity]: { ...existing, ...patch, updated_at: now } };
}

/** The roster after one event (events that do not change it give it back unchanged). */
export function applyEvent(people: Roster, e: EventView): Roster {
  const d = e.data as Record<string, unknown>;
  const who = d.identity as string;
  switch (e.type) {
    case 'meeting.ended': {
      let next = people;
      for (const p of Object.values(people)) {
        if (p.state === 'waiting' || p.state === 'admitted' || p.state === 'joined') next = withPerson(next, p.identity, { state: 'left', hand_raised: false, invited: false, media_connected: false });
      }
      return next;
    }
    case 'participant.entered':
      return withPerson(people, who, { name: d.name as string, role: d.role as Role, state: 'waiting' });
    case 'participant.admitted':
      return withPerson(people, who, { state: 'admitted' });
    case 'participants.admitted': {
      let next = people;
      for (const id of d.identities as string[]) next = withPerson(next, id, { state: 'admitted' });
      return next;
    }
    case 'participant.denied':
      return withPerson(people, who, { state: 'removed' });
    case 'participant.sent_back':
      return withPerson(people, who, { state: 'waiting', hand_raised: false, invited: false });
    case 'participant.joined':
      return withPerson(people, who, { name: d.name as string, role: d.role as Role, state: 'joined' });
    case 'participant.left':
      return withPerson(people, who, { state: 'left', hand_raised: false, invited: false, media_connected: false });
    case 'participant.removed':
      return withPerson(people, who, { state: 'removed', hand_raised: false, invited: false, media_connected: false });
    case 'participant.banned':
      return withPerson(people, who, { state: 'banned', hand_raised: false, invited: false, media_connected: false, banned_until: (d.until as string | null) ?? null });
    case 'participant.unbanned':
      return withPerson(people, who, { state: 'left', banned_until: null });
    case 'participant.role_changed':
      return withPerson(people, who, { role: d.role as Role, invited: false, ...(d.role !== 'viewer' ? { hand_raised: false } : {}) });
    case 'stage.hand_raised':
      return withPerson(people, who, { hand_raised: true });
    case 'stage.hand_lowered':
      return withPerson(people, who, { hand_raised: false });
    case 'stage.invited':
      return withPerson(people, who, { invited: true });
    case 'stage.invite_accepted':
    case 'stage.invite_declined':
      return withPerson(people, who, { invited: false });
    case 'media.connected':
      return withPerson(people, who, { media_connected: true });
    case 'media.disconnected':
      return withPerson(people, who, { media_connected: false });
    default:
      return people;
  }
}

/** Present: waiting, admitted or joined. */
export const isPresent = (p: Participant) => p.state === 'waiting' || p.state === 'admitted' || p.state === 'joined';
