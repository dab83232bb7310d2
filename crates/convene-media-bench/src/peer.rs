//! One bench participant without a browser: str0m peer connections, each on its own UDP socket
//! on the run's client address ([`Shared::client_ip`]: 127.0.0.1 for convene, the host's own
//! address for Janus), or, for a subscriber over TCP, on one TCP connection to the server's
//! passive ICE-TCP candidate (RFC 6544, packets framed by RFC 4571), and the server's signalling
//! ([`crate::signalling`]: LiveKit's WebSocket for convene, the VideoRoom's HTTP API for Janus).
//! A publishing participant offers a VP8 track (one layer, or three simulcast layers as
//! livekit-client sends a camera) and an Opus track on its publisher peer connection and sends
//! synthetic frames on a fixed schedule; every participant answers the server's offers on its
//! subscriber peer connection and records each frame it receives (publisher, counter, delay, RTP
//! sequence numbers). The media is the same whatever the server; only the signalling differs.
//!
//! Each participant is one tokio task that owns its `Rtc`s (no locks): it waits on its sockets,
//! its signalling and the earliest timer, feeds str0m, and drains `poll_output` after every input.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use livekit_protocol as proto;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaData, MediaKind, MediaTime, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use convene_sfu::framing::{self, FrameReader};

use crate::payload::{self, Kind, Stamp};
use crate::report::Received;
use crate::signalling::{Join, PublisherOffer, Signal, Signalling};

/// The video track's id (its `msid` track id, and LiveKit's `cid` for it).
pub const VIDEO_CID: &str = "bench-camera";
/// The audio track's id.
pub const AUDIO_CID: &str = "bench-microphone";
/// The picture size of the video track (of its full layer with simulcast).
pub const FULL_SIZE: (u16, u16) = (640, 360);
/// livekit-client's three camera layers: rid, quality, and how many times smaller than the full
/// layer each is in width, in height and in bitrate.
const SIMULCAST_LAYERS: [(&str, proto::VideoQuality, u16); 3] = [
    ("q", proto::VideoQuality::Low, 4),
    ("h", proto::VideoQuality::Medium, 2),
    ("f", proto::VideoQuality::High, 1),
];
/// Extra datagrams read from a socket in one wake-up (each fed to str0m and drained in turn).
const RECV_BATCH: usize = 64;
/// The address of a subscriber's active ICE-TCP candidate. An active candidate connects out, so
/// it has no port to advertise; port 9 (discard) is the convention (RFC 6544, section 4.5).
const ACTIVE_TCP_CANDIDATE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
/// Bytes of frames a TCP client keeps for a connection that does not take them; beyond, packets
/// are dropped (as a full UDP socket buffer would). A subscriber sends only STUN, DTLS and RTCP.
const TCP_OUT_LIMIT: usize = 1 << 20;

/// How the subscribers' media reaches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// UDP host candidates, one socket per peer connection.
    Udp,
    /// One active ICE-TCP host candidate (and no UDP one), so str0m can pair it only with the
    /// server's passive TCP candidate.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        })
    }
}

/// State shared by the orchestrator and every participant task.
pub struct Shared {
    /// The clock publishers stamp frames with (nanoseconds since this instant).
    pub epoch: Instant,
    pub crypto: Arc<CryptoProvider>,
    pub stop: CancellationToken,
    /// SO_RCVBUF asked for on every client socket.
    pub recv_buffer: usize,
    /// The address every client UDP socket is bound to (and its host candidate is on).
    pub client_ip: Ipv4Addr,
    /// The local UDP ports of every client socket (for the kernel's drop counters).
    pub ports: Mutex<Vec<u16>>,
    /// Participants that have received video and audio from every publisher they hear.
    pub ready: AtomicUsize,
    /// What each publisher sent, by its number (`Publish::source`).
    pub sent: Vec<Sent>,
    /// Participants record the frames they receive from when this is set (the window's edge).
    pub recording: AtomicBool,
    /// RFC 4571 frames the participants read from their TCP connections (each a packet the
    /// server sent over TCP).
    pub tcp_frames_in: AtomicU64,
}

