//! Recording on an external LiveKit through its Egress service: where a recording's room
//! composite is written (`convene/<meeting>/<recording>/composite.mp4`, in the deployment's egress
//! storage), how an `EgressInfo` is traced back to its recording from that path alone (no state:
//! any node, and after a restart), and what an ended egress means for the recording (`Ready` or
//! `Failed`, with its files). Pure, apart from [`report`], which hands the outcome to the core.

use convene_core::ErrorCode;
use convene_core::event::{RecordingFile, RecordingFileKind, StopReason};
use convene_core::ids::{MeetingId, RecordingId};
use convene_core::ops::RecordingOutcome;
use convene_core::recording::RecordingState;
use convene_core::service::{Caller, Meetings, ServiceError};
use convene_core::time::Timestamp;
use livekit_protocol as proto;
use proto::egress_info::Request;

/// The first folder of every path convene asks LiveKit to write.
pub const PREFIX: &str = "convene";
/// The room composite's name in every recording (as the embedded engine names it).
pub const COMPOSITE_NAME: &str = crate::recording::COMPOSITE_NAME;
/// The room composite's layout.
pub const LAYOUT: &str = "grid";

/// Where the room composite of `recording` is written, relative to the egress storage.
pub fn composite_filepath(meeting: &MeetingId, recording: &RecordingId) -> String {
    format!("{PREFIX}/{meeting}/{recording}/{COMPOSITE_NAME}")
}

/// The recording an egress writes for, read from the paths it names (its request's file outputs,
/// then its file results): `None` for an egress convene did not start.
pub fn recording_of(info: &proto::EgressInfo) -> Option<(MeetingId, RecordingId)> {
    paths(info).into_iter().find_map(parse_path)
}

/// Whether `info` is an egress of this recording.
pub fn belongs_to(info: &proto::EgressInfo, meeting: &MeetingId, recording: &RecordingId) -> bool {
    recording_of(info).is_some_and(|(m, r)| m == *meeting && r == *recording)
}

/// Whether the egress is still running (so that stopping it means something).
pub fn is_running(info: &proto::EgressInfo) -> bool {
    matches!(
        proto::EgressStatus::try_from(info.status),
        Ok(proto::EgressStatus::EgressStarting | proto::EgressStatus::EgressActive)
    )
}

fn paths(info: &proto::EgressInfo) -> Vec<&str> {
    use proto::room_composite_egress_request::Output as RoomOutput;
    use proto::track_composite_egress_request::Output as TrackCompositeOutput;
    use proto::track_egress_request::Output as TrackOutput;
    let mut paths: Vec<&str> = Vec::new();
    match &info.request {
        Some(Request::RoomComposite(request)) => {
            paths.extend(request.file_outputs.iter().map(|f| f.filepath.as_str()));
            #[allow(deprecated)]
            if let Some(RoomOutput::File(file)) = &request.output {
                paths.push(&file.filepath);
            }
        }
        Some(Request::TrackComposite(request)) => {
            paths.extend(request.file_outputs.iter().map(|f| f.filepath.as_str()));
            #[allow(deprecated)]
            if let Some(TrackCompositeOutput::File(file)) = &request.output {
                paths.push(&file.filepath);
            }
        }
        Some(Request::Participant(request)) => {
            paths.extend(request.file_outputs.iter().map(|f| f.filepath.as_str()));
        }
        Some(Request::Web(request)) => {
            paths.extend(request.file_outputs.iter().map(|f| f.filepath.as_str()));
        }
        Some(Request::Track(request)) => {
            if let Some(TrackOutput::File(file)) = &request.output {
                paths.push(&file.filepath);
            }
        }
        Some(Request::Egress(_) | Request::Replay(_)) | None => {}
    }
    for file in &info.file_results {
        paths.push(&file.filename);
        paths.push(&file.location);
    }
    paths
}

/// `.../convene/<meeting>/<recording>/...` anywhere in a path, a URL or a storage key.
fn parse_path(path: &str) -> Option<(MeetingId, RecordingId)> {
    let segments: Vec<&str> = path.split('/').collect();
    segments.windows(3).find_map(|w| {
        if w[0] != PREFIX {
            return None;
        }
        Some((MeetingId::parse(w[1]).ok()?, RecordingId::parse(w[2]).ok()?))
    })
}

