//! Seed 004 (mesibo conferencing backend) in-process: every documented request and response field,
//! by query string and by form, and the unhappy paths (no op, missing parameters, bad and reused
//! codes, bad tokens, wrong pins, the guessing limit).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Reply, TestApp, claims};
use serde_json::{Value, json};

const API: &str = "/compat/mesibo/api";

/// How a request carries its parameters.
#[derive(Clone, Copy, Debug)]
enum Via {
    Query,
    Form,
}

fn encode(params: &[(&str, &str)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in params {
        form.append_pair(key, value);
    }
    form.finish()
}

async fn call(app: &TestApp, via: Via, params: &[(&str, &str)]) -> Reply {
    let request = match via {
        Via::Query => Request::get(format!("{API}?{}", encode(params))).body(Body::empty()),
        Via::Form => Request::post(API)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encode(params))),
    };
    app.send(request.expect("request")).await
}

/// Asserts a documented failure: HTTP 200, `result: FAIL`, the error code, op and ts.
fn assert_fail(reply: &Reply, op: &str, error: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["result"], "FAIL", "{:?}", reply.body);
    assert_eq!(reply.body["error"], error, "{:?}", reply.body);
    assert_eq!(reply.body["op"], op);
    assert!(reply.body["ts"].is_i64());
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

/// Logs in through the surface, reading the code from the mail; returns (token, uid).
async fn login(app: &TestApp, via: Via, email: &str, name: &str) -> (String, u64) {
    let sent = call(
        app,
        via,
        &[
            ("op", "login"),
            ("appid", "com.example.conf"),
            ("name", name),
            ("email", email),
        ],
    )
    .await;
    assert_eq!(
        sent.body,
        json!({"op": "login", "ts": sent.body["ts"], "result": "OK"}),
        "{:?}",
        sent.body
    );
    let code = app.mailer.code_for(&email.to_lowercase());
    let ok = call(
        app,
        via,
        &[
            ("op", "login"),
            ("appid", "com.example.conf"),
            ("name", name),
            ("email", email),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let body = ok.body.as_object().expect("object");
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["name", "op", "result", "token", "ts", "uid"],
        "{body:?}"
    );
    assert_eq!(
        (
            body["op"].as_str(),
            body["result"].as_str(),
            body["name"].as_str()
        ),
        (Some("login"), Some("OK"), Some(name))
    );
    let uid = body["uid"].as_u64().expect("uid is a number");
    assert_eq!(uid.to_string().len(), 12);
    (body["token"].as_str().expect("token").to_owned(), uid)
}

async fn set_group(app: &TestApp, token: &str, name: &str, resolution: &str) -> Value {
    let reply = call(
        app,
        Via::Query,
        &[
            ("op", "setgroup"),
            ("token", token),
            ("name", name),
            ("resolution", resolution),
        ],
    )
    .await;
    assert_eq!(reply.body["result"], "OK", "{:?}", reply.body);
    reply.body
}

#[tokio::test]
async fn no_or_unknown_op_is_noop() {
    let app = TestApp::start().await;
    for reply in [
        call(&app, Via::Query, &[]).await,
        call(&app, Via::Query, &[("op", "getcontacts")]).await,
        call(&app, Via::Form, &[("name", "x")]).await,
        app.send(
            Request::get("/compat/mesibo/api.php")
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    ] {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"code": "NOOP", "result": "FAIL"}));
    }
}

