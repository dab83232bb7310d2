//! What an operation works on and yields, below the operations themselves: the [`Tx`] that
//! accumulates one operation's changes, the [`Change`] it finishes into (committed atomically by
//! the store), the [`MediaCommand`]s the media engine carries out after the commit, and the
//! [`Actor`] who asks. The operations ([`crate::ops`]) build on this; the ports take a `Change`
//! and `MediaCommand`s without depending on the operations.

use std::collections::BTreeMap;

use crate::error::{DomainError, ErrorCode};
use crate::event::{Audience, Event, EventKind, TrackSelector};
use crate::ids::{Identity, MeetingId, RecordingId, RoomName};
use crate::meeting::Meeting;
use crate::participant::{Participant, Role};
use crate::time::Timestamp;

/// What the media engine must do after a change is committed. Serialized (tagged by `kind`) when
/// it is sent to the node holding the room.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MediaCommand {
    /// Disconnect one person from the media room now.
    Disconnect { room: RoomName, identity: Identity },
    /// Apply a person's (new) role to their live connection.
    SetRole {
        room: RoomName,
        identity: Identity,
        role: Role,
    },
    /// Mute one of a person's tracks.
    Mute {
        room: RoomName,
        identity: Identity,
        track: TrackSelector,
        muted: bool,
    },
    /// Disconnect everyone and close the room.
    CloseRoom { room: RoomName },
    /// Record every track of the room from now on, and tell everyone in it.
    StartRecording {
        room: RoomName,
        meeting: MeetingId,
        recording: RecordingId,
    },
    /// Stop recording, finish the files and report them ([`crate::service::Meetings::finish_recording`]).
    StopRecording {
        room: RoomName,
        meeting: MeetingId,
        recording: RecordingId,
    },
}

impl MediaCommand {
    /// The media room the command is about.
    pub fn room(&self) -> &RoomName {
        match self {
            Self::Disconnect { room, .. }
            | Self::SetRole { room, .. }
            | Self::Mute { room, .. }
            | Self::CloseRoom { room }
            | Self::StartRecording { room, .. }
            | Self::StopRecording { room, .. } => room,
        }
    }
}

/// The outcome of an operation, to be committed atomically.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The meeting's `last_seq` the change was computed from (`None` for a new meeting).
    pub expected_seq: Option<u64>,
    pub meeting: Meeting,
    pub participants: Vec<Participant>,
    pub events: Vec<Event>,
    pub media: Vec<MediaCommand>,
    /// Everyone the store holds as waiting in this meeting is admitted to the current run, in
    /// one statement, before `participants` are written; the number is how many the operation
    /// saw waiting (any other number means the state moved since: a conflict).
    pub admit_waiting: Option<usize>,
}

/// Who is asking.
#[derive(Clone, Debug)]
pub enum Actor {
    /// A holder of an API key.
    Admin,
    /// A participant of this meeting, loaded from the store.
    Participant(Participant),
}

impl Actor {
    /// Admins, and hosts still in the meeting, may moderate.
    pub fn is_host(&self, now: Timestamp) -> bool {
        match self {
            Self::Admin => true,
            Self::Participant(p) => {
                p.role == Role::Host && p.state.is_present() && !p.is_banned_at(now)
            }
        }
    }

    pub(crate) fn require_host(&self, now: Timestamp) -> Result<(), DomainError> {
        if self.is_host(now) {
            Ok(())
        } else {
            Err(DomainError::new(
                ErrorCode::Forbidden,
                "only a host may do this",
            ))
        }
    }
}

/// Accumulates one operation's changes.
pub struct Tx {
    pub(crate) expected_seq: Option<u64>,
    pub(crate) meeting: Meeting,
    pub(crate) participants: BTreeMap<Identity, Participant>,
    pub(crate) events: Vec<Event>,
    pub(crate) media: Vec<MediaCommand>,
    pub(crate) admit_waiting: Option<usize>,
    pub(crate) now: Timestamp,
}

impl Tx {
    pub fn new(meeting: Meeting, now: Timestamp) -> Self {
        Self {
            expected_seq: Some(meeting.last_seq),
            meeting,
            participants: BTreeMap::new(),
            events: Vec::new(),
            media: Vec::new(),
            admit_waiting: None,
            now,
        }
    }

    pub fn meeting(&self) -> &Meeting {
        &self.meeting
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub(crate) fn emit(&mut self, audience: Audience, kind: EventKind) {
        self.meeting.last_seq += 1;
        self.meeting.updated_at = self.now;
        self.events.push(Event {
            meeting_id: self.meeting.id.clone(),
            seq: self.meeting.last_seq,
            at: self.now,
            instance_id: self.meeting.run.instance_id.clone(),
            audience,
            kind,
        });
    }

    pub(crate) fn put(&mut self, mut participant: Participant) -> Participant {
        participant.updated_at = self.now;
        self.participants
            .insert(participant.identity.clone(), participant.clone());
        participant
    }

    pub(crate) fn command(&mut self, command: MediaCommand) {
        self.media.push(command);
    }

    /// The change to commit, or `None` when nothing changed (no event).
    pub fn finish(self) -> Option<Change> {
        if self.events.is_empty() {
            return None;
        }
        Some(Change {
            expected_seq: self.expected_seq,
            meeting: self.meeting,
            participants: self.participants.into_values().collect(),
            events: self.events,
            media: self.media,
            admit_waiting: self.admit_waiting,
        })
    }
}
