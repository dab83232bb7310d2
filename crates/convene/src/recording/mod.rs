//! Recording on this node: the core's `StartRecording` / `StopRecording` carried out on the
//! embedded SFU's recorder, then, once a recording stops, its track files composed into one MP4
//! (`composite`, ffmpeg as a child process), stored (`storage`: the data directory or a bucket)
//! and reported to the core (`recording.ready` or `recording.failed`). At start, recordings the
//! server was writing when it stopped are closed as failed with the files they have.
//!
//! Files are written under `<work dir>/<meeting>/<recording>/` and stored under the key
//! `<meeting>/<recording>/<file>`; with the default file storage the two are the same folder.

pub mod composite;
pub mod storage;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use convene_core::event::{RecordingFile, RecordingFileKind, StopReason};
use convene_core::ids::{Identity, MeetingId, RecordingId, RoomName};
use convene_core::ops::RecordingOutcome;
use convene_core::recording::RecordingState;
use convene_core::service::{Caller, Meetings};
use convene_sfu::SfuControl;
use convene_sfu::record::{RecCodec, RecKind};
use convene_sfu::recorder::{RecorderNotice, RecordingFiles, TrackFile};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::placement::Placement;
use composite::{CompositeJob, CompositeTrack, Layout, TrackKind};
use storage::{RecordingStorage, StorageError};

/// The composite's name in every recording.
pub const COMPOSITE_NAME: &str = "composite.mp4";
/// The composite's frame size.
const COMPOSITE_SIZE: (u32, u32) = (1280, 720);
/// How long composing one recording may take.
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(3600);

/// This node's recordings.
pub struct Recordings {
    control: SfuControl,
    storage: RecordingStorage,
    /// Where the recorder writes (`<data dir>/recordings`, or the file storage's own folder).
    work_dir: PathBuf,
    ffmpeg: String,
    /// With several nodes: where each meeting's media room is (a recording is its room's node's).
    placement: Option<Arc<Placement>>,
    /// Set once the core service exists (it is built on the media engine, which holds this).
    meetings: OnceLock<Arc<Meetings>>,
    tasks: TaskTracker,
}

