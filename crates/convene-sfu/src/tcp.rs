//! ICE over TCP (RFC 6544) on the media thread: one listener per advertised address on the TCP
//! media port, one small task per connection. A connection's RFC 4571 frames go to the engine task
//! exactly as UDP datagrams do (the same channel, marked [`Transport::Tcp`]); what the engine sends
//! back on it comes through a bounded queue the task writes from, so the engine task never waits
//! on a socket.
//!
//! Until str0m accepts a STUN binding request on it, a connection is *unauthenticated*: anyone can
//! open one. Those are capped in all and per client address ([`Gate`]), must open with a STUN
//! binding request, and are closed if nothing is accepted within [`ICE_DEADLINE`]. A connection is
//! authenticated when the engine first sends on it: str0m answers only a binding request whose
//! username and integrity it checked, and a passive candidate sends on no connection it was not
//! asked on. Every connection is closed on a frame that is no STUN, DTLS, RTP or RTCP packet, an
//! empty or oversized frame ([`framing::MAX_FRAME`]), or a write the client does not take within
//! [`WRITE_STALL`] (its queue full, the engine's packets to it are dropped meanwhile).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::driver::{Datagram, NetIn, Router};
use crate::engine::Transport;
use crate::framing::{self, FrameError, FrameReader};

/// How long a connection may stay unauthenticated (no STUN binding request accepted).
pub const ICE_DEADLINE: Duration = Duration::from_secs(10);
/// Unauthenticated connections the listener holds at once, from all clients.
pub const MAX_UNAUTHENTICATED: usize = 1024;
/// Unauthenticated connections one client address (an IPv6 client: its /64) holds at once. A
/// browser opens one per remote candidate and peer connection (two per participant), a few
/// participants share an office's address.
pub const MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 32;
/// Packets queued for one connection; beyond, the engine's packets to it are dropped.
pub const WRITE_QUEUE: usize = 512;
/// How long one write may wait for the client to take it before the connection is closed.
pub const WRITE_STALL: Duration = Duration::from_secs(5);
/// Bytes written in one system call at most (queued packets are framed together).
const WRITE_CHUNK: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// What a TCP connection task tells the engine tasks, with its packets.
#[derive(Debug, Clone)]
pub(crate) enum TcpEvent {
    /// A connection opened: packets from the engine for (`local`, `remote`) go to `packets`.
    Opened {
        local: SocketAddr,
        remote: SocketAddr,
        id: u64,
        packets: mpsc::Sender<Vec<u8>>,
    },
    /// The connection `id` closed.
    Closed {
        local: SocketAddr,
        remote: SocketAddr,
        id: u64,
    },
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// [`MAX_UNAUTHENTICATED`] are open.
    ListenerFull,
    /// The client's address holds [`MAX_UNAUTHENTICATED_PER_ADDRESS`].
    AddressFull,
}

/// What a client's connections are counted under: its IPv4 address, or its IPv6 /64 (a client
/// cannot escape the cap by changing its address's host part).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from_bits(
            v6.to_bits() & !u128::from(u64::MAX),
        )),
    }
}

/// The unauthenticated connections' counts, in all and per address. Pure counting: the listener
/// asks [`Gate::admit`] at accept, and a connection gives its place back when it is
/// authenticated or closes.
#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    max_per_address: usize,
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Gate {
    pub fn new(max_total: usize, max_per_address: usize) -> Self {
        Gate {
            max_total,
            max_per_address,
            total: 0,
            by_address: HashMap::new(),
        }
    }

    /// Count a new unauthenticated connection from `ip`, or say why it is refused.
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.total >= self.max_total {
            return Err(Refusal::ListenerFull);
        }
        let count = self.by_address.entry(address_key(ip)).or_insert(0);
        if *count >= self.max_per_address {
            return Err(Refusal::AddressFull);
        }
        *count += 1;
        self.total += 1;
        Ok(())
    }

    /// Give back the place of a connection from `ip` that [`Gate::admit`] counted.
    pub fn release(&mut self, ip: IpAddr) {
        if let Entry::Occupied(mut count) = self.by_address.entry(address_key(ip)) {
            *count.get_mut() -= 1;
            self.total -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }

    pub fn unauthenticated(&self) -> usize {
        self.total
    }
}

