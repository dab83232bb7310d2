//! The thin tokio IO layer: binds the media UDP sockets and TCP listeners, runs the engine
//! task (commands, datagrams and TCP frames, timer) and performs the engine's outputs.
//! Also defines [`SfuControl`], the cloneable handle to the engine task.

use std::collections::HashMap;
use std::net::{
    IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use livekit_protocol as proto;
use prost::Message;
use rand::TryRngCore;
use rand::rngs::OsRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{Batcher, Run};
use crate::engine::{Answer, ConnId, Engine, EngineConfig, Input, Output, Transport};
pub use crate::engine::{DataKind, RoomSummary};
use crate::recorder::{Recorder, RecorderNotice, RecordingFiles};
use crate::shards::{Load, RoomTable, Route, Routes};
use crate::signal::JoinParams;
use crate::tcp::{self, Connections, SharedGate, TcpEvent};
use crate::{Admission, Admitted, Permission, SfuConfig, SfuError};

const COMMAND_QUEUE: usize = 4096;
const DATAGRAM_QUEUE: usize = 4096;
/// Recorded packets on their way to the recorder's thread (about 4 s of 10 tracks).
const RECORD_QUEUE: usize = 16_384;
/// Signalling messages queued for one client before it counts as too slow.
pub const OUTBOX_QUEUE: usize = 512;

/// Something for a WebSocket task to write.
#[derive(Debug)]
pub enum WsOut {
    Frame(Vec<u8>),
    Close,
}

#[allow(clippy::large_enum_variant)] // short-lived queue items
pub(crate) enum Command {
    /// A new connection: its outbox, then [`Input::Join`].
    Join {
        conn: ConnId,
        admitted: Admitted,
        params: JoinParams,
        outbox: mpsc::Sender<WsOut>,
    },
    Signal {
        conn: ConnId,
        request: proto::SignalRequest,
    },
    /// The connection's task ended: its outbox goes, then [`Input::ConnectionClosed`].
    Closed {
        conn: ConnId,
    },
    /// A control command or query, and where its answer goes.
    Control {
        input: Input,
        reply: oneshot::Sender<Result<Answer, SfuError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A packet for the engine: a UDP datagram, or one frame read from a TCP connection.
#[derive(Debug, Clone)]
pub(crate) struct Datagram {
    pub transport: Transport,
    pub local: SocketAddr,
    pub source: SocketAddr,
    pub bytes: Vec<u8>,
}

/// What the socket tasks hand the engine task, on one channel: packets, and TCP connections
/// opening and closing (sent before their first packet and after their last, so in order).
#[derive(Debug, Clone)]
pub(crate) enum NetIn {
    Datagram(Datagram),
    Tcp(TcpEvent),
}

impl Datagram {
    fn input(self) -> Input {
        Input::Datagram {
            transport: self.transport,
            source: self.source,
            destination: self.local,
            bytes: self.bytes,
        }
    }
}

/// Locks a mutex of the media path; one poisoned by a panic elsewhere is used as it was left
/// (its tables stay consistent at every step).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Cloneable handle to the engine tasks (one per shard), for joins, moderation and the
/// RoomService API. A command about a room goes to the shard the room is on.
#[derive(Clone)]
pub struct SfuControl {
    shards: Arc<[mpsc::Sender<Command>]>,
    rooms: Arc<Mutex<RoomTable>>,
    next_conn: Arc<AtomicU64>,
    counters: Arc<MediaCounters>,
    /// Writes recorded rooms' tracks (its own thread), fed by every shard.
    recorder: Recorder,
    /// What the recorder says (keyframes wanted, failures), for whoever takes it once.
    notices: Arc<Mutex<Option<mpsc::UnboundedReceiver<RecorderNotice>>>>,
}

/// One signalling connection's way to the engine of its room's shard. [`Session::close`] must
/// end it (the room table counts the room's sessions).
pub(crate) struct Session {
    pub conn: ConnId,
    room: String,
    shard: usize,
    control: SfuControl,
}

impl Session {
    /// A client's request.
    pub(crate) async fn signal(&self, request: proto::SignalRequest) -> Result<(), SfuError> {
        let conn = self.conn;
        self.control
            .send(self.shard, Command::Signal { conn, request })
            .await
    }

    /// The connection's task ended.
    pub(crate) async fn close(self) {
        let conn = self.conn;
        let _ = self
            .control
            .send(self.shard, Command::Closed { conn })
            .await;
        lock(&self.control.rooms).close(&self.room);
    }
}

/// Datagrams the media thread sent and dropped, by transport: relaxed atomic adds on the media
/// path (no lock), read at scrape time for `/metrics`. A UDP datagram is dropped when the socket
/// refuses its send (buffer full: as the network would), a TCP one when its connection's writer
/// queue is full.
#[derive(Debug, Default)]
pub struct MediaCounters {
    udp_sent: AtomicU64,
    udp_dropped: AtomicU64,
    tcp_sent: AtomicU64,
    tcp_dropped: AtomicU64,
}

/// A reading of [`MediaCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaCounts {
    pub udp_sent: u64,
    pub udp_dropped: u64,
    pub tcp_sent: u64,
    pub tcp_dropped: u64,
}

impl MediaCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn read(&self) -> MediaCounts {
        MediaCounts {
            udp_sent: self.udp_sent.load(Ordering::Relaxed),
            udp_dropped: self.udp_dropped.load(Ordering::Relaxed),
            tcp_sent: self.tcp_sent.load(Ordering::Relaxed),
            tcp_dropped: self.tcp_dropped.load(Ordering::Relaxed),
        }
    }
}

/// An answer of another kind than the input asks for: a bug in the engine's dispatch.
fn unexpected(answer: Answer) -> SfuError {
    tracing::error!(
        ?answer,
        "the media engine answered a control command with the wrong kind"
    );
    SfuError::Internal("the media engine gave an unexpected answer".to_owned())
}

impl SfuControl {
    /// Datagrams sent and dropped so far (cheap: atomic loads).
    pub fn media_counts(&self) -> MediaCounts {
        self.counters.read()
    }

    /// The number of engine shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Each shard's sessions and rooms, by index.
    pub fn shard_loads(&self) -> Vec<Load> {
        lock(&self.rooms).loads().to_vec()
    }

    /// An admitted client's session, opened on its room's shard (the least loaded one for a room
    /// without a session).
    pub(crate) async fn join(
        &self,
        admitted: Admitted,
        params: JoinParams,
        outbox: mpsc::Sender<WsOut>,
    ) -> Result<Session, SfuError> {
        let conn = ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed));
        let room = admitted.room.clone();
        let shard = lock(&self.rooms).open(&room);
        let join = Command::Join {
            conn,
            admitted,
            params,
            outbox,
        };
        if let Err(e) = self.send(shard, join).await {
            lock(&self.rooms).close(&room);
            return Err(e);
        }
        Ok(Session {
            conn,
            room,
            shard,
            control: self.clone(),
        })
    }

    async fn send(&self, shard: usize, command: Command) -> Result<(), SfuError> {
        self.shards[shard]
            .send(command)
            .await
            .map_err(|_| SfuError::Stopped)
    }

    /// Hand `input` to the engine of `shard` and wait for its answer.
    async fn call_on(&self, shard: usize, input: Input) -> Result<Answer, SfuError> {
        let (reply, answer) = oneshot::channel();
        self.send(shard, Command::Control { input, reply }).await?;
        answer.await.map_err(|_| SfuError::Stopped)?
    }

    /// Hand `input` to the engine of its room's shard (a room without a session is on none: the
    /// first shard answers that it is not found) and wait for its answer.
    async fn call(&self, input: Input) -> Result<Answer, SfuError> {
        let shard = input
            .room()
            .and_then(|room| lock(&self.rooms).shard_of(room))
            .unwrap_or(0);
        self.call_on(shard, input).await
    }

    /// `input`, whose answer is [`Answer::Done`].
    async fn done(&self, input: Input) -> Result<(), SfuError> {
        match self.call(input).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Send `leave{DISCONNECT}` to the participant and close its session.
    pub async fn remove_participant(
        &self,
        room: &str,
        identity: &str,
        reason: &str,
    ) -> Result<(), SfuError> {
        let reason = proto::DisconnectReason::from_str_name(reason)
            .unwrap_or(proto::DisconnectReason::ParticipantRemoved);
        self.done(Input::RemoveParticipant {
            room: room.to_owned(),
            identity: identity.to_owned(),
            reason,
        })
        .await
    }

    /// Change what a connected participant may do; takes effect at once.
    pub async fn update_permission(
        &self,
        room: &str,
        identity: &str,
        permission: Permission,
    ) -> Result<(), SfuError> {
        self.done(Input::UpdatePermission {
            room: room.to_owned(),
            identity: identity.to_owned(),
            permission,
        })
        .await
    }

    /// Server-initiated mute (or unmute) of a published track.
    pub async fn mute_published_track(
        &self,
        room: &str,
        identity: &str,
        track_sid: &str,
        muted: bool,
    ) -> Result<proto::TrackInfo, SfuError> {
        let input = Input::MutePublishedTrack {
            room: room.to_owned(),
            identity: identity.to_owned(),
            track_sid: track_sid.to_owned(),
            muted,
        };
        match self.call(input).await? {
            Answer::Track(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Record `room` as `recording` into `dir` from now on: every shard is told (the room may
    /// be placed later), and its members see the room's `active_recording`.
    pub async fn start_recording(
        &self,
        room: &str,
        recording: &str,
        dir: PathBuf,
    ) -> Result<(), SfuError> {
        self.recorder
            .begin(recording, dir, Instant::now())
            .map_err(|e| SfuError::Internal(format!("recording not started: {e}")))?;
        self.record_on_every_shard(room, Some(recording)).await
    }

    /// Stop recording `room` on every shard, then close the recording's files and say what they
    /// hold (every packet taken before the stop is in them).
    pub async fn stop_recording(
        &self,
        room: &str,
        recording: &str,
    ) -> Result<RecordingFiles, SfuError> {
        self.record_on_every_shard(room, None).await?;
        Ok(self.recorder.end(recording).await)
    }

    async fn record_on_every_shard(
        &self,
        room: &str,
        recording: Option<&str>,
    ) -> Result<(), SfuError> {
        for shard in 0..self.shards.len() {
            let input = Input::Record {
                room: room.to_owned(),
                recording: recording.map(str::to_owned),
            };
            match self.call_on(shard, input).await? {
                Answer::Done => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    /// A recorded track lost a frame: its publisher is asked for a keyframe.
    pub async fn record_keyframe(&self, room: &str, track_sid: &str) -> Result<(), SfuError> {
        self.done(Input::RecordKeyframe {
            room: room.to_owned(),
            track_sid: track_sid.to_owned(),
        })
        .await
    }

    /// What the recorder says (keyframes wanted, recordings that failed): given out once.
    pub fn take_recorder_notices(&self) -> Option<mpsc::UnboundedReceiver<RecorderNotice>> {
        lock(&self.notices).take()
    }

    /// Recorded packets dropped because the recorder's queue was full.
    pub fn recorder_dropped(&self) -> u64 {
        self.recorder.dropped()
    }

    /// Disconnect everyone in the room.
    pub async fn close_room(&self, room: &str) -> Result<(), SfuError> {
        self.done(Input::CloseRoom {
            room: room.to_owned(),
        })
        .await
    }

    /// Every shard's rooms.
    pub async fn list_rooms(&self) -> Result<Vec<RoomSummary>, SfuError> {
        let mut all = Vec::new();
        for shard in 0..self.shards.len() {
            match self.call_on(shard, Input::ListRooms).await? {
                Answer::Rooms(rooms) => all.extend(rooms),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    pub async fn list_participants(
        &self,
        room: &str,
    ) -> Result<Vec<proto::ParticipantInfo>, SfuError> {
        let input = Input::ListParticipants {
            room: room.to_owned(),
        };
        match self.call(input).await? {
            Answer::Participants(participants) => Ok(participants),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<proto::ParticipantInfo, SfuError> {
        let input = Input::GetParticipant {
            room: room.to_owned(),
            identity: identity.to_owned(),
        };
        match self.call(input).await? {
            Answer::Participant(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Change name, metadata, attributes (empty value deletes) and/or permission.
    pub async fn update_participant(
        &self,
        room: &str,
        identity: &str,
        name: Option<String>,
        metadata: Option<String>,
        attributes: Option<HashMap<String, String>>,
        permission: Option<Permission>,
    ) -> Result<proto::ParticipantInfo, SfuError> {
        let input = Input::UpdateParticipant {
            room: room.to_owned(),
            identity: identity.to_owned(),
            name,
            metadata,
            attributes,
            permission,
        };
        match self.call(input).await? {
            Answer::Participant(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Server-originated user data to a room (everyone, or only `destination_identities`).
    pub async fn send_data(
        &self,
        room: &str,
        payload: Vec<u8>,
        kind: DataKind,
        destination_identities: Vec<String>,
        topic: Option<String>,
    ) -> Result<(), SfuError> {
        self.done(Input::SendData {
            room: room.to_owned(),
            payload,
            kind,
            destination_identities,
            topic,
        })
        .await
    }
}

pub(crate) struct DriverHandle {
    pub control: SfuControl,
    pub local_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
    /// Each completes when its shard's thread has stopped (its runtime gone; the first shard's
    /// with the socket readers).
    stopped: Vec<oneshot::Receiver<()>>,
}

impl DriverHandle {
    /// Every shard disconnects everyone and stops (the first, whose runtime runs the readers,
    /// last).
    pub async fn shutdown(self) {
        for shard in (0..self.control.shards.len()).rev() {
            let (done, wait) = oneshot::channel();
            if self
                .control
                .send(shard, Command::Shutdown(done))
                .await
                .is_ok()
            {
                let _ = wait.await;
            }
        }
        for stopped in self.stopped {
            let _ = stopped.await;
        }
    }
}

/// The address the host would use to reach the outside (the source address of its default
/// route, found by connecting a UDP socket, which sends nothing); `None` without such a route.
pub fn primary_ip() -> Option<IpAddr> {
    let socket = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(203, 0, 113, 1), 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

fn candidate_ips(config: &SfuConfig) -> Vec<IpAddr> {
    if !config.advertise_ips.is_empty() {
        return config.advertise_ips.clone();
    }
    if !config.udp_bind.ip().is_unspecified() {
        return vec![config.udp_bind.ip()];
    }
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ips.extend(primary_ip());
    ips
}

/// Bind one socket per advertised IP, all on one port. An advertised IP
/// that is not local (1:1 NAT) is served by a socket on `bind`'s address.
/// `open` binds one socket and says which local address it got.
fn bind_all<S>(
    ips: &[IpAddr],
    bind: SocketAddr,
    open: impl Fn(SocketAddr) -> std::io::Result<(S, SocketAddr)>,
) -> Result<Vec<(S, SocketAddr)>, (SocketAddr, std::io::Error)> {
    let mut last_error = None;
    for _attempt in 0..8 {
        let mut port = bind.port();
        let mut sockets: Vec<(S, SocketAddr)> = Vec::new();
        let mut wildcard_used = false;
        let mut failed = false;
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            match open(addr) {
                Ok((socket, bound)) => {
                    port = bound.port();
                    sockets.push((socket, SocketAddr::new(*ip, port)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable && !wildcard_used => {
                    let wildcard = SocketAddr::new(bind.ip(), port);
                    let (socket, bound) = open(wildcard).map_err(|e| (wildcard, e))?;
                    port = bound.port();
                    wildcard_used = true;
                    sockets.push((socket, SocketAddr::new(*ip, port)));
                }
                Err(source) => {
                    last_error = Some((addr, source));
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            return Ok(sockets);
        }
        if bind.port() != 0 {
            break; // a fixed port will not get better by retrying
        }
    }
    Err(last_error.unwrap_or((bind, std::io::Error::other("no address to bind"))))
}

/// The kernel buffer asked for on each media socket, each way. Every participant's packets arrive
/// on the one socket, and a shard busy with a burst of forwarding reads it a little later: the
/// kernel's default (208 KiB on Linux) overflowed in the meeting benchmark at 20 people. The
/// kernel caps it at `net.core.rmem_max` / `wmem_max`.
pub const MEDIA_SOCKET_BUFFER: usize = 8 << 20;

/// Asks for [`MEDIA_SOCKET_BUFFER`] both ways on `socket`; a kernel that grants less is logged
/// once per socket with the setting that caps it.
fn enlarge_buffers(socket: &StdUdpSocket, local: SocketAddr) {
    let socket = socket2::SockRef::from(socket);
    // Linux reports twice what it grants (the doubled size includes its bookkeeping).
    let granted = |size: std::io::Result<usize>| size.map(|s| s / 2).unwrap_or(0);
    let _ = socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER);
    let (recv, send) = (
        granted(socket.recv_buffer_size()),
        granted(socket.send_buffer_size()),
    );
    if recv < MEDIA_SOCKET_BUFFER || send < MEDIA_SOCKET_BUFFER {
        tracing::info!(
            %local,
            recv,
            send,
            asked = MEDIA_SOCKET_BUFFER,
            "media socket buffers capped by the kernel (raise net.core.rmem_max and \
             net.core.wmem_max for more headroom under bursts)"
        );
    }
}

fn bind_sockets(config: &SfuConfig) -> Result<Vec<(StdUdpSocket, SocketAddr)>, SfuError> {
    bind_all(&candidate_ips(config), config.udp_bind, |addr| {
        let socket = StdUdpSocket::bind(addr)?;
        let bound = socket.local_addr()?;
        enlarge_buffers(&socket, bound);
        Ok((socket, bound))
    })
    .map_err(|(addr, source)| SfuError::Bind { addr, source })
}

/// The TCP listeners of ICE over TCP, one per advertised IP like the UDP sockets, all on
/// `tcp_bind`'s port; none when TCP is off.
fn bind_listeners(config: &SfuConfig) -> Result<Vec<(StdTcpListener, SocketAddr)>, SfuError> {
    let Some(tcp_bind) = config.tcp_bind else {
        return Ok(Vec::new());
    };
    bind_all(&candidate_ips(config), tcp_bind, |addr| {
        let listener = StdTcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        Ok((listener, bound))
    })
    .map_err(|(addr, source)| SfuError::BindTcp { addr, source })
}

/// The media sockets, bound, and the control handle that reaches the engines once they run
/// (commands sent before [`Bound::start`] wait in the queues).
pub(crate) struct Bound {
    config: SfuConfig,
    sockets: Vec<(StdUdpSocket, SocketAddr)>,
    local_addrs: Vec<SocketAddr>,
    listeners: Vec<(StdTcpListener, SocketAddr)>,
    tcp_addrs: Vec<SocketAddr>,
    control: SfuControl,
    commands: Vec<mpsc::Receiver<Command>>,
}

/// Binds the media sockets and makes the control handle; nothing runs yet.
pub(crate) fn bind(config: SfuConfig) -> Result<Bound, SfuError> {
    let sockets = bind_sockets(&config)?;
    let local_addrs: Vec<SocketAddr> = sockets.iter().map(|(_, advertised)| *advertised).collect();
    tracing::info!(?local_addrs, "media UDP bound");
    let listeners = bind_listeners(&config)?;
    let tcp_addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|(_, advertised)| *advertised)
        .collect();
    tracing::info!(?tcp_addrs, "media TCP listening");
    let shards = config.threads.max(1);
    let (senders, commands): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| mpsc::channel(COMMAND_QUEUE)).unzip();
    let (recorder, notices) = Recorder::start(RECORD_QUEUE);
    let control = SfuControl {
        shards: senders.into(),
        rooms: Arc::new(Mutex::new(RoomTable::new(shards))),
        next_conn: Arc::new(AtomicU64::new(1)),
        counters: Arc::new(MediaCounters::default()),
        recorder,
        notices: Arc::new(Mutex::new(Some(notices))),
    };
    Ok(Bound {
        config,
        sockets,
        local_addrs,
        listeners,
        tcp_addrs,
        control,
        commands,
    })
}

/// What one shard's thread runs: its engine, its queues and its own handles on the sockets.
struct Shard {
    index: usize,
    engine: Engine,
    commands: mpsc::Receiver<Command>,
    packets: mpsc::Receiver<NetIn>,
    senders: HashMap<SocketAddr, SendSocket>,
    /// With several shards, the routes every engine's claims go to.
    routes: Option<Arc<Mutex<Routes>>>,
    recorder: Recorder,
}

/// The first shard also reads every socket and accepts the TCP connections, handing each packet
/// to its shard through the [`Router`].
struct Readers {
    sockets: Vec<(StdUdpSocket, SocketAddr)>,
    listeners: Vec<(StdTcpListener, SocketAddr)>,
    router: Router,
}

impl Bound {
    pub(crate) fn control(&self) -> &SfuControl {
        &self.control
    }

    pub(crate) fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub(crate) fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// Starts the media threads, one per shard, each with its own single-threaded tokio runtime
    /// running its engine task, so media is not delayed by bursts of API work on the server's
    /// runtime. The first shard's runtime also runs the socket readers and the TCP connections,
    /// which hand each packet to its shard (to the first without waking another thread). Control
    /// and signalling reach the shards over channels, which work across runtimes.
    pub(crate) async fn start(
        self,
        admission: Arc<dyn Admission>,
    ) -> Result<DriverHandle, SfuError> {
        let Bound {
            config,
            sockets,
            local_addrs,
            listeners,
            tcp_addrs,
            control,
            commands,
        } = self;
        let count = commands.len();
        let (inboxes, packets): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| mpsc::channel::<NetIn>(DATAGRAM_QUEUE))
            .unzip();
        let routes = (count > 1).then(|| Arc::new(Mutex::new(Routes::default())));
        let mut shards = Vec::with_capacity(count);
        for (index, (commands, packets)) in commands.into_iter().zip(packets).enumerate() {
            let engine = Engine::new(
                EngineConfig {
                    local_addrs: local_addrs.clone(),
                    tcp_addrs: tcp_addrs.clone(),
                    ping_interval_secs: config.ping_interval_secs,
                    ping_timeout_secs: config.ping_timeout_secs,
                    seed: OsRng.try_next_u64().map_err(SfuError::Entropy)?,
                    turn: config.turn.clone(),
                    subscriber_bwe: config.subscriber_bwe,
                },
                Instant::now(),
                unix_ms_now(),
            );
            shards.push(Shard {
                index,
                engine,
                commands,
                packets,
                senders: send_sockets(&sockets)?,
                routes: routes.clone(),
                recorder: control.recorder.clone(),
            });
        }
        let mut readers = Some(Readers {
            sockets,
            listeners,
            router: Router {
                shards: inboxes.into(),
                routes,
            },
        });
        let mut stopped = Vec::with_capacity(count);
        for shard in shards {
            let counters = control.counters.clone();
            stopped.push(spawn_shard(shard, readers.take(), admission.clone(), counters).await?);
        }
        tracing::info!(shards = count, "media engine started");
        Ok(DriverHandle {
            control,
            local_addrs,
            tcp_addrs,
            stopped,
        })
    }
}

/// Starts one shard's thread; answers once it runs (its sockets registered), with what completes
/// when it has stopped.
async fn spawn_shard(
    shard: Shard,
    readers: Option<Readers>,
    admission: Arc<dyn Admission>,
    counters: Arc<MediaCounters>,
) -> Result<oneshot::Receiver<()>, SfuError> {
    let (started_tx, started) = oneshot::channel::<Result<(), SfuError>>();
    let (stopped_tx, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("convene-media-{}", shard.index))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(source) => {
                    let _ = started_tx.send(Err(SfuError::Thread(source)));
                    return;
                }
            };
            runtime.block_on(async move {
                if let Some(readers) = readers
                    && let Err(e) = readers.spawn()
                {
                    let _ = started_tx.send(Err(e));
                    return;
                }
                let _ = started_tx.send(Ok(()));
                run(shard, admission, counters).await;
            });
            // Dropping the runtime ends the socket readers.
            drop(runtime);
            let _ = stopped_tx.send(());
        })
        .map_err(SfuError::Thread)?;
    match started.await {
        Ok(Ok(())) => Ok(stopped),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            // The thread ended without a word: it panicked.
            let _ = thread.join();
            Err(SfuError::Stopped)
        }
    }
}

impl Readers {
    /// Registers the sockets and listeners on this thread's runtime and starts their tasks.
    fn spawn(self) -> Result<(), SfuError> {
        let sockets = register_sockets(self.sockets)?;
        let listeners = register_listeners(self.listeners)?;
        for (local, socket) in sockets {
            tokio::spawn(read_socket(socket, local, self.router.clone()));
        }
        let gate = SharedGate::new(tcp::Gate::new(
            tcp::MAX_UNAUTHENTICATED,
            tcp::MAX_UNAUTHENTICATED_PER_ADDRESS,
        ));
        let next_id = Arc::new(AtomicU64::new(1));
        for (listener, local) in listeners {
            tokio::spawn(tcp::listen(
                listener,
                local,
                self.router.clone(),
                gate.clone(),
                next_id.clone(),
            ));
        }
        Ok(())
    }
}

/// Hands each packet read to the shard whose engine takes it ([`Routes`]): with one shard, all
/// to it; the opening and closing of a TCP connection to every shard (any may have a peer on
/// it). A shard's full queue drops a UDP datagram, as the network would; TCP waits.
#[derive(Clone)]
pub(crate) struct Router {
    shards: Arc<[mpsc::Sender<NetIn>]>,
    routes: Option<Arc<Mutex<Routes>>>,
}

/// The shard a packet was for has stopped.
#[derive(Debug)]
pub(crate) struct Stopped;

impl Router {
    fn route(&self, net: &NetIn) -> Route {
        match (&self.routes, net) {
            (None, _) => Route::Shard(0),
            (Some(_), NetIn::Tcp(_)) => Route::Every,
            (Some(routes), NetIn::Datagram(d)) => {
                lock(routes).route(d.transport, d.source, &d.bytes)
            }
        }
    }

    /// Without waiting: a full queue drops the packet.
    fn try_send(&self, net: NetIn) -> Result<(), Stopped> {
        let offer = |shard: &mpsc::Sender<NetIn>, net| match shard.try_send(net) {
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Stopped),
            _ => Ok(()),
        };
        match self.route(&net) {
            Route::Shard(shard) => offer(&self.shards[shard], net),
            Route::Every => self
                .shards
                .iter()
                .try_for_each(|shard| offer(shard, net.clone())),
            Route::Drop => Ok(()),
        }
    }

    /// Waiting for room in the shard's queue.
    pub(crate) async fn send(&self, net: NetIn) -> Result<(), Stopped> {
        match self.route(&net) {
            Route::Shard(shard) => self.shards[shard].send(net).await.map_err(|_| Stopped),
            Route::Every => {
                for shard in self.shards.iter() {
                    shard.send(net.clone()).await.map_err(|_| Stopped)?;
                }
                Ok(())
            }
            Route::Drop => Ok(()),
        }
    }
}

/// The bound sockets on the reading runtime, by advertised address.
fn register_sockets(
    bound: Vec<(StdUdpSocket, SocketAddr)>,
) -> Result<HashMap<SocketAddr, Arc<MediaSocket>>, SfuError> {
    let mut sockets = HashMap::new();
    for (socket, advertised) in bound {
        let bind_error = |source| SfuError::Bind {
            addr: advertised,
            source,
        };
        socket.set_nonblocking(true).map_err(bind_error)?;
        let socket = Arc::new(UdpSocket::from_std(socket).map_err(bind_error)?);
        let media_socket = Arc::new(MediaSocket::new(socket).map_err(bind_error)?);
        sockets.insert(advertised, media_socket);
    }
    Ok(sockets)
}

/// One shard's own handles on the bound sockets, for sending, by advertised address.
fn send_sockets(
    bound: &[(StdUdpSocket, SocketAddr)],
) -> Result<HashMap<SocketAddr, SendSocket>, SfuError> {
    bound
        .iter()
        .map(|(socket, advertised)| {
            let bind_error = |source| SfuError::Bind {
                addr: *advertised,
                source,
            };
            let socket = SendSocket::new(socket.try_clone().map_err(bind_error)?);
            Ok((*advertised, socket.map_err(bind_error)?))
        })
        .collect()
}

/// The bound TCP listeners on the reading runtime, with their advertised addresses.
fn register_listeners(
    bound: Vec<(StdTcpListener, SocketAddr)>,
) -> Result<Vec<(tokio::net::TcpListener, SocketAddr)>, SfuError> {
    bound
        .into_iter()
        .map(|(listener, advertised)| {
            let bind_error = |source| SfuError::BindTcp {
                addr: advertised,
                source,
            };
            listener.set_nonblocking(true).map_err(bind_error)?;
            let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
            Ok((listener, advertised))
        })
        .collect()
}

/// Largest datagram the media socket expects (one segment of a GRO read).
const MAX_DATAGRAM: usize = 2048;

/// Read datagrams until the engines go away. `quinn-udp` enables UDP GRO where the kernel has
/// it, so one read may return several datagrams from one sender coalesced, `stride` bytes each
/// (the last may be shorter); they are split here, so an engine always sees single datagrams.
async fn read_socket(media: Arc<MediaSocket>, local: SocketAddr, router: Router) {
    // One system call reads up to BATCH_SIZE buffers, each room for a full GRO read.
    let slot = MAX_DATAGRAM * media.state.gro_segments().max(1);
    let mut storage = vec![0u8; slot * quinn_udp::BATCH_SIZE];
    let mut meta = [quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
    loop {
        if let Err(e) = media.socket.readable().await {
            tracing::trace!(%local, "udp readiness error: {e}");
            tokio::task::yield_now().await;
            continue;
        }
        let received = media.socket.try_io(tokio::io::Interest::READABLE, || {
            let mut bufs: Vec<std::io::IoSliceMut<'_>> = storage
                .chunks_mut(slot)
                .map(std::io::IoSliceMut::new)
                .collect();
            media
                .state
                .recv((&*media.socket).into(), &mut bufs, &mut meta)
        });
        match received {
            Ok(count) => {
                for (m, buf) in meta[..count].iter().zip(storage.chunks(slot)) {
                    let stride = if m.stride == 0 { m.len } else { m.stride };
                    for bytes in buf[..m.len].chunks(stride.max(1)) {
                        let datagram = NetIn::Datagram(Datagram {
                            transport: Transport::Udp,
                            local,
                            source: m.addr,
                            bytes: bytes.to_vec(),
                        });
                        if router.try_send(datagram).is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // ICMP errors surface here on some systems; they do not stop the socket.
                tracing::trace!(%local, "udp recv error: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// One media socket as read, with its `quinn-udp` state (GRO support, found when it was bound).
struct MediaSocket {
    socket: Arc<UdpSocket>,
    state: quinn_udp::UdpSocketState,
}

impl MediaSocket {
    fn new(socket: Arc<UdpSocket>) -> std::io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new((&*socket).into())?;
        Ok(MediaSocket { socket, state })
    }
}

/// A shard's handle on one media socket for sending (its own descriptor of the one socket, not
/// registered with any runtime: sends never wait), with its `quinn-udp` state (GSO support).
struct SendSocket {
    socket: StdUdpSocket,
    state: quinn_udp::UdpSocketState,
}

impl SendSocket {
    fn new(socket: StdUdpSocket) -> std::io::Result<Self> {
        socket.set_nonblocking(true)?;
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        Ok(SendSocket { socket, state })
    }

    /// Send one run of datagrams; a full socket buffer drops it, as the network would.
    fn send(&self, run: &Run<'_>, counters: &MediaCounters) {
        let transmit = crate::batch::transmit(run);
        let datagrams = match run.segment {
            Some(size) if size > 0 => run.contents.len().div_ceil(size),
            _ => 1,
        } as u64;
        let sent = self.state.send((&self.socket).into(), &transmit);
        let counter = if sent.is_ok() {
            &counters.udp_sent
        } else {
            &counters.udp_dropped
        };
        MediaCounters::add(counter, datagrams);
    }
}

struct Io {
    shard: usize,
    sockets: HashMap<SocketAddr, SendSocket>,
    batcher: Batcher,
    tcp: Connections,
    outboxes: HashMap<ConnId, mpsc::Sender<WsOut>>,
    routes: Option<Arc<Mutex<Routes>>>,
    admission: Arc<dyn Admission>,
    counters: Arc<MediaCounters>,
    recorder: Recorder,
}

impl Io {
    /// A packet goes to the engine; a TCP connection's opening or closing is noted here.
    fn take(&mut self, engine: &mut Engine, net: NetIn) {
        match net {
            NetIn::Datagram(datagram) => feed(engine, datagram.input(), Instant::now()),
            NetIn::Tcp(event) => self.tcp.on_event(event),
        }
    }

    fn send_run(&mut self) {
        if let Some(run) = self.batcher.take() {
            let socket = self
                .sockets
                .get(&run.source)
                .or_else(|| self.sockets.values().next());
            if let Some(socket) = socket {
                socket.send(&run, &self.counters);
            }
        }
    }

    /// Perform everything the engine queued. Consecutive datagrams to one peer leave in one
    /// GSO send ([`Batcher`]).
    fn flush(&mut self, engine: &mut Engine) {
        while let Some(output) = engine.poll_output() {
            match output {
                Output::Transmit {
                    transport: Transport::Tcp,
                    source,
                    destination,
                    contents,
                } => {
                    let counter = if self.tcp.send(source, destination, contents) {
                        &self.counters.tcp_sent
                    } else {
                        &self.counters.tcp_dropped
                    };
                    MediaCounters::add(counter, 1);
                }
                Output::Transmit {
                    transport: Transport::Udp,
                    source,
                    destination,
                    contents,
                } => {
                    if !self.batcher.push(source, destination, &contents) {
                        self.send_run();
                        let taken = self.batcher.push(source, destination, &contents);
                        debug_assert!(taken, "an empty batcher takes any datagram");
                    }
                }
                Output::Record(packet) => self.recorder.packet(packet),
                Output::Signal { conn, response } => {
                    let Some(outbox) = self.outboxes.get(&conn) else {
                        continue;
                    };
                    match outbox.try_send(WsOut::Frame(response.encode_to_vec())) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            tracing::info!(
                                ?conn,
                                "client does not read its signalling; disconnecting"
                            );
                            self.outboxes.remove(&conn);
                            feed(engine, Input::ConnectionClosed { conn }, Instant::now());
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.outboxes.remove(&conn);
                            feed(engine, Input::ConnectionClosed { conn }, Instant::now());
                        }
                    }
                }
                Output::Close { conn } => {
                    if let Some(outbox) = self.outboxes.remove(&conn) {
                        let _ = outbox.try_send(WsOut::Close);
                    }
                }
                Output::Event(event) => self.admission.on_event(event),
                // Claimed before anything is sent there (this loop keeps the engine's order),
                // so the peer's answer is routed here.
                Output::Routed { transport, source } => {
                    if let Some(routes) = &self.routes {
                        lock(routes).claim(transport, source, self.shard);
                    }
                }
                Output::Unrouted { transport, source } => {
                    if let Some(routes) = &self.routes {
                        lock(routes).release(transport, source, self.shard);
                    }
                }
            }
        }
        self.send_run();
    }
}

/// An input from a peer or from time, which answers nothing but the outputs it queues.
fn feed(engine: &mut Engine, input: Input, now: Instant) {
    if let Err(e) = engine.handle(input, now) {
        tracing::debug!("media input refused: {e}");
    }
}

/// Datagrams handled in one turn of the engine loop before its outputs are sent.
const DATAGRAMS_PER_TURN: usize = 64;

/// One shard's engine task: commands, packets and the timer, until shutdown.
async fn run(shard: Shard, admission: Arc<dyn Admission>, counters: Arc<MediaCounters>) {
    let Shard {
        index,
        mut engine,
        mut commands,
        packets: mut datagrams,
        senders,
        routes,
        recorder,
    } = shard;
    let max_segments = senders
        .values()
        .map(|s| s.state.max_gso_segments())
        .min()
        .unwrap_or(1);
    tracing::debug!(shard = index, max_segments, "media send batching");
    let mut io = Io {
        shard: index,
        sockets: senders,
        batcher: Batcher::new(max_segments),
        tcp: Connections::default(),
        outboxes: HashMap::new(),
        routes,
        admission,
        counters,
        recorder,
    };
    let mut readers_open = true;
    let mut deadline = engine.poll_timeout();
    let timer = tokio::time::sleep_until(deadline.into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                let now = Instant::now();
                match command {
                    Command::Join { conn, admitted, params, outbox } => {
                        io.outboxes.insert(conn, outbox);
                        let unix_ms = unix_ms_now();
                        feed(&mut engine, Input::Join { conn, admitted, params, unix_ms }, now);
                    }
                    Command::Signal { conn, request } => {
                        feed(&mut engine, Input::Signal { conn, request }, now);
                    }
                    Command::Closed { conn } => {
                        io.outboxes.remove(&conn);
                        feed(&mut engine, Input::ConnectionClosed { conn }, now);
                    }
                    Command::Control { input, reply } => {
                        tracing::debug!(?input, "media control");
                        let _ = reply.send(engine.handle(input, now).map_err(SfuError::from));
                    }
                    Command::Shutdown(done) => {
                        feed(&mut engine, Input::CloseAll, now);
                        io.flush(&mut engine);
                        let _ = done.send(());
                        break;
                    }
                }
            }
            datagram = datagrams.recv(), if readers_open => {
                // The readers run on the first shard's runtime: at shutdown they may end before
                // this shard has taken its own shutdown command, which still says goodbye.
                let Some(datagram) = datagram else {
                    readers_open = false;
                    continue;
                };
                io.take(&mut engine, datagram);
                // Whatever else already arrived is handled in the same turn, so its outputs
                // batch together and the timers are checked once.
                for _ in 1..DATAGRAMS_PER_TURN {
                    let Ok(datagram) = datagrams.try_recv() else { break };
                    io.take(&mut engine, datagram);
                }
            }
            _ = &mut timer => {}
        }
        let now = Instant::now();
        let mut next = engine.poll_timeout();
        if next <= now {
            feed(&mut engine, Input::Timeout, now);
            next = engine.poll_timeout();
        }
        io.flush(&mut engine);
        if next != deadline {
            deadline = next;
            timer.as_mut().reset(deadline.into());
        }
    }
}

/// The wall-clock time in ms since the Unix epoch (0 for a clock set before 1970).
fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn media_socket() -> (Arc<MediaSocket>, SocketAddr) {
        let socket = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        let mut sockets = register_sockets(vec![(socket, addr)]).unwrap();
        (sockets.remove(&addr).unwrap(), addr)
    }

    /// A run sent as one GSO write reaches a socket with GRO on as one coalesced buffer (on
    /// Linux over loopback); the reader hands the engine the original datagrams, in order.
    #[tokio::test]
    async fn batched_datagrams_arrive_one_by_one() {
        let (receiver, local) = media_socket();
        let (tx, mut rx) = mpsc::channel(16);
        let router = Router {
            shards: vec![tx].into(),
            routes: None,
        };
        let reader = tokio::spawn(read_socket(receiver.clone(), local, router));
        let socket = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let source = socket.local_addr().unwrap();
        let sender = SendSocket::new(socket).unwrap();
        eprintln!(
            "gso segments {}, gro segments {}",
            sender.state.max_gso_segments(),
            receiver.state.gro_segments()
        );

        let datagrams: Vec<Vec<u8>> = vec![vec![1; 100], vec![2; 100], vec![3; 100], vec![4; 40]];
        let mut batcher = Batcher::new(sender.state.max_gso_segments());
        let counters = MediaCounters::default();
        for datagram in &datagrams {
            if !batcher.push(source, local, datagram) {
                sender.send(&batcher.take().unwrap(), &counters);
                assert!(batcher.push(source, local, datagram));
            }
        }
        sender.send(&batcher.take().unwrap(), &counters);
        // Each datagram of a GSO run is counted, not the run.
        assert_eq!(
            counters.read(),
            MediaCounts {
                udp_sent: datagrams.len() as u64,
                ..MediaCounts::default()
            }
        );

        let mut received = Vec::new();
        for _ in 0..datagrams.len() {
            let datagram = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a datagram within 5 s")
                .expect("reader alive");
            let NetIn::Datagram(datagram) = datagram else {
                panic!("a udp reader sends only datagrams")
            };
            assert_eq!(datagram.transport, Transport::Udp);
            assert_eq!((datagram.source, datagram.local), (source, local));
            received.push(datagram.bytes);
        }
        assert_eq!(received, datagrams);
        reader.abort();
    }

    fn udp(source: SocketAddr, bytes: Vec<u8>) -> NetIn {
        NetIn::Datagram(Datagram {
            transport: Transport::Udp,
            local: SocketAddr::from(([127, 0, 0, 1], 7882)),
            source,
            bytes,
        })
    }

    /// What each of a router's shards got, as (source, first byte) of its datagrams or "tcp".
    fn received(queues: &mut [mpsc::Receiver<NetIn>]) -> Vec<Vec<String>> {
        queues
            .iter_mut()
            .map(|queue| {
                std::iter::from_fn(|| queue.try_recv().ok())
                    .map(|net| match net {
                        NetIn::Datagram(d) => format!("{} {}", d.source.port(), d.bytes[0]),
                        NetIn::Tcp(_) => "tcp".to_owned(),
                    })
                    .collect()
            })
            .collect()
    }

    /// With two shards, a stranger's first binding request goes to both, its other packets
    /// nowhere; once an engine claims the address, everything from it goes to that shard only;
    /// a TCP connection's opening reaches both.
    #[tokio::test]
    async fn the_router_sends_each_packet_to_the_shard_that_claimed_its_source() {
        let (inboxes, mut queues): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::channel(16)).unzip();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let router = Router {
            shards: inboxes.into(),
            routes: Some(routes.clone()),
        };
        let peer = SocketAddr::from(([192, 0, 2, 7], 5000));
        let other = SocketAddr::from(([192, 0, 2, 8], 5000));
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        stun.extend([0; 12]);
        let rtp = vec![0x80; 40];

        router.try_send(udp(peer, stun.clone())).unwrap();
        router.try_send(udp(peer, rtp.clone())).unwrap();
        assert_eq!(
            received(&mut queues),
            vec![vec!["5000 0".to_owned()], vec!["5000 0".to_owned()]]
        );

        lock(&routes).claim(Transport::Udp, peer, 1);
        router.try_send(udp(peer, rtp.clone())).unwrap();
        router.try_send(udp(peer, stun.clone())).unwrap();
        router.try_send(udp(other, rtp.clone())).unwrap();
        assert_eq!(
            received(&mut queues),
            vec![vec![], vec!["5000 128".to_owned(), "5000 0".to_owned()]]
        );

        let (packets, _outgoing) = mpsc::channel(1);
        let opened = TcpEvent::Opened {
            local: SocketAddr::from(([127, 0, 0, 1], 7881)),
            remote: peer,
            id: 1,
            packets,
        };
        router.send(NetIn::Tcp(opened)).await.unwrap();
        assert_eq!(
            received(&mut queues),
            vec![vec!["tcp".to_owned()], vec!["tcp".to_owned()]]
        );

        // A shard that stopped stops the reader.
        drop(queues);
        assert!(router.try_send(udp(peer, rtp)).is_err());
    }

    /// Media sockets get a larger kernel buffer than the default, up to what the kernel allows.
    #[test]
    fn media_sockets_ask_for_large_buffers() {
        let socket = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let default = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        enlarge_buffers(&socket, socket.local_addr().unwrap());
        let enlarged = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok());
        match cap {
            // Linux: granted the smaller of what was asked and the cap (reported doubled).
            Some(cap) => assert_eq!(enlarged, 2 * cap.min(MEDIA_SOCKET_BUFFER)),
            None => assert!(enlarged >= default),
        }
    }
}