impl Shared {
    /// The state of a run with `publishers` publishers, its clients' sockets on `client_ip`.
    pub fn new(recv_buffer: usize, publishers: usize, client_ip: Ipv4Addr) -> Shared {
        Shared {
            epoch: Instant::now(),
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            stop: CancellationToken::new(),
            recv_buffer,
            client_ip,
            ports: Mutex::new(Vec::new()),
            ready: AtomicUsize::new(0),
            sent: (0..publishers).map(|_| Sent::default()).collect(),
            recording: AtomicBool::new(false),
            tcp_frames_in: AtomicU64::new(0),
        }
    }

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// What one publisher has sent so far (its counters only grow).
#[derive(Default)]
pub struct Sent {
    /// Its publisher connection is up and frames are flowing.
    pub publishing: AtomicBool,
    /// Frames sent so far per kind (= the counter of the next frame); a video frame sent on
    /// every simulcast layer counts once.
    pub video: AtomicU64,
    pub audio: AtomicU64,
    /// Keyframes sent so far, and how many of them answered a keyframe request.
    pub keyframes: AtomicU64,
    pub keyframes_requested: AtomicU64,
}

/// The counters of a [`Sent`] at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SentCount {
    pub video: u64,
    pub audio: u64,
    pub keyframes: u64,
    pub keyframes_requested: u64,
}

impl Sent {
    pub fn count(&self) -> SentCount {
        SentCount {
            video: self.video.load(Ordering::Acquire),
            audio: self.audio.load(Ordering::Acquire),
            keyframes: self.keyframes.load(Ordering::Acquire),
            keyframes_requested: self.keyframes_requested.load(Ordering::Acquire),
        }
    }
}

/// What a publisher sends (its video's full layer, with simulcast).
#[derive(Debug, Clone)]
pub struct Publishing {
    pub fps: u32,
    /// A keyframe every `gop` frames (and whenever a keyframe is requested).
    pub gop: u32,
    pub keyframe_bytes: usize,
    pub delta_bytes: usize,
    /// Opus packets every 20 ms of this size.
    pub audio_bytes: usize,
}

/// What one participant does: publish or not, and whose media it should receive.
pub struct Role {
    /// What it publishes on its publisher connection, if anything.
    pub publish: Option<Publish>,
    /// The publishers it should hear: it counts as ready once it has received video and audio
    /// from each of them.
    pub hears: Vec<u32>,
    /// How its subscriber connection reaches the server (its publisher connection always uses
    /// UDP).
    pub transport: Transport,
}

/// A participant's published media.
pub struct Publish {
    /// Its number in the run: stamped into its frames, and its place in [`Shared::sent`].
    pub source: u32,
    pub media: Publishing,
    /// Send the video in three simulcast layers (rids q, h, f) rather than one.
    pub simulcast: bool,
}

/// One encoding of the video track: its only one, or a simulcast layer.
pub struct Layer {
    /// `None` without simulcast.
    rid: Option<Rid>,
    pub quality: proto::VideoQuality,
    pub size: (u16, u16),
    keyframe_bytes: usize,
    delta_bytes: usize,
    /// Bits per second the frame sizes make.
    pub bitrate: u32,
}

impl Layer {
    /// The layers `media` is sent in: one at full size and rate or, with `simulcast`, those of
    /// [`SIMULCAST_LAYERS`], each a fraction of the full size and bitrate.
    fn all(media: &Publishing, simulcast: bool) -> Vec<Layer> {
        let gop = u64::from(media.gop.max(1));
        let layer = |rid: Option<&str>, quality, div: u16| {
            let keyframe_bytes =
                (media.keyframe_bytes / usize::from(div)).max(payload::MIN_VIDEO_BYTES);
            let delta_bytes = (media.delta_bytes / usize::from(div)).max(payload::MIN_VIDEO_BYTES);
            let gop_bits = (keyframe_bytes as u64 + (gop - 1) * delta_bytes as u64) * 8;
            Layer {
                rid: rid.map(Rid::from),
                quality,
                size: (FULL_SIZE.0 / div, FULL_SIZE.1 / div),
                keyframe_bytes,
                delta_bytes,
                bitrate: (gop_bits * u64::from(media.fps) / gop) as u32,
            }
        };
        if simulcast {
            SIMULCAST_LAYERS
                .iter()
                .map(|&(rid, quality, div)| layer(Some(rid), quality, div))
                .collect()
        } else {
            vec![layer(None, proto::VideoQuality::High, 1)]
        }
    }
}