/// Why a connection is closed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// A frame the stream cannot carry (empty, oversized).
    Framing(FrameError),
    /// The first frame is not a STUN binding request.
    NotIce,
    /// A frame that is no STUN, DTLS, RTP or RTCP packet.
    Garbage,
    /// No binding request was accepted within [`ICE_DEADLINE`].
    IceDeadline,
}

/// One connection's rules over its frames and time, without the socket: the first frame must be
/// a STUN binding request, every frame a media packet, and it must be authenticated (the engine
/// sends on it) before its deadline.
#[derive(Debug)]
pub struct Inbound {
    deadline: Instant,
    frames: u64,
    authenticated: bool,
}

impl Inbound {
    pub fn new(opened: Instant) -> Self {
        Inbound {
            deadline: opened + ICE_DEADLINE,
            frames: 0,
            authenticated: false,
        }
    }

    /// A frame arrived: pass it to the engine, or close.
    pub fn on_frame(&mut self, packet: &[u8]) -> Result<(), Close> {
        self.frames += 1;
        if self.frames == 1 && !framing::first_frame_ok(packet) {
            return Err(Close::NotIce);
        }
        if !framing::is_media_packet(packet) {
            return Err(Close::Garbage);
        }
        Ok(())
    }

    /// The engine sent on the connection; `true` the first time (it is now authenticated).
    pub fn on_send(&mut self) -> bool {
        !std::mem::replace(&mut self.authenticated, true)
    }

    /// When the connection is closed unless authenticated by then; `None` once it is.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.authenticated).then_some(self.deadline)
    }

    /// Whether the connection must close at `now`.
    pub fn expired(&self, now: Instant) -> Result<(), Close> {
        match self.deadline() {
            Some(deadline) if now >= deadline => Err(Close::IceDeadline),
            _ => Ok(()),
        }
    }
}

/// The shared [`Gate`] of a node's TCP listeners (they run on one thread; the lock is never
/// contended).
#[derive(Clone)]
pub(crate) struct SharedGate(Arc<Mutex<Gate>>);

impl SharedGate {
    pub(crate) fn new(gate: Gate) -> Self {
        SharedGate(Arc::new(Mutex::new(gate)))
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(&self, ip: IpAddr) -> Result<Slot, Refusal> {
        self.lock().admit(ip)?;
        Ok(Slot {
            gate: self.clone(),
            ip,
        })
    }
}

/// An unauthenticated connection's place in the [`Gate`], given back when dropped.
struct Slot {
    gate: SharedGate,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.lock().release(self.ip);
    }
}

/// Where a connection's frames and events go: the engine task's datagram channel.
pub(crate) type Sink = Router;

/// Accept connections on `listener` (advertised as `local`) until the runtime ends.
pub(crate) async fn listen(
    listener: TcpListener,
    local: SocketAddr,
    sink: Sink,
    gate: SharedGate,
    next_id: Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: back off a moment
                // rather than spin.
                tracing::debug!(%local, "tcp accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match gate.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::debug!(%remote, ?refusal, "media tcp connection refused at accept");
                drop(stream);
                continue;
            }
        };
        // Media is latency-bound and already packetized: Nagle would only hold packets back.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%remote, "TCP_NODELAY: {e}");
        }
        let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(serve(stream, local, remote, id, sink.clone(), slot));
    }
}

