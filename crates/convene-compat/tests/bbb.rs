//! Seed 003 (`/compat/bbb`): the documented `/create` and `/join` requests replayed as JSON and
//! as a form, every documented field checked, the `302` and its one-time join link exchanged
//! through the native API, and the unhappy paths (token, missing parameters, wrong password,
//! mismatched `create_time`, full meeting, reused link, ended meeting).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{BBB_TOKEN, BOTH, Encoding, Reply, TestApp, claims};
use convene_api::Limits;
use convene_core::ids::MeetingId;
use convene_core::service::Caller;
use serde_json::{Value, json};

fn path(route: &str) -> String {
    format!("/compat/bbb{route}")
}

/// `{"message": "..."}` and nothing else.
fn assert_error(reply: &Reply, status: StatusCode, message: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    let body = reply
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not the error shape: {:?}", reply.body));
    assert_eq!(body.len(), 1, "{:?}", reply.body);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains(message)),
        "{:?} does not say {message:?}",
        reply.body
    );
}

async fn call(app: &TestApp, encoding: Encoding, route: &str, params: Value) -> Reply {
    app.post(encoding, &path(route), params, Some(BBB_TOKEN))
        .await
}

/// The seed's example create request.
fn seed_create() -> Value {
    json!({
        "name": "meeting01",
        "attendee_pass": "password-for-attende",
        "moderator_pass": "password-for-moderator",
        "max_participant": 100,
        "redirect_at_logout": "https://maybe-back-to-lms.com/dashboard"
    })
}

async fn create(app: &TestApp, encoding: Encoding, params: Value) -> Value {
    let reply = call(app, encoding, "/create", params).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

fn join_params(created: &Value, name: &str, password: &str) -> Value {
    json!({
        "name": name,
        "meeting_id": created["meeting_id"],
        "password": password,
        "create_time": created["create_time"],
    })
}

/// Joins and returns the join link from the `302`'s `Location`.
async fn join_link(app: &TestApp, encoding: Encoding, params: Value) -> String {
    let reply = call(app, encoding, "/join", params).await;
    assert_eq!(reply.status, StatusCode::FOUND, "{:?}", reply.body);
    let location =
        url::Url::parse(reply.location.as_deref().expect("Location")).expect("absolute Location");
    assert_eq!(
        format!(
            "{}://{}{}",
            location.scheme(),
            location.host_str().unwrap(),
            location.path()
        ),
        "http://convene.test/meet"
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    location
        .query_pairs()
        .find(|(k, _)| k == "join")
        .map(|(_, v)| v.into_owned())
        .expect("join parameter")
}

async fn exchange(app: &TestApp, link: &str) -> Reply {
    let request = Request::post("/v1/join-links/exchange")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "join_link": link }).to_string()))
        .expect("request");
    app.send(request).await
}

#[tokio::test]
async fn create_answers_every_documented_field() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let created = create(&app, encoding, seed_create()).await;
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let fields: Vec<&str> = created
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "attendee_pass",
                "create_time",
                "created_at",
                "meeting_id",
                "moderator_pass"
            ],
            "{encoding:?}"
        );
        assert!(
            created["meeting_id"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert_eq!(created["attendee_pass"], "password-for-attende");
        assert_eq!(created["moderator_pass"], "password-for-moderator");
        // create_time: milliseconds, as a string.
        let millis: i64 = created["create_time"]
            .as_str()
            .expect("a string")
            .parse()
            .expect("digits");
        assert!(
            (before..=after).contains(&millis),
            "{millis} not in {before}..={after}"
        );
        // created_at: the seed's format, the same instant to the second.
        let created_at = created["created_at"].as_str().expect("a string");
        let expected = convene_compat::bbb::wire::seed_date(
            convene_core::time::Timestamp::from_millis(millis),
        );
        assert_eq!(created_at, expected);
        assert_eq!(
            created_at.len(),
            "Mon Jul 09 17:03:29 UTC 2040".len(),
            "{created_at}"
        );
        assert!(created_at.contains(" UTC "), "{created_at}");

        // The settings behind it: capacity and logout URL, live at once.
        let id = MeetingId::parse(created["meeting_id"].as_str().unwrap()).unwrap();
        let meeting = app.state.meetings.meeting(&id).await.unwrap();
        assert_eq!(meeting.settings.capacity, Some(100));
        assert_eq!(
            meeting.settings.logout_url.as_ref().map(|u| u.as_str()),
            Some("https://maybe-back-to-lms.com/dashboard")
        );
        assert!(meeting.is_live());
        assert_eq!(meeting.settings.name.as_str(), "meeting01");
    }
}

