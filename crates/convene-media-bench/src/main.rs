//! `convene-media-bench`: the media forwarding benchmark of docs/benchmarks.md (issue 6).
//!
//! For each subscriber count N it starts the release `convene` binary, joins one publisher that
//! sends ~1.5 Mbps of VP8 (30 fps, a keyframe every 2 s) and 50 Opus packets a second, then N
//! subscribers that auto-subscribe, all over loopback with str0m as the client stack and LiveKit
//! signalling. Once every subscriber receives media it measures a steady window: the server's
//! CPU time (utime + stime from /proc) per RTP packet delivered to subscribers, subscriber loss
//! (frames and RTP packets) and the forwarding delay from the publisher's send to the
//! subscriber's reassembled frame. The load generator shares the machine with the server, so its
//! own CPU is reported too. With `--transport tcp` (or `both`, the default: each count over UDP,
//! then over TCP on a fresh server) the subscribers reach the server by ICE over TCP only.

mod floor;
mod payload;
mod peer;
mod report;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use peer::{Publishing, Role, Shared, Transport};
use report::{Delivery, Window, percentile};
use server::Server;

const ROOM: &str = "media-bench";

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Media forwarding through convene's SFU: one publisher, N subscribers, over loopback"
)]
struct Args {
    /// Subscriber counts to run, one fresh server each, e.g. 10,50,100,200.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,200")]
    subscribers: Vec<usize>,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The convene binary (build with `cargo build --release -p convene`).
    #[arg(long, default_value = "target/release/convene")]
    convene_bin: PathBuf,
    /// Video bitrate, kilobits per second.
    #[arg(long, default_value_t = 1500)]
    video_kbps: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between scheduled keyframes.
    #[arg(long, default_value_t = 2)]
    keyframe_seconds: u32,
    /// Bytes of each 20 ms Opus packet (80 = 32 kbps).
    #[arg(long, default_value_t = 80)]
    audio_bytes: usize,
    /// Milliseconds between two subscribers' joins.
    #[arg(long, default_value_t = 25)]
    join_interval_ms: u64,
    /// Seconds to wait for every subscriber to receive media.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Seconds of steady media, all subscribers in, before the window opens.
    #[arg(long, default_value_t = 2)]
    settle_seconds: u64,
    /// SO_RCVBUF of each client socket, in bytes (capped by net.core.rmem_max).
    #[arg(long, default_value_t = 1 << 20)]
    recv_buffer: usize,
    /// After each run, run the str0m floor with as many subscribers: the same packets sent
    /// through str0m and the kernel as the engine sends them, with convene's own code taken out.
    #[arg(long)]
    floor: bool,
    /// How the subscribers receive media: UDP, ICE over TCP (one active TCP candidate each, no
    /// UDP one), or both, one run after the other at each count. The publisher always uses UDP.
    #[arg(long, value_enum, default_value_t = Transports::Both)]
    transport: Transports,
    /// Turn on the server's subscriber bandwidth estimation (`CONVENE_RTC_SUBSCRIBER_BWE`), and
    /// configure the floor's subscriber connections the same way.
    #[arg(long)]
    subscriber_bwe: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Transports {
    Udp,
    Tcp,
    Both,
}

impl Transports {
    fn list(self) -> &'static [Transport] {
        match self {
            Transports::Udp => &[Transport::Udp],
            Transports::Tcp => &[Transport::Tcp],
            Transports::Both => &[Transport::Udp, Transport::Tcp],
        }
    }
}

/// What one run measured.
struct Figures {
    subscribers: usize,
    transport: Transport,
    wall: Duration,
    server_cpu: Duration,
    bench_cpu: Duration,
    delivery: Delivery,
    frames_sent_video: u64,
    frames_sent_audio: u64,
    keyframes_in_window: u64,
    requested_keyframes_in_window: u64,
    client_socket_drops: u64,
    /// RFC 4571 frames the subscribers read over TCP in the window (0 over UDP).
    tcp_frames_in_window: u64,
    failed_subscribers: usize,
}

impl Figures {
    fn server_us_per_packet(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / (self.delivery.packets_received.max(1)) as f64
    }