/// One connection: frames in to the engine, the engine's packets out, until either side ends or
/// a rule of [`Inbound`] closes it.
async fn serve(
    mut stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    id: u64,
    sink: Sink,
    slot: Slot,
) {
    let (packets, mut outgoing) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let opened = TcpEvent::Opened {
        local,
        remote,
        id,
        packets,
    };
    if sink.send(NetIn::Tcp(opened)).await.is_err() {
        return;
    }
    let mut slot = Some(slot);
    let mut inbound = Inbound::new(Instant::now());
    let mut frames = FrameReader::new();
    let mut read_buffer = vec![0u8; READ_CHUNK];
    let mut write_buffer = Vec::with_capacity(WRITE_CHUNK);
    let (mut reader, mut writer) = stream.split();
    let reason: String = 'connection: loop {
        let deadline = inbound.deadline();
        tokio::select! {
            read = reader.read(&mut read_buffer) => {
                let count = match read {
                    Ok(0) => break 'connection "closed by the client".into(),
                    Ok(count) => count,
                    Err(e) => break 'connection format!("read failed: {e}"),
                };
                frames.push(&read_buffer[..count]);
                loop {
                    let packet = match frames.next_frame() {
                        Ok(Some(packet)) => packet,
                        Ok(None) => break,
                        Err(e) => break 'connection format!("{:?}", Close::Framing(e)),
                    };
                    if let Err(close) = inbound.on_frame(packet) {
                        break 'connection format!("{close:?}");
                    }
                    let datagram = Datagram {
                        transport: Transport::Tcp,
                        local,
                        source: remote,
                        bytes: packet.to_vec(),
                    };
                    if sink.send(NetIn::Datagram(datagram)).await.is_err() {
                        break 'connection "the engine stopped".into();
                    }
                }
            }
            packet = outgoing.recv() => {
                let Some(packet) = packet else {
                    break 'connection "dropped by the engine".into();
                };
                if inbound.on_send() {
                    slot = None; // authenticated: no longer counted against the caps
                }
                write_buffer.clear();
                framing::encode(&packet, &mut write_buffer);
                while write_buffer.len() < WRITE_CHUNK {
                    let Ok(packet) = outgoing.try_recv() else { break };
                    framing::encode(&packet, &mut write_buffer);
                }
                match tokio::time::timeout(WRITE_STALL, writer.write_all(&write_buffer)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break 'connection format!("write failed: {e}"),
                    Err(_) => break 'connection "the client does not read".into(),
                }
            }
            _ = sleep_until(deadline) => {
                if let Err(close) = inbound.expired(Instant::now()) {
                    break 'connection format!("{close:?}");
                }
            }
        }
    };
    tracing::debug!(%local, %remote, authenticated = slot.is_none(), "media tcp connection closed: {reason}");
    drop(slot);
    let _ = sink
        .send(NetIn::Tcp(TcpEvent::Closed { local, remote, id }))
        .await;
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// A connection's (local, remote) address pair.
type Pair = (SocketAddr, SocketAddr);

/// The engine task's side: the open connections by address pair, each with its id and queue.
#[derive(Default)]
pub(crate) struct Connections {
    open: HashMap<Pair, (u64, mpsc::Sender<Vec<u8>>)>,
}

