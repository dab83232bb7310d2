//! The stage (hands, invitations to speak and their answers) and moderation (roles, remove, ban,
//! unban, mute).

use std::time::Duration;

use crate::change::Tx;
use crate::error::{DomainError, ErrorCode};
use crate::event::TrackSelector;
use crate::ids::{Identity, MeetingId};
use crate::ops::{self, Actor};
use crate::participant::{Participant, Role};

use super::{Caller, Meetings, Needs, Result};

impl Meetings {
    /// The caller raises or lowers their own hand; an admin may do it for `target`.
    pub async fn set_hand(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: Option<&Identity>,
        raised: bool,
    ) -> Result<()> {
        self.on_own_or_target(id, caller, target, |tx, who| ops::set_hand(tx, who, raised))
            .await
    }

    pub async fn invite(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::invite).await
    }

    /// The caller answers their own invitation; an admin may answer for `target`.
    pub async fn answer_invite(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: Option<&Identity>,
        accept: bool,
    ) -> Result<()> {
        self.on_own_or_target(id, caller, target, |tx, who| {
            ops::answer_invite(tx, who, accept)
        })
        .await
    }

    /// Runs `op` on the caller themself, or, for an admin, on `target`.
    async fn on_own_or_target(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: Option<&Identity>,
        op: impl Fn(&mut Tx, Participant) -> std::result::Result<(), DomainError>,
    ) -> Result<()> {
        let needs = Needs {
            target: target.cloned(),
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let who = match (&loaded.actor, loaded.target, loaded.subject) {
                (Actor::Admin, Some(t), _) => t,
                (_, _, Some(s)) => s,
                _ => return Err(DomainError::code(ErrorCode::ParticipantNotFound)),
            };
            op(tx, who)
        })
        .await
        .map(|_| ())
    }

    pub async fn set_role(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        role: Role,
    ) -> Result<Participant> {
        self.on_target(id, caller, target, move |tx, actor, t| {
            let identity = t.identity.clone();
            ops::set_role(tx, actor, t, role)?;
            Ok(identity)
        })
        .await?;
        self.participant(id, target).await
    }

    pub async fn remove(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::remove).await
    }

    pub async fn ban(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        duration: Option<Duration>,
    ) -> Result<()> {
        self.on_target(id, caller, target, move |tx, actor, t| {
            ops::ban(tx, actor, t, duration)
        })
        .await
    }

    pub async fn unban(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::unban).await
    }

    pub async fn mute(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
        track: TrackSelector,
        muted: bool,
    ) -> Result<()> {
        self.on_target(id, caller, target, move |tx, actor, t| {
            ops::mute(tx, actor, &t, track.clone(), muted)
        })
        .await
    }
}