#[tokio::test]
async fn absent_passwords_are_generated_and_differ() {
    let app = TestApp::start().await;
    let created = create(&app, Encoding::Json, json!({ "name": "only a name" })).await;
    let attendee = created["attendee_pass"].as_str().unwrap();
    let moderator = created["moderator_pass"].as_str().unwrap();
    assert!(attendee.len() >= 16 && moderator.len() >= 16, "{created}");
    assert_ne!(attendee, moderator);
    let id = MeetingId::parse(created["meeting_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        app.state
            .meetings
            .meeting(&id)
            .await
            .unwrap()
            .settings
            .capacity,
        None
    );
    // max_participant 0 is "no limit", as in BigBlueButton.
    let created = create(
        &app,
        Encoding::Form,
        json!({ "name": "zero", "max_participant": 0 }),
    )
    .await;
    let id = MeetingId::parse(created["meeting_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        app.state
            .meetings
            .meeting(&id)
            .await
            .unwrap()
            .settings
            .capacity,
        None
    );
}

#[tokio::test]
async fn create_refuses_bad_parameters() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        assert_error(
            &call(&app, encoding, "/create", json!({})).await,
            StatusCode::BAD_REQUEST,
            "missing name",
        );
        let mut params = seed_create();
        params["max_participant"] = json!(-3);
        assert_error(
            &call(&app, encoding, "/create", params).await,
            StatusCode::BAD_REQUEST,
            "max_participant",
        );
        let mut params = seed_create();
        params["max_participant"] = json!("many");
        assert_error(
            &call(&app, encoding, "/create", params).await,
            StatusCode::BAD_REQUEST,
            "max_participant must be an integer",
        );
        let mut params = seed_create();
        params["redirect_at_logout"] = json!("javascript:alert(1)");
        assert_error(
            &call(&app, encoding, "/create", params).await,
            StatusCode::BAD_REQUEST,
            "invalid redirect_at_logout",
        );
        let mut params = seed_create();
        params["attendee_pass"] = json!("same");
        params["moderator_pass"] = json!("same");
        assert_error(
            &call(&app, encoding, "/create", params).await,
            StatusCode::BAD_REQUEST,
            "must differ",
        );
    }
    let reply = app
        .send(
            Request::post(path("/create"))
                .header(header::AUTHORIZATION, BBB_TOKEN)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "JSON object");
}

