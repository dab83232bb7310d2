//! The workloads, and one run of one: a fresh server (convene or Janus), the participants joined
//! through its signalling, a steady window measured.
//!
//! - Fan-out: P publishers (one by default; each VP8 in one layer and Opus) and N subscribers in
//!   one room, every subscriber hearing every publisher (and each publisher the P - 1 others).
//!   With recording (`--record on`), the room's meeting is recorded through convene's API from
//!   just after everyone receives media (before the settling and the window) until a second
//!   after the window, then the bench waits for the recording to be ready ([`crate::record`]).
//! - Meeting: M rooms of [`ROOM_SIZE`] participants; each publishes Opus and VP8 in three
//!   simulcast layers (rids q, h, f) and is auto-subscribed to everyone else in its room, so it
//!   is publisher and subscriber at once (one signalling connection, two peer connections).
//!
//! Every frame carries its publisher's number, counter and send time, so each receiver measures
//! loss and delay per publisher's track ([`crate::report`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::task::JoinHandle;

use crate::Args;
use crate::peer::{self, Publish, Publishing, Role, Sent, SentCount, Shared, Transport};
use crate::record::{self, Recorded};
use crate::report::{self, Delivery, Received, Recording, Window};
use crate::server::{self, Running, Sfu};

/// Participants in each room of the meeting workload.
pub const ROOM_SIZE: usize = 4;
/// The fan-out's room.
const FANOUT_ROOM: &str = "media-bench";

/// Who is in the rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `publishers` publishers and `subscribers` subscribers in one room.
    Fanout {
        subscribers: usize,
        publishers: usize,
    },
    /// This many rooms of [`ROOM_SIZE`], everyone publishing with simulcast and subscribing.
    Meeting { rooms: usize },
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Fanout {
                subscribers,
                publishers: 1,
            } => write!(f, "n={subscribers}"),
            Workload::Fanout {
                subscribers,
                publishers,
            } => write!(f, "n={subscribers} publishers={publishers}"),
            Workload::Meeting { rooms } => write!(f, "rooms={rooms}"),
        }
    }
}

/// One participant to join.
struct Joiner {
    room: String,
    identity: String,
    role: Role,
}

impl Workload {
    /// The number that names it: subscribers of the fan-out, rooms of the meeting.
    pub fn count(self) -> usize {
        match self {
            Workload::Fanout { subscribers, .. } => subscribers,
            Workload::Meeting { rooms } => rooms,
        }
    }

    /// The participants in join stages: every publisher of a stage is publishing before the
    /// next stage joins. A participant's subscriber connection uses `transport`, except the
    /// fan-out publishers'.
    fn stages(self, transport: Transport, media: &Publishing) -> Vec<Vec<Joiner>> {
        match self {
            Workload::Fanout {
                subscribers,
                publishers,
            } => {
                let sources = 0..publishers as u32;
                // Each publisher hears the others (convene subscribes it to them anyway), so
                // every packet the server forwards is counted.
                let publishers = sources
                    .clone()
                    .map(|source| Joiner {
                        room: FANOUT_ROOM.to_owned(),
                        identity: if publishers == 1 {
                            "publisher".to_owned()
                        } else {
                            format!("publisher-{source}")
                        },
                        role: Role {
                            publish: Some(Publish {
                                source,
                                media: media.clone(),
                                simulcast: false,
                            }),
                            hears: sources.clone().filter(|&s| s != source).collect(),
                            transport: Transport::Udp,
                        },
                    })
                    .collect();
                let subscribers = (0..subscribers)
                    .map(|i| Joiner {
                        room: FANOUT_ROOM.to_owned(),
                        identity: format!("sub-{i:03}"),
                        role: Role {
                            publish: None,
                            hears: sources.clone().collect(),
                            transport,
                        },
                    })
                    .collect();
                vec![publishers, subscribers]
            }
            Workload::Meeting { rooms } => {
                let everyone = (0..rooms * ROOM_SIZE)
                    .map(|i| {
                        let (room, seat) = (i / ROOM_SIZE, i % ROOM_SIZE);
                        let first = room * ROOM_SIZE;
                        let others = (first..first + ROOM_SIZE).filter(|&j| j != i);
                        Joiner {
                            room: format!("meeting-{room:03}"),
                            identity: format!("m{room:03}-p{seat}"),
                            role: Role {
                                publish: Some(Publish {
                                    source: i as u32,
                                    media: media.clone(),
                                    simulcast: true,
                                }),
                                hears: others.map(|j| j as u32).collect(),
                                transport,
                            },
                        }
                    })
                    .collect();
                vec![everyone]
            }
        }
    }
}

