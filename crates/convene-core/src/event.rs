//! The meeting's ordered event log: what happened, to whom it may be shown, and its sequence number.

use serde::{Deserialize, Serialize};

use crate::ids::{Identity, InstanceId, MeetingId};
use crate::meeting::{MeetingStatus, WaitingPolicy};
use crate::participant::{ParticipantState, Role};
use crate::time::Timestamp;

/// Who may see an event. Hosts (and admins) see every event except direct chat between two others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Audience {
    /// Everyone, including people still in the waiting room.
    Everyone,
    /// Admitted and joined people (the stage, the roster, the chat).
    Members,
    /// Hosts only.
    Hosts,
    /// The person it is about, and hosts.
    Subject { identity: Identity },
    /// Members, and the person it is about even when not a member (e.g. removed).
    MembersAndSubject { identity: Identity },
    /// Two people only (direct chat).
    Pair { from: Identity, to: Identity },
}

/// What a viewer of the log is, for [`Audience::admits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewerClass {
    Host,
    Member,
    Waiting,
}

impl Audience {
    /// Whether a viewer of this class and identity may see the event.
    pub fn admits(&self, class: ViewerClass, identity: Option<&Identity>) -> bool {
        let is = |who: &Identity| identity == Some(who);
        match self {
            Self::Everyone => true,
            Self::Members => matches!(class, ViewerClass::Host | ViewerClass::Member),
            Self::Hosts => class == ViewerClass::Host,
            Self::Subject { identity } => class == ViewerClass::Host || is(identity),
            Self::MembersAndSubject { identity } => {
                matches!(class, ViewerClass::Host | ViewerClass::Member) || is(identity)
            }
            Self::Pair { from, to } => is(from) || is(to),
        }
    }
}

/// Which of a participant's tracks a mute is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSelector {
    Audio,
    Video,
    /// One track by its media sid (`TR_...`).
    Track(String),
}

/// Every state change in a meeting. Serialized as `{"type": "...", "data": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventKind {
    #[serde(rename = "meeting.created")]
    MeetingCreated {
        name: String,
        mode: crate::meeting::Mode,
        policy: WaitingPolicy,
    },
    #[serde(rename = "meeting.updated")]
    MeetingUpdated {
        name: String,
        policy: WaitingPolicy,
        capacity: Option<u32>,
    },
    #[serde(rename = "meeting.started")]
    MeetingStarted {
        instance_id: InstanceId,
        run: u32,
        room_name: String,
    },
    #[serde(rename = "meeting.ended")]
    MeetingEnded { instance_id: InstanceId, run: u32 },
    #[serde(rename = "participant.entered")]
    ParticipantEntered {
        identity: Identity,
        name: String,
        role: Role,
        state: ParticipantState,
    },
    #[serde(rename = "participant.admitted")]
    ParticipantAdmitted {
        identity: Identity,
        room_name: String,
        status: MeetingStatus,
    },
    #[serde(rename = "participant.denied")]
    ParticipantDenied { identity: Identity },
    #[serde(rename = "participant.sent_back")]
    ParticipantSentBack { identity: Identity },
    #[serde(rename = "participant.joined")]
    ParticipantJoined {
        identity: Identity,
        name: String,
        role: Role,
    },
    #[serde(rename = "participant.left")]
    ParticipantLeft { identity: Identity },
    #[serde(rename = "participant.removed")]
    ParticipantRemoved { identity: Identity },
    #[serde(rename = "participant.banned")]
    ParticipantBanned {
        identity: Identity,
        until: Option<Timestamp>,
    },
    #[serde(rename = "participant.unbanned")]
    ParticipantUnbanned { identity: Identity },
    #[serde(rename = "participant.role_changed")]
    ParticipantRoleChanged { identity: Identity, role: Role },
    #[serde(rename = "participant.muted")]
    ParticipantMuted {
        identity: Identity,
        track: TrackSelector,
        muted: bool,
    },
    #[serde(rename = "stage.hand_raised")]
    HandRaised { identity: Identity },
    #[serde(rename = "stage.hand_lowered")]
    HandLowered { identity: Identity },
    #[serde(rename = "stage.invited")]
    SpeakerInvited { identity: Identity },
    #[serde(rename = "stage.invite_accepted")]
    InviteAccepted { identity: Identity },
    #[serde(rename = "stage.invite_declined")]
    InviteDeclined { identity: Identity },
    #[serde(rename = "chat.message")]
    ChatMessage {
        from: Identity,
        text: String,
        to: Option<Identity>,
    },
    #[serde(rename = "media.connected")]
    MediaConnected { identity: Identity },
    #[serde(rename = "media.disconnected")]
    MediaDisconnected { identity: Identity },
    #[serde(rename = "media.track_published")]
    TrackPublished {
        identity: Identity,
        track_sid: String,
        kind: String,
    },
    #[serde(rename = "media.track_unpublished")]
    TrackUnpublished {
        identity: Identity,
        track_sid: String,
    },
}

impl EventKind {
    /// The `type` string, e.g. `participant.admitted`.
    pub fn type_name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One entry of a meeting's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub meeting_id: MeetingId,
    /// 1, 2, 3, ... per meeting, without gaps.
    pub seq: u64,
    pub at: Timestamp,
    /// The run the event happened in.
    pub instance_id: InstanceId,
    pub audience: Audience,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn audiences_filter_by_class_and_identity() {
        let alice = id("alice");
        let bob = id("bob");
        let subject = Audience::Subject {
            identity: alice.clone(),
        };
        assert!(subject.admits(ViewerClass::Waiting, Some(&alice)));
        assert!(!subject.admits(ViewerClass::Waiting, Some(&bob)));
        assert!(!subject.admits(ViewerClass::Member, Some(&bob)));
        assert!(subject.admits(ViewerClass::Host, Some(&bob)));
        assert!(!Audience::Members.admits(ViewerClass::Waiting, Some(&alice)));
        assert!(Audience::Members.admits(ViewerClass::Member, Some(&alice)));
        assert!(Audience::Everyone.admits(ViewerClass::Waiting, None));
        let pair = Audience::Pair {
            from: alice.clone(),
            to: bob.clone(),
        };
        assert!(pair.admits(ViewerClass::Member, Some(&bob)));
        assert!(!pair.admits(ViewerClass::Host, Some(&id("carol"))));
    }

    #[test]
    fn event_kinds_serialize_with_dotted_types() {
        let kind = EventKind::HandRaised { identity: id("v1") };
        expect_test::expect![[r#"{"type":"stage.hand_raised","data":{"identity":"v1"}}"#]]
            .assert_eq(&serde_json::to_string(&kind).unwrap());
        assert_eq!(kind.type_name(), "stage.hand_raised");
    }
}
