//! `--floor`: the str0m floor, i.e. what forwarding costs on this machine with convene's own code
//! taken out.
//!
//! One thread writes packets at the publisher's rate and sizes to N subscriber connections
//! configured exactly as the engine configures them (`convene_sfu::engine::rtc_config`, a full ICE
//! agent as the engine's). For each connection it runs str0m's timer pass once per turn, polls
//! every datagram out of str0m, and sends them with the engine's GSO batching
//! (`convene_sfu::batch`) through `quinn-udp` to N real UDP sockets over loopback. It also reads
//! what the subscribers send back (the engine's `quinn-udp` batched reads) and hands each
//! datagram to its connection, as the engine must. There is no signalling, no publisher
//! connection, no routing and no rewriting. The thread's CPU time per packet delivered is the
//! floor: what any SFU that sends through str0m pays here before its own work.
//!
//! The subscribers are str0m clients configured as the benchmark's own (`peer::client_config`),
//! each a task on a second thread's runtime woken by its socket, as the benchmark's clients are
//! (loopback charges those wake-ups to the sender, in convene's runs and here alike): they
//! decrypt what reaches them and answer as a real subscriber does,
//! with STUN consent checks and RTCP (receiver reports, NACKs, and transport feedback when the
//! connections estimate bandwidth). A floor whose subscribers never answered would leave out work
//! the engine cannot skip (docs/benchmarks.md compares the two).
//!
//! The connections are set up in memory: the offer and answer, then the ICE, DTLS and SCTP
//! handshakes are handed between the two `Rtc`s directly; then the clients move to their thread
//! and everything goes over the sockets.
//!
//! Over TCP (`Transport::Tcp`) the connections are the same (str0m does the same work whatever
//! carries its packets), but each one's packets are framed (RFC 4571, `convene_sfu::framing`)
//! and written to its own loopback TCP connection, everything a connection got in a turn in one
//! `write`, as the server's connection tasks write; the clients answer on the same connections.

