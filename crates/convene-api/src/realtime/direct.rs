//! Connections the hub can write event frames into directly.
//!
//! A waiting guest's stream is idle almost all its life; when the host lets everyone in, waking
//! 10,000 stream tasks to each write one small frame costs more than the writes themselves. So
//! the server ([`crate::server`]) serves each TCP connection as a [`ConnIo`], which keeps the
//! socket's write side reachable ([`Conn`]) from outside the HTTP and WebSocket stack that owns
//! the connection, and hands it to every request as [`Peer`].
//! The hub then writes a frame straight into an idle stream's socket ([`Conn::inject`]), and
//! the stream task only learns of it the next time it wakes (`crate::realtime::hub::Inbox`).
//!
//! The one rule that keeps the bytes on the wire whole and in order: a frame is injected only
//! when the stack above has no frame of its own half-written (it flushed after its last write),
//! and bytes an injection could not hand to the kernel at once go out, in
//! [`ConnIo::poll_write`] and [`ConnIo::poll_flush`], before anything the stack writes next.
//!
//! Injected frames are plain WebSocket frames written to the TCP socket: this is only for a
//! listener that serves plain TCP. One that terminates TLS itself must not hand out [`Peer`].

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The connect info of every request the server ([`crate::server`]) serves: the peer's address
/// and its connection's write side.
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub conn: Arc<Conn>,
}

/// The write side of one connection, shared by the stack that owns it ([`ConnIo`]) and
/// whoever injects frames ([`Conn::inject`]).
pub struct Conn {
    write: OwnedWriteHalf,
    wire: Mutex<Wire>,
}

#[derive(Default)]
struct Wire {
    /// The stack wrote since it last flushed: a frame of its own may be cut, nothing may go
    /// between.
    dirty: bool,
    /// Injected bytes the kernel did not take yet; they go out before anything else.
    pending: Vec<u8>,
}

/// What [`Conn::inject`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// The kernel took all of it.
    Whole,
    /// The kernel took part of it (or none); the rest goes out at the stack's next write or
    /// flush, which the caller must see to.
    Partial,
    /// Nothing written: the stack is in the middle of its own frame, or earlier injected bytes
    /// are still waiting.
    Busy,
}

impl Conn {
    fn stream(&self) -> &TcpStream {
        self.write.as_ref()
    }

    fn wire(&self) -> MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes whole frames (`bytes`) unless the stack is mid-frame. Never waits.
    pub fn inject(&self, bytes: &[u8]) -> Inject {
        let mut wire = self.wire();
        if wire.dirty || !wire.pending.is_empty() {
            return Inject::Busy;
        }
        // Straight to the socket, not through tokio's readiness (`try_write`): one guest's state
        // fewer to load for each of a bulk admission's thousands of writes. When the kernel
        // takes nothing, tokio still holds the socket as writable; the stack's next write finds
        // out, as it would have here.
        let sent = socket2::SockRef::from(self.stream()).send_with_flags(bytes, libc::MSG_NOSIGNAL);
        let written = match sent {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // A broken connection: its reader sees the error and ends the stream.
            Err(_) => return Inject::Busy,
        };
        if written == bytes.len() {
            return Inject::Whole;
        }
        wire.pending.extend_from_slice(&bytes[written..]);
        Inject::Partial
    }

    /// Whether injected bytes are still waiting for the stack's next write or flush.
    pub fn has_pending(&self) -> bool {
        !self.wire().pending.is_empty()
    }