/// What to run: a workload over a transport, on `server`, with `threads` media threads for
/// convene (`CONVENE_RTC_THREADS`; the server's default if `None`, always for Janus), recorded or
/// not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub server: Sfu,
    pub workload: Workload,
    pub transport: Transport,
    pub threads: Option<usize>,
    /// For a run of the recording comparison (`--record` with `on`: convene's fan-outs), whether
    /// the meeting is recorded; `None` for a run outside it, never recorded.
    pub record: Option<bool>,
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.server, self.workload, self.transport)?;
        if let Some(threads) = self.threads {
            write!(f, " threads={threads}")?;
        }
        match self.record {
            Some(true) => write!(f, " record=on"),
            Some(false) => write!(f, " record=off"),
            None => Ok(()),
        }
    }
}

/// What one run measured.
#[derive(Clone)]
pub struct Figures {
    pub setup: Setup,
    /// Participants joined (publishers and subscribers).
    pub participants: usize,
    /// The address the participants' UDP sockets were bound to.
    pub client_ip: Ipv4Addr,
    pub wall: Duration,
    pub server_cpu: Duration,
    pub bench_cpu: Duration,
    pub delivery: Delivery,
    /// Frames sent in the window, summed over publishers (a video frame counts once, however
    /// many simulcast layers it was sent on).
    pub frames_sent_video: u64,
    pub frames_sent_audio: u64,
    pub keyframes_in_window: u64,
    pub requested_keyframes_in_window: u64,
    /// Datagrams dropped at the participants' UDP sockets and at the server's (full receive
    /// buffers), from the window's start to a second after its end.
    pub client_socket_drops: u64,
    pub server_socket_drops: u64,
    /// RFC 4571 frames the participants read over TCP from the window's start to a second after
    /// its end, as the packets of the window's frames are counted (0 over UDP).
    pub tcp_frames_in_window: u64,
    pub failed_participants: usize,
    /// How the run's recording ended (runs with `record: Some(true)`).
    pub recorded: Option<Recorded>,
}

impl Figures {
    /// Server CPU time per RTP packet delivered to a receiver, in microseconds: the packets
    /// counted are those of the window's frames that reached every participant hearing their
    /// publisher ([`Delivery::packets_received`]), i.e. the packets the server forwarded and
    /// that arrived, summed over publishers and receivers.
    pub fn server_us_per_packet(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / (self.delivery.packets_received.max(1)) as f64
    }