#[tokio::test]
async fn login_sends_a_code_and_the_code_gives_a_token_once() {
    let app = TestApp::start().await;
    for (via, email) in [
        (Via::Query, "Ann@Example.com"),
        (Via::Form, "bob@example.com"),
    ] {
        let (token, uid) = login(&app, via, email, "Ann Lee").await;
        let session = claims(&token);
        assert_eq!(session["sub"], uid.to_string());
        assert_eq!(session["convene"]["kind"], "session");
        assert!(
            session["video"]["roomJoin"].as_bool() != Some(true),
            "a session joins no room"
        );
    }
    // Reused code.
    let code = app.mailer.code_for("bob@example.com");
    let reused = call(
        &app,
        Via::Form,
        &[
            ("op", "login"),
            ("appid", "a"),
            ("name", "Bob"),
            ("email", "bob@example.com"),
            ("code", &code),
        ],
    )
    .await;
    assert_fail(&reused, "login", "BADCODE");
    assert!(reused.body["message"].as_str().unwrap().contains("used"));
    // The same address signs in as the same user again.
    let (_, first) = login(&app, Via::Query, "carl@example.com", "Carl").await;
    let (_, second) = login(&app, Via::Query, "CARL@example.com", "Carl").await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn login_refuses_missing_and_bad_parameters_and_wrong_codes() {
    let app = TestApp::start().await;
    let base = [
        ("op", "login"),
        ("appid", "a"),
        ("name", "Dee"),
        ("email", "dee@example.com"),
    ];
    let without = |skip: &str| {
        base.iter()
            .copied()
            .filter(|(k, _)| *k != skip)
            .collect::<Vec<_>>()
    };
    assert_fail(
        &call(&app, Via::Query, &without("email")).await,
        "login",
        "MISSINGEMAIL",
    );
    assert_fail(
        &call(&app, Via::Query, &without("appid")).await,
        "login",
        "MISSINGAPPID",
    );
    assert_fail(
        &call(&app, Via::Query, &without("name")).await,
        "login",
        "MISSINGNAME",
    );
    let mut bad = base.to_vec();
    bad[3] = ("email", "not-an-address");
    assert_fail(&call(&app, Via::Query, &bad).await, "login", "BADEMAIL");
    assert_eq!(app.mailer.count(), 0, "nothing was mailed");

    // No code sent yet, then five wrong tries void the code.
    let mut with_code = base.to_vec();
    with_code.push(("code", "000000"));
    assert_fail(
        &call(&app, Via::Query, &with_code).await,
        "login",
        "BADCODE",
    );
    call(&app, Via::Query, &base).await;
    let code = app.mailer.code_for("dee@example.com");
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    for _ in 0..5 {
        let mut attempt = base.to_vec();
        attempt.push(("code", &wrong));
        assert_fail(&call(&app, Via::Form, &attempt).await, "login", "BADCODE");
    }
    let mut right = base.to_vec();
    right.push(("code", &code));
    let dead = call(&app, Via::Form, &right).await;
    assert_fail(&dead, "login", "BADCODE");
    assert!(
        dead.body["message"].as_str().unwrap().contains("too many"),
        "{:?}",
        dead.body
    );
}

#[tokio::test]
async fn sends_to_one_address_are_capped() {
    let app = TestApp::start().await;
    let params = [
        ("op", "login"),
        ("appid", "a"),
        ("name", "Eve"),
        ("email", "eve@example.com"),
    ];
    for _ in 0..5 {
        assert_eq!(call(&app, Via::Query, &params).await.body["result"], "OK");
    }
    assert_fail(
        &call(&app, Via::Query, &params).await,
        "login",
        "RATELIMITED",
    );
    assert_eq!(app.mailer.count(), 5);
}

#[tokio::test]
async fn setgroup_answers_every_documented_field() {
    let app = TestApp::start().await;
    let (token, _) = login(&app, Via::Query, "host@example.com", "Host").await;
    for (via, resolution) in [(Via::Query, "0"), (Via::Form, "3")] {
        let reply = call(
            &app,
            via,
            &[
                ("op", "setgroup"),
                ("token", &token),
                ("name", "newroom"),
                ("resolution", resolution),
            ],
        )
        .await;
        let body = &reply.body;
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "gid",
                "name",
                "op",
                "pin",
                "publish",
                "resolution",
                "result",
                "spin",
                "ts",
                "type"
            ]
        );
        assert_eq!(body["op"], "setgroup");
        assert!(body["ts"].is_i64());
        assert!(body["gid"].is_u64());
        assert_eq!(body["name"], "newroom");
        assert_eq!(body["type"], 0);
        assert_eq!(
            body["resolution"], resolution,
            "a string, as in the seed's sample"
        );
        assert_eq!(body["publish"], 1);
        assert!(
            body["pin"]
                .as_str()
                .is_some_and(|p| p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit()))
        );
        assert!(body["spin"].as_str().is_some_and(|p| p.len() == 8));
        assert_ne!(body["pin"], body["spin"]);
        assert_eq!(body["result"], "OK");
        let meeting = app
            .state
            .meetings
            .meeting(&convene_core::ids::MeetingId::parse(&body["gid"].to_string()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            meeting.settings.quality.resolution_index().to_string(),
            resolution
        );
    }
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[
                ("op", "setgroup"),
                ("token", &token),
                ("name", "x"),
                ("resolution", "9"),
            ],
        )
        .await,
        "setgroup",
        "BADPARA",
    );
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[("op", "setgroup"), ("token", &token), ("resolution", "1")],
        )
        .await,
        "setgroup",
        "MISSINGNAME",
    );
    assert_fail(
        &call(&app, Via::Query, &[("op", "setgroup"), ("name", "x")]).await,
        "setgroup",
        "AUTHFAIL",
    );
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[("op", "setgroup"), ("token", "garbage"), ("name", "x")],
        )
        .await,
        "setgroup",
        "AUTHFAIL",
    );
}

