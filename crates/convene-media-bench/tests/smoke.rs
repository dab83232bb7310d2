//! Smoke test: the generator joins a real server (the `convene` binary cargo built next to this
//! crate's binary, or `CONVENE_BIN`) with one publisher and two subscribers, over UDP then over
//! ICE-TCP, and reports media that really flowed through the SFU, over TCP in the TCP run.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn two_subscribers_receive_the_publishers_media_over_udp_and_over_tcp() {
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
            "--subscribers",
            "2",
            "--seconds",
            "2",
            "--settle-seconds",
            "1",
            "--ready-timeout",
            "20",
            "--transport",
            "both",
        ])
        .arg("--convene-bin")
        .arg(&convene)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    let udp = summary(&stdout, "UDP");
    let tcp = summary(&stdout, "TCP");
    for (line, run) in [&udp, &tcp] {
        assert!(
            run.video >= 30 && run.audio >= 50,
            "the publisher sent too little: {line}"
        );
        assert_eq!(run.frames_expected, 2 * (run.video + run.audio), "{line}");
        assert!(
            run.frames_received > 0 && run.packets_received >= run.frames_received,
            "no media reached the subscribers: {line}"
        );
        assert_eq!(run.failed, 0, "{line}");
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

struct Summary {
    video: u64,
    audio: u64,
    frames_expected: u64,
    frames_received: u64,
    packets_received: u64,
    over_tcp: u64,
    failed: u64,
}

/// "n=2 UDP: frames sent V video + A audio (K keyframes, R of them requested); frames expected E
/// received F; RTP packets expected P received Q; packets read over TCP T; failed subscribers X"
fn summary(stdout: &str, transport: &str) -> (String, Summary) {
    let prefix = format!("n=2 {transport}:");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {transport} summary line:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let [
        _,
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
