//! Recordings as the event log tells them: each recording's state, files and index (who was
//! there, joined, left, changed role, was muted or published a track, and when, counted from the
//! recording's start). Pure: a fold over a meeting's events in order, so every node, the API and
//! the composite's layout read the same story from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, RecordingFile, StopReason, TrackSelector};
use crate::ids::{Identity, RecordingId};
use crate::participant::Role;
use crate::time::Timestamp;

/// Where a recording is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    /// Tracks are being written.
    Recording,
    /// Stopped; the files are being finished, composed and stored.
    Processing,
    /// Every file is stored and may be downloaded.
    Ready,
    /// It could not be finished as asked; the files kept (if any) are playable.
    Failed,
}

/// What happened to a person during a recording, for its index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum IndexChange {
    /// In the meeting when the recording started.
    Present {
        name: String,
        role: Role,
    },
    Joined {
        name: String,
        role: Role,
    },
    Left,
    RoleChanged {
        role: Role,
    },
    Muted {
        track: TrackSelector,
        muted: bool,
    },
    TrackPublished {
        track_sid: String,
        kind: String,
    },
    TrackUnpublished {
        track_sid: String,
    },
    HandRaised,
    HandLowered,
}

/// One line of a recording's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Milliseconds from the recording's start.
    pub offset_ms: u64,
    pub identity: Identity,
    #[serde(flatten)]
    pub change: IndexChange,
}

/// A person on screen (present, and not a viewer) from `from_ms` to `to_ms` of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub identity: Identity,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// One recording of a meeting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    pub id: RecordingId,
    pub state: RecordingState,
    pub started_at: Timestamp,
    /// The host who started it; absent for an admin or an automatic recording.
    pub started_by: Option<Identity>,
    pub stopped_at: Option<Timestamp>,
    pub stop_reason: Option<StopReason>,
    /// The stored files (empty until it is ready or failed).
    pub files: Vec<RecordingFile>,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    pub index: Vec<IndexEntry>,
}