    fn packets_per_second(&self) -> f64 {
        self.delivery.packets_received as f64 / self.wall.as_secs_f64()
    }

    fn cpu_pct(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 100.0 / self.wall.as_secs_f64()
    }
}

fn publishing(args: &Args) -> Publishing {
    let gop = args.fps * args.keyframe_seconds.max(1);
    let (keyframe_bytes, delta_bytes) =
        payload::video_sizes(args.video_kbps * 1000, args.fps, gop, 5);
    Publishing {
        fps: args.fps,
        gop,
        keyframe_bytes,
        delta_bytes,
        audio_bytes: args.audio_bytes,
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

async fn run(n: usize, transport: Transport, args: &Args, ticks: u64) -> anyhow::Result<Figures> {
    let server = Server::start(&args.convene_bin, args.subscriber_bwe).await?;
    let server_pid = server.pid();
    let bench_pid = std::process::id();
    let shared = Arc::new(Shared::new(args.recv_buffer));
    let started = Instant::now();

    let publisher_url = server.rtc_url(&server::token(ROOM, "publisher", true)?);
    let publisher = tokio::spawn(peer::run(
        publisher_url,
        Role::Publisher(publishing(args)),
        shared.clone(),
    ));
    wait_until(
        "the publisher's media to flow",
        Duration::from_secs(30),
        || {
            if publisher.is_finished() {
                bail!("the publisher stopped before publishing");
            }
            Ok(shared.publishing.load(Ordering::Acquire))
        },
    )
    .await?;

    let mut subscribers = Vec::with_capacity(n);
    for i in 0..n {
        let url = server.rtc_url(&server::token(ROOM, &format!("sub-{i:03}"), false)?);
        subscribers.push(tokio::spawn(peer::run(
            url,
            Role::Subscriber(transport),
            shared.clone(),
        )));
        tokio::time::sleep(Duration::from_millis(args.join_interval_ms)).await;
    }
    wait_until(
        &format!("{n} subscribers to receive video and audio"),
        Duration::from_secs(args.ready_timeout),
        || {
            if publisher.is_finished() {
                bail!("the publisher stopped");
            }
            if let Some(i) = subscribers.iter().position(|s| s.is_finished()) {
                bail!("subscriber {i} stopped early");
            }
            Ok(shared.ready.load(Ordering::Acquire) >= n)
        },
    )
    .await?;
    eprintln!(
        "[n={n} {transport}] all subscribers receive media after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;

    // The window.
    let ports = shared.ports.lock().expect("ports lock").clone();
    let (video_start, audio_start) = (
        shared.video_sent.load(Ordering::Acquire),
        shared.audio_sent.load(Ordering::Acquire),
    );
    shared
        .record_video_from
        .store(video_start, Ordering::Release);
    shared
        .record_audio_from
        .store(audio_start, Ordering::Release);
    let keyframes_start = (
        shared.keyframes_sent.load(Ordering::Acquire),
        shared.keyframes_requested.load(Ordering::Acquire),
    );
    let drops_start = server::udp_drops(&ports);
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
    let tcp_frames_end = shared.tcp_frames_in.load(Ordering::Acquire);
    let (video_end, audio_end) = (
        shared.video_sent.load(Ordering::Acquire),
        shared.audio_sent.load(Ordering::Acquire),
    );
    let keyframes_end = (
        shared.keyframes_sent.load(Ordering::Acquire),
        shared.keyframes_requested.load(Ordering::Acquire),
    );
    // Let the window's last frames arrive (or be retransmitted), then stop everyone.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let drops_end = server::udp_drops(&ports);
    shared.stop.cancel();

    let mut records = Vec::with_capacity(n);
    let mut failed = 0;
    for (i, task) in subscribers.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(received))) => records.push(received),
            Ok(Ok(Err(e))) => {
                eprintln!("[n={n} {transport}] subscriber {i} failed: {e:#}");
                failed += 1;
                records.push(Vec::new());
            }
            _ => {
                eprintln!("[n={n} {transport}] subscriber {i} did not stop");
                failed += 1;
                records.push(Vec::new());
            }
        }
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(10), publisher).await {
        eprintln!("[n={n} {transport}] the publisher failed: {e:#}");
    }
    drop(server);

    let window = Window {
        video: video_start..video_end,
        audio: audio_start..audio_end,
    };
    let delivery = report::deliver(&records, &window);
    Ok(Figures {
        subscribers: n,
        transport,
        wall,
        server_cpu: server_cpu_end.saturating_sub(server_cpu_start),
        bench_cpu: bench_cpu_end.saturating_sub(bench_cpu_start),
        delivery,
        frames_sent_video: video_end - video_start,
        frames_sent_audio: audio_end - audio_start,
        keyframes_in_window: keyframes_end.0 - keyframes_start.0,
        requested_keyframes_in_window: keyframes_end.1 - keyframes_start.1,
        client_socket_drops: drops_end.saturating_sub(drops_start),
        tcp_frames_in_window: tcp_frames_end - tcp_frames_start,
        failed_subscribers: failed,
    })
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn print_table(all: &[Figures], args: &Args) {
    let p = publishing(args);
    println!();
    println!(
        "Publisher: VP8 {} kbps at {} fps (keyframe {} B every {} frames, delta frames {} B), Opus {} B every 20 ms.",
        args.video_kbps, p.fps, p.keyframe_bytes, p.gop, p.delta_bytes, p.audio_bytes
    );
    println!(
        "Counted: RTP packets of media frames delivered to subscribers (video + audio; str0m packetizes at a 1150-byte target),"
    );
    println!(
        "from the sequence numbers of each reassembled frame; loss per frame and per RTP packet; delay = publisher's"
    );
    println!(
        "write of a frame -> subscriber's str0m hands over the reassembled frame (one process, one clock)."
    );
    println!();
    println!(
        "| subscribers | transport | window | packets forwarded | server CPU | server CPU / packet | frame loss | RTP loss | subscribers with loss | delay p50 | delay p99 | delay max | video p99 | audio p99 | bench CPU | client socket drops |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let d = &f.delivery;
        println!(
            "| {} | {} | {:.1} s | {} ({:.0}/s) | {:.0}% | {:.2} µs | {:.3}% | {:.3}% | {} (worst {:.2}%) | {} | {} | {} | {} | {} | {:.0}% | {} |",
            f.subscribers,
            f.transport,
            f.wall.as_secs_f64(),
            d.packets_received,
            f.packets_per_second(),
            f.cpu_pct(f.server_cpu),
            f.server_us_per_packet(),
            d.frame_loss_pct(),
            d.packet_loss_pct(),
            d.subscribers_with_loss,
            d.worst_frame_loss_pct,
            ms(percentile(&d.delays_us, 50.0)),
            ms(percentile(&d.delays_us, 99.0)),
            ms(d.delays_us.last().copied().unwrap_or(0)),
            ms(percentile(&d.video_delays_us, 99.0)),
            ms(percentile(&d.audio_delays_us, 99.0)),
            f.cpu_pct(f.bench_cpu),
            f.client_socket_drops,
        );
    }
    println!();
    for f in all {
        let d = &f.delivery;
        println!(
            "n={} {}: frames sent {} video + {} audio ({} keyframes, {} of them requested); frames expected {} received {}; RTP packets expected {} received {}; packets read over TCP {}; failed subscribers {}",
            f.subscribers,
            f.transport,
            f.frames_sent_video,
            f.frames_sent_audio,
            f.keyframes_in_window,
            f.requested_keyframes_in_window,
            d.frames_expected,
            d.frames_received,
            d.packets_expected,
            d.packets_received,
            f.tcp_frames_in_window,
            f.failed_subscribers,
        );
    }
    for udp in all.iter().filter(|f| f.transport == Transport::Udp) {
        let tcp = all
            .iter()
            .find(|f| f.transport == Transport::Tcp && f.subscribers == udp.subscribers);
        if let Some(tcp) = tcp {
            println!(
                "n={}: TCP / UDP server CPU per packet {:.2} ({:.2} / {:.2} µs); frame loss {:.3}% / {:.3}%; delay p99 {} / {}",
                udp.subscribers,
                tcp.server_us_per_packet() / udp.server_us_per_packet(),
                tcp.server_us_per_packet(),
                udp.server_us_per_packet(),
                tcp.delivery.frame_loss_pct(),
                udp.delivery.frame_loss_pct(),
                ms(percentile(&tcp.delivery.delays_us, 99.0)),
                ms(percentile(&udp.delivery.delays_us, 99.0)),
            );
        }
    }
    for f in all.iter().filter(|f| f.subscribers == 200) {
        println!(
            "targets at n=200 over {}: server CPU per packet {:.2} µs (target <= 5 µs: {}); frame loss {:.3}% (target: none: {})",
            f.transport,
            f.server_us_per_packet(),
            if f.server_us_per_packet() <= 5.0 {
                "met"
            } else {
                "missed"
            },
            f.delivery.frame_loss_pct(),
            if f.delivery.frames_received == f.delivery.frames_expected {
                "met"
            } else {
                "missed"
            },
        );
    }
}

