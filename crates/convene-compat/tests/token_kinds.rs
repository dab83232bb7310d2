//! No token convene hands out is an admin credential (docs/security-reliability.md, "A token's
//! kind is read from what it says"): in both engine modes, every token from every surface (media
//! tokens of every role, waiting-room tokens, join links, sessions, webhook signatures) is refused
//! on every admin route of the native API (read from its OpenAPI document, so a new admin route
//! is covered when it is added) and on the surfaces' own admin calls.
//!
//! With an external LiveKit, convene's own key pair signs the plain LiveKit media tokens by
//! default, and a host's carries `roomAdmin`: the case that once passed as an admin token.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{BBB_TOKEN, BOTH, Encoding, KEY, PASSCODE, Reply, SECRET, TestApp, basic, claims};
use convene_api::{Limits, MediaTokens};
use convene_core::apikey::ApiSecret;
use convene_token::{Signer, VideoGrants};
use serde_json::{Value, json};

/// A token and where it came from (for the failure message).
struct Handed {
    source: String,
    token: String,
}

fn external_livekit() -> MediaTokens {
    // The documented default: no separate LiveKit key pair, so convene's own signs media tokens.
    MediaTokens::LiveKit {
        signer: Signer::new(KEY, ApiSecret::parse(SECRET).unwrap()),
        ttl: std::time::Duration::from_secs(600),
    }
}

async fn app(media: MediaTokens) -> TestApp {
    TestApp::start_engine(
        Some(PASSCODE.to_owned()),
        Some(BBB_TOKEN.to_owned()),
        Limits::new(1000, 100_000),
        media,
    )
    .await
}

async fn json_call(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let request = match body {
        Some(body) => request
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    };
    app.send(request.unwrap()).await
}

fn ok(reply: &Reply, what: &str) {
    assert!(
        reply.status.is_success(),
        "{what}: {} {:?}",
        reply.status,
        reply.body
    );
}

fn push(handed: &mut Vec<Handed>, source: impl Into<String>, token: &Value) {
    let token = token
        .as_str()
        .unwrap_or_else(|| panic!("no token: {token:?}"));
    handed.push(Handed {
        source: source.into(),
        token: token.to_owned(),
    });
}

