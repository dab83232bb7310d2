//! The recorder: one thread ("convene-recorder") that turns the engine's recorded packets
//! ([`RecPacket`]) into one file per track: VP8 and Opus in WebM (`.webm`), H.264 in Matroska
//! (`.mkv`).
//!
//! The media threads hand packets over with [`Recorder::packet`], which never blocks: the
//! packets in flight are bounded, and one past the bound is dropped and counted
//! ([`Recorder::dropped`]). [`Recorder::begin`] and [`Recorder::end`] travel on the same channel,
//! so `end` closes the files after every packet handed in before it. Each track's packets go
//! through its [`Assembler`] (reordering, loss, waiting for keyframes); its file is opened at the
//! first frame that can start it (for video, a keyframe) and its block times, in milliseconds
//! from 0, come from the RTP times.
//!
//! Crash safety: a cluster (at most [`CLUSTER_SPAN_MS`] of media; a new one at each video
//! keyframe) is kept in memory until it is complete and then written whole, so a process killed
//! at any moment leaves each file playable up to its last complete cluster. `end` adds the cues
//! and patches the segment size, the seek head and the duration in place.
//!
//! A write error (a full disk...) stops the whole recording: what can be closed is closed, its
//! later packets are ignored, [`RecorderNotice::Failed`] is sent and `end` reports it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convene_sfu_core::record::assemble::{
    Assembler, Frame, annex_b_nal_units, h264_sps_dimensions, vp8_dimensions,
};
use convene_sfu_core::record::{RecCodec, RecKind, RecPacket, RecTrack};
use ebml_iterable::tools::Vint;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use webm_iterable::WebmWriter;
use webm_iterable::WriteOptions;
use webm_iterable::matroska_spec::{EbmlTag, Master, MatroskaSpec, SimpleBlock};

/// The longest a cluster runs (ms of media): the most a crash can lose of a file's end.
pub const CLUSTER_SPAN_MS: u64 = 1000;

/// At most one keyframe request per track in this long (by the packets' arrival times).
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// What the recorder tells the rest of convene.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecorderNotice {
    /// A recorded video track lost a frame, or has not sent a keyframe yet: ask its publisher
    /// for one (a PLI).
    KeyframeWanted { room: String, track_sid: String },
    /// A write error (a full disk...): the recording stopped writing.
    Failed { recording: String, reason: String },
}

/// What a recording wrote, once [`Recorder::end`] closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingFiles {
    pub recording: String,
    /// One per track whose file was started (its header written), in the order their first
    /// packets came.
    pub tracks: Vec<TrackFile>,
    /// Why the recording stopped writing before its end, if it did.
    pub error: Option<String>,
}

/// One track's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFile {
    /// `identity-TR_xxx.webm` (`.mkv` for H.264), the identity made file-name safe.
    pub file_name: String,
    pub path: PathBuf,
    pub track_sid: String,
    pub identity: String,
    pub name: String,
    pub kind: RecKind,
    pub codec: RecCodec,
    /// The file's size.
    pub bytes: u64,
    /// When the first written frame arrived, after the recording's `begin`.
    pub start_ms: u64,
    /// From the first frame to the end of the last one.
    pub duration_ms: u64,
    pub frames: u64,
}

/// Why [`Recorder::begin`] refused.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("recording {0} is already being written")]
    AlreadyRecording(String),
    #[error("could not create the recording folder {path}: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the recorder has stopped")]
    Stopped,
}

/// The handle on the recorder thread: cheap to clone, usable from any thread. The thread closes
/// every open file and ends when the last handle is dropped.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

struct Shared {
    messages: mpsc::UnboundedSender<Message>,
    counters: Arc<Counters>,
    /// Packets allowed in flight.
    queue: usize,
    /// Recordings begun and not ended.
    active: Mutex<HashSet<String>>,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicUsize,
    dropped: AtomicU64,
}

enum Message {
    Begin {
        recording: String,
        dir: PathBuf,
        started: Instant,
    },
    Packet(RecPacket),
    End {
        recording: String,
        reply: oneshot::Sender<RecordingFiles>,
    },
}

