//! The meeting's ordered event log: what happened, to whom it may be shown, and its sequence number.

use serde::{Deserialize, Serialize};

use crate::ids::{Identity, InstanceId, MeetingId, RecordingId};
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
    /// Hosts, and the people a [`EventKind::ParticipantsAdmitted`] lets in (the list is the
    /// event's own, so it is stored once). Use [`Event::visible_to`], which reads it.
    Admitted,
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
            // Without the event, only the hosts are known to be in it.
            Self::Admitted => class == ViewerClass::Host,
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
    /// Everyone waiting let in at once (the meeting started, the policy opened, or a host's
    /// "admit all"): one event however many people, sorted by identity. A person in the list
    /// sees it as their own `participant.admitted` ([`Event::view_for`]).
    #[serde(rename = "participants.admitted")]
    ParticipantsAdmitted {
        identities: Vec<Identity>,
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
    /// A chat message: to the members (`to` absent), or to one person. In a waiting-room
    /// conversation (`waiting_room`), between a waiting guest and the hosts: `to` is absent
    /// when the guest writes (to every host), the guest when a host does.
    #[serde(rename = "chat.message")]
    ChatMessage {
        from: Identity,
        text: String,
        to: Option<Identity>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        waiting_room: bool,
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
    /// Recording started: everyone is told (consent). `by` is the host who asked, absent for an
    /// admin or the meeting's automatic recording.
    #[serde(rename = "recording.started")]
    RecordingStarted {
        recording_id: RecordingId,
        by: Option<Identity>,
    },
    /// Recording stopped: nothing more is written; its files are being finished.
    #[serde(rename = "recording.stopped")]
    RecordingStopped {
        recording_id: RecordingId,
        reason: StopReason,
    },
    /// Every file of the recording is written and stored.
    #[serde(rename = "recording.ready")]
    RecordingReady {
        recording_id: RecordingId,
        files: Vec<RecordingFile>,
        duration_ms: u64,
        bytes: u64,
    },
    /// The recording could not be finished as asked (a write error, the server stopped, no
    /// composite). `files` are those kept, each playable, possibly none.
    #[serde(rename = "recording.failed")]
    RecordingFailed {
        recording_id: RecordingId,
        reason: String,
        files: Vec<RecordingFile>,
    },
    #[serde(rename = "recording.deleted")]
    RecordingDeleted { recording_id: RecordingId },
}

/// Why a recording stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A host or an admin stopped it.
    Requested,
    /// The meeting ended.
    MeetingEnded,
    /// Writing failed (a full disk, an error of the store).
    Failed,
    /// The server stopped while recording (found at the next start).
    ServerStopped,
}

/// What a recording file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingFileKind {
    /// One published audio track, as it arrived (Opus in WebM).
    Audio,
    /// One published video track, as it arrived (VP8 in WebM, H.264 in Matroska).
    Video,
    /// Everyone in one MP4 (H.264 and AAC), laid out by who was on stage when.
    Composite,
}

/// One stored file of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingFile {
    /// The file's name, unique in its recording (the download path's last part).
    pub name: String,
    pub kind: RecordingFileKind,
    /// Whose track (absent for the composite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_sid: Option<String>,
    /// `opus`, `vp8`, `h264`, or `mp4` for the composite.
    pub codec: String,
    pub bytes: u64,
    /// When the file's first frame was, from the recording's start.
    pub start_ms: u64,
    pub duration_ms: u64,
    /// Where the file is when convene does not keep it (an external LiveKit's egress storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
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

impl EventKind {
    /// Whether this event lets `identity` in at once with others.
    pub fn admits_in_bulk(&self, identity: &Identity) -> bool {
        match self {
            Self::ParticipantsAdmitted { identities, .. } => {
                identities.binary_search(identity).is_ok()
            }
            _ => false,
        }
    }
}

impl Event {
    /// Whether a viewer of this class and identity may see the event.
    pub fn visible_to(&self, class: ViewerClass, identity: Option<&Identity>) -> bool {
        match self.audience {
            Audience::Admitted => {
                class == ViewerClass::Host
                    || identity.is_some_and(|me| self.kind.admits_in_bulk(me))
            }
            ref audience => audience.admits(class, identity),
        }
    }

    /// Whether [`Event::view_for`] gives this viewer its own form of the event.
    pub fn has_own_view(&self, class: ViewerClass, identity: Option<&Identity>) -> bool {
        class != ViewerClass::Host && identity.is_some_and(|me| self.kind.admits_in_bulk(me))
    }

    /// The event as a viewer who is not a host sees it, when that differs: a person let in with
    /// others sees only their own `participant.admitted`, not who else came in.
    pub fn view_for(&self, class: ViewerClass, identity: Option<&Identity>) -> Option<EventKind> {
        match (&self.kind, identity) {
            (
                EventKind::ParticipantsAdmitted {
                    room_name, status, ..
                },
                Some(me),
            ) if self.has_own_view(class, identity) => Some(EventKind::ParticipantAdmitted {
                identity: me.clone(),
                room_name: room_name.clone(),
                status: *status,
            }),
            _ => None,
        }
    }

    /// The event a viewer who is not a host receives in its place, when [`Event::view_for`]
    /// differs: same place in the log, the viewer's own content, about the viewer alone.
    pub fn seen_by(&self, class: ViewerClass, identity: Option<&Identity>) -> Option<Event> {
        let kind = self.view_for(class, identity)?;
        let identity = identity?.clone();
        Some(Event {
            meeting_id: self.meeting_id.clone(),
            seq: self.seq,
            at: self.at,
            instance_id: self.instance_id.clone(),
            audience: Audience::Subject { identity },
            kind,
        })
    }
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
    fn a_bulk_admission_shows_each_guest_only_its_own_admission() {
        let (alice, bob, carol) = (id("alice"), id("bob"), id("carol"));
        let event = Event {
            meeting_id: MeetingId::parse("1234567890").unwrap(),
            seq: 7,
            at: Timestamp::from_millis(1),
            instance_id: InstanceId::from_stored("run-1".into()),
            audience: Audience::Admitted,
            kind: EventKind::ParticipantsAdmitted {
                identities: vec![alice.clone(), bob.clone()],
                room_name: "room".into(),
                status: MeetingStatus::Live,
            },
        };
        assert!(event.visible_to(ViewerClass::Waiting, Some(&alice)));
        assert!(event.visible_to(ViewerClass::Member, Some(&bob)));
        assert!(!event.visible_to(ViewerClass::Waiting, Some(&carol)));
        assert!(!event.visible_to(ViewerClass::Member, Some(&carol)));
        assert!(!event.visible_to(ViewerClass::Waiting, None));
        assert!(event.visible_to(ViewerClass::Host, Some(&carol)));
        assert_eq!(
            event.view_for(ViewerClass::Waiting, Some(&bob)),
            Some(EventKind::ParticipantAdmitted {
                identity: bob.clone(),
                room_name: "room".into(),
                status: MeetingStatus::Live,
            })
        );
        assert_eq!(event.view_for(ViewerClass::Host, Some(&alice)), None);
        assert_eq!(event.view_for(ViewerClass::Waiting, Some(&carol)), None);
    }

    #[test]
    fn event_kinds_serialize_with_dotted_types() {
        let kind = EventKind::HandRaised { identity: id("v1") };
        expect_test::expect![[r#"{"type":"stage.hand_raised","data":{"identity":"v1"}}"#]]
            .assert_eq(&serde_json::to_string(&kind).unwrap());
        assert_eq!(kind.type_name(), "stage.hand_raised");
    }
}