impl Recordings {
    pub fn new(
        control: SfuControl,
        storage: RecordingStorage,
        work_dir: PathBuf,
        ffmpeg: String,
        placement: Option<Arc<Placement>>,
        tasks: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            control,
            storage,
            work_dir,
            ffmpeg,
            placement,
            meetings: OnceLock::new(),
            tasks,
        })
    }

    /// The core service the recordings report to; once.
    pub fn attach(&self, meetings: Arc<Meetings>) {
        let _ = self.meetings.set(meetings);
    }

    fn meetings(&self) -> Option<&Arc<Meetings>> {
        self.meetings.get()
    }

    fn dir(&self, meeting: &MeetingId, recording: &RecordingId) -> PathBuf {
        self.work_dir
            .join(meeting.as_str())
            .join(recording.as_str())
    }

    fn key(meeting: &MeetingId, recording: &RecordingId, name: &str) -> String {
        format!("{meeting}/{recording}/{name}")
    }

    /// The core's `StartRecording`: the room's tracks are written from now on.
    pub async fn start(&self, room: &RoomName, meeting: &MeetingId, recording: &RecordingId) {
        let dir = self.dir(meeting, recording);
        if let Err(error) = self
            .control
            .start_recording(room.as_str(), recording.as_str(), dir)
            .await
        {
            tracing::warn!(%meeting, %recording, %error, "recording not started");
            self.fail(
                meeting,
                recording,
                format!("the recording could not start: {error}"),
                StopReason::Failed,
            )
            .await;
        } else {
            tracing::info!(%meeting, %recording, "recording started");
        }
    }

    /// The core's `StopRecording`: the files are closed, then composed, stored and reported on
    /// the background tasks (the shutdown waits for them).
    pub fn stop(self: &Arc<Self>, room: &RoomName, meeting: &MeetingId, recording: &RecordingId) {
        let this = self.clone();
        let (room, meeting, recording) = (room.clone(), meeting.clone(), recording.clone());
        self.tasks.spawn(async move {
            let files = match this
                .control
                .stop_recording(room.as_str(), recording.as_str())
                .await
            {
                Ok(files) => files,
                Err(error) => {
                    tracing::warn!(%meeting, %recording, %error, "recording not stopped cleanly");
                    return;
                }
            };
            this.finish(&meeting, &recording, files).await;
        });
    }

    /// What the recorder says: keyframes it needs, recordings that failed to write.
    pub async fn listen(
        self: Arc<Self>,
        mut notices: mpsc::UnboundedReceiver<RecorderNotice>,
        shutdown: CancellationToken,
    ) {
        loop {
            let notice = tokio::select! {
                notice = notices.recv() => notice,
                () = shutdown.cancelled() => return,
            };
            match notice {
                None => return,
                Some(RecorderNotice::KeyframeWanted { room, track_sid }) => {
                    if let Err(error) = self.control.record_keyframe(&room, &track_sid).await {
                        tracing::debug!(room, track_sid, %error, "recording keyframe request");
                    }
                }
                Some(RecorderNotice::Failed { recording, reason }) => {
                    // The meeting the recording is running in, as the store says (a failure
                    // is rare; a recording stopped meanwhile is the stop's to finish).
                    let Some(meetings) = self.meetings() else {
                        continue;
                    };
                    let running = meetings.running_recordings().await.unwrap_or_default();
                    let Some((meeting, room, id)) = running.into_iter().find_map(|m| {
                        let id = m.recording.filter(|r| r.id.as_str() == recording)?.id;
                        Some((m.id, m.room_name, id))
                    }) else {
                        continue;
                    };
                    tracing::warn!(%meeting, %recording, reason, "recording failed while writing");
                    // Close what was written, then stop the recording in the core with why.
                    let files = self
                        .control
                        .stop_recording(room.as_str(), &recording)
                        .await
                        .ok();
                    let kept = match files {
                        Some(files) => self.store_tracks(&meeting, &id, &files.tracks).await.0,
                        None => Vec::new(),
                    };
                    self.report(
                        &meeting,
                        &id,
                        RecordingOutcome::Failed {
                            reason: format!("writing the recording failed: {reason}"),
                            files: kept,
                            stop: StopReason::Failed,
                        },
                    )
                    .await;
                }
            }
        }
    }

    /// A stopped recording's files: composed, stored and reported.
    async fn finish(&self, meeting: &MeetingId, recording: &RecordingId, files: RecordingFiles) {
        let Some(meetings) = self.meetings() else {
            return;
        };
        let found = match meetings.recording(meeting, &Caller::Admin, recording).await {
            Ok(found) => found,
            Err(error) => {
                return tracing::warn!(%meeting, %recording, %error, "a stopped recording is not in the log");
            }
        };
        if matches!(found.state, RecordingState::Ready | RecordingState::Failed) {
            // Reported already (it failed while writing).
            return;
        }
        let duration_ms = found.duration_ms;
        let dir = self.dir(meeting, recording);
        let mut failure = files.error.clone();
        // The composite, from the tracks as written, laid out by who was on screen when.
        let composite = if files.tracks.is_empty() {
            None
        } else {
            let job = CompositeJob {
                tracks: files
                    .tracks
                    .iter()
                    .map(|t| CompositeTrack {
                        path: t.path.clone(),
                        identity: t.identity.clone(),
                        name: t.name.clone(),
                        kind: match t.kind {
                            RecKind::Audio => TrackKind::Audio,
                            RecKind::Video => TrackKind::Video,
                        },
                        start_ms: t.start_ms,
                        duration_ms: t.duration_ms,
                    })
                    .collect(),
                spans: found
                    .spans(duration_ms)
                    .into_iter()
                    .map(|s| composite::Span {
                        identity: s.identity.to_string(),
                        from_ms: s.from_ms,
                        to_ms: s.to_ms,
                    })
                    .collect(),
                total_ms: duration_ms.max(1),
                layout: Layout::Grid,
                output: dir.join(COMPOSITE_NAME),
                width: COMPOSITE_SIZE.0,
                height: COMPOSITE_SIZE.1,
            };
            match composite::compose(&self.ffmpeg, &job, COMPOSE_TIMEOUT).await {
                Ok(made) => Some(made),
                Err(error) => {
                    tracing::warn!(%meeting, %recording, %error, "recording composite not built");
                    failure.get_or_insert(format!("the composite was not built: {error}"));
                    None
                }
            }
        };
        let (mut stored, store_error) = self.store_tracks(meeting, recording, &files.tracks).await;
        if let Some(error) = store_error {
            failure.get_or_insert(error);
        }
        if let Some(made) = composite {
            let key = Self::key(meeting, recording, COMPOSITE_NAME);
            let put = self.storage.put_file(&key, &made.path).await;
            if put.is_ok() && !self.storage.is_local() {
                let _ = tokio::fs::remove_file(&made.path).await;
            }
            match put {
                Ok(bytes) => stored.push(RecordingFile {
                    name: COMPOSITE_NAME.to_owned(),
                    kind: RecordingFileKind::Composite,
                    identity: None,
                    track_sid: None,
                    codec: "mp4".to_owned(),
                    bytes,
                    start_ms: 0,
                    duration_ms: made.duration_ms,
                    location: None,
                }),
                Err(error) => {
                    failure.get_or_insert(format!("the composite was not stored: {error}"));
                }
            }
        }
        if !self.storage.is_local() {
            // Everything is in the bucket: the node's folder goes if nothing is left in it.
            let _ = tokio::fs::remove_dir(&dir).await;
        }
        let outcome = match failure {
            None => RecordingOutcome::Ready {
                files: stored,
                duration_ms,
            },
            Some(reason) => RecordingOutcome::Failed {
                reason,
                files: stored,
                stop: StopReason::Requested,
            },
        };
        self.report(meeting, recording, outcome).await;
    }

    /// The track files stored, as the core lists them; the first error, if any.
    async fn store_tracks(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
        tracks: &[TrackFile],
    ) -> (Vec<RecordingFile>, Option<String>) {
        let mut stored = Vec::new();
        let mut error = None;
        for track in tracks {
            let key = Self::key(meeting, recording, &track.file_name);
            let stored_file = self.storage.put_file(&key, &track.path).await;
            if stored_file.is_ok() && !self.storage.is_local() {
                // In the bucket now: the node's copy goes.
                let _ = tokio::fs::remove_file(&track.path).await;
            }
            match stored_file {
                Ok(bytes) => stored.push(RecordingFile {
                    name: track.file_name.clone(),
                    kind: match track.kind {
                        RecKind::Audio => RecordingFileKind::Audio,
                        RecKind::Video => RecordingFileKind::Video,
                    },
                    identity: Identity::parse(&track.identity).ok(),
                    track_sid: Some(track.track_sid.clone()),
                    codec: track.codec.as_str().to_owned(),
                    bytes,
                    start_ms: track.start_ms,
                    duration_ms: track.duration_ms,
                    location: None,
                }),
                Err(e) => {
                    tracing::warn!(%meeting, %recording, file = track.file_name, error = %e, "recording file not stored");
                    error.get_or_insert(format!("{} was not stored: {e}", track.file_name));
                }
            }
        }
        (stored, error)
    }

    async fn fail(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
        reason: String,
        stop: StopReason,
    ) {
        let outcome = RecordingOutcome::Failed {
            reason,
            files: Vec::new(),
            stop,
        };
        self.report(meeting, recording, outcome).await;
    }

    async fn report(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
        outcome: RecordingOutcome,
    ) {
        let Some(meetings) = self.meetings() else {
            return;
        };
        let ready = matches!(outcome, RecordingOutcome::Ready { .. });
        match meetings.finish_recording(meeting, recording, outcome).await {
            Ok(_) if ready => tracing::info!(%meeting, %recording, "recording ready"),
            Ok(_) => tracing::info!(%meeting, %recording, "recording failed; its files are kept"),
            Err(error) => {
                tracing::warn!(%meeting, %recording, %error, "recording outcome not recorded")
            }
        }
    }

    /// At start: every recording the log shows running or being finished, whose room no other
    /// live node holds, was cut short by the server stopping (nothing writes it): each is closed
    /// as failed with the files it has, each playable up to its last complete cluster.
    pub async fn recover(&self) {
        let Some(meetings) = self.meetings() else {
            return;
        };
        let running = match meetings.running_recordings().await {
            Ok(running) => running,
            Err(error) => return tracing::warn!(%error, "cannot look for interrupted recordings"),
        };
        for found in running {
            let (meeting, room) = (found.id, found.room_name);
            let Some(active) = found.recording else {
                continue;
            };
            if self.recorded_elsewhere(&room).await {
                continue;
            }
            let unfinished = meetings
                .unfinished_recordings(&meeting)
                .await
                .unwrap_or_default();
            let mut ids: Vec<RecordingId> = unfinished.into_iter().map(|r| r.id).collect();
            if !ids.contains(&active.id) {
                ids.push(active.id);
            }
            for recording in ids {
                let tracks = self.leftover_tracks(&meeting, &recording).await;
                let (kept, _) = self.store_tracks(&meeting, &recording, &tracks).await;
                tracing::warn!(%meeting, %recording, files = kept.len(), "a recording was cut short by the server stopping");
                let outcome = RecordingOutcome::Failed {
                    reason:
                        "the server stopped while recording; the files written until then are kept"
                            .to_owned(),
                    files: kept,
                    stop: StopReason::ServerStopped,
                };
                self.report(&meeting, &recording, outcome).await;
            }
        }
    }

    /// Whether another live node holds the meeting's media room (and so writes its recording).
    async fn recorded_elsewhere(&self, room: &RoomName) -> bool {
        let Some(placement) = &self.placement else {
            return false;
        };
        matches!(placement.elsewhere(room.as_str()).await, Ok(Some(_)))
    }

    /// The track files a recording left in its folder (no composite, nothing half-copied).
    async fn leftover_tracks(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
    ) -> Vec<TrackFile> {
        let dir = self.dir(meeting, recording);
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return Vec::new();
        };
        let mut tracks = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(track) = leftover_track(&entry.path(), &name).await else {
                continue;
            };
            tracks.push(track);
        }
        tracks.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        tracks
    }

    /// Removes every file of a recording from the storage and this node's folder.
    pub async fn delete(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
    ) -> Result<(), StorageError> {
        self.storage
            .delete_prefix(&format!("{meeting}/{recording}"))
            .await?;
        let dir = self.dir(meeting, recording);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::Backend(e.to_string())),
        }
    }
}

