//! Seed 000 (`/compat/waiting-room`): every documented request replayed as JSON and as a form,
//! every documented field and the error shape checked, plus the unhappy paths and the
//! waiting-room document reaching the guest through the event channel.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{BOTH, Encoding, Reply, TestApp, basic, claims};
use convene_api::Limits;
use serde_json::{Value, json};

const BASE: &str = "/compat/waiting-room";

fn path(route: &str) -> String {
    format!("{BASE}{route}")
}

/// The seed's error shape: a JSON string starting with `Error: `.
fn assert_error(reply: &Reply, status: StatusCode, contains: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    let text = reply
        .body
        .as_str()
        .unwrap_or_else(|| panic!("error body is not a JSON string: {:?}", reply.body));
    assert!(text.starts_with("Error: "), "{text}");
    assert!(
        text.contains(contains),
        "{text:?} should contain {contains:?}"
    );
}

async fn create(app: &TestApp, encoding: Encoding, params: Value) -> String {
    let reply = app
        .post(encoding, &path("/admin/create"), params, Some(&basic()))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(
        reply.body["meeting_id"].is_u64(),
        "meeting_id is a JSON number: {:?}",
        reply.body
    );
    reply.body["meeting_id"].as_u64().unwrap().to_string()
}

async fn enter(app: &TestApp, encoding: Encoding, meeting_id: &str) -> Value {
    let reply = app
        .post(
            encoding,
            &path("/user/enter-waiting-room"),
            json!({ "meeting_id": meeting_id }),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn documented_flow_as_json_and_as_form() {
    for encoding in BOTH {
        let app = TestApp::start().await;

        // /admin/create: exactly n_digits digits; the default is the server's MEETING_ID_DIGITS,
        // brought up to the surface's minimum of 10 (the server's is 9 here).
        let twelve = create(&app, encoding, json!({ "n_digits": 12 })).await;
        assert_eq!(twelve.len(), 12);
        let meeting_id = create(&app, encoding, json!({})).await;
        assert_eq!(meeting_id.len(), 10);

        // /user/enter-waiting-room: document, identity, token (+ events_url and the document's state).
        let guest = enter(&app, encoding, &meeting_id).await;
        let document = guest["document"].as_str().unwrap();
        assert_eq!(document, format!("waiting-room.{meeting_id}"));
        let identity = guest["identity"].as_str().unwrap().to_owned();
        assert!(identity.starts_with("guest-"));
        let waiting_token = guest["token"].as_str().unwrap().to_owned();
        assert_eq!(
            guest["events_url"],
            format!("http://convene.test/v1/meetings/{meeting_id}/events")
        );
        assert_eq!(
            guest["state"],
            json!({ "room_open": false, "room_id": null, "meeting_status": "created" })
        );
        // The waiting-room token grants no media.
        let waiting_claims = claims(&waiting_token);
        assert_eq!(waiting_claims["sub"], identity);
        assert_ne!(waiting_claims["video"]["roomJoin"], json!(true));

        // A guest joining before the admin is refused.
        let early = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": meeting_id, "room_id": meeting_id, "identity": identity }),
                None,
            )
            .await;
        assert_error(&early, StatusCode::FORBIDDEN, "has not started");

        // The guest follows its document: on the event channel, with its own token.
        let before = app.events(&meeting_id, &waiting_token, 0).await;
        assert_eq!(before.status, StatusCode::OK);
        let seen_before = before.body["next_after"].as_u64().unwrap();
        let state = app
            .post(
                encoding,
                &path("/user/waiting-room-state"),
                json!({ "token": waiting_token }),
                None,
            )
            .await;
        assert_eq!(state.status, StatusCode::OK, "{:?}", state.body);
        assert_eq!(state.body["document"], document);
        assert_eq!(state.body["state"]["room_open"], false);

        // /admin/join: room_id, identity, token; the first join starts the meeting.
        let admin = app
            .post(
                encoding,
                &path("/admin/join"),
                json!({ "meeting_id": meeting_id }),
                Some(&basic()),
            )
            .await;
        assert_eq!(admin.status, StatusCode::OK, "{:?}", admin.body);
        let room_id = admin.body["room_id"].as_str().unwrap().to_owned();
        let admin_identity = admin.body["identity"].as_str().unwrap();
        let admin_claims = claims(admin.body["token"].as_str().unwrap());
        assert_eq!(admin_claims["sub"], admin_identity);
        assert_eq!(admin_claims["video"]["room"], room_id);
        assert_eq!(admin_claims["video"]["canPublish"], true);
        assert_eq!(admin_claims["video"]["roomAdmin"], true);

        // The waiting guest is told at once, through the event channel, with its own token.
        let events = app
            .event_types(&meeting_id, &waiting_token, seen_before)
            .await;
        assert!(
            events
                .iter()
                .any(|(t, d)| t == "meeting.started" && d["room_name"] == room_id),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|(t, d)| t == "participant.admitted" && d["identity"] == identity.as_str()),
            "{events:?}"
        );
        let state = app
            .post(
                encoding,
                &path("/user/waiting-room-state"),
                json!({}),
                Some(&format!("Bearer {waiting_token}")),
            )
            .await;
        assert_eq!(
            state.body["state"],
            json!({ "room_open": true, "room_id": room_id, "meeting_status": "live" })
        );

        // /user/join: room_id, identity, token for that room and identity.
        let joined = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": meeting_id, "room_id": room_id, "identity": identity }),
                None,
            )
            .await;
        assert_eq!(joined.status, StatusCode::OK, "{:?}", joined.body);
        assert_eq!(joined.body["room_id"], room_id);
        assert_eq!(joined.body["identity"], identity.as_str());
        let guest_claims = claims(joined.body["token"].as_str().unwrap());
        assert_eq!(guest_claims["sub"], identity.as_str());
        assert_eq!(guest_claims["video"]["room"], room_id);
        assert_eq!(guest_claims["video"]["roomJoin"], true);
        assert_eq!(guest_claims["video"]["canPublish"], true);
        assert_ne!(guest_claims["video"]["roomAdmin"], json!(true));

        // Once joined, the identity alone is no longer enough (it is visible in the room)...
        let again = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": meeting_id, "room_id": room_id, "identity": identity }),
                None,
            )
            .await;
        assert_error(&again, StatusCode::FORBIDDEN, "joined already");
        // ...but the guest's own waiting-room token proves it.
        let with_token = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": meeting_id, "room_id": room_id, "identity": identity, "token": waiting_token }),
                None,
            )
            .await;
        assert_eq!(with_token.status, StatusCode::OK, "{:?}", with_token.body);

        // A guest arriving after the admin is let in at once.
        let late = enter(&app, encoding, &meeting_id).await;
        assert_eq!(
            late["state"],
            json!({ "room_open": true, "room_id": room_id, "meeting_status": "live" })
        );
    }
}