use std::collections::HashMap;
use std::io::{IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use convene_sfu::batch::{Batcher, transmit};
use convene_sfu::engine::{PcKind, estimating_subscriber_config, rtc_config, subscriber_channels};
use convene_sfu::framing::{self, FrameReader};
use str0m::crypto::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio_util::sync::CancellationToken;

use crate::peer::{Publishing, Transport, client_config, client_socket};
use crate::server;

/// Largest payload of one synthetic RTP packet: a delta frame makes 6 packets and a keyframe 27,
/// as the publisher's str0m packetizes them in the full benchmark.
const MAX_PAYLOAD: usize = 1100;
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// Bytes of frames kept for a TCP connection that does not take them; beyond, packets are
/// dropped (the server keeps 512 packets a connection).
const TCP_PENDING_LIMIT: usize = 1 << 20;

/// What one floor run measured.
pub struct FloorFigures {
    pub subscribers: usize,
    pub transport: Transport,
    pub wall: Duration,
    pub cpu: Duration,
    /// RTP packets written to str0m, summed over subscribers.
    pub written: u64,
    /// RTP datagrams that reached the subscribers' sockets.
    pub delivered: u64,
    /// Datagrams the subscribers sent back (STUN and RTCP) that the sender read and handed to
    /// their connections.
    pub answers: u64,
}

impl FloorFigures {
    pub fn us_per_packet(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.delivered.max(1) as f64
    }

    pub fn cpu_pct(&self) -> f64 {
        self.cpu.as_secs_f64() * 100.0 / self.wall.as_secs_f64()
    }

    pub fn delivered_pct(&self) -> f64 {
        self.delivered as f64 * 100.0 / self.written.max(1) as f64
    }
}

/// One subscriber connection as the engine holds it.
struct Conn {
    rtc: Rtc,
    audio: Mid,
    video: Mid,
    /// Where its client sends from.
    client: SocketAddr,
    next_timeout: Instant,
}

/// A subscriber: the str0m client at the other end of a [`Conn`].
struct Client {
    rtc: Rtc,
    /// Its own address, and the server's.
    addr: SocketAddr,
    server: SocketAddr,
    next_timeout: Instant,
}

/// A connection and its client while they are set up in memory.
struct Pair {
    conn: Conn,
    client: Client,
    connected: bool,
    channels_open: usize,
}

impl Pair {
    /// Offer and answer, as the engine offers a subscriber its two data channels and one audio
    /// and one video track.
    fn new(
        server_addr: SocketAddr,
        client_addr: SocketAddr,
        crypto: &Arc<CryptoProvider>,
        estimating: bool,
        now: Instant,
    ) -> anyhow::Result<Pair> {
        let config = if estimating {
            estimating_subscriber_config(crypto.clone())
        } else {
            rtc_config(PcKind::Subscriber, crypto.clone())
        };
        let mut server = config.build(now);
        server.add_local_candidate(Candidate::host(server_addr, "udp")?);
        let mut client = client_config(crypto.clone()).build(now);
        client.add_local_candidate(Candidate::host(client_addr, "udp")?);
        let mut api = server.sdp_api();
        for channel in subscriber_channels() {
            api.add_channel_with_config(channel);
        }
        let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().context("str0m made no offer")?;
        let answer = client.sdp_api().accept_offer(offer)?;
        server.sdp_api().accept_answer(pending, answer)?;
        Ok(Pair {
            conn: Conn {
                rtc: server,
                audio,
                video,
                client: client_addr,
                next_timeout: now,
            },
            client: Client {
                rtc: client,
                addr: client_addr,
                server: server_addr,
                next_timeout: now,
            },
            connected: false,
            channels_open: 0,
        })
    }

    /// Run both sides' timers and hand each side's datagrams to the other until both are quiet.
    fn handshake(&mut self, now: Instant) -> anyhow::Result<()> {
        self.conn.rtc.handle_input(Input::Timeout(now))?;
        self.client.rtc.handle_input(Input::Timeout(now))?;
        loop {
            let mut moved = relay(&mut self.client.rtc, &mut self.conn.rtc, now, |_| {})?;
            let (connected, channels_open) = (&mut self.connected, &mut self.channels_open);
            moved |= relay(
                &mut self.conn.rtc,
                &mut self.client.rtc,
                now,
                |event| match event {
                    Event::Connected => *connected = true,
                    Event::ChannelOpen(..) => *channels_open += 1,
                    _ => {}
                },
            )?;
            if !moved {
                return Ok(());
            }
        }
    }

    fn ready(&self) -> bool {
        self.connected && self.channels_open == 2
    }
}

/// Deliver everything `from` transmits to `to`; true if anything moved.
fn relay(
    from: &mut Rtc,
    to: &mut Rtc,
    now: Instant,
    mut on_event: impl FnMut(&Event),
) -> anyhow::Result<bool> {
    let mut moved = false;
    loop {
        match from.poll_output()? {
            Output::Timeout(_) => return Ok(moved),
            Output::Transmit(t) => {
                let receive = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)?;
                to.handle_input(Input::Receive(now, receive))?;
                moved = true;
            }
            Output::Event(event) => on_event(&event),
        }
    }
}

fn payload_type(rtc: &Rtc, codec: Codec) -> anyhow::Result<Pt> {
    rtc.codec_config()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
        .with_context(|| format!("no {codec:?} payload type"))
}

/// The synthetic packets of one frame of `bytes`, each at most [`MAX_PAYLOAD`].
fn packets(bytes: usize) -> Arc<[Arc<[u8]>]> {
    let frame: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    frame.chunks(MAX_PAYLOAD).map(Arc::from).collect()
}

/// Where the sender's packets go.
enum Sink {
    /// One UDP socket and the engine's GSO batcher.
    Udp {
        socket: UdpSocket,
        state: quinn_udp::UdpSocketState,
        batcher: Batcher,
        /// Room for one batched read, `slot` bytes a buffer.
        storage: Vec<u8>,
        slot: usize,
    },
    /// One TCP connection per subscriber (in the connections' order), its frames not yet
    /// written, and what its client sent not yet cut into frames.
    Tcp {
        streams: Vec<TcpStream>,
        pending: Vec<Vec<u8>>,
        readers: Vec<FrameReader>,
    },
}

