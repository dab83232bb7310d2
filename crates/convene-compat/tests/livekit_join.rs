//! Seed 002 (LiveKit room-join function) in-process: the documented request and response as JSON
//! and as a form, the "Users" permission (a session for its own uid, or the admin key), rooms on
//! first join, and the error bodies.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{BOTH, Encoding, Reply, TestApp, basic, claims};
use convene_compat::CompatConfig;
use convene_core::apikey::ApiSecret;
use serde_json::json;

const JOIN: &str = "/compat/livekit-join/";

/// A session through seed 004's login; returns (token, uid).
async fn session(app: &TestApp, email: &str, name: &str) -> (String, String) {
    let send = format!("/compat/mesibo/api?op=login&appid=a&name={name}&email={email}");
    let sent = app
        .send(Request::get(&send).body(Body::empty()).unwrap())
        .await;
    assert_eq!(sent.body["result"], "OK", "{:?}", sent.body);
    let code = app.mailer.code_for(email);
    let ok = app
        .send(
            Request::get(format!("{send}&code={code}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ok.body["result"], "OK", "{:?}", ok.body);
    (
        ok.body["token"].as_str().unwrap().to_owned(),
        ok.body["uid"].as_u64().unwrap().to_string(),
    )
}

async fn join(
    app: &TestApp,
    encoding: Encoding,
    params: serde_json::Value,
    authorization: Option<&str>,
) -> Reply {
    app.post(encoding, JOIN, params, authorization).await
}

#[tokio::test]
async fn a_signed_in_user_joins_a_room_created_on_first_join() {
    let app = TestApp::start().await;
    let (token, uid) = session(&app, "ann@example.com", "Ann").await;
    let bearer = format!("Bearer {token}");
    for encoding in BOTH {
        let reply = join(
            &app,
            encoding,
            json!({"roomName": "jcbd-kdsn", "uid": uid}),
            Some(&bearer),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let body = reply.body.as_object().unwrap();
        let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["access_token", "livekit_socket_url", "msg"]);
        assert_eq!(body["msg"], "Success");
        assert_eq!(body["livekit_socket_url"], "ws://convene.test");
        let grant = claims(body["access_token"].as_str().unwrap());
        assert_eq!(grant["sub"], uid.as_str());
        assert_eq!(grant["name"], "Ann");
        assert_eq!(grant["video"]["room"], "jcbd-kdsn");
        assert_eq!(grant["video"]["roomJoin"], true);
        assert_eq!(grant["video"]["canPublish"], true);
    }
    let meeting = app
        .state
        .meetings
        .meeting_by_room(&convene_core::ids::RoomName::parse("jcbd-kdsn").unwrap())
        .await
        .unwrap();
    assert!(
        meeting.is_some_and(|m| m.is_live()),
        "the room exists and is live"
    );
    // Without the trailing slash too.
    let reply = app
        .post(
            Encoding::Json,
            "/compat/livekit-join",
            json!({"roomName": "other", "uid": uid}),
            Some(&bearer),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

#[tokio::test]
async fn missing_parameters_are_the_seeds_400() {
    let app = TestApp::start().await;
    let (token, uid) = session(&app, "bob@example.com", "Bob").await;
    let bearer = format!("Bearer {token}");
    for encoding in BOTH {
        let reply = join(&app, encoding, json!({"uid": uid}), Some(&bearer)).await;
        assert_eq!(
            (reply.status, reply.body.clone()),
            (
                StatusCode::BAD_REQUEST,
                json!({"msg": "Missing required parameter: roomName"})
            )
        );
        let reply = join(&app, encoding, json!({"roomName": "r"}), Some(&bearer)).await;
        assert_eq!(
            (reply.status, reply.body.clone()),
            (
                StatusCode::BAD_REQUEST,
                json!({"msg": "Missing required parameter: uid"})
            )
        );
        let reply = join(
            &app,
            encoding,
            json!({"roomName": "", "uid": uid}),
            Some(&bearer),
        )
        .await;
        assert_eq!(
            reply.body,
            json!({"msg": "Missing required parameter: roomName"})
        );
    }
    let long = "r".repeat(200);
    let reply = join(
        &app,
        Encoding::Json,
        json!({"roomName": long, "uid": uid}),
        Some(&bearer),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body["msg"]
            .as_str()
            .unwrap()
            .starts_with("Invalid parameter: roomName"),
        "{:?}",
        reply.body
    );
    let malformed = app
        .send(
            Request::post(JOIN)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, &bearer)
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.body["msg"].is_string());
}

#[tokio::test]
async fn only_users_may_call_and_only_for_themselves() {
    let app = TestApp::start().await;
    let (token, uid) = session(&app, "cy@example.com", "Cy").await;
    let (_, other_uid) = session(&app, "di@example.com", "Di").await;
    let params = json!({"roomName": "room", "uid": uid});
    for authorization in [None, Some("Bearer garbage"), Some("Basic Zm9vOmJhcg==")] {
        let reply = join(&app, Encoding::Json, params.clone(), authorization).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert!(
            reply.body["msg"]
                .as_str()
                .unwrap()
                .starts_with("Unauthorized")
        );
    }
    let reply = join(
        &app,
        Encoding::Json,
        json!({"roomName": "room", "uid": other_uid}),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body.clone()),
        (
            StatusCode::FORBIDDEN,
            json!({"msg": "uid is not the signed-in user"})
        )
    );

    // A media access token is not a session.
    let joined = join(
        &app,
        Encoding::Json,
        params.clone(),
        Some(&format!("Bearer {token}")),
    )
    .await;
    let access = joined.body["access_token"].as_str().unwrap();
    let reply = join(
        &app,
        Encoding::Json,
        params,
        Some(&format!("Bearer {access}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // The admin key names any uid, known or not.
    let reply = join(
        &app,
        Encoding::Form,
        json!({"roomName": "room", "uid": other_uid}),
        Some(&basic()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let grant = claims(reply.body["access_token"].as_str().unwrap());
    assert_eq!(
        (grant["sub"].as_str(), grant["name"].as_str()),
        (Some(other_uid.as_str()), Some("Di"))
    );
    let reply = join(
        &app,
        Encoding::Json,
        json!({"roomName": "room", "uid": "backend-bot"}),
        Some(&basic()),
    )
    .await;
    assert_eq!(
        claims(reply.body["access_token"].as_str().unwrap())["sub"],
        "backend-bot"
    );
}

#[tokio::test]
async fn users_cannot_walk_into_other_surfaces_meetings_and_bans_hold() {
    let app = TestApp::start().await;
    let (token, uid) = session(&app, "eve@example.com", "Eve").await;
    let bearer = format!("Bearer {token}");
    let created = app
        .post(
            Encoding::Json,
            "/v1/meetings",
            json!({"name": "Clinic", "policy": "ask_host"}),
            Some(&basic()),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let room = created.body["room_name"].as_str().unwrap().to_owned();
    let reply = join(
        &app,
        Encoding::Json,
        json!({"roomName": room, "uid": uid}),
        Some(&bearer),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    assert!(
        reply.body["msg"]
            .as_str()
            .unwrap()
            .starts_with("Error joining room")
    );

    // Banned from a room of this surface: refused with a clear 403.
    let joined = join(
        &app,
        Encoding::Json,
        json!({"roomName": "lobby", "uid": uid}),
        Some(&bearer),
    )
    .await;
    assert_eq!(joined.status, StatusCode::OK);
    let meeting = app
        .state
        .meetings
        .meeting_by_room(&convene_core::ids::RoomName::parse("lobby").unwrap())
        .await
        .unwrap()
        .unwrap();
    let banned = app
        .post(
            Encoding::Json,
            &format!("/v1/meetings/{}/participants/{uid}/ban", meeting.id),
            json!({"duration_seconds": 600}),
            Some(&basic()),
        )
        .await;
    assert_eq!(banned.status, StatusCode::OK, "{:?}", banned.body);
    let reply = join(
        &app,
        Encoding::Json,
        json!({"roomName": "lobby", "uid": uid}),
        Some(&bearer),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
}

#[tokio::test]
async fn an_external_livekit_signs_and_is_named() {
    let secret = "external-livekit-secret-0123456789-abcdef";
    let config = CompatConfig {
        livekit_api: Some(("APIexternal".into(), ApiSecret::parse(secret).unwrap())),
        livekit_socket_url: Some("wss://media.example.com".into()),
        ..CompatConfig::default()
    };
    let app = TestApp::start_with_config(config).await;
    let (token, uid) = session(&app, "fay@example.com", "Fay").await;
    let reply = join(
        &app,
        Encoding::Json,
        json!({"roomName": "ext", "uid": uid}),
        Some(&format!("Bearer {token}")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["livekit_socket_url"], "wss://media.example.com");
    let access = reply.body["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["iss"], "APIexternal");
    let verified = convene_token::verify_participant(
        access,
        &ApiSecret::parse(secret).unwrap(),
        app.state.meetings.now(),
        &[convene_token::TokenKind::Access],
    );
    assert!(
        verified.is_ok(),
        "signed with the external secret: {verified:?}"
    );
}

#[tokio::test]
async fn a_session_is_read_from_a_bearer_scheme_in_any_case() {
    let app = TestApp::start().await;
    let (token, uid) = session(&app, "cas@example.com", "Cas").await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let reply = join(
            &app,
            Encoding::Json,
            json!({"roomName": "any-case", "uid": uid}),
            Some(&format!("{scheme} {token}")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{scheme}: {:?}", reply.body);
    }
}

/// Joining again keeps the role the person has in the room (a host made host stays host, with the
/// host's grants); a newcomer speaks.
/// A join enters and joins the person in one change, with the events the two steps make in turn:
/// the first person starts the room; a newcomer is entered and admitted, then joined.
#[tokio::test]
async fn a_join_enters_and_joins_in_one_change_with_each_steps_events() {
    let app = TestApp::start().await;
    let admin = basic();
    // The room is made by the first join; count the commits of the second alone.
    let mut changes = Vec::new();
    for uid in ["first", "second"] {
        let before = app.store.commit_counts().changes;
        let answer = join(
            &app,
            Encoding::Json,
            json!({"roomName": "one-commit", "uid": uid}),
            Some(&admin),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        changes.push(app.store.commit_counts().changes - before);
    }
    assert_eq!(changes[1], 1, "a newcomer's join is one change");
    let room = convene_core::ids::RoomName::parse("one-commit").unwrap();
    let meeting = app
        .state
        .meetings
        .meeting_by_room(&room)
        .await
        .unwrap()
        .unwrap();
    let events = app
        .state
        .meetings
        .events_after(&meeting.id, 0, 100)
        .await
        .unwrap();
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let v = serde_json::to_value(e).unwrap();
            (
                v["type"].as_str().unwrap_or_default().to_owned(),
                v["data"]["identity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    let second: Vec<&str> = seen
        .iter()
        .filter(|(_, who)| who == "second")
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        second,
        [
            "participant.entered",
            "participant.admitted",
            "participant.joined"
        ],
        "{seen:?}"
    );
    let starts = seen.iter().filter(|(t, _)| t == "meeting.started").count();
    assert_eq!(starts, 1, "{seen:?}");
    let first_joined = seen
        .iter()
        .position(|(t, who)| t == "participant.joined" && who == "first")
        .expect("the first person joined");
    let started = seen
        .iter()
        .position(|(t, _)| t == "meeting.started")
        .unwrap();
    assert!(
        started < first_joined,
        "started before the first join: {seen:?}"
    );
    let first = app
        .state
        .meetings
        .participant(
            &meeting.id,
            &convene_core::ids::Identity::parse("first").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        first.state,
        convene_core::participant::ParticipantState::Joined
    );
}

#[tokio::test]
async fn a_host_stays_host_when_joining_again_and_newcomers_speak() {
    let app = TestApp::start().await;
    let admin = basic();
    let first = join(
        &app,
        Encoding::Json,
        json!({"roomName": "class", "uid": "teacher"}),
        Some(&admin),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let grant = claims(first.body["access_token"].as_str().unwrap());
    assert_ne!(grant["video"]["roomAdmin"], true, "a newcomer is a speaker");
    let room = convene_core::ids::RoomName::parse("class").unwrap();
    let meeting = app
        .state
        .meetings
        .meeting_by_room(&room)
        .await
        .unwrap()
        .unwrap();
    let teacher = convene_core::ids::Identity::parse("teacher").unwrap();
    app.state
        .meetings
        .set_role(
            &meeting.id,
            &convene_core::service::Caller::Admin,
            &teacher,
            convene_core::participant::Role::Host,
        )
        .await
        .unwrap();
    let again = join(
        &app,
        Encoding::Json,
        json!({"roomName": "class", "uid": "teacher"}),
        Some(&admin),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    let grant = claims(again.body["access_token"].as_str().unwrap());
    assert_eq!(grant["video"]["roomAdmin"], true, "{grant}");
    let pupil = join(
        &app,
        Encoding::Json,
        json!({"roomName": "class", "uid": "pupil"}),
        Some(&admin),
    )
    .await;
    let grant = claims(pupil.body["access_token"].as_str().unwrap());
    assert_eq!(grant["video"]["canPublish"], true);
    assert_ne!(grant["video"]["roomAdmin"], true);
}
