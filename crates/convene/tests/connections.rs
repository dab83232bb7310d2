//! Every connection has deadlines and a per-address cap (docs/security-reliability.md, "Load and
//! faults"; slowloris): a silent, half-sent or trickled request head, an idle kept-alive
//! connection and a slow body are cut at their timeouts; a thousand slowloris sockets do not slow
//! `/healthz` and are gone after the header timeout; one address is capped at accept, a trusted
//! proxy is not; near the descriptor limit new connections are closed at once, not left hanging;
//! and the event streams and the signalling WebSocket outlive every timeout.
//!
//! Timeouts are set to 1-3 s so the tests are quick. A socket counts as closed when a read
//! returns EOF or an error; the bounds on how long that may take are generous (they catch a
//! socket that is never closed, they do not time the server).

#[path = "common/binary.rs"]
mod binary;
mod common;
#[path = "common/stream.rs"]
mod stream;

use std::net::SocketAddr;
use std::time::Duration;

use common::{KEY, SECRET, StoreKind, TestApp};
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stream::{Auth, sse_connect, ws_connect};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Slack on top of a timeout before a socket still open counts as never closed.
const SLACK: Duration = Duration::from_secs(5);

async fn start(env: &[(&str, &str)]) -> TestApp {
    TestApp::start_with(StoreKind::Sqlite, env).await.unwrap()
}

fn addr_of(app: &TestApp) -> SocketAddr {
    app.base.trim_start_matches("http://").parse().unwrap()
}

/// A connection to the server from a chosen loopback address (127.0.0.0/8 is all local on Linux),
/// so tests can be several clients.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset); `Some(what was read)` when that
/// happens within `limit`, `None` while it is still open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| read)
}

/// One request on a raw connection; returns the status and the body (the answer must carry a
/// Content-Length, as convene's JSON answers do).
async fn request(stream: &mut TcpStream, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("no status line: {status_line:?}"))
        .parse()
        .unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.unwrap();
    (status, body)
}

async fn healthz(stream: &mut TcpStream) -> u16 {
    request(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: convene\r\n\r\n",
        b"",
    )
    .await
    .0
}