/// The client side of one ICE-TCP connection: str0m's packets to the server's passive
/// candidate, framed (RFC 4571) and written; the bytes read, cut back into packets.
struct TcpLink {
    /// The server's passive candidate, learnt from str0m's first packet to send.
    remote: Option<SocketAddr>,
    /// Connected on the first flush after `remote` is known.
    stream: Option<TcpStream>,
    /// Framed packets not yet taken by the kernel.
    out: Vec<u8>,
    reader: FrameReader,
}

/// How a peer connection's packets travel.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpLink),
}

/// What a peer connection's link has for us.
enum Incoming {
    Datagram(usize, SocketAddr),
    /// The TCP connection is readable, or writable with frames waiting.
    TcpReady,
}

/// A str0m peer connection and its link.
struct Pc {
    rtc: Rtc,
    link: Link,
    /// Our one host candidate.
    candidate: Candidate,
    next_timeout: Instant,
}

impl Pc {
    fn new(shared: &Shared, now: Instant, transport: Transport) -> anyhow::Result<Pc> {
        let (link, candidate) = match transport {
            Transport::Udp => {
                let socket =
                    UdpSocket::from_std(client_socket(shared.client_ip, shared.recv_buffer)?)?;
                let local = socket.local_addr()?;
                shared.ports.lock().expect("ports lock").push(local.port());
                (Link::Udp(socket), Candidate::host(local, "udp")?)
            }
            Transport::Tcp => {
                let candidate = Candidate::builder()
                    .tcp()
                    .host(ACTIVE_TCP_CANDIDATE)
                    .tcptype(TcpType::Active)
                    .build()?;
                let link = TcpLink {
                    remote: None,
                    stream: None,
                    out: Vec::new(),
                    reader: FrameReader::new(),
                };
                (Link::Tcp(link), candidate)
            }
        };
        let mut rtc = client_config(shared.crypto.clone()).build(now);
        rtc.add_local_candidate(candidate.clone())
            .context("str0m refused the bench's host candidate")?;
        Ok(Pc {
            rtc,
            link,
            candidate,
            next_timeout: now,
        })
    }

    fn receive(
        &mut self,
        protocol: Protocol,
        bytes: &[u8],
        source: SocketAddr,
        now: Instant,
    ) -> anyhow::Result<()> {
        // Anything that is not STUN, DTLS, RTP or RTCP is ignored.
        if let Ok(receive) = Receive::new(protocol, source, self.candidate.addr(), bytes) {
            self.rtc.handle_input(Input::Receive(now, receive))?;
        }
        Ok(())
    }

    /// What the link has next: a datagram, or a TCP connection ready (cancel safe).
    async fn incoming(&self, buf: &mut [u8]) -> std::io::Result<Incoming> {
        match &self.link {
            Link::Udp(socket) => {
                let (n, source) = socket.recv_from(buf).await?;
                Ok(Incoming::Datagram(n, source))
            }
            Link::Tcp(TcpLink {
                stream: Some(stream),
                out,
                ..
            }) => {
                let interest = if out.is_empty() {
                    Interest::READABLE
                } else {
                    Interest::READABLE | Interest::WRITABLE
                };
                stream.ready(interest).await?;
                Ok(Incoming::TcpReady)
            }
            Link::Tcp(_) => std::future::pending().await,
        }
    }

    /// Read what the TCP connection holds (up to a batch), feed each frame to str0m and drain.
    fn receive_tcp(
        &mut self,
        buf: &mut [u8],
        events: &mut Vec<Event>,
        shared: &Shared,
    ) -> anyhow::Result<()> {
        let now = Instant::now();
        for _ in 0..RECV_BATCH {
            let Link::Tcp(link) = &mut self.link else {
                return Ok(());
            };
            let (Some(stream), Some(remote)) = (&link.stream, link.remote) else {
                return Ok(());
            };
            let n = match stream.try_read(buf) {
                Ok(0) => bail!("the server closed the media TCP connection"),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("media TCP read"),
            };
            link.reader.push(&buf[..n]);
            let mut frames = Vec::new();
            while let Some(frame) = link
                .reader
                .next_frame()
                .context("the server sent a bad RFC 4571 frame")?
            {
                frames.push(frame.to_vec());
            }
            shared
                .tcp_frames_in
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
            for frame in frames {
                self.receive(Protocol::Tcp, &frame, remote, now)?;
                self.drain(events)?;
            }
        }
        Ok(())
    }