impl Sink {
    /// Take one datagram to send (`by_addr`: a client's address to its connection's index).
    fn push(&mut self, t: &Transmit, by_addr: &HashMap<SocketAddr, usize>) {
        match self {
            Sink::Udp { batcher, .. } => {
                if !batcher.push(t.source, t.destination, &t.contents) {
                    self.send();
                    if let Sink::Udp { batcher, .. } = self {
                        batcher.push(t.source, t.destination, &t.contents);
                    }
                }
            }
            Sink::Tcp { pending, .. } => {
                if let Some(&i) = by_addr.get(&t.destination)
                    && pending[i].len() < TCP_PENDING_LIMIT
                {
                    framing::encode(&t.contents, &mut pending[i]);
                }
            }
        }
    }

    /// Read what the clients sent since the last turn into `into`, each datagram with the index
    /// of its connection (`by_addr` as for [`Sink::push`]). Over UDP as the
    /// engine reads: batches of GRO reads, split into datagrams, each copied out.
    fn receive(&mut self, by_addr: &HashMap<SocketAddr, usize>, into: &mut Vec<(usize, Vec<u8>)>) {
        match self {
            Sink::Udp {
                socket,
                state,
                storage,
                slot,
                ..
            } => loop {
                let mut meta = [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
                let mut bufs: Vec<IoSliceMut<'_>> =
                    storage.chunks_mut(*slot).map(IoSliceMut::new).collect();
                let Ok(count) = state.recv((&*socket).into(), &mut bufs, &mut meta) else {
                    return;
                };
                for (m, buf) in meta[..count].iter().zip(storage.chunks(*slot)) {
                    let Some(&i) = by_addr.get(&m.addr) else {
                        continue;
                    };
                    let stride = if m.stride == 0 { m.len } else { m.stride };
                    for bytes in buf[..m.len].chunks(stride.max(1)) {
                        into.push((i, bytes.to_vec()));
                    }
                }
            },
            Sink::Tcp {
                streams, readers, ..
            } => {
                let mut buf = [0u8; 4096];
                for (i, (stream, reader)) in streams.iter_mut().zip(readers.iter_mut()).enumerate()
                {
                    while let Ok(len @ 1..) = stream.read(&mut buf) {
                        reader.push(&buf[..len]);
                        while let Ok(Some(frame)) = reader.next_frame() {
                            into.push((i, frame.to_vec()));
                        }
                    }
                }
            }
        }
    }

    /// Send what is batched: the UDP run, or each TCP connection's frames in one write (what
    /// the kernel does not take now waits for the next turn).
    fn send(&mut self) {
        match self {
            Sink::Udp {
                socket,
                state,
                batcher,
                ..
            } => {
                if let Some(run) = batcher.take() {
                    // A full socket buffer drops the datagram, as in the engine.
                    let _ = state.send((&*socket).into(), &transmit(&run));
                }
            }
            Sink::Tcp {
                streams, pending, ..
            } => {
                for (stream, out) in streams.iter_mut().zip(pending.iter_mut()) {
                    if out.is_empty() {
                        continue;
                    }
                    if let Ok(n) = stream.write(out) {
                        out.drain(..n);
                    }
                }
            }
        }
    }
}

/// The sending side: the subscriber connections and where their packets go.
struct Sender {
    conns: Vec<Conn>,
    sink: Sink,
    /// The connections' own address, and each client's address to its connection.
    server_addr: SocketAddr,
    by_addr: HashMap<SocketAddr, usize>,
    /// What the clients sent this turn, by connection, and how many such datagrams so far.
    inbox: Vec<(usize, Vec<u8>)>,
    answers: u64,
    vp8: Pt,
    opus: Pt,
    publishing: Publishing,
    frame: u64,
    audio_packet: u64,
    video_seq: u64,
    audio_seq: u64,
    keyframe: Arc<[Arc<[u8]>]>,
    delta: Arc<[Arc<[u8]>]>,
    audio: Arc<[u8]>,
}

impl Sender {
    fn write(&mut self, video: bool, payload: &Arc<[u8]>, time: u32, marker: bool, now: Instant) {
        let (pt, seq) = if video {
            (self.vp8, self.video_seq)
        } else {
            (self.opus, self.audio_seq)
        };
        for conn in &mut self.conns {
            let mid = if video { conn.video } else { conn.audio };
            let mut api = conn.rtc.direct_api();
            if let Some(stream) = api.stream_tx_by_mid(mid, None) {
                stream.write_rtp(
                    RtpWrite::new(pt, seq.into(), time, now, payload.clone())
                        .marker(marker)
                        .nackable(video),
                );
            }
        }
        if video {
            self.video_seq += 1;
        } else {
            self.audio_seq += 1;
        }
    }