impl Recording {
    /// The file called `name`, if the recording has it.
    pub fn file(&self, name: &str) -> Option<&RecordingFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Who is on screen when, from the index, up to `end_ms` (a person present and not a
    /// viewer; a span per stay).
    pub fn spans(&self, end_ms: u64) -> Vec<Span> {
        let mut open: BTreeMap<&Identity, (u64, Role)> = BTreeMap::new();
        let mut spans = Vec::new();
        let mut close = |identity: &Identity, from: u64, role: Role, to: u64| {
            if role != Role::Viewer && to > from {
                spans.push(Span {
                    identity: identity.clone(),
                    from_ms: from,
                    to_ms: to,
                });
            }
        };
        for entry in &self.index {
            let at = entry.offset_ms.min(end_ms);
            match &entry.change {
                IndexChange::Present { role, .. } | IndexChange::Joined { role, .. } => {
                    if let Some((from, old)) = open.insert(&entry.identity, (at, *role)) {
                        close(&entry.identity, from, old, at);
                    }
                }
                IndexChange::Left => {
                    if let Some((from, role)) = open.remove(&entry.identity) {
                        close(&entry.identity, from, role, at);
                    }
                }
                IndexChange::RoleChanged { role } => {
                    if let Some((from, old)) = open.insert(&entry.identity, (at, *role)) {
                        close(&entry.identity, from, old, at);
                    }
                }
                _ => {}
            }
        }
        for (identity, (from, role)) in open {
            close(identity, from, role, end_ms);
        }
        spans.sort_by(|a, b| (a.from_ms, &a.identity).cmp(&(b.from_ms, &b.identity)));
        spans
    }
}

/// Every recording of a meeting that is not deleted, oldest first, from its events in order.
pub fn recordings(events: &[Event]) -> Vec<Recording> {
    let mut present: BTreeMap<Identity, (String, Role)> = BTreeMap::new();
    let mut all: Vec<Recording> = Vec::new();
    let mut open: Option<usize> = None;
    for event in events {
        let offset = |recording: &Recording| {
            event
                .at
                .as_millis()
                .saturating_sub(recording.started_at.as_millis())
                .max(0) as u64
        };
        let note = |identity: &Identity, change: IndexChange, all: &mut Vec<Recording>| {
            if let Some(recording) = open.and_then(|i| all.get_mut(i)) {
                let offset_ms = offset(recording);
                recording.index.push(IndexEntry {
                    offset_ms,
                    identity: identity.clone(),
                    change,
                });
            }
        };
        match &event.kind {
            EventKind::ParticipantJoined {
                identity,
                name,
                role,
            } => {
                present.insert(identity.clone(), (name.clone(), *role));
                let change = IndexChange::Joined {
                    name: name.clone(),
                    role: *role,
                };
                note(identity, change, &mut all);
            }
            EventKind::ParticipantLeft { identity }
            | EventKind::ParticipantRemoved { identity }
            | EventKind::ParticipantBanned { identity, .. }
            | EventKind::ParticipantSentBack { identity }
                if present.remove(identity).is_some() =>
            {
                note(identity, IndexChange::Left, &mut all);
            }
            EventKind::MeetingEnded { .. } => {
                let gone: Vec<Identity> = std::mem::take(&mut present).into_keys().collect();
                for identity in gone {
                    note(&identity, IndexChange::Left, &mut all);
                }
            }
            EventKind::ParticipantRoleChanged { identity, role } => {
                if let Some(entry) = present.get_mut(identity) {
                    entry.1 = *role;
                }
                note(identity, IndexChange::RoleChanged { role: *role }, &mut all);
            }
            EventKind::ParticipantMuted {
                identity,
                track,
                muted,
            } => {
                let change = IndexChange::Muted {
                    track: track.clone(),
                    muted: *muted,
                };
                note(identity, change, &mut all);
            }
            EventKind::TrackPublished {
                identity,
                track_sid,
                kind,
            } => {
                let change = IndexChange::TrackPublished {
                    track_sid: track_sid.clone(),
                    kind: kind.clone(),
                };
                note(identity, change, &mut all);
            }
            EventKind::TrackUnpublished {
                identity,
                track_sid,
            } => {
                let change = IndexChange::TrackUnpublished {
                    track_sid: track_sid.clone(),
                };
                note(identity, change, &mut all);
            }
            EventKind::HandRaised { identity } => note(identity, IndexChange::HandRaised, &mut all),
            EventKind::HandLowered { identity } => {
                note(identity, IndexChange::HandLowered, &mut all)
            }
            EventKind::RecordingStarted { recording_id, by } => {
                let index = present
                    .iter()
                    .map(|(identity, (name, role))| IndexEntry {
                        offset_ms: 0,
                        identity: identity.clone(),
                        change: IndexChange::Present {
                            name: name.clone(),
                            role: *role,
                        },
                    })
                    .collect();
                all.push(Recording {
                    id: recording_id.clone(),
                    state: RecordingState::Recording,
                    started_at: event.at,
                    started_by: by.clone(),
                    stopped_at: None,
                    stop_reason: None,
                    files: Vec::new(),
                    duration_ms: 0,
                    bytes: 0,
                    error: None,
                    index,
                });
                open = Some(all.len() - 1);
            }
            EventKind::RecordingStopped {
                recording_id,
                reason,
            } => {
                if let Some(recording) = all.iter_mut().find(|r| r.id == *recording_id) {
                    recording.state = RecordingState::Processing;
                    recording.stopped_at = Some(event.at);
                    recording.stop_reason = Some(*reason);
                    recording.duration_ms = offset(recording);
                }
                if open.is_some_and(|i| all[i].id == *recording_id) {
                    open = None;
                }
            }
            EventKind::RecordingReady {
                recording_id,
                files,
                duration_ms,
                bytes,
            } => {
                if let Some(recording) = all.iter_mut().find(|r| r.id == *recording_id) {
                    recording.state = RecordingState::Ready;
                    recording.files = files.clone();
                    recording.duration_ms = *duration_ms;
                    recording.bytes = *bytes;
                }
            }
            EventKind::RecordingFailed {
                recording_id,
                reason,
                files,
            } => {
                if let Some(recording) = all.iter_mut().find(|r| r.id == *recording_id) {
                    recording.state = RecordingState::Failed;
                    recording.error = Some(reason.clone());
                    recording.bytes = files.iter().map(|f| f.bytes).sum();
                    recording.files = files.clone();
                }
            }
            EventKind::RecordingDeleted { recording_id } => {
                if open.is_some_and(|i| all[i].id == *recording_id) {
                    open = None;
                }
                all.retain(|r| r.id != *recording_id);
                open = open.filter(|&i| i < all.len());
            }
            _ => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Audience;
    use crate::ids::{InstanceId, MeetingId};

    fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    fn rec(n: u8) -> RecordingId {
        RecordingId::parse(&format!("rec_{:024x}", n)).unwrap()
    }

    fn log(kinds: Vec<(i64, EventKind)>) -> Vec<Event> {
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, (at, kind))| Event {
                meeting_id: MeetingId::parse("1234567890").unwrap(),
                seq: i as u64 + 1,
                at: Timestamp::from_millis(at),
                instance_id: InstanceId::from_stored("run-1".into()),
                audience: Audience::Everyone,
                kind,
            })
            .collect()
    }

    fn joined(who: &str, role: Role) -> EventKind {
        EventKind::ParticipantJoined {
            identity: id(who),
            name: who.to_uppercase(),
            role,
        }
    }

    #[test]
    fn the_index_tells_who_was_there_joined_late_and_was_muted_half_way() {
        let events = log(vec![
            (1_000, joined("host", Role::Host)),
            (1_500, joined("amy", Role::Speaker)),
            (
                2_000,
                EventKind::RecordingStarted {
                    recording_id: rec(1),
                    by: Some(id("host")),
                },
            ),
            (7_000, joined("ben", Role::Speaker)),
            (
                9_000,
                EventKind::ParticipantMuted {
                    identity: id("amy"),
                    track: TrackSelector::Audio,
                    muted: true,
                },
            ),
            (
                10_000,
                EventKind::ParticipantLeft {
                    identity: id("ben"),
                },
            ),
            (
                12_000,
                EventKind::RecordingStopped {
                    recording_id: rec(1),
                    reason: StopReason::Requested,
                },
            ),
            // After the stop: not in the index.
            (
                13_000,
                EventKind::ParticipantLeft {
                    identity: id("amy"),
                },
            ),
        ]);
        let all = recordings(&events);
        assert_eq!(all.len(), 1);
        let r = &all[0];
        assert_eq!(r.state, RecordingState::Processing);
        assert_eq!(r.duration_ms, 10_000);
        assert_eq!(r.started_by, Some(id("host")));
        let lines: Vec<(u64, &str, &IndexChange)> = r
            .index
            .iter()
            .map(|e| (e.offset_ms, e.identity.as_str(), &e.change))
            .collect();
        assert_eq!(
            lines,
            vec![
                (
                    0,
                    "amy",
                    &IndexChange::Present {
                        name: "AMY".into(),
                        role: Role::Speaker
                    }
                ),
                (
                    0,
                    "host",
                    &IndexChange::Present {
                        name: "HOST".into(),
                        role: Role::Host
                    }
                ),
                (
                    5_000,
                    "ben",
                    &IndexChange::Joined {
                        name: "BEN".into(),
                        role: Role::Speaker
                    }
                ),
                (
                    7_000,
                    "amy",
                    &IndexChange::Muted {
                        track: TrackSelector::Audio,
                        muted: true
                    }
                ),
                (8_000, "ben", &IndexChange::Left),
            ]
        );
        let spans = r.spans(10_000);
        let spans: Vec<(&str, u64, u64)> = spans
            .iter()
            .map(|s| (s.identity.as_str(), s.from_ms, s.to_ms))
            .collect();
        assert_eq!(
            spans,
            vec![
                ("amy", 0, 10_000),
                ("host", 0, 10_000),
                ("ben", 5_000, 8_000)
            ]
        );
    }

    #[test]
    fn a_recording_moves_from_recording_to_ready_or_failed_and_deleted_ones_are_gone() {
        let file = RecordingFile {
            name: "composite.mp4".into(),
            kind: crate::event::RecordingFileKind::Composite,
            identity: None,
            track_sid: None,
            codec: "mp4".into(),
            bytes: 10,
            start_ms: 0,
            duration_ms: 3_000,
            location: None,
        };
        let mut kinds = vec![(
            0,
            EventKind::RecordingStarted {
                recording_id: rec(1),
                by: None,
            },
        )];
        assert_eq!(
            recordings(&log(kinds.clone()))[0].state,
            RecordingState::Recording
        );
        kinds.push((
            3_000,
            EventKind::RecordingStopped {
                recording_id: rec(1),
                reason: StopReason::MeetingEnded,
            },
        ));
        kinds.push((
            4_000,
            EventKind::RecordingReady {
                recording_id: rec(1),
                files: vec![file.clone()],
                duration_ms: 3_000,
                bytes: 10,
            },
        ));
        kinds.push((
            5_000,
            EventKind::RecordingStarted {
                recording_id: rec(2),
                by: None,
            },
        ));
        kinds.push((
            6_000,
            EventKind::RecordingFailed {
                recording_id: rec(2),
                reason: "disk full".into(),
                files: vec![],
            },
        ));
        let all = recordings(&log(kinds.clone()));
        assert_eq!(all[0].state, RecordingState::Ready);
        assert_eq!(all[0].file("composite.mp4"), Some(&file));
        assert_eq!(all[0].stop_reason, Some(StopReason::MeetingEnded));
        assert_eq!(all[1].state, RecordingState::Failed);
        assert_eq!(all[1].error.as_deref(), Some("disk full"));
        kinds.push((
            7_000,
            EventKind::RecordingDeleted {
                recording_id: rec(1),
            },
        ));
        let all = recordings(&log(kinds));
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, rec(2));
    }

    #[test]
    fn recording_ids_are_checked() {
        assert!(RecordingId::parse("rec_0123456789abcdef01234567").is_ok());
        for bad in [
            "",
            "rec_",
            "rec_0123456789ABCDEF01234567",
            "rec_../../../../etc/passwd",
            "xyz_0123456789abcdef01234567",
            "rec_0123456789abcdef012345678",
        ] {
            assert!(RecordingId::parse(bad).is_err(), "{bad}");
        }
    }
}