/// A track file found in a recording's folder after a crash: its identity and track from its
/// name (`<identity>-<track sid>.<ext>`, as the recorder names it), its codec from its header,
/// its size from the disk. Its timing is unknown (0).
async fn leftover_track(path: &Path, name: &str) -> Option<TrackFile> {
    let (stem, ext) = name.rsplit_once('.')?;
    if !matches!(ext, "webm" | "mkv") {
        return None;
    }
    let (identity, track_sid) = stem.rsplit_once('-')?;
    let bytes = tokio::fs::metadata(path).await.ok()?.len();
    let (codec, kind) = codec_of(path).await?;
    Some(TrackFile {
        file_name: name.to_owned(),
        path: path.to_owned(),
        track_sid: track_sid.to_owned(),
        identity: identity.to_owned(),
        name: identity.to_owned(),
        kind,
        codec,
        bytes,
        start_ms: 0,
        duration_ms: 0,
        frames: 0,
    })
}

/// The codec of a track file, from the Matroska codec id in its first few KiB (its Tracks).
async fn codec_of(path: &Path) -> Option<(RecCodec, RecKind)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(4096);
    let file = tokio::fs::File::open(path).await.ok()?;
    file.take(4096).read_to_end(&mut head).await.ok()?;
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    [
        (&b"A_OPUS"[..], RecCodec::Opus, RecKind::Audio),
        (b"V_VP8", RecCodec::Vp8, RecKind::Video),
        (b"V_MPEG4/ISO/AVC", RecCodec::H264, RecKind::Video),
    ]
    .into_iter()
    .find(|(id, _, _)| has(id))
    .map(|(_, codec, kind)| (codec, kind))
}

/// The API's view of stored recording files.
pub struct StoredFiles {
    pub recordings: Arc<Recordings>,
}

fn io_error(error: StorageError) -> std::io::Error {
    match error {
        StorageError::NotFound => std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        other => std::io::Error::other(other.to_string()),
    }
}

#[async_trait::async_trait]
impl convene_api::state::RecordingFiles for StoredFiles {
    async fn open(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
        name: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<convene_api::state::FileStream, std::io::Error> {
        let key = Recordings::key(meeting, recording, name);
        let (_, stream) = self
            .recordings
            .storage
            .get(&key, range)
            .await
            .map_err(io_error)?;
        Ok(stream.map(|chunk| chunk.map_err(io_error)).boxed())
    }

    async fn delete(
        &self,
        meeting: &MeetingId,
        recording: &RecordingId,
    ) -> Result<(), std::io::Error> {
        self.recordings
            .delete(meeting, recording)
            .await
            .map_err(io_error)
    }
}