    /// Forward until `until`; returns the RTP packets written, summed over subscribers.
    fn forward(&mut self, until: Instant) -> anyhow::Result<u64> {
        let frame_interval = Duration::from_secs_f64(1.0 / f64::from(self.publishing.fps));
        let start = Instant::now();
        let (mut next_video, mut next_audio) = (start, start);
        let mut written = 0u64;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(written);
            }
            self.sink.receive(&self.by_addr, &mut self.inbox);
            self.answers += self.inbox.len() as u64;
            for (i, bytes) in self.inbox.drain(..) {
                let conn = &mut self.conns[i];
                let Ok(receive) =
                    Receive::new(Protocol::Udp, conn.client, self.server_addr, &bytes)
                else {
                    continue;
                };
                conn.rtc.handle_input(Input::Receive(now, receive))?;
                conn.next_timeout = poll(&mut conn.rtc, &mut self.sink, &self.by_addr)?;
            }
            let mut wrote = false;
            if now >= next_video {
                let keyframe = self.frame.is_multiple_of(u64::from(self.publishing.gop));
                let chunks = if keyframe {
                    self.keyframe.clone()
                } else {
                    self.delta.clone()
                };
                let time = (self.frame * 90_000 / u64::from(self.publishing.fps)) as u32;
                for (i, chunk) in chunks.iter().enumerate() {
                    self.write(true, chunk, time, i + 1 == chunks.len(), now);
                }
                written += (chunks.len() * self.conns.len()) as u64;
                self.frame += 1;
                next_video += frame_interval;
                wrote = true;
            }
            if now >= next_audio {
                let audio = self.audio.clone();
                self.write(false, &audio, (self.audio_packet * 960) as u32, true, now);
                written += self.conns.len() as u64;
                self.audio_packet += 1;
                next_audio += AUDIO_INTERVAL;
                wrote = true;
            }
            let mut next = next_video.min(next_audio);
            for conn in &mut self.conns {
                if !wrote && conn.next_timeout > now {
                    next = next.min(conn.next_timeout);
                    continue;
                }
                conn.rtc.handle_input(Input::Timeout(now))?;
                conn.next_timeout = poll(&mut conn.rtc, &mut self.sink, &self.by_addr)?;
                next = next.min(conn.next_timeout);
            }
            self.sink.send();
            let now = Instant::now();
            if next > now {
                // Never longer than the clients take to answer: their feedback is read each turn.
                std::thread::sleep((next - now).min(ANSWER_INTERVAL));
            }
        }
    }
}

/// Poll a connection until it gives its next timeout, handing what it transmits to `sink`.
fn poll(
    rtc: &mut Rtc,
    sink: &mut Sink,
    by_addr: &HashMap<SocketAddr, usize>,
) -> anyhow::Result<Instant> {
    loop {
        match rtc.poll_output()? {
            Output::Timeout(at) => return Ok(at),
            Output::Transmit(t) => sink.push(&t, by_addr),
            Output::Event(_) => {}
        }
    }
}

