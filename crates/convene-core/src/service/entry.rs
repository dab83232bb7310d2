//! Entry and admission: entering with a credential or as a trusted caller, the waiting room
//! (admit, deny, send back, the queue), joining and leaving, and whether a participant token or
//! a join link still stands.

use std::time::Duration;

use crate::access::{TokenRuns, check_token};
use crate::error::{DomainError, ErrorCode};
use crate::ids::{DisplayName, Identity, InstanceId, MeetingId};
use crate::meeting::Meeting;
use crate::ops::{self, Entry};
use crate::participant::{Participant, ParticipantState, Role};
use crate::time::Timestamp;

use super::{Caller, Meetings, Needs, Result, ServiceError};

/// How long past its expiry a used join-link nonce is kept (more than any token clock leeway).
const JOIN_LINK_SKEW: Duration = Duration::from_secs(300);

impl Meetings {
    /// Someone enters with a meeting id and a credential. Unknown meeting and wrong credential
    /// answer alike; failures are counted per meeting and per client address in the store (see
    /// [`Meetings::check_credential`]: the host credential has its own counter).
    pub async fn enter(
        &self,
        raw_meeting_id: &str,
        credential: &str,
        name: DisplayName,
        identity: Option<Identity>,
        client: &str,
    ) -> Result<(Meeting, Participant)> {
        let meeting = match MeetingId::parse(raw_meeting_id) {
            Ok(id) => self.committed_meeting(&id).await?,
            Err(_) => None,
        };
        let role = meeting
            .as_ref()
            .and_then(|m| m.credentials.role_for(credential));
        self.check_credential(&format!("credential:{raw_meeting_id}"), client, role)
            .await?;
        let (Some(meeting), Some(role)) = (meeting, role) else {
            return Err(DomainError::code(ErrorCode::MeetingAccessDenied).into());
        };
        let identity = identity.unwrap_or_else(|| Identity::generate(&mut self.rng()));
        let entry = Entry {
            identity,
            name,
            role,
            trusted: false,
        };
        self.enter_as(&meeting.id, entry).await
    }

    /// A trusted caller (API key, or a compatibility surface acting for its own authenticated
    /// user) places a person with a role, past the waiting room.
    pub async fn enter_trusted(
        &self,
        id: &MeetingId,
        identity: Identity,
        name: DisplayName,
        role: Role,
    ) -> Result<(Meeting, Participant)> {
        self.enter_as(
            id,
            Entry {
                identity,
                name,
                role,
                trusted: true,
            },
        )
        .await
    }

    /// Enters as [`Meetings::enter_trusted`] does, except that someone already in the meeting
    /// keeps the role they have (a host stays host; `role` is for a newcomer), and joins, in one
    /// change (one commit where entering then joining made two): for a surface that places people
    /// straight into the media room (seed 002). The same rules and events as the two in turn.
    pub async fn enter_and_join_trusted(
        &self,
        id: &MeetingId,
        identity: Identity,
        name: DisplayName,
        role: Role,
    ) -> Result<(Meeting, Participant)> {
        let entry = Entry {
            identity: identity.clone(),
            name,
            role,
            trusted: true,
        };
        let needs = Needs {
            target: Some(identity),
            waiting_unless_live: true,
            joined_count_if_capacity: true,
            ..Needs::default()
        };
        self.mutate(id, &Caller::Admin, needs, |tx, loaded| {
            let mut entry = entry.clone();
            if let Some(existing) = &loaded.target {
                entry.role = existing.role;
            }
            let entered = ops::enter(tx, loaded.target, entry)?;
            ops::join(
                tx,
                entered,
                loaded.joined_count,
                loaded.waiting,
                &mut self.rng(),
            )
        })
        .await
    }

    /// Like [`Meetings::enter_trusted`], but the person goes through the waiting room by policy
    /// (used by surfaces that authenticate the caller but not the person, e.g. guests).
    pub async fn enter_untrusted(
        &self,
        id: &MeetingId,
        identity: Identity,
        name: DisplayName,
        role: Role,
    ) -> Result<(Meeting, Participant)> {
        self.enter_as(
            id,
            Entry {
                identity,
                name,
                role,
                trusted: false,
            },
        )
        .await
    }

    async fn enter_as(&self, id: &MeetingId, entry: Entry) -> Result<(Meeting, Participant)> {
        let needs = Needs {
            target: Some(entry.identity.clone()),
            ..Needs::default()
        };
        self.mutate(id, &Caller::Admin, needs, |tx, loaded| {
            ops::enter(tx, loaded.target, entry.clone())
        })
        .await
    }