    /// Connect the TCP link once str0m has named the server's candidate, then write what the
    /// kernel takes now; the rest waits for the connection to be writable. No-op over UDP.
    async fn flush(&mut self) -> anyhow::Result<()> {
        let Link::Tcp(link) = &mut self.link else {
            return Ok(());
        };
        if link.stream.is_none() {
            let Some(remote) = link.remote else {
                return Ok(());
            };
            let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(remote))
                .await
                .with_context(|| format!("media TCP connect to {remote} timed out"))?
                .with_context(|| format!("media TCP connect to {remote}"))?;
            stream.set_nodelay(true)?;
            link.stream = Some(stream);
        }
        let stream = link.stream.as_ref().expect("connected above");
        while !link.out.is_empty() {
            match stream.try_write(&link.out) {
                Ok(n) => {
                    link.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("media TCP write"),
            }
        }
        Ok(())
    }

    /// Send what str0m has to send, collect its events, learn its next timeout.
    fn drain(&mut self, events: &mut Vec<Event>) -> anyhow::Result<()> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return Ok(());
                }
                Output::Transmit(transmit) => match &mut self.link {
                    Link::Udp(socket) => {
                        // A full socket buffer drops the datagram, as the network would.
                        let _ = socket.try_send_to(&transmit.contents, transmit.destination);
                    }
                    Link::Tcp(link) => {
                        // One connection, to the server's passive candidate: the only remote
                        // TCP candidate str0m can pair ours with.
                        let remote = *link.remote.get_or_insert(transmit.destination);
                        if transmit.proto == Protocol::Tcp
                            && transmit.destination == remote
                            && link.out.len() < TCP_OUT_LIMIT
                        {
                            framing::encode(&transmit.contents, &mut link.out);
                        }
                    }
                },
                Output::Event(event) => events.push(event),
            }
        }
    }
}

/// The str0m configuration of a benchmark client: Opus and VP8, str0m's default extensions.
pub fn client_config(crypto: Arc<CryptoProvider>) -> RtcConfig {
    Rtc::builder()
        .set_crypto_provider(crypto)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
}

/// A non-blocking UDP socket on an ephemeral port of `ip` with a receive buffer of
/// `recv_buffer` bytes (as far as the kernel's rmem_max allows).
pub fn client_socket(ip: Ipv4Addr, recv_buffer: usize) -> anyhow::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.set_nonblocking(true)?;
    socket
        .bind(&SocketAddr::from((ip, 0)).into())
        .with_context(|| format!("binding a client UDP socket on {ip}"))?;
    Ok(socket.into())
}

async fn incoming_on(pc: Option<&Pc>, buf: &mut [u8]) -> std::io::Result<Incoming> {
    match pc {
        Some(pc) => pc.incoming(buf).await,
        None => std::future::pending().await,
    }
}