#[tokio::test]
async fn all_waiting_guests_are_let_in_by_the_first_admin_join() {
    let app = TestApp::start().await;
    let meeting_id = create(&app, Encoding::Json, json!({ "n_digits": 11 })).await;
    let mut guests = Vec::new();
    for _ in 0..5 {
        guests.push(enter(&app, Encoding::Form, &meeting_id).await);
    }
    let admin = app
        .post(
            Encoding::Json,
            &path("/admin/join"),
            json!({ "meeting_id": meeting_id }),
            Some(&basic()),
        )
        .await;
    assert_eq!(admin.status, StatusCode::OK);
    let mut admitted_at = Vec::new();
    for guest in &guests {
        let token = guest["token"].as_str().unwrap();
        let page = app.events(&meeting_id, token, 0).await;
        let own = page.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                e["type"] == "participant.admitted" && e["data"]["identity"] == guest["identity"]
            })
            .cloned()
            .unwrap_or_else(|| panic!("{} was not told: {:?}", guest["identity"], page.body));
        admitted_at.push(own["at"].clone());
        // A guest sees its own admission, not the others'.
        let others = page.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["type"] == "participant.admitted" && e["data"]["identity"] != guest["identity"]
            })
            .count();
        assert_eq!(others, 0);
        // Nor hosts-only events.
        assert!(
            page.body["events"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["type"] != "meeting.created")
        );
    }
    // One change admitted everyone: the same instant for all.
    assert!(
        admitted_at.windows(2).all(|w| w[0] == w[1]),
        "{admitted_at:?}"
    );
}

