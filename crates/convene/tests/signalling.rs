//! Signalling and reconnects are budgeted (docs/security-reliability.md, "every stream of requests
//! a client can send cheaply"): the real server on SQLite, driven at `/rtc` by a raw WebSocket
//! client that speaks LiveKit's protobuf signalling. A connect loop is refused beyond the
//! identity's budget and writes a bounded log; a reconnect within the grace writes nothing, a
//! departure is written once after it (and at shutdown); a ping flood closes the flooding
//! connections and leaves others' joins as fast as before.

mod common;

use std::time::{Duration, Instant};

use common::{StoreKind, TestApp};
use futures::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open meeting (policy `open`) and a media access token per identity.
struct Room {
    meeting_id: String,
    meeting: Value,
}

impl Room {
    async fn open(app: &TestApp) -> Room {
        let meeting = app
            .create_meeting(json!({"name": "Signalling", "policy": "open"}))
            .await;
        Room {
            meeting_id: meeting["meeting_id"].as_str().unwrap().to_owned(),
            meeting,
        }
    }

    /// Enters as `identity` and joins: the media access token.
    async fn token(&self, app: &TestApp, identity: &str) -> String {
        let pin = self.meeting["credentials"]["participant"].as_str().unwrap();
        let entered = app.enter(&self.meeting, pin, identity).await;
        let joined = app
            .join(&self.meeting_id, entered["token"].as_str().unwrap())
            .await;
        joined["access_token"].as_str().unwrap().to_owned()
    }

    /// The meeting's media events (`type identity`), in log order.
    async fn media_events(&self, app: &TestApp) -> Vec<String> {
        let (status, page) = app
            .admin(
                "GET",
                &format!("/v1/meetings/{}/events?after=0&limit=1000", self.meeting_id),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_str().unwrap().starts_with("media."))
            .map(|e| format!("{} {}", e["type"].as_str().unwrap(), e["data"]["identity"]))
            .collect()
    }

    /// Polls the log until `event` (`type "identity"`) is in it; the media events then.
    async fn wait_for(&self, app: &TestApp, event: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.media_events(app).await;
            if events.iter().any(|e| e == event) {
                return events;
            }
            assert!(Instant::now() < deadline, "no {event} in {events:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn event(kind: &str, identity: &str) -> String {
    format!("{kind} \"{identity}\"")
}

/// A refused connect: the HTTP status, its `Retry-After` and body.
#[derive(Debug)]
struct Refused {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// Opens `/rtc` with `token` and reads the JoinResponse.
async fn connect(app: &TestApp, token: &str) -> Result<(Socket, proto::JoinResponse), Refused> {
    let url = format!(
        "{}/rtc?access_token={token}&protocol=16&auto_subscribe=1",
        app.base.replacen("http", "ws", 1)
    );
    let mut socket = match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            return Err(Refused {
                status: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            });
        }
        Err(e) => panic!("cannot connect to /rtc: {e}"),
    };
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a JoinResponse within 10 s")
            .expect("the socket stays open")
            .expect("a frame");
        if let Message::Binary(bytes) = frame {
            let response = proto::SignalResponse::decode(bytes.as_ref()).unwrap();
            match response.message {
                Some(proto::signal_response::Message::Join(join)) => return Ok((socket, join)),
                other => panic!("expected a JoinResponse first, got {other:?}"),
            }
        }
    }
}

/// Closes the WebSocket and waits until the server has closed its side.
async fn close(mut socket: Socket) {
    let _ = socket.close(None).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {}
}

fn ping(n: i64) -> Message {
    let request = proto::SignalRequest {
        message: Some(proto::signal_request::Message::Ping(n)),
    };
    Message::Binary(request.encode_to_vec().into())
}

/// The connect budget of an identity in a room: 10 at once, then one every 6 s.
const BURST: u32 = convene_sfu::JOIN_RATE.burst;
const REFILL: Duration = convene_sfu::JOIN_RATE.period;

