//! Smoke tests: the generator joins a real server (the `convene` binary cargo built next to this
//! crate's binary, or `CONVENE_BIN`) with one publisher and two subscribers, over UDP then over
//! ICE-TCP, and reports media that really flowed through the SFU, over TCP in the TCP run; it
//! runs a meeting of two rooms of 4, everyone publishing simulcast and hearing the 3 others; it
//! runs a fan-out of two publishers without and with a recording of the meeting, which must end
//! ready (the server composes it with ffmpeg); and it runs both workloads, smaller, on Janus's
//! VideoRoom (skipped when `janus` is not installed).

use std::path::PathBuf;
use std::process::Command;

/// Runs the bench with `args` (and the server binary) and returns its stdout; fails if it did.
fn bench(args: &[&str]) -> String {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_convene-media-bench"));
    let convene = std::env::var_os("CONVENE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench.with_file_name("convene"));
    assert!(
        convene.exists(),
        "{} is missing: build it first (cargo build -p convene) or set CONVENE_BIN",
        convene.display()
    );
    let output = Command::new(&bench)
        .args([
            "--seconds",
            "2",
            "--settle-seconds",
            "1",
            "--ready-timeout",
            "20",
        ])
        .args(args)
        .arg("--convene-bin")
        .arg(&convene)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn two_subscribers_receive_the_publishers_media_over_udp_and_over_tcp() {
    let stdout = bench(&["--subscribers", "2", "--transport", "both"]);
    let udp = summary(&stdout, "convene n=2 UDP:");
    let tcp = summary(&stdout, "convene n=2 TCP:");
    for (line, run) in [&udp, &tcp] {
        run.assert_heard(line, 1, 2);
    }
    // Over UDP nothing comes over TCP; over TCP every RTP packet counted came as an RFC 4571
    // frame on the subscribers' TCP connections (with the RTCP and STUN besides).
    assert_eq!(udp.1.over_tcp, 0, "{}", udp.0);
    assert!(
        tcp.1.over_tcp >= tcp.1.packets_received,
        "the TCP run's media did not come over TCP: {}",
        tcp.0
    );
}

#[test]
fn everyone_in_two_meetings_of_four_hears_the_three_others() {
    // A light bitrate keeps the debug build's server and clients well within the machine; the
    // thread count only names the run in an older server, which ignores it.
    let stdout = bench(&[
        "--rooms",
        "2",
        "--rtc-threads",
        "2",
        "--transport",
        "udp",
        "--video-kbps",
        "300",
    ]);
    let (line, run) = summary(&stdout, "convene rooms=2 UDP threads=2:");
    // 8 publishers, each heard by the 3 others of its room.
    run.assert_heard(&line, 8, 3);
    // The table's row: 2 rooms, 8 participants, 2 threads, and video from the simulcast layers.
    let layers = layers(&stdout, "| 2 | 8 | convene | 2 | UDP |", 15);
    assert!(layers.iter().sum::<u64>() > 0, "no video layer: {layers:?}");
}

#[test]
fn two_publishers_are_heard_and_recorded() {
    let stdout = bench(&[
        "--subscribers",
        "2",
        "--publishers",
        "2",
        "--record",
        "off,on",
        "--transport",
        "udp",
        "--video-kbps",
        "300",
    ]);
    for record in ["off", "on"] {
        let (line, run) = summary(
            &stdout,
            &format!("convene n=2 publishers=2 UDP record={record}:"),
        );
        // Each publisher is heard by the 2 subscribers and the other publisher.
        run.assert_heard(&line, 2, 3);
    }
    // The recorded run's recording: 4 tracks and the composite, ready.
    let prefix = "convene n=2 publishers=2 UDP record=on: recording rec_";
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no recording line:\n{stdout}"));
    assert!(
        line.contains(" ready "),
        "the recording is not ready: {line}"
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let before = |word: &str| -> u64 {
        let at = words.iter().position(|w| w.trim_end_matches(',') == word);
        at.and_then(|i| words[i - 1].parse().ok())
            .unwrap_or_else(|| panic!("no count of {word}: {line}"))
    };
    assert!(before("files") >= 5, "{line}");
    assert!(before("bytes") > 0, "{line}");
    assert!(
        stdout
            .contains("recording 4 tracks (2 people) at 2 subscribers (UDP): CPU/packet on/off = "),
        "no comparison line:\n{stdout}"
    );
}

#[test]
fn janus_carries_a_fanout_and_a_meeting() {
    if Command::new("janus").arg("--help").output().is_err() {
        eprintln!("SKIPPED: janus is not installed (Debian's package `janus`)");
        return;
    }
    let stdout = bench(&[
        "--servers",
        "janus",
        "--subscribers",
        "2",
        "--rooms",
        "1",
        "--transport",
        "udp",
        "--video-kbps",
        "300",
    ]);
    let (line, fanout) = summary(&stdout, "janus n=2 UDP:");
    fanout.assert_heard(&line, 1, 2);
    let (line, meeting) = summary(&stdout, "janus rooms=1 UDP:");
    // 4 publishers, each heard by the 3 others.
    meeting.assert_heard(&line, 4, 3);
    let layers = layers(&stdout, "| 1 | 4 | janus | UDP |", 14);
    assert!(layers.iter().sum::<u64>() > 0, "no video layer: {layers:?}");
}

/// The video frames of each simulcast layer, from cell `column` (counted from the leading `|`)
/// of the table row that starts with `row`.
fn layers(stdout: &str, row: &str, column: usize) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no row {row}:\n{stdout}"));
    let layers: Vec<u64> = line
        .split('|')
        .nth(column)
        .expect("the layers column")
        .split('/')
        .map(|n| n.trim().parse().expect("a frame count"))
        .collect();
    assert_eq!(layers.len(), 3, "{line}");
    layers
}

struct Summary {
    video: u64,
    audio: u64,
    frames_expected: u64,
    frames_received: u64,
    packets_received: u64,
    over_tcp: u64,
    failed: u64,
}

impl Summary {
    /// `publishers` each sent media for the whole window, each heard by `listeners`, and media
    /// reached them, with no participant failing (`line` is the summary line, for the message).
    fn assert_heard(&self, line: &str, publishers: u64, listeners: u64) {
        assert!(
            self.video >= publishers * 30 && self.audio >= publishers * 50,
            "the publishers sent too little: {line}"
        );
        assert_eq!(
            self.frames_expected,
            listeners * (self.video + self.audio),
            "{line}"
        );
        assert!(
            self.frames_received > 0 && self.packets_received >= self.frames_received,
            "no media reached the participants: {line}"
        );
        assert_eq!(self.failed, 0, "{line}");
    }
}

/// The summary line that starts with `prefix` ("convene n=2 UDP:", "janus rooms=1 UDP:"), then "frames
/// sent V video + A audio (K keyframes, R of them requested); frames expected E received F; RTP
/// packets expected P received Q; packets read over TCP T; failed participants X".
fn summary(stdout: &str, prefix: &str) -> (String, Summary) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} summary line:\n{stdout}"));
    let numbers: Vec<u64> = line[prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let [
        video,
        audio,
        _,
        _,
        frames_expected,
        frames_received,
        _,
        packets_received,
        over_tcp,
        failed,
    ] = numbers[..]
    else {
        panic!("unexpected summary line: {line}")
    };
    let run = Summary {
        video,
        audio,
        frames_expected,
        frames_received,
        packets_received,
        over_tcp,
        failed,
    };
    (line.to_owned(), run)
}