#[tokio::test]
async fn missing_and_malformed_parameters_are_400s() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        for (route, auth) in [
            ("/admin/join", Some(basic())),
            ("/user/enter-waiting-room", None),
            ("/user/join", None),
        ] {
            let reply = app
                .post(encoding, &path(route), json!({}), auth.as_deref())
                .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "missing meeting_id");
        }
        let meeting_id = create(&app, encoding, json!({})).await;
        let reply = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": meeting_id }),
                None,
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "missing room_id");
        let reply = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": meeting_id, "room_id": meeting_id }),
                None,
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "missing identity");
        let reply = app
            .post(
                encoding,
                &path("/user/enter-waiting-room"),
                json!({ "meeting_id": "12ab" }),
                None,
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "meeting_id");
        for digits in [json!(3), json!(9), json!(16), json!("six")] {
            let reply = app
                .post(
                    encoding,
                    &path("/admin/create"),
                    json!({ "n_digits": digits }),
                    Some(&basic()),
                )
                .await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "n_digits");
        }
        let reply = app
            .post(encoding, &path("/user/waiting-room-state"), json!({}), None)
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "missing token");
    }
    let malformed = Request::post(path("/user/enter-waiting-room"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    assert_error(&app.send(malformed).await, StatusCode::BAD_REQUEST, "JSON");
    let get = Request::get(path("/admin/create"))
        .body(Body::empty())
        .unwrap();
    assert_error(&app.send(get).await, StatusCode::BAD_REQUEST, "POST");
    let unknown = Request::post(path("/admin/nope"))
        .body(Body::empty())
        .unwrap();
    assert_error(
        &app.send(unknown).await,
        StatusCode::NOT_FOUND,
        "no such route",
    );
}

#[tokio::test]
async fn admin_calls_need_the_api_key() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        for auth in [
            None,
            Some("Basic QVBJY29tcGF0dGVzdHM6d3Jvbmc="),
            Some("Bearer not.a.token"),
        ] {
            let reply = app
                .post(encoding, &path("/admin/create"), json!({}), auth)
                .await;
            assert_error(&reply, StatusCode::FORBIDDEN, "API key");
            let reply = app
                .post(
                    encoding,
                    &path("/admin/join"),
                    json!({ "meeting_id": "123456789" }),
                    auth,
                )
                .await;
            assert_error(&reply, StatusCode::FORBIDDEN, "API key");
        }
        // A guest's waiting-room token is not an admin credential.
        let meeting_id = create(&app, encoding, json!({})).await;
        let guest = enter(&app, encoding, &meeting_id).await;
        let bearer = format!("Bearer {}", guest["token"].as_str().unwrap());
        let reply = app
            .post(
                encoding,
                &path("/admin/join"),
                json!({ "meeting_id": meeting_id }),
                Some(&bearer),
            )
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "API key");
    }
}

#[tokio::test]
async fn unknown_meetings_are_404s() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        let reply = app
            .post(
                encoding,
                &path("/admin/join"),
                json!({ "meeting_id": "987654321" }),
                Some(&basic()),
            )
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "meeting not found");
        let reply = app
            .post(
                encoding,
                &path("/user/enter-waiting-room"),
                json!({ "meeting_id": "987654321" }),
                None,
            )
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "meeting not found");
        let reply = app
            .post(
                encoding,
                &path("/user/join"),
                json!({ "meeting_id": "987654321", "room_id": "987654321", "identity": "guest-x" }),
                None,
            )
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "meeting not found");
    }
    // Meetings of the native API (or another surface) are not this surface's.
    let native = app
        .send(
            Request::post("/v1/meetings")
                .header(header::AUTHORIZATION, basic())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({ "name": "native" }).to_string()))
                .unwrap(),
        )
        .await;
    assert!(native.status.is_success(), "{:?}", native.body);
    let native_id = native.body["meeting_id"].as_str().unwrap();
    let reply = app
        .post(
            Encoding::Json,
            &path("/user/enter-waiting-room"),
            json!({ "meeting_id": native_id }),
            None,
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "meeting not found");
}