/// Feed what came in: one datagram, then whatever else is already queued on the socket (up to a
/// batch); or what a ready TCP connection holds, then write what waits.
async fn receive_batch(
    pc: &mut Pc,
    first: Incoming,
    buf: &mut [u8],
    events: &mut Vec<Event>,
    shared: &Shared,
) -> anyhow::Result<()> {
    let now = Instant::now();
    let (n, source) = match first {
        Incoming::Datagram(n, source) => (n, source),
        Incoming::TcpReady => {
            pc.receive_tcp(buf, events, shared)?;
            return pc.flush().await;
        }
    };
    pc.receive(Protocol::Udp, &buf[..n], source, now)?;
    pc.drain(events)?;
    for _ in 0..RECV_BATCH {
        let Link::Udp(socket) = &pc.link else { break };
        match socket.try_recv_from(buf) {
            Ok((n, source)) => {
                pc.receive(Protocol::Udp, &buf[..n], source, now)?;
                pc.drain(events)?;
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// A publisher's sending state.
struct Sender {
    /// Its number in the run.
    source: u32,
    config: Publishing,
    /// The video's encodings, each sent every frame.
    layers: Vec<Layer>,
    video_mid: Mid,
    audio_mid: Mid,
    pending: Option<SdpPendingOffer>,
    /// Payload types, known once the answer is in.
    pts: Option<(Pt, Pt)>,
    connected: bool,
    started: Option<Instant>,
    /// Schedules (shifted when the sender was starved), from `started`.
    video_anchor: Option<Instant>,
    audio_anchor: Option<Instant>,
    next_video: u64,
    next_audio: u64,
    keyframe_requested: bool,
}

impl Sender {
    fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.config.fps.max(1)))
    }

    /// When the next video and audio frames are due (None before the connection is up).
    fn next_due(&self) -> Option<Instant> {
        let started = self.started?;
        let video =
            self.video_anchor.unwrap_or(started) + self.frame_interval() * self.next_video as u32;
        let audio = self.audio_anchor.unwrap_or(started)
            + Duration::from_millis(20) * self.next_audio as u32;
        Some(video.min(audio))
    }

    /// Write every frame that is due at `now`, a video frame on each layer. A sender starved for
    /// more than one interval sends the late frame and shifts its schedule rather than bursting;
    /// counters stay contiguous, so every counter of the window is a frame that was really sent.
    /// A keyframe request, whatever its layer, makes the next frame a keyframe on every layer.
    fn send_due(&mut self, pc: &mut Pc, shared: &Shared, now: Instant) -> anyhow::Result<()> {
        let (Some(started), Some((video_pt, audio_pt))) = (self.started, self.pts) else {
            return Ok(());
        };
        let sent = &shared.sent[self.source as usize];
        let video_anchor = *self.video_anchor.get_or_insert(started);
        let audio_anchor = *self.audio_anchor.get_or_insert(started);
        let interval = self.frame_interval();
        loop {
            let video_anchor = self.video_anchor.unwrap_or(video_anchor);
            let due = video_anchor + interval * self.next_video as u32;
            if due > now {
                break;
            }
            let late = now.saturating_duration_since(due);
            if late > interval {
                // Starved: send this frame now and shift the schedule, never skip a counter.
                self.video_anchor = Some(video_anchor + late);
            }
            let counter = self.next_video;
            self.next_video += 1;
            let keyframe = counter.is_multiple_of(u64::from(self.config.gop.max(1)))
                || self.keyframe_requested;
            if keyframe {
                sent.keyframes.fetch_add(1, Ordering::Relaxed);
                if self.keyframe_requested {
                    sent.keyframes_requested.fetch_add(1, Ordering::Relaxed);
                }
                self.keyframe_requested = false;
            }
            let time = MediaTime::new(
                counter * 90_000 / u64::from(self.config.fps.max(1)),
                Frequency::NINETY_KHZ,
            );
            for layer in &self.layers {
                let size = if keyframe {
                    layer.keyframe_bytes
                } else {
                    layer.delta_bytes
                };
                let stamp = Stamp {
                    source: self.source,
                    kind: Kind::Video,
                    layer: layer.quality as u8,
                    counter,
                    sent_ns: shared.nanos_since_epoch(Instant::now()),
                };
                let frame = payload::video_frame(stamp, keyframe, size, layer.size);
                let mut writer = pc
                    .rtc
                    .writer(self.video_mid)
                    .context("no writer for the video track")?;
                if let Some(rid) = layer.rid {
                    writer = writer.rid(rid);
                }
                writer.write(video_pt, now, time, frame)?;
            }
            sent.video.store(counter + 1, Ordering::Release);
        }
        loop {
            let audio_anchor = self.audio_anchor.unwrap_or(audio_anchor);
            let due = audio_anchor + Duration::from_millis(20) * self.next_audio as u32;
            if due > now {
                break;
            }
            let late = now.saturating_duration_since(due);
            if late > Duration::from_millis(20) {
                self.audio_anchor = Some(audio_anchor + late);
            }
            let counter = self.next_audio;
            self.next_audio += 1;
            let stamp = Stamp {
                source: self.source,
                kind: Kind::Audio,
                layer: 0,
                counter,
                sent_ns: shared.nanos_since_epoch(Instant::now()),
            };
            let frame = payload::audio_frame(stamp, self.config.audio_bytes);
            let writer = pc
                .rtc
                .writer(self.audio_mid)
                .context("no writer for the audio track")?;
            writer.write(
                audio_pt,
                now,
                MediaTime::new(counter * 960, Frequency::FORTY_EIGHT_KHZ),
                frame,
            )?;
            sent.audio.store(counter + 1, Ordering::Release);
        }
        Ok(())
    }
}

fn payload_type(rtc: &mut Rtc, mid: Mid, codec: Codec) -> anyhow::Result<Pt> {
    let writer = rtc
        .writer(mid)
        .with_context(|| format!("no writer for {mid}"))?;
    let pt = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt());
    pt.with_context(|| format!("{codec:?} was not negotiated"))
}

