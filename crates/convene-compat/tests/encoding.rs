//! Every surface refuses a form (or, for seed 004, a query string) whose text is not UTF-8 once
//! percent-decoded, with a clear 4xx (seed 004: `result: FAIL`, `BADPARA`) in its own error
//! shape, instead of reading it with U+FFFD in place of what was sent.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{BBB_TOKEN, PASSCODE, Reply, TestApp, basic};
use serde_json::json;

async fn form(
    app: &TestApp,
    path: &str,
    body: &'static [u8],
    authorization: Option<&str>,
) -> Reply {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    app.send(request.body(Body::from(body)).unwrap()).await
}

#[tokio::test]
async fn forms_that_are_not_utf8_are_refused_in_each_surfaces_shape() {
    let app = TestApp::start().await;

    // Seed 000: a JSON string starting with "Error: ".
    let reply = form(
        &app,
        "/compat/waiting-room/user/enter-waiting-room",
        b"meeting_id=%ff",
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, json!("Error: meeting_id is not UTF-8 text"));

    // Seed 001: {"error": {"message", "explanation"}}.
    let reply = form(
        &app,
        "/compat/live-stream/create-stream",
        b"user_identity=ann&stream_name=%c3%28",
        Some(PASSCODE),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body,
        json!({ "error": { "message": "invalid stream_name", "explanation": "Stream_name is not UTF-8 text." } })
    );

    // Seed 002: {"msg"}.
    let reply = form(
        &app,
        "/compat/livekit-join/",
        b"roomName=r%ff&uid=ann",
        Some(&basic()),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, json!({ "msg": "roomName is not UTF-8 text" }));

    // Seed 003: {"message"}; a raw byte that is not UTF-8 is refused like an encoded one.
    let reply = form(&app, "/compat/bbb/create", b"name=caf\xe9", Some(BBB_TOKEN)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, json!({ "message": "name is not UTF-8 text" }));

    // Seed 004: HTTP 200 with result FAIL and BADPARA, from the body or the query string.
    let reply = form(
        &app,
        "/compat/mesibo/api",
        b"op=login&appid=a&name=Ann&email=%ff@x.com",
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["result"], "FAIL");
    assert_eq!(reply.body["error"], "BADPARA");
    assert_eq!(reply.body["message"], "email is not UTF-8 text");
    let query = Request::get("/compat/mesibo/api?op=login&appid=a&name=Ann&email=%ff@x.com")
        .body(Body::empty())
        .unwrap();
    let reply = app.send(query).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["result"], "FAIL");
    assert_eq!(reply.body["error"], "BADPARA");
    // Nobody was mailed a code for a mangled address.
    assert_eq!(app.mailer.count(), 0);
}
