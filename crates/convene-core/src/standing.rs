//! A participant's standing as the event log tells it: the rule by which whoever follows the log
//! (the realtime hub, each event stream) keeps a viewer's role and state without reading the
//! store. It mirrors what the operations in [`crate::ops`] store, event by event, and is tested
//! against them (`standing_tests.rs`), so the two cannot drift apart.

use crate::event::{EventKind, ViewerClass};
use crate::ids::{Identity, InstanceId};
use crate::participant::{Participant, ParticipantState, Role};

/// Where a viewer stands in the meeting: what decides which events it may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// An API key holder: sees what hosts see; no event moves it.
    Admin,
    /// A participant: its role and state, as stored.
    Participant { role: Role, state: ParticipantState },
}

/// What applying an event to a [`Standing`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Unchanged,
    Changed,
    /// The participant was denied, sent back, removed or banned: the operation bumped its epoch,
    /// so the tokens it holds no longer work. (The standing is moved as the operation stored it.)
    Revoked,
    /// The meeting started another run than the one the viewer's token is for: that token no
    /// longer works. (The standing is not moved.)
    NewRun,
}

/// Whose standing an event may move (see [`Standing::apply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movers<'a> {
    /// Nobody's.
    Nobody,
    /// One participant's.
    One(&'a Identity),
    /// Those listed (a bulk admission).
    Listed(&'a [Identity]),
    /// Every participant's (the meeting started or ended).
    Everyone,
}

impl Movers<'_> {
    /// Whether `identity`'s standing may move.
    pub fn include(self, identity: &Identity) -> bool {
        match self {
            Self::Nobody => false,
            Self::One(who) => who == identity,
            Self::Listed(listed) => listed.contains(identity),
            Self::Everyone => true,
        }
    }
}

impl Standing {
    /// A stored participant's standing.
    pub fn of(participant: &Participant) -> Self {
        Self::Participant {
            role: participant.role,
            state: participant.state,
        }
    }

    /// The viewer class for [`crate::event::Audience::admits`] (the same rule as the paged
    /// events endpoint).
    pub fn class(self) -> ViewerClass {
        match self {
            Self::Admin => ViewerClass::Host,
            Self::Participant { role, state } if role == Role::Host && state.is_present() => {
                ViewerClass::Host
            }
            Self::Participant { state, .. } if state.is_member() => ViewerClass::Member,
            Self::Participant { .. } => ViewerClass::Waiting,
        }
    }

    /// The participants whose standing an event may move; every other is left as it is.
    pub fn moved_by(kind: &EventKind) -> Movers<'_> {
        match kind {
            EventKind::ParticipantEntered { identity, .. }
            | EventKind::ParticipantAdmitted { identity, .. }
            | EventKind::ParticipantJoined { identity, .. }
            | EventKind::ParticipantLeft { identity }
            | EventKind::ParticipantRoleChanged { identity, .. }
            | EventKind::ParticipantDenied { identity }
            | EventKind::ParticipantSentBack { identity }
            | EventKind::ParticipantRemoved { identity }
            | EventKind::ParticipantBanned { identity, .. }
            | EventKind::ParticipantUnbanned { identity } => Movers::One(identity),
            EventKind::ParticipantsAdmitted { identities, .. } => Movers::Listed(identities),
            EventKind::MeetingStarted { .. } | EventKind::MeetingEnded { .. } => Movers::Everyone,
            _ => Movers::Nobody,
        }
    }

    /// Applies one event to a participant's standing (`me` = its identity, `run` = the run its
    /// token is for, if any). Every change sets fields to absolute values, so applying an event
    /// twice, or applying events already reflected in a stored state, gives the right final
    /// standing.
    pub fn apply(
        &mut self,
        me: Option<&Identity>,
        run: Option<&InstanceId>,
        kind: &EventKind,
    ) -> Step {
        self.apply_with(me, run, kind, |me| kind.admits_in_bulk(me))
    }

    /// [`Standing::apply`] for a caller that already knows whether `me` is among the people a
    /// bulk admission lists (it found this participant through that list), so the list is not
    /// searched again. `listed` is ignored for every other event.
    pub fn apply_listed(
        &mut self,
        me: Option<&Identity>,
        run: Option<&InstanceId>,
        kind: &EventKind,
        listed: bool,
    ) -> Step {
        self.apply_with(me, run, kind, |_| listed)
    }

    fn apply_with(
        &mut self,
        me: Option<&Identity>,
        run: Option<&InstanceId>,
        kind: &EventKind,
        listed: impl FnOnce(&Identity) -> bool,
    ) -> Step {
        let Self::Participant { role, state } = self else {
            return Step::Unchanged;
        };
        let before = (*role, *state);
        let mine = |who: &Identity| me == Some(who);
        match kind {
            EventKind::MeetingStarted { instance_id, .. }
                if run.is_some_and(|r| r != instance_id) =>
            {
                return Step::NewRun;
            }
            // `end_meeting`: everyone present leaves.
            EventKind::MeetingEnded { .. } if state.is_present() => *state = ParticipantState::Left,
            // `enter`: in the waiting room first, admitted by the event after when let in.
            EventKind::ParticipantEntered {
                identity,
                role: new_role,
                ..
            } if mine(identity) => {
                *role = *new_role;
                *state = ParticipantState::Waiting;
            }
            EventKind::ParticipantAdmitted { identity, .. } if mine(identity) => {
                *state = ParticipantState::Admitted
            }
            EventKind::ParticipantsAdmitted { .. } if me.is_some_and(listed) => {
                *state = ParticipantState::Admitted
            }
            EventKind::ParticipantJoined {
                identity,
                role: new_role,
                ..
            } if mine(identity) => {
                *role = *new_role;
                *state = ParticipantState::Joined;
            }
            EventKind::ParticipantLeft { identity } if mine(identity) => {
                *state = ParticipantState::Left
            }
            EventKind::ParticipantRoleChanged {
                identity,
                role: new_role,
            } if mine(identity) => *role = *new_role,
            // `unban`: a banned person is out, free to enter again.
            EventKind::ParticipantUnbanned { identity }
                if mine(identity) && *state == ParticipantState::Banned =>
            {
                *state = ParticipantState::Left
            }
            EventKind::ParticipantDenied { identity }
            | EventKind::ParticipantRemoved { identity }
                if mine(identity) =>
            {
                *state = ParticipantState::Removed;
                return Step::Revoked;
            }
            EventKind::ParticipantSentBack { identity } if mine(identity) => {
                *state = ParticipantState::Waiting;
                return Step::Revoked;
            }
            EventKind::ParticipantBanned { identity, .. } if mine(identity) => {
                *state = ParticipantState::Banned;
                return Step::Revoked;
            }
            _ => {}
        }
        if (*role, *state) == before {
            Step::Unchanged
        } else {
            Step::Changed
        }
    }
}

#[cfg(test)]
#[path = "standing_tests.rs"]
mod tests;
