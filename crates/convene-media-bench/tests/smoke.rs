//! Smoke test: the generator joins a real server (the `convene` binary cargo built next to this
//! crate's binary, or `CONVENE_BIN`) with one publisher and two subscribers and reports media that
//! really flowed through the SFU.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn two_subscribers_receive_the_publishers_media() {
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
        ])
        .arg("--convene-bin")
        .arg(&convene)
        .output()
        .expect("run the bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    // "n=2: ... frames expected E received R; RTP packets expected P received Q; failed subscribers 0"
    let line = stdout
        .lines()
        .find(|l| l.starts_with("n=2:"))
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    // n, video sent, audio sent, keyframes, requested, frames expected, received, packets expected, received, failed
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
        failed,
    ] = numbers[..]
    else {
        panic!("unexpected summary line: {line}")
    };
    assert!(
        video >= 30 && audio >= 50,
        "the publisher sent too little: {line}"
    );
    assert_eq!(frames_expected, 2 * (video + audio), "{line}");
    assert!(
        frames_received > 0 && packets_received >= frames_received,
        "no media reached the subscribers: {line}"
    );
    assert_eq!(failed, 0, "{line}");
}