impl Connections {
    pub(crate) fn on_event(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Opened {
                local,
                remote,
                id,
                packets,
            } => {
                self.open.insert((local, remote), (id, packets));
            }
            TcpEvent::Closed { local, remote, id } => {
                // A newer connection may have reused the pair: only this one goes.
                if let Entry::Occupied(entry) = self.open.entry((local, remote))
                    && entry.get().0 == id
                {
                    entry.remove();
                }
            }
        }
    }

    /// Queue `packet` on the connection between `local` and `remote`. Without one (closed, or a
    /// check toward a client's active candidate, which no passive candidate can reach), or with
    /// its queue full, the packet is dropped as the network would drop it.
    /// Queues `packet` to its connection's writer; `false` when it was dropped (no such
    /// connection, its queue full, or it closed).
    pub(crate) fn send(&mut self, local: SocketAddr, remote: SocketAddr, packet: Vec<u8>) -> bool {
        let Some((_, packets)) = self.open.get(&(local, remote)) else {
            return false;
        };
        match packets.try_send(packet) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.open.remove(&(local, remote));
                false
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_gate_caps_per_address_and_in_all_and_gives_places_back() {
        let mut gate = Gate::new(4, 2);
        assert_eq!(gate.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(gate.admit(ip("192.0.2.1")), Ok(()));
        assert_eq!(gate.admit(ip("192.0.2.1")), Err(Refusal::AddressFull));
        // An IPv4 client seen through an IPv6 socket is that client.
        assert_eq!(
            gate.admit(ip("::ffff:192.0.2.1")),
            Err(Refusal::AddressFull)
        );
        // Another host in the same IPv6 /64 is the same client.
        assert_eq!(gate.admit(ip("2001:db8::1")), Ok(()));
        assert_eq!(gate.admit(ip("2001:db8::2")), Ok(()));
        assert_eq!(gate.unauthenticated(), 4);
        assert_eq!(gate.admit(ip("198.51.100.9")), Err(Refusal::ListenerFull));
        gate.release(ip("192.0.2.1"));
        assert_eq!(gate.admit(ip("2001:db8::3")), Err(Refusal::AddressFull));
        assert_eq!(gate.admit(ip("198.51.100.9")), Ok(()));
        for address in ["192.0.2.1", "2001:db8::1", "2001:db8::2", "198.51.100.9"] {
            gate.release(ip(address));
        }
        assert_eq!(gate.unauthenticated(), 0);
        assert!(gate.by_address.is_empty());
        // Releasing what was never counted changes nothing.
        gate.release(ip("203.0.113.5"));
        assert_eq!(gate.unauthenticated(), 0);
    }

    fn binding_request() -> Vec<u8> {
        let mut packet = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        packet.extend_from_slice(&[1; 12]);
        packet
    }

    #[test]
    fn a_connection_must_open_with_a_binding_request_and_carry_only_media() {
        let now = Instant::now();
        let mut inbound = Inbound::new(now);
        assert_eq!(inbound.on_frame(&[0x80; 60]), Err(Close::NotIce));
        let mut inbound = Inbound::new(now);
        assert_eq!(inbound.on_frame(&binding_request()), Ok(()));
        assert_eq!(inbound.on_frame(&[22, 254, 253, 0, 0]), Ok(())); // DTLS
        assert_eq!(inbound.on_frame(&[0x80; 60]), Ok(())); // RTP
        assert_eq!(inbound.on_frame(b"GET / HTTP/1.1"), Err(Close::Garbage));
    }

    #[test]
    fn an_unauthenticated_connection_expires_and_an_authenticated_one_does_not() {
        let opened = Instant::now();
        let mut inbound = Inbound::new(opened);
        assert_eq!(inbound.deadline(), Some(opened + ICE_DEADLINE));
        assert_eq!(
            inbound.expired(opened + ICE_DEADLINE - Duration::from_millis(1)),
            Ok(())
        );
        assert_eq!(
            inbound.expired(opened + ICE_DEADLINE),
            Err(Close::IceDeadline)
        );
        assert!(inbound.on_send(), "the first send authenticates");
        assert!(!inbound.on_send());
        assert_eq!(inbound.deadline(), None);
        assert_eq!(inbound.expired(opened + ICE_DEADLINE * 100), Ok(()));
    }

    #[test]
    fn packets_go_to_their_connection_and_a_reused_pair_survives_the_old_close() {
        let local: SocketAddr = "127.0.0.1:7881".parse().unwrap();
        let remote: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        let mut connections = Connections::default();
        let (first_tx, mut first) = mpsc::channel(2);
        connections.on_event(TcpEvent::Opened {
            local,
            remote,
            id: 1,
            packets: first_tx,
        });
        assert!(connections.send(local, remote, vec![1]));
        assert!(
            !connections.send(local, other, vec![2]),
            "no connection: dropped"
        );
        assert_eq!(first.try_recv().unwrap(), vec![1]);
        assert!(first.try_recv().is_err());
        // A full queue drops the packet, the connection stays.
        assert!(connections.send(local, remote, vec![3]));
        assert!(connections.send(local, remote, vec![4]));
        assert!(
            !connections.send(local, remote, vec![5]),
            "queue full: dropped"
        );
        assert_eq!(
            (first.try_recv().unwrap(), first.try_recv().unwrap()),
            (vec![3], vec![4])
        );
        assert!(first.try_recv().is_err());
        assert_eq!(connections.len(), 1);
        // The same pair opened again before the old close arrived: the old close leaves it.
        let (second_tx, mut second) = mpsc::channel(2);
        connections.on_event(TcpEvent::Opened {
            local,
            remote,
            id: 2,
            packets: second_tx,
        });
        connections.on_event(TcpEvent::Closed {
            local,
            remote,
            id: 1,
        });
        assert!(connections.send(local, remote, vec![6]));
        assert_eq!(second.try_recv().unwrap(), vec![6]);
        // A connection whose task ended is forgotten at the next send.
        drop(second);
        assert!(!connections.send(local, remote, vec![7]));
        assert_eq!(connections.len(), 0);
    }
}