#[tokio::test]
async fn setgroup_with_gid_updates_only_the_creators_room() {
    let app = TestApp::start().await;
    let (owner, _) = login(&app, Via::Query, "owner@example.com", "Owner").await;
    let (other, _) = login(&app, Via::Query, "other@example.com", "Other").await;
    let group = set_group(&app, &owner, "first", "1").await;
    let gid = group["gid"].to_string();
    let updated = call(
        &app,
        Via::Query,
        &[
            ("op", "setgroup"),
            ("token", &owner),
            ("gid", &gid),
            ("name", "renamed"),
            ("resolution", "2"),
        ],
    )
    .await;
    assert_eq!(updated.body["result"], "OK", "{:?}", updated.body);
    assert_eq!(
        (
            updated.body["gid"].clone(),
            updated.body["name"].clone(),
            updated.body["resolution"].clone()
        ),
        (group["gid"].clone(), json!("renamed"), json!("2"))
    );
    assert_eq!(updated.body["pin"], group["pin"], "pins stay");
    let refused = call(
        &app,
        Via::Query,
        &[
            ("op", "setgroup"),
            ("token", &other),
            ("gid", &gid),
            ("name", "mine"),
        ],
    )
    .await;
    assert_fail(&refused, "setgroup", "BADGROUP");
}

#[tokio::test]
async fn joingroup_grants_publishing_by_pin_and_viewing_by_spin() {
    let app = TestApp::start().await;
    let (owner, owner_uid) = login(&app, Via::Query, "owner@example.com", "Owner").await;
    let (guest, guest_uid) = login(&app, Via::Form, "guest@example.com", "Guest").await;
    let group = set_group(&app, &owner, "standup", "2").await;
    let gid = group["gid"].to_string();
    let pin = group["pin"].as_str().unwrap();
    let spin = group["spin"].as_str().unwrap();

    let speaker = call(
        &app,
        Via::Query,
        &[
            ("op", "joingroup"),
            ("token", &guest),
            ("gid", &gid),
            ("pin", pin),
        ],
    )
    .await;
    let body = &speaker.body;
    assert_eq!(body["result"], "OK", "{body:?}");
    assert_eq!(
        (
            body["op"].as_str(),
            body["gid"].clone(),
            body["name"].as_str(),
            body["publish"].clone()
        ),
        (
            Some("joingroup"),
            group["gid"].clone(),
            Some("standup"),
            json!(1)
        )
    );
    assert_eq!(
        (body["type"].clone(), body["resolution"].clone()),
        (json!(0), json!("2"))
    );
    assert_eq!(body["url"], "ws://convene.test");
    assert!(
        body.get("pin").is_none() && body.get("spin").is_none(),
        "pins go to the creator only"
    );
    let grant = claims(body["access_token"].as_str().unwrap());
    assert_eq!(
        (grant["sub"].as_str(), grant["name"].as_str()),
        (Some(guest_uid.to_string().as_str()), Some("Guest"))
    );
    assert_eq!(
        (
            grant["video"]["room"].as_str(),
            grant["video"]["canPublish"].as_bool()
        ),
        (Some(gid.as_str()), Some(true))
    );

    // A media access token is not a session.
    let access = body["access_token"].as_str().unwrap();
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[("op", "setgroup"), ("token", access), ("name", "x")],
        )
        .await,
        "setgroup",
        "AUTHFAIL",
    );

    let viewer = call(
        &app,
        Via::Form,
        &[
            ("op", "joingroup"),
            ("token", &guest),
            ("gid", &gid),
            ("pin", spin),
        ],
    )
    .await;
    assert_eq!(viewer.body["publish"], 0, "{:?}", viewer.body);
    let grant = claims(viewer.body["access_token"].as_str().unwrap());
    assert_eq!(grant["video"]["canPublish"], false);

    // The creator enters as host without a pin, and is shown the pins.
    let host = call(
        &app,
        Via::Query,
        &[("op", "joingroup"), ("token", &owner), ("gid", &gid)],
    )
    .await;
    assert_eq!(
        (
            host.body["publish"].clone(),
            host.body["pin"].as_str(),
            host.body["spin"].as_str()
        ),
        (json!(1), Some(pin), Some(spin))
    );
    let grant = claims(host.body["access_token"].as_str().unwrap());
    assert_eq!(
        (grant["sub"].as_str(), grant["video"]["roomAdmin"].as_bool()),
        (Some(owner_uid.to_string().as_str()), Some(true))
    );
}

