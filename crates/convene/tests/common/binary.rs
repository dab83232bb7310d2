//! The real `convene` binary as a child process, for tests of what only the process shows (its
//! descriptor limits, its memory mappings).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// The binary to run: `CONVENE_BIN` (as for the interop suites: a copy of this build's binary
/// where the target directory is shared), else this build's.
pub fn convene_bin() -> String {
    std::env::var("CONVENE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_convene").into())
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