/// A participant's recording state.
struct Recorder {
    records: Vec<Received>,
    /// Each publisher it hears, and whether its video and its audio (by [`Kind`]) came yet.
    heard: Vec<(u32, [bool; 2])>,
    counted_ready: bool,
}

impl Recorder {
    fn new(hears: &[u32]) -> Recorder {
        Recorder {
            records: Vec::new(),
            heard: hears.iter().map(|&source| (source, [false; 2])).collect(),
            counted_ready: false,
        }
    }

    fn on_media(&mut self, data: &MediaData, shared: &Shared) {
        let now = Instant::now();
        let kind = if data.params.spec().codec.is_audio() {
            Kind::Audio
        } else {
            Kind::Video
        };
        let Some(stamp) = payload::parse(kind, &data.data) else {
            return;
        };
        if let Some((_, seen)) = self.heard.iter_mut().find(|(s, _)| *s == stamp.source) {
            seen[kind as usize] = true;
        }
        if !self.counted_ready
            && !self.heard.is_empty()
            && self.heard.iter().all(|(_, seen)| seen.iter().all(|s| *s))
        {
            self.counted_ready = true;
            shared.ready.fetch_add(1, Ordering::AcqRel);
        }
        if !shared.recording.load(Ordering::Acquire) {
            return;
        }
        let sent = shared.epoch + Duration::from_nanos(stamp.sent_ns);
        let first = **data.seq_range.start();
        let last = **data.seq_range.end();
        self.records.push(Received {
            source: stamp.source,
            kind,
            layer: stamp.layer,
            counter: stamp.counter,
            delay_us: now
                .saturating_duration_since(sent)
                .as_micros()
                .min(u128::from(u32::MAX)) as u32,
            first_seq: first,
            packets: (last.saturating_sub(first) + 1) as u32,
        });
    }
}

/// Offer the tracks of `publish` (with its simulcast layers) on a new publisher connection,
/// through `signalling`; its sender starts once the answer is in and the connection is up.
async fn start_publishing(
    signalling: &mut Signalling,
    publish: Publish,
    shared: &Shared,
    now: Instant,
) -> anyhow::Result<(Pc, Sender)> {
    let mut pc = Pc::new(shared, now, Transport::Udp)?;
    let layers = Layer::all(&publish.media, publish.simulcast);
    let simulcast = publish.simulcast.then(|| {
        let mut simulcast = Simulcast::new();
        for rid in layers.iter().filter_map(|l| l.rid) {
            simulcast.add_send_layer(SimulcastLayer::new(&rid));
        }
        simulcast
    });
    let mut api = pc.rtc.sdp_api();
    let video_mid = api.add_media(
        MediaKind::Video,
        Direction::SendOnly,
        Some("bench".into()),
        Some(VIDEO_CID.into()),
        simulcast,
    );
    let audio_mid = api.add_media(
        MediaKind::Audio,
        Direction::SendOnly,
        Some("bench".into()),
        Some(AUDIO_CID.into()),
        None,
    );
    let (offer, pending) = api.apply().context("no publisher offer")?;
    signalling
        .publish(PublisherOffer {
            sdp: offer.to_sdp_string(),
            candidate: &pc.candidate,
            layers: &layers,
            simulcast: publish.simulcast,
        })
        .await?;
    pc.drain(&mut Vec::new())?;
    let sender = Sender {
        source: publish.source,
        config: publish.media,
        layers,
        video_mid,
        audio_mid,
        pending: Some(pending),
        pts: None,
        connected: false,
        started: None,
        video_anchor: None,
        audio_anchor: None,
        next_video: 0,
        next_audio: 0,
        keyframe_requested: false,
    };
    Ok((pc, sender))
}

