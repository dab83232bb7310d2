//! The server under test (the release `convene` binary as a child process, SQLite in a temporary
//! directory, a bench API key, media on an ephemeral UDP port advertised on 127.0.0.1) and the
//! process figures read from /proc: CPU time of a process and UDP receive-buffer drops per port.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const KEY: &str = "APImediabench";
pub const SECRET: &str = "media-bench-secret-0123456789-0123456789";

pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    pub async fn start(bin: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let child = Command::new(bin)
            .env("CONVENE_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("CONVENE_DATA_DIR", dir.path())
            .env("CONVENE_API_KEY", KEY)
            .env("CONVENE_API_SECRET", SECRET)
            .env("CONVENE_RTC_UDP_PORT", "0")
            .env("CONVENE_RTC_NODE_IP", "127.0.0.1")
            .env_remove("CONVENE_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it with cargo build --release -p convene)",
                    bin.display()
                )
            })?;
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", server.base)).send().await
                && response.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("convene did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The WebSocket URL of `/rtc` for `token`.
    pub fn rtc_url(&self, token: &str) -> String {
        format!(
            "{}/rtc?access_token={token}&auto_subscribe=1&protocol=16&sdk=convene-media-bench",
            self.base.replacen("http", "ws", 1)
        )
    }
}

/// A LiveKit app token for `identity` in `room`, signed with the server's API key (the server
/// admits these as an app would use them with a LiveKit server: the room is created on first join).
pub fn token(room: &str, identity: &str, can_publish: bool) -> anyhow::Result<String> {
    use livekit_api::access_token::{AccessToken, VideoGrants};
    let grants = VideoGrants {
        room_join: true,
        room: room.to_owned(),
        can_publish: Some(can_publish),
        can_subscribe: Some(true),
        ..VideoGrants::default()
    };
    Ok(AccessToken::with_api_key(KEY, SECRET)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_ttl(Duration::from_secs(3600))
        .to_jwt()?)
}

/// User plus system CPU time of a process (all its threads), from /proc/<pid>/stat.
pub fn cpu_time(pid: u32, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64))
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line; the command name may hold spaces.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let rest = &stat[stat.rfind(')').context("no ) in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second of /proc figures (`getconf CLK_TCK`, 100 on Linux unless told otherwise).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// Datagrams the kernel dropped because a socket's receive buffer was full, summed over the
/// IPv4 UDP sockets bound to `ports` (the `drops` column of /proc/net/udp).
pub fn udp_drops(ports: &[u16]) -> u64 {
    std::fs::read_to_string("/proc/net/udp")
        .map(|table| parse_udp_drops(&table, ports))
        .unwrap_or(0)
}

fn parse_udp_drops(table: &str, ports: &[u16]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let drops: u64 = fields.last()?.parse().ok()?;
            ports.contains(&port).then_some(drops)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_even_with_spaces_in_the_name() {
        let stat = "4242 (convene (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 1234 + 567);
        assert!(parse_cpu_ticks("garbage").is_err());
    }

    #[test]
    fn sums_drops_of_the_given_ports() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 1 2 0000000000000000 3\n\
  2: 0100007F:0050 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 1 2 0000000000000000 5\n\
  3: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 1 2 0000000000000000 7\n";
        assert_eq!(parse_udp_drops(table, &[8080]), 10);
        assert_eq!(parse_udp_drops(table, &[80, 8080]), 15);
        assert_eq!(parse_udp_drops(table, &[81]), 0);
    }

    #[test]
    fn tokens_carry_the_grants() {
        let jwt = token("bench", "sub-1", false).unwrap();
        let claims = livekit_api::access_token::TokenVerifier::with_api_key(KEY, SECRET)
            .verify(&jwt)
            .unwrap();
        assert_eq!(claims.sub, "sub-1");
        assert_eq!(claims.video.room, "bench");
        assert!(claims.video.room_join && !claims.video.can_publish());
    }
}