impl Recorder {
    /// Spawns the writer thread ("convene-recorder"); `queue` bounds the packets in flight.
    pub fn start(queue: usize) -> (Recorder, mpsc::UnboundedReceiver<RecorderNotice>) {
        let (messages, receiver) = mpsc::unbounded_channel();
        let (notices, notice_receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let spawned = std::thread::Builder::new()
            .name("convene-recorder".into())
            .spawn(move || run(receiver, thread_counters, notices));
        if let Err(error) = spawned {
            // The receiver is gone with the closure: every begin answers `Stopped`.
            warn!(%error, "could not start the recorder thread: nothing will be recorded");
        }
        let shared = Shared {
            messages,
            counters,
            queue,
            active: Mutex::new(HashSet::new()),
        };
        (
            Recorder {
                shared: Arc::new(shared),
            },
            notice_receiver,
        )
    }

    /// Start recording `recording` into `dir` (created here, on the caller's thread); `started`
    /// is the time zero of its files' `start_ms`.
    pub fn begin(
        &self,
        recording: &str,
        dir: PathBuf,
        started: Instant,
    ) -> Result<(), RecorderError> {
        if self.shared.messages.is_closed() {
            return Err(RecorderError::Stopped);
        }
        std::fs::create_dir_all(&dir).map_err(|source| RecorderError::Folder {
            path: dir.clone(),
            source,
        })?;
        let mut active = self
            .shared
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !active.insert(recording.to_owned()) {
            return Err(RecorderError::AlreadyRecording(recording.to_owned()));
        }
        let begin = Message::Begin {
            recording: recording.to_owned(),
            dir,
            started,
        };
        if self.shared.messages.send(begin).is_err() {
            active.remove(recording);
            return Err(RecorderError::Stopped);
        }
        Ok(())
    }

    /// Called on the media threads for every recorded packet: never blocks; a full queue drops
    /// the packet and counts it.
    pub fn packet(&self, packet: RecPacket) {
        let counters = &self.shared.counters;
        if counters.in_flight.fetch_add(1, Ordering::Relaxed) >= self.shared.queue {
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.shared.messages.send(Message::Packet(packet)).is_err() {
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Close every file of `recording` (after every packet handed in before this call) and say
    /// what was written.
    pub async fn end(&self, recording: &str) -> RecordingFiles {
        self.shared
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(recording);
        let stopped = || RecordingFiles {
            recording: recording.to_owned(),
            tracks: Vec::new(),
            error: Some(RecorderError::Stopped.to_string()),
        };
        let (reply, answer) = oneshot::channel();
        let end = Message::End {
            recording: recording.to_owned(),
            reply,
        };
        if self.shared.messages.send(end).is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }

    /// Packets dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("queue", &self.shared.queue)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// The recorder thread: handles messages until every [`Recorder`] is dropped, then closes what
/// is still open.
fn run(
    mut receiver: mpsc::UnboundedReceiver<Message>,
    counters: Arc<Counters>,
    notices: mpsc::UnboundedSender<RecorderNotice>,
) {
    let mut writer = Writer {
        recordings: HashMap::new(),
        notices,
    };
    while let Some(message) = receiver.blocking_recv() {
        match message {
            Message::Begin {
                recording,
                dir,
                started,
            } => writer.begin(recording, dir, started),
            Message::Packet(packet) => {
                counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                writer.packet(&packet);
            }
            Message::End { recording, reply } => {
                let files = writer.end(&recording);
                let _ = reply.send(files);
            }
        }
    }
    let open: Vec<String> = writer.recordings.keys().cloned().collect();
    for recording in open {
        let files = writer.end(&recording);
        debug!(%recording, files = files.tracks.len(), "recording closed at shutdown");
    }
}

struct Writer {
    recordings: HashMap<String, Recording>,
    notices: mpsc::UnboundedSender<RecorderNotice>,
}

impl Writer {
    fn begin(&mut self, recording: String, dir: PathBuf, started: Instant) {
        debug!(%recording, dir = %dir.display(), "recording begun");
        self.recordings
            .entry(recording.clone())
            .or_insert_with(|| Recording {
                id: recording,
                dir,
                started,
                tracks: Vec::new(),
                by_sid: HashMap::new(),
                failed: None,
            });
    }

    fn packet(&mut self, packet: &RecPacket) {
        let Some(recording) = self.recordings.get_mut(&packet.track.recording) else {
            return;
        };
        if recording.failed.is_some() {
            return;
        }
        if let Err(failure) = recording.packet(packet, &self.notices) {
            recording.fail(failure, &self.notices);
        }
    }

    fn end(&mut self, id: &str) -> RecordingFiles {
        let Some(mut recording) = self.recordings.remove(id) else {
            return RecordingFiles {
                recording: id.to_owned(),
                tracks: Vec::new(),
                error: Some(format!("recording {id} was not begun")),
            };
        };
        if recording.failed.is_none()
            && let Err(failure) = recording.close()
        {
            recording.fail(failure, &self.notices);
        }
        debug!(recording = %id, error = ?recording.failed, "recording ended");
        RecordingFiles {
            recording: recording.id.clone(),
            tracks: recording
                .tracks
                .iter()
                .filter_map(|track| track.file(&recording.dir))
                .collect(),
            error: recording.failed,
        }
    }
}

/// A write error on one file.
struct Failure {
    file_name: String,
    error: io::Error,
}

struct Recording {
    id: String,
    dir: PathBuf,
    started: Instant,
    tracks: Vec<Track>,
    by_sid: HashMap<String, usize>,
    failed: Option<String>,
}

impl Recording {
    fn packet(
        &mut self,
        packet: &RecPacket,
        notices: &mpsc::UnboundedSender<RecorderNotice>,
    ) -> Result<(), Failure> {
        let index = match self.by_sid.get(&packet.track.track_sid) {
            Some(&index) => index,
            None => {
                let file_name = self.unused_file_name(&packet.track);
                self.tracks
                    .push(Track::new(packet.track.clone(), file_name));
                self.by_sid
                    .insert(packet.track.track_sid.clone(), self.tracks.len() - 1);
                self.tracks.len() - 1
            }
        };
        let track = &mut self.tracks[index];
        for frame in track.assembler.push(packet) {
            track.write(frame, self.started, &self.dir)?;
        }
        track.ask_for_keyframe(packet.at, notices);
        Ok(())
    }

    fn unused_file_name(&self, track: &RecTrack) -> String {
        let name = file_name(&track.identity, &track.track_sid, track.codec);
        let taken = |candidate: &str| self.tracks.iter().any(|t| t.file_name == candidate);
        if !taken(&name) {
            return name;
        }
        let (stem, extension) = name.rsplit_once('.').unwrap_or((&name, ""));
        (2..)
            .map(|n| format!("{stem}-{n}.{extension}"))
            .find(|candidate| !taken(candidate))
            .unwrap_or(name)
    }

    /// The end: the frames still held back are written, every file is closed.
    fn close(&mut self) -> Result<(), Failure> {
        for track in &mut self.tracks {
            for frame in track.assembler.finish() {
                track.write(frame, self.started, &self.dir)?;
            }
            track.close()?;
        }
        Ok(())
    }

    /// Stops the recording after a write error: the failed file is left as it is, the others
    /// are closed cleanly if they can be.
    fn fail(&mut self, failure: Failure, notices: &mpsc::UnboundedSender<RecorderNotice>) {
        let reason = format!("{}: {}", failure.file_name, failure.error);
        warn!(recording = %self.id, %reason, "recording failed: it stops writing");
        for track in &mut self.tracks {
            if track.file_name == failure.file_name {
                track.abandon();
            } else if let Err(other) = track.close() {
                warn!(recording = %self.id, file = %other.file_name, error = %other.error,
                    "could not close a file of the failed recording");
            }
        }
        self.failed = Some(reason.clone());
        let _ = notices.send(RecorderNotice::Failed {
            recording: self.id.clone(),
            reason,
        });
    }
}

struct Track {
    info: Arc<RecTrack>,
    assembler: Assembler,
    file_name: String,
    file: FileState,
    /// RTP time of the file's first frame (its time 0).
    first_time: u64,
    start_ms: u64,
    /// An H.264 keyframe came without the parameter sets a file header needs.
    header_wanted: bool,
    last_keyframe_request: Option<Instant>,
}

enum FileState {
    NotOpen,
    Open(Muxer<File>),
    Closed(Written),
}

impl Track {
    fn new(info: Arc<RecTrack>, file_name: String) -> Self {
        Track {
            assembler: Assembler::new(info.codec),
            info,
            file_name,
            file: FileState::NotOpen,
            first_time: 0,
            start_ms: 0,
            header_wanted: false,
            last_keyframe_request: None,
        }
    }

    fn failure(&self, error: io::Error) -> Failure {
        Failure {
            file_name: self.file_name.clone(),
            error,
        }
    }

    fn write(&mut self, frame: Frame, started: Instant, dir: &Path) -> Result<(), Failure> {
        if let FileState::NotOpen = self.file {
            if self.info.kind == RecKind::Video && !frame.keyframe {
                return Ok(());
            }
            let Some(header) = track_header(&self.info, &frame) else {
                self.header_wanted = true;
                return Ok(());
            };
            let path = dir.join(&self.file_name);
            let muxer = File::create(&path)
                .and_then(|file| Muxer::create(file, &header))
                .map_err(|error| self.failure(error))?;
            debug!(path = %path.display(), codec = self.info.codec.as_str(), "recording file opened");
            self.header_wanted = false;
            self.first_time = frame.time;
            self.start_ms = millis(frame.at.saturating_duration_since(started));
            self.file = FileState::Open(muxer);
        }
        let FileState::Open(muxer) = &mut self.file else {
            return Ok(());
        };
        let ticks = frame.time.saturating_sub(self.first_time);
        let ms = u64::try_from(u128::from(ticks) * 1000 / u128::from(self.info.clock_rate.max(1)))
            .unwrap_or(u64::MAX);
        let written = match self.info.codec {
            RecCodec::H264 => muxer.write_frame(ms, frame.keyframe, &length_prefixed(&frame.data)),
            RecCodec::Vp8 | RecCodec::Opus => muxer.write_frame(ms, frame.keyframe, &frame.data),
        };
        written.map_err(|error| self.failure(error))
    }

    fn close(&mut self) -> Result<(), Failure> {
        let FileState::Open(muxer) = &mut self.file else {
            return Ok(());
        };
        let finished = muxer.finish().and_then(|()| muxer.out.sync_data());
        let written = muxer.written();
        self.file = FileState::Closed(written);
        finished.map_err(|error| self.failure(error))?;
        debug!(file = %self.file_name, frames = written.frames, bytes = written.bytes,
            "recording file closed");
        Ok(())
    }

    /// After a write error on this file: no more writes; what is in it stays.
    fn abandon(&mut self) {
        if let FileState::Open(muxer) = &self.file {
            self.file = FileState::Closed(muxer.written());
        }
    }

    fn ask_for_keyframe(&mut self, at: Instant, notices: &mpsc::UnboundedSender<RecorderNotice>) {
        if self.info.kind != RecKind::Video
            || !(self.assembler.needs_keyframe() || self.header_wanted)
        {
            return;
        }
        if self
            .last_keyframe_request
            .is_some_and(|last| at.saturating_duration_since(last) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        self.last_keyframe_request = Some(at);
        debug!(track = %self.info.track_sid, "recording wants a keyframe");
        let _ = notices.send(RecorderNotice::KeyframeWanted {
            room: self.info.room.clone(),
            track_sid: self.info.track_sid.clone(),
        });
    }

    fn file(&self, dir: &Path) -> Option<TrackFile> {
        let written = match &self.file {
            FileState::NotOpen => return None,
            FileState::Open(muxer) => muxer.written(),
            FileState::Closed(written) => *written,
        };
        Some(TrackFile {
            file_name: self.file_name.clone(),
            path: dir.join(&self.file_name),
            track_sid: self.info.track_sid.clone(),
            identity: self.info.identity.clone(),
            name: self.info.name.clone(),
            kind: self.info.kind,
            codec: self.info.codec,
            bytes: written.bytes,
            start_ms: self.start_ms,
            duration_ms: written.duration_ms,
            frames: written.frames,
        })
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The file of a track: `identity-TR_xxx.webm`, or `.mkv` for H.264 (WebM holds VP8, VP9, AV1
/// and Opus only). Characters other than ASCII letters, digits, `-` and `_` become `_`.
pub fn file_name(identity: &str, track_sid: &str, codec: RecCodec) -> String {
    let extension = match codec {
        RecCodec::H264 => "mkv",
        RecCodec::Vp8 | RecCodec::Opus => "webm",
    };
    format!(
        "{}-{}.{extension}",
        file_safe(identity),
        file_safe(track_sid)
    )
}

fn file_safe(text: &str) -> String {
    let safe: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() { "_".into() } else { safe }
}

/// What a file's track header says about its one track.
struct TrackHeader {
    codec: RecCodec,
    uid: u64,
    name: String,
    codec_private: Option<Vec<u8>>,
    dimensions: Option<(u32, u32)>,
}

/// The header of a track's file, from its first frame; `None` for an H.264 keyframe without
/// its SPS and PPS (the `avcC` record needs them).
fn track_header(info: &RecTrack, first: &Frame) -> Option<TrackHeader> {
    let mut hasher = DefaultHasher::new();
    (&info.recording, &info.track_sid).hash(&mut hasher);
    let (codec_private, dimensions) = match info.codec {
        RecCodec::Opus => (Some(opus_head()), None),
        RecCodec::Vp8 => (
            None,
            vp8_dimensions(&first.data).map(|(w, h)| (u32::from(w), u32::from(h))),
        ),
        RecCodec::H264 => {
            let units = annex_b_nal_units(&first.data);
            let sps = units.iter().find(|unit| unit[0] & 0x1f == 7)?;
            let pps = units.iter().find(|unit| unit[0] & 0x1f == 8)?;
            (
                Some(avc_decoder_configuration(sps, pps)?),
                h264_sps_dimensions(sps),
            )
        }
    };
    Some(TrackHeader {
        codec: info.codec,
        uid: hasher.finish().max(1),
        name: if info.name.is_empty() {
            info.identity.clone()
        } else {
            info.name.clone()
        },
        codec_private,
        dimensions,
    })
}

/// The Opus identification header (RFC 7845 section 5.1) Matroska keeps as CodecPrivate:
/// 2 channels (RFC 7587's `opus/48000/2`), no pre-skip, 48 kHz, mapping family 0.
fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 2]);
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The `avcC` record (ISO 14496-15 section 5.2.4.1) of one SPS and one PPS, with 4-byte NAL
/// unit lengths; `None` if either is too short or too long.
fn avc_decoder_configuration(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    if sps.len() < 4 || pps.is_empty() {
        return None;
    }
    let mut record = vec![1, sps[1], sps[2], sps[3], 0xfc | 3, 0xe0 | 1];
    record.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
    record.extend_from_slice(sps);
    record.push(1);
    record.extend_from_slice(&u16::try_from(pps.len()).ok()?.to_be_bytes());
    record.extend_from_slice(pps);
    Some(record)
}

/// Annex-B H.264 as Matroska blocks hold it with an `avcC`: each NAL unit after its 4-byte
/// length.
fn length_prefixed(annex_b: &[u8]) -> Vec<u8> {
    let units = annex_b_nal_units(annex_b);
    let mut out = Vec::with_capacity(annex_b.len() + 4 * units.len());
    for unit in units {
        out.extend_from_slice(&u32::try_from(unit.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(unit);
    }
    out
}

/// What a file holds so far (on disk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Written {
    bytes: u64,
    frames: u64,
    duration_ms: u64,
}

/// Room left after the EBML header and the segment's start for the seek head, rewritten at the
/// end to point at the cues too.
const SEEK_HEAD_SPACE: usize = 96;

/// Block times in milliseconds.
const TIMESTAMP_SCALE_NS: u64 = 1_000_000;

/// Opus needs 80 ms decoded before a seek target (the WebM rule for Opus).
const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;

/// A Matroska file of one track, written as it goes: the header at once, each cluster when it is
/// complete (kept in memory until then), the cues and the patched sizes and duration at
/// [`Muxer::finish`]. Elements are made by `webm-iterable`; this type only decides what goes
/// where.
struct Muxer<W: Write + Seek> {
    out: W,
    /// Bytes written: the next element's position.
    position: u64,
    /// Where the segment's size is (8 bytes, unknown until the end).
    segment_size_at: u64,
    /// Where the segment's data starts (positions in the seek head and cues count from here).
    segment_start: u64,
    seek_head_at: u64,
    info_at: u64,
    tracks_at: u64,
    video: bool,
    cluster: Option<PendingCluster>,
    /// (time, cluster position) of each cluster that starts with a keyframe.
    cues: Vec<(u64, u64)>,
    /// The last frame's time, and the step before it (the last frame's assumed length).
    last_ms: Option<u64>,
    step_ms: u64,
    written: Written,
}

struct PendingCluster {
    start_ms: u64,
    keyframe: bool,
    blocks: Vec<MatroskaSpec>,
    last_ms: u64,
}

fn element_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("Matroska element: {error}"))
}

/// One element at the top level (the EBML header), or the unknown-size segment start.
fn encode_top(tag: &MatroskaSpec, unknown_size: bool) -> io::Result<Vec<u8>> {
    let mut writer = WebmWriter::new(Vec::new());
    if unknown_size {
        writer.write_advanced(tag, WriteOptions::is_unknown_sized_element())
    } else {
        writer.write(tag)
    }
    .map_err(element_error)?;
    writer.into_inner().map_err(element_error)
}

/// One element inside the segment (the writer checks element paths, so it is written after a
/// segment start that is then cut off); `size_length` forces the length of its size field.
fn encode_in_segment(tag: &MatroskaSpec, size_length: Option<usize>) -> io::Result<Vec<u8>> {
    let segment_start = MatroskaSpec::Segment(Master::Start);
    let prefix = encode_top(&segment_start, true)?;
    let mut writer = WebmWriter::new(Vec::new());
    writer
        .write_advanced(&segment_start, WriteOptions::is_unknown_sized_element())
        .map_err(element_error)?;
    match size_length {
        Some(length) => writer.write_advanced(tag, WriteOptions::set_size_byte_count(length)),
        None => writer.write(tag),
    }
    .map_err(element_error)?;
    let mut bytes = writer.into_inner().map_err(element_error)?;
    if !bytes.starts_with(&prefix) {
        return Err(element_error(
            "the segment start is not where it was written",
        ));
    }
    bytes.drain(..prefix.len());
    Ok(bytes)
}

fn id_bytes(tag: &MatroskaSpec) -> Vec<u8> {
    tag.get_id()
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect()
}

/// The Info element; at the start a Void stands where the Duration goes at the end (both 11
/// bytes), so a file cut short has no wrong duration.
fn info_element(duration_ms: Option<u64>) -> MatroskaSpec {
    MatroskaSpec::Info(Master::Full(vec![
        MatroskaSpec::TimestampScale(TIMESTAMP_SCALE_NS),
        MatroskaSpec::MuxingApp("convene".into()),
        MatroskaSpec::WritingApp(format!("convene {}", env!("CARGO_PKG_VERSION"))),
        match duration_ms {
            Some(ms) => MatroskaSpec::Duration(ms as f64),
            None => MatroskaSpec::Void(vec![0; 9]),
        },
    ]))
}

fn tracks_element(header: &TrackHeader) -> MatroskaSpec {
    let video = header.codec != RecCodec::Opus;
    let mut entry = vec![
        MatroskaSpec::TrackNumber(1),
        MatroskaSpec::TrackUID(header.uid),
        MatroskaSpec::TrackType(if video { 1 } else { 2 }),
        MatroskaSpec::FlagLacing(0),
        MatroskaSpec::Language("und".into()),
        MatroskaSpec::Name(header.name.clone()),
        MatroskaSpec::CodecID(
            match header.codec {
                RecCodec::Opus => "A_OPUS",
                RecCodec::Vp8 => "V_VP8",
                RecCodec::H264 => "V_MPEG4/ISO/AVC",
            }
            .into(),
        ),
    ];
    if let Some(private) = &header.codec_private {
        entry.push(MatroskaSpec::CodecPrivate(private.clone()));
    }
    if video {
        if let Some((width, height)) = header.dimensions {
            entry.push(MatroskaSpec::Video(Master::Full(vec![
                MatroskaSpec::PixelWidth(width.into()),
                MatroskaSpec::PixelHeight(height.into()),
            ])));
        }
    } else {
        entry.push(MatroskaSpec::SeekPreRoll(OPUS_SEEK_PRE_ROLL_NS));
        entry.push(MatroskaSpec::Audio(Master::Full(vec![
            MatroskaSpec::SamplingFrequency(48_000.0),
            MatroskaSpec::Channels(2),
        ])));
    }
    MatroskaSpec::Tracks(Master::Full(vec![MatroskaSpec::TrackEntry(Master::Full(
        entry,
    ))]))
}

/// The seek head pointing at `entries` (element, position in the segment), filled up with a
/// Void to exactly [`SEEK_HEAD_SPACE`] bytes.
fn seek_head(entries: &[(MatroskaSpec, u64)]) -> io::Result<Vec<u8>> {
    let seek_head = MatroskaSpec::SeekHead(Master::Full(
        entries
            .iter()
            .map(|(element, position)| {
                MatroskaSpec::Seek(Master::Full(vec![
                    MatroskaSpec::SeekID(id_bytes(element)),
                    MatroskaSpec::SeekPosition(*position),
                ]))
            })
            .collect(),
    ));
    let mut bytes = encode_in_segment(&seek_head, None)?;
    if SEEK_HEAD_SPACE.checked_sub(bytes.len()) == Some(1) {
        // A Void takes at least 2 bytes: a longer size field takes up the one left.
        bytes = encode_in_segment(&seek_head, Some(2))?;
    }
    let left = SEEK_HEAD_SPACE
        .checked_sub(bytes.len())
        .ok_or_else(|| element_error("the seek head outgrew its space"))?;
    if left >= 2 {
        bytes.extend(encode_in_segment(
            &MatroskaSpec::Void(vec![0; left - 2]),
            None,
        )?);
    }
    Ok(bytes)
}

fn info_start() -> MatroskaSpec {
    MatroskaSpec::Info(Master::Start)
}

fn tracks_start() -> MatroskaSpec {
    MatroskaSpec::Tracks(Master::Start)
}

impl<W: Write + Seek> Muxer<W> {
    /// Writes the file's header: EBML header, segment start (size unknown until the end), seek
    /// head, info and the track.
    fn create(mut out: W, header: &TrackHeader) -> io::Result<Self> {
        let doc_type = match header.codec {
            RecCodec::H264 => "matroska",
            RecCodec::Vp8 | RecCodec::Opus => "webm",
        };
        let mut head = encode_top(
            &MatroskaSpec::Ebml(Master::Full(vec![
                MatroskaSpec::EbmlVersion(1),
                MatroskaSpec::EbmlReadVersion(1),
                MatroskaSpec::EbmlMaxIdLength(4),
                MatroskaSpec::EbmlMaxSizeLength(8),
                MatroskaSpec::DocType(doc_type.into()),
                MatroskaSpec::DocTypeVersion(4),
                MatroskaSpec::DocTypeReadVersion(2),
            ])),
            false,
        )?;
        head.extend(encode_top(&MatroskaSpec::Segment(Master::Start), true)?);
        let segment_start = head.len() as u64;
        let segment_size_at = segment_start - 8;
        let info = encode_in_segment(&info_element(None), None)?;
        let tracks = encode_in_segment(&tracks_element(header), None)?;
        let info_position = SEEK_HEAD_SPACE as u64;
        let tracks_position = info_position + info.len() as u64;
        head.extend(seek_head(&[
            (info_start(), info_position),
            (tracks_start(), tracks_position),
        ])?);
        head.extend(&info);
        head.extend(&tracks);
        out.write_all(&head)?;
        out.flush()?;
        let position = head.len() as u64;
        Ok(Muxer {
            out,
            position,
            segment_size_at,
            segment_start,
            seek_head_at: segment_start,
            info_at: segment_start + info_position,
            tracks_at: segment_start + tracks_position,
            video: header.codec != RecCodec::Opus,
            cluster: None,
            cues: Vec::new(),
            last_ms: None,
            step_ms: if header.codec == RecCodec::Opus {
                20
            } else {
                0
            },
            written: Written {
                bytes: position,
                ..Written::default()
            },
        })
    }

    /// Adds a frame at `ms` (kept monotonic) to the current cluster; a video keyframe, or the
    /// cluster reaching [`CLUSTER_SPAN_MS`], writes the cluster out and starts the next.
    fn write_frame(&mut self, ms: u64, keyframe: bool, data: &[u8]) -> io::Result<()> {
        let ms = match self.last_ms {
            // Strictly increasing, a frame's length apart: a switch to another simulcast layer
            // starts with the same picture the last frame of the old layer showed, at about
            // its time; players (and ffmpeg at a constant frame rate) refuse two frames at one
            // time.
            Some(last) if ms <= last => last + self.step_ms.clamp(1, 100),
            Some(last) => {
                self.step_ms = ms - last;
                ms
            }
            None => ms,
        };
        self.last_ms = Some(ms);
        let full = self.cluster.as_ref().is_some_and(|cluster| {
            (self.video && keyframe) || ms - cluster.start_ms >= CLUSTER_SPAN_MS
        });
        if full {
            self.flush_cluster()?;
        }
        let cluster = self.cluster.get_or_insert_with(|| PendingCluster {
            start_ms: ms,
            keyframe,
            blocks: Vec::new(),
            last_ms: ms,
        });
        let relative = i16::try_from(ms - cluster.start_ms).unwrap_or(i16::MAX);
        cluster.blocks.push(
            SimpleBlock::new_uncheked(data, 1, relative, false, None, false, keyframe).into(),
        );
        cluster.last_ms = ms;
        Ok(())
    }

    fn flush_cluster(&mut self) -> io::Result<()> {
        let Some(cluster) = self.cluster.take() else {
            return Ok(());
        };
        let frames = cluster.blocks.len() as u64;
        let mut children = Vec::with_capacity(cluster.blocks.len() + 1);
        children.push(MatroskaSpec::Timestamp(cluster.start_ms));
        children.extend(cluster.blocks);
        let bytes = encode_in_segment(&MatroskaSpec::Cluster(Master::Full(children)), None)?;
        let position = self.position - self.segment_start;
        self.append(&bytes)?;
        if cluster.keyframe {
            self.cues.push((cluster.start_ms, position));
        }
        self.written.frames += frames;
        self.written.duration_ms = cluster.last_ms + self.step_ms;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.out.flush()?;
        self.position += bytes.len() as u64;
        self.written.bytes = self.position;
        Ok(())
    }

    fn patch(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.out.seek(SeekFrom::Start(at))?;
        self.out.write_all(bytes)
    }

    /// Writes the last cluster and the cues, then patches the segment size, the seek head and
    /// the duration. The muxer takes no frames after this.
    fn finish(&mut self) -> io::Result<()> {
        self.flush_cluster()?;
        let mut entries = vec![
            (info_start(), self.info_at - self.segment_start),
            (tracks_start(), self.tracks_at - self.segment_start),
        ];
        if !self.cues.is_empty() {
            let cue_points = self
                .cues
                .iter()
                .map(|&(time, position)| {
                    MatroskaSpec::CuePoint(Master::Full(vec![
                        MatroskaSpec::CueTime(time),
                        MatroskaSpec::CueTrackPositions(Master::Full(vec![
                            MatroskaSpec::CueTrack(1),
                            MatroskaSpec::CueClusterPosition(position),
                        ])),
                    ]))
                })
                .collect();
            let cues = encode_in_segment(&MatroskaSpec::Cues(Master::Full(cue_points)), None)?;
            entries.push((
                MatroskaSpec::Cues(Master::Start),
                self.position - self.segment_start,
            ));
            self.append(&cues)?;
        }
        let end = self.position;
        let size = (end - self.segment_start)
            .as_vint_with_length::<8>()
            .map_err(element_error)?;
        self.patch(self.segment_size_at, &size)?;
        let seek_head = seek_head(&entries)?;
        self.patch(self.seek_head_at, &seek_head)?;
        let info = encode_in_segment(&info_element(Some(self.written.duration_ms)), None)?;
        let placeholder = encode_in_segment(&info_element(None), None)?;
        if info.len() != placeholder.len() {
            return Err(element_error("the duration does not fit its placeholder"));
        }
        self.patch(self.info_at, &info)?;
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()
    }

    fn written(&self) -> Written {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use webm_iterable::WebmIterator;

    use super::*;

    fn header(codec: RecCodec) -> TrackHeader {
        TrackHeader {
            codec,
            uid: 7,
            name: "Alice".into(),
            codec_private: (codec == RecCodec::Opus).then(opus_head),
            dimensions: (codec != RecCodec::Opus).then_some((320, 240)),
        }
    }

    /// Every element of a file, Masters as Start/End markers, with the file's bytes.
    fn elements(bytes: &[u8]) -> Vec<MatroskaSpec> {
        let mut source = Cursor::new(bytes.to_vec());
        WebmIterator::new(&mut source, &[])
            .map(|tag| tag.expect("a well-formed file"))
            .collect()
    }

    /// (cluster time, [(block time relative, keyframe)]) of each cluster.
    fn clusters(elements: &[MatroskaSpec]) -> Vec<(u64, Vec<(i16, bool)>)> {
        let mut clusters = Vec::new();
        for element in elements {
            match element {
                MatroskaSpec::Timestamp(time) => clusters.push((*time, Vec::new())),
                MatroskaSpec::SimpleBlock(_) => {
                    let block = SimpleBlock::try_from(element).expect("a simple block");
                    clusters
                        .last_mut()
                        .expect("blocks are inside clusters")
                        .1
                        .push((block.timestamp, block.keyframe));
                }
                _ => {}
            }
        }
        clusters
    }

    #[test]
    fn clusters_start_at_video_keyframes_and_at_least_every_second() {
        let mut muxer = Muxer::create(Cursor::new(Vec::new()), &header(RecCodec::Vp8)).unwrap();
        // 2.5 s at 10 frames a second, keyframes at 0 and 400 ms only.
        for i in 0..25u64 {
            muxer
                .write_frame(i * 100, i == 0 || i == 4, &[i as u8; 3])
                .unwrap();
        }
        muxer.finish().unwrap();
        let file = muxer.out.into_inner();
        let elements = elements(&file);
        let keyframe = |t: i16| (t, t == 0);
        assert_eq!(
            clusters(&elements),
            vec![
                (
                    0,
                    vec![keyframe(0), (100, false), (200, false), (300, false)]
                ),
                (400, (0..10).map(|i| (i * 100, i == 0)).collect()),
                (1400, (0..10).map(|i| (i * 100, false)).collect()),
                (2400, vec![(0, false)]),
            ]
        );
        assert!(elements.contains(&MatroskaSpec::Duration(2500.0)));
        assert!(elements.contains(&MatroskaSpec::CueTime(400)));
        assert!(
            !elements.contains(&MatroskaSpec::CueTime(1400)),
            "not a keyframe"
        );
        assert_eq!(
            muxer.written,
            Written {
                bytes: file.len() as u64,
                frames: 25,
                duration_ms: 2500
            }
        );
    }

    #[test]
    fn a_file_cut_at_any_cluster_boundary_reads_back() {
        let mut muxer = Muxer::create(Cursor::new(Vec::new()), &header(RecCodec::Opus)).unwrap();
        let mut boundaries = vec![muxer.position];
        for i in 0..120u64 {
            muxer
                .write_frame(i * 20, true, &[0xf8, 0xff, 0xfe])
                .unwrap();
            if muxer.position != *boundaries.last().unwrap() {
                boundaries.push(muxer.position);
            }
        }
        // Nothing finished: what is on "disk" is the header and the whole clusters so far.
        let partial = muxer.out.get_ref().clone();
        assert_eq!(
            boundaries.len(),
            3,
            "clusters of a second: two written, one pending"
        );
        let elements = elements(&partial);
        let clusters = clusters(&elements);
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[1].0, 1000);
        assert_eq!(clusters[1].1.len(), 50);
        assert!(
            !elements
                .iter()
                .any(|e| matches!(e, MatroskaSpec::Duration(_))),
            "no duration before the end"
        );
    }

    #[test]
    fn finish_patches_segment_size_seek_head_and_duration() {
        let mut muxer = Muxer::create(Cursor::new(Vec::new()), &header(RecCodec::Opus)).unwrap();
        for i in 0..100u64 {
            muxer
                .write_frame(i * 20, true, &[0xf8, 0xff, 0xfe])
                .unwrap();
        }
        muxer.finish().unwrap();
        let file = muxer.out.into_inner();
        let elements = elements(&file);
        assert!(elements.contains(&MatroskaSpec::Duration(2000.0)));
        // The segment's size is the rest of the file.
        let segment = muxer.segment_start as usize;
        assert_eq!(
            &file[segment - 8..segment],
            &((file.len() - segment) as u64)
                .as_vint_with_length::<8>()
                .unwrap()
        );
        // The seek head points at the info, the tracks and the cues.
        let positions: Vec<u64> = elements
            .iter()
            .filter_map(|e| match e {
                MatroskaSpec::SeekPosition(p) => Some(*p),
                _ => None,
            })
            .collect();
        let ids = [
            info_start().get_id(),
            tracks_start().get_id(),
            MatroskaSpec::Cues(Master::Start).get_id(),
        ];
        assert_eq!(positions.len(), 3);
        for (position, id) in positions.iter().zip(ids) {
            let at = segment + *position as usize;
            let expected: Vec<u8> = id
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            assert_eq!(&file[at..at + 4], &expected[..]);
        }
        // Audio: every cluster is a cue point.
        let cue_times: Vec<u64> = elements
            .iter()
            .filter_map(|e| match e {
                MatroskaSpec::CueTime(t) => Some(*t),
                _ => None,
            })
            .collect();
        assert_eq!(cue_times, vec![0, 1000]);
        assert!(elements.contains(&MatroskaSpec::CodecPrivate(opus_head())));
    }

    #[test]
    fn times_never_go_back_nor_repeat() {
        let mut muxer = Muxer::create(Cursor::new(Vec::new()), &header(RecCodec::Vp8)).unwrap();
        muxer.write_frame(0, true, &[1]).unwrap();
        muxer.write_frame(40, false, &[2]).unwrap();
        // Earlier than the last, then at the same time: each a step after the one before.
        muxer.write_frame(20, false, &[3]).unwrap();
        muxer.write_frame(80, false, &[4]).unwrap();
        muxer.write_frame(130, false, &[5]).unwrap();
        muxer.finish().unwrap();
        let file = muxer.out.into_inner();
        assert_eq!(
            clusters(&elements(&file)),
            vec![(
                0,
                vec![
                    (0, true),
                    (40, false),
                    (80, false),
                    (120, false),
                    (130, false)
                ]
            )]
        );
    }

    #[test]
    fn the_handle_can_be_shared_between_threads() {
        fn shared<T: Clone + Send + Sync + 'static>() {}
        shared::<Recorder>();
    }

    #[test]
    fn file_names_are_file_system_safe() {
        assert_eq!(
            file_name("alice", "TR_abc", RecCodec::Vp8),
            "alice-TR_abc.webm"
        );
        assert_eq!(
            file_name("../bob smith/é", "TR_x", RecCodec::H264),
            "___bob_smith__-TR_x.mkv"
        );
        assert_eq!(file_name("", "TR_x", RecCodec::Opus), "_-TR_x.webm");
        assert_eq!(
            file_name(&"a".repeat(300), "TR_x", RecCodec::Opus).len(),
            64 + 10
        );
    }

    #[test]
    fn opus_head_and_avc_configuration() {
        assert_eq!(
            opus_head(),
            [&b"OpusHead"[..], &[1, 2, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 0]].concat()
        );
        let sps = [0x67, 0x42, 0xc0, 0x0d, 0xd9];
        let pps = [0x68, 0xcb];
        assert_eq!(
            avc_decoder_configuration(&sps, &pps).unwrap(),
            vec![
                1, 0x42, 0xc0, 0x0d, 0xff, 0xe1, 0, 5, 0x67, 0x42, 0xc0, 0x0d, 0xd9, 1, 0, 2, 0x68,
                0xcb
            ]
        );
        let annex_b = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 3];
        assert_eq!(
            length_prefixed(&annex_b),
            vec![0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x65, 3]
        );
    }
}