#[tokio::test]
async fn every_request_needs_the_token_and_the_surface_is_off_without_one() {
    let app = TestApp::start().await;
    for route in ["/create", "/join"] {
        assert_error(
            &app.post(Encoding::Json, &path(route), seed_create(), None)
                .await,
            StatusCode::UNAUTHORIZED,
            "Authorization",
        );
        assert_error(
            &app.post(Encoding::Json, &path(route), seed_create(), Some("wrong"))
                .await,
            StatusCode::UNAUTHORIZED,
            "Authorization",
        );
        let bearer = format!("Bearer {BBB_TOKEN}x");
        assert_error(
            &app.post(Encoding::Form, &path(route), seed_create(), Some(&bearer))
                .await,
            StatusCode::UNAUTHORIZED,
            "Authorization",
        );
    }
    let reply = app
        .send(
            Request::get(path("/create"))
                .header(header::AUTHORIZATION, BBB_TOKEN)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "POST");

    let off = TestApp::start_full(None, None, Limits::new(1000, 100_000)).await;
    let reply = off
        .post(
            Encoding::Json,
            &path("/create"),
            seed_create(),
            Some(BBB_TOKEN),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_password_decides_the_role_and_the_link_is_exchanged_once() {
    let app = TestApp::start().await;
    for encoding in BOTH {
        let created = create(&app, encoding, seed_create()).await;
        let meeting_id = created["meeting_id"].as_str().unwrap();

        // The seed's example join, as a moderator.
        let mut params = join_params(&created, "namaMahasiswaAtauDosen", "password-for-moderator");
        params["user_id"] = json!("dosen01");
        params["avatar"] = json!("https://maybe-back-to-lms.com/assets/avatar/mhs01.png");
        params["is_guest"] = json!(false);
        let link = join_link(&app, encoding, params).await;
        let answer = exchange(&app, &link).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.body["identity"], "dosen01");
        assert_eq!(answer.body["role"], "host");
        assert_eq!(answer.body["state"], "joined");
        assert_eq!(answer.body["meeting"]["meeting_id"], meeting_id);
        assert_eq!(
            answer.body["meeting"]["logout_url"],
            "https://maybe-back-to-lms.com/dashboard"
        );
        let access = claims(
            answer.body["join"]["access_token"]
                .as_str()
                .expect("access token"),
        );
        assert_eq!(access["sub"], "dosen01");
        assert_eq!(access["name"], "namaMahasiswaAtauDosen");
        assert_eq!(access["video"]["roomAdmin"], true);
        assert_eq!(access["video"]["canPublish"], true);

        // Used once: the second exchange is refused in the native error shape.
        let again = exchange(&app, &link).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
        assert_eq!(again.body["error"]["code"], "join_link_used");

        // The attendee password makes a participant (a speaker, without room admin).
        let mut params = join_params(&created, "mhs01", "password-for-attende");
        params["user_id"] = json!("mhs01");
        let link = join_link(&app, encoding, params).await;
        let answer = exchange(&app, &link).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.body["role"], "speaker");
        let access = claims(answer.body["join"]["access_token"].as_str().unwrap());
        assert_ne!(
            access["video"]["roomAdmin"], true,
            "an attendee is no room admin"
        );
        assert_eq!(access["video"]["canPublish"], true);
    }
}

#[tokio::test]
async fn join_links_carry_the_avatar_and_are_short_lived_one_time_tokens() {
    let app = TestApp::start().await;
    let created = create(&app, Encoding::Json, seed_create()).await;
    let mut params = join_params(&created, "Guest", "password-for-attende");
    params["avatar"] = json!("https://lms.example/a.png");
    let reply = call(&app, Encoding::Json, "/join", params).await;
    let location = url::Url::parse(reply.location.as_deref().unwrap()).unwrap();
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["avatar"], "https://lms.example/a.png");
    let link = claims(&pairs["join"]);
    assert_eq!(link["convene"]["kind"], "join_link");
    assert_eq!(link["convene"]["nonce"].as_str().map(str::len), Some(32));
    assert_ne!(
        link["video"]["roomJoin"].as_bool(),
        Some(true),
        "a join link grants no media"
    );
    let lifetime = link["exp"].as_i64().unwrap() - link["nbf"].as_i64().unwrap();
    assert!(lifetime <= 300, "{lifetime}");
    // A join link is no access token: the native API's join refuses it.
    let request = Request::post(format!(
        "/v1/meetings/{}/join",
        created["meeting_id"].as_str().unwrap()
    ))
    .header(header::AUTHORIZATION, format!("Bearer {}", &pairs["join"]))
    .body(Body::empty())
    .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::UNAUTHORIZED);
    // A tampered link is refused.
    let mut tampered = pairs["join"].clone();
    tampered.push('x');
    assert_eq!(
        exchange(&app, &tampered).await.body["error"]["code"],
        "invalid_token"
    );
}

#[tokio::test]
async fn concurrent_exchanges_of_one_link_let_exactly_one_through() {
    let app = TestApp::start().await;
    let created = create(&app, Encoding::Json, seed_create()).await;
    let link = join_link(
        &app,
        Encoding::Json,
        join_params(&created, "Racer", "password-for-attende"),
    )
    .await;
    let replies = futures::future::join_all((0..8).map(|_| exchange(&app, &link))).await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let used = replies
        .iter()
        .filter(|r| r.body["error"]["code"] == "join_link_used")
        .count();
    assert_eq!((ok, used), (1, 7), "{replies:?}");
}