/// Set up `n` connections, forward for `settle` unmeasured, then for `window` measured.
#[allow(clippy::too_many_arguments)]
fn run_sender(
    n: usize,
    publishing: Publishing,
    ends: ServerEnds,
    window: Duration,
    settle: Duration,
    delivered: &AtomicU64,
    ticks: u64,
    estimating: bool,
    to_clients: mpsc::Sender<Vec<Client>>,
) -> anyhow::Result<FloorFigures> {
    let (transport, server_addr, clients, sink) = match ends {
        ServerEnds::Udp(clients) => {
            let socket = client_socket(Ipv4Addr::LOCALHOST, 1 << 20)?;
            let server_addr = socket.local_addr()?;
            let state = quinn_udp::UdpSocketState::new((&socket).into())?;
            let batcher = Batcher::new(state.max_gso_segments());
            let slot = MAX_DATAGRAM * state.gro_segments().max(1);
            let sink = Sink::Udp {
                socket,
                state,
                batcher,
                storage: vec![0; slot * quinn_udp::BATCH_SIZE],
                slot,
            };
            (Transport::Udp, server_addr, clients, sink)
        }
        ServerEnds::Tcp(streams) => {
            let server_addr = streams.first().context("no connection")?.local_addr()?;
            let clients = streams
                .iter()
                .map(TcpStream::peer_addr)
                .collect::<std::io::Result<Vec<_>>>()?;
            let pending = vec![Vec::new(); streams.len()];
            let readers = streams.iter().map(|_| FrameReader::new()).collect();
            let sink = Sink::Tcp {
                streams,
                pending,
                readers,
            };
            (Transport::Tcp, server_addr, clients, sink)
        }
    };
    let crypto = Arc::new(str0m::crypto::from_feature_flags());
    let now = Instant::now();
    let mut pairs = clients
        .iter()
        .map(|client| Pair::new(server_addr, *client, &crypto, estimating, now))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pairs.iter().all(Pair::ready) {
        if Instant::now() > deadline {
            bail!("the floor's connections did not come up within 120 s");
        }
        let now = Instant::now();
        for pair in pairs.iter_mut().filter(|p| !p.ready()) {
            pair.handshake(now)?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (conns, clients): (Vec<Conn>, Vec<Client>) =
        pairs.into_iter().map(|p| (p.conn, p.client)).unzip();
    to_clients
        .send(clients)
        .map_err(|_| anyhow::anyhow!("the floor's client thread is gone"))?;
    let (vp8, opus) = (
        payload_type(&conns[0].rtc, Codec::Vp8)?,
        payload_type(&conns[0].rtc, Codec::Opus)?,
    );
    let by_addr = conns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.client, i))
        .collect();
    let mut sender = Sender {
        conns,
        sink,
        server_addr,
        by_addr,
        inbox: Vec::new(),
        answers: 0,
        vp8,
        opus,
        keyframe: packets(publishing.keyframe_bytes),
        delta: packets(publishing.delta_bytes),
        audio: Arc::from(vec![0xfc; publishing.audio_bytes]),
        publishing,
        frame: 0,
        audio_packet: 0,
        video_seq: 0,
        audio_seq: 0,
    };
    sender.forward(Instant::now() + settle)?;
    let delivered_start = delivered.load(Ordering::Acquire);
    let answers_start = sender.answers;
    let cpu_start = server::thread_cpu_time(ticks)?;
    let window_start = Instant::now();
    let written = sender.forward(window_start + window)?;
    let cpu = server::thread_cpu_time(ticks)?.saturating_sub(cpu_start);
    let wall = window_start.elapsed();
    // Let the last datagrams land.
    std::thread::sleep(Duration::from_millis(200));
    if let Some(lost) = sender.conns.iter().position(|c| !c.rtc.is_connected()) {
        bail!("floor connection {lost} disconnected during the window");
    }
    Ok(FloorFigures {
        subscribers: n,
        transport,
        wall,
        cpu,
        written,
        delivered: delivered.load(Ordering::Acquire) - delivered_start,
        answers: sender.answers - answers_start,
    })
}

/// An RTP (not RTCP) datagram: RTCP packet types 200-207 read as RTP payload types 72-79.
fn is_rtp(datagram: &[u8]) -> bool {
    datagram.len() >= 12 && !(72..=79).contains(&(datagram[1] & 0x7f))
}

/// The longest the sender sleeps between two reads of the clients' answers.
const ANSWER_INTERVAL: Duration = Duration::from_millis(2);

/// Largest datagram read (one segment of a GRO read), as the engine's.
const MAX_DATAGRAM: usize = 2048;

/// The sender's ends: the clients' UDP addresses, or the server's ends of the TCP connections.
enum ServerEnds {
    Udp(Vec<SocketAddr>),
    Tcp(Vec<TcpStream>),
}

/// The clients' ends, which [`serve_clients`] reads and answers on.
enum ClientEnds {
    Udp(Vec<UdpSocket>),
    Tcp(Vec<TcpStream>),
}