    pub fn packets_per_second(&self) -> f64 {
        self.delivery.packets_received as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_pct(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 100.0 / self.wall.as_secs_f64()
    }
}

/// A participant's task, and whose media it should have received.
struct Joined {
    identity: String,
    hears: Vec<u32>,
    task: JoinHandle<anyhow::Result<Vec<Received>>>,
}

/// Fails if any participant's task has ended (they run until the window is over).
fn none_stopped(joined: &[Joined]) -> anyhow::Result<()> {
    match joined.iter().find(|p| p.task.is_finished()) {
        Some(p) => bail!("{} stopped early", p.identity),
        None => Ok(()),
    }
}

async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done()? {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Run `setup` on a fresh server: join the participants stage by stage, wait until everyone
/// receives what it should, let it settle, then measure a window of `args.seconds`.
pub async fn run(setup: Setup, args: &Args, ticks: u64) -> anyhow::Result<Figures> {
    let stages = setup.workload.stages(setup.transport, &args.publishing());
    // Each room and its publishers, in order of appearance.
    let mut rooms: Vec<(String, usize)> = Vec::new();
    for joiner in stages.iter().flatten() {
        let publishes = usize::from(joiner.role.publish.is_some());
        match rooms.iter_mut().find(|(room, _)| *room == joiner.room) {
            Some((_, publishers)) => *publishers += publishes,
            None => rooms.push((joiner.room.clone(), publishes)),
        }
    }
    let publishers = rooms.iter().map(|(_, publishers)| publishers).sum();
    let server = Running::start(setup.server, args, setup.threads, &rooms).await?;
    let server_pid = server.pid();
    let bench_pid = std::process::id();
    let client_ip = server.client_ip();
    let shared = Arc::new(Shared::new(args.recv_buffer, publishers, client_ip));
    // Every participant stops when the run ends, even on an error.
    let _stop = shared.stop.clone().drop_guard();
    let timeout = Duration::from_secs(args.ready_timeout);
    let started = Instant::now();

    let mut joined: Vec<Joined> = Vec::new();
    for stage in stages {
        let sources: Vec<u32> = stage
            .iter()
            .filter_map(|j| j.role.publish.as_ref().map(|p| p.source))
            .collect();
        for joiner in stage {
            let join = server.join(
                &joiner.room,
                &joiner.identity,
                joiner.role.publish.is_some(),
            )?;
            joined.push(Joined {
                identity: joiner.identity,
                hears: joiner.role.hears.clone(),
                task: tokio::spawn(peer::run(join, joiner.role, shared.clone())),
            });
            tokio::time::sleep(Duration::from_millis(args.join_interval_ms)).await;
        }
        wait_until(
            &format!("{} publishers' media to flow", sources.len()),
            timeout,
            || {
                none_stopped(&joined)?;
                Ok(sources
                    .iter()
                    .all(|&s| shared.sent[s as usize].publishing.load(Ordering::Acquire)))
            },
        )
        .await?;
    }
    let receivers = joined.iter().filter(|p| !p.hears.is_empty()).count();
    wait_until(
        &format!("{receivers} participants to receive video and audio from everyone they hear"),
        timeout,
        || {
            none_stopped(&joined)?;
            Ok(shared.ready.load(Ordering::Acquire) >= receivers)
        },
    )
    .await?;
    eprintln!(
        "[{setup}] all participants receive media after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // Recording starts with everyone in, before the settling and the window.
    let recording = match setup.record {
        Some(true) => {
            let room = &rooms.first().context("a run without a room")?.0;
            let recording = record::start(&server, room)
                .await
                .context("starting the recording")?;
            eprintln!("[{setup}] recording {} started", recording.id);
            Some(recording)
        }
        _ => None,
    };
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;

    // The window.
    let ports = shared.ports.lock().expect("ports lock").clone();
    shared.recording.store(true, Ordering::Release);
    let sent_start: Vec<SentCount> = shared.sent.iter().map(Sent::count).collect();
    let drops_start = (
        server::udp_drops(&ports),
        server::process_udp_drops(server_pid),
    );
    let tcp_frames_start = shared.tcp_frames_in.load(Ordering::Acquire);
    let (server_cpu_start, bench_cpu_start) = (
        server::cpu_time(server_pid, ticks)?,
        server::cpu_time(bench_pid, ticks)?,
    );
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (server_cpu_end, bench_cpu_end) = (
        server::cpu_time(server_pid, ticks)?,
        server::cpu_time(bench_pid, ticks)?,
    );
    let wall = window_start.elapsed();
    let sent_end: Vec<SentCount> = shared.sent.iter().map(Sent::count).collect();
    // Let the window's last frames arrive (or be retransmitted), then stop everyone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tcp_frames_end = shared.tcp_frames_in.load(Ordering::Acquire);
    let drops_end = (
        server::udp_drops(&ports),
        server::process_udp_drops(server_pid),
    );
    let stopped = match &recording {
        Some(recording) => Some(recording.stop().await.context("stopping the recording")?),
        None => None,
    };
    shared.stop.cancel();

    let mut recordings = Vec::with_capacity(joined.len());
    let mut failed = 0;
    for p in joined {
        let records = match tokio::time::timeout(Duration::from_secs(10), p.task).await {
            Ok(Ok(Ok(records))) => records,
            Ok(Ok(Err(e))) => {
                eprintln!("[{setup}] {} failed: {e:#}", p.identity);
                failed += 1;
                Vec::new()
            }
            _ => {
                eprintln!("[{setup}] {} did not stop", p.identity);
                failed += 1;
                Vec::new()
            }
        };
        recordings.push(Recording {
            hears: p.hears,
            records,
        });
    }
    // The server finishes the files and builds the composite after the stop; it must not be
    // killed before.
    let recorded = match (&recording, stopped) {
        (Some(recording), Some(stopped)) => {
            let timeout = Duration::from_secs(args.recording_timeout);
            let recorded = recording.wait(stopped, timeout).await?;
            eprintln!("[{setup}] {}", describe_recorded(&recorded));
            Some(recorded)
        }
        _ => None,
    };
    drop(server);

    let windows: Vec<Window> = sent_start
        .iter()
        .zip(&sent_end)
        .map(|(start, end)| Window {
            video: start.video..end.video,
            audio: start.audio..end.audio,
        })
        .collect();
    let in_window = |count: fn(&SentCount) -> u64| {
        sent_end.iter().map(count).sum::<u64>() - sent_start.iter().map(count).sum::<u64>()
    };
    Ok(Figures {
        setup,
        participants: recordings.len(),
        client_ip,
        wall,
        server_cpu: server_cpu_end.saturating_sub(server_cpu_start),
        bench_cpu: bench_cpu_end.saturating_sub(bench_cpu_start),
        delivery: report::deliver(&recordings, &windows),
        frames_sent_video: in_window(|c| c.video),
        frames_sent_audio: in_window(|c| c.audio),
        keyframes_in_window: in_window(|c| c.keyframes),
        requested_keyframes_in_window: in_window(|c| c.keyframes_requested),
        client_socket_drops: drops_end.0.saturating_sub(drops_start.0),
        server_socket_drops: drops_end.1.saturating_sub(drops_start.1),
        tcp_frames_in_window: tcp_frames_end - tcp_frames_start,
        failed_participants: failed,
        recorded,
    })
}

/// How a recording ended, in words: "recording rec_… ready 4.2 s after the stop: 11 files,
/// 12345678 bytes" (with its error when it failed).
pub fn describe_recorded(r: &Recorded) -> String {
    format!(
        "recording {} {} {:.1} s after the stop: {} files, {} bytes{}",
        r.id,
        r.state,
        r.waited.as_secs_f64(),
        r.files,
        r.bytes,
        r.error
            .as_ref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default(),
    )
}
