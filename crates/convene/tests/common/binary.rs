//! The real `convene` binary as a child process, for tests of what only the process shows (its
//! descriptor limits, its memory mappings).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// The binary to run: `CONVENE_BIN` (as for the interop suites: a copy of this build's binary
/// where the target directory is shared), else this build's.
pub fn convene_bin() -> String {
    std::env::var("CONVENE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_convene").into())
}

/// `command` (the binary, or a shell that execs it) set to serve on free ports from `data_dir`
/// with the admin key `key`/`secret`, its output piped (see [`listening`]), killed when dropped.
pub fn serving<'c>(
    command: &'c mut tokio::process::Command,
    data_dir: &Path,
    key: &str,
    secret: &str,
) -> &'c mut tokio::process::Command {
    command
        .env("CONVENE_HTTP_ADDR", "127.0.0.1:0")
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_RTC_TCP_PORT", "0")
        .env("CONVENE_DATA_DIR", data_dir)
        .env("CONVENE_API_KEY", key)
        .env("CONVENE_API_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
}

/// The address the started server (stdout piped) says it listens on; its output is read on
/// from then on, so it never blocks on a full pipe.
pub async fn listening(process: &mut tokio::process::Child) -> SocketAddr {
    let stdout = process.stdout.take().expect("the server's stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("convene listening on http://") {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
        panic!("convene ended before listening");
    })
    .await
    .expect("convene listens");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}
