//! The recorder against real media: VP8 and H.264 made by ffmpeg's encoders and Opus packets
//! from libopus, packetized as a browser sends them (RFC 7741, RFC 6184, RFC 7587), recorded,
//! and the files checked with ffprobe and ffmpeg's decoders. These tests need ffmpeg (Debian's
//! `ffmpeg` package); without it they fail, unless `CONVENE_SKIP_FFMPEG_TESTS=1` says to skip
//! them. The tests of the recorder's own rules (queue, keyframe requests, recordings not begun)
//! use made-up payloads and need nothing.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use convene_sfu::record::assemble::annex_b_nal_units;
use convene_sfu::record::{RecCodec, RecKind, RecPacket, RecTrack};
use convene_sfu::{Recorder, RecorderError, RecorderNotice, RecordingFiles, TrackFile};
use serde_json::Value;

/// Whether ffmpeg and ffprobe can be run; without them a test fails, or is skipped (returns
/// false) when `CONVENE_SKIP_FFMPEG_TESTS=1`.
fn ffmpeg_ready() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if runs("ffmpeg") && runs("ffprobe") {
        return true;
    }
    if std::env::var("CONVENE_SKIP_FFMPEG_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: ffmpeg/ffprobe not found and CONVENE_SKIP_FFMPEG_TESTS=1");
        return false;
    }
    panic!(
        "the recorder tests need ffmpeg and ffprobe (apt-get install ffmpeg); \
         set CONVENE_SKIP_FFMPEG_TESTS=1 to skip them"
    );
}

fn ffmpeg(args: &[&str]) {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// VP8 frames of a test pattern, 320x240 at 30 per second, a keyframe every 30.
fn vp8_frames(work: &Path, seconds: u32) -> Vec<Vec<u8>> {
    let path = work.join("video.ivf");
    let duration = seconds.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-t",
        &duration,
        "-c:v",
        "libvpx",
        "-b:v",
        "600k",
        "-g",
        "30",
        "-keyint_min",
        "30",
        "-auto-alt-ref",
        "0",
        "-f",
        "ivf",
        path.to_str().unwrap(),
    ]);
    let ivf = std::fs::read(&path).unwrap();
    assert_eq!(&ivf[..4], b"DKIF");
    let mut frames = Vec::new();
    let mut at = usize::from(u16::from_le_bytes([ivf[6], ivf[7]]));
    while at + 12 <= ivf.len() {
        let size = u32::from_le_bytes(ivf[at..at + 4].try_into().unwrap()) as usize;
        frames.push(ivf[at + 12..at + 12 + size].to_vec());
        at += 12 + size;
    }
    frames
}

/// Opus packets of a 440 Hz tone, 20 ms each, from an Ogg file (RFC 7845).
fn opus_packets(work: &Path, seconds: u32) -> Vec<Vec<u8>> {
    let path = work.join("audio.ogg");
    let duration = seconds.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &duration,
        "-c:a",
        "libopus",
        "-b:a",
        "32k",
        "-frame_duration",
        "20",
        "-f",
        "ogg",
        path.to_str().unwrap(),
    ]);
    let ogg = std::fs::read(&path).unwrap();
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= ogg.len() {
        assert_eq!(&ogg[at..at + 4], b"OggS");
        let segments = usize::from(ogg[at + 26]);
        let mut body = at + 27 + segments;
        for &lacing in &ogg[at + 27..at + 27 + segments] {
            current.extend_from_slice(&ogg[body..body + usize::from(lacing)]);
            body += usize::from(lacing);
            if lacing < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = body;
    }
    assert!(packets[0].starts_with(b"OpusHead") && packets[1].starts_with(b"OpusTags"));
    packets.split_off(2)
}

