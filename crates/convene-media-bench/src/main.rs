//! `convene-media-bench`: the media forwarding benchmark of docs/benchmarks.md (issue 6).
//!
//! The fan-out: for each subscriber count N it starts the release `convene` binary, joins one
//! publisher that sends ~1.5 Mbps of VP8 (30 fps, a keyframe every 2 s) and 50 Opus packets a
//! second, then N subscribers that auto-subscribe, all over loopback with str0m as the client
//! stack and LiveKit signalling. Once every subscriber receives media it measures a steady
//! window: the server's CPU time (utime + stime from /proc) per RTP packet delivered to
//! subscribers, subscriber loss (frames and RTP packets) and the forwarding delay from the
//! publisher's send to the subscriber's reassembled frame. The load generator shares the machine
//! with the server, so its own CPU is reported too. With `--transport tcp` (or `both`, the
//! default: each count over UDP, then over TCP on a fresh server) the subscribers reach the
//! server by ICE over TCP only.
//!
//! The meeting (`--rooms`): for each room count M, M rooms of 4 participants who all publish
//! (VP8 in three simulcast layers, Opus) and hear each other, measured the same way; with
//! `--capacity`, the most rooms the server carries within the targets ([`meeting`]). With
//! `--rtc-threads`, every run is repeated for each count of server media threads.
//!
//! With `--publishers P`, the fan-out has P publishers (each VP8 and Opus as the one by default)
//! and every subscriber hears them all. With `--record off,on`, each convene fan-out is run
//! without and then with a recording of its meeting ([`record`]: started through the API before
//! the window, stopped after it, then awaited until ready), and the two are compared: server CPU
//! per packet on / off (issue 24's target: at most 1.10 for 10 tracks at 200 subscribers) and
//! the delay p99 of each.
//!
//! With `--servers convene,janus`, every UDP run is repeated on Janus's VideoRoom (Debian's
//! `janus`, [`janus`]) as the peer SFU: the same participants and media joined through Janus's
//! own signalling ([`signalling`]), in the same tables with a server column, followed by convene
//! / Janus ratios (server CPU per packet, and capacity with `--capacity`).

mod floor;
mod janus;
mod meeting;
mod payload;
mod peer;
mod record;
mod report;
mod server;
mod signalling;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use peer::{Publishing, Transport};
use report::percentile;
use server::Sfu;
use workload::{Figures, Setup, Workload};