impl Client {
    /// Hand the client one packet from the server (or only its timers, `None`), and put what
    /// it answers in `out`. A client's error ends nothing: the sender's checks see a dead
    /// connection.
    fn input(&mut self, packet: Option<&[u8]>, now: Instant, out: &mut Vec<Vec<u8>>) {
        let input = match packet {
            Some(bytes) => match Receive::new(Protocol::Udp, self.server, self.addr, bytes) {
                Ok(receive) => Input::Receive(now, receive),
                Err(_) => return,
            },
            None => Input::Timeout(now),
        };
        if self.rtc.handle_input(input).is_err() {
            return;
        }
        while let Ok(output) = self.rtc.poll_output() {
            match output {
                Output::Timeout(at) => {
                    self.next_timeout = at;
                    return;
                }
                Output::Transmit(t) => out.push(t.contents.to_vec()),
                Output::Event(_) => {}
            }
        }
    }
}

/// Run the subscribers until `stop`, as the benchmark's own clients run: each one a task on this
/// thread's runtime, woken by its socket (so every delivery may wake this thread, which loopback
/// charges to the sender, as it does in convene's runs) or by its str0m timer. A task counts the
/// RTP datagrams it reads in `delivered`, hands what it reads to its client, and sends what the
/// client answers. Over TCP, what each read brings is cut into frames.
fn serve_clients(
    ends: ClientEnds,
    clients: mpsc::Receiver<Vec<Client>>,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // Nothing reaches the sockets before the connections are set up in memory and the clients
    // handed over; if they never come, the sender has failed.
    let Ok(clients) = clients.recv() else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        match ends {
            ClientEnds::Udp(sockets) => {
                for (client, socket) in clients.into_iter().zip(sockets) {
                    let socket = tokio::net::UdpSocket::from_std(socket)?;
                    tasks.spawn(udp_client(client, socket, delivered.clone(), stop.clone()));
                }
            }
            ClientEnds::Tcp(streams) => {
                for (client, stream) in clients.into_iter().zip(streams) {
                    let stream = tokio::net::TcpStream::from_std(stream)?;
                    tasks.spawn(tcp_client(client, stream, delivered.clone(), stop.clone()));
                }
            }
        }
        tasks.join_all().await;
        Ok(())
    })
}

/// Counts an RTP (not RTCP) datagram in `delivered`.
fn count(delivered: &AtomicU64, packet: &[u8]) {
    if is_rtp(packet) {
        delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// One subscriber over UDP (see [`serve_clients`]). A full socket buffer drops its answer, as
/// the network would.
async fn udp_client(
    mut client: Client,
    socket: tokio::net::UdpSocket,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(client.next_timeout.into()) => {
                client.input(None, Instant::now(), &mut out);
            }
            ready = socket.readable() => {
                if ready.is_err() {
                    return;
                }
                let now = Instant::now();
                while let Ok(len) = socket.try_recv(&mut buf) {
                    count(&delivered, &buf[..len]);
                    client.input(Some(&buf[..len]), now, &mut out);
                }
            }
        }
        for packet in out.drain(..) {
            let _ = socket.try_send_to(&packet, client.server);
        }
    }
}

/// One subscriber over TCP (see [`serve_clients`]): its frames in, its answers framed out.
async fn tcp_client(
    mut client: Client,
    stream: tokio::net::TcpStream,
    delivered: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut reader, mut pending, mut out) = (FrameReader::new(), Vec::new(), Vec::new());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(client.next_timeout.into()) => {
                client.input(None, Instant::now(), &mut out);
            }
            ready = stream.readable() => {
                if ready.is_err() {
                    return;
                }
                let now = Instant::now();
                loop {
                    match stream.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(len) => reader.push(&buf[..len]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                    while let Ok(Some(frame)) = reader.next_frame() {
                        count(&delivered, frame);
                        client.input(Some(frame), now, &mut out);
                    }
                }
            }
        }
        for packet in out.drain(..) {
            framing::encode(&packet, &mut pending);
        }
        if !pending.is_empty()
            && let Ok(n) = stream.try_write(&pending)
        {
            pending.drain(..n);
        }
    }
}