/// H.264 access units (their NAL units, access unit delimiters left out) of a test pattern,
/// 320x240 at 30 per second, constrained baseline as WebRTC sends it, an IDR every 30 frames
/// with its SPS and PPS.
fn h264_access_units(work: &Path, seconds: u32) -> Vec<Vec<Vec<u8>>> {
    let path = work.join("video.h264");
    let duration = seconds.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=30",
        "-t",
        &duration,
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-g",
        "30",
        "-x264-params",
        "aud=1:repeat-headers=1:scenecut=0",
        "-bsf:v",
        "h264_mp4toannexb",
        "-f",
        "h264",
        path.to_str().unwrap(),
    ]);
    let stream = std::fs::read(&path).unwrap();
    let mut units: Vec<Vec<Vec<u8>>> = Vec::new();
    for nal in annex_b_nal_units(&stream) {
        if nal[0] & 0x1f == 9 {
            units.push(Vec::new());
        } else {
            units.last_mut().expect("an AUD first").push(nal.to_vec());
        }
    }
    units
}

const MTU_PAYLOAD: usize = 1000;

/// Makes one track's RTP packets as a browser would, numbered from 0.
struct Packetizer {
    track: Arc<RecTrack>,
    seq: u64,
    zero: Instant,
}

impl Packetizer {
    fn new(
        recording: &str,
        track_sid: &str,
        identity: &str,
        codec: RecCodec,
        zero: Instant,
    ) -> Self {
        let audio = codec == RecCodec::Opus;
        Packetizer {
            track: Arc::new(RecTrack {
                recording: recording.into(),
                room: "room-1".into(),
                track_sid: track_sid.into(),
                identity: identity.into(),
                name: format!("{identity} (name)"),
                kind: if audio {
                    RecKind::Audio
                } else {
                    RecKind::Video
                },
                codec,
                clock_rate: if audio { 48_000 } else { 90_000 },
            }),
            seq: 0,
            zero,
        }
    }

    fn packet(&mut self, time: u64, marker: bool, payload: Vec<u8>, at_ms: f64) -> RecPacket {
        self.seq += 1;
        RecPacket {
            track: self.track.clone(),
            seq: self.seq,
            time,
            marker,
            payload: payload.into(),
            at: self.zero + Duration::from_micros((at_ms * 1000.0).round() as u64),
        }
    }

    /// Frame `index` (30 a second) split into packets with a descriptor carrying a 15-bit
    /// picture id, S on the first, the marker on the last.
    fn vp8(&mut self, index: u64, frame: &[u8], at_ms: f64) -> Vec<RecPacket> {
        let chunks: Vec<&[u8]> = frame.chunks(MTU_PAYLOAD).collect();
        let picture_id = index as u16 & 0x7fff;
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let start = if i == 0 { 0x10 } else { 0 };
                let mut payload = vec![
                    0x80 | start,
                    0x80,
                    0x80 | (picture_id >> 8) as u8,
                    picture_id as u8,
                ];
                payload.extend_from_slice(chunk);
                self.packet(index * 3000, i == chunks.len() - 1, payload, at_ms)
            })
            .collect()
    }

    /// An access unit: SPS and PPS together in a STAP-A, NAL units up to the MTU alone, longer
    /// ones in FU-A fragments.
    fn h264(&mut self, index: u64, nals: &[Vec<u8>], at_ms: f64) -> Vec<RecPacket> {
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let parameter_sets: Vec<&Vec<u8>> = nals
            .iter()
            .filter(|n| matches!(n[0] & 0x1f, 7 | 8))
            .collect();
        if !parameter_sets.is_empty() {
            let mut stap = vec![24 | (parameter_sets[0][0] & 0x60)];
            for nal in parameter_sets {
                stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                stap.extend_from_slice(nal);
            }
            payloads.push(stap);
        }
        for nal in nals.iter().filter(|n| !matches!(n[0] & 0x1f, 7 | 8)) {
            if nal.len() <= MTU_PAYLOAD {
                payloads.push(nal.clone());
                continue;
            }
            let chunks: Vec<&[u8]> = nal[1..].chunks(MTU_PAYLOAD).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let mut header = nal[0] & 0x1f;
                if i == 0 {
                    header |= 0x80;
                }
                if i == chunks.len() - 1 {
                    header |= 0x40;
                }
                payloads.push([&[(nal[0] & 0xe0) | 28, header][..], chunk].concat());
            }
        }
        let count = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| self.packet(index * 3000, i == count - 1, payload, at_ms))
            .collect()
    }

    /// Opus packet `index` (20 ms each).
    fn opus(&mut self, index: u64, packet: &[u8], at_ms: f64) -> RecPacket {
        self.packet(index * 960, true, packet.to_vec(), at_ms)
    }
}

