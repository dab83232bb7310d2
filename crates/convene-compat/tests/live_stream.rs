//! Seed 001 (`/compat/live-stream`): every documented request replayed with the documented bodies
//! as JSON and as a form, every documented field and the error shape checked, plus the passcode,
//! the unhappy paths, role moves, and the state documents reaching clients through the event
//! channel read with the handed-out tokens.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{BOTH, Encoding, PASSCODE, Reply, TestApp, claims};
use convene_core::lockout::FailureScope;
use serde_json::{Value, json};

const BASE: &str = "/compat/live-stream";

fn path(route: &str) -> String {
    format!("{BASE}{route}")
}

/// `{"error": {"message", "explanation"}}` and nothing else.
fn assert_error(reply: &Reply, status: StatusCode, message: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    let error = reply.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("not the error shape: {:?}", reply.body));
    assert_eq!(error.len(), 2, "{:?}", reply.body);
    assert_eq!(reply.body.as_object().unwrap().len(), 1, "{:?}", reply.body);
    assert!(
        error["explanation"].as_str().is_some_and(|e| !e.is_empty()),
        "{:?}",
        reply.body
    );
    assert_eq!(error["message"], message, "{:?}", reply.body);
}

struct Client<'a> {
    app: &'a TestApp,
    encoding: Encoding,
}

impl Client<'_> {
    async fn call(&self, route: &str, params: Value) -> Reply {
        self.app
            .post(self.encoding, &path(route), params, Some(PASSCODE))
            .await
    }

    async fn ok(&self, route: &str, params: Value) -> Value {
        let reply = self.call(route, params).await;
        assert_eq!(reply.status, StatusCode::OK, "{route}: {:?}", reply.body);
        reply.body
    }

    async fn state(&self, stream: &str, user: Option<&str>) -> Value {
        let mut params = json!({ "stream_name": stream });
        if let Some(user) = user {
            params["user_identity"] = json!(user);
        }
        self.ok("/stream-state", params).await
    }
}

fn can_publish(token: &Value) -> Value {
    claims(token.as_str().expect("token"))["video"]["canPublish"].clone()
}

async fn seen(app: &TestApp, meeting_id: &str, token: &Value, after: u64) -> Vec<(String, Value)> {
    app.event_types(meeting_id, token.as_str().unwrap(), after)
        .await
}

fn has(events: &[(String, Value)], kind: &str, identity: &str) -> bool {
    events
        .iter()
        .any(|(t, d)| t == kind && (d["identity"] == identity || d["from"] == identity))
}