/// The fan-out's subscriber counts when no workload is named.
const DEFAULT_SUBSCRIBERS: [usize; 4] = [10, 50, 100, 200];

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Media forwarding through convene's SFU over loopback: publishers to N subscribers (recorded or not), and meetings of 4"
)]
struct Args {
    /// Subscriber counts of the fan-out (--publishers publishers, N subscribers in one room), one
    /// fresh server each; 10,50,100,200 when neither this, --rooms nor --capacity is given.
    #[arg(long, value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// Publishers of the fan-out, each sending VP8 and Opus; every subscriber hears them all, and
    /// each publisher the others.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Record the fan-out's meeting (convene only): off, on, or both (e.g. off,on), one run each
    /// in the order given, on a fresh server. A recording starts through the API once everyone
    /// receives media (before the settling and the window) and stops a second after the window;
    /// the bench then waits for it to be ready (the composite is built after the stop). Janus
    /// runs are never recorded (one run, without).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off")]
    record: Vec<RecordMode>,
    /// Seconds to wait after a recording's stop for it to be ready or failed.
    #[arg(long, default_value_t = 120)]
    recording_timeout: u64,
    /// Room counts M of the meeting workload, one fresh server each: M rooms of 4 participants,
    /// each publishing Opus and VP8 in three simulcast layers (q, h, f) and hearing the 3 others.
    #[arg(long, value_delimiter = ',')]
    rooms: Vec<usize>,
    /// After the --rooms runs, search the most rooms with frame loss under 0.1% and delay p99 at
    /// most 100 ms: doubling from the largest passing count, then bisecting to within 5% (or one
    /// room), each probe on a fresh server with a window of --seconds.
    #[arg(long)]
    capacity: bool,
    /// Media threads of the server (CONVENE_RTC_THREADS), e.g. 1,2: every run is repeated for
    /// each; the server's default when not given.
    #[arg(long, value_delimiter = ',')]
    rtc_threads: Vec<usize>,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The servers measured, each run on a fresh server process: convene, and Janus's VideoRoom
    /// plugin (Debian's `janus` on PATH, one event loop per core), over UDP only.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "convene")]
    servers: Vec<Sfu>,
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
    /// Milliseconds between two participants' joins.
    #[arg(long, default_value_t = 25)]
    join_interval_ms: u64,
    /// Seconds to wait for every participant to receive media (and for the publishers' media to
    /// flow).
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Seconds of steady media, all participants in, before the window opens.
    #[arg(long, default_value_t = 2)]
    settle_seconds: u64,
    /// SO_RCVBUF of each client socket, in bytes (capped by net.core.rmem_max).
    #[arg(long, default_value_t = 1 << 20)]
    recv_buffer: usize,
    /// After each fan-out run, run the str0m floor with as many subscribers: the same packets sent
    /// through str0m and the kernel as the engine sends them, with convene's own code taken out.
    #[arg(long)]
    floor: bool,
    /// How the participants receive media (their subscriber connections): UDP, ICE over TCP (one
    /// active TCP candidate each, no UDP one), or both, one run after the other at each count.
    /// Publisher connections always use UDP.
    #[arg(long, value_enum, default_value_t = Transports::Both)]
    transport: Transports,
    /// Turn on the server's subscriber bandwidth estimation (`CONVENE_RTC_SUBSCRIBER_BWE`), and
    /// configure the floor's subscriber connections the same way.
    #[arg(long)]
    subscriber_bwe: bool,
}

/// Whether a fan-out is recorded (`--record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecordMode {
    Off,
    On,
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

impl Args {
    /// What every publisher sends (with simulcast, its full layer).
    fn publishing(&self) -> Publishing {
        let gop = self.fps * self.keyframe_seconds.max(1);
        let (keyframe_bytes, delta_bytes) =
            payload::video_sizes(self.video_kbps * 1000, self.fps, gop, 5);
        Publishing {
            fps: self.fps,
            gop,
            keyframe_bytes,
            delta_bytes,
            audio_bytes: self.audio_bytes,
        }
    }

    /// The fan-out's subscriber counts: those given, or the default when no workload is named.
    fn fanout_counts(&self) -> Vec<usize> {
        if self.subscribers.is_empty() && self.rooms.is_empty() && !self.capacity {
            DEFAULT_SUBSCRIBERS.to_vec()
        } else {
            self.subscribers.clone()
        }
    }

    /// The server media thread counts each run is repeated for (`None`: the server's default).
    fn thread_counts(&self) -> Vec<Option<usize>> {
        if self.rtc_threads.is_empty() {
            vec![None]
        } else {
            self.rtc_threads.iter().copied().map(Some).collect()
        }
    }

    /// The servers run over `transport` and their thread counts: convene with each thread
    /// count, then Janus (over UDP only) with its own.
    fn servers_over(&self, transport: Transport) -> Vec<(Sfu, Option<usize>)> {
        let mut servers = Vec::new();
        for &server in &self.servers {
            match server {
                Sfu::Convene => {
                    servers.extend(self.thread_counts().into_iter().map(|t| (server, t)))
                }
                Sfu::Janus if transport == Transport::Udp => servers.push((server, None)),
                Sfu::Janus => {}
            }
        }
        servers
    }

    /// The recording comparison's values for a convene fan-out (`None`: one run, not recorded,
    /// when `--record` is only `off`).
    fn record_values(&self) -> Vec<Option<bool>> {
        if self.record.contains(&RecordMode::On) {
            let mut values: Vec<Option<bool>> = Vec::new();
            for mode in &self.record {
                let value = Some(*mode == RecordMode::On);
                if !values.contains(&value) {
                    values.push(value);
                }
            }
            values
        } else {
            vec![None]
        }
    }