/// ffprobe's view of a file: format duration, and the stream's codec, size and frames decoded.
fn probe(path: &Path) -> Value {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("format=duration:stream=codec_name,width,height,nb_read_frames")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ffprobe's JSON")
}

fn stream_field<'a>(probe: &'a Value, field: &str) -> &'a Value {
    &probe["streams"][0][field]
}

fn frames_read(probe: &Value) -> u64 {
    stream_field(probe, "nb_read_frames")
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {probe}"))
}

fn duration(probe: &Value) -> f64 {
    probe["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {probe}"))
}

/// What ffmpeg's decoder reports as errors when it decodes the whole file (empty: none).
fn decode_errors(path: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg could not decode {}",
        path.display()
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn track_file<'a>(files: &'a RecordingFiles, track_sid: &str) -> &'a TrackFile {
    files
        .tracks
        .iter()
        .find(|t| t.track_sid == track_sid)
        .unwrap_or_else(|| panic!("no file for {track_sid} in {files:#?}"))
}

fn notices(
    receiver: &mut tokio::sync::mpsc::UnboundedReceiver<RecorderNotice>,
) -> Vec<RecorderNotice> {
    std::iter::from_fn(|| receiver.try_recv().ok()).collect()
}

#[tokio::test]
async fn vp8_and_opus_are_written_to_webm_files_that_play_whole() {
    if !ffmpeg_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let video = vp8_frames(work.path(), 3);
    let audio = opus_packets(work.path(), 3);
    // libopus adds a packet for its encoder delay.
    assert_eq!(video.len(), 90);
    assert!(
        (150..=152).contains(&audio.len()),
        "{} Opus packets",
        audio.len()
    );
    let audio_frames = audio.len() as u64;

    let (recorder, mut notice_receiver) = Recorder::start(10_000);
    let started = Instant::now();
    let dir = work.path().join("RE_1");
    recorder.begin("RE_1", dir.clone(), started).unwrap();

    // Both tracks start 100 ms after the recording; packets in arrival order, with every
    // fifth video frame's packets reversed (retransmissions) and some packets twice.
    let mut vp8 = Packetizer::new(
        "RE_1",
        "TR_video",
        "alice@example.com",
        RecCodec::Vp8,
        started,
    );
    let mut opus = Packetizer::new(
        "RE_1",
        "TR_audio",
        "alice@example.com",
        RecCodec::Opus,
        started,
    );
    let mut packets: Vec<RecPacket> = Vec::new();
    for (i, frame) in video.iter().enumerate() {
        let mut frame_packets = vp8.vp8(i as u64, frame, 100.0 + i as f64 * 1000.0 / 30.0);
        if i % 5 == 4 {
            frame_packets.reverse();
        }
        if i % 10 == 3 {
            frame_packets.push(frame_packets[0].clone());
        }
        packets.extend(frame_packets);
    }
    for (i, packet) in audio.iter().enumerate() {
        packets.push(opus.opus(i as u64, packet, 100.0 + i as f64 * 20.0));
    }
    packets.sort_by_key(|p| p.at);
    for packet in packets {
        recorder.packet(packet);
    }
    let files = recorder.end("RE_1").await;

    assert_eq!(files.error, None);
    assert_eq!(files.tracks.len(), 2);
    assert_eq!(recorder.dropped(), 0);
    assert_eq!(
        notices(&mut notice_receiver),
        vec![],
        "the first frame was a keyframe"
    );

    let video_file = track_file(&files, "TR_video");
    assert_eq!(video_file.file_name, "alice_example_com-TR_video.webm");
    assert_eq!(video_file.path, dir.join(&video_file.file_name));
    assert_eq!(
        (video_file.kind, video_file.codec, video_file.frames),
        (RecKind::Video, RecCodec::Vp8, 90)
    );
    assert_eq!(video_file.start_ms, 100);
    // The last frame's time (89 / 30 s, in whole ms) and one frame.
    assert_eq!(video_file.duration_ms, 2966 + 33);
    assert_eq!(video_file.identity, "alice@example.com");
    assert_eq!(
        video_file.bytes,
        std::fs::metadata(&video_file.path).unwrap().len()
    );

    let audio_file = track_file(&files, "TR_audio");
    assert_eq!(audio_file.file_name, "alice_example_com-TR_audio.webm");
    assert_eq!(
        (audio_file.kind, audio_file.codec, audio_file.frames),
        (RecKind::Audio, RecCodec::Opus, audio_frames)
    );
    assert_eq!(audio_file.start_ms, 100);
    assert_eq!(audio_file.duration_ms, audio_frames * 20);

    let video_probe = probe(&video_file.path);
    assert_eq!(stream_field(&video_probe, "codec_name"), "vp8");
    assert_eq!(stream_field(&video_probe, "width"), 320);
    assert_eq!(stream_field(&video_probe, "height"), 240);
    assert_eq!(frames_read(&video_probe), 90);
    assert!((duration(&video_probe) - 3.0).abs() < 0.2, "{video_probe}");
    assert_eq!(decode_errors(&video_file.path), "");

    let audio_probe = probe(&audio_file.path);
    assert_eq!(stream_field(&audio_probe, "codec_name"), "opus");
    assert_eq!(frames_read(&audio_probe), audio_frames);
    assert!((duration(&audio_probe) - 3.0).abs() < 0.2, "{audio_probe}");
    assert_eq!(decode_errors(&audio_file.path), "");
}