/// What an egress in this state means for its recording, `recording_started` being when the
/// recording started: `None` while it runs.
pub fn outcome(info: &proto::EgressInfo, recording_started: Timestamp) -> Option<RecordingOutcome> {
    let status = proto::EgressStatus::try_from(info.status).ok()?;
    let files: Vec<RecordingFile> = info
        .file_results
        .iter()
        .filter_map(|file| recording_file(info, file, recording_started))
        .collect();
    let failed = |default: &str, files: Vec<RecordingFile>| {
        let reason = if info.error.is_empty() {
            default.to_owned()
        } else {
            info.error.clone()
        };
        Some(RecordingOutcome::Failed {
            reason,
            files,
            stop: StopReason::Failed,
        })
    };
    match status {
        proto::EgressStatus::EgressStarting
        | proto::EgressStatus::EgressActive
        | proto::EgressStatus::EgressEnding => None,
        proto::EgressStatus::EgressComplete if files.is_empty() => {
            failed("LiveKit Egress completed without a file", files)
        }
        proto::EgressStatus::EgressComplete => {
            let longest = files.iter().map(|f| f.duration_ms).max().unwrap_or(0);
            let duration_ms = if longest > 0 {
                longest
            } else {
                nanos_to_millis(info.ended_at.saturating_sub(info.started_at))
            };
            Some(RecordingOutcome::Ready { files, duration_ms })
        }
        proto::EgressStatus::EgressFailed => failed("LiveKit Egress failed", files),
        proto::EgressStatus::EgressAborted => failed("LiveKit Egress was aborted", files),
        proto::EgressStatus::EgressLimitReached => {
            failed("LiveKit Egress stopped at its time limit", files)
        }
    }
}

fn nanos_to_millis(nanos: i64) -> u64 {
    (nanos.max(0) / 1_000_000) as u64
}

/// One file result as a recording file (`None` for one without a name, or without bytes).
fn recording_file(
    info: &proto::EgressInfo,
    file: &proto::FileInfo,
    recording_started: Timestamp,
) -> Option<RecordingFile> {
    let path = if file.filename.is_empty() {
        &file.location
    } else {
        &file.filename
    };
    let name = path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())?
        .to_owned();
    if file.size <= 0 {
        return None;
    }
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let (kind, codec, track_sid) = match &info.request {
        Some(Request::Track(request)) => {
            let (kind, codec) = match extension.as_str() {
                "ogg" | "opus" => (RecordingFileKind::Audio, "opus"),
                "webm" => (RecordingFileKind::Video, "vp8"),
                _ => (RecordingFileKind::Video, "h264"),
            };
            (kind, codec.to_owned(), Some(request.track_id.clone()))
        }
        _ => {
            let codec = if extension.is_empty() {
                "mp4".to_owned()
            } else {
                extension
            };
            (RecordingFileKind::Composite, codec, None)
        }
    };
    let started = if file.started_at > 0 {
        file.started_at
    } else {
        info.started_at
    };
    let start_ms = (started / 1_000_000)
        .saturating_sub(recording_started.as_millis())
        .max(0) as u64;
    Some(RecordingFile {
        name,
        kind,
        identity: None,
        track_sid,
        codec,
        bytes: file.size as u64,
        start_ms,
        duration_ms: nanos_to_millis(file.duration),
        location: Some(if file.location.is_empty() {
            file.filename.clone()
        } else {
            file.location.clone()
        }),
    })
}

/// What became of an egress event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// Its recording is now in this state (an ended egress).
    Finished(RecordingState),
    /// Still running: nothing to report yet.
    Running,
    /// Not an egress of a recording convene knows (another app's, a deleted recording's, a
    /// meeting of another deployment): ignored, as rooms that are not convene's are.
    NotOurs,
}