    /// Every setup of `workloads`, in run order: each workload over each transport, on each
    /// server with each thread count, convene's fan-outs with each `--record` value (so the runs
    /// compared are next to each other).
    fn setups(&self, workloads: impl IntoIterator<Item = Workload>) -> Vec<Setup> {
        let mut setups = Vec::new();
        for workload in workloads {
            for &transport in self.transport.list() {
                for (server, threads) in self.servers_over(transport) {
                    let records = match (server, workload) {
                        (Sfu::Convene, Workload::Fanout { .. }) => self.record_values(),
                        _ => vec![None],
                    };
                    for record in records {
                        setups.push(Setup {
                            server,
                            workload,
                            transport,
                            threads,
                            record,
                        });
                    }
                }
            }
        }
        setups
    }

    /// The threads column of the tables, there when --rtc-threads was given.
    fn threads_column(&self) -> ThreadsColumn {
        ThreadsColumn(!self.rtc_threads.is_empty())
    }
}

/// The "threads" column of a table (the server's media threads), shown or not.
#[derive(Debug, Clone, Copy)]
struct ThreadsColumn(bool);

impl ThreadsColumn {
    /// Its header, to follow a `|`.
    fn head(self) -> &'static str {
        if self.0 { " threads |" } else { "" }
    }

    /// Its alignment row cell.
    fn align(self) -> &'static str {
        if self.0 { "---:|" } else { "" }
    }

    /// A row's cell: the run's thread count ("-" for Janus, which has its own).
    fn cell(self, threads: Option<usize>) -> String {
        match threads {
            _ if !self.0 => String::new(),
            Some(threads) => format!(" {threads} |"),
            None => " - |".to_owned(),
        }
    }
}

/// What the tables' readers need to know of the servers in `all`: where the clients were, and
/// how Janus was configured.
fn print_servers(all: &[Figures]) {
    for server in [Sfu::Convene, Sfu::Janus] {
        let Some(f) = all.iter().find(|f| f.setup.server == server) else {
            continue;
        };
        match server {
            Sfu::Convene => println!(
                "convene: the release binary, its clients' sockets on {}.",
                f.client_ip
            ),
            Sfu::Janus => println!(
                "janus: Debian's janus, VideoRoom plugin, event_loops = {} (one per core), its clients' sockets on {} (Janus does no ICE on 127.0.0.1; the kernel carries it over loopback all the same), joined through its HTTP API; UDP only.",
                server::janus_event_loops(),
                f.client_ip
            ),
        }
    }
}

/// For each convene run of `all` that has a Janus run of the same workload and transport: convene
/// / Janus server CPU per packet (the target: at most 0.5 at 200 subscribers), with
/// their loss and delay.
fn print_ratios(all: &[Figures]) {
    for convene in all
        .iter()
        .filter(|f| f.setup.server == Sfu::Convene && f.setup.record != Some(true))
    {
        let Some(janus) = all.iter().find(|f| {
            f.setup.server == Sfu::Janus
                && (f.setup.workload, f.setup.transport)
                    == (convene.setup.workload, convene.setup.transport)
        }) else {
            continue;
        };
        let ratio = convene.server_us_per_packet() / janus.server_us_per_packet();
        let target = if convene.setup.workload
            == (Workload::Fanout {
                subscribers: 200,
                publishers: 1,
            }) {
            format!(
                " (target at 200 subscribers: at most 0.5: {})",
                if ratio <= 0.5 { "met" } else { "missed" }
            )
        } else {
            String::new()
        };
        let threads = convene
            .setup
            .threads
            .map(|t| format!(" threads={t}"))
            .unwrap_or_default();
        println!(
            "{} {}{threads}: convene / janus server CPU per packet {ratio:.2} ({:.2} / {:.2} µs){target}; frame loss {:.3}% / {:.3}%; delay p99 {} / {}",
            convene.setup.workload,
            convene.setup.transport,
            convene.server_us_per_packet(),
            janus.server_us_per_packet(),
            convene.delivery.frame_loss_pct(),
            janus.delivery.frame_loss_pct(),
            ms(percentile(&convene.delivery.delays_us, 99.0)),
            ms(percentile(&janus.delivery.delays_us, 99.0)),
        );
    }
}

