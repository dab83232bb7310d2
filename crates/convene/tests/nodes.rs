//! Several convene nodes on one PostgreSQL database: each node's event streams get the other
//! nodes' commits (through `LISTEN` / `NOTIFY` and the store), once, in order, with no gap, also
//! across a lost notification connection; webhooks go out once per event however many nodes run;
//! and a second server on one SQLite file refuses to start.

mod common;
#[path = "common/stream.rs"]
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{StoreKind, TestApp, assert_contiguous, chat, id_of, last_seq, pin, token};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use stream::{Auth, sse_connect, ws_connect};

/// Three nodes (`None` when PostgreSQL is unreachable and its tests are skipped).
async fn three_nodes(extra_env: &[(&str, &str)]) -> Option<[TestApp; 3]> {
    let a = TestApp::start_with(StoreKind::Postgres, extra_env).await?;
    let b = a.another_node(&[]).await;
    let c = a.another_node(&[]).await;
    Some([a, b, c])
}

async fn stop_all(nodes: [TestApp; 3]) {
    let [a, b, c] = nodes;
    b.stop().await;
    c.stop().await;
    a.stop().await; // last: it drops the database
}

/// A guest streaming from node B is told within a second that the host on node A started the
/// meeting and let it in; chat sent on nodes A and C at once reaches the streams on A and B; every
/// stream is gapless and without duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_in_order_without_gap() {
    let Some(nodes) = three_nodes(&[]).await else {
        return;
    };
    let [a, b, c] = &nodes;
    let meeting = a
        .create_meeting(json!({"name": "Clinic", "policy": "wait_for_host"}))
        .await;
    let id = id_of(&meeting);
    let guest = b
        .enter(&meeting, pin(&meeting, "participant"), "patient")
        .await;
    let mut guest_stream = ws_connect(b, &id, Auth::Query(token(&guest)), None)
        .await
        .unwrap();
    guest_stream.read_until(|r| !r.is_empty()).await;
    let mut admin_on_a = ws_connect(a, &id, Auth::Admin, Some(0)).await.unwrap();
    let mut admin_on_b = sse_connect(b, &id, Auth::Admin, Some(0), None)
        .await
        .unwrap();
    admin_on_a.read_through(last_seq(a, &id).await).await;

    let asked = Instant::now();
    let host = a.enter(&meeting, pin(&meeting, "host"), "doctor").await;
    let joined = a.join(&id, &token(&host)).await;
    guest_stream
        .read_until(|r| r.iter().any(|e| e["type"] == "participant.admitted"))
        .await;
    let told_in = asked.elapsed();
    assert!(
        told_in < Duration::from_secs(1),
        "the guest on node B learnt of its admission on node A after {told_in:?}"
    );
    assert!(guest_stream.types().contains(&"meeting.started".to_owned()));

    // Chat from two nodes at once: node A's hub gets its own commits between the ones it reads
    // from the store.
    let host_token = joined["access_token"].as_str().unwrap().to_owned();
    let writers: Vec<_> = [a.base.clone(), c.base.clone()]
        .into_iter()
        .map(|base| {
            let (client, token, id) = (a.client.clone(), host_token.clone(), id.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let response = client
                        .post(format!("{base}/v1/meetings/{id}/chat"))
                        .bearer_auth(&token)
                        .json(&json!({"text": format!("{base} {i}")}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    assert!(status.is_success(), "chat {i} on {base}: {status} {body}");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let last = chat(c, &id, &host_token, "the last word, from node C").await;
    assert_eq!(last, last_seq(b, &id).await);

    admin_on_a.read_through(last).await;
    assert_contiguous(&admin_on_a.seqs(), 1, last);
    admin_on_b
        .read_until(|r| {
            r.last()
                .is_some_and(|(_, _, d)| d["seq"].as_u64() == Some(last))
        })
        .await;
    assert_contiguous(&admin_on_b.seqs(), 1, last);
    guest_stream.read_through(last).await;
    let seen = guest_stream.seqs();
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "in order, once each: {seen:?}"
    );
    let chats = guest_stream
        .received
        .iter()
        .filter(|e| e["type"] == "chat.message")
        .count();
    assert_eq!(chats, 51, "every chat message reached the guest on node B");

    // Node B timed the notification of every commit it heard of.
    let metrics = b
        .client
        .get(format!("{}/metrics", b.base))
        .basic_auth(common::KEY, Some(common::SECRET))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let heard: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("convene_event_notify_delay_seconds_count "))
        .unwrap_or_else(|| panic!("no notification delay in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(heard >= 51, "{heard} notifications timed on node B");
    stop_all(nodes).await;
}

/// What a node holds of a meeting between queries follows the other nodes' commits: a guest
/// whose token node A has just checked, removed on node B, is refused on node A within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_on_one_node_ends_the_token_on_the_others() {
    let Some(nodes) = three_nodes(&[]).await else {
        return;
    };
    let [a, b, _] = &nodes;
    let meeting = a
        .create_meeting(json!({"name": "Class", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let host = a.enter(&meeting, pin(&meeting, "host"), "teacher").await;
    let joined = a.join(&id, &token(&host)).await;
    let host_token = joined["access_token"].as_str().unwrap().to_owned();
    let guest = a
        .enter(&meeting, pin(&meeting, "participant"), "pupil")
        .await;
    let events = format!("/v1/meetings/{id}/events?after=0");
    // Node A checks the guest's token (and so holds the guest).
    let (status, body) = a.bearer("GET", &events, &token(&guest), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = b
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/pupil/remove"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let removed = Instant::now();
    loop {
        let (status, body) = a.bearer("GET", &events, &token(&guest), None).await;
        if status != StatusCode::OK {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "node A still took the token of a guest removed on node B after {:?}",
            removed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_all(nodes).await;
}

/// The signalling URL clients are given by `node`.
fn rtc_of(node: &TestApp) -> String {
    node.base.replacen("http", "ws", 1)
}

/// Asks `node`'s media engine whether `token` may join (what a LiveKit client asks after a
/// refused connection): the status and the message.
async fn validate(node: &TestApp, token: &str) -> (StatusCode, String) {
    let response = node
        .client
        .get(format!("{}/rtc/validate", node.base))
        .query(&[("access_token", token)])
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Each meeting's media is on one node: joins answered by three nodes all name one node's own
/// signalling URL; a media client that reaches another node is refused there and told why; when
/// the holding node stops, the next join places the room on a node still running, which lets
/// the client in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_meetings_media_is_on_one_node() {
    let Some(mut nodes) = three_nodes(&[]).await else {
        return;
    };
    let meeting = nodes[0]
        .create_meeting(json!({"name": "Ward round", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let mut joined = Vec::new();
    for (i, (role, name)) in [
        ("host", "doctor"),
        ("participant", "nurse"),
        ("participant", "patient"),
    ]
    .into_iter()
    .enumerate()
    {
        let entered = nodes[i].enter(&meeting, pin(&meeting, role), name).await;
        joined.push(nodes[i].join(&id, &token(&entered)).await);
    }
    let urls: Vec<&str> = joined.iter().map(|j| j["url"].as_str().unwrap()).collect();
    assert!(
        urls.iter().all(|u| *u == urls[0]),
        "one room, one node: {urls:?}"
    );
    let holder = nodes
        .iter()
        .position(|n| rtc_of(n) == urls[0])
        .unwrap_or_else(|| panic!("{} is none of the nodes' URLs", urls[0]));
    let patient = joined[2]["access_token"].as_str().unwrap().to_owned();
    for (i, node) in nodes.iter().enumerate() {
        let (status, message) = validate(node, &patient).await;
        if i == holder {
            assert_eq!(status, StatusCode::OK, "the holding node: {message}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "node {i}: {message}");
            assert!(
                message.contains("another node") && message.contains(urls[0]),
                "{message}"
            );
        }
    }

    // The holder stops (its lease ends with it): within the second a node keeps what it read
    // of a room's place, joins are sent to a running node.
    nodes[holder].stop_server().await;
    let other = (holder + 1) % 3;
    let api_token = joined[2]["api_token"].as_str().unwrap().to_owned();
    let stopped = Instant::now();
    let again = loop {
        let again = nodes[other].join(&id, &api_token).await;
        if again["url"] != urls[0] {
            break again;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "joins still sent to the stopped node after {:?}",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let moved = again["url"].as_str().unwrap();
    let new_holder = nodes
        .iter()
        .position(|n| rtc_of(n) == moved)
        .expect("a node's URL");
    let (status, message) =
        validate(&nodes[new_holder], again["access_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    stop_all(nodes).await;
}

/// The listening connections of `role` on `database`.
async fn listeners(admin: &mut sqlx::PgConnection, database: &str, role: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = $1 AND usename = $2 AND application_name = $3",
    )
    .bind(database)
    .bind(role)
    .bind(convene_store::listen::APPLICATION_NAME)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Polls `condition` until it holds, within 20 seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node whose notification connection is cut, and which cannot reconnect while another node
/// commits, gets those events after it reconnects (it reads the store for every meeting streamed
/// from it), in order and without gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_notifications_catches_up_from_the_store() {
    let Some(a) = TestApp::start(StoreKind::Postgres).await else {
        return;
    };
    let (database, url, admin_url) = a.postgres().unwrap();
    let (database, admin_url) = (database.to_owned(), admin_url.to_owned());
    // Node B connects as its own role, so that its connections can be capped alone.
    let role = format!("{database}_b");
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut owner = sqlx::PgConnection::connect(url).await.unwrap();
    for grant in [
        format!("GRANT ALL ON SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&grant).execute(&mut owner).await.unwrap();
    }
    owner.close().await.unwrap();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let b_url = format!("{scheme}://{role}@{host}");
    let b = a
        .another_node(&[("CONVENE_DATABASE_URL", b_url.as_str())])
        .await;

    let meeting = a
        .create_meeting(json!({"name": "Cut", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let host = a.enter(&meeting, pin(&meeting, "host"), "host").await;
    let host_token = a.join(&id, &token(&host)).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut on_b = ws_connect(&b, &id, Auth::Admin, Some(0)).await.unwrap();
    let before = chat(&a, &id, &host_token, "before").await;
    on_b.read_through(before).await;
    assert_eq!(listeners(&mut admin, &database, &role).await, 1);

    // Node B may keep the connections it has but open none: then its listening connection is
    // cut, and it cannot listen again for a while.
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
        .bind(&role)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("ALTER ROLE {role} CONNECTION LIMIT {}", open - 1))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE usename = $1 AND application_name = $2",
    )
    .bind(&role)
    .bind(convene_store::listen::APPLICATION_NAME)
    .execute(&mut admin)
    .await
    .unwrap();
    let mut last = 0;
    for i in 0..10 {
        last = chat(&a, &id, &host_token, &format!("while cut {i}")).await;
    }
    assert_eq!(
        listeners(&mut admin, &database, &role).await,
        0,
        "node B could not listen again while the events were committed"
    );
    assert!(
        on_b.seqs().last() < Some(&last),
        "node B did not get them without listening"
    );
    sqlx::query(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .execute(&mut admin)
        .await
        .unwrap();
    on_b.read_through(last).await;
    assert_contiguous(&on_b.seqs(), 1, last);
    // And it hears again.
    let after = chat(&a, &id, &host_token, "after").await;
    on_b.read_through(after).await;
    assert_contiguous(&on_b.seqs(), 1, after);
    b.stop().await;
    a.stop().await;
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Three nodes with one webhook endpoint: every event of a meeting whose commits came from all
/// three is delivered exactly once (the lanes are leased to one sender at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_each_webhook_once() {
    #[derive(Clone, Default)]
    struct Received(Arc<Mutex<HashMap<String, usize>>>);
    async fn receive(
        axum::extract::State(received): axum::extract::State<Received>,
        body: String,
    ) -> StatusCode {
        let body: Value = serde_json::from_str(&body).unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        *received.0.lock().unwrap().entry(id).or_default() += 1;
        StatusCode::OK
    }
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let Some(nodes) = three_nodes(&[("CONVENE_WEBHOOK_URLS", url.as_str())]).await else {
        return;
    };
    let meeting = nodes[0]
        .create_meeting(json!({"name": "Hooked", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let host = nodes[1]
        .enter(&meeting, pin(&meeting, "host"), "host")
        .await;
    let host_token = nodes[1].join(&id, &token(&host)).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut last = 0;
    for i in 0..30 {
        last = chat(&nodes[i % 3], &id, &host_token, &format!("{i}")).await;
    }
    let expected: Vec<String> = (1..=last).map(|seq| format!("EV_{id}_{seq}")).collect();
    eventually("every event delivered", || {
        let received = received.0.lock().unwrap();
        expected.iter().all(|id| received.contains_key(id))
    })
    .await;
    // Recorded as delivered at the first attempt: no node sent any of them again. (A sender
    // records the delivery once the receiver's answer is in, just after the receiver counted it.)
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let (status, page) = nodes[2]
            .admin(
                "GET",
                &format!("/v1/webhooks/deliveries?meeting_id={id}&limit=100"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let recorded = page["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] != "pending");
        if recorded || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deliveries = page["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len() as u64, last, "{page}");
    for delivery in deliveries {
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        assert_eq!(delivery["attempts"], 1, "{delivery}");
    }
    let received = received.0.lock().unwrap().clone();
    assert_eq!(received.len() as u64, last);
    assert!(
        received.values().all(|&n| n == 1),
        "each event once: {received:?}"
    );
    stop_all(nodes).await;
}

/// SQLite is for one server: a second one on the same database file refuses to start, saying
/// why, and the first goes on. (Once the first stops, the lock is free: `TestApp::restart` in
/// `flows.rs` starts again on the same file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_sqlite_file_refuses_to_start() {
    let app = TestApp::start(StoreKind::Sqlite).await.unwrap();
    let error = match app.start_second_server().await {
        Ok(_) => panic!("a second server started on the same SQLite file"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("in use by another convene server") && error.contains("PostgreSQL"),
        "{error}"
    );
    let (status, _) = app.admin("GET", "/v1/meetings", None).await;
    assert_eq!(status, StatusCode::OK, "the first server goes on");
    app.stop().await;
}

/// A node that starts while another live node records a meeting leaves that recording alone:
/// only recordings whose room no live node holds were cut short by a stop. The holder's own
/// restart closes it as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_node_leaves_another_nodes_recording_running() {
    let Some(mut nodes) = three_nodes(&[]).await else {
        return;
    };
    let meeting = nodes[0]
        .create_meeting(json!({"name": "Board meeting", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let entered = nodes[0]
        .enter(&meeting, pin(&meeting, "host"), "chair")
        .await;
    let joined = nodes[0].join(&id, &token(&entered)).await;
    let holder = nodes
        .iter()
        .position(|n| rtc_of(n) == joined["url"].as_str().unwrap())
        .expect("the room is on one of the nodes");
    let (status, started) = nodes[0]
        .admin("POST", &format!("/v1/meetings/{id}/recordings"), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let rid = started["recording_id"].as_str().unwrap().to_owned();
    async fn state(node: &TestApp, id: &str, rid: &str) -> String {
        let path = format!("/v1/meetings/{id}/recordings/{rid}");
        let (_, recording) = node.admin("GET", &path, None).await;
        recording["state"].as_str().unwrap().to_owned()
    }
    // Another node restarts: the recording goes on.
    let other = (holder + 1) % 3;
    nodes[other].restart().await;
    // What must not happen has no event to wait for: the restarted node's recovery (a few
    // reads) is given half a second to wrongly close the recording.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state(&nodes[other], &id, &rid).await, "recording");
    // The holder restarts: nobody wrote it meanwhile, so it is closed as failed.
    nodes[holder].restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while state(&nodes[holder], &id, &rid).await != "failed" {
        assert!(Instant::now() < deadline, "the holder's recording closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_all(nodes).await;
}