/// Logs in through seed 004 (the code read from the recorded mail); returns the session token
/// and the user's uid.
async fn session(app: &TestApp, email: &str) -> (String, String) {
    let send = format!("/compat/mesibo/api?op=login&appid=a&name=Ann&email={email}");
    let sent = app
        .send(Request::get(&send).body(Body::empty()).unwrap())
        .await;
    assert_eq!(sent.body["result"], "OK", "{:?}", sent.body);
    let code = app.mailer.code_for(email);
    let done = app
        .send(
            Request::get(format!("{send}&code={code}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(done.body["result"], "OK", "{:?}", done.body);
    (
        done.body["token"].as_str().unwrap().to_owned(),
        done.body["uid"].as_u64().unwrap().to_string(),
    )
}

/// Every kind of token every surface hands out, gathered by using the surfaces as clients do.
async fn every_token(app: &TestApp) -> Vec<Handed> {
    let mut handed = Vec::new();
    let admin = basic();

    // Native API: waiting-room tokens and join answers of every role.
    let created = json_call(
        app,
        "POST",
        "/v1/meetings",
        Some(&admin),
        Some(json!({"name": "native", "policy": "wait_for_host"})),
    )
    .await;
    ok(&created, "create");
    let id = created.body["meeting_id"].as_str().unwrap().to_owned();
    let mut waiting = Vec::new();
    for (role, credential) in [
        ("host", "host"),
        ("speaker", "participant"),
        ("viewer", "viewer"),
    ] {
        let pin = created.body["credentials"][credential].as_str().unwrap();
        let entered = json_call(
            app,
            "POST",
            &format!("/v1/meetings/{id}/enter"),
            None,
            Some(json!({"credential": pin, "name": role, "identity": role})),
        )
        .await;
        ok(&entered, "enter");
        push(
            &mut handed,
            format!("native {role} waiting"),
            &entered.body["token"],
        );
        waiting.push((role, entered.body["token"].as_str().unwrap().to_owned()));
    }
    for (role, token) in &waiting {
        let joined = json_call(
            app,
            "POST",
            &format!("/v1/meetings/{id}/join"),
            Some(&format!("Bearer {token}")),
            None,
        )
        .await;
        ok(&joined, &format!("native {role} join"));
        push(
            &mut handed,
            format!("native {role} media"),
            &joined.body["access_token"],
        );
        push(
            &mut handed,
            format!("native {role} api"),
            &joined.body["api_token"],
        );
    }
    let added = json_call(
        app,
        "POST",
        &format!("/v1/meetings/{id}/participants"),
        Some(&admin),
        Some(json!({"identity": "placed-host", "role": "host"})),
    )
    .await;
    ok(&added, "add participant");
    push(
        &mut handed,
        "native placed host media",
        &added.body["access_token"],
    );

    // Seed 000: the admin's host token, a guest's waiting token and its access token.
    let wr = "/compat/waiting-room";
    let created = app
        .post(
            Encoding::Json,
            &format!("{wr}/admin/create"),
            json!({}),
            Some(&admin),
        )
        .await;
    ok(&created, "seed 000 create");
    let meeting_id = created.body["meeting_id"].as_u64().unwrap().to_string();
    let guest = app
        .post(
            Encoding::Json,
            &format!("{wr}/user/enter-waiting-room"),
            json!({"meeting_id": meeting_id}),
            None,
        )
        .await;
    ok(&guest, "seed 000 enter");
    push(&mut handed, "seed 000 guest waiting", &guest.body["token"]);
    let host = app
        .post(
            Encoding::Json,
            &format!("{wr}/admin/join"),
            json!({"meeting_id": meeting_id}),
            Some(&admin),
        )
        .await;
    ok(&host, "seed 000 admin join");
    push(&mut handed, "seed 000 host media", &host.body["token"]);
    push(&mut handed, "seed 000 host api", &host.body["api_token"]);
    let joined = app
        .post(
            Encoding::Json,
            &format!("{wr}/user/join"),
            json!({
                "meeting_id": meeting_id,
                "room_id": host.body["room_id"],
                "identity": guest.body["identity"],
                "token": guest.body["token"],
            }),
            None,
        )
        .await;
    ok(&joined, "seed 000 user join");
    push(&mut handed, "seed 000 guest media", &joined.body["token"]);
    push(&mut handed, "seed 000 guest api", &joined.body["api_token"]);

    // Seed 001: anyone with the passcode creates a stream and is its host.
    let ls = "/compat/live-stream";
    let host = app
        .post(
            Encoding::Json,
            &format!("{ls}/create-stream"),
            json!({"user_identity": "Bob", "stream_name": "kinds"}),
            Some(PASSCODE),
        )
        .await;
    ok(&host, "seed 001 create");
    push(&mut handed, "seed 001 host media", &host.body["token"]);
    push(&mut handed, "seed 001 host api", &host.body["api_token"]);
    for (route, user) in [
        ("join-stream-as-speaker", "Sam"),
        ("join-stream-as-viewer", "Vic"),
    ] {
        let joined = app
            .post(
                Encoding::Json,
                &format!("{ls}/{route}"),
                json!({"user_identity": user, "stream_name": "kinds"}),
                Some(PASSCODE),
            )
            .await;
        ok(&joined, route);
        push(
            &mut handed,
            format!("seed 001 {route} media"),
            &joined.body["token"],
        );
        push(
            &mut handed,
            format!("seed 001 {route} api"),
            &joined.body["api_token"],
        );
    }

    // Seed 004: a session, and the room creator's media token.
    let (ann, ann_uid) = session(app, "ann@example.com").await;
    handed.push(Handed {
        source: "seed 004 session".into(),
        token: ann.clone(),
    });
    let group = app
        .send(
            Request::get(format!(
                "/compat/mesibo/api?op=setgroup&token={ann}&name=kinds&resolution=0"
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(group.body["result"], "OK", "{:?}", group.body);
    let joined = app
        .send(
            Request::get(format!(
                "/compat/mesibo/api?op=joingroup&token={ann}&gid={}&pin={}",
                group.body["gid"],
                group.body["pin"].as_str().unwrap()
            ))
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(joined.body["result"], "OK", "{:?}", joined.body);
    push(
        &mut handed,
        "seed 004 creator media",
        &joined.body["access_token"],
    );

    // Seed 002: the admin names a uid; a signed-in user joins as themselves.
    for (who, authorization, uid) in [
        ("admin", admin.clone(), "anyone".to_owned()),
        ("user", format!("Bearer {ann}"), ann_uid),
    ] {
        let params = json!({"roomName": "kinds-room", "uid": uid});
        let joined = app
            .post(
                Encoding::Json,
                "/compat/livekit-join/",
                params,
                Some(&authorization),
            )
            .await;
        ok(&joined, &format!("seed 002 {who}"));
        push(
            &mut handed,
            format!("seed 002 {who} media"),
            &joined.body["access_token"],
        );
    }

    // Seed 003: join links for both passwords, and what exchanging one gives.
    let bbb = app
        .post(
            Encoding::Json,
            "/compat/bbb/create",
            json!({
                "name": "kinds",
                "attendee_pass": "attendee-password",
                "moderator_pass": "moderator-password",
                "max_participant": 10,
                "redirect_at_logout": "https://lms.example.com/"
            }),
            Some(BBB_TOKEN),
        )
        .await;
    ok(&bbb, "seed 003 create");
    for (who, password) in [
        ("moderator", "moderator-password"),
        ("attendee", "attendee-password"),
    ] {
        let reply = app
            .post(
                Encoding::Json,
                "/compat/bbb/join",
                json!({
                    "name": who,
                    "meeting_id": bbb.body["meeting_id"],
                    "password": password,
                    "create_time": bbb.body["create_time"],
                }),
                Some(BBB_TOKEN),
            )
            .await;
        assert_eq!(reply.status, StatusCode::FOUND, "{:?}", reply.body);
        let location = url::Url::parse(reply.location.as_deref().unwrap()).unwrap();
        let link = location
            .query_pairs()
            .find(|(k, _)| k == "join")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        handed.push(Handed {
            source: format!("seed 003 {who} join link"),
            token: link.clone(),
        });
        let exchanged = json_call(
            app,
            "POST",
            "/v1/join-links/exchange",
            None,
            Some(json!({"join_link": link})),
        )
        .await;
        ok(&exchanged, "seed 003 exchange");
        for field in ["token", "access_token", "api_token"] {
            if exchanged.body[field].is_string() {
                push(
                    &mut handed,
                    format!("seed 003 {who} {field}"),
                    &exchanged.body[field],
                );
            }
        }
    }

    // A webhook's signature: every endpoint operator sees one.
    let signer = app.state.signer.clone();
    let now = app.state.meetings.now();
    handed.push(Handed {
        source: "webhook signature".into(),
        token: signer.webhook_token(b"{}", now).unwrap(),
    });
    // What a LiveKit server SDK mints to moderate one room: that room's RoomService, no more.
    handed.push(Handed {
        source: "room-scoped roomAdmin server token".into(),
        token: signer
            .livekit_server_token(
                VideoGrants {
                    room_admin: true,
                    room: "kinds-room".into(),
                    ..VideoGrants::default()
                },
                now,
                std::time::Duration::from_secs(600),
            )
            .unwrap(),
    });
    handed
}

/// The native API's admin-only operations, from its OpenAPI document: those whose only
/// security schemes are the API key and the admin JWT.
fn native_admin_routes() -> Vec<(String, String)> {
    let doc = serde_json::to_value(convene_api::openapi()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(security) = operation["security"].as_array() else {
                continue;
            };
            let schemes: Vec<&str> = security
                .iter()
                .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
                .collect();
            if schemes.contains(&"api_key") && !schemes.contains(&"participant_token") {
                routes.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// A body that the route accepts from an admin (checked below with the API key).
fn admin_body(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/meetings") => Some(json!({"name": "made by an admin"})),
        ("PATCH", "/v1/meetings/{meeting_id}") => Some(json!({"name": "renamed"})),
        ("POST", "/v1/meetings/{meeting_id}/participants") => {
            Some(json!({"identity": "added-by-admin", "role": "viewer"}))
        }
        _ => None,
    }
}

async fn no_token_is_an_admin_credential(media: MediaTokens, mode: &str) {
    let app = app(media).await;
    let handed = every_token(&app).await;
    assert!(handed.len() >= 30, "{} tokens gathered", handed.len());
    // Host media tokens are among them, and with an external LiveKit they are plain LiveKit
    // tokens carrying roomAdmin: the confusion this test exists for.
    let host_media = handed
        .iter()
        .filter(|h| h.source.contains("host media"))
        .map(|h| claims(&h.token))
        .collect::<Vec<_>>();
    assert!(host_media.len() >= 3);
    assert!(host_media.iter().all(|c| c["video"]["roomAdmin"] == true));
    if mode == "external" {
        assert!(host_media.iter().all(|c| c.get("convene").is_none()));
    }

    let created = json_call(
        &app,
        "POST",
        "/v1/meetings",
        Some(&basic()),
        Some(json!({"name": "target"})),
    )
    .await;
    ok(&created, "create target");
    let target = created.body["meeting_id"].as_str().unwrap().to_owned();
    let started = json_call(
        &app,
        "POST",
        &format!("/v1/meetings/{target}/start"),
        Some(&basic()),
        None,
    )
    .await;
    ok(&started, "start target");
    let routes = native_admin_routes();
    for expected in [
        ("GET", "/v1/meetings"),
        ("POST", "/v1/meetings"),
        ("GET", "/v1/meetings/{meeting_id}"),
        ("PATCH", "/v1/meetings/{meeting_id}"),
        ("GET", "/v1/webhooks/deliveries"),
    ] {
        assert!(
            routes
                .iter()
                .any(|(m, p)| (m.as_str(), p.as_str()) == expected),
            "{expected:?} is an admin route: {routes:?}"
        );
    }
    for (method, template) in &routes {
        let path = template.replace("{meeting_id}", &target);
        // The route works for an admin, so a refusal below is about the credential.
        let control = json_call(
            &app,
            method,
            &path,
            Some(&basic()),
            admin_body(method, template),
        )
        .await;
        ok(&control, &format!("{mode}: admin {method} {template}"));
        for token in &handed {
            let reply = json_call(
                &app,
                method,
                &path,
                Some(&format!("Bearer {}", token.token)),
                admin_body(method, template),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{mode}: {} accepted on {method} {template}: {:?}",
                token.source,
                reply.body
            );
            assert_eq!(reply.body["error"]["code"], "unauthenticated");
        }
    }

    // The surfaces' own admin calls.
    for token in &handed {
        let bearer = format!("Bearer {}", token.token);
        for encoding in BOTH {
            for route in ["/admin/create", "/admin/join"] {
                let reply = app
                    .post(
                        encoding,
                        &format!("/compat/waiting-room{route}"),
                        json!({"meeting_id": target}),
                        Some(&bearer),
                    )
                    .await;
                // The seed's own answer to a caller without the API key.
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{mode}: {} accepted on seed 000 {route}: {:?}",
                    token.source,
                    reply.body
                );
                assert!(
                    reply
                        .body
                        .as_str()
                        .is_some_and(|m| m.contains("admin API key")),
                    "{:?}",
                    reply.body
                );
            }
        }
        // Seed 002: only an admin names someone else's uid.
        let reply = app
            .post(
                Encoding::Json,
                "/compat/livekit-join/",
                json!({"roomName": "kinds-room", "uid": "somebody-else"}),
                Some(&bearer),
            )
            .await;
        assert!(
            reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN,
            "{mode}: {} named another uid on seed 002: {} {:?}",
            token.source,
            reply.status,
            reply.body
        );
    }
    // Sanity: the admin token convene mints for key holders is one.
    let admin_token = app
        .state
        .signer
        .admin_token(app.state.meetings.now(), std::time::Duration::from_secs(60))
        .unwrap();
    let reply = json_call(
        &app,
        "GET",
        "/v1/meetings",
        Some(&format!("Bearer {admin_token}")),
        None,
    )
    .await;
    ok(&reply, "convene admin token");
}

#[tokio::test]
async fn with_the_embedded_engine() {
    no_token_is_an_admin_credential(MediaTokens::Embedded, "embedded").await;
}

#[tokio::test]
async fn with_an_external_livekit_on_convenes_own_key_pair() {
    no_token_is_an_admin_credential(external_livekit(), "external").await;
}