/// Run `setup`, say how it went on stderr, and check a TCP run really used TCP.
async fn run(setup: Setup, args: &Args, ticks: u64) -> anyhow::Result<Figures> {
    let figures = workload::run(setup, args, ticks)
        .await
        .with_context(|| format!("the run {setup}"))?;
    eprintln!(
        "[{setup}] {:.2} µs server CPU per packet, frame loss {:.3}%, delay p50 {} p99 {}",
        figures.server_us_per_packet(),
        figures.delivery.frame_loss_pct(),
        ms(percentile(&figures.delivery.delays_us, 50.0)),
        ms(percentile(&figures.delivery.delays_us, 99.0)),
    );
    if setup.transport == Transport::Tcp && figures.tcp_frames_in_window == 0 {
        bail!("the run {setup} read no packet over TCP");
    }
    Ok(figures)
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn print_table(all: &[Figures], args: &Args) {
    let p = args.publishing();
    let threads = args.threads_column();
    println!();
    println!(
        "{}: VP8 {} kbps at {} fps (keyframe {} B every {} frames, delta frames {} B), Opus {} B every 20 ms.",
        if args.publishers == 1 {
            "Publisher".to_owned()
        } else {
            format!(
                "Each of the {} publishers (every subscriber hears them all, each publisher the others)",
                args.publishers
            )
        },
        args.video_kbps,
        p.fps,
        p.keyframe_bytes,
        p.gop,
        p.delta_bytes,
        p.audio_bytes
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
    if args.publishers > 1 {
        println!(
            "With {} publishers: packets of every publisher's tracks, summed over every participant hearing them (each publisher",
            args.publishers
        );
        println!(
            "hears the others): server CPU / packet divides by these packets received, the packets forwarded that arrived."
        );
    }
    print_servers(all);
    let publishers = args.publishers > 1;
    let record = all.iter().any(|f| f.setup.record.is_some());
    if record {
        println!(
            "record: on = the meeting recorded through the API from before the settling to a second after the window (the composite built after the stop); janus runs are not recorded."
        );
    }
    let extra = |on: bool, text: &'static str| if on { text } else { "" };
    println!();
    println!(
        "| subscribers |{} server |{}{} transport | window | packets forwarded | server CPU | server CPU / packet | frame loss | RTP loss | subscribers with loss | delay p50 | delay p99 | delay max | video p99 | audio p99 | bench CPU | client socket drops | server socket drops |",
        extra(publishers, " publishers |"),
        threads.head(),
        extra(record, " record |"),
    );
    println!(
        "|---:|{}---|{}{}---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        extra(publishers, "---:|"),
        threads.align(),
        extra(record, "---|"),
    );
    for f in all {
        let d = &f.delivery;
        let publishers_cell = match f.setup.workload {
            Workload::Fanout { publishers: p, .. } if publishers => format!(" {p} |"),
            _ => String::new(),
        };
        let record_cell = match f.setup.record {
            _ if !record => "",
            Some(true) => " on |",
            Some(false) => " off |",
            None => " - |",
        };
        println!(
            "| {} |{publishers_cell} {} |{}{record_cell} {} | {:.1} s | {} ({:.0}/s) | {:.0}% | {:.2} µs | {:.3}% | {:.3}% | {} (worst {:.2}%) | {} | {} | {} | {} | {} | {:.0}% | {} | {} |",
            f.setup.workload.count(),
            f.setup.server,
            threads.cell(f.setup.threads),
            f.setup.transport,
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
            f.server_socket_drops,
        );
    }
    print_summaries(all);
    for udp in all.iter().filter(|f| f.setup.transport == Transport::Udp) {
        let tcp = all.iter().find(|f| {
            f.setup
                == Setup {
                    transport: Transport::Tcp,
                    ..udp.setup
                }
        });
        if let Some(tcp) = tcp {
            println!(
                "{}: TCP / UDP server CPU per packet {:.2} ({:.2} / {:.2} µs); frame loss {:.3}% / {:.3}%; delay p99 {} / {}",
                udp.setup,
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
    print_ratios(all);
    print_recording(all);
    for f in all.iter().filter(|f| {
        f.setup.server == Sfu::Convene
            && matches!(
                f.setup.workload,
                Workload::Fanout {
                    subscribers: 200,
                    ..
                }
            )
    }) {
        println!(
            "targets at {}: server CPU per packet {:.2} µs (target <= 5 µs: {}); frame loss {:.3}% (target: none: {})",
            f.setup,
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

/// For each recorded convene run: how its recording ended; then, where the same setup ran
/// unrecorded too, server CPU per packet recorded / not (issue 24's target: at most 1.10 with 10
/// tracks at 200 subscribers) and the delay p99 of both.
fn print_recording(all: &[Figures]) {
    let recorded: Vec<&Figures> = all
        .iter()
        .filter(|f| f.setup.record == Some(true))
        .collect();
    if recorded.is_empty() {
        return;
    }
    println!();
    for on in &recorded {
        if let Some(r) = &on.recorded {
            println!("{}: {}", on.setup, workload::describe_recorded(r));
        }
    }
    for on in recorded {
        let Some(off) = all.iter().find(|f| {
            f.setup
                == Setup {
                    record: Some(false),
                    ..on.setup
                }
        }) else {
            continue;
        };
        let Workload::Fanout {
            subscribers,
            publishers,
        } = on.setup.workload
        else {
            continue;
        };
        let ratio = on.server_us_per_packet() / off.server_us_per_packet();
        let (p99_on, p99_off) = (
            percentile(&on.delivery.delays_us, 99.0),
            percentile(&off.delivery.delays_us, 99.0),
        );
        let threads = on
            .setup
            .threads
            .map(|t| format!(", threads={t}"))
            .unwrap_or_default();
        println!(
            "recording {} tracks ({publishers} people) at {subscribers} subscribers ({}{threads}): CPU/packet on/off = {ratio:.2} ({:.2} / {:.2} µs; target <= 1.10: {}), p99 delay on {} vs off {} ({:+.2} ms: {}); frame loss on {:.3}% vs off {:.3}%; recording {}",
            2 * publishers,
            on.setup.transport,
            on.server_us_per_packet(),
            off.server_us_per_packet(),
            if ratio <= 1.10 { "met" } else { "missed" },
            ms(p99_on),
            ms(p99_off),
            (f64::from(p99_on) - f64::from(p99_off)) / 1000.0,
            if p99_on <= p99_off {
                "did not rise"
            } else {
                "rose"
            },
            on.delivery.frame_loss_pct(),
            off.delivery.frame_loss_pct(),
            on.recorded
                .as_ref()
                .map_or("not checked", |r| r.state.as_str()),
        );
    }
}

/// One line per run of what was sent, expected and received in its window.
fn print_summaries(all: &[Figures]) {
    println!();
    for f in all {
        let d = &f.delivery;
        println!(
            "{}: frames sent {} video + {} audio ({} keyframes, {} of them requested); frames expected {} received {}; RTP packets expected {} received {}; packets read over TCP {}; failed participants {}",
            f.setup,
            f.frames_sent_video,
            f.frames_sent_audio,
            f.keyframes_in_window,
            f.requested_keyframes_in_window,
            d.frames_expected,
            d.frames_received,
            d.packets_expected,
            d.packets_received,
            f.tcp_frames_in_window,
            f.failed_participants,
        );
    }
}

/// The floor's figures next to convene's, each floor run right after convene's run `Setup`.
fn print_floor(floors: &[(Setup, f64, floor::FloorFigures)], threads: ThreadsColumn) {
    println!();
    println!(
        "str0m floor (--floor): the same packets written to str0m connections configured as the engine's, timer pass per turn,"
    );
    println!(
        "every datagram polled out and sent with the engine's GSO batching to real sockets (over TCP: framed, one write per"
    );
    println!(
        "connection and turn, to real loopback TCP connections); str0m clients answer (STUN, RTCP), and every answer is read"
    );
    println!("and handed to its connection; no signalling, routing or rewriting.");
    println!();
    println!(
        "| subscribers |{} transport | window | packets delivered | answers read / s | floor CPU | floor CPU / packet | delivered / written | convene CPU / packet | convene / floor |",
        threads.head()
    );
    println!(
        "|---:|{}---|---:|---:|---:|---:|---:|---:|---:|---:|",
        threads.align()
    );
    for (setup, convene, f) in floors {
        println!(
            "| {} |{} {} | {:.1} s | {} | {:.0} | {:.0}% | {:.2} µs | {:.2}% | {:.2} µs | {:.2} |",
            f.subscribers,
            threads.cell(setup.threads),
            f.transport,
            f.wall.as_secs_f64(),
            f.delivered,
            f.answers as f64 / f.wall.as_secs_f64(),
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
    if [&args.subscribers, &args.rooms, &args.rtc_threads]
        .iter()
        .any(|counts| counts.contains(&0))
    {
        bail!("--subscribers, --rooms and --rtc-threads take counts above zero");
    }
    if args.seconds == 0 || args.fps == 0 || args.publishers == 0 {
        bail!("--seconds, --fps and --publishers must be above zero");
    }
    if args.record.contains(&RecordMode::On) && !args.servers.contains(&Sfu::Convene) {
        bail!("--record on records convene's fan-outs: add convene to --servers");
    }
    if args.servers.contains(&Sfu::Convene) && !args.convene_bin.exists() {
        bail!(
            "{} does not exist (build it with cargo build --release -p convene)",
            args.convene_bin.display()
        );
    }
    if args.servers.is_empty() {
        bail!("--servers names at least one server");
    }
    if args.servers.contains(&Sfu::Janus) && args.transport != Transports::Udp {
        println!(
            "Janus runs over UDP only (ICE-TCP with Janus is out of scope): the TCP runs are convene's alone."
        );
    }
    if args.floor && args.publishers > 1 {
        println!(
            "The str0m floor is of one publisher: --floor is ignored with --publishers above 1."
        );
    }
    let ticks = server::clock_ticks();
    let fanouts = args.fanout_counts().into_iter();
    let mut all = Vec::new();
    let mut floors = Vec::new();
    let publishers = args.publishers;
    for setup in args.setups(fanouts.map(|subscribers| Workload::Fanout {
        subscribers,
        publishers,
    })) {
        let figures = run(setup, &args, ticks).await?;
        // The floor is of one publisher's packets, next to the unrecorded run.
        if args.floor
            && publishers == 1
            && setup.server == Sfu::Convene
            && setup.record != Some(true)
        {
            let n = setup.workload.count();
            let floor = floor::run(
                n,
                setup.transport,
                args.publishing(),
                Duration::from_secs(args.seconds),
                Duration::from_secs(args.settle_seconds),
                args.recv_buffer,
                ticks,
                args.subscriber_bwe,
            )
            .await
            .with_context(|| format!("the floor of {setup}"))?;
            eprintln!(
                "[{setup}] floor {:.2} µs CPU per packet; convene / floor {:.2}",
                floor.us_per_packet(),
                figures.server_us_per_packet() / floor.us_per_packet(),
            );
            floors.push((setup, figures.server_us_per_packet(), floor));
        }
        all.push(figures);
    }
    if !all.is_empty() {
        print_table(&all, &args);
    }
    if !floors.is_empty() {
        print_floor(&floors, args.threads_column());
    }
    let mut meetings = Vec::new();
    for setup in args.setups(args.rooms.iter().map(|&rooms| Workload::Meeting { rooms })) {
        // A load past what the server (or this machine) carries may end in a participant cut
        // off: a result for the capacity search (a miss, probed again if it needs the count),
        // not the end of the benchmark.
        match run(setup, &args, ticks).await {
            Ok(figures) => meetings.push(figures),
            Err(e) if args.capacity => eprintln!("{e:#}"),
            Err(e) => return Err(e),
        }
    }
    if !meetings.is_empty() {
        meeting::print_table("Meetings (--rooms)", &meetings, &args);
    }
    if args.capacity {
        meeting::capacity(&meetings, &args, ticks).await?;
    }
    Ok(())
}
