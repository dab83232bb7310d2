//! The HTTP server: the accept loop, and the deadlines and caps every connection lives under.
//!
//! No client holds a connection open by sending slowly or not at all (slowloris), and no client
//! address holds more than its share of the process's descriptors:
//!
//! - **header timeout**: a request head must arrive whole within it, counted from the accept (a
//!   connection that sends nothing is closed then) or from the first byte of the next head;
//! - **idle timeout**: a kept-alive connection with no request in flight is closed after it, and
//!   so is one whose response the client takes none of for as long (it does not read);
//! - **body timeout**: a request body must arrive whole within it, counted from its head; a late
//!   body is answered `408 request_timeout` in the native error shape and the connection closed;
//! - **per-address cap**: one client address (an IPv6 client: its /64) holds at most
//!   `max_per_address` connections; trusted reverse proxies are exempt, they carry many clients;
//! - **server cap**: at most `max_connections` in all, set below the descriptor limit
//!   ([`max_connections_for`]), so the process never runs out of descriptors under load.
//!
//! A connection over either cap is closed at accept, before anything is read from it. A request
//! in flight has no deadline but its body's and a stalled write's: a response may stream as long
//! as the client reads it (server-sent events), and a connection upgraded to a WebSocket leaves
//! this module's care at the upgrade
//! (each WebSocket keeps its own ping/pong liveness and write timeout). Its place in the counts
//! is held until its socket closes, upgraded or not.
//!
//! Connections speak HTTP/1.1 (hyper, with upgrades). Each request carries its connection's
//! [`Peer`] as `ConnectInfo`, so the hub can write into idle event streams ([`crate::realtime::direct`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use convene_core::ErrorCode;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::TrustedProxies;
use crate::error::ApiError;
use crate::realtime::direct::{ConnIo, Peer};

/// Every connection's deadlines and the per-address cap (`CONVENE_HTTP_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRules {
    /// A request head must arrive whole within this.
    pub header_timeout: Duration,
    /// A connection with no request in flight, or whose response the client does not read, is
    /// closed after this.
    pub idle_timeout: Duration,
    /// A request body must arrive whole within this of its head.
    pub body_timeout: Duration,
    /// Open connections one client address may hold (trusted proxies excepted).
    pub max_per_address: u32,
}

impl Default for ConnectionRules {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            // Generous: a company behind one NAT address is not an attack.
            max_per_address: 512,
        }
    }
}

/// How [`serve`] serves.
pub struct ServeOptions {
    pub rules: ConnectionRules,
    /// Open connections the whole server may hold ([`max_connections_for`]).
    pub max_connections: usize,
    /// Reverse proxies: exempt from the per-address cap.
    pub exempt: TrustedProxies,
}

/// Descriptors kept free for everything but client connections (the store's pool, the media
/// sockets, webhook and mail clients, files), at most.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The connections that fit under a descriptor limit, leaving room for the rest of the process: a
/// quarter of the limit, at most [`RESERVED_DESCRIPTORS`].
pub fn max_connections_for(descriptor_limit: u64) -> usize {
    let reserve = (descriptor_limit / 4).min(RESERVED_DESCRIPTORS);
    usize::try_from(descriptor_limit - reserve).unwrap_or(usize::MAX)
}

/// What a connection whose deadline passed may still finish writing before it is dropped.
const CLOSING_GRACE: Duration = Duration::from_secs(1);

/// How often refused connections and accept errors are logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets requests in
/// flight finish, and returns when every connection it served has ended.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let gate = Arc::new(Gate {
        max_per_address: options.rules.max_per_address,
        max_connections: options.max_connections,
        exempt: options.exempt,
        open: Mutex::default(),
    });
    let rules = Arc::new(options.rules);
    let stopping = CancellationToken::new();
    // Every connection task holds a receiver: the sender sees them all gone.
    let (all_done, done) = tokio::sync::watch::channel(());
    let mut refusals = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error, &mut refusals).await;
                    continue;
                }
            },
        };
        let slot = match gate.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed at once, nothing read.
                drop(stream);
                refusals.note(refusal, addr);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let rules = rules.clone();
        let stopping = stopping.clone();
        let done = done.clone();
        tokio::spawn(async move {
            connection(stream, addr, slot, app, rules, stopping).await;
            drop(done);
        });
    }
    drop(listener);
    stopping.cancel();
    drop(done);
    all_done.closed().await;
}