#[tokio::test]
async fn user_join_needs_the_handed_out_identity_and_the_current_room() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        let meeting_id = create(&app, encoding, json!({})).await;
        let other_meeting = create(&app, encoding, json!({})).await;
        let guest = enter(&app, encoding, &meeting_id).await;
        let stranger = enter(&app, encoding, &other_meeting).await;
        let admin = app
            .post(
                encoding,
                &path("/admin/join"),
                json!({ "meeting_id": meeting_id }),
                Some(&basic()),
            )
            .await;
        let room_id = admin.body["room_id"].as_str().unwrap().to_owned();
        let join_path = path("/user/join");
        let join = |identity: Value, room: Value, token: Option<Value>| {
            let mut params =
                json!({ "meeting_id": meeting_id, "room_id": room, "identity": identity });
            if let Some(token) = token {
                params["token"] = token;
            }
            app.post(encoding, &join_path, params, None)
        };
        // An identity nobody handed out, another meeting's guest, or the host's identity.
        assert_error(
            &join(json!("guest-madeup123456"), json!(room_id), None).await,
            StatusCode::FORBIDDEN,
            "did not enter",
        );
        assert_error(
            &join(stranger["identity"].clone(), json!(room_id), None).await,
            StatusCode::FORBIDDEN,
            "did not enter",
        );
        assert_error(
            &join(admin.body["identity"].clone(), json!(room_id), None).await,
            StatusCode::FORBIDDEN,
            "did not enter",
        );
        // Another meeting's token for this identity.
        assert_error(
            &join(
                guest["identity"].clone(),
                json!(room_id),
                Some(stranger["token"].clone()),
            )
            .await,
            StatusCode::FORBIDDEN,
            "another meeting or identity",
        );
        assert_error(
            &join(
                guest["identity"].clone(),
                json!(room_id),
                Some(json!("garbage")),
            )
            .await,
            StatusCode::FORBIDDEN,
            "invalid token",
        );
        // Not the current room.
        assert_error(
            &join(guest["identity"].clone(), json!(other_meeting), None).await,
            StatusCode::BAD_REQUEST,
            "room_id",
        );
        // The right identity and room.
        let ok = join(guest["identity"].clone(), json!(room_id), None).await;
        assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    }
}

#[tokio::test]
async fn enter_waiting_room_is_rate_limited() {
    let app = TestApp::start_with(None, Limits::new(1, 1000)).await;
    let meeting_id = create(&app, Encoding::Json, json!({})).await;
    let mut limited = None;
    for _ in 0..10 {
        let reply = app
            .post(
                Encoding::Form,
                &path("/user/enter-waiting-room"),
                json!({ "meeting_id": meeting_id }),
                None,
            )
            .await;
        if reply.status != StatusCode::OK {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("the per-address limit (1/s, burst 2) stops ten calls in a row");
    assert_error(&limited, StatusCode::FORBIDDEN, "too many requests");
}

#[tokio::test]
async fn n_digits_below_the_minimum_are_refused() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        for digits in [4, 6, 9] {
            let reply = app
                .post(
                    encoding,
                    &path("/admin/create"),
                    json!({ "n_digits": digits }),
                    Some(&basic()),
                )
                .await;
            assert_error(
                &reply,
                StatusCode::BAD_REQUEST,
                "n_digits must be between 10 and 15",
            );
        }
        assert_eq!(
            create(&app, encoding, json!({ "n_digits": 10 }))
                .await
                .len(),
            10
        );
        assert_eq!(
            create(&app, encoding, json!({ "n_digits": 15 }))
                .await
                .len(),
            15
        );
    }
}

/// Anonymous calls of the surface, from `client`, for `meeting_id`.
async fn guess(app: &TestApp, client: &str, route: &str, meeting_id: &str) -> Reply {
    app.post_from(
        Some(client),
        Encoding::Form,
        &path(route),
        json!({ "meeting_id": meeting_id, "room_id": meeting_id, "identity": "guest-abcdefghijkm" }),
        None,
    )
    .await
}

