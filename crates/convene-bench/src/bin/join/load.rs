//! The load: keep-alive HTTP/1 connections of hyper's client, each sending seed 002 join POSTs
//! back to back (the next one when the last is answered, as `wrk` does), every request with a
//! fresh `uid`. Two shapes: a storm (warm-up, then a measured window) and a burst (a fixed number
//! of joins fired as fast as they are answered).
//!
//! All on the caller's runtime (the binary runs a current-thread one, so the load generator takes
//! at most one of the cores it shares with the server). Latencies are kept in a `Vec` per
//! connection and merged at the end; the only shared state is the request counter.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the joins go and how they authenticate.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    host: HeaderValue,
    authorization: HeaderValue,
}

impl Target {
    /// `base` is `http://127.0.0.1:<port>`; the key pair goes as Basic credentials.
    pub fn new(base: &str, path: &'static str, key: &str, secret: &str) -> anyhow::Result<Self> {
        let authority = base.trim_start_matches("http://");
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        Ok(Self {
            addr: authority.parse().context("server address")?,
            path,
            host: HeaderValue::from_str(authority)?,
            authorization: HeaderValue::from_str(&format!("Basic {basic}"))?,
        })
    }
}

/// Which room request `i` joins.
#[derive(Clone, Debug)]
pub enum Rooms {
    One(String),
    /// `room-{i % n}`.
    Spread(u64),
}

impl Rooms {
    fn name(&self, i: u64) -> String {
        match self {
            Rooms::One(name) => name.clone(),
            Rooms::Spread(n) => format!("room-{}", i % n),
        }
    }
}

/// Failed requests by kind (`HTTP 500`, `connection: ...`), each with its count and a sample
/// answer. Never counted as joins.
#[derive(Default, Debug)]
pub struct Errors(BTreeMap<String, (u64, String)>);

impl Errors {
    fn add(&mut self, kind: String, sample: impl FnOnce() -> String) {
        let entry = self.0.entry(kind).or_insert_with(|| (0, sample()));
        entry.0 += 1;
    }

    fn merge(&mut self, other: Errors) {
        for (kind, (count, sample)) in other.0 {
            self.0.entry(kind).or_insert((0, sample)).0 += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().map(|(count, _)| count).sum()
    }

    /// One line per kind: `HTTP 500 x12: {"msg":"Error joining room"}`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.0
            .iter()
            .map(|(kind, (count, sample))| format!("{kind} x{count}: {sample}"))
    }
}

