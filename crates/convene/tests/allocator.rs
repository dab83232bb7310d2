//! The binary's allocator asks for no transparent huge pages (mimalloc's `no_thp`; see the
//! comment on the allocator in `main.rs`). With them, memory touched again after the allocator
//! gave it back faulted in 2 MiB at a time, each zeroed whole: most of the request thread's time
//! in a join that admits 10,000 waiting guests (docs/benchmarks.md, "Join storms").
#![cfg(target_os = "linux")]

#[path = "common/binary.rs"]
mod binary;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The mappings of process `pid` that asked for huge pages (`hg` in their `VmFlags`).
fn huge_page_mappings(pid: u32) -> Vec<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps is readable");
    let mut mapping = "";
    let mut found = Vec::new();
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if flags.split_whitespace().any(|f| f == "hg") {
                found.push(mapping.to_owned());
            }
        } else if line.split_whitespace().next().is_some_and(|first| {
            first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            mapping = line;
        }
    }
    found
}

#[tokio::test]
async fn the_server_asks_for_no_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(binary::convene_bin());
    command.arg("serve");
    let mut process = binary::serving(
        &mut command,
        dir.path(),
        "APIallocator",
        "allocator-test-secret-of-enough-length",
    )
    .spawn()
    .expect("the convene binary starts");
    let pid = process.id().expect("it runs");
    let addr = binary::listening(&mut process).await;

    // Some work first, so the allocator has mapped what requests use.
    for _ in 0..20 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /meet HTTP/1.1\r\nHost: convene\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        conn.read_to_end(&mut response).await.unwrap();
        assert!(
            response.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        );
    }

    let huge = huge_page_mappings(pid);
    assert!(huge.is_empty(), "mappings advised for huge pages: {huge:?}");
}