#[tokio::test]
async fn wrong_pins_and_unknown_groups_answer_alike_and_guessing_is_limited() {
    let app = TestApp::start().await;
    let (owner, _) = login(&app, Via::Query, "owner@example.com", "Owner").await;
    let (guest, _) = login(&app, Via::Query, "guest@example.com", "Guest").await;
    let group = set_group(&app, &owner, "room", "0").await;
    let gid = group["gid"].to_string();

    let wrong = call(
        &app,
        Via::Query,
        &[
            ("op", "joingroup"),
            ("token", &guest),
            ("gid", &gid),
            ("pin", "12345678"),
        ],
    )
    .await;
    assert_fail(&wrong, "joingroup", "BADGROUP");
    let unknown = call(
        &app,
        Via::Query,
        &[
            ("op", "joingroup"),
            ("token", &guest),
            ("gid", "999999999"),
            ("pin", "12345678"),
        ],
    )
    .await;
    assert_fail(&unknown, "joingroup", "BADGROUP");
    assert_eq!(wrong.body["message"], unknown.body["message"]);
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[("op", "joingroup"), ("token", &guest), ("pin", "1")],
        )
        .await,
        "joingroup",
        "MISSINGPARA",
    );
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[("op", "joingroup"), ("token", &guest), ("gid", &gid)],
        )
        .await,
        "joingroup",
        "MISSINGPARA",
    );
    assert_fail(
        &call(
            &app,
            Via::Query,
            &[("op", "joingroup"), ("gid", &gid), ("pin", "1")],
        )
        .await,
        "joingroup",
        "AUTHFAIL",
    );

    // One client address gets 30 failures per 10 minutes (two so far); then even the right pin waits.
    for _ in 0..28 {
        assert_fail(
            &call(
                &app,
                Via::Form,
                &[
                    ("op", "joingroup"),
                    ("token", &guest),
                    ("gid", &gid),
                    ("pin", "00000000"),
                ],
            )
            .await,
            "joingroup",
            "BADGROUP",
        );
    }
    let limited = call(
        &app,
        Via::Form,
        &[
            ("op", "joingroup"),
            ("token", &guest),
            ("gid", &gid),
            ("pin", group["pin"].as_str().unwrap()),
        ],
    )
    .await;
    assert_fail(&limited, "joingroup", "RATELIMITED");
}

#[tokio::test]
async fn a_malformed_body_is_a_clear_failure() {
    let app = TestApp::start().await;
    let reply = app
        .send(
            Request::post(format!("{API}?op=login"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("[1"))
                .unwrap(),
        )
        .await;
    assert_fail(&reply, "login", "BADPARA");
}