/// One connection's client side; its driver runs as its own task.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(Self { sender })
    }

    /// One join; `Ok` with the status and body of any answer, `Err` when the connection failed.
    async fn join(
        &mut self,
        target: &Target,
        room: &str,
        uid: &str,
    ) -> anyhow::Result<(u16, Bytes)> {
        let body = format!(r#"{{"roomName":"{room}","uid":"{uid}"}}"#);
        let request = Request::builder()
            .method(Method::POST)
            .uri(target.path)
            .header(HOST, target.host.clone())
            .header(AUTHORIZATION, target.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What one answer was.
enum Outcome {
    Joined,
    Failed(String, String),
}

fn judge(result: anyhow::Result<(u16, Bytes)>) -> Outcome {
    match result {
        // A join is a 2xx that hands out a token.
        Ok((status, body))
            if (200..300).contains(&status)
                && body.windows(14).any(|w| w == b"\"access_token\"") =>
        {
            Outcome::Joined
        }
        Ok((status, body)) if (200..300).contains(&status) => Outcome::Failed(
            format!("HTTP {status} without access_token"),
            String::from_utf8_lossy(&body).chars().take(200).collect(),
        ),
        Ok((status, body)) => Outcome::Failed(
            format!("HTTP {status}"),
            String::from_utf8_lossy(&body).chars().take(200).collect(),
        ),
        Err(e) => Outcome::Failed("connection".into(), format!("{e:#}")),
    }
}

/// What a storm or a burst measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Joins answered inside the window (a storm) or in all (a burst).
    pub joins: u64,
    /// Each counted request's latency, sorted.
    pub latencies: Vec<Duration>,
    pub errors: Errors,
    /// The window (a storm) or the first send to the last answer (a burst).
    pub elapsed: Duration,
    /// Joins counted per connection, fewest and most: how evenly the server served them.
    pub per_connection: (u64, u64),
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.joins as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One connection's share, merged into a [`Measured`].
#[derive(Default)]
struct Share {
    joins: u64,
    latencies: Vec<Duration>,
    errors: Errors,
    first_send: Option<Instant>,
    last_answer: Option<Instant>,
}

fn merge(shares: Vec<Share>) -> (Measured, Option<Instant>, Option<Instant>) {
    let mut measured = Measured::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    measured.per_connection = (
        shares.iter().map(|s| s.joins).min().unwrap_or(0),
        shares.iter().map(|s| s.joins).max().unwrap_or(0),
    );
    for share in shares {
        measured.joins += share.joins;
        measured.latencies.extend(share.latencies);
        measured.errors.merge(share.errors);
        first = match (first, share.first_send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = last.max(share.last_answer);
    }
    measured.latencies.sort_unstable();
    (measured, first, last)
}

/// Opens `n` connections (all of them before any request is sent).
pub async fn open_all(target: &Target, n: usize) -> anyhow::Result<Vec<Connection>> {
    let mut connections = Vec::with_capacity(n);
    for _ in 0..n {
        connections.push(Connection::open(target).await?);
    }
    Ok(connections)
}

/// A storm: each connection sends joins back to back from now until `start + window` (what comes
/// before `start` is the warm-up). Joins answered inside the window count for the rate. Every
/// request answered at or after `start` gives a latency, or an error if it failed: one sent
/// during the warm-up and answered late counts with its whole wait, and the ones still in flight
/// at the end are waited for, so a server that leaves some connections waiting cannot hide them
/// on either edge. `uid`s are `{prefix}{i}`.
pub async fn storm(
    open: Vec<Connection>,
    target: &Target,
    rooms: Rooms,
    prefix: &str,
    start: Instant,
    window: Duration,
) -> anyhow::Result<Measured> {
    let next = Arc::new(AtomicU64::new(0));
    let end = start + window;
    let mut tasks = Vec::with_capacity(open.len());
    for mut connection in open {
        let (target, rooms, next, prefix) = (
            target.clone(),
            rooms.clone(),
            next.clone(),
            prefix.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut share = Share::default();
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let room = rooms.name(i);
                let uid = format!("{prefix}{i}");
                let sent = Instant::now();
                let result = connection.join(&target, &room, &uid).await;
                let answered = Instant::now();
                let broken = result.is_err();
                match judge(result) {
                    Outcome::Joined if answered >= start => {
                        if answered < end {
                            share.joins += 1;
                        }
                        share.latencies.push(answered - sent);
                    }
                    Outcome::Failed(kind, sample) if answered >= start => {
                        share.errors.add(kind, || sample);
                    }
                    Outcome::Joined | Outcome::Failed(..) => {}
                }
                if broken {
                    // The server closed the connection: open another, after a pause so that a
                    // dead server is not hammered.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Ok(fresh) = Connection::open(&target).await {
                        connection = fresh;
                    }
                }
            }
            share
        }));
    }
    let mut shares = Vec::with_capacity(tasks.len());
    for task in tasks {
        shares.push(task.await?);
    }
    let (mut measured, _, _) = merge(shares);
    measured.elapsed = window;
    Ok(measured)
}

/// A burst: `joins` joins into `room`, fired by the open connections as fast as they are
/// answered. `elapsed` is the time from the first send to the last answer.
pub async fn burst(
    open: Vec<Connection>,
    target: &Target,
    joins: u64,
    room: &str,
) -> anyhow::Result<Measured> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(open.len());
    for mut connection in open {
        let (target, next, room) = (target.clone(), next.clone(), room.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut share = Share::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= joins {
                    break;
                }
                let uid = format!("b{i}");
                let sent = Instant::now();
                share.first_send.get_or_insert(sent);
                let result = connection.join(&target, &room, &uid).await;
                let answered = Instant::now();
                share.last_answer = Some(answered);
                let broken = result.is_err();
                match judge(result) {
                    Outcome::Joined => {
                        share.joins += 1;
                        share.latencies.push(answered - sent);
                    }
                    Outcome::Failed(kind, sample) => share.errors.add(kind, || sample),
                }
                if broken {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Ok(fresh) = Connection::open(&target).await {
                        connection = fresh;
                    }
                }
            }
            share
        }));
    }
    let mut shares = Vec::with_capacity(tasks.len());
    for task in tasks {
        shares.push(task.await?);
    }
    let (mut measured, first, last) = merge(shares);
    if let (Some(first), Some(last)) = (first, last) {
        measured.elapsed = last - first;
    }
    Ok(measured)
}