/// An accept that failed: a connection gone before it was taken is skipped; running out of
/// descriptors or memory is logged and waited out a little, rather than spun on.
async fn accept_failed(error: io::Error, refusals: &mut Refusals) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    ) {
        return;
    }
    if refusals.due() {
        tracing::warn!(%error, "cannot accept connections; retrying");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Refused connections, logged at most every [`LOG_EVERY`] with counts, not one line each.
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    server_full: u64,
    address_full: u64,
}

impl Refusals {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.logged.is_some_and(|at| now < at + LOG_EVERY) {
            return false;
        }
        self.logged = Some(now);
        true
    }

    fn note(&mut self, refusal: Refusal, addr: SocketAddr) {
        match refusal {
            Refusal::ServerFull => self.server_full += 1,
            Refusal::AddressFull => self.address_full += 1,
        }
        if self.due() {
            tracing::warn!(
                server_full = self.server_full,
                address_full = self.address_full,
                last = %addr.ip(),
                "connections refused at accept (over the server's or an address's cap)"
            );
            self.server_full = 0;
            self.address_full = 0;
        }
    }
}

// ----- Caps --------------------------------------------------------------------------------------

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The server holds `max_connections`.
    ServerFull,
    /// The client's address holds `max_per_address`.
    AddressFull,
}

/// What one client's connections are counted under: [`ClientAddr::network`] (its IPv4 address
/// or its IPv6 /64), as every other per-address limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct AddressKey(IpAddr);

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        Self(crate::auth::ClientAddr::network(ip))
    }
}

/// The open-connection counts, per address and in all.
struct Gate {
    max_per_address: u32,
    max_connections: usize,
    exempt: TrustedProxies,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<AddressKey, u32>,
}

