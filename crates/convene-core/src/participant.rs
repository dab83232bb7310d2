//! Participants: the person in a meeting, with a role and a state that persist across tokens and runs.

use serde::{Deserialize, Serialize};

use crate::ids::{DisplayName, Identity, InstanceId, MeetingId};
use crate::time::Timestamp;

/// What a person may do in a meeting. Belongs to the person, not to a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Publishes, subscribes, moderates.
    Host,
    /// Publishes and subscribes.
    Speaker,
    /// Subscribes only.
    Viewer,
}

impl Role {
    pub fn can_publish(self) -> bool {
        matches!(self, Self::Host | Self::Speaker)
    }
}

/// Where a person is in the meeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    Waiting,
    Admitted,
    Joined,
    Left,
    Removed,
    Banned,
}

impl ParticipantState {
    pub const ALL: [ParticipantState; 6] = [
        Self::Waiting,
        Self::Admitted,
        Self::Joined,
        Self::Left,
        Self::Removed,
        Self::Banned,
    ];

    /// In the meeting's current run (waiting, admitted or joined).
    pub fn is_present(self) -> bool {
        matches!(self, Self::Waiting | Self::Admitted | Self::Joined)
    }

    /// Admitted or joined: sees the stage and the chat.
    pub fn is_member(self) -> bool {
        matches!(self, Self::Admitted | Self::Joined)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Admitted => "admitted",
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Removed => "removed",
            Self::Banned => "banned",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A person in a meeting, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub meeting_id: MeetingId,
    pub identity: Identity,
    pub name: DisplayName,
    pub role: Role,
    pub state: ParticipantState,
    pub hand_raised: bool,
    /// Invited to speak by a host and not yet answered.
    pub invited: bool,
    /// Connected to the media room right now (from the media engine).
    pub media_connected: bool,
    /// The run in which the person was last admitted; joining needs it to be the current run.
    pub admitted_in: Option<InstanceId>,
    /// `Some` while banned for a limited time; a ban without end has `None` here and state `Banned`.
    pub banned_until: Option<Timestamp>,
    /// Bumped by remove, deny and ban: tokens carry it, and older ones stop working.
    pub epoch: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Participant {
    /// Someone new to the meeting, as they first arrive: waiting, in no run yet, epoch 0.
    pub fn arriving(
        meeting_id: MeetingId,
        identity: Identity,
        name: DisplayName,
        role: Role,
        now: Timestamp,
    ) -> Self {
        Self {
            meeting_id,
            identity,
            name,
            role,
            state: ParticipantState::Waiting,
            hand_raised: false,
            invited: false,
            media_connected: false,
            admitted_in: None,
            banned_until: None,
            epoch: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// Banned now (a timed ban ends by itself).
    pub fn is_banned_at(&self, now: Timestamp) -> bool {
        self.state == ParticipantState::Banned && self.banned_until.is_none_or(|until| until > now)
    }
}