#[tokio::test]
async fn documented_flow_as_json_and_as_form() {
    for encoding in BOTH {
        let app = TestApp::start().await;
        let client = Client {
            app: &app,
            encoding,
        };

        // /verify-passcode
        assert_eq!(
            client.ok("/verify-passcode", json!({})).await,
            json!({ "verified": true })
        );

        // /create-stream: the caller is the host; documented {token} plus convene's additions.
        let bob = client
            .ok(
                "/create-stream",
                json!({ "user_identity": "Bob", "stream_name": "demo" }),
            )
            .await;
        let bob_claims = claims(bob["token"].as_str().unwrap());
        assert_eq!(bob_claims["sub"], "Bob");
        assert_eq!(bob_claims["video"]["room"], "demo");
        assert_eq!(bob_claims["video"]["roomJoin"], true);
        assert_eq!(bob_claims["video"]["canPublish"], true);
        assert_eq!(bob_claims["video"]["roomAdmin"], true);
        assert_eq!(bob["role"], "host");
        let room_sid = bob["room_sid"].as_str().unwrap().to_owned();
        assert!(
            room_sid.starts_with("RM") && room_sid.len() == 34,
            "{room_sid}"
        );
        let meeting_id = bob["meeting_id"].as_str().unwrap().to_owned();
        assert_eq!(
            bob["events_url"],
            format!("http://convene.test/v1/meetings/{meeting_id}/events")
        );
        assert_eq!(
            bob["chat_url"],
            format!("http://convene.test/v1/meetings/{meeting_id}/chat")
        );
        assert_eq!(
            bob["documents"],
            json!({ "speakers": "speakers", "viewers": "viewers", "raised_hands": "raised_hands", "user": "user-Bob" })
        );
        let state = client.state("demo", None).await;
        assert_eq!(state["speakers"], json!({ "Bob": { "host": true } }));
        assert_eq!(state["room_sid"], room_sid);
        let mut host_seen = state["last_seq"].as_u64().unwrap();

        // /join-stream-as-viewer: subscribe only.
        let alice = client
            .ok(
                "/join-stream-as-viewer",
                json!({ "user_identity": "Alice", "stream_name": "demo" }),
            )
            .await;
        assert_eq!(can_publish(&alice["token"]), false);
        assert_eq!(
            claims(alice["token"].as_str().unwrap())["video"]["canSubscribe"],
            true
        );
        assert_eq!(alice["role"], "viewer");
        assert_eq!(alice["room_sid"], room_sid);
        assert_eq!(
            client.state("demo", None).await["viewers"],
            json!({ "Alice": { "connected": false } })
        );

        // /viewer-connected-to-player
        assert_eq!(
            client
                .ok(
                    "/viewer-connected-to-player",
                    json!({ "user_identity": "Alice", "stream_name": "demo" })
                )
                .await,
            json!({ "success": true })
        );
        assert_eq!(
            client.state("demo", None).await["viewers"],
            json!({ "Alice": { "connected": true } })
        );
        let events = seen(&app, &meeting_id, &bob["token"], host_seen).await;
        assert!(has(&events, "participant.joined", "Alice"), "{events:?}");

        // /raise-hand: in the raised_hands document; the host sees it on the event channel.
        let alice_seen = client.state("demo", None).await["last_seq"]
            .as_u64()
            .unwrap();
        host_seen = alice_seen;
        assert_eq!(
            client
                .ok(
                    "/raise-hand",
                    json!({ "user_identity": "Alice", "stream_name": "demo", "hand_raised": true })
                )
                .await,
            json!({ "sent": true })
        );
        assert_eq!(
            client.state("demo", None).await["raised_hands"],
            json!({ "Alice": { "hand_raised": true } })
        );
        assert!(has(
            &seen(&app, &meeting_id, &bob["token"], host_seen).await,
            "stage.hand_raised",
            "Alice"
        ));
        assert!(has(
            &seen(&app, &meeting_id, &alice["token"], alice_seen).await,
            "stage.hand_raised",
            "Alice"
        ));

        // /send-speaker-invite with the room sid: the viewer's own document shows it.
        assert_eq!(
            client
                .ok(
                    "/send-speaker-invite",
                    json!({ "user_identity": "Alice", "room_sid": room_sid })
                )
                .await,
            json!({ "sent": true })
        );
        let state = client.state("demo", Some("Alice")).await;
        assert_eq!(state["user"], json!({ "speaker_invite": true }));
        assert_eq!(
            state["invitations"],
            json!({ "Alice": { "speaker_invite": true } })
        );
        assert_eq!(
            client.state("demo", Some("Bob")).await["user"],
            json!({ "speaker_invite": false })
        );
        assert!(has(
            &seen(&app, &meeting_id, &alice["token"], alice_seen).await,
            "stage.invited",
            "Alice"
        ));

        // /join-stream-as-speaker moves the viewer to the stage: may publish now.
        let seq = client.state("demo", None).await["last_seq"]
            .as_u64()
            .unwrap();
        let alice_speaker = client
            .ok(
                "/join-stream-as-speaker",
                json!({ "user_identity": "Alice", "stream_name": "demo" }),
            )
            .await;
        assert_eq!(can_publish(&alice_speaker["token"]), true);
        assert_eq!(alice_speaker["role"], "speaker");
        let state = client.state("demo", Some("Alice")).await;
        assert_eq!(
            state["speakers"],
            json!({ "Alice": { "host": false }, "Bob": { "host": true } })
        );
        assert_eq!(state["viewers"], json!({}));
        assert_eq!(state["raised_hands"], json!({}));
        assert_eq!(state["user"], json!({ "speaker_invite": false }));
        let events = seen(&app, &meeting_id, &alice_speaker["token"], seq).await;
        assert!(
            events.iter().any(|(t, d)| t == "participant.role_changed"
                && d["identity"] == "Alice"
                && d["role"] == "speaker"),
            "{events:?}"
        );

        // ...and /join-stream-as-viewer back off it.
        let alice_viewer = client
            .ok(
                "/join-stream-as-viewer",
                json!({ "user_identity": "Alice", "stream_name": "demo" }),
            )
            .await;
        assert_eq!(can_publish(&alice_viewer["token"]), false);
        let state = client.state("demo", None).await;
        assert_eq!(state["speakers"], json!({ "Bob": { "host": true } }));
        assert!(state["viewers"]["Alice"].is_object(), "{state:?}");

        // Chat: the handed-out token authorises the meeting chat.
        let chat = app
            .send(
                Request::post(format!("/v1/meetings/{meeting_id}/chat"))
                    .header(
                        header::AUTHORIZATION,
                        format!("Bearer {}", alice_viewer["token"].as_str().unwrap()),
                    )
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(json!({ "text": "hello stage" }).to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(chat.status, StatusCode::OK, "{:?}", chat.body);
        assert!(has(
            &seen(&app, &meeting_id, &bob["token"], seq).await,
            "chat.message",
            "Alice"
        ));

        // /remove-speaker: the speaker leaves the stage and the room; their token stops working.
        let carol = client
            .ok(
                "/join-stream-as-speaker",
                json!({ "user_identity": "Carol", "stream_name": "demo" }),
            )
            .await;
        assert!(client.state("demo", None).await["speakers"]["Carol"].is_object());
        let seq = client.state("demo", None).await["last_seq"]
            .as_u64()
            .unwrap();
        assert_eq!(
            client
                .ok(
                    "/remove-speaker",
                    json!({ "user_identity": "Carol", "room_name": "demo" })
                )
                .await,
            json!({ "removed": true })
        );
        assert!(
            client.state("demo", None).await["speakers"]
                .get("Carol")
                .is_none()
        );
        assert!(has(
            &seen(&app, &meeting_id, &bob["token"], seq).await,
            "participant.removed",
            "Carol"
        ));
        assert_eq!(
            app.events(&meeting_id, carol["token"].as_str().unwrap(), 0)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        // They may come back to watch.
        let carol_viewer = client
            .ok(
                "/join-stream-as-viewer",
                json!({ "user_identity": "Carol", "stream_name": "demo" }),
            )
            .await;
        assert_eq!(can_publish(&carol_viewer["token"]), false);

        // /delete-stream ends it: joining answers 404, the old room sid names nothing.
        assert_eq!(
            client
                .ok("/delete-stream", json!({ "stream_name": "demo" }))
                .await,
            json!({ "deleted": true })
        );
        let late = client
            .call(
                "/join-stream-as-viewer",
                json!({ "user_identity": "Dan", "stream_name": "demo" }),
            )
            .await;
        assert_error(&late, StatusCode::NOT_FOUND, "stream not found");
        let events = seen(&app, &meeting_id, &bob["token"], seq).await;
        assert!(
            events.iter().any(|(t, _)| t == "meeting.ended"),
            "{events:?}"
        );

        // The name can be used again: a new run with a new room sid.
        let again = client
            .ok(
                "/create-stream",
                json!({ "user_identity": "Erin", "stream_name": "demo" }),
            )
            .await;
        assert_ne!(again["room_sid"], room_sid);
        let stale = client
            .call(
                "/send-speaker-invite",
                json!({ "user_identity": "Alice", "room_sid": room_sid }),
            )
            .await;
        assert_error(&stale, StatusCode::NOT_FOUND, "stream not found");
        assert_eq!(
            client.state("demo", None).await["speakers"],
            json!({ "Erin": { "host": true } })
        );
    }
}

#[tokio::test]
async fn every_request_needs_the_passcode_and_failures_are_counted() {
    let app = TestApp::start().await;
    let routes = [
        "/verify-passcode",
        "/create-stream",
        "/join-stream-as-speaker",
        "/join-stream-as-viewer",
        "/viewer-connected-to-player",
        "/raise-hand",
        "/send-speaker-invite",
        "/remove-speaker",
        "/delete-stream",
        "/stream-state",
    ];
    let params = json!({ "user_identity": "Bob", "stream_name": "demo", "room_name": "demo", "hand_raised": true, "room_sid": "RM0" });
    let mut failures = 0;
    for (i, route) in routes.iter().enumerate() {
        let encoding = BOTH[i % 2];
        let wrong = app
            .post(
                encoding,
                &path(route),
                params.clone(),
                Some("wrong-passcode"),
            )
            .await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "passcode incorrect");
        let missing = app.post(encoding, &path(route), params.clone(), None).await;
        assert_error(&missing, StatusCode::UNAUTHORIZED, "passcode incorrect");
        failures += 2;
    }
    // The passcode sent as a bearer token is not the passcode.
    let prefixed = app
        .post(
            Encoding::Json,
            &path("/verify-passcode"),
            json!({}),
            Some(&format!("Bearer {PASSCODE}")),
        )
        .await;
    assert_error(&prefixed, StatusCode::UNAUTHORIZED, "passcode incorrect");
    failures += 1;
    // Counted per client address in the store (in-process requests have no peer: 0.0.0.0).
    let record = app
        .state
        .meetings
        .store()
        .failures(FailureScope::Address, "0.0.0.0")
        .await
        .unwrap();
    assert_eq!(record.failures, failures);
    // The right passcode still works below the limit...
    assert_eq!(
        app.post(
            Encoding::Json,
            &path("/verify-passcode"),
            json!({}),
            Some(PASSCODE)
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn too_many_wrong_passcodes_lock_the_address_out() {
    let app = TestApp::start().await;
    let mut locked = None;
    for _ in 0..(convene_core::lockout::ADDRESS_LIMIT + 1) {
        let reply = app
            .post(
                Encoding::Form,
                &path("/verify-passcode"),
                json!({}),
                Some("guess"),
            )
            .await;
        if reply.status != StatusCode::UNAUTHORIZED {
            locked = Some(reply);
            break;
        }
    }
    let locked = locked.expect("the address limit stops the guessing");
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        locked.body
    );
    assert!(locked.body["error"]["message"].is_string());
    // Even the right passcode waits now.
    let reply = app
        .post(
            Encoding::Json,
            &path("/verify-passcode"),
            json!({}),
            Some(PASSCODE),
        )
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn missing_parameters_are_400s_naming_them() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        let client = Client {
            app: &app,
            encoding,
        };
        client
            .ok(
                "/create-stream",
                json!({ "user_identity": "Host", "stream_name": "params" }),
            )
            .await;
        client
            .ok(
                "/join-stream-as-viewer",
                json!({ "user_identity": "V", "stream_name": "params" }),
            )
            .await;
        let full = json!({ "user_identity": "V", "stream_name": "params", "hand_raised": true, "room_sid": "RM00", "room_name": "params" });
        let cases: [(&str, &[&str]); 8] = [
            ("/create-stream", &["user_identity", "stream_name"]),
            ("/join-stream-as-speaker", &["user_identity", "stream_name"]),
            ("/join-stream-as-viewer", &["user_identity", "stream_name"]),
            (
                "/viewer-connected-to-player",
                &["user_identity", "stream_name"],
            ),
            (
                "/raise-hand",
                &["user_identity", "stream_name", "hand_raised"],
            ),
            ("/send-speaker-invite", &["user_identity", "room_sid"]),
            ("/remove-speaker", &["user_identity", "room_name"]),
            ("/delete-stream", &["stream_name"]),
        ];
        for (route, names) in cases {
            for name in names {
                let mut params = full.clone();
                params.as_object_mut().unwrap().remove(*name);
                let reply = client.call(route, params).await;
                assert_error(&reply, StatusCode::BAD_REQUEST, &format!("missing {name}"));
            }
        }
        let reply = client
            .call(
                "/raise-hand",
                json!({ "user_identity": "V", "stream_name": "params", "hand_raised": "perhaps" }),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid hand_raised");
        // Form-encoded booleans as the original clients send them.
        let reply = client
            .call(
                "/raise-hand",
                json!({ "user_identity": "V", "stream_name": "params", "hand_raised": "false" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        client
            .ok("/delete-stream", json!({ "stream_name": "params" }))
            .await;
    }
    let malformed = Request::post(path("/create-stream"))
        .header(header::AUTHORIZATION, PASSCODE)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"user_identity\": "))
        .unwrap();
    assert_error(
        &app.send(malformed).await,
        StatusCode::BAD_REQUEST,
        "invalid request",
    );
}

#[tokio::test]
async fn unknown_streams_users_and_sids_are_404s() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        let client = Client {
            app: &app,
            encoding,
        };
        for (route, params) in [
            (
                "/join-stream-as-speaker",
                json!({ "user_identity": "A", "stream_name": "nope" }),
            ),
            (
                "/join-stream-as-viewer",
                json!({ "user_identity": "A", "stream_name": "nope" }),
            ),
            (
                "/viewer-connected-to-player",
                json!({ "user_identity": "A", "stream_name": "nope" }),
            ),
            (
                "/raise-hand",
                json!({ "user_identity": "A", "stream_name": "nope", "hand_raised": true }),
            ),
            (
                "/send-speaker-invite",
                json!({ "user_identity": "A", "room_sid": "RMd97f4196dabeb620c00564b95aec5dc2" }),
            ),
            (
                "/send-speaker-invite",
                json!({ "user_identity": "A", "room_sid": "not-a-sid" }),
            ),
            (
                "/remove-speaker",
                json!({ "user_identity": "A", "room_name": "nope" }),
            ),
            ("/delete-stream", json!({ "stream_name": "nope" })),
            ("/stream-state", json!({ "stream_name": "nope" })),
        ] {
            assert_error(
                &client.call(route, params).await,
                StatusCode::NOT_FOUND,
                "stream not found",
            );
        }
        let name = format!("known-{encoding:?}");
        let host = client
            .ok(
                "/create-stream",
                json!({ "user_identity": "H", "stream_name": name }),
            )
            .await;
        for (route, params) in [
            (
                "/viewer-connected-to-player",
                json!({ "user_identity": "ghost", "stream_name": name }),
            ),
            (
                "/raise-hand",
                json!({ "user_identity": "ghost", "stream_name": name, "hand_raised": true }),
            ),
            (
                "/send-speaker-invite",
                json!({ "user_identity": "ghost", "room_sid": host["room_sid"] }),
            ),
            (
                "/remove-speaker",
                json!({ "user_identity": "ghost", "room_name": name }),
            ),
        ] {
            assert_error(
                &client.call(route, params).await,
                StatusCode::NOT_FOUND,
                "user not found",
            );
        }
        // A live stream's name is taken.
        let taken = client
            .call(
                "/create-stream",
                json!({ "user_identity": "X", "stream_name": name }),
            )
            .await;
        assert_error(&taken, StatusCode::CONFLICT, "error creating room");
    }
    // A meeting of the native API with that room name is not a stream of this surface.
    let native = app
        .send(
            Request::post("/v1/meetings")
                .header(header::AUTHORIZATION, common::basic())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({ "name": "native", "room_name": "native-room" }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert!(native.status.is_success(), "{:?}", native.body);
    let client = Client {
        app: &app,
        encoding: Encoding::Json,
    };
    let reply = client
        .call(
            "/join-stream-as-viewer",
            json!({ "user_identity": "A", "stream_name": "native-room" }),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "stream not found");
    let reply = client
        .call(
            "/create-stream",
            json!({ "user_identity": "A", "stream_name": "native-room" }),
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "error creating room");
}

#[tokio::test]
async fn invitations_go_to_viewers_and_the_host_stays_host() {
    let app = TestApp::start().await;
    let client = Client {
        app: &app,
        encoding: Encoding::Form,
    };
    let host = client
        .ok(
            "/create-stream",
            json!({ "user_identity": "Host", "stream_name": "stage" }),
        )
        .await;
    client
        .ok(
            "/join-stream-as-speaker",
            json!({ "user_identity": "Sam", "stream_name": "stage" }),
        )
        .await;
    // Only a viewer can be invited to speak.
    let reply = client
        .call(
            "/send-speaker-invite",
            json!({ "user_identity": "Sam", "room_sid": host["room_sid"] }),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::CONFLICT,
        "not possible in the current state",
    );
    // The room sid is case-insensitive in its hex part, like Twilio's.
    client
        .ok(
            "/join-stream-as-viewer",
            json!({ "user_identity": "Sam", "stream_name": "stage" }),
        )
        .await;
    let upper = format!(
        "RM{}",
        host["room_sid"].as_str().unwrap()[2..].to_ascii_uppercase()
    );
    client
        .ok(
            "/send-speaker-invite",
            json!({ "user_identity": "Sam", "room_sid": upper }),
        )
        .await;
    // The invitation is the viewer's own: another viewer's token does not see it.
    let other = client
        .ok(
            "/join-stream-as-viewer",
            json!({ "user_identity": "Olga", "stream_name": "stage" }),
        )
        .await;
    let meeting_id = host["meeting_id"].as_str().unwrap();
    assert!(!has(
        &seen(&app, meeting_id, &other["token"], 0).await,
        "stage.invited",
        "Sam"
    ));
    // The host joining as a speaker stays the host; the host cannot be removed.
    let again = client
        .ok(
            "/join-stream-as-speaker",
            json!({ "user_identity": "Host", "stream_name": "stage" }),
        )
        .await;
    assert_eq!(again["role"], "host");
    let reply = client
        .call(
            "/remove-speaker",
            json!({ "user_identity": "Host", "room_name": "stage" }),
        )
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "error removing speaker");
    // Unknown routes and other methods answer in the surface's shape.
    let unknown = app
        .send(
            Request::post(path("/nope"))
                .header(header::AUTHORIZATION, PASSCODE)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not found");
    let get = app
        .send(
            Request::get(path("/verify-passcode"))
                .header(header::AUTHORIZATION, PASSCODE)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&get, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
}