/// Join by `join`, play `role` until `shared.stop`, and return what was recorded.
pub async fn run(join: Join, role: Role, shared: Arc<Shared>) -> anyhow::Result<Vec<Received>> {
    let source = role.publish.as_ref().map(|p| p.source);
    let mut signalling = Signalling::connect(join, source, &role.hears).await?;
    let now = Instant::now();
    let mut subscriber = Pc::new(&shared, now, role.transport)?;
    let (mut publisher, mut sender) = match role.publish {
        Some(publish) => {
            let (pc, sender) = start_publishing(&mut signalling, publish, &shared, now).await?;
            (Some(pc), Some(sender))
        }
        None => (None, None),
    };

    let mut recorder = Recorder::new(&role.hears);
    let mut sub_buf = vec![0u8; 2048];
    let mut pub_buf = vec![0u8; 2048];
    let mut events = Vec::new();
    let mut pub_events = Vec::new();
    loop {
        let mut deadline = subscriber.next_timeout;
        if let Some(due) = signalling.due() {
            deadline = deadline.min(due);
        }
        if let Some(pc) = &publisher {
            deadline = deadline.min(pc.next_timeout);
        }
        if let Some(due) = sender.as_ref().and_then(Sender::next_due) {
            deadline = deadline.min(due);
        }
        tokio::select! {
            _ = shared.stop.cancelled() => break,
            received = subscriber.incoming(&mut sub_buf) => {
                receive_batch(&mut subscriber, received?, &mut sub_buf, &mut events, &shared).await?;
            }
            received = incoming_on(publisher.as_ref(), &mut pub_buf) => {
                let pc = publisher.as_mut().expect("only polled with a publisher");
                receive_batch(pc, received?, &mut pub_buf, &mut pub_events, &shared).await?;
            }
            signal = signalling.next() => match signal? {
                Signal::SubscriberOffer { sdp, id } => {
                    let parsed = SdpOffer::from_sdp_string(&sdp).context("the server's offer")?;
                    let answer = subscriber.rtc.sdp_api().accept_offer(parsed)?;
                    signalling.answer(id, answer.to_sdp_string(), &subscriber.candidate).await?;
                }
                Signal::PublisherAnswer(sdp) => {
                    let (Some(pc), Some(sender)) = (publisher.as_mut(), sender.as_mut()) else { bail!("an answer without an offer") };
                    let pending = sender.pending.take().context("a second answer")?;
                    let answer = SdpAnswer::from_sdp_string(&sdp).context("the server's answer")?;
                    pc.rtc.sdp_api().accept_answer(pending, answer)?;
                    sender.pts = Some((payload_type(&mut pc.rtc, sender.video_mid, Codec::Vp8)?, payload_type(&mut pc.rtc, sender.audio_mid, Codec::Opus)?));
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let now = Instant::now();
        signalling.keep_alive(now).await?;
        if now >= subscriber.next_timeout {
            subscriber.rtc.handle_input(Input::Timeout(now))?;
        }
        subscriber.drain(&mut events)?;
        subscriber.flush().await?;
        if let Some(pc) = publisher.as_mut() {
            if now >= pc.next_timeout {
                pc.rtc.handle_input(Input::Timeout(now))?;
            }
            pc.drain(&mut pub_events)?;
            let sender = sender.as_mut().expect("a publisher has a sender");
            for event in pub_events.drain(..) {
                match event {
                    Event::Connected => sender.connected = true,
                    Event::KeyframeRequest(request) if request.mid == sender.video_mid => {
                        sender.keyframe_requested = true
                    }
                    _ => {}
                }
            }
            if sender.connected && sender.pts.is_some() && sender.started.is_none() {
                sender.started = Some(now);
                shared.sent[sender.source as usize]
                    .publishing
                    .store(true, Ordering::Release);
            }
            sender.send_due(pc, &shared, now)?;
            pc.drain(&mut pub_events)?;
        }
        for event in events.drain(..) {
            if let Event::MediaData(data) = event {
                recorder.on_media(&data, &shared);
            }
        }
    }
    signalling.leave().await;
    Ok(recorder.records)
}
