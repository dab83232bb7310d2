//! The realtime event channel over the real server: SSE and WebSocket streams of a meeting's log,
//! with snapshots, replay without gap or duplicate, per-role filtering, slow-consumer drops, and
//! bad input refused before or after the upgrade (docs/security-reliability.md, "Load and faults").

mod common;
#[path = "common/stream.rs"]
mod stream;

use common::{StoreKind, TestApp, assert_contiguous, chat, id_of, last_seq, pin, token};
use reqwest::StatusCode;
use serde_json::{Value, json};
use stream::{
    Auth, End, SseClient, WsClient, close_code, sse_connect, ws_connect, ws_connect_with,
};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A live meeting with a joined host; returns the meeting and the host's access token.
async fn live_meeting(app: &TestApp, policy: &str) -> (Value, String) {
    let meeting = app
        .create_meeting(json!({"name": "Stage", "policy": policy}))
        .await;
    let host_token = host_joins(app, &meeting, "host").await;
    (meeting, host_token)
}

/// The host enters and joins (starting the meeting); returns its access token.
async fn host_joins(app: &TestApp, meeting: &Value, name: &str) -> String {
    let host = app.enter(meeting, pin(meeting, "host"), name).await;
    app.join(&id_of(meeting), &token(&host)).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A waiting guest sees the meeting's status and its own admission only; after admission it sees
/// what members see, live; hosts see everything, including other guests' admissions.
async fn each_role_sees_what_it_may(app: TestApp) {
    let (meeting, host_token) = live_meeting(&app, "ask_host").await;
    let id = id_of(&meeting);
    let alice = app
        .enter(&meeting, pin(&meeting, "participant"), "alice")
        .await;
    let bob = app.enter(&meeting, pin(&meeting, "viewer"), "bob").await;
    assert_eq!(alice["state"], "waiting");

    let mut waiting = ws_connect(&app, &id, Auth::Query(token(&alice)), None)
        .await
        .unwrap();
    let mut host = ws_connect(&app, &id, Auth::Bearer(host_token.clone()), None)
        .await
        .unwrap();
    let mut admin = ws_connect(&app, &id, Auth::Admin, None).await.unwrap();
    for client in [&mut waiting, &mut host, &mut admin] {
        client.read_until(|r| !r.is_empty()).await;
        assert_eq!(client.received[0]["type"], "snapshot");
    }
    let snapshot = &waiting.received[0]["data"];
    assert_eq!(snapshot["meeting"]["status"], "live");
    assert_eq!(snapshot["you"]["state"], "waiting");
    assert!(
        snapshot["participants"].is_null(),
        "a waiting guest does not see the roster: {snapshot}"
    );
    let host_view = &host.received[0]["data"]["participants"];
    let names: Vec<&str> = host_view
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["alice", "bob", "host"],
        "hosts see the waiting list"
    );

    // Bob's admission and a chat while Alice waits: not for her.
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/bob/admit"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    chat(&app, &id, &host_token, "members only").await;
    // Alice's admission, then a chat she now sees.
    let (status, _) = app
        .admin(
            "POST",
            &format!("/v1/meetings/{id}/participants/alice/admit"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let last = chat(&app, &id, &host_token, "welcome").await;

    waiting.read_through(last).await;
    assert_eq!(
        waiting.types(),
        ["snapshot", "participant.admitted", "chat.message"]
    );
    assert_eq!(waiting.received[1]["data"]["identity"], "alice");
    assert_eq!(waiting.received[2]["data"]["text"], "welcome");
    for client in [&mut host, &mut admin] {
        client.read_through(last).await;
        assert_eq!(
            client.types(),
            [
                "snapshot",
                "participant.admitted",
                "chat.message",
                "participant.admitted",
                "chat.message"
            ]
        );
    }
    // A member's snapshot has the roster (admitted and joined), not the waiting list.
    let mut member = ws_connect(&app, &id, Auth::Bearer(token(&bob)), None)
        .await
        .unwrap();
    member.read_until(|r| !r.is_empty()).await;
    let roster: Vec<&str> = member.received[0]["data"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(roster, ["alice", "bob", "host"]);
    app.stop().await;
}

/// `after=N` replays the stored log, then continues live: under concurrent writes, every event
/// arrives once, in order (WebSocket and SSE, `Last-Event-ID`).
async fn replay_then_live_has_no_gap_and_no_duplicate(app: TestApp) {
    let (meeting, host_token) = live_meeting(&app, "open").await;
    let id = id_of(&meeting);
    for i in 0..20 {
        chat(&app, &id, &host_token, &format!("before {i}")).await;
    }
    let writer = {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/v1/meetings/{id}/chat")),
            host_token.clone(),
        );
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..150 {
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"text": format!("during {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
                last = response.json::<Value>().await.unwrap()["seq"]
                    .as_u64()
                    .unwrap();
            }
            last
        })
    };
    // Connect while the writer runs: the seam falls somewhere in the middle of its writes.
    let mut streams = Vec::new();
    for after in [0, 3, 10] {
        streams.push(
            ws_connect(&app, &id, Auth::Admin, Some(after))
                .await
                .unwrap(),
        );
    }
    let mut sse = sse_connect(&app, &id, Auth::Admin, Some(1), Some(7))
        .await
        .unwrap();
    let last = writer.await.unwrap();
    for (stream, after) in streams.iter_mut().zip([0, 3, 10]) {
        stream.read_through(last).await;
        assert_contiguous(&stream.seqs(), after + 1, last);
    }
    sse.read_until(|r| {
        r.last()
            .is_some_and(|(_, _, d)| d["seq"].as_u64() == Some(last))
    })
    .await;
    assert_contiguous(&sse.seqs(), 8, last);
    let (id_field, event, data) = &sse.received[0];
    assert_eq!(
        (id_field.as_deref(), event.as_str(), data["seq"].as_u64()),
        (Some("8"), data["type"].as_str().unwrap(), Some(8))
    );
    app.stop().await;
}

/// A guest offline at the moment of admission learns it on reconnection: by replay (`after`), or
/// from the snapshot.
async fn reconnecting_guest_learns_a_missed_admission(app: TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Clinic", "policy": "wait_for_host"}))
        .await;
    let id = id_of(&meeting);
    let guest = app
        .enter(&meeting, pin(&meeting, "participant"), "patient")
        .await;
    let mut first = ws_connect(&app, &id, Auth::Query(token(&guest)), None)
        .await
        .unwrap();
    first.read_until(|r| !r.is_empty()).await;
    let seen = first.received[0]["seq"].as_u64().unwrap();
    drop(first);

    host_joins(&app, &meeting, "doctor").await;

    let mut again = ws_connect(&app, &id, Auth::Query(token(&guest)), Some(seen))
        .await
        .unwrap();
    again
        .read_until(|r| r.iter().any(|e| e["type"] == "participant.admitted"))
        .await;
    assert_eq!(
        &again.types()[..2],
        ["meeting.started", "participant.admitted"]
    );
    let mut fresh = sse_connect(&app, &id, Auth::Query(token(&guest)), None, None)
        .await
        .unwrap();
    fresh.read_until(|r| !r.is_empty()).await;
    assert_eq!(fresh.received[0].1, "snapshot");
    assert_eq!(fresh.received[0].2["data"]["you"]["state"], "admitted");
    assert_eq!(fresh.received[0].2["data"]["meeting"]["status"], "live");
    app.stop().await;
}

/// Everyone waiting let in at once is one event: hosts (and the admin) see the list; each guest,
/// live on a WebSocket or SSE, or reading the JSON page, sees only its own `participant.admitted`
/// at the same `seq`, never who else came in.
async fn a_mass_admission_shows_each_guest_only_itself(app: TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Webinar", "policy": "wait_for_host"}))
        .await;
    let id = id_of(&meeting);
    let mut guests = Vec::new();
    for name in ["ann", "ben", "cat"] {
        guests.push(
            app.enter(&meeting, pin(&meeting, "participant"), name)
                .await,
        );
    }
    let identity = |g: &Value| g["identity"].as_str().unwrap().to_owned();
    let mut ws = ws_connect(&app, &id, Auth::Query(token(&guests[0])), None)
        .await
        .unwrap();
    let mut sse = sse_connect(&app, &id, Auth::Bearer(token(&guests[1])), None, None)
        .await
        .unwrap();
    let mut admin = ws_connect(&app, &id, Auth::Admin, None).await.unwrap();
    ws.read_until(|r| !r.is_empty()).await;
    sse.read_until(|r| !r.is_empty()).await;
    admin.read_until(|r| !r.is_empty()).await;

    let host = host_joins(&app, &meeting, "host").await;

    admin
        .read_until(|r| r.iter().any(|e| e["type"] == "participants.admitted"))
        .await;
    let bulk = admin
        .received
        .iter()
        .find(|e| e["type"] == "participants.admitted")
        .unwrap()
        .clone();
    let mut all: Vec<String> = guests.iter().map(identity).collect();
    all.sort();
    assert_eq!(bulk["data"]["identities"], json!(all));
    let seq = bulk["seq"].clone();

    ws.read_until(|r| r.iter().any(|e| e["type"] == "participant.admitted"))
        .await;
    sse.read_until(|r| r.iter().any(|(_, t, _)| t == "participant.admitted"))
        .await;
    let page = app.events(&id, &token(&guests[2]), 0).await;
    let own: Vec<(String, Value)> = vec![
        (identity(&guests[0]), ws.received.last().unwrap().clone()),
        (identity(&guests[1]), sse.received.last().unwrap().2.clone()),
        (
            identity(&guests[2]),
            page.iter()
                .find(|e| e["type"] == "participant.admitted")
                .unwrap()
                .clone(),
        ),
    ];
    for (me, event) in own {
        assert_eq!(event["type"], "participant.admitted", "{event}");
        assert_eq!(event["data"]["identity"], me.as_str());
        assert_eq!(event["seq"], seq, "the same event");
        let text = event.to_string();
        for other in all.iter().filter(|o| **o != me) {
            assert!(
                !text.contains(other.as_str()),
                "{me} must not learn of {other}: {text}"
            );
        }
    }
    assert!(
        ws.received
            .iter()
            .chain(page.iter())
            .all(|e| e["type"] != "participants.admitted"),
        "guests never get the list"
    );
    // The idle guest's admission was written by the hub, not its stream task: the stream goes on
    // as a member's, each event once and in order.
    let said = chat(&app, &id, &host, "welcome").await;
    ws.read_through(said).await;
    let seqs = ws.seqs();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "no duplicate, no reordering: {seqs:?}"
    );
    assert_eq!(ws.received.last().unwrap()["type"], "chat.message");
    app.stop().await;
}