/// A connect/disconnect loop of one identity, 200 cycles as fast as it goes: beyond the burst
/// each connect is refused before the upgrade (429, `Retry-After`, a message; `/rtc/validate`
/// says the same without spending), and the loop writes one connection and one departure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_loop_is_refused_beyond_the_budget_and_writes_a_bounded_log() {
    let app = TestApp::start(StoreKind::Sqlite).await.unwrap();
    let room = Room::open(&app).await;
    let token = room.token(&app, "looper").await;
    let grace = Duration::from_secs(5);

    let started = Instant::now();
    let (mut accepted, mut refused) = (0u32, Vec::new());
    for _ in 0..200 {
        match connect(&app, &token).await {
            Ok((socket, join)) => {
                assert_eq!(join.participant.unwrap().identity, "looper");
                accepted += 1;
                close(socket).await;
            }
            Err(refusal) => refused.push(refusal),
        }
    }
    let elapsed = started.elapsed();
    eprintln!("200 cycles in {elapsed:?}: {accepted} accepted");
    let refills = (elapsed.as_secs_f64() / REFILL.as_secs_f64()).ceil() as u32;
    assert!(
        (BURST..=BURST + refills).contains(&accepted),
        "{accepted} connects accepted in {elapsed:?}"
    );
    assert_eq!(refused.len() as u32, 200 - accepted);
    let refusal = &refused[0];
    assert_eq!(refusal.status, 429, "{refusal:?}");
    assert!(
        refusal
            .body
            .starts_with("too many connections for this identity in this room"),
        "{refusal:?}"
    );
    let retry_after: u64 = refusal.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((1..=REFILL.as_secs()).contains(&retry_after), "{refusal:?}");

    // `/rtc/validate`, where clients ask why, gives the same answer, and spends nothing.
    let validate = format!("{}/rtc/validate?access_token={token}", app.base);
    for _ in 0..3 {
        let answer = app.client.get(&validate).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(answer.headers().contains_key("retry-after"));
        assert!(
            answer
                .text()
                .await
                .unwrap()
                .starts_with("too many connections")
        );
    }
    // Another identity in the same room has its own budget.
    let other = room.token(&app, "other").await;
    let (socket, _) = connect(&app, &other)
        .await
        .expect("another identity connects");
    close(socket).await;

    // The loop wrote one connection and, once the grace ended, one departure.
    let events = room
        .wait_for(&app, &event("media.disconnected", "looper"))
        .await;
    let looper: Vec<&String> = events.iter().filter(|e| e.contains("looper")).collect();
    if elapsed < grace {
        assert_eq!(
            looper,
            [
                &event("media.connected", "looper"),
                &event("media.disconnected", "looper")
            ]
        );
    } else {
        // A slow machine: each connect after a gap longer than the grace writes a pair.
        assert!(looper.len() <= 2 * accepted as usize, "{looper:?}");
    }
    app.stop().await;
}

/// A reconnect within the grace writes no event; a departure without return is written once,
/// when the grace has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_within_the_grace_writes_nothing_and_a_departure_is_written_once_after_it() {
    let grace = Duration::from_millis(2000);
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[("CONVENE_RTC_RECONNECT_GRACE_MS", "2000")],
    )
    .await
    .unwrap();
    let room = Room::open(&app).await;
    let ann = room.token(&app, "ann").await;
    let marker = room.token(&app, "marker").await;

    let (socket, _) = connect(&app, &ann).await.unwrap();
    room.wait_for(&app, &event("media.connected", "ann")).await;
    // Gone and back, twice: once closing first, once by a second connection that replaces the
    // first (as a client that lost its network does).
    close(socket).await;
    let (first, _) = connect(&app, &ann).await.unwrap();
    let (second, _) = connect(&app, &ann).await.unwrap();
    drop(first);
    // The marker leaves after ann came back: when its departure is written, ann's would have
    // been too (the same grace, started earlier).
    let (socket, _) = connect(&app, &marker).await.unwrap();
    close(socket).await;
    let events = room
        .wait_for(&app, &event("media.disconnected", "marker"))
        .await;
    assert_eq!(
        events,
        [
            event("media.connected", "ann"),
            event("media.connected", "marker"),
            event("media.disconnected", "marker"),
        ]
    );

    // Now ann leaves for good: written once, not before the grace has ended.
    let left = Instant::now();
    close(second).await;
    let events = room
        .wait_for(&app, &event("media.disconnected", "ann"))
        .await;
    assert!(
        left.elapsed() >= grace,
        "written after {:?}",
        left.elapsed()
    );
    assert_eq!(
        events,
        [
            event("media.connected", "ann"),
            event("media.connected", "marker"),
            event("media.disconnected", "marker"),
            event("media.disconnected", "ann"),
        ]
    );
    app.stop().await;
}

