//! The servers under test and the process figures read from /proc: CPU time of a process and
//! UDP receive-buffer drops per port or per process.
//!
//! - convene: the release binary as a child process, SQLite in a temporary directory, a bench API
//!   key, media on an ephemeral UDP port advertised on 127.0.0.1, as many media threads as asked
//!   or the server's default; its clients bind to 127.0.0.1 and join with LiveKit tokens.
//! - Janus: Debian's `janus` with its VideoRoom plugin ([`crate::janus`]), one event loop per core
//!   ([`janus_event_loops`]), a room created per room of the run; its clients bind to the host's
//!   own address (Janus does no ICE on 127.0.0.1) and share one Janus API session.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use convene_bench::{ChildServer, convene_command, convene_missing};

use crate::Args;
use crate::janus::{Janus, JanusOptions, Session};
use crate::signalling::Join;

pub const KEY: &str = "APImediabench";
pub const SECRET: &str = "media-bench-secret-0123456789-0123456789";

/// Which SFU a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sfu {
    /// convene's embedded SFU, LiveKit signalling.
    Convene,
    /// Janus's VideoRoom plugin, its own signalling over HTTP (UDP only).
    Janus,
}

impl fmt::Display for Sfu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sfu::Convene => "convene",
            Sfu::Janus => "janus",
        })
    }
}

/// Janus's `event_loops` (its media threads, shared by every handle): one per core, as many as
/// convene's media threads by default.
pub fn janus_event_loops() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The server of one run, started for it alone.
pub enum Running {
    Convene(Server),
    Janus {
        /// The run's Janus API session, shared by every participant.
        session: Arc<Session>,
        /// The VideoRoom room created for each room name of the run.
        rooms: HashMap<String, u64>,
        janus: Janus,
    },
}

impl Running {
    /// Starts `sfu` for a run whose `rooms` are named, with their publisher counts: convene with
    /// `threads` media threads (and subscriber bandwidth estimation if `args` ask), or Janus with
    /// [`janus_event_loops`] and a VideoRoom room created for each (numbered from 1, in order).
    pub async fn start(
        sfu: Sfu,
        args: &Args,
        threads: Option<usize>,
        rooms: &[(String, usize)],
    ) -> anyhow::Result<Running> {
        match sfu {
            Sfu::Convene => Ok(Running::Convene(
                Server::start(&args.convene_bin, args.subscriber_bwe, threads).await?,
            )),
            Sfu::Janus => {
                let options = JanusOptions {
                    event_loops: Some(janus_event_loops()),
                    ..JanusOptions::default()
                };
                let janus = Janus::start(&options).await?;
                let session = Session::connect(janus.url()).await?;
                let creator = session.attach().await?;
                let mut ids = HashMap::new();
                for (id, (name, publishers)) in (1..).zip(rooms) {
                    creator
                        .create_room(id, (*publishers).max(1))
                        .await
                        .with_context(|| format!("creating Janus room {id} for {name}"))?;
                    ids.insert(name.clone(), id);
                }
                Ok(Running::Janus {
                    session: Arc::new(session),
                    rooms: ids,
                    janus,
                })
            }
        }
    }

    /// The server's process id, for its CPU time and socket drops.
    pub fn pid(&self) -> u32 {
        match self {
            Running::Convene(server) => server.pid(),
            Running::Janus { janus, .. } => janus.pid(),
        }
    }

    /// The address the clients bind their UDP sockets to.
    pub fn client_ip(&self) -> Ipv4Addr {
        match self {
            Running::Convene(_) => Ipv4Addr::LOCALHOST,
            Running::Janus { janus, .. } => janus.ice_address(),
        }
    }

    /// How `identity` joins `room` (publishing if `can_publish`).
    pub fn join(&self, room: &str, identity: &str, can_publish: bool) -> anyhow::Result<Join> {
        Ok(match self {
            Running::Convene(server) => Join::LiveKit {
                url: server.rtc_url(&token(room, identity, can_publish)?),
            },
            Running::Janus { session, rooms, .. } => Join::Janus {
                session: session.clone(),
                room: *rooms
                    .get(room)
                    .with_context(|| format!("no Janus room for {room}"))?,
            },
        })
    }
}

/// The convene binary running for one run.
pub struct Server {
    process: ChildServer,
}

impl Server {
    /// The release binary `bin`, with subscriber bandwidth estimation on if `subscriber_bwe`, and
    /// `threads` media threads (`CONVENE_RTC_THREADS`, the engine's shards) if set.
    pub async fn start(
        bin: &Path,
        subscriber_bwe: bool,
        threads: Option<usize>,
    ) -> anyhow::Result<Server> {
        let process = ChildServer::start(&convene_missing(bin), |port, dir| {
            let mut command = convene_command(bin, port, dir, KEY, SECRET);
            command.env("CONVENE_RTC_NODE_IP", "127.0.0.1");
            command.env("CONVENE_RTC_SUBSCRIBER_BWE", subscriber_bwe.to_string());
            match threads {
                Some(threads) => command.env("CONVENE_RTC_THREADS", threads.to_string()),
                None => command.env_remove("CONVENE_RTC_THREADS"),
            };
            command
        })
        .await?;
        Ok(Server { process })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `http://127.0.0.1:<port>`, the base of its native API.
    pub fn base(&self) -> &str {
        &self.process.base
    }

    /// The WebSocket URL of `/rtc` for `token`.
    pub fn rtc_url(&self, token: &str) -> String {
        format!(
            "{}/rtc?access_token={token}&auto_subscribe=1&protocol=16&sdk=convene-media-bench",
            self.process.base.replacen("http", "ws", 1)
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
    stat_cpu_time(&format!("/proc/{pid}/stat"), ticks_per_second)
}

/// User plus system CPU time of the calling thread, from /proc/thread-self/stat.
pub fn thread_cpu_time(ticks_per_second: u64) -> anyhow::Result<Duration> {
    stat_cpu_time("/proc/thread-self/stat", ticks_per_second)
}

fn stat_cpu_time(path: &str, ticks_per_second: u64) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(path)?;
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
    read_udp_drops(|port, _| ports.contains(&port))
}

/// The same over the IPv4 UDP sockets process `pid` holds (the server's media sockets), found by
/// their inodes in /proc/<pid>/fd.
pub fn process_udp_drops(pid: u32) -> u64 {
    let inodes: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            inode.parse().ok()
        })
        .collect();
    read_udp_drops(|_, inode| inodes.contains(&inode))
}

/// The drops of the sockets of /proc/net/udp that `counted(port, inode)` picks.
fn read_udp_drops(counted: impl Fn(u16, u64) -> bool) -> u64 {
    std::fs::read_to_string("/proc/net/udp")
        .map(|table| parse_udp_drops(&table, counted))
        .unwrap_or(0)
}

fn parse_udp_drops(table: &str, counted: impl Fn(u16, u64) -> bool) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let drops: u64 = fields.last()?.parse().ok()?;
            counted(port, inode).then_some(drops)
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
    fn sums_drops_of_the_given_ports_or_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 1 2 0000000000000000 3\n\
  2: 0100007F:0050 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 1 2 0000000000000000 5\n\
  3: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 4 2 0000000000000000 7\n";
        let ports = |ports: &'static [u16]| move |port, _| ports.contains(&port);
        assert_eq!(parse_udp_drops(table, ports(&[8080])), 10);
        assert_eq!(parse_udp_drops(table, ports(&[80, 8080])), 15);
        assert_eq!(parse_udp_drops(table, ports(&[81])), 0);
        assert_eq!(parse_udp_drops(table, |_, inode| inode == 4), 7);
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