/// A request head cut short: what a slowloris client sends first.
const HALF_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: convene\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_half_sent_or_trickled_head_is_closed_at_the_header_timeout() {
    let header = Duration::from_secs(1);
    let app = start(&[
        ("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("CONVENE_HTTP_IDLE_TIMEOUT_SECONDS", "60"),
    ])
    .await;
    let addr = addr_of(&app);
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(HALF_HEAD).await.unwrap();
    // A header line every 200 ms: the head keeps coming, but not whole within the timeout.
    let trickled = TcpStream::connect(addr).await.unwrap();
    let (mut trickled_read, mut trickled_write) = trickled.into_split();
    let trickler = tokio::spawn(async move {
        trickled_write.write_all(HALF_HEAD).await?;
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trickled_write
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });

    assert!(
        closed_within(&mut silent, header + SLACK).await.is_some(),
        "a connection that sends nothing is closed"
    );
    assert!(
        closed_within(&mut half, header + SLACK).await.is_some(),
        "a half-sent head is closed"
    );
    let mut buf = [0u8; 64];
    let trickled_end = tokio::time::timeout(header + SLACK, trickled_read.read(&mut buf)).await;
    assert!(
        matches!(trickled_end, Ok(Ok(0) | Err(_))),
        "a trickled head is closed: {trickled_end:?}"
    );
    assert!(started.elapsed() >= header, "not before the header timeout");
    trickler.abort();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout_not_the_header_one() {
    let idle = Duration::from_secs(3);
    let app = start(&[
        ("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("CONVENE_HTTP_IDLE_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    let mut conn = TcpStream::connect(addr_of(&app)).await.unwrap();
    assert_eq!(healthz(&mut conn).await, 200);
    // Idle longer than the header timeout, within the idle one: kept alive, and served again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(healthz(&mut conn).await, 200);
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut conn, idle + SLACK).await.is_some(),
        "an idle kept-alive connection is closed"
    );
    assert!(
        idle_from.elapsed() >= idle - Duration::from_millis(500),
        "not before the idle timeout"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_a_408_in_the_native_shape_and_the_connection_closes() {
    use base64::Engine;
    let body_timeout = Duration::from_secs(1);
    let app = start(&[("CONVENE_HTTP_BODY_TIMEOUT_SECONDS", "1")]).await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"));
    let body = br#"{"name": "a meeting whose body comes one byte at a time"}"#;
    let head = format!(
        "POST /v1/meetings HTTP/1.1\r\nHost: convene\r\nAuthorization: Basic {basic}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let conn = TcpStream::connect(addr_of(&app)).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    // One byte every 100 ms: always something arriving, the whole never within the timeout.
    let trickler = tokio::spawn(async move {
        for byte in body {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
        write
    });
    let mut answer = Vec::new();
    tokio::time::timeout(body_timeout + SLACK, read.read_to_end(&mut answer))
        .await
        .expect("answered and closed within the body timeout")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "request_timeout", "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1 seconds")
    );
    trickler.abort();
    // Nothing was created from the cut body.
    let (status, list) = app.admin("GET", "/v1/meetings", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["meetings"].as_array().map(Vec::len), Some(0), "{list}");
    app.stop().await;
}

/// The host enters and joins a new meeting; returns the meeting id and the host's token.
async fn live_meeting(app: &TestApp) -> (String, String) {
    let meeting = app
        .create_meeting(json!({"name": "Quiet", "policy": "open"}))
        .await;
    let id = meeting["meeting_id"].as_str().unwrap().to_owned();
    let host = app
        .enter(
            &meeting,
            meeting["credentials"]["host"].as_str().unwrap(),
            "host",
        )
        .await;
    let joined = app.join(&id, host["token"].as_str().unwrap()).await;
    (id, joined["access_token"].as_str().unwrap().to_owned())
}

/// Reads signalling frames until `wanted` matches one; panics at the deadline or the end.
async fn signal_until<S>(
    rtc: &mut S,
    mut wanted: impl FnMut(&livekit_protocol::signal_response::Message) -> bool,
) where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = Instant::now() + stream::DEADLINE;
    loop {
        let frame = tokio::time::timeout_at(deadline, rtc.next())
            .await
            .expect("a signalling frame within the deadline")
            .expect("the signalling WebSocket is open")
            .expect("a frame");
        if let Message::Binary(bytes) = frame
            && let Some(message) = livekit_protocol::SignalResponse::decode(bytes.as_ref())
                .unwrap()
                .message
            && wanted(&message)
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_and_signalling_stay_open_past_every_timeout() {
    let app = start(&[
        ("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "1"),
        ("CONVENE_HTTP_IDLE_TIMEOUT_SECONDS", "1"),
        ("CONVENE_HTTP_BODY_TIMEOUT_SECONDS", "1"),
    ])
    .await;
    let (id, host_token) = live_meeting(&app).await;
    let mut ws = ws_connect(&app, &id, Auth::Admin, None).await.unwrap();
    ws.read_until(|r| r.iter().any(|e| e["type"] == "snapshot"))
        .await;
    let mut sse = sse_connect(&app, &id, Auth::Admin, None, None)
        .await
        .unwrap();
    sse.read_until(|r| r.iter().any(|(_, e, _)| e == "snapshot"))
        .await;
    let rtc_url = format!("ws://{}/rtc?access_token={host_token}", addr_of(&app));
    let (mut rtc, _) = tokio_tungstenite::connect_async(rtc_url).await.unwrap();
    signal_until(&mut rtc, |m| {
        matches!(m, livekit_protocol::signal_response::Message::Join(_))
    })
    .await;

    // Quiet for longer than every HTTP timeout (and shorter than the streams' own keep-alives).
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (status, said) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/chat"),
            &host_token,
            Some(json!({"text": "still there?"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{said}");
    let seq = said["seq"].as_u64().unwrap();
    ws.read_through(seq).await;
    sse.read_until(|r| {
        r.iter()
            .any(|(_, _, d)| d["seq"].as_u64() == Some(seq) && d["type"] != "snapshot")
    })
    .await;
    let ping = livekit_protocol::SignalRequest {
        message: Some(livekit_protocol::signal_request::Message::Ping(42)),
    };
    rtc.send(Message::Binary(ping.encode_to_vec().into()))
        .await
        .unwrap();
    signal_until(&mut rtc, |m| {
        matches!(m, livekit_protocol::signal_response::Message::Pong(42))
    })
    .await;
    drop(rtc);
    app.stop().await;
}

/// The median of `n` `/healthz` round trips, each on a new connection from 127.0.0.1.
async fn healthz_median(addr: SocketAddr, n: usize) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let mut conn = connect_from("127.0.0.1", addr).await;
        assert_eq!(healthz(&mut conn).await, 200);
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_sockets_do_not_slow_healthz_and_are_gone_after_the_header_timeout() {
    let header = Duration::from_secs(2);
    let app = start(&[("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "2")]).await;
    let addr = addr_of(&app);
    let unloaded = healthz_median(addr, 21).await;

    // 1,000 sockets from four addresses (250 each: under the default per-address cap), each
    // with half a head, then a header line every half second.
    let opened = Instant::now();
    let mut readers = Vec::new();
    let mut tricklers = Vec::new();
    for i in 0..1000 {
        let from = format!("127.0.0.{}", 2 + i % 4);
        let (read, mut write) = connect_from(&from, addr).await.into_split();
        readers.push(read);
        tricklers.push(tokio::spawn(async move {
            write.write_all(HALF_HEAD).await?;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                write.write_all(b"X-Slow: 1\r\n").await?;
            }
            #[allow(unreachable_code)]
            Ok::<_, std::io::Error>(())
        }));
    }
    let loaded = healthz_median(addr, 21).await;
    let ratio = loaded.as_secs_f64() / unloaded.as_secs_f64();
    println!(
        "healthz median: unloaded {unloaded:?}, under 1,000 slowloris sockets {loaded:?} ({ratio:.1}x)"
    );
    assert!(
        ratio < 20.0,
        "healthz under load {loaded:?} against {unloaded:?} unloaded"
    );

    // Every one of them is closed after the header timeout.
    let ends = futures::future::join_all(readers.iter_mut().map(|read| async move {
        let mut buf = [0u8; 64];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    }));
    tokio::time::timeout(header + SLACK + SLACK, ends)
        .await
        .expect("every slowloris socket reads EOF after the header timeout");
    assert!(opened.elapsed() >= header);
    for trickler in tricklers {
        trickler.abort();
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_its_cap_and_the_next_connection_is_closed_at_accept() {
    let app = start(&[
        ("CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "3"),
        ("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "60"),
    ])
    .await;
    let addr = addr_of(&app);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect_from("127.0.0.1", addr).await;
        assert_eq!(healthz(&mut conn).await, 200);
        held.push(conn);
    }
    // The fourth: closed at once (well before any timeout), nothing served.
    let mut fourth = connect_from("127.0.0.1", addr).await;
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: convene\r\n\r\n")
        .await;
    let read = closed_within(&mut fourth, SLACK)
        .await
        .expect("the connection over the cap is closed at once");
    assert!(read.is_empty(), "nothing is answered over the cap");
    // Another address is not affected.
    let mut other = connect_from("127.0.0.2", addr).await;
    assert_eq!(healthz(&mut other).await, 200);
    // A closed connection gives its place back.
    drop(held.pop());
    let deadline = Instant::now() + SLACK;
    loop {
        let mut conn = connect_from("127.0.0.1", addr).await;
        let _ = conn
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: convene\r\n\r\n")
            .await;
        let mut first = [0u8; 12];
        if conn.read_exact(&mut first).await.is_ok() {
            assert_eq!(&first, b"HTTP/1.1 200");
            break;
        }
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_exempt_from_the_per_address_cap() {
    let app = start(&[
        ("CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "2"),
        ("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "60"),
        ("CONVENE_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let addr = addr_of(&app);
    let mut proxied = Vec::new();
    for _ in 0..6 {
        let mut conn = connect_from("127.0.0.1", addr).await;
        assert_eq!(healthz(&mut conn).await, 200, "the proxy is not capped");
        proxied.push(conn);
    }
    let mut direct = Vec::new();
    for _ in 0..2 {
        let mut conn = connect_from("127.0.0.2", addr).await;
        assert_eq!(healthz(&mut conn).await, 200);
        direct.push(conn);
    }
    let mut third = connect_from("127.0.0.2", addr).await;
    assert!(
        closed_within(&mut third, SLACK).await.is_some(),
        "any other address is"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one_at_start() {
    use rlimit::Resource;
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();
    // Lowered first where it is at the hard limit already, so the test shows the raise whatever
    // limits it runs under (by one: tests beside it in the same process keep their sockets).
    if soft == hard {
        rlimit::setrlimit(Resource::NOFILE, hard - 1, hard).unwrap();
    }
    let app = start(&[]).await;
    assert_eq!(rlimit::getrlimit(Resource::NOFILE).unwrap(), (hard, hard));
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers[0], numbers[1], "{line}");
    app.stop().await;
}

/// The real binary under `ulimit -n <limit>`, on port 0; ended when dropped.
struct Child {
    _process: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Child {
    async fn start(limit: u32, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" serve"))
            .arg(binary::convene_bin());
        binary::serving(&mut command, dir.path(), KEY, SECRET).envs(env.iter().copied());
        let mut process = command.spawn().expect("the convene binary starts");
        let addr = binary::listening(&mut process).await;
        Self {
            _process: process,
            addr,
            _dir: dir,
        }
    }
}

/// How many of `conns` the server has closed within `within` (the others it holds).
async fn count_closed(conns: &mut [TcpStream], within: Duration) -> usize {
    let closed = futures::future::join_all(
        conns
            .iter_mut()
            .map(|conn| async move { closed_within(conn, within).await.is_some() }),
    )
    .await;
    closed.into_iter().filter(|c| *c).count()
}

/// `n` half-sent requests from one address.
async fn half_sent(from: &str, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = connect_from(from, addr).await;
        // The server may have closed it already (over a cap): that is what is counted later.
        let _ = conn.write_all(HALF_HEAD).await;
        conns.push(conn);
    }
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_ulimit_1024_one_client_cannot_starve_others_and_a_full_server_refuses_at_once() {
    // This test's own sockets: some 1,500.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let child = Child::start(1024, &[("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "60")]).await;
    let addr = child.addr;

    // The finding: one client holding 1,100 half-sent requests. It keeps 512 (the default cap
    // per address); the rest are closed at once; others are served.
    let mut attacker = half_sent("127.0.0.2", addr, 1100).await;
    assert_eq!(
        count_closed(&mut attacker, Duration::from_secs(2)).await,
        1100 - 512
    );
    let mut other = connect_from("127.0.0.3", addr).await;
    let answered = tokio::time::timeout(SLACK, healthz(&mut other)).await;
    assert_eq!(answered.ok(), Some(200), "another client is served");

    // Near the descriptor limit (768 connections under 1,024 descriptors): more connections,
    // from more addresses, are closed at once; a new client is refused at once, not left hanging.
    let mut second = half_sent("127.0.0.4", addr, 300).await;
    let refused = count_closed(&mut second, Duration::from_secs(2)).await;
    assert!(refused > 0 && refused < 300, "{refused} of 300 refused");
    let mut late = connect_from("127.0.0.5", addr).await;
    let _ = late
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: convene\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut late, SLACK).await.is_some(),
        "a connection over the server's cap is closed at once"
    );

    // Once connections end, new clients are served again.
    drop(second);
    let deadline = Instant::now() + SLACK;
    loop {
        let mut conn = connect_from("127.0.0.5", addr).await;
        let _ = conn
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: convene\r\n\r\n")
            .await;
        let mut first = [0u8; 12];
        if conn.read_exact(&mut first).await.is_ok() {
            assert_eq!(&first, b"HTTP/1.1 200");
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(attacker);
    drop(child);
}