    /// A waiting guest's place in the queue (1 = next) where hosts admit one by one (`ask_host`,
    /// or `deny` for those who were waiting before the lock); `None` otherwise. The queue is in
    /// the order people entered the waiting room.
    pub async fn waiting_position(
        &self,
        meeting: &Meeting,
        participant: &Participant,
    ) -> Result<Option<u64>> {
        use crate::meeting::WaitingPolicy;
        let one_by_one = matches!(
            meeting.settings.policy,
            WaitingPolicy::AskHost | WaitingPolicy::Deny
        );
        if participant.state != ParticipantState::Waiting || !one_by_one {
            return Ok(None);
        }
        let ahead = self
            .store
            .count_waiting_before(&meeting.id, participant.updated_at, &participant.identity)
            .await?;
        Ok(Some(ahead + 1))
    }

    /// An admitted person asks for media access; a host's join starts the meeting.
    pub async fn join(&self, id: &MeetingId, caller: &Caller) -> Result<(Meeting, Participant)> {
        let needs = Needs {
            waiting_unless_live: true,
            joined_count_if_capacity: true,
            token_runs: TokenRuns::OrEarlierForHostOfEndedMeeting,
            ..Needs::default()
        };
        self.mutate(id, caller, needs, |tx, loaded| {
            let subject = loaded.subject.ok_or_else(|| {
                DomainError::new(ErrorCode::Forbidden, "only a participant can join")
            })?;
            ops::join(
                tx,
                subject,
                loaded.joined_count,
                loaded.waiting,
                &mut self.rng(),
            )
        })
        .await
    }

    pub async fn leave(&self, id: &MeetingId, caller: &Caller) -> Result<()> {
        self.mutate(id, caller, Needs::default(), |tx, loaded| {
            let subject = loaded.subject.ok_or_else(|| {
                DomainError::new(ErrorCode::Forbidden, "only a participant can leave")
            })?;
            ops::leave(tx, subject)
        })
        .await
        .map(|_| ())
    }

    pub async fn admit(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
    ) -> Result<Participant> {
        self.on_target(id, caller, target, ops::admit).await
    }

    pub async fn admit_all(&self, id: &MeetingId, caller: &Caller) -> Result<Meeting> {
        let needs = Needs {
            waiting: true,
            ..Needs::default()
        };
        let (meeting, ()) = self
            .mutate(id, caller, needs, |tx, loaded| {
                ops::admit_all(tx, &loaded.actor, loaded.waiting)
            })
            .await?;
        Ok(meeting)
    }

    pub async fn deny(&self, id: &MeetingId, caller: &Caller, target: &Identity) -> Result<()> {
        self.on_target(id, caller, target, ops::deny).await
    }

    pub async fn send_back(
        &self,
        id: &MeetingId,
        caller: &Caller,
        target: &Identity,
    ) -> Result<()> {
        self.on_target(id, caller, target, ops::send_back).await
    }

    /// Checks that a participant token still stands: the person exists, the token's run is the
    /// meeting's current run, and its epoch is current (remove, deny and ban bump it).
    pub async fn check_participant_token(
        &self,
        id: &MeetingId,
        identity: &Identity,
        instance: &InstanceId,
        epoch: u32,
    ) -> Result<(Meeting, Participant)> {
        let meeting = self
            .committed_meeting(id)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
        let participant = self
            .committed_person(id, identity)
            .await?
            .ok_or_else(|| DomainError::code(ErrorCode::InvalidToken))?;
        check_token(&meeting, &participant, instance, epoch, TokenRuns::Current)?;
        if participant.is_banned_at(self.now()) {
            return Err(DomainError::code(ErrorCode::Banned).into());
        }
        Ok((meeting, participant))
    }

    /// Redeems a one-time join link (the BigBlueButton surface's credential), whose signature
    /// and expiry the caller has verified: the link must still stand like a participant token
    /// (same run, same epoch, not banned), and its `nonce` is marked used in the store, so a
    /// second redemption fails with `join_link_used` on every node, concurrent or after a restart.
    /// An admitted person is joined at once (capacity applies); a waiting one stays waiting.
    pub async fn redeem_join_link(
        &self,
        id: &MeetingId,
        identity: &Identity,
        instance: &InstanceId,
        epoch: u32,
        nonce: &str,
        expires_at: Timestamp,
    ) -> Result<(Meeting, Participant)> {
        if nonce.is_empty() {
            return Err(ServiceError::domain(
                ErrorCode::InvalidToken,
                "the join link has no nonce",
            ));
        }
        let (meeting, participant) = self
            .check_participant_token(id, identity, instance, epoch)
            .await?;
        // Used nonces are kept until their link has expired (allowing for clock skew).
        let forget_before = Timestamp::from_millis(
            self.now()
                .as_millis()
                .saturating_sub(JOIN_LINK_SKEW.as_millis() as i64),
        );
        if !self
            .store
            .use_nonce(nonce, expires_at, forget_before)
            .await?
        {
            return Err(DomainError::code(ErrorCode::JoinLinkUsed).into());
        }
        if participant.state == ParticipantState::Waiting {
            return Ok((meeting, participant));
        }
        let caller = Caller::Participant {
            identity: identity.clone(),
            instance: instance.clone(),
            epoch,
        };
        self.join(id, &caller).await
    }
}