#[tokio::test]
async fn guests_go_through_the_waiting_room() {
    let app = TestApp::start().await;
    let created = create(&app, Encoding::Json, seed_create()).await;
    let mut params = join_params(&created, "A guest", "password-for-attende");
    params["is_guest"] = json!(true);
    params["user_id"] = json!("guest1");
    let link = join_link(&app, Encoding::Form, params).await;
    let answer = exchange(&app, &link).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["state"], "waiting");
    assert_eq!(answer.body["join"], Value::Null);
    let waiting = answer.body["token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&waiting)["convene"]["kind"], "waiting");

    // A host admits the guest; their waiting-room token then joins through the native API.
    let id = MeetingId::parse(created["meeting_id"].as_str().unwrap()).unwrap();
    app.state
        .meetings
        .admit(
            &id,
            &Caller::Admin,
            &convene_core::ids::Identity::parse("guest1").unwrap(),
        )
        .await
        .unwrap();
    let request = Request::post(format!("/v1/meetings/{id}/join"))
        .header(header::AUTHORIZATION, format!("Bearer {waiting}"))
        .body(Body::empty())
        .unwrap();
    let joined = app.send(request).await;
    assert_eq!(joined.status, StatusCode::OK, "{:?}", joined.body);
    assert_eq!(joined.body["role"], "speaker");
}

#[tokio::test]
async fn join_refuses_missing_parameters_and_wrong_passwords() {
    let app = TestApp::start().await;
    let created = create(&app, Encoding::Json, seed_create()).await;
    for encoding in BOTH {
        for missing in ["name", "meeting_id", "password", "create_time"] {
            let mut params = join_params(&created, "Someone", "password-for-attende");
            params.as_object_mut().unwrap().remove(missing);
            assert_error(
                &call(&app, encoding, "/join", params).await,
                StatusCode::BAD_REQUEST,
                &format!("missing {missing}"),
            );
        }
        let reply = call(
            &app,
            encoding,
            "/join",
            join_params(&created, "Someone", "not-the-password"),
        )
        .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "wrong password");
        assert!(reply.location.is_none());
        let mut params = join_params(&created, "Someone", "password-for-attende");
        params["meeting_id"] = json!("123456789");
        assert_error(
            &call(&app, encoding, "/join", params).await,
            StatusCode::NOT_FOUND,
            "meeting not found",
        );
        let mut params = join_params(&created, "Someone", "password-for-attende");
        params["meeting_id"] = json!("not-an-id");
        assert_error(
            &call(&app, encoding, "/join", params).await,
            StatusCode::NOT_FOUND,
            "meeting not found",
        );
        let mut params = join_params(&created, "Someone", "password-for-attende");
        params["is_guest"] = json!("maybe");
        assert_error(
            &call(&app, encoding, "/join", params).await,
            StatusCode::BAD_REQUEST,
            "is_guest",
        );
        let mut params = join_params(&created, "Someone", "password-for-attende");
        params["avatar"] = json!("not a url");
        assert_error(
            &call(&app, encoding, "/join", params).await,
            StatusCode::BAD_REQUEST,
            "invalid avatar",
        );
    }
    // The viewer credential convene keeps behind the scenes is no BigBlueButton password.
    let id = MeetingId::parse(created["meeting_id"].as_str().unwrap()).unwrap();
    let viewer = app
        .state
        .meetings
        .meeting(&id)
        .await
        .unwrap()
        .credentials
        .viewer
        .reveal()
        .to_owned();
    assert_error(
        &call(
            &app,
            Encoding::Json,
            "/join",
            join_params(&created, "Someone", &viewer),
        )
        .await,
        StatusCode::FORBIDDEN,
        "wrong password",
    );
}