on_both_stores!(
    each_role_sees_what_it_may,
    replay_then_live_has_no_gap_and_no_duplicate,
    reconnecting_guest_learns_a_missed_admission,
    a_mass_admission_shows_each_guest_only_itself
);

async fn sqlite() -> TestApp {
    TestApp::start(StoreKind::Sqlite).await.unwrap()
}

/// A client that never reads is dropped when its bounded queue overflows; a reading client gets
/// everything meanwhile; the dropped one reconnects with `after` and loses nothing. (The queue is
/// behind the kernel's socket buffers, so it takes some megabytes of chat to overflow it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_without_slowing_others() {
    const MESSAGES: usize = 2400;
    const WRITERS: usize = 4;
    let app = sqlite().await;
    let (meeting, host_token) = live_meeting(&app, "open").await;
    let id = id_of(&meeting);
    let slow_guest = app
        .enter(&meeting, pin(&meeting, "participant"), "slow")
        .await;
    let fast_guest = app
        .enter(&meeting, pin(&meeting, "participant"), "fast")
        .await;
    let mut slow = ws_connect_with(&app, &id, Auth::Query(token(&slow_guest)), None, Some(4096))
        .await
        .unwrap();
    let mut fast = ws_connect(&app, &id, Auth::Query(token(&fast_guest)), None)
        .await
        .unwrap();
    fast.read_until(|r| !r.is_empty()).await;
    let start = fast.received[0]["seq"].as_u64().unwrap();
    let reader = tokio::spawn(async move {
        let mut fast = fast;
        let mut chats = 0;
        while chats < MESSAGES {
            assert!(fast.read_one().await, "the reading client stays connected");
            chats += usize::from(fast.received.last().unwrap()["type"] == "chat.message");
        }
        fast
    });
    let text = "x".repeat(4000);
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (client, url, token, text) = (
                app.client.clone(),
                app.url(&format!("/v1/meetings/{id}/chat")),
                host_token.clone(),
                text.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..MESSAGES / WRITERS {
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"text": text}))
                        .send()
                        .await
                        .unwrap();
                    assert!(response.status().is_success());
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let last = last_seq(&app, &id).await;
    let fast = tokio::time::timeout(stream::DEADLINE, reader)
        .await
        .expect("the reader finishes")
        .unwrap();
    assert_contiguous(&fast.seqs(), start + 1, last);

    let end = slow.read_to_end().await;
    assert!(
        matches!(end, End::Close(1013) | End::Dropped),
        "dropped as too slow: {end:?}"
    );
    let got = slow.seqs();
    assert!(
        !got.is_empty() && *got.last().unwrap() < last,
        "the slow client got a prefix only"
    );
    assert_contiguous(&got, start + 1, *got.last().unwrap());
    let mut again = ws_connect(
        &app,
        &id,
        Auth::Query(token(&slow_guest)),
        Some(*got.last().unwrap()),
    )
    .await
    .unwrap();
    again.read_through(last).await;
    assert_contiguous(&again.seqs(), got.last().unwrap() + 1, last);
    app.stop().await;
}