#[tokio::test]
async fn h264_is_written_to_a_matroska_file_that_plays_whole() {
    if !ffmpeg_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let units = h264_access_units(work.path(), 2);
    assert_eq!(units.len(), 60);

    let (recorder, _notices) = Recorder::start(10_000);
    let started = Instant::now();
    recorder
        .begin("RE_2", work.path().join("RE_2"), started)
        .unwrap();
    let mut h264 = Packetizer::new("RE_2", "TR_h264", "bob", RecCodec::H264, started);
    for (i, unit) in units.iter().enumerate() {
        for packet in h264.h264(i as u64, unit, i as f64 * 1000.0 / 30.0) {
            recorder.packet(packet);
        }
    }
    let files = recorder.end("RE_2").await;
    assert_eq!(files.error, None);
    let file = track_file(&files, "TR_h264");
    assert_eq!(file.file_name, "bob-TR_h264.mkv");
    assert_eq!(
        (file.codec, file.frames, file.duration_ms),
        (RecCodec::H264, 60, 1966 + 33)
    );

    let probe = probe(&file.path);
    assert_eq!(stream_field(&probe, "codec_name"), "h264");
    assert_eq!(stream_field(&probe, "width"), 320);
    assert_eq!(stream_field(&probe, "height"), 240);
    assert_eq!(frames_read(&probe), 60);
    assert!((duration(&probe) - 2.0).abs() < 0.2, "{probe}");
    assert_eq!(decode_errors(&file.path), "");
}

