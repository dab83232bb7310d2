//! Recordings over HTTP against the real server, on SQLite and PostgreSQL: who may start, stop,
//! read and delete them, the states and their events, a meeting that records itself, the end of
//! a meeting stopping its recording, and a recording the server stopped under. (The media side,
//! with real clients and ffmpeg, is `tests/interop/media/test_recording.py`.)

mod common;

use std::time::{Duration, Instant};

use common::{id_of, pin, types};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Polls the recording until `done` holds of it.
async fn until(
    app: &common::TestApp,
    id: &str,
    rid: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, recording) = app
            .admin("GET", &format!("/v1/meetings/{id}/recordings/{rid}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{recording}");
        if done(&recording) {
            return recording;
        }
        assert!(Instant::now() < deadline, "waiting for {what}: {recording}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(recording: &Value) -> bool {
    recording["state"] == "ready" || recording["state"] == "failed"
}

async fn recording_flow(mut app: common::TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Lecture", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let recordings = format!("/v1/meetings/{id}/recordings");
    assert_eq!(meeting["auto_record"], false);
    assert_eq!(meeting["recording_id"], Value::Null);

    // Only a live meeting is recorded.
    let (status, body) = app.admin("POST", &recordings, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "meeting_not_live");

    let host = app.enter(&meeting, pin(&meeting, "host"), "lecturer").await;
    let host = app.join(&id, host["token"].as_str().unwrap()).await;
    let host = host["access_token"].as_str().unwrap().to_owned();
    let student = app
        .enter(&meeting, pin(&meeting, "participant"), "student")
        .await;
    let student = app.join(&id, student["token"].as_str().unwrap()).await;
    let student = student["access_token"].as_str().unwrap().to_owned();

    // A participant neither starts nor reads recordings.
    for (method, path) in [("POST", &recordings), ("GET", &recordings)] {
        let (status, body) = app.bearer(method, path, &student, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {body}");
    }
    let (status, body) = app.anonymous("GET", &recordings, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The host starts it; one at a time.
    let (status, started) = app.bearer("POST", &recordings, &host, None).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["state"], "recording");
    assert_eq!(started["started_by"], "lecturer");
    assert_eq!(started["meeting_id"], id.as_str());
    let rid = started["recording_id"].as_str().unwrap().to_owned();
    let (status, body) = app.admin("POST", &recordings, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
    let (_, admin_view) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    assert_eq!(admin_view["recording_id"], rid.as_str());
    // Everyone in the meeting is told.
    assert!(
        types(&app.events(&id, &student, 0).await).contains(&"recording.started".to_owned()),
        "the participant sees recording.started"
    );

    // Unknown and malformed recording ids.
    let (status, body) = app
        .admin(
            "GET",
            &format!("{recordings}/rec_000000000000000000000000"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "recording_not_found");
    let (status, body) = app
        .admin("GET", &format!("{recordings}/../../x"), None)
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    let (status, body) = app
        .admin("GET", &format!("{recordings}/rec_nothex"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The participant cannot stop it; the host can, once.
    let stop = format!("{recordings}/{rid}/stop");
    let (status, _) = app.bearer("POST", &stop, &student, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, stopped) = app.bearer("POST", &stop, &host, None).await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_ne!(stopped["state"], "recording");
    assert_eq!(stopped["stop_reason"], "requested");
    let (status, body) = app.bearer("POST", &stop, &host, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Nobody published: ready, with no file.
    let done = until(&app, &id, &rid, "the first recording", finished).await;
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(done["files"], json!([]));
    let (status, body) = app
        .admin(
            "GET",
            &format!("{recordings}/{rid}/files/composite.mp4"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let index = done["index"].as_array().unwrap();
    let present: Vec<&str> = index
        .iter()
        .filter(|e| e["change"] == "present")
        .map(|e| e["identity"].as_str().unwrap())
        .collect();
    assert_eq!(present, ["lecturer", "student"], "{done}");

    // Ending the meeting stops the running recording.
    let (_, second) = app.bearer("POST", &recordings, &host, None).await;
    let second_id = second["recording_id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .bearer("POST", &format!("/v1/meetings/{id}/end"), &host, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = until(&app, &id, &second_id, "the second recording", finished).await;
    assert_eq!(second["stop_reason"], "meeting_ended", "{second}");

    // Deleting: not by a participant; by the host of the ended meeting, with its last token.
    let delete = format!("{recordings}/{rid}");
    let (status, _) = app.bearer("DELETE", &delete, &student, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app.bearer("DELETE", &delete, &host, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app.admin("GET", &delete, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = app.admin("GET", &recordings, None).await;
    let listed: Vec<&str> = listed["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recording_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [second_id.as_str()]);

    // A meeting that records itself whenever it goes live.
    let (status, patched) = app
        .admin(
            "PATCH",
            &format!("/v1/meetings/{id}"),
            Some(json!({"auto_record": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["auto_record"], true);
    let again = app.enter(&meeting, pin(&meeting, "host"), "lecturer").await;
    app.join(&id, again["token"].as_str().unwrap()).await;
    let (_, listed) = app.admin("GET", &recordings, None).await;
    let automatic = listed["recordings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "recording")
        .expect("a recording started with the run")
        .clone();
    assert_eq!(automatic["started_by"], Value::Null);
    let automatic_id = automatic["recording_id"].as_str().unwrap().to_owned();

    // The server stops while it records: at the next start it is closed as failed.
    app.restart().await;
    let cut = until(&app, &id, &automatic_id, "the cut recording", finished).await;
    assert_eq!(cut["state"], "failed", "{cut}");
    assert_eq!(cut["stop_reason"], "server_stopped", "{cut}");
    let (_, events) = app
        .admin("GET", &format!("/v1/meetings/{id}/events?after=0"), None)
        .await;
    let recording_events: Vec<String> = types(events["events"].as_array().unwrap())
        .into_iter()
        .filter(|t| t.starts_with("recording."))
        .collect();
    assert_eq!(
        recording_events,
        [
            "recording.started",
            "recording.stopped",
            "recording.ready",
            "recording.started",
            "recording.stopped",
            "recording.ready",
            "recording.deleted",
            "recording.started",
            "recording.stopped",
            "recording.failed",
        ]
    );
    app.stop().await;
}

on_both_stores!(recording_flow);
