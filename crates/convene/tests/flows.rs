//! Product flows 1-7 (docs/product.md) over HTTP against the real server, on SQLite and PostgreSQL.

mod common;

use common::{claims, id_of, pin, types};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Flows 1-4: create, wait, host starts, waiting guests admitted and notified, token per role.
async fn waiting_room_flow(app: common::TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Clinic visit", "policy": "wait_for_host"}))
        .await;
    let id = id_of(&meeting);
    assert_eq!(id.len(), 10, "default MEETING_ID_DIGITS");
    assert_eq!(meeting["status"], "created");
    for role in ["host", "participant", "viewer"] {
        let p = pin(&meeting, role);
        assert!(
            p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit()),
            "generated 8-digit PIN: {p}"
        );
    }

    // Flow 2: a guest lands in the waiting room with a waiting-room token.
    let guest = app
        .enter(&meeting, pin(&meeting, "participant"), "patient")
        .await;
    assert_eq!(guest["state"], "waiting");
    assert_eq!(guest["role"], "speaker");
    assert!(
        guest["events_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/meetings/{id}/events"))
    );
    let waiting_token = guest["token"].as_str().unwrap().to_owned();
    let c = claims(&waiting_token);
    assert_eq!(c["sub"], "patient");
    assert_eq!(c["convene"]["kind"], "waiting");
    assert!(
        c["video"].get("roomJoin").is_none(),
        "a waiting token cannot join media"
    );
    let (status, body) = app.try_join(&id, &waiting_token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "meeting_not_live");
    // The waiting guest sees its own entry, not the host-only creation event.
    assert_eq!(
        types(&app.events(&id, &waiting_token, 0).await),
        ["participant.entered"]
    );

    // Flow 3: the host joins; the meeting goes live; the waiting guest is admitted at once.
    let host = app.enter(&meeting, pin(&meeting, "host"), "doctor").await;
    assert_eq!(host["state"], "admitted");
    let host_join = app.join(&id, host["token"].as_str().unwrap()).await;
    let host_token = host_join["access_token"].as_str().unwrap().to_owned();
    let hc = claims(&host_token);
    assert_eq!(hc["video"]["roomAdmin"], true);
    assert_eq!(hc["video"]["canPublish"], true);
    assert_eq!(hc["video"]["room"], meeting["room_name"]);
    assert!(host_join["url"].as_str().unwrap().starts_with("ws://"));
    let (_, m) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    assert_eq!(m["status"], "live");
    let seen = types(&app.events(&id, &waiting_token, 0).await);
    // Now a member, the guest also sees the roster (the host's join), but never others' admissions.
    assert_eq!(
        seen,
        [
            "participant.entered",
            "meeting.started",
            "participant.admitted",
            "participant.joined"
        ]
    );
    let guest_view = app.events(&id, &waiting_token, 0).await;
    assert_eq!(guest_view[2]["data"]["identity"], "patient");
    // The host sees everyone let in at once as one event listing them.
    let host_view = app.events(&id, &host_token, 0).await;
    let bulk: Vec<&Value> = host_view
        .iter()
        .filter(|e| e["type"] == "participants.admitted")
        .collect();
    assert_eq!(bulk.len(), 1, "{host_view:?}");
    assert_eq!(bulk[0]["data"]["identities"], json!(["patient"]));
    assert_eq!(bulk[0]["seq"], guest_view[2]["seq"], "one event, two views");
    let (_, me) = app
        .bearer(
            "GET",
            &format!("/v1/meetings/{id}/me"),
            &waiting_token,
            None,
        )
        .await;
    assert_eq!(me["participant"]["state"], "admitted");

    // Flow 4: the admitted guest exchanges the waiting token for an access token.
    let join = app.join(&id, &waiting_token).await;
    let gc = claims(join["access_token"].as_str().unwrap());
    assert_eq!(gc["sub"], "patient");
    assert_eq!(gc["iss"], common::KEY);
    assert_eq!(gc["video"]["roomJoin"], true);
    assert_eq!(gc["video"]["canPublish"], true);
    assert!(gc["video"].get("roomAdmin").is_none());
    assert_eq!(gc["convene"]["kind"], "access");
    assert_eq!(gc["convene"]["instance"], m["run"]["instance_id"]);

    // A viewer arriving while live is admitted at once and may not publish.
    let viewer = app
        .enter(&meeting, pin(&meeting, "viewer"), "observer")
        .await;
    assert_eq!(viewer["state"], "admitted");
    let vjoin = app.join(&id, viewer["token"].as_str().unwrap()).await;
    let vc = claims(vjoin["access_token"].as_str().unwrap());
    assert_eq!(vc["video"]["canPublish"], false);
    assert_eq!(vc["video"]["canSubscribe"], true);
    assert_eq!(vc["video"]["canPublishData"], false);

    // Hosts see the roster; guests do not.
    let (status, list) = app
        .bearer(
            "GET",
            &format!("/v1/meetings/{id}/participants"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["participants"].as_array().unwrap().len(), 3);
    let (status, _) = app
        .bearer(
            "GET",
            &format!("/v1/meetings/{id}/participants"),
            &waiting_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// Flow 3 under `ask_host`: admit one, deny, admit all, send back.
async fn ask_host_flow(app: common::TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Interview", "policy": "ask_host"}))
        .await;
    let id = id_of(&meeting);
    let host = app.enter(&meeting, pin(&meeting, "host"), "host").await;
    let host_join = app.join(&id, host["token"].as_str().unwrap()).await;
    let host_token = host_join["access_token"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for who in ["a", "b", "c", "d"] {
        let g = app.enter(&meeting, pin(&meeting, "participant"), who).await;
        assert_eq!(
            g["state"], "waiting",
            "ask_host keeps guests waiting while live"
        );
        tokens.push(g["token"].as_str().unwrap().to_owned());
    }
    let (_, waiting) = app
        .bearer(
            "GET",
            &format!("/v1/meetings/{id}/participants?state=waiting"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(waiting["participants"].as_array().unwrap().len(), 4);
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/a/admit"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A guest cannot admit.
    let (status, body) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/c/admit"),
            &tokens[0],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Deny: b's token stops working.
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/b/deny"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .bearer("GET", &format!("/v1/meetings/{id}/me"), &tokens[1], None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Admit all (the admin can too).
    let (status, _) = app
        .admin("POST", &format!("/v1/meetings/{id}/admit-all"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&tokens[2], &tokens[3]] {
        let (_, me) = app
            .bearer("GET", &format!("/v1/meetings/{id}/me"), token, None)
            .await;
        assert_eq!(me["participant"]["state"], "admitted");
    }
    // Send back: to the waiting room again.
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/c/send-back"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, c) = app
        .admin("GET", &format!("/v1/meetings/{id}/participants/c"), None)
        .await;
    assert_eq!(c["state"], "waiting");
    // Admitting someone not waiting is a clear 409.
    let (status, body) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/a/admit"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state"))
    );
    app.stop().await;
}

/// Flow 5: raise hand, invite, accept, demote on a stage; chat.
async fn stage_flow(app: common::TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Town hall", "mode": "stream", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let host = app.enter(&meeting, pin(&meeting, "host"), "host").await;
    let host_join = app.join(&id, host["token"].as_str().unwrap()).await;
    let host_token = host_join["access_token"].as_str().unwrap().to_owned();
    let viewer = app.enter(&meeting, pin(&meeting, "viewer"), "v1").await;
    let vjoin = app.join(&id, viewer["token"].as_str().unwrap()).await;
    let viewer_token = vjoin["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&viewer_token)["video"]["canPublish"], false);

    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/hand"),
            &viewer_token,
            Some(json!({"raised": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, v1) = app
        .bearer(
            "GET",
            &format!("/v1/meetings/{id}/participants/v1"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(v1["hand_raised"], true);
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/v1/invite"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(types(&app.events(&id, &viewer_token, 0).await).contains(&"stage.invited".to_owned()));
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/invitation/accept"),
            &viewer_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, v1) = app
        .admin("GET", &format!("/v1/meetings/{id}/participants/v1"), None)
        .await;
    assert_eq!(
        (v1["role"].as_str(), v1["hand_raised"].as_bool()),
        (Some("speaker"), Some(false))
    );
    // A fresh token now grants publishing (the role belongs to the person).
    let again = app.join(&id, &viewer_token).await;
    assert_eq!(
        claims(again["access_token"].as_str().unwrap())["video"]["canPublish"],
        true
    );
    // Demote.
    let (status, body) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/v1/role"),
            &host_token,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    // Chat reaches members; the host reads it.
    let (status, sent) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/chat"),
            &viewer_token,
            Some(json!({"text": "hello stage"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let events = app.events(&id, &host_token, 0).await;
    let chat = events.iter().find(|e| e["type"] == "chat.message").unwrap();
    assert_eq!(chat["data"]["text"], "hello stage");
    assert_eq!(chat["data"]["from"], "v1");
    assert_eq!(chat["seq"], sent["seq"]);
    app.stop().await;
}

/// Flow 6: remove and ban; tokens stop working; a ban holds across re-entry and restarts.
async fn moderation_flow(mut app: common::TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Class", "policy": "open"}))
        .await;
    let id = id_of(&meeting);
    let host = app.enter(&meeting, pin(&meeting, "host"), "teacher").await;
    let host_join = app.join(&id, host["token"].as_str().unwrap()).await;
    let host_token = host_join["access_token"].as_str().unwrap().to_owned();
    let s1 = app
        .enter(&meeting, pin(&meeting, "participant"), "s1")
        .await;
    let s1_token = s1["token"].as_str().unwrap().to_owned();
    let s1_join = app.join(&id, &s1_token).await;
    let s1_access = s1_join["access_token"].as_str().unwrap().to_owned();
    let s2 = app
        .enter(&meeting, pin(&meeting, "participant"), "s2")
        .await;
    let s2_token = s2["token"].as_str().unwrap().to_owned();

    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/s1/mute"),
            &host_token,
            Some(json!({"track": "audio"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/s1/remove"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for token in [&s1_token, &s1_access] {
        let (status, body) = app.try_join(&id, token).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "removed tokens stop working: {body}"
        );
    }
    // Removal is not a ban: s1 may come back through the door (new token).
    let back = app
        .enter(&meeting, pin(&meeting, "participant"), "s1")
        .await;
    assert_eq!(back["state"], "admitted");

    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/s2/ban"),
            &host_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.try_join(&id, &s2_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let entry = json!({"credential": pin(&meeting, "participant"), "name": "s2", "identity": "s2"});
    let (status, body) = app
        .anonymous(
            "POST",
            &format!("/v1/meetings/{id}/enter"),
            Some(entry.clone()),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("banned"))
    );
    // Even the admin cannot hand a banned person a token.
    let (status, body) = app
        .admin(
            "POST",
            &format!("/v1/meetings/{id}/participants"),
            Some(json!({"identity": "s2", "role": "speaker"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    app.restart().await;
    let (status, body) = app
        .anonymous("POST", &format!("/v1/meetings/{id}/enter"), Some(entry))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("banned")),
        "the ban survives a restart"
    );
    let events = app.events(&id, &host_token, 0).await;
    let kinds = types(&events);
    for expected in [
        "participant.muted",
        "participant.removed",
        "participant.banned",
    ] {
        assert!(
            kinds.contains(&expected.to_owned()),
            "{expected} in {kinds:?}"
        );
    }
    app.stop().await;
}

/// Flow 7: ending disconnects everyone and tells the waiting room; nothing joins until a restart,
/// and tokens of the old run do not work in the new one.
async fn end_and_restart_flow(app: common::TestApp) {
    let meeting = app
        .create_meeting(json!({"name": "Webinar", "policy": "ask_host"}))
        .await;
    let id = id_of(&meeting);
    let host = app.enter(&meeting, pin(&meeting, "host"), "host").await;
    let host_waiting = host["token"].as_str().unwrap().to_owned();
    let host_join = app.join(&id, &host_waiting).await;
    let host_token = host_join["access_token"].as_str().unwrap().to_owned();
    let waiting = app
        .enter(&meeting, pin(&meeting, "participant"), "lobby")
        .await;
    let waiting_token = waiting["token"].as_str().unwrap().to_owned();
    let (status, ended) = app
        .bearer("POST", &format!("/v1/meetings/{id}/end"), &host_token, None)
        .await;
    assert_eq!(
        (status, ended["status"].as_str()),
        (StatusCode::OK, Some("ended"))
    );
    assert_eq!(
        types(&app.events(&id, &waiting_token, 0).await)
            .last()
            .unwrap(),
        "meeting.ended",
        "the waiting room is told"
    );
    let (status, body) = app
        .anonymous(
            "POST",
            &format!("/v1/meetings/{id}/enter"),
            Some(json!({"credential": pin(&meeting, "participant"), "name": "late"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("meeting_ended"))
    );
    let (status, _) = app.try_join(&id, &waiting_token).await;
    assert!(status.is_client_error());
    // The host starts it again: a new run; tokens of the old run are refused.
    let host_again = app.enter(&meeting, pin(&meeting, "host"), "host").await;
    app.join(&id, host_again["token"].as_str().unwrap()).await;
    let (_, m) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    assert_eq!(
        (m["status"].as_str(), m["run"]["number"].as_u64()),
        (Some("live"), Some(2))
    );
    let (status, body) = app
        .bearer("GET", &format!("/v1/meetings/{id}/me"), &host_token, None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an access token of run 1 is dead in run 2: {body}"
    );
    let (status, _) = app
        .bearer(
            "POST",
            &format!("/v1/meetings/{id}/participants/lobby/admit"),
            &host_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

/// Meetings, roles, bans and the event log survive a restart.
async fn restart_keeps_everything(mut app: common::TestApp) {
    let meeting = app.create_meeting(json!({"name": "Persist", "mode": "stream", "policy": "open", "capacity": 50, "quality": "hd", "metadata": {"course": "bio-101"}})).await;
    let id = id_of(&meeting);
    let host = app.enter(&meeting, pin(&meeting, "host"), "host").await;
    app.join(&id, host["token"].as_str().unwrap()).await;
    app.enter(&meeting, pin(&meeting, "viewer"), "promoted")
        .await;
    app.enter(&meeting, pin(&meeting, "viewer"), "banned").await;
    app.admin(
        "POST",
        &format!("/v1/meetings/{id}/participants/promoted/role"),
        Some(json!({"role": "speaker"})),
    )
    .await;
    app.admin(
        "POST",
        &format!("/v1/meetings/{id}/participants/banned/ban"),
        Some(json!({"duration_seconds": 3600})),
    )
    .await;
    let (_, before_meeting) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    let (_, before_people) = app
        .admin("GET", &format!("/v1/meetings/{id}/participants"), None)
        .await;
    let (_, before_events) = app
        .admin("GET", &format!("/v1/meetings/{id}/events"), None)
        .await;
    app.restart().await;
    let (_, after_meeting) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    let (_, after_people) = app
        .admin("GET", &format!("/v1/meetings/{id}/participants"), None)
        .await;
    let (_, after_events) = app
        .admin("GET", &format!("/v1/meetings/{id}/events"), None)
        .await;
    assert_eq!(before_meeting, after_meeting);
    assert_eq!(before_people, after_people);
    assert_eq!(before_events, after_events);
    // The promotion applies to the person's next entry and token.
    let again = app
        .enter(&meeting, pin(&meeting, "viewer"), "promoted")
        .await;
    assert_eq!(again["role"], "speaker");
    app.stop().await;
}

/// What the web app needs: the waiting room's queue position and chat with the hosts, a host
/// locking the meeting, and the admin's meeting list with search and head counts.
async fn web_app_flow(app: common::TestApp) {
    let meeting = app
        .create_meeting(
            json!({"name": "Office Hours", "policy": "ask_host", "waiting_room_chat": true}),
        )
        .await;
    assert_eq!(meeting["waiting_room_chat"], true);
    let id = id_of(&meeting);
    let host = app.enter(&meeting, pin(&meeting, "host"), "host").await;
    let host_join = app.join(&id, host["token"].as_str().unwrap()).await;
    let host_token = host_join["access_token"].as_str().unwrap().to_owned();
    let g1 = app
        .enter(&meeting, pin(&meeting, "participant"), "g1")
        .await;
    let g2 = app
        .enter(&meeting, pin(&meeting, "participant"), "g2")
        .await;
    let (g1, g2) = (g1["token"].as_str().unwrap(), g2["token"].as_str().unwrap());
    let me = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        let id = id.clone();
        async move {
            app.bearer("GET", &format!("/v1/meetings/{id}/me"), &token, None)
                .await
                .1
        }
    };
    let first = me(g1).await;
    assert_eq!(first["position"], 1, "{first}");
    assert_eq!(first["meeting"]["policy"], "ask_host");
    assert_eq!(first["meeting"]["waiting_room_chat"], true);
    assert_eq!(me(g2).await["position"], 2);
    assert!(
        me(&host_token).await.get("position").is_none(),
        "only while waiting"
    );

    // The waiting guest writes to the hosts; a host answers; the other guest sees neither.
    let chat = format!("/v1/meetings/{id}/chat");
    let (status, body) = app
        .bearer("POST", &chat, g1, Some(json!({"text": "may I come in?"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .bearer(
            "POST",
            &chat,
            &host_token,
            Some(json!({"text": "one minute", "to": "g1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .bearer("POST", &chat, g1, Some(json!({"text": "hi", "to": "g2"})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let texts = |events: Vec<Value>| {
        events
            .into_iter()
            .filter(|e| e["type"] == "chat.message")
            .map(|e| {
                (
                    e["data"]["from"].as_str().unwrap().to_owned(),
                    e["data"]["text"].as_str().unwrap().to_owned(),
                    e["data"]["waiting_room"] == true,
                )
            })
            .collect::<Vec<_>>()
    };
    let conversation = vec![
        ("g1".to_owned(), "may I come in?".to_owned(), true),
        ("host".to_owned(), "one minute".to_owned(), true),
    ];
    assert_eq!(texts(app.events(&id, g1, 0).await), conversation);
    assert_eq!(texts(app.events(&id, &host_token, 0).await), conversation);
    assert!(texts(app.events(&id, g2, 0).await).is_empty());

    // Admitting the first guest moves the second up.
    app.bearer(
        "POST",
        &format!("/v1/meetings/{id}/participants/g1/admit"),
        &host_token,
        None,
    )
    .await;
    assert_eq!(me(g2).await["position"], 1);

    // The admin's list: search by name or id, with head counts.
    let (status, list) = app.admin("GET", "/v1/meetings?q=office", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let found = list["meetings"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{list}");
    assert_eq!(found[0]["meeting_id"], id.as_str());
    assert_eq!(
        found[0]["people"],
        json!({"waiting": 1, "admitted": 1, "joined": 1})
    );
    let (_, by_id) = app
        .admin("GET", &format!("/v1/meetings?q={}", &id[2..7]), None)
        .await;
    assert!(
        by_id["meetings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["meeting_id"] == id.as_str())
    );
    let (_, none) = app
        .admin("GET", "/v1/meetings?q=no-such-meeting", None)
        .await;
    assert_eq!(none["meetings"], json!([]));
    let long = "x".repeat(201);
    let (status, _) = app
        .admin("GET", &format!("/v1/meetings?q={long}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, one) = app.admin("GET", &format!("/v1/meetings/{id}"), None).await;
    assert!(one.get("people").is_none(), "head counts are for the list");

    // A host locks the meeting; a guest may not; a locked meeting takes nobody new.
    let policy = format!("/v1/meetings/{id}/policy");
    let (status, _) = app
        .bearer("POST", &policy, g2, Some(json!({"policy": "deny"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, locked) = app
        .bearer(
            "POST",
            &policy,
            &host_token,
            Some(json!({"policy": "deny"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{locked}");
    assert_eq!(locked["policy"], "deny");
    assert!(
        locked.get("credentials").is_none(),
        "a host's answer has no credentials"
    );
    assert_eq!(
        me(g2).await["position"],
        1,
        "those waiting before the lock still queue"
    );
    let (status, body) = app
        .anonymous(
            "POST",
            &format!("/v1/meetings/{id}/enter"),
            Some(json!({"credential": pin(&meeting, "participant"), "name": "late"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("meeting_locked"))
    );
    let (status, body) = app
        .bearer(
            "POST",
            &policy,
            &host_token,
            Some(json!({"policy": "lock"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Opening it lets the waiting in; the waiting-room chat can be turned off.
    app.bearer(
        "POST",
        &policy,
        &host_token,
        Some(json!({"policy": "open"})),
    )
    .await;
    assert_eq!(me(g2).await["participant"]["state"], "admitted");
    let (_, patched) = app
        .admin(
            "PATCH",
            &format!("/v1/meetings/{id}"),
            Some(json!({"waiting_room_chat": false})),
        )
        .await;
    assert_eq!(patched["waiting_room_chat"], false);
    app.stop().await;
}

on_both_stores!(
    web_app_flow,
    waiting_room_flow,
    ask_host_flow,
    stage_flow,
    moderation_flow,
    end_and_restart_flow,
    restart_keeps_everything
);

/// How long the slow webhook endpoint below takes to answer its first delivery.
const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_secs(2);

/// A graceful shutdown finishes the background tasks' work: a webhook delivery in flight is
/// answered and recorded as delivered before the server's `stop` returns (the sender and its
/// lanes are joined), so the next start does not send it again.
#[tokio::test]
async fn a_graceful_shutdown_finishes_the_webhook_delivery_in_flight() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Clone, Default)]
    struct Endpoint {
        requests: Arc<AtomicUsize>,
        in_flight: Arc<tokio::sync::Notify>,
        answered: Arc<AtomicBool>,
    }
    // The first delivery is answered 200 after SLOW_ANSWER; any later one (a delivery sent
    // again) 500, so it would not show as delivered.
    async fn receive(
        axum::extract::State(endpoint): axum::extract::State<Endpoint>,
    ) -> axum::http::StatusCode {
        if endpoint.requests.fetch_add(1, Ordering::SeqCst) > 0 {
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        }
        endpoint.in_flight.notify_one();
        tokio::time::sleep(SLOW_ANSWER).await;
        endpoint.answered.store(true, Ordering::SeqCst);
        axum::http::StatusCode::OK
    }
    let endpoint = Endpoint::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(endpoint.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let mut app = common::TestApp::start_with(
        common::StoreKind::Sqlite,
        &[("CONVENE_WEBHOOK_URLS", url.as_str())],
    )
    .await
    .unwrap();
    let meeting = app.create_meeting(json!({"name": "Hooked"})).await;
    endpoint.in_flight.notified().await;
    // Stopped while the endpoint has the delivery (and started again on the same database).
    app.restart().await;
    assert!(
        endpoint.answered.load(Ordering::SeqCst),
        "the shutdown waited for the delivery in flight"
    );
    let (status, page) = app
        .admin(
            "GET",
            &format!("/v1/webhooks/deliveries?meeting_id={}", id_of(&meeting)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first = &page["deliveries"][0];
    assert_eq!(first["event_type"], "meeting.created", "{page}");
    assert_eq!(first["status"], "delivered", "{page}");
    assert_eq!(first["attempts"], 1, "{page}");
    app.stop().await;
}