/// What a kill -9 leaves: the file as it is on disk while the recorder runs, before `end`.
#[tokio::test]
async fn a_file_cut_off_while_recording_plays_up_to_its_last_complete_cluster() {
    if !ffmpeg_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let video = vp8_frames(work.path(), 3);
    let (recorder, _notices) = Recorder::start(10_000);
    let started = Instant::now();
    let dir = work.path().join("RE_3");
    recorder.begin("RE_3", dir.clone(), started).unwrap();
    // Another recording, ended to know every packet before it was handled.
    recorder
        .begin("RE_barrier", work.path().join("RE_barrier"), started)
        .unwrap();
    let mut vp8 = Packetizer::new("RE_3", "TR_v", "carol", RecCodec::Vp8, started);
    for (i, frame) in video.iter().enumerate() {
        for packet in vp8.vp8(i as u64, frame, i as f64 * 1000.0 / 30.0) {
            recorder.packet(packet);
        }
    }
    let barrier = recorder.end("RE_barrier").await;
    assert_eq!((barrier.tracks.len(), barrier.error), (0, None));

    // Keyframes at frames 0, 30 and 60 start clusters: the first two are on disk, the last
    // one (frames 60 to 89) is still being gathered.
    let cut = work.path().join("cut.webm");
    std::fs::copy(dir.join("carol-TR_v.webm"), &cut).unwrap();
    let cut_probe = probe(&cut);
    assert_eq!(stream_field(&cut_probe, "codec_name"), "vp8");
    assert_eq!(frames_read(&cut_probe), 60);
    assert_eq!(decode_errors(&cut), "");

    let files = recorder.end("RE_3").await;
    let whole = track_file(&files, "TR_v");
    assert_eq!(frames_read(&probe(&whole.path)), 90);
}