/// Hands an egress's state to the core: once it ended, its recording becomes ready or failed.
pub async fn report(
    meetings: &Meetings,
    info: &proto::EgressInfo,
) -> Result<Reported, ServiceError> {
    let Some((meeting_id, recording_id)) = recording_of(info) else {
        return Ok(Reported::NotOurs);
    };
    let unknown = |e: &ServiceError| {
        matches!(
            e.code(),
            ErrorCode::MeetingNotFound | ErrorCode::RecordingNotFound
        )
    };
    let meeting = match meetings.meeting(&meeting_id).await {
        Ok(meeting) => meeting,
        Err(e) if unknown(&e) => return Ok(Reported::NotOurs),
        Err(e) => return Err(e),
    };
    if !info.room_name.is_empty() && info.room_name != meeting.room_name.as_str() {
        tracing::warn!(egress_id = info.egress_id, room = info.room_name, meeting = %meeting_id,
            "an egress names a convene recording of another room: ignored");
        return Ok(Reported::NotOurs);
    }
    let recording = match meetings
        .recording(&meeting_id, &Caller::Admin, &recording_id)
        .await
    {
        Ok(recording) => recording,
        Err(e) if unknown(&e) => return Ok(Reported::NotOurs),
        Err(e) => return Err(e),
    };
    let Some(outcome) = outcome(info, recording.started_at) else {
        return Ok(Reported::Running);
    };
    for file in &info.file_results {
        // The files stay in the deployment's egress storage: where, for whoever fetches them.
        tracing::info!(meeting = %meeting_id, recording = %recording_id, egress_id = info.egress_id,
            filename = file.filename, location = file.location, bytes = file.size,
            "a recording's file written by LiveKit Egress");
    }
    let finished = meetings
        .finish_recording(&meeting_id, &recording_id, outcome)
        .await?;
    Ok(Reported::Finished(finished.state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting() -> MeetingId {
        MeetingId::parse("1234567890").unwrap()
    }

    fn recording() -> RecordingId {
        RecordingId::parse("rec_0123456789abcdef01234567").unwrap()
    }

    const SECOND: i64 = 1_000_000_000;

    /// A room composite egress as LiveKit reports it, started at 100 s (Unix time).
    fn composite(status: proto::EgressStatus, files: Vec<proto::FileInfo>) -> proto::EgressInfo {
        proto::EgressInfo {
            egress_id: "EG_1".into(),
            room_name: "standup".into(),
            status: status as i32,
            started_at: 100 * SECOND,
            ended_at: 112 * SECOND,
            file_results: files,
            request: Some(Request::RoomComposite(proto::RoomCompositeEgressRequest {
                room_name: "standup".into(),
                layout: LAYOUT.into(),
                file_outputs: vec![proto::EncodedFileOutput {
                    file_type: proto::EncodedFileType::Mp4 as i32,
                    filepath: composite_filepath(&meeting(), &recording()),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn written(size: i64) -> proto::FileInfo {
        proto::FileInfo {
            filename: composite_filepath(&meeting(), &recording()),
            started_at: 101 * SECOND,
            ended_at: 111 * SECOND,
            duration: 10 * SECOND + 500_000_000,
            size,
            location: "s3://bucket/convene/1234567890/rec_0123456789abcdef01234567/composite.mp4"
                .into(),
        }
    }

    #[test]
    fn the_path_convene_writes_names_its_recording_and_nothing_else_does() {
        assert_eq!(
            composite_filepath(&meeting(), &recording()),
            "convene/1234567890/rec_0123456789abcdef01234567/composite.mp4"
        );
        let info = composite(proto::EgressStatus::EgressActive, vec![]);
        assert_eq!(recording_of(&info), Some((meeting(), recording())));
        assert!(belongs_to(&info, &meeting(), &recording()));
        let other = RecordingId::parse("rec_ffffffffffffffffffffffff").unwrap();
        assert!(!belongs_to(&info, &meeting(), &other));

        // Without its request (a webhook trimmed down), the file result's name or location does.
        let mut bare = composite(proto::EgressStatus::EgressComplete, vec![written(10)]);
        bare.request = None;
        assert_eq!(recording_of(&bare), Some((meeting(), recording())));
        bare.file_results[0].filename = "somewhere-else.mp4".into();
        assert_eq!(recording_of(&bare), Some((meeting(), recording())));

        // Another app's egress, a look-alike path without the prefix, or malformed ids: not ours.
        for path in [
            "recordings/standup-2026.mp4",
            "1234567890/rec_0123456789abcdef01234567/composite.mp4",
            "convene/0123/rec_0123456789abcdef01234567/composite.mp4",
            "convene/1234567890/rec_XYZ/composite.mp4",
        ] {
            let mut info = composite(proto::EgressStatus::EgressActive, vec![]);
            let Some(Request::RoomComposite(request)) = &mut info.request else {
                unreachable!()
            };
            request.file_outputs[0].filepath = path.into();
            assert_eq!(recording_of(&info), None, "{path}");
        }
        assert_eq!(recording_of(&proto::EgressInfo::default()), None);
    }

    #[test]
    fn only_a_starting_or_active_egress_is_stopped() {
        use proto::EgressStatus::*;
        for (status, running) in [
            (EgressStarting, true),
            (EgressActive, true),
            (EgressEnding, false),
            (EgressComplete, false),
            (EgressFailed, false),
        ] {
            assert_eq!(
                is_running(&composite(status, vec![])),
                running,
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_completed_composite_is_a_ready_recording_with_its_file() {
        // The recording started at 99.5 s; the file's first frame is at 101 s.
        let started = Timestamp::from_millis(99_500);
        let info = composite(proto::EgressStatus::EgressComplete, vec![written(123_456)]);
        let Some(RecordingOutcome::Ready { files, duration_ms }) = outcome(&info, started) else {
            panic!("a ready recording")
        };
        assert_eq!(duration_ms, 10_500);
        assert_eq!(
            files,
            [RecordingFile {
                name: "composite.mp4".into(),
                kind: RecordingFileKind::Composite,
                identity: None,
                track_sid: None,
                codec: "mp4".into(),
                bytes: 123_456,
                start_ms: 1_500,
                duration_ms: 10_500,
                location: Some(
                    "s3://bucket/convene/1234567890/rec_0123456789abcdef01234567/composite.mp4"
                        .into()
                ),
            }]
        );
        // A file that reports no duration: the egress's own span.
        let mut info = composite(proto::EgressStatus::EgressComplete, vec![written(5)]);
        info.file_results[0].duration = 0;
        let Some(RecordingOutcome::Ready { duration_ms, .. }) = outcome(&info, started) else {
            panic!("a ready recording")
        };
        assert_eq!(duration_ms, 12_000);
    }

    #[test]
    fn a_track_egress_file_is_an_audio_or_video_file_of_its_track() {
        let mut info = composite(proto::EgressStatus::EgressComplete, vec![written(10)]);
        info.request = Some(Request::Track(proto::TrackEgressRequest {
            room_name: "standup".into(),
            track_id: "TR_a".into(),
            ..Default::default()
        }));
        info.file_results[0].filename =
            "convene/1234567890/rec_0123456789abcdef01234567/alice.ogg".into();
        let Some(RecordingOutcome::Ready { files, .. }) = outcome(&info, Timestamp::from_millis(0))
        else {
            panic!("ready")
        };
        assert_eq!(
            (
                files[0].kind,
                files[0].codec.as_str(),
                files[0].track_sid.as_deref()
            ),
            (RecordingFileKind::Audio, "opus", Some("TR_a"))
        );
    }

    #[test]
    fn failed_aborted_and_limited_egresses_fail_the_recording_with_livekits_error() {
        let started = Timestamp::from_millis(100_000);
        let mut info = composite(proto::EgressStatus::EgressFailed, vec![]);
        info.error = "pipeline frozen".into();
        assert_eq!(
            outcome(&info, started),
            Some(RecordingOutcome::Failed {
                reason: "pipeline frozen".into(),
                files: vec![],
                stop: StopReason::Failed,
            })
        );
        // The files it kept stay listed; without an error, the status says why.
        let info = composite(proto::EgressStatus::EgressLimitReached, vec![written(77)]);
        let Some(RecordingOutcome::Failed { reason, files, .. }) = outcome(&info, started) else {
            panic!("failed")
        };
        assert_eq!(reason, "LiveKit Egress stopped at its time limit");
        assert_eq!(files.len(), 1);
        let info = composite(proto::EgressStatus::EgressAborted, vec![]);
        assert!(matches!(
            outcome(&info, started),
            Some(RecordingOutcome::Failed { reason, .. }) if reason == "LiveKit Egress was aborted"
        ));
        // Completed without a file it could keep (an empty one): failed, not ready.
        let info = composite(proto::EgressStatus::EgressComplete, vec![written(0)]);
        assert!(matches!(
            outcome(&info, started),
            Some(RecordingOutcome::Failed { reason, .. }) if reason == "LiveKit Egress completed without a file"
        ));
    }

    #[test]
    fn a_running_egress_changes_nothing_yet() {
        for status in [
            proto::EgressStatus::EgressStarting,
            proto::EgressStatus::EgressActive,
            proto::EgressStatus::EgressEnding,
        ] {
            assert_eq!(
                outcome(
                    &composite(status, vec![written(10)]),
                    Timestamp::from_millis(0)
                ),
                None
            );
        }
        let mut unknown = composite(proto::EgressStatus::EgressComplete, vec![written(10)]);
        unknown.status = 99;
        assert_eq!(outcome(&unknown, Timestamp::from_millis(0)), None);
    }
}