/// Wrong, expired-by-revocation, missing or another meeting's tokens: 401 before any upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_before_the_upgrade() {
    let app = sqlite().await;
    let meeting = app
        .create_meeting(json!({"name": "A", "policy": "ask_host"}))
        .await;
    let other = app
        .create_meeting(json!({"name": "B", "policy": "ask_host"}))
        .await;
    let id = id_of(&meeting);
    let other_guest = app
        .enter(&other, pin(&other, "participant"), "mallory")
        .await;
    let guest = app
        .enter(&meeting, pin(&meeting, "participant"), "guest")
        .await;

    assert_eq!(
        ws_connect(&app, &id, Auth::None, None).await.err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(&app, &id, Auth::Query("not-a-token".into()), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(&app, &id, Auth::Bearer(token(&other_guest)), None)
            .await
            .err(),
        Some(401)
    );
    let (status, body) = sse_connect(&app, &id, Auth::Query(token(&other_guest)), None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(
        sse_connect(&app, "1234567890", Auth::Admin, None, None)
            .await
            .err()
            .unwrap()
            .0,
        404
    );

    // A stream open when its participant is turned away is closed; the token then fails.
    let mut stream = ws_connect(&app, &id, Auth::Query(token(&guest)), None)
        .await
        .unwrap();
    stream.read_until(|r| !r.is_empty()).await;
    let (status, _) = app
        .admin(
            "POST",
            &format!("/v1/meetings/{id}/participants/guest/deny"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let end = stream.read_to_end().await;
    assert_eq!(close_code(end), Some(1008));
    assert_eq!(stream.types().last().unwrap(), "participant.denied");
    assert_eq!(
        ws_connect(&app, &id, Auth::Query(token(&guest)), None)
            .await
            .err(),
        Some(401)
    );
    app.stop().await;
}

/// Clients send nothing but control frames: data, oversized and malformed frames close that
/// connection with the matching code, and nobody else notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_that_connection() {
    let app = sqlite().await;
    let meeting = app
        .create_meeting(json!({"name": "F", "policy": "ask_host"}))
        .await;
    let id = id_of(&meeting);
    let mut bystander = ws_connect(&app, &id, Auth::Admin, None).await.unwrap();
    bystander.read_until(|r| !r.is_empty()).await;

    let cases: Vec<(Message, u16)> = vec![
        (Message::Text("hello".into()), CloseCode::Unsupported.into()),
        (
            Message::Binary(vec![1, 2, 3].into()),
            CloseCode::Unsupported.into(),
        ),
        (
            Message::Text("x".repeat(64 * 1024).into()),
            CloseCode::Size.into(),
        ),
        (Message::Ping(vec![0; 8].into()), 0),
    ];
    for (message, expected) in cases {
        let mut client: WsClient = ws_connect(&app, &id, Auth::Admin, None).await.unwrap();
        client.read_until(|r| !r.is_empty()).await;
        client.send(message).await;
        if expected == 0 {
            // A ping is answered, and the stream goes on.
            let seq = chat_free_event(&app, &id).await;
            client.read_through(seq).await;
            continue;
        }
        let end = client.read_to_end().await;
        assert_eq!(close_code(end), Some(expected));
    }
    // A frame with reserved bits set: a protocol error.
    let mut client = ws_connect(&app, &id, Auth::Admin, None).await.unwrap();
    client.read_until(|r| !r.is_empty()).await;
    if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.socket.get_mut() {
        tcp.write_all(&[0xF1, 0x80, 1, 2, 3, 4]).await.unwrap();
    }
    let end = client.read_to_end().await;
    assert_eq!(close_code(end), Some(u16::from(CloseCode::Protocol)));

    let seq = chat_free_event(&app, &id).await;
    bystander.read_through(seq).await;
    assert!(bystander.ended.is_none());
    app.stop().await;
}

/// An event anyone may see, made with the API key: a meeting update. Returns its seq.
async fn chat_free_event(app: &TestApp, id: &str) -> u64 {
    let (status, body) = app
        .admin(
            "PATCH",
            &format!("/v1/meetings/{id}"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["last_seq"].as_u64().unwrap()
}

/// The plain JSON page still works with `access_token` and without a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_page_accepts_access_token_too() {
    let app = sqlite().await;
    let meeting = app
        .create_meeting(json!({"name": "P", "policy": "ask_host"}))
        .await;
    let id = id_of(&meeting);
    let guest = app
        .enter(&meeting, pin(&meeting, "participant"), "guest")
        .await;
    let (status, page) = app
        .anonymous(
            "GET",
            &format!("/v1/meetings/{id}/events?access_token={}", token(&guest)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        common::types(page["events"].as_array().unwrap()),
        ["participant.entered"]
    );
    let mut sse: SseClient = sse_connect(&app, &id, Auth::Bearer(token(&guest)), Some(0), None)
        .await
        .unwrap();
    sse.read_until(|r| !r.is_empty()).await;
    assert_eq!(sse.received[0].1, "participant.entered");
    app.stop().await;
}

/// A stream ends when the token it was opened with expires (the reader must come back with a
/// fresh token): the SSE stream sends a `close` event saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires() {
    use base64::Engine as _;
    let app = sqlite().await;
    let meeting = app
        .create_meeting(json!({"name": "Clinic", "policy": "wait_for_host"}))
        .await;
    let id = id_of(&meeting);
    let guest = app
        .enter(&meeting, pin(&meeting, "participant"), "patient")
        .await;
    // The same token, re-signed to expire two seconds from now.
    let original = token(&guest);
    let payload = original.split('.').nth(1).unwrap();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["exp"] = json!(now + 2);
    let short = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut sse = sse_connect(&app, &id, Auth::Bearer(short), None, None)
        .await
        .unwrap();
    sse.read_until(|r| r.iter().any(|(_, event, _)| event == "close"))
        .await;
    let (_, _, data) = sse.received.last().unwrap();
    assert_eq!(data["reason"], "token expired");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    // The original, longer-lived token still opens a stream.
    assert!(
        sse_connect(&app, &id, Auth::Bearer(original), None, None)
            .await
            .is_ok()
    );
    app.stop().await;
}