#[tokio::test]
async fn a_write_error_stops_the_recording_and_says_why() {
    if !ffmpeg_ready() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let video = vp8_frames(work.path(), 2);
    let dir = work.path().join("RE_4");
    std::fs::create_dir_all(&dir).unwrap();
    // The audio file's path leads to a device on which every write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", dir.join("dave-TR_a.webm")).unwrap();

    let (recorder, mut notice_receiver) = Recorder::start(10_000);
    let started = Instant::now();
    recorder.begin("RE_4", dir.clone(), started).unwrap();
    let mut vp8 = Packetizer::new("RE_4", "TR_v", "dave", RecCodec::Vp8, started);
    let mut opus = Packetizer::new("RE_4", "TR_a", "dave", RecCodec::Opus, started);
    // 1.5 s of video, then audio (whose file cannot be written), then more video.
    for (i, frame) in video.iter().enumerate().take(45) {
        for packet in vp8.vp8(i as u64, frame, i as f64 * 1000.0 / 30.0) {
            recorder.packet(packet);
        }
    }
    recorder.packet(opus.opus(0, &[0xf8, 0xff, 0xfe], 1500.0));
    for (i, frame) in video.iter().enumerate().skip(45) {
        for packet in vp8.vp8(i as u64, frame, i as f64 * 1000.0 / 30.0) {
            recorder.packet(packet);
        }
    }
    let files = recorder.end("RE_4").await;

    let error = files.error.clone().expect("the recording failed");
    assert!(error.starts_with("dave-TR_a.webm: "), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert_eq!(
        notices(&mut notice_receiver),
        vec![RecorderNotice::Failed {
            recording: "RE_4".into(),
            reason: error
        }]
    );
    // The video file was closed cleanly at the failure: the frames before it, no more.
    assert_eq!(files.tracks.len(), 1);
    let video_file = track_file(&files, "TR_v");
    assert_eq!(video_file.frames, 45);
    let video_probe = probe(&video_file.path);
    assert_eq!(frames_read(&video_probe), 45);
    assert!((duration(&video_probe) - 1.5).abs() < 0.2, "{video_probe}");
    assert_eq!(decode_errors(&video_file.path), "");
}

/// A made-up VP8 frame of one packet (`keyframe` sets the P bit to 0).
fn fake_vp8(packetizer: &mut Packetizer, index: u64, keyframe: bool, at_ms: f64) -> RecPacket {
    let frame = [
        if keyframe { 0x10 } else { 0x11 },
        0,
        0,
        0x9d,
        0x01,
        0x2a,
        64,
        1,
        240,
        0,
    ];
    packetizer.vp8(index, &frame, at_ms).remove(0)
}

#[tokio::test]
async fn keyframes_are_asked_for_at_most_every_500_ms_while_waiting_for_one() {
    let work = tempfile::tempdir().unwrap();
    let (recorder, mut notice_receiver) = Recorder::start(1000);
    let started = Instant::now();
    recorder
        .begin("RE_5", work.path().join("RE_5"), started)
        .unwrap();
    let mut vp8 = Packetizer::new("RE_5", "TR_v", "erin", RecCodec::Vp8, started);
    // Delta frames for 400 ms: one request; at 600 ms, a second.
    for i in 0..13 {
        recorder.packet(fake_vp8(&mut vp8, i, false, i as f64 * 33.0));
    }
    recorder.packet(fake_vp8(&mut vp8, 18, false, 600.0));
    // The keyframe: no more requests.
    recorder.packet(fake_vp8(&mut vp8, 19, true, 633.0));
    recorder.packet(fake_vp8(&mut vp8, 40, false, 1400.0));
    let files = recorder.end("RE_5").await;

    let wanted = RecorderNotice::KeyframeWanted {
        room: "room-1".into(),
        track_sid: "TR_v".into(),
    };
    assert_eq!(notices(&mut notice_receiver), vec![wanted.clone(), wanted]);
    // The file starts at the keyframe.
    assert_eq!(files.tracks[0].frames, 2);
    assert_eq!(files.tracks[0].start_ms, 633);
}

#[tokio::test]
async fn packets_go_only_to_recordings_begun_and_not_ended() {
    let work = tempfile::tempdir().unwrap();
    let (recorder, _notices) = Recorder::start(1000);
    let started = Instant::now();
    recorder
        .begin("RE_6", work.path().join("RE_6"), started)
        .unwrap();
    assert!(matches!(
        recorder.begin("RE_6", work.path().join("RE_6"), started),
        Err(RecorderError::AlreadyRecording(_))
    ));
    let mut ours = Packetizer::new("RE_6", "TR_a", "fay", RecCodec::Opus, started);
    let mut other = Packetizer::new("RE_other", "TR_b", "gus", RecCodec::Opus, started);
    for i in 0..10 {
        recorder.packet(ours.opus(i, &[0xf8, 0xff, 0xfe], i as f64 * 20.0));
        recorder.packet(other.opus(i, &[0xf8, 0xff, 0xfe], i as f64 * 20.0));
    }
    let files = recorder.end("RE_6").await;
    assert_eq!(files.error, None);
    assert_eq!(files.tracks.len(), 1);
    assert_eq!(files.tracks[0].frames, 10);
    assert_eq!(files.tracks[0].duration_ms, 200);
    // After the end, nothing more is written.
    recorder.packet(ours.opus(10, &[0xf8, 0xff, 0xfe], 200.0));
    let again = recorder.end("RE_6").await;
    assert_eq!(again.tracks, vec![]);
    assert!(again.error.is_some_and(|e| e.contains("not begun")));
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        1,
        "no folder for the recording never begun"
    );
}

#[tokio::test]
async fn packets_beyond_the_queue_are_dropped_and_counted() {
    let work = tempfile::tempdir().unwrap();
    let (recorder, _notices) = Recorder::start(0);
    let started = Instant::now();
    recorder
        .begin("RE_7", work.path().join("RE_7"), started)
        .unwrap();
    let mut opus = Packetizer::new("RE_7", "TR_a", "hal", RecCodec::Opus, started);
    for i in 0..5 {
        recorder.packet(opus.opus(i, &[0xf8, 0xff, 0xfe], i as f64 * 20.0));
    }
    assert_eq!(recorder.dropped(), 5);
    let files = recorder.end("RE_7").await;
    assert_eq!((files.tracks.len(), files.error), (0, None));
}