#[tokio::test]
async fn a_create_time_of_another_session_is_refused_so_old_links_stop_working() {
    let app = TestApp::start().await;
    let created = create(&app, Encoding::Json, seed_create()).await;
    let mut params = join_params(&created, "Someone", "password-for-attende");
    params["create_time"] = json!("1531155809613");
    assert_error(
        &call(&app, Encoding::Json, "/join", params).await,
        StatusCode::CONFLICT,
        "create_time",
    );

    // An unused link from this session; then the meeting ends and a host restarts it.
    let stale_link = join_link(
        &app,
        Encoding::Json,
        join_params(&created, "Early", "password-for-attende"),
    )
    .await;
    let id = MeetingId::parse(created["meeting_id"].as_str().unwrap()).unwrap();
    app.state
        .meetings
        .end_meeting(&id, &Caller::Admin)
        .await
        .unwrap();
    assert_error(
        &call(
            &app,
            Encoding::Json,
            "/join",
            join_params(&created, "Late", "password-for-attende"),
        )
        .await,
        StatusCode::CONFLICT,
        "ended",
    );
    // The new run must open at a later millisecond than the old create_time.
    let old_create_time: i64 = created["create_time"].as_str().unwrap().parse().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while app.state.meetings.now().as_millis() <= old_create_time {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock did not pass create_time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let restarted = app
        .state
        .meetings
        .start_meeting(&id, &Caller::Admin)
        .await
        .unwrap();
    assert_ne!(
        restarted.run.opened_at.as_millis().to_string(),
        created["create_time"].as_str().unwrap()
    );
    // The old create_time no longer opens the meeting, and the old link is refused.
    assert_error(
        &call(
            &app,
            Encoding::Form,
            "/join",
            join_params(&created, "Late", "password-for-attende"),
        )
        .await,
        StatusCode::CONFLICT,
        "create_time",
    );
    let answer = exchange(&app, &stale_link).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
    assert_eq!(answer.body["error"]["code"], "invalid_token");
    // The new session's create_time works.
    let mut params = join_params(&created, "Late", "password-for-attende");
    params["create_time"] = json!(restarted.run.opened_at.as_millis().to_string());
    join_link(&app, Encoding::Json, params).await;
}

#[tokio::test]
async fn max_participant_is_enforced_but_moderators_get_in() {
    let app = TestApp::start().await;
    let mut params = seed_create();
    params["max_participant"] = json!(2);
    let created = create(&app, Encoding::Json, params).await;
    for user in ["a", "b"] {
        let mut params = join_params(&created, user, "password-for-attende");
        params["user_id"] = json!(user);
        let link = join_link(&app, Encoding::Json, params).await;
        assert_eq!(exchange(&app, &link).await.status, StatusCode::OK);
    }
    let mut params = join_params(&created, "c", "password-for-attende");
    params["user_id"] = json!("c");
    assert_error(
        &call(&app, Encoding::Json, "/join", params).await,
        StatusCode::CONFLICT,
        "full",
    );
    // Someone already in may come back (a new link for the same user_id).
    let mut params = join_params(&created, "a", "password-for-attende");
    params["user_id"] = json!("a");
    let link = join_link(&app, Encoding::Json, params).await;
    assert_eq!(exchange(&app, &link).await.status, StatusCode::OK);
    // Two links handed out before the room filled: the exchange past capacity is refused.
    let mut params = seed_create();
    params["max_participant"] = json!(1);
    let small = create(&app, Encoding::Json, params).await;
    let first = join_link(
        &app,
        Encoding::Json,
        join_params(&small, "x", "password-for-attende"),
    )
    .await;
    let second = join_link(
        &app,
        Encoding::Json,
        join_params(&small, "y", "password-for-attende"),
    )
    .await;
    assert_eq!(exchange(&app, &first).await.status, StatusCode::OK);
    let refused = exchange(&app, &second).await;
    assert_eq!(
        refused.body["error"]["code"], "meeting_full",
        "{:?}",
        refused.body
    );
    // A moderator is never turned away.
    let link = join_link(
        &app,
        Encoding::Json,
        join_params(&small, "teacher", "password-for-moderator"),
    )
    .await;
    assert_eq!(exchange(&app, &link).await.body["role"], "host");
}