    /// Writes out the injected bytes still waiting.
    fn poll_drain(&self, wire: &mut Wire, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !wire.pending.is_empty() {
            ready!(self.stream().poll_write_ready(cx))?;
            match self.stream().try_write(&wire.pending) {
                Ok(n) => {
                    wire.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let mut wire = self.wire();
        ready!(self.poll_drain(&mut wire, cx))?;
        loop {
            ready!(self.stream().poll_write_ready(cx))?;
            match write(self.stream()) {
                Ok(n) => {
                    wire.dirty = true;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A connection as the HTTP and WebSocket stack sees it: reads from the socket, writes through
/// [`Conn`].
pub struct ConnIo {
    read: OwnedReadHalf,
    conn: Arc<Conn>,
}

impl ConnIo {
    /// The shared write side.
    pub fn conn(&self) -> Arc<Conn> {
        self.conn.clone()
    }

    pub fn new(stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        Self {
            read,
            conn: Arc::new(Conn {
                write,
                wire: Mutex::default(),
            }),
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.conn.poll_write_with(cx, |s| s.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.conn
            .poll_write_with(cx, |s| s.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// The stack flushes after whole frames only, so from here on an injection cannot cut one.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wire = self.conn.wire();
        ready!(self.conn.poll_drain(&mut wire, cx))?;
        wire.dirty = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut wire = self.conn.wire();
        ready!(self.conn.poll_drain(&mut wire, cx))?;
        // No more writes from anyone: the peer sees the end of the stream now.
        wire.dirty = true;
        match socket2::SockRef::from(self.conn.stream()).shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The header of an unmasked, final WebSocket text frame of `len` bytes (RFC 6455, 5.2): what a
/// server sends.
pub fn text_frame_header(len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x81;
    let used = if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (header, used)
}

/// A connected pair over loopback: the server side as [`ConnIo`], and the client's socket.
#[cfg(test)]
pub(crate) async fn pair() -> (ConnIo, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (ConnIo::new(server), client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn frame_headers_follow_the_length_encoding() {
        let (h, n) = text_frame_header(5);
        assert_eq!(&h[..n], &[0x81, 5]);
        let (h, n) = text_frame_header(126);
        assert_eq!(&h[..n], &[0x81, 126, 0, 126]);
        let (h, n) = text_frame_header(65_535);
        assert_eq!(&h[..n], &[0x81, 126, 0xff, 0xff]);
        let (h, n) = text_frame_header(65_536);
        assert_eq!(&h[..n], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[tokio::test]
    async fn nothing_is_injected_into_a_frame_the_stack_has_not_flushed() {
        let (mut io, mut client) = pair().await;
        let conn = io.conn.clone();
        assert_eq!(conn.inject(b"<a>"), Inject::Whole);
        io.write_all(b"<b").await.unwrap();
        // Mid-frame: refused.
        assert_eq!(conn.inject(b"<x>"), Inject::Busy);
        io.write_all(b">").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(conn.inject(b"<c>"), Inject::Whole);
        let mut got = vec![0u8; 9];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"<a><b><c>");
    }

    #[tokio::test]
    async fn what_the_kernel_did_not_take_goes_out_before_the_stack_writes_again() {
        let (mut io, mut client) = pair().await;
        let conn = io.conn.clone();
        // Fill the socket's buffers (the client reads nothing yet).
        let chunk = vec![b'.'; 64 * 1024];
        let frame = [&b"["[..], &chunk, b"]"].concat();
        let mut outcome = Inject::Whole;
        let mut sent = 0usize;
        while outcome == Inject::Whole {
            outcome = conn.inject(&frame);
            sent += chunk.len() + 2;
            assert!(sent < 512 * 1024 * 1024, "the socket never filled");
        }
        assert_eq!(outcome, Inject::Partial);
        assert!(conn.has_pending());
        assert_eq!(conn.inject(b"[x]"), Inject::Busy);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        io.write_all(b"{end}").await.unwrap();
        io.flush().await.unwrap();
        assert!(!conn.has_pending());
        io.shutdown().await.unwrap();
        drop(io);
        drop(conn);
        let all = reader.await.unwrap();
        assert_eq!(all.len(), sent + 5);
        // Whole injected frames, then the stack's bytes: nothing cut or interleaved.
        let (frames, tail) = all.split_at(sent);
        assert_eq!(tail, b"{end}");
        for frame in frames.chunks(chunk.len() + 2) {
            assert_eq!(frame[0], b'[');
            assert_eq!(frame[frame.len() - 1], b']');
            assert!(frame[1..frame.len() - 1].iter().all(|b| *b == b'.'));
        }
    }
}