/// The floor's figures next to convene's, each floor run right after convene's at that count
/// and over that transport.
fn print_floor(floors: &[(f64, floor::FloorFigures)]) {
    println!();
    println!(
        "str0m floor (--floor): the same packets written to str0m connections configured as the engine's, timer pass per turn,"
    );
    println!(
        "every datagram polled out and sent with the engine's GSO batching to real sockets (over TCP: framed, one write per"
    );
    println!(
        "connection and turn, to real loopback TCP connections); no signalling, routing or rewriting."
    );
    println!();
    println!(
        "| subscribers | transport | window | packets delivered | floor CPU | floor CPU / packet | delivered / written | convene CPU / packet | convene / floor |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (convene, f) in floors {
        println!(
            "| {} | {} | {:.1} s | {} | {:.0}% | {:.2} µs | {:.2}% | {:.2} µs | {:.2} |",
            f.subscribers,
            f.transport,
            f.wall.as_secs_f64(),
            f.delivered,
            f.cpu_pct(),
            f.us_per_packet(),
            f.delivered_pct(),
            convene,
            convene / f.us_per_packet(),
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.subscribers.is_empty() || args.subscribers.contains(&0) {
        bail!("--subscribers needs one or more counts above zero");
    }
    if args.seconds == 0 || args.fps == 0 {
        bail!("--seconds and --fps must be above zero");
    }
    if !args.convene_bin.exists() {
        bail!(
            "{} does not exist (build it with cargo build --release -p convene)",
            args.convene_bin.display()
        );
    }
    let ticks = server::clock_ticks();
    let mut all = Vec::new();
    let mut floors = Vec::new();
    for &n in &args.subscribers {
        for &transport in args.transport.list() {
            let figures = run(n, transport, &args, ticks)
                .await
                .with_context(|| format!("the run with {n} subscribers over {transport}"))?;
            eprintln!(
                "[n={n} {transport}] {:.2} µs server CPU per packet, frame loss {:.3}%, delay p50 {} p99 {}",
                figures.server_us_per_packet(),
                figures.delivery.frame_loss_pct(),
                ms(percentile(&figures.delivery.delays_us, 50.0)),
                ms(percentile(&figures.delivery.delays_us, 99.0)),
            );
            if transport == Transport::Tcp && figures.tcp_frames_in_window == 0 {
                bail!("the run over TCP read no packet over TCP");
            }
            if args.floor {
                let floor = floor::run(
                    n,
                    transport,
                    publishing(&args),
                    Duration::from_secs(args.seconds),
                    Duration::from_secs(args.settle_seconds),
                    args.recv_buffer,
                    ticks,
                    args.subscriber_bwe,
                )
                .await
                .with_context(|| format!("the floor with {n} subscribers over {transport}"))?;
                eprintln!(
                    "[n={n} {transport}] floor {:.2} µs CPU per packet; convene / floor {:.2}",
                    floor.us_per_packet(),
                    figures.server_us_per_packet() / floor.us_per_packet(),
                );
                floors.push((figures.server_us_per_packet(), floor));
            }
            all.push(figures);
        }
    }
    print_table(&all, &args);
    if !floors.is_empty() {
        print_floor(&floors);
    }
    Ok(())
}
