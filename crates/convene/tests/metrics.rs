//! `/metrics` and `/readyz` on the real server: counters and gauges move with what happens, the
//! main address serves metrics to admins only, `CONVENE_METRICS_ADDR` without authentication,
//! and readiness follows the store.

mod common;

use std::time::{Duration, Instant};

use common::{StoreKind, TestApp};
use reqwest::StatusCode;
use serde_json::json;

/// The value of the sample `series` (name and labels exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(app.url("/metrics"))
        .basic_auth(common::KEY, Some(common::SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// Scrapes until `check` holds, for at most five seconds.
async fn scrape_until(app: &TestApp, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(app).await;
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}; last scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_meetings_and_people_move_the_gauges() {
    let app = TestApp::start(StoreKind::Sqlite).await.unwrap();
    let before = scrape(&app).await;
    for series in [
        r#"convene_meetings{status="created"}"#,
        r#"convene_meetings{status="live"}"#,
        r#"convene_people{state="waiting"}"#,
        "convene_event_subscribers",
        "convene_webhook_outbox_pending",
        "convene_sfu_rooms",
        "convene_sfu_participants",
        "convene_sfu_tracks",
        r#"convene_sfu_datagrams_sent_total{transport="udp"}"#,
        r#"convene_sfu_datagrams_dropped_total{transport="tcp"}"#,
        "convene_recording_packets_dropped_total",
        "convene_store_commits_total",
        "convene_store_committed_changes_total",
        "convene_store_commit_fallbacks_total",
    ] {
        assert_eq!(sample(&before, series), Some(0.0), "{series} in\n{before}");
    }

    let meeting = app
        .create_meeting(json!({"name": "Counted", "policy": "wait_for_host"}))
        .await;
    let id = meeting["meeting_id"].as_str().unwrap();
    let (status, _) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.admin("GET", "/v1/meetings/not-an-id", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let guest = app
        .enter(
            &meeting,
            meeting["credentials"]["participant"].as_str().unwrap(),
            "guest",
        )
        .await;
    assert_eq!(guest["state"], "waiting");

    let text = scrape(&app).await;
    let get_meeting =
        r#"convene_http_requests_total{route="/v1/meetings/{meeting_id}",method="GET""#;
    assert_eq!(
        sample(&text, &format!(r#"{get_meeting},status="200"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!(r#"{get_meeting},status="400"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"convene_http_requests_total{route="/v1/meetings",method="POST",status="201"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains(id), "the raw path is never a label:\n{text}");
    assert_eq!(
        sample(
            &text,
            r#"convene_http_request_duration_seconds_count{route="/v1/meetings/{meeting_id}",method="GET"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"convene_meetings{status="created"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"convene_people{state="waiting"}"#),
        Some(1.0)
    );
    // The guest's entry went through the group commit (the meeting's creation does not).
    assert_eq!(
        sample(&text, "convene_store_commits_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "convene_store_committed_changes_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "convene_store_commit_fallbacks_total"),
        Some(0.0),
        "{text}"
    );

    let (status, body) = app
        .admin("POST", &format!("/v1/meetings/{id}/start"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = scrape(&app).await;
    assert_eq!(
        sample(&text, r#"convene_meetings{status="created"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"convene_meetings{status="live"}"#),
        Some(1.0),
        "{text}"
    );
    // The scrapes before this one are counted too (a request is counted once answered).
    assert!(
        sample(
            &text,
            r#"convene_http_requests_total{route="/metrics",method="GET",status="200"}"#
        )
        .is_some_and(|n| n == 2.0),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_on_the_main_address_need_the_api_key() {
    let app = TestApp::start(StoreKind::Sqlite).await.unwrap();
    let (status, body) = app.anonymous("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    // A participant's token is not an admin credential.
    let meeting = app.create_meeting(json!({"name": "Open"})).await;
    let guest = app
        .enter(
            &meeting,
            meeting["credentials"]["participant"].as_str().unwrap(),
            "guest",
        )
        .await;
    let token = guest["token"].as_str().unwrap();
    let (status, body) = app.bearer("GET", "/metrics", token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = app
        .client
        .get(app.url("/metrics"))
        .basic_auth(common::KEY, Some("wrong-secret"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // No separate listener unless configured.
    assert_eq!(app.metrics_addr(), None);
    app.stop().await;
}

#[tokio::test]
async fn the_separate_metrics_address_serves_without_authentication() {
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[("CONVENE_METRICS_ADDR", "127.0.0.1:0")],
    )
    .await
    .unwrap();
    let addr = app.metrics_addr().expect("the metrics listener is bound");
    app.create_meeting(json!({"name": "Seen"})).await;
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert_eq!(
        sample(&text, r#"convene_meetings{status="created"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"convene_http_requests_total{route="/v1/meetings",method="POST",status="201"}"#
        ),
        Some(1.0),
        "the same registry as the main address:\n{text}"
    );
    // Only /metrics is there: not the API.
    let response = reqwest::get(format!("http://{addr}/v1/meetings"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn webhook_attempts_failures_and_the_outbox_depth_are_counted() {
    // An endpoint that always fails: every attempt is a failure, retried later.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = TestApp::start_with(StoreKind::Sqlite, &[("CONVENE_WEBHOOK_URLS", url.as_str())])
        .await
        .unwrap();
    app.create_meeting(json!({"name": "Hooked"})).await;
    let text = scrape_until(&app, "a failed attempt is counted", |text| {
        sample(text, r#"convene_webhook_attempts_total{outcome="failed"}"#)
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(
        sample(&text, "convene_webhook_outbox_pending").is_some_and(|n| n >= 1.0),
        "the failed delivery is still pending:\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"convene_webhook_attempts_total{outcome="delivered"}"#
        ),
        None,
        "{text}"
    );
    app.stop().await;
}

async fn readyz(app: &TestApp) -> (StatusCode, serde_json::Value) {
    app.anonymous("GET", "/readyz", None).await
}

#[tokio::test]
async fn readyz_answers_200_while_the_store_answers() {
    let app = TestApp::start(StoreKind::Sqlite).await.unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"status": "ready"}));
    app.stop().await;
}

#[tokio::test]
async fn readyz_answers_503_while_postgres_is_unreachable_and_200_again_after() {
    let Some(app) = TestApp::start(StoreKind::Postgres).await else {
        return;
    };
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.set_database_reachable(false).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = readyz(&app).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(
        ["store_error", "store_timeout"].contains(&body["cause"].as_str().unwrap_or("")),
        "{body}"
    );
    // Liveness does not depend on the store.
    let (status, _) = app.anonymous("GET", "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    app.set_database_reachable(true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = readyz(&app).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready again: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
