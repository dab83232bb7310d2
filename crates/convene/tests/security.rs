//! The promises of docs/security-reliability.md that concern the native API: bad input gets a
//! clear 4xx, tokens are checked strictly, guessing is limited, secrets are checked in full.

mod common;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{StoreKind, TestApp, claims};
use convene_core::ErrorCode;
use convene_core::ids::DisplayName;
use convene_core::meeting::{MeetingSettings, Mode, WaitingPolicy};
use convene_core::ports::{NoMedia, NoSink};
use convene_core::service::{Meetings, NewMeeting};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn app() -> TestApp {
    TestApp::start(StoreKind::Sqlite).await.unwrap()
}

#[tokio::test]
async fn unknown_meeting_and_wrong_credential_get_the_same_answer() {
    let app = app().await;
    let meeting = app.create_meeting(json!({"name": "m"})).await;
    let id = meeting["meeting_id"].as_str().unwrap();
    let wrong = app
        .anonymous(
            "POST",
            &format!("/v1/meetings/{id}/enter"),
            Some(json!({"credential": "00000000", "name": "x"})),
        )
        .await;
    let unknown = app
        .anonymous(
            "POST",
            "/v1/meetings/1234567890/enter",
            Some(json!({"credential": "00000000", "name": "x"})),
        )
        .await;
    let malformed_id = app
        .anonymous(
            "POST",
            "/v1/meetings/abc/enter",
            Some(json!({"credential": "00000000", "name": "x"})),
        )
        .await;
    assert_eq!(wrong.0, StatusCode::FORBIDDEN);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, malformed_id);
    assert_eq!(wrong.1["error"]["code"], "meeting_access_denied");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_naming_the_field() {
    let app = app().await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": 5}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "m", "n_digits": 3}), "n_digits"),
        (json!({"name": "m", "n_digits": 19}), "n_digits"),
        (json!({"name": "m", "policy": "whatever"}), "policy"),
        (json!({"name": "m", "capacity": 0}), "capacity"),
        (json!({"name": "m", "capacity": -1}), "capacity"),
        (
            json!({"name": "m", "logout_url": "javascript:alert(1)"}),
            "logout_url",
        ),
        (
            json!({"name": "m", "metadata": {"big": "x".repeat(17_000)}}),
            "metadata",
        ),
        (
            json!({"name": "m", "schedule": {"starts_at": "tomorrow"}}),
            "schedule.starts_at",
        ),
        (
            json!({"name": "m", "credentials": {"host": "x".repeat(129)}}),
            "credentials.host",
        ),
        (json!({"name": "m", "surprise": true}), "surprise"),
        // What the OpenAPI document forbids, the server refuses (schemathesis checks the rest).
        (
            json!({"name": "m", "capacity": 4_294_967_295u64}),
            "capacity",
        ),
        (json!({"name": "m", "capacity": 1_000_001}), "capacity"),
        (json!({"name": "m", "capacity": 2.5}), "capacity"),
        (json!({"name": "m", "logout_url": ""}), "logout_url"),
        (
            json!({"name": "m", "logout_url": "https://user:pw@lms.example/"}),
            "logout_url",
        ),
        (
            json!({"name": "m", "webhook_url": format!("http://a/{}", "\"".repeat(1000))}),
            "webhook_url",
        ),
        (json!({"name": "m", "room_name": "a\u{7}b"}), "room_name"),
        (json!({"name": "\u{85}"}), "name"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.admin("POST", "/v1/meetings", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{field} named in {answer}"
        );
    }
    // Values that are each valid but contradict each other: 422, naming the field.
    for (body, field) in [
        (
            json!({"name": "m", "credentials": {"host": "same", "participant": "same"}}),
            "credentials",
        ),
        (
            json!({"name": "m", "schedule": {"starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T10:00:00Z"}}),
            "schedule.ends_at",
        ),
    ] {
        let (status, answer) = app.admin("POST", "/v1/meetings", Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
        assert_eq!(answer["error"]["code"], "invalid_combination");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field));
    }
    // An integer is an integer however JSON writes it (as JSON Schema counts them), and text
    // limits count characters, not bytes.
    let (status, answer) = app
        .admin(
            "POST",
            "/v1/meetings",
            Some(
                json!({"name": "é".repeat(200), "n_digits": 11.0, "capacity": 5.0,
                        "logout_url": "HTTPS://LMS.example:8443/bye?x=1#top"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["meeting_id"].as_str().unwrap().len(), 11);
    assert_eq!(answer["capacity"], 5);
    let id = answer["meeting_id"].as_str().unwrap().to_owned();
    let (status, answer) = app
        .admin(
            "PATCH",
            &format!("/v1/meetings/{id}"),
            Some(json!({"capacity": 7.0})),
        )
        .await;
    assert_eq!(
        (status, &answer["capacity"]),
        (StatusCode::OK, &json!(7)),
        "{answer}"
    );
    // `after` alone filters the webhook outbox (it no longer needs `meeting_id`).
    let (status, answer) = app
        .admin("GET", "/v1/webhooks/deliveries?after=3", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Malformed JSON and a missing content type.
    let response = app
        .client
        .post(app.url("/v1/meetings"))
        .basic_auth(common::KEY, Some(common::SECRET))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app
        .client
        .post(app.url("/v1/meetings"))
        .basic_auth(common::KEY, Some(common::SECRET))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Oversized bodies.
    let huge = json!({"name": "m", "metadata": {"x": "y".repeat(100_000)}});
    let (status, answer) = app.admin("POST", "/v1/meetings", Some(huge)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // Bad query parameters and unknown routes answer in the same shape.
    let (status, answer) = app.admin("GET", "/v1/meetings?limit=0", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (status, answer) = app.admin("GET", "/v1/meetings?limit=abc", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = app.admin("GET", "/v1/nothing-here", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, answer) = app.admin("DELETE", "/v1/meetings", None).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    // Nothing stored was lost along the way.
    let (_, list) = app.admin("GET", "/v1/meetings", None).await;
    assert_eq!(list["meetings"].as_array().unwrap().len(), 1);
    app.stop().await;
}

fn forge(header: Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        signature
    )
}

fn sign(payload: &Value, secret: &str, algorithm: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        payload,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_are_checked_strictly() {
    let app = app().await;
    let meeting = app
        .create_meeting(json!({"name": "m", "policy": "open"}))
        .await;
    let other = app
        .create_meeting(json!({"name": "other", "policy": "open"}))
        .await;
    let id = meeting["meeting_id"].as_str().unwrap();
    let guest = app
        .enter(
            &meeting,
            meeting["credentials"]["participant"].as_str().unwrap(),
            "g",
        )
        .await;
    let token = guest["token"].as_str().unwrap();
    let me = format!("/v1/meetings/{id}/me");
    assert_eq!(app.bearer("GET", &me, token, None).await.0, StatusCode::OK);

    let payload = claims(token);
    let now = payload["nbf"].as_i64().unwrap();
    let mut expired = payload.clone();
    expired["exp"] = json!(now - 3600);
    let mut no_exp = payload.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    let forged = [
        (
            "alg none",
            forge(json!({"alg": "none", "typ": "JWT"}), &payload, ""),
        ),
        (
            "empty signature",
            forge(json!({"alg": "HS256", "typ": "JWT"}), &payload, ""),
        ),
        (
            "wrong secret",
            sign(
                &payload,
                "another-secret-another-secret-another-secret",
                jsonwebtoken::Algorithm::HS256,
            ),
        ),
        (
            "HS384",
            sign(&payload, common::SECRET, jsonwebtoken::Algorithm::HS384),
        ),
        (
            "expired",
            sign(&expired, common::SECRET, jsonwebtoken::Algorithm::HS256),
        ),
        (
            "no exp",
            sign(&no_exp, common::SECRET, jsonwebtoken::Algorithm::HS256),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, bad) in forged {
        let (status, body) = app.bearer("GET", &me, &bad, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_token", "{what}");
    }
    // A token for one meeting does not open another.
    let other_id = other["meeting_id"].as_str().unwrap();
    let (status, body) = app
        .bearer("GET", &format!("/v1/meetings/{other_id}/me"), token, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A participant token is not an admin token.
    let (status, _) = app.bearer("GET", "/v1/meetings", token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, joined) = app.try_join(id, token).await;
    let (status, _) = app
        .bearer(
            "POST",
            "/v1/meetings",
            joined["access_token"].as_str().unwrap(),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an access token with roomAdmin is still not an admin token"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_waiting_room_token_is_only_a_ticket_even_a_hosts() {
    let app = app().await;
    let meeting = app
        .create_meeting(json!({"name": "m", "policy": "ask_host", "mode": "stream"}))
        .await;
    let id = meeting["meeting_id"].as_str().unwrap();
    let host_pin = meeting["credentials"]["host"].as_str().unwrap();
    let guest_pin = meeting["credentials"]["participant"].as_str().unwrap();
    let guest = app.enter(&meeting, guest_pin, "pat").await;
    assert_eq!(guest["state"], "waiting");
    let other = app.enter(&meeting, guest_pin, "sam").await;
    let host = app.enter(&meeting, host_pin, "dr-lee").await;
    assert_eq!(host["role"], "host");
    let waiting = host["token"].as_str().unwrap();
    let base = format!("/v1/meetings/{id}");
    let host_calls: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("{base}/participants"), None),
        ("GET", format!("{base}/participants/pat"), None),
        ("POST", format!("{base}/participants/pat/admit"), None),
        ("POST", format!("{base}/admit-all"), None),
        ("POST", format!("{base}/participants/pat/deny"), None),
        ("POST", format!("{base}/participants/pat/send-back"), None),
        ("POST", format!("{base}/participants/pat/invite"), None),
        ("POST", format!("{base}/participants/pat/remove"), None),
        (
            "POST",
            format!("{base}/participants/pat/ban"),
            Some(json!({})),
        ),
        ("POST", format!("{base}/participants/pat/unban"), None),
        (
            "POST",
            format!("{base}/participants/pat/role"),
            Some(json!({"role": "viewer"})),
        ),
        (
            "POST",
            format!("{base}/participants/pat/mute"),
            Some(json!({"track": "audio"})),
        ),
        (
            "POST",
            format!("{base}/policy"),
            Some(json!({"policy": "deny"})),
        ),
        ("POST", format!("{base}/start"), None),
        ("POST", format!("{base}/end"), None),
    ];
    for (method, path, body) in &host_calls {
        let (status, answer) = app.bearer(method, path, waiting, body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], "forbidden", "{method} {path}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("join"),
            "{answer}"
        );
    }
    // Nothing happened: the guest still waits, the meeting has not started.
    let (_, me) = app
        .bearer(
            "GET",
            &format!("{base}/me"),
            guest["token"].as_str().unwrap(),
            None,
        )
        .await;
    assert_eq!(me["participant"]["state"], "waiting");
    assert_eq!(me["meeting"]["status"], "created");
    // The ticket's own uses still work: its holder's state, and joining.
    let (status, _) = app
        .bearer("GET", &format!("{base}/me"), waiting, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, joined) = app
        .bearer("POST", &format!("{base}/join"), waiting, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    // Joined, the host moderates with the access token the join answered.
    let access = joined["api_token"].as_str().unwrap();
    let (status, list) = app
        .bearer(
            "GET",
            &format!("{base}/participants?state=waiting"),
            access,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["participants"].as_array().unwrap().len(), 2);
    let (status, answer) = app
        .bearer(
            "POST",
            &format!("{base}/participants/pat/admit"),
            access,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The waiting token stays a ticket after its holder joined.
    let (status, _) = app
        .bearer(
            "POST",
            &format!("{base}/participants/sam/admit"),
            waiting,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The API key always works.
    let (status, answer) = app
        .admin("POST", &format!("{base}/participants/sam/admit"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer} {other}");
    app.stop().await;
}

#[tokio::test]
async fn admin_credentials_are_checked_in_full() {
    let app = app().await;
    let response = app
        .client
        .get(app.url("/v1/meetings"))
        .basic_auth(common::KEY, Some("wrong-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .client
        .get(app.url("/v1/meetings"))
        .basic_auth("APInobody", Some(common::SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // What LiveKit's server SDKs mint works as an admin credential.
    let sdk_token =
        livekit_api::access_token::AccessToken::with_api_key(common::KEY, common::SECRET)
            .with_grants(livekit_api::access_token::VideoGrants {
                room_create: true,
                room_list: true,
                ..Default::default()
            })
            .to_jwt()
            .unwrap();
    let (status, body) = app
        .bearer(
            "POST",
            "/v1/meetings",
            &sdk_token,
            Some(json!({"name": "from sdk"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A join-only LiveKit token is not.
    let join_only =
        livekit_api::access_token::AccessToken::with_api_key(common::KEY, common::SECRET)
            .with_identity("x")
            .with_grants(livekit_api::access_token::VideoGrants {
                room_join: true,
                room: "r".into(),
                ..Default::default()
            })
            .to_jwt()
            .unwrap();
    assert_eq!(
        app.bearer("GET", "/v1/meetings", &join_only, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

async fn service() -> (Meetings, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = convene_store::SqlStore::sqlite(&dir.path().join("t.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let meetings = Meetings::new(
        Arc::new(store),
        Arc::new(convene::SystemClock),
        Arc::new(convene::OsEntropy),
        Arc::new(NoMedia),
        Arc::new(NoSink),
        Default::default(),
    );
    (meetings, dir)
}

fn settings() -> MeetingSettings {
    MeetingSettings::new(
        DisplayName::parse("m").unwrap(),
        Mode::Meeting,
        WaitingPolicy::Open,
    )
}

#[tokio::test]
async fn a_hundred_consecutive_failures_lock_the_meetings_credential_checks() {
    let (meetings, _dir) = service().await;
    let meeting = meetings
        .create_meeting(NewMeeting {
            id: None,
            digits: None,
            room_name: None,
            settings: settings(),
            host_credential: None,
            participant_credential: None,
            viewer_credential: None,
        })
        .await
        .unwrap();
    let id = meeting.id.to_string();
    let good = meeting.credentials.participant.reveal().to_owned();
    let name = || DisplayName::parse("x").unwrap();
    // A success resets the count of consecutive failures.
    for attempt in 0..99 {
        let err = meetings
            .enter(
                &id,
                "wrong",
                name(),
                None,
                &format!("10.0.{}.{}", attempt / 250, attempt % 250),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::MeetingAccessDenied);
    }
    assert!(
        meetings
            .enter(&id, &good, name(), None, "10.9.9.9")
            .await
            .is_ok()
    );
    for attempt in 0..100 {
        meetings
            .enter(
                &id,
                "wrong",
                name(),
                None,
                &format!("10.1.{}.{}", attempt / 250, attempt % 250),
            )
            .await
            .unwrap_err();
    }
    // Locked now, even for the right credential and a fresh address; counters live in the store.
    let err = meetings
        .enter(&id, &good, name(), None, "10.8.8.8")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::LockedOut);
    assert_eq!(ErrorCode::LockedOut.http_status(), 429);
}

/// A clock the test moves by hand.
struct StepClock(std::sync::atomic::AtomicI64);

impl convene_core::time::Clock for StepClock {
    fn now(&self) -> convene_core::time::Timestamp {
        convene_core::time::Timestamp::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl StepClock {
    fn advance_millis(&self, millis: i64) {
        self.0
            .fetch_add(millis, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_host_credential_still_enters_a_meeting_locked_by_wrong_pins() {
    let dir = tempfile::tempdir().unwrap();
    let store = convene_store::SqlStore::sqlite(&dir.path().join("t.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let clock = Arc::new(StepClock(1_800_000_000_000.into()));
    let meetings = Meetings::new(
        Arc::new(store),
        clock.clone(),
        Arc::new(convene::OsEntropy),
        Arc::new(NoMedia),
        Arc::new(NoSink),
        Default::default(),
    );
    let meeting = meetings
        .create_meeting(NewMeeting {
            id: None,
            digits: None,
            room_name: None,
            settings: settings(),
            host_credential: None,
            participant_credential: None,
            viewer_credential: None,
        })
        .await
        .unwrap();
    let id = meeting.id.to_string();
    let host = meeting.credentials.host.reveal().to_owned();
    let guest = meeting.credentials.participant.reveal().to_owned();
    let viewer = meeting.credentials.viewer.reveal().to_owned();
    let name = || DisplayName::parse("x").unwrap();
    let mut addresses = (0..).map(|n: u32| format!("10.2.{}.{}", n / 250, n % 250));
    let mut enter = async |credential: &str| {
        let address = addresses.next().unwrap();
        meetings
            .enter(&id, credential, name(), None, &address)
            .await
            .map(|(_, p)| p.role)
            .map_err(|e| e.code())
    };
    // An attacker locks the meeting's PIN checks with 100 wrong PINs.
    for _ in 0..100 {
        assert_eq!(enter("wrong").await, Err(ErrorCode::MeetingAccessDenied));
    }
    assert_eq!(enter(&guest).await, Err(ErrorCode::LockedOut));
    assert_eq!(enter(&viewer).await, Err(ErrorCode::LockedOut));
    assert_eq!(enter("wrong").await, Err(ErrorCode::LockedOut));
    // The host still gets in.
    assert_eq!(
        enter(&host).await,
        Ok(convene_core::participant::Role::Host)
    );
    // Guesses go on while the PIN checks are locked: they can only be meant for the host
    // credential, so they count against it, and after 100 it locks too.
    clock.advance_millis(500);
    for _ in 0..100 {
        assert_eq!(enter("wrong").await, Err(ErrorCode::LockedOut));
    }
    assert_eq!(enter(&host).await, Err(ErrorCode::LockedOut));
    // The API key is never locked out.
    let (_, placed) = meetings
        .enter_trusted(
            &meeting.id,
            convene_core::ids::Identity::parse("by-admin").unwrap(),
            name(),
            convene_core::participant::Role::Host,
        )
        .await
        .unwrap();
    assert_eq!(placed.role, convene_core::participant::Role::Host);
    // Each lock lasts 1 s after its 100th failure: the PIN checks' runs out first, and the host's
    // failures did not extend it.
    clock.advance_millis(700);
    assert_eq!(
        enter(&guest).await,
        Ok(convene_core::participant::Role::Speaker)
    );
    assert_eq!(enter(&host).await, Err(ErrorCode::LockedOut));
    clock.advance_millis(400);
    assert_eq!(
        enter(&host).await,
        Ok(convene_core::participant::Role::Host)
    );
}

#[tokio::test]
async fn one_address_is_limited_across_meetings() {
    let (meetings, _dir) = service().await;
    let name = || DisplayName::parse("x").unwrap();
    for _ in 0..30 {
        let err = meetings
            .enter("1234567890", "guess", name(), None, "192.0.2.7")
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::MeetingAccessDenied);
    }
    let err = meetings
        .enter("9876543210", "guess", name(), None, "192.0.2.7")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
    assert!(
        meetings
            .enter("9876543210", "guess", name(), None, "192.0.2.8")
            .await
            .unwrap_err()
            .code()
            == ErrorCode::MeetingAccessDenied
    );
}

#[tokio::test]
async fn unauthenticated_calls_are_rate_limited_in_memory_too() {
    // Right credentials, which the store's lockouts never count: only the in-memory limit, set
    // low here, refuses them (at once: 3 calls, then 1 a second).
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[
            ("CONVENE_RATE_LIMIT_PER_ADDRESS", "1"),
            ("CONVENE_RATE_LIMIT_BURST", "3"),
        ],
    )
    .await
    .unwrap();
    let meeting = app.create_meeting(json!({"name": "m"})).await;
    let path = format!(
        "/v1/meetings/{}/enter",
        meeting["meeting_id"].as_str().unwrap()
    );
    let pin = meeting["credentials"]["participant"].as_str().unwrap();
    let mut statuses = Vec::new();
    for n in 0..6 {
        let body = json!({"credential": pin, "name": format!("guest {n}")});
        let (status, body) = app.anonymous("POST", &path, Some(body)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3], "{statuses:?}");
    assert!(
        statuses[3..].contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_crowd_behind_one_address_enters_and_a_guesser_there_is_still_locked_out() {
    // 2,000 people behind one company's NAT click the link: the default limits let every one of
    // them in (2,000 at once, then 200 a second), while wrong guesses from that same address
    // still meet the store's lockout after 30.
    let app = app().await;
    let meeting = app.create_meeting(json!({"name": "town hall"})).await;
    let path = format!(
        "/v1/meetings/{}/enter",
        meeting["meeting_id"].as_str().unwrap()
    );
    let pin = meeting["credentials"]["participant"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = std::time::Instant::now();
    let app = Arc::new(app);
    let mut workers = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..32 {
        let (app, path, pin, next) = (app.clone(), path.clone(), pin.clone(), next.clone());
        workers.spawn(async move {
            let mut refused = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= 2_000 {
                    return refused;
                }
                let body = json!({"credential": pin, "name": format!("guest {n}")});
                let (status, body) = app.anonymous("POST", &path, Some(body)).await;
                if status != StatusCode::OK {
                    refused.push(format!("{status} {body}"));
                }
            }
        });
    }
    let mut refused = Vec::new();
    while let Some(done) = workers.join_next().await {
        refused.extend(done.unwrap());
    }
    let elapsed = started.elapsed();
    println!(
        "2,000 entries from one address in {:.2} s ({:.0}/s, debug build)",
        elapsed.as_secs_f64(),
        2_000.0 / elapsed.as_secs_f64()
    );
    assert!(
        refused.is_empty(),
        "{} of 2,000 refused, e.g. {:?}",
        refused.len(),
        refused.first()
    );
    // The guesser at the same address: 30 wrong guesses are answered as wrong, then the address
    // is locked out.
    for _ in 0..30 {
        let body = json!({"credential": "00000000", "name": "guesser"});
        let (status, body) = app.anonymous("POST", &path, Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let body = json!({"credential": "00000000", "name": "guesser"});
    let (status, body) = app.anonymous("POST", &path, Some(body)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    Arc::into_inner(app).unwrap().stop().await;
}

/// The guessing limits are the deployment's settings: with 3 wrong guesses per address allowed,
/// the fourth is refused, and then so is that address's right credential, until the window ends;
/// with 2 consecutive failures per meeting, the meeting's checks lock for every address.
#[tokio::test]
async fn the_guessing_limits_are_the_deployments_settings() {
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[
            ("CONVENE_RATE_LIMIT_GUESSES_PER_ADDRESS", "3"),
            ("CONVENE_RATE_LIMIT_GUESSES_PER_MEETING", "5"),
            // The guesses come from several addresses, through a proxy on loopback.
            ("CONVENE_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let (status, body) = guess(&app, Some("198.51.100.7")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = guess(&app, Some("198.51.100.7")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");

    // Per meeting: five wrong guesses from five addresses lock the meeting's checks.
    let meeting = app.create_meeting(json!({"name": "m"})).await;
    let path = format!(
        "/v1/meetings/{}/enter",
        meeting["meeting_id"].as_str().unwrap()
    );
    let wrong = |n: u8| {
        app.client
            .post(app.url(&path))
            .header("x-forwarded-for", format!("203.0.113.{n}"))
            .json(&json!({"credential": "00000000", "name": "x"}))
            .send()
    };
    for n in 0..5 {
        assert_eq!(wrong(n).await.unwrap().status(), StatusCode::FORBIDDEN);
    }
    let locked = wrong(9).await.unwrap();
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "locked_out");
    app.stop().await;
}

/// One wrong guess at `/enter`, with this `X-Forwarded-For` if any.
async fn guess(app: &TestApp, forwarded: Option<&str>) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(format!("{}/v1/meetings/1234567890/enter", app.base))
        .json(&json!({"credential": "1", "name": "x"}));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn guess_forwarded(app: &TestApp, forwarded: &str) -> StatusCode {
    guess(app, Some(forwarded)).await.0
}

/// Up to 60 rapid wrong guesses, the n-th with `forwarded(n)` as `X-Forwarded-For`: the body of
/// the first answer that is 429, if one is.
async fn guess_until_limited(
    app: &TestApp,
    forwarded: impl Fn(usize) -> Option<String>,
) -> Option<Value> {
    for n in 0..60 {
        let (status, body) = guess(app, forwarded(n).as_deref()).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Some(body);
        }
    }
    None
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_apply_per_forwarded_client() {
    // The test client connects from 127.0.0.1, standing in for the reverse proxy.
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[("CONVENE_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await
    .unwrap();
    let limited = guess_until_limited(&app, |_| Some("203.0.113.1".into())).await;
    assert!(
        limited.is_some(),
        "60 rapid guesses from one forwarded client must be limited"
    );
    // Other clients behind the same proxy are not held back by the first one's guesses (without
    // the header a request is the proxy's own)...
    let (status, body) = guess(&app, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        guess_forwarded(&app, "203.0.113.2").await,
        StatusCode::FORBIDDEN
    );
    // ...and the limited client cannot escape by prepending an address of its choosing.
    assert_eq!(
        guess_forwarded(&app, "198.51.100.77, 203.0.113.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

#[tokio::test]
async fn an_ipv6_client_is_one_client_across_its_64() {
    let app = TestApp::start_with(
        StoreKind::Sqlite,
        &[("CONVENE_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await
    .unwrap();
    // A client that owns a /64 rotates the host part on every guess: the limits still hold it,
    // the in-memory rate limit and the store's failure counter alike...
    let limited = guess_until_limited(&app, |n| Some(format!("2001:db8:7:7::{:x}", n + 1))).await;
    assert!(
        limited.is_some(),
        "rotating addresses inside one /64 must not evade the per-address limit"
    );
    // ...while a neighbouring /64 is another client.
    assert_eq!(
        guess_forwarded(&app, "2001:db8:7:8::1").await,
        StatusCode::FORBIDDEN
    );
    app.stop().await;
}

#[tokio::test]
async fn without_trusted_proxies_x_forwarded_for_is_ignored() {
    let app = app().await;
    // A client rotating forged addresses is still one address.
    let limited = guess_until_limited(&app, |n| Some(format!("203.0.113.{n}"))).await;
    assert!(
        limited.is_some(),
        "forged X-Forwarded-For must not evade the per-address limit"
    );
    app.stop().await;
}

/// The Bearer scheme is read in any case (RFC 7235) on every surface the server carries: the
/// native API, LiveKit's RoomService and the SFU's `/rtc/validate`.
#[tokio::test]
async fn every_surface_reads_the_bearer_scheme_in_any_case() {
    let app = app().await;
    let meeting = app
        .create_meeting(json!({"name": "Cases", "policy": "open"}))
        .await;
    let id = meeting["meeting_id"].as_str().unwrap();
    let pin = meeting["credentials"]["participant"].as_str().unwrap();
    let entered = app.enter(&meeting, pin, "casey").await;
    let joined = app.join(id, entered["token"].as_str().unwrap()).await;
    let access = joined["access_token"].as_str().unwrap();
    let api = joined["api_token"].as_str().unwrap();
    let server = livekit_api::access_token::AccessToken::with_api_key(common::KEY, common::SECRET)
        .with_grants(livekit_api::access_token::VideoGrants {
            room_list: true,
            ..Default::default()
        })
        .to_jwt()
        .unwrap();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let authorization = |token: &str| format!("{scheme} {token}");
        let native = app
            .client
            .get(app.url(&format!("/v1/meetings/{id}/events?after=0")))
            .header(reqwest::header::AUTHORIZATION, authorization(api))
            .send()
            .await
            .unwrap();
        assert_eq!(native.status(), StatusCode::OK, "native API, {scheme}");
        let room_service = app
            .client
            .post(app.url("/twirp/livekit.RoomService/ListRooms"))
            .header(reqwest::header::AUTHORIZATION, authorization(&server))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            room_service.status(),
            StatusCode::OK,
            "RoomService, {scheme}"
        );
        let validate = app
            .client
            .get(app.url("/rtc/validate"))
            .header(reqwest::header::AUTHORIZATION, authorization(access))
            .send()
            .await
            .unwrap();
        assert_eq!(validate.status(), StatusCode::OK, "/rtc/validate, {scheme}");
    }
    app.stop().await;
}

/// A clock the test moves.
struct ManualClock(std::sync::Mutex<convene_core::Timestamp>);

impl convene_core::time::Clock for ManualClock {
    fn now(&self) -> convene_core::Timestamp {
        *self.0.lock().unwrap()
    }
}

/// API keys are read from memory for a short while (every call made with the key checks it): a
/// key revoked by another process (`convene api-key revoke`, another node) stops working within
/// `KEY_CACHE_TTL`; revoked through this service, at once.
#[tokio::test]
async fn a_key_revoked_elsewhere_stops_working_within_the_cache_ttl() {
    use convene_core::ports::Store;
    use convene_core::service::{ApiKeys, KEY_CACHE_TTL};
    let dir = tempfile::tempdir().unwrap();
    let store = convene_store::SqlStore::sqlite(&dir.path().join("t.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let start = convene_core::Timestamp::from_millis(1_800_000_000_000);
    let clock = Arc::new(ManualClock(std::sync::Mutex::new(start)));
    let keys = ApiKeys::new(store.clone(), clock.clone(), Arc::new(convene::OsEntropy));
    let key = keys.create("held").await.unwrap();
    assert!(keys.get(&key.id).await.unwrap().unwrap().is_active());

    // Revoked in the store by someone else: still held for a moment, then read again.
    assert!(store.revoke_api_key(&key.id, start).await.unwrap());
    assert!(keys.get(&key.id).await.unwrap().unwrap().is_active());
    *clock.0.lock().unwrap() = start.plus(KEY_CACHE_TTL);
    assert!(!keys.get(&key.id).await.unwrap().unwrap().is_active());

    // Revoked here: at once.
    let other = keys.create("other").await.unwrap();
    assert!(keys.get(&other.id).await.unwrap().unwrap().is_active());
    keys.revoke(&other.id).await.unwrap();
    assert!(!keys.get(&other.id).await.unwrap().unwrap().is_active());
}