impl Gate {
    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip`, or says why it is refused.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut open = self.open();
        if open.total >= self.max_connections {
            return Err(Refusal::ServerFull);
        }
        let key = (!self.exempt.trusts(ip.to_canonical())).then(|| AddressKey::of(ip));
        if let Some(key) = key {
            let count = open.by_address.entry(key).or_insert(0);
            if *count >= self.max_per_address {
                return Err(Refusal::AddressFull);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(Slot {
            gate: self.clone(),
            key,
        })
    }
}

/// One admitted connection's place in the counts, given back when its socket closes.
struct Slot {
    gate: Arc<Gate>,
    /// `None`: an exempt address, counted only in the total.
    key: Option<AddressKey>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.gate.open();
        open.total -= 1;
        if let Some(key) = self.key
            && let Entry::Occupied(mut count) = open.by_address.entry(key)
        {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
    }
}

// ----- Deadlines ---------------------------------------------------------------------------------

/// Where one connection is in its life, for its deadlines.
struct Activity {
    phase: Mutex<Phase>,
    /// Told when a deadline may have moved earlier (a request ended, a head began).
    changed: Notify,
}

struct Phase {
    /// Requests whose response has not been handed over whole.
    in_flight: u32,
    /// Since when no request is in flight: the accept, or the end of the last response.
    idle_since: Instant,
    /// Whether a request was served: from then on the idle timeout applies between requests,
    /// before it the header timeout.
    served: bool,
    /// When the first bytes of the next request head arrived.
    head_since: Option<Instant>,
    /// Since when a write waits for the client to read (none of it was taken).
    stalled_since: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase {
                in_flight: 0,
                idle_since: Instant::now(),
                served: false,
                head_since: None,
                stalled_since: None,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection must be closed, unless something happens first; while a request is in
    /// flight, only when its response has stalled.
    fn deadline(&self, rules: &ConnectionRules) -> Option<Instant> {
        let phase = self.phase();
        if phase.in_flight > 0 {
            return phase.stalled_since.map(|since| since + rules.idle_timeout);
        }
        if let Some(since) = phase.head_since {
            return Some(since + rules.header_timeout);
        }
        let wait = if phase.served {
            rules.idle_timeout
        } else {
            rules.header_timeout
        };
        Some(phase.idle_since + wait)
    }

    /// Bytes arrived: with no request in flight, the next head has begun.
    fn read(&self) {
        let mut phase = self.phase();
        if phase.in_flight == 0 && phase.head_since.is_none() {
            phase.head_since = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A write could not go out (the client reads nothing); or, `moved`, it went out.
    fn wrote(&self, moved: bool) {
        let mut phase = self.phase();
        match (moved, phase.stalled_since) {
            (true, Some(_)) => phase.stalled_since = None,
            (false, None) => {
                phase.stalled_since = Some(Instant::now());
                drop(phase);
                self.changed.notify_one();
            }
            _ => {}
        }
    }

    /// A request's head arrived whole.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase();
        phase.in_flight += 1;
        phase.head_since = None;
        InFlight(self.clone())
    }
}

/// A request in flight, until its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.in_flight -= 1;
        if phase.in_flight == 0 {
            phase.idle_since = Instant::now();
            phase.served = true;
            phase.head_since = None;
            drop(phase);
            self.0.changed.notify_one();
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Serves one connection under its deadlines.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    app: Router,
    rules: Arc<ConnectionRules>,
    stopping: CancellationToken,
) {
    let activity = Arc::new(Activity::new());
    let io = ConnIo::new(stream);
    let peer = Peer {
        addr,
        conn: io.conn(),
    };
    let io = Tracked {
        io,
        activity: activity.clone(),
        _slot: slot,
    };
    let service = {
        let activity = activity.clone();
        let body_timeout = rules.body_timeout;
        hyper::service::service_fn(move |request| {
            respond(
                request,
                app.clone(),
                peer.clone(),
                activity.begin(),
                body_timeout,
            )
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The deadlines here replace hyper's own header timeout, which would also count the idle time
    // between kept-alive requests as header time.
    builder.header_read_timeout(None);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopped = false;
    loop {
        let deadline = activity.deadline(&rules);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%addr, %error, "connection ended");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = until(deadline) => {
                if activity.deadline(&rules).is_some_and(|at| at <= Instant::now()) {
                    // An idle or half-sent connection closes at once; a response still being
                    // written gets a moment, then the socket is dropped.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CLOSING_GRACE, conn.as_mut()).await;
                    return;
                }
            }
            () = stopping.cancelled(), if !stopped => {
                stopped = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Answers one request through `app`, its body under the body timeout, with the connection's
/// [`Peer`] as `ConnectInfo`.
async fn respond(
    request: Request<Incoming>,
    app: Router,
    peer: Peer,
    in_flight: InFlight,
    body_timeout: Duration,
) -> Result<Response<Answer>, Infallible> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let late = Arc::new(AtomicBool::new(false));
    let body = if body.is_end_stream() {
        Body::empty()
    } else {
        Body::new(Deadline {
            body,
            timer: Box::pin(tokio::time::sleep(body_timeout)),
            late: late.clone(),
        })
    };
    let response = match app.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = if late.load(Ordering::Relaxed) {
        body_too_slow(body_timeout, &response)
    } else {
        response
    };
    Ok(response.map(|body| Answer {
        body,
        _in_flight: in_flight,
    }))
}

/// The answer to a request whose body did not arrive in time (whatever the handler made of the
/// failed read), keeping the app's CORS headers so a browser can read it; the connection closes.
fn body_too_slow(limit: Duration, answered: &Response<Body>) -> Response<Body> {
    let mut response = ApiError::new(
        ErrorCode::RequestTimeout,
        format!(
            "the request body did not arrive within {} seconds",
            limit.as_secs()
        ),
    )
    .into_response();
    let headers = response.headers_mut();
    for (name, value) in answered.headers() {
        if name.as_str().starts_with("access-control-") {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The error a late request body ends with.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// A request body that must arrive by its timer.
struct Deadline {
    body: Incoming,
    timer: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.late.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that keeps its request in flight until it is done.
struct Answer {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket as hyper sees it: notes when a request head starts arriving and when a
/// write stalls, and holds the connection's place in the counts until the socket closes (after an
/// upgrade too).
struct Tracked {
    io: ConnIo,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl Tracked {
    fn note<T>(&self, polled: Poll<T>) -> Poll<T> {
        self.activity.wrote(polled.is_ready());
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.note(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_per_address: u32, max_connections: usize, exempt: &[&str]) -> Arc<Gate> {
        Arc::new(Gate {
            max_per_address,
            max_connections,
            exempt: TrustedProxies::new(exempt.iter().map(|n| n.parse().unwrap()).collect()),
            open: Mutex::default(),
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_gets_its_cap_and_its_places_back() {
        let gate = gate(2, 100, &[]);
        let a = gate.admit(ip("192.0.2.1")).unwrap();
        let _b = gate.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            gate.admit(ip("192.0.2.1")).err(),
            Some(Refusal::AddressFull)
        );
        // Another address is not affected; the same one as IPv4-mapped IPv6 is the same client.
        assert!(gate.admit(ip("192.0.2.2")).is_ok());
        assert_eq!(
            gate.admit(ip("::ffff:192.0.2.1")).err(),
            Some(Refusal::AddressFull)
        );
        drop(a);
        let _c = gate.admit(ip("192.0.2.1")).unwrap();
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let gate = gate(1, 100, &[]);
        let _a = gate.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            gate.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::AddressFull)
        );
        assert!(gate.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn trusted_proxies_are_exempt_but_count_toward_the_server_cap() {
        let gate = gate(1, 3, &["10.0.0.0/8"]);
        let held: Vec<Slot> = (0..3)
            .map(|_| gate.admit(ip("10.1.2.3")).unwrap())
            .collect();
        assert_eq!(gate.admit(ip("10.1.2.3")).err(), Some(Refusal::ServerFull));
        assert_eq!(gate.admit(ip("192.0.2.1")).err(), Some(Refusal::ServerFull));
        drop(held);
        assert_eq!(gate.open().total, 0);
        assert!(gate.open().by_address.is_empty());
    }

    #[test]
    fn the_server_cap_leaves_descriptors_for_the_rest_of_the_process() {
        assert_eq!(max_connections_for(1024), 768);
        assert_eq!(max_connections_for(256), 192);
        assert_eq!(max_connections_for(1_048_576), 1_048_576 - 256);
    }

    #[test]
    fn deadlines_follow_the_connections_phase() {
        let rules = ConnectionRules {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..ConnectionRules::default()
        };
        let activity = Arc::new(Activity::new());
        let accepted = activity.phase().idle_since;
        // Nothing sent yet: the header timeout from the accept.
        assert_eq!(
            activity.deadline(&rules),
            Some(accepted + rules.header_timeout)
        );
        let request = activity.begin();
        assert_eq!(activity.deadline(&rules), None);
        // Bytes while a request is in flight (its body) start no head.
        activity.read();
        assert!(activity.phase().head_since.is_none());
        drop(request);
        let idle_since = activity.phase().idle_since;
        assert_eq!(
            activity.deadline(&rules),
            Some(idle_since + rules.idle_timeout)
        );
        activity.read();
        let head_since = activity.phase().head_since.unwrap();
        assert_eq!(
            activity.deadline(&rules),
            Some(head_since + rules.header_timeout)
        );
        // In flight, a response the client does not read: the idle timeout from the stall.
        let streaming = activity.begin();
        activity.wrote(true);
        assert_eq!(activity.deadline(&rules), None);
        activity.wrote(false);
        let stalled_since = activity.phase().stalled_since.unwrap();
        assert_eq!(
            activity.deadline(&rules),
            Some(stalled_since + rules.idle_timeout)
        );
        activity.wrote(true);
        assert_eq!(activity.deadline(&rules), None);
        drop(streaming);
    }

    #[tokio::test]
    async fn a_response_the_client_does_not_read_is_cut_after_the_idle_timeout() {
        use axum::routing::get;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // A stream that never ends, like an event stream with a lot to say.
        let app = Router::new().route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![b'.'; 64 * 1024]);
                Body::from_stream(futures::stream::repeat_with(move || {
                    Ok::<_, Infallible>(chunk.clone())
                }))
            }),
        );
        let options = ServeOptions {
            rules: ConnectionRules {
                idle_timeout: Duration::from_secs(1),
                ..ConnectionRules::default()
            },
            max_connections: 16,
            exempt: TrustedProxies::default(),
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            app,
            options,
            stop.clone().cancelled_owned(),
        ));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        client
            .write_all(b"GET /endless HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        // Reading nothing for longer than the idle timeout: the server's writes stall.
        tokio::time::sleep(Duration::from_secs(3)).await;
        // What the server had sent drains, then the stream ends: it gave up on this client.
        let mut buf = vec![0u8; 64 * 1024];
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the endless response was never cut");
        stop.cancel();
        server.await.unwrap();
    }
}