/// Stopping the server writes the departures still in their grace: after a restart nobody is
/// shown connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn departures_in_their_grace_are_written_at_shutdown() {
    let mut app = TestApp::start_with(
        StoreKind::Sqlite,
        &[("CONVENE_RTC_RECONNECT_GRACE_MS", "60000")],
    )
    .await
    .unwrap();
    let room = Room::open(&app).await;
    let ann = room.token(&app, "ann").await;
    let bob = room.token(&app, "bob").await;
    let (socket, _) = connect(&app, &ann).await.unwrap();
    let (still_here, _) = connect(&app, &bob).await.unwrap();
    room.wait_for(&app, &event("media.connected", "bob")).await;
    close(socket).await;
    app.restart().await;
    drop(still_here);
    let events = room.media_events(&app).await;
    assert_eq!(
        events,
        [
            event("media.connected", "ann"),
            event("media.connected", "bob"),
            event("media.disconnected", "ann"),
            event("media.disconnected", "bob"),
        ]
    );
    let (status, participants) = app
        .admin(
            "GET",
            &format!("/v1/meetings/{}/participants", room.meeting_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{participants}");
    let connected: Vec<&Value> = participants["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["media_connected"] == true)
        .collect();
    assert!(connected.is_empty(), "{connected:?}");
    app.stop().await;
}

/// Time from opening `/rtc` to the JoinResponse, for a fresh identity each time: the median of
/// `count` joins.
async fn join_time(app: &TestApp, room: &Room, prefix: &str, count: usize) -> Duration {
    let mut times = Vec::new();
    for i in 0..count {
        let token = room.token(app, &format!("{prefix}-{i}")).await;
        let started = Instant::now();
        let (socket, _) = connect(app, &token)
            .await
            .expect("a fresh identity connects");
        times.push(started.elapsed());
        close(socket).await;
    }
    times.sort();
    times[count / 2]
}

/// How one flooding connection ended.
#[derive(Debug, Default)]
struct Flood {
    pings: u64,
    leave: Option<proto::LeaveRequest>,
    close: Option<(CloseCode, String)>,
}

/// Sends pings on `socket` as fast as it can while reading everything the server sends, until
/// the server closes the connection or `until` passes.
async fn flood_one(socket: Socket, until: Instant) -> Flood {
    let (mut sink, mut stream) = socket.split();
    let mut reader = tokio::spawn(async move {
        let mut outcome = Flood::default();
        while let Some(Ok(frame)) = stream.next().await {
            match frame {
                Message::Binary(bytes) => {
                    if let Ok(proto::SignalResponse {
                        message: Some(proto::signal_response::Message::Leave(leave)),
                    }) = proto::SignalResponse::decode(bytes.as_ref())
                    {
                        outcome.leave = Some(leave);
                    }
                }
                Message::Close(Some(frame)) => {
                    outcome.close = Some((frame.code, frame.reason.to_string()));
                    break;
                }
                Message::Close(None) => break,
                _ => {}
            }
        }
        outcome
    });
    let pings = std::sync::atomic::AtomicU64::new(0);
    let send = async {
        // In batches, so the flood is as dense as a client can make it.
        while Instant::now() < until {
            for _ in 0..64 {
                let n = pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if sink.feed(ping(n as i64)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    };
    let outcome = tokio::select! {
        outcome = &mut reader => outcome.unwrap(),
        () = send => match tokio::time::timeout(Duration::from_secs(5), &mut reader).await {
            Ok(outcome) => outcome.unwrap(),
            Err(_) => Flood::default(), // still open: no close seen
        },
    };
    Flood {
        pings: pings.into_inner(),
        ..outcome
    }
}

/// An attacker's loop: connects as `identity` and floods, again each time it is closed, until
/// it is refused or `until` passes. How each connection ended, and whether it was refused.
async fn flood(app: &TestApp, token: &str, until: Instant) -> (Vec<Flood>, bool) {
    let mut floods = Vec::new();
    while Instant::now() < until {
        match connect(app, token).await {
            Ok((socket, _)) => floods.push(flood_one(socket, until).await),
            Err(refusal) => {
                assert_eq!(refusal.status, 429, "{refusal:?}");
                return (floods, true);
            }
        }
    }
    (floods, false)
}

/// Three identities flood pings, each reconnecting whenever it is closed: every flooding
/// connection is sent a LeaveRequest and closed with a reason, each identity is refused once its
/// connect budget is spent, and meanwhile a fresh participant's join (the median of 9) takes
/// under 5 times what it takes on an idle server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_closes_the_flooding_connections_and_does_not_slow_others_joins() {
    let app = std::sync::Arc::new(TestApp::start(StoreKind::Sqlite).await.unwrap());
    let room = Room::open(&app).await;
    let idle = join_time(&app, &room, "idle", 9).await;

    let until = Instant::now() + Duration::from_secs(10);
    let mut flooders = Vec::new();
    for i in 0..3 {
        let token = room.token(&app, &format!("flooder-{i}")).await;
        let app = app.clone();
        flooders.push(tokio::spawn(
            async move { flood(&app, &token, until).await },
        ));
    }
    let loaded = join_time(&app, &room, "loaded", 9).await;
    let mut flooded = Vec::new();
    for flooder in flooders {
        flooded.push(flooder.await.unwrap());
    }
    eprintln!(
        "join time idle {idle:?}, under the flood {loaded:?}; pings sent per connection {:?}",
        flooded
            .iter()
            .map(|(floods, _)| floods.iter().map(|o| o.pings).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    );
    let mut outcomes = Vec::new();
    for (floods, refused) in flooded {
        assert!(refused, "the flooder was never refused: {floods:?}");
        assert!(
            (1..=BURST as usize + 2).contains(&floods.len()),
            "{} connections",
            floods.len()
        );
        outcomes.extend(floods);
    }
    for outcome in &outcomes {
        let leave = outcome
            .leave
            .as_ref()
            .unwrap_or_else(|| panic!("no LeaveRequest before the close: {outcome:?}"));
        assert_eq!(
            leave.action,
            proto::leave_request::Action::Disconnect as i32,
            "{outcome:?}"
        );
        assert_eq!(
            outcome.close,
            Some((
                CloseCode::Policy,
                "signalling request budget exceeded".to_owned()
            )),
            "{outcome:?}"
        );
    }
    // An idle join under 10 ms counts as 10 ms: a busy test machine's scheduling noise is a few
    // milliseconds, while the flood this guards against made joins take 0.3-1.1 s.
    assert!(
        loaded < idle.max(Duration::from_millis(10)) * 5,
        "a join took {loaded:?} under the flood against {idle:?} idle"
    );
    let Ok(app) = std::sync::Arc::try_unwrap(app) else {
        panic!("the flooders are done");
    };
    app.stop().await;
}

/// With `CONVENE_TURN_*` set, every JoinResponse carries the TURN servers and a credential for
/// that identity expiring TTL after the join (coturn's `use-auth-secret` rule, checked against
/// coturn itself in `tests/interop/sfu/test_turn.py`); without, none.
#[tokio::test]
async fn the_join_response_hands_out_the_configured_turn_servers() {
    const TURN_SECRET: &str = "turn-secret-for-the-signalling-test";
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[
            (
                "CONVENE_TURN_URLS",
                "turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp",
            ),
            ("CONVENE_TURN_SECRET", TURN_SECRET),
            ("CONVENE_TURN_TTL_SECONDS", "600"),
        ],
    )
    .await
    .unwrap();
    let room = Room::open(&app).await;
    let token = room.token(&app, "ann").await;
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = unix();
    let (socket, join) = connect(&app, &token).await.unwrap();
    let after = unix();
    close(socket).await;
    assert_eq!(join.ice_servers.len(), 1, "{:?}", join.ice_servers);
    let server = &join.ice_servers[0];
    assert_eq!(
        server.urls,
        vec![
            "turn:turn.example.com:3478?transport=udp",
            "turns:turn.example.com:443?transport=tcp"
        ]
    );
    let (expiry, identity) = server.username.split_once(':').unwrap();
    assert_eq!(identity, "ann");
    let expiry: u64 = expiry.parse().unwrap();
    assert!((before + 600..=after + 600).contains(&expiry), "{expiry}");
    let secret = convene_sfu::TurnSecret::parse(TURN_SECRET).unwrap();
    assert_eq!(
        server.credential,
        convene_sfu::turn::credential(&secret, "ann", expiry).password
    );

    let plain = TestApp::start(StoreKind::Sqlite).await.unwrap();
    let room = Room::open(&plain).await;
    let token = room.token(&plain, "bob").await;
    let (socket, join) = connect(&plain, &token).await.unwrap();
    close(socket).await;
    assert!(join.ice_servers.is_empty(), "{:?}", join.ice_servers);
}