/// `n` loopback TCP connections, both ends non-blocking: the server's ends (with `TCP_NODELAY`,
/// as the server's) and the clients'.
fn tcp_pairs(n: usize) -> anyhow::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let (mut servers, mut clients) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        server.set_nonblocking(true)?;
        client.set_nonblocking(true)?;
        servers.push(server);
        clients.push(client);
    }
    Ok((servers, clients))
}

/// Run the floor with `n` subscribers: the sender on its own thread (whose CPU time is the
/// figure), the clients on another. `estimating`: the subscriber connections are
/// configured as the engine configures them with subscriber bandwidth estimation on.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    n: usize,
    transport: Transport,
    publishing: Publishing,
    window: Duration,
    settle: Duration,
    recv_buffer: usize,
    ticks: u64,
    estimating: bool,
) -> anyhow::Result<FloorFigures> {
    let (ends, clients) = match transport {
        Transport::Udp => {
            let sockets = (0..n)
                .map(|_| client_socket(Ipv4Addr::LOCALHOST, recv_buffer))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let addrs = sockets
                .iter()
                .map(UdpSocket::local_addr)
                .collect::<std::io::Result<Vec<_>>>()?;
            (ServerEnds::Udp(addrs), ClientEnds::Udp(sockets))
        }
        Transport::Tcp => {
            let (servers, clients) = tcp_pairs(n)?;
            (ServerEnds::Tcp(servers), ClientEnds::Tcp(clients))
        }
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (to_clients, handed) = mpsc::channel();
    let client_thread = {
        let (delivered, stop) = (delivered.clone(), stop.clone());
        std::thread::spawn(move || serve_clients(clients, handed, delivered, stop))
    };
    let figures = tokio::task::spawn_blocking(move || {
        run_sender(
            n, publishing, ends, window, settle, &delivered, ticks, estimating, to_clients,
        )
    })
    .await
    .context("the floor's sender panicked");
    stop.cancel();
    tokio::task::spawn_blocking(move || client_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the floor's client thread panicked"))?
        .context("the floor's clients")?;
    figures?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_as_the_publisher_packetizes_them() {
        assert_eq!(packets(5_859).len(), 6);
        assert_eq!(packets(29_295).len(), 27);
        assert!(packets(29_295).iter().all(|p| p.len() <= MAX_PAYLOAD));
    }

    /// Two connections come up in memory, what is written to them reaches their sockets, and
    /// their clients' answers reach the sender, over UDP and over TCP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_floor_delivers_what_it_writes_and_hears_the_answers() {
        for transport in [Transport::Udp, Transport::Tcp] {
            floor_delivers(transport).await;
        }
    }

    async fn floor_delivers(transport: Transport) {
        let publishing = Publishing {
            fps: 30,
            gop: 60,
            keyframe_bytes: 29_295,
            delta_bytes: 5_859,
            audio_bytes: 80,
        };
        let figures = run(
            2,
            transport,
            publishing,
            Duration::from_secs(2),
            Duration::from_millis(200),
            1 << 20,
            server::clock_ticks(),
            false,
        )
        .await
        .unwrap();
        // Two seconds hold 60 frames of 6 packets or more and 100 audio packets; a busy test
        // machine may delay the sender, so two thirds of that is enough.
        assert!(
            figures.written >= 2 * (40 * 6 + 66),
            "{transport}: {}",
            figures.written
        );
        assert!(
            figures.delivered_pct() > 90.0,
            "{transport}: {}",
            figures.delivered_pct()
        );
        // Each client sends receiver reports and consent checks about twice a second (360 a
        // second from 200 clients in the benchmark).
        assert!(figures.answers >= 2, "{transport}: {}", figures.answers);
    }

    #[test]
    fn rtcp_is_not_counted_as_media() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 96;
        assert!(is_rtp(&rtp));
        rtp[1] = 0x80 | 96; // marker bit
        assert!(is_rtp(&rtp));
        rtp[1] = 200; // sender report
        assert!(!is_rtp(&rtp));
        rtp[1] = 205; // transport feedback
        assert!(!is_rtp(&rtp));
        assert!(!is_rtp(&[0x80, 96]));
    }
}