#[tokio::test]
async fn guessing_meeting_ids_locks_the_address_out() {
    let app = TestApp::start().await;
    let known = create(&app, Encoding::Json, json!({})).await;
    let attacker = "203.0.113.7";
    // Unknown ids answer the documented 404 while the address is not locked, on both
    // anonymous routes, and each counts against the address.
    for n in 0..30u64 {
        let route = if n % 2 == 0 {
            "/user/enter-waiting-room"
        } else {
            "/user/join"
        };
        let unknown = (4_000_000_000u64 + n).to_string();
        assert_error(
            &guess(&app, attacker, route, &unknown).await,
            StatusCode::NOT_FOUND,
            "meeting not found",
        );
    }
    // Now even a known id is refused with the lock answer, so the lock hides which ids exist.
    for route in ["/user/enter-waiting-room", "/user/join"] {
        assert_error(
            &guess(&app, attacker, route, &known).await,
            StatusCode::FORBIDDEN,
            "too many requests",
        );
    }
    assert_error(
        &guess(&app, attacker, "/user/enter-waiting-room", "4000000000").await,
        StatusCode::FORBIDDEN,
        "too many requests",
    );
    // Other addresses are not held back.
    let other = guess(&app, "198.51.100.20", "/user/enter-waiting-room", &known).await;
    assert_eq!(other.status, StatusCode::OK, "{:?}", other.body);
    // The lock lasts the window (10 minutes after the last failure), then the address may try again.
    app.advance(std::time::Duration::from_secs(9 * 60));
    assert_error(
        &guess(&app, attacker, "/user/enter-waiting-room", &known).await,
        StatusCode::FORBIDDEN,
        "too many requests",
    );
    app.advance(std::time::Duration::from_secs(61));
    let again = guess(&app, attacker, "/user/enter-waiting-room", &known).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
}

#[tokio::test]
async fn guessing_guest_identities_on_user_join_counts_too() {
    let app = TestApp::start().await;
    let meeting_id = create(&app, Encoding::Json, json!({})).await;
    let guest = app
        .post_from(
            Some("198.51.100.30"),
            Encoding::Form,
            &path("/user/enter-waiting-room"),
            json!({ "meeting_id": meeting_id }),
            None,
        )
        .await;
    assert_eq!(guest.status, StatusCode::OK, "{:?}", guest.body);
    let admin = app
        .post(
            Encoding::Json,
            &path("/admin/join"),
            json!({ "meeting_id": meeting_id }),
            Some(&basic()),
        )
        .await;
    let room_id = admin.body["room_id"].as_str().unwrap().to_owned();
    let join_path = path("/user/join");
    let join = |identity: String| {
        app.post_from(
            Some("203.0.113.8"),
            Encoding::Form,
            &join_path,
            json!({ "meeting_id": meeting_id, "room_id": room_id, "identity": identity }),
            None,
        )
    };
    for n in 0..30 {
        assert_error(
            &join(format!("guest-guess{n:07}")).await,
            StatusCode::FORBIDDEN,
            "did not enter",
        );
    }
    // Locked out: even the guest's real identity is refused from this address.
    assert_error(
        &join(guest.body["identity"].as_str().unwrap().to_owned()).await,
        StatusCode::FORBIDDEN,
        "too many requests",
    );
}

#[tokio::test]
async fn the_live_stream_surface_is_off_without_a_passcode() {
    let app = TestApp::start_with(None, Limits::default()).await;
    let reply = app
        .post(
            Encoding::Json,
            "/compat/live-stream/verify-passcode",
            json!({}),
            Some("anything"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_guests_token_is_read_from_a_bearer_scheme_in_any_case() {
    let app = TestApp::start().await;
    let meeting_id = create(&app, Encoding::Json, json!({})).await;
    let guest = enter(&app, Encoding::Json, &meeting_id).await;
    let waiting_token = guest["token"].as_str().unwrap();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let state = app
            .post(
                Encoding::Json,
                &path("/user/waiting-room-state"),
                json!({}),
                Some(&format!("{scheme} {waiting_token}")),
            )
            .await;
        assert_eq!(state.status, StatusCode::OK, "{scheme}: {:?}", state.body);
        assert_eq!(state.body["identity"], guest["identity"], "{scheme}");
    }
}
