//! `POST /livekit/webhook`: media events from an external LiveKit deployment, verified as LiveKit
//! signs them (a JWT in `Authorization`, HS256 with the LiveKit key pair, whose `sha256` claim is
//! the body's digest), recorded in the meeting's event log as the embedded engine's are.
//!
//! A join is also checked against the stored state: LiveKit cannot ask convene before it admits
//! someone, so a person who is not (or no longer) admitted to a live meeting of that room, or is
//! banned, is disconnected at once through the media engine.
//! Egress events finish recordings (`crate::egress`): an ended egress of a recording makes it
//! ready or failed; egresses convene did not start, and unknown recordings, are ignored (200,
//! `recorded: false`), as rooms that are no convene meeting's are.
//! Bad signature -> 401, malformed body -> 400, both in the native error shape.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, header};
use convene_api::ApiError;
use convene_core::ErrorCode;
use convene_core::ids::{Identity, RoomName};
use convene_core::ops::MediaCommand;
use convene_core::ports::MediaEngine;
use convene_core::service::{MediaReport, Meetings, may_connect_media};
use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::{WebhookError, WebhookReceiver};
use livekit_protocol as proto;

/// The webhook route.
pub const PATH: &str = "/livekit/webhook";
/// Largest webhook body accepted.
const MAX_BODY: usize = 256 * 1024;

#[derive(Clone)]
struct WebhookState {
    meetings: Arc<Meetings>,
    media: Arc<dyn MediaEngine>,
    receiver: WebhookReceiver,
}

/// The webhook receiver, verifying with the LiveKit key pair.
pub fn router(
    meetings: Arc<Meetings>,
    media: Arc<dyn MediaEngine>,
    api_key: &str,
    api_secret: &str,
) -> Router {
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(api_key, api_secret));
    Router::new()
        .route(PATH, axum::routing::post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(WebhookState {
            meetings,
            media,
            receiver,
        })
}

/// What a LiveKit webhook event means for a meeting's log (`None`: nothing to record).
pub fn report_for(event: &proto::WebhookEvent) -> Option<(RoomName, MediaReport)> {
    let room = RoomName::parse(&event.room.as_ref()?.name).ok()?;
    let identity = Identity::parse(&event.participant.as_ref()?.identity).ok()?;
    let report = match event.event.as_str() {
        "participant_joined" => MediaReport::Connected { identity },
        "participant_left" | "participant_connection_aborted" => {
            MediaReport::Disconnected { identity }
        }
        "track_published" => {
            let track = event.track.as_ref()?;
            let kind = match proto::TrackType::try_from(track.r#type) {
                Ok(proto::TrackType::Video) => "video",
                Ok(proto::TrackType::Audio) => "audio",
                _ => "data",
            };
            MediaReport::TrackPublished {
                identity,
                track_sid: track.sid.clone(),
                kind: kind.to_owned(),
            }
        }
        "track_unpublished" => MediaReport::TrackUnpublished {
            identity,
            track_sid: event.track.as_ref()?.sid.clone(),
        },
        _ => return None,
    };
    Some((room, report))
}

/// Checks a verified webhook body: the error a bad one gets (401 for the signature, 400 for the body).
pub fn verify(
    receiver: &WebhookReceiver,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<proto::WebhookEvent, ApiError> {
    let unauthenticated = |why: &str| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            format!("webhook signature: {why}"),
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing Authorization header"))?
        .to_str()
        .map_err(|_| unauthenticated("malformed Authorization header"))?;
    // LiveKit sends the bare token; a `Bearer` scheme is read as everywhere else.
    let token = convene_api::auth::bearer(value).unwrap_or(value.trim());
    // With the default key pair, convene signs its own webhooks with LiveKit's key: one of those,
    // replayed here by an endpoint that received it, says it is convene's and is refused.
    if convene_token::has_convene_claim(token) {
        return Err(unauthenticated("a token convene signed is not LiveKit's"));
    }
    let body = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "the webhook body is not UTF-8 JSON",
        )
    })?;
    receiver.receive(body, token).map_err(|e| match e {
        WebhookError::InvalidData(e) => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the webhook body is not a LiveKit WebhookEvent: {e}"),
        ),
        WebhookError::InvalidAuth(_) => unauthenticated("invalid token"),
        WebhookError::InvalidSignature | WebhookError::InvalidBase64(_) => {
            unauthenticated("the body does not match its sha256 claim")
        }
    })
}

async fn receive(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let event = verify(&state.receiver, &headers, &body)?;
    if let Some(info) = &event.egress_info
        && event.event.starts_with("egress_")
    {
        let reported = crate::egress::report(&state.meetings, info).await?;
        tracing::debug!(
            event = event.event,
            egress_id = info.egress_id,
            ?reported,
            "LiveKit egress event"
        );
        let recorded = matches!(reported, crate::egress::Reported::Finished(_));
        return Ok(axum::Json(
            serde_json::json!({ "ok": true, "recorded": recorded }),
        ));
    }
    let Some((room, report)) = report_for(&event) else {
        return Ok(axum::Json(
            serde_json::json!({ "ok": true, "recorded": false }),
        ));
    };
    if let MediaReport::Connected { identity } = &report
        && !may_stay(&state.meetings, &room, identity).await?
    {
        tracing::info!(room = %room, identity = %identity, "LiveKit admitted someone convene does not: disconnecting");
        state
            .media
            .apply(&[MediaCommand::Disconnect {
                room,
                identity: identity.clone(),
            }])
            .await;
        return Ok(axum::Json(
            serde_json::json!({ "ok": true, "recorded": false }),
        ));
    }
    state.meetings.media_report(&room, report).await?;
    Ok(axum::Json(
        serde_json::json!({ "ok": true, "recorded": true }),
    ))
}

/// Whether a person LiveKit reports as joined may be there: rooms that are no convene meeting's
/// are not convene's to police; in a meeting's room, only an admitted, non-banned person of the
/// live run may stay, and only while the meeting's capacity has room for their connection (the
/// same rule as the embedded engine's admission: someone who left and comes back with a token
/// that has not expired yet does not push the room over its capacity).
async fn may_stay(
    meetings: &Meetings,
    room: &RoomName,
    identity: &Identity,
) -> Result<bool, ApiError> {
    let Some(meeting) = meetings.meeting_by_room(room).await? else {
        return Ok(true);
    };
    let participant = match meetings.participant(&meeting.id, identity).await {
        Ok(participant) => participant,
        Err(e) if e.code() == ErrorCode::ParticipantNotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if may_connect_media(&meeting, &participant, meetings.now()).is_err() {
        return Ok(false);
    }
    match meetings.check_media_capacity(&meeting, &participant).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == ErrorCode::MeetingFull => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use sha2::Digest;

    use super::*;

    const KEY: &str = "lkkey";
    const SECRET: &str = "a-livekit-secret-that-is-long-enough-0123";

    fn event(kind: &str, track: Option<proto::TrackInfo>) -> proto::WebhookEvent {
        proto::WebhookEvent {
            event: kind.into(),
            room: Some(proto::Room {
                name: "standup".into(),
                ..Default::default()
            }),
            participant: Some(proto::ParticipantInfo {
                identity: "alice".into(),
                ..Default::default()
            }),
            track,
            ..Default::default()
        }
    }

    #[test]
    fn livekit_events_map_to_media_reports() {
        let (room, report) = report_for(&event("participant_joined", None)).unwrap();
        assert_eq!(room.as_str(), "standup");
        assert!(
            matches!(report, MediaReport::Connected { identity } if identity.as_str() == "alice")
        );
        assert!(matches!(
            report_for(&event("participant_left", None)).unwrap().1,
            MediaReport::Disconnected { .. }
        ));
        let video = proto::TrackInfo {
            sid: "TR_v".into(),
            r#type: proto::TrackType::Video as i32,
            ..Default::default()
        };
        assert!(matches!(
            report_for(&event("track_published", Some(video.clone()))).unwrap().1,
            MediaReport::TrackPublished { track_sid, kind, .. } if track_sid == "TR_v" && kind == "video"
        ));
        assert!(matches!(
            report_for(&event("track_unpublished", Some(video))).unwrap().1,
            MediaReport::TrackUnpublished { track_sid, .. } if track_sid == "TR_v"
        ));
        assert!(report_for(&event("room_started", None)).is_none());
        assert!(
            report_for(&event("track_published", None)).is_none(),
            "a track event without its track"
        );
    }

    fn now_millis() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    fn signed(body: &str, secret: &str) -> HeaderMap {
        let digest =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as usize;
        let claims = livekit_api::access_token::Claims {
            iss: KEY.into(),
            nbf: now,
            exp: now + 300,
            sha256: digest,
            ..Default::default()
        };
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, token.parse().unwrap());
        headers
    }

    #[test]
    fn signatures_are_checked_and_bodies_parsed() {
        let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(KEY, SECRET));
        let body = r#"{"event":"participant_joined","room":{"name":"standup"},"participant":{"identity":"alice"}}"#;
        let event = verify(&receiver, &signed(body, SECRET), body.as_bytes()).unwrap();
        assert_eq!(event.event, "participant_joined");

        let status = |e: ApiError| e.code.http_status();
        assert_eq!(
            status(
                verify(
                    &receiver,
                    &signed(body, "another-secret-that-is-long-enough-0123").clone(),
                    body.as_bytes()
                )
                .unwrap_err()
            ),
            401
        );
        assert_eq!(
            status(verify(&receiver, &signed("{}", SECRET), body.as_bytes()).unwrap_err()),
            401,
            "body swapped"
        );
        assert_eq!(
            status(verify(&receiver, &HeaderMap::new(), body.as_bytes()).unwrap_err()),
            401
        );
        // A webhook convene itself signed with the same key pair (the default), replayed here
        // by an endpoint that received it: LiveKit's verifier alone would take it.
        let ours = convene_token::Signer::new(
            KEY,
            convene_core::apikey::ApiSecret::parse(SECRET).unwrap(),
        )
        .webhook_token(
            body.as_bytes(),
            convene_core::Timestamp::from_millis(now_millis()),
        )
        .unwrap();
        assert!(
            receiver.receive(body, &ours).is_ok(),
            "LiveKit's own receiver verifies convene's webhooks"
        );
        let mut replayed = HeaderMap::new();
        replayed.insert(header::AUTHORIZATION, ours.parse().unwrap());
        assert_eq!(
            status(verify(&receiver, &replayed, body.as_bytes()).unwrap_err()),
            401,
            "convene's own webhook replayed as LiveKit's"
        );
        // LiveKit sends the bare token; one under a `Bearer` scheme in any case is read alike.
        let bare = signed(body, SECRET);
        let bare = bare[header::AUTHORIZATION].to_str().unwrap();
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                format!("{scheme} {bare}").parse().unwrap(),
            );
            let event = verify(&receiver, &headers, body.as_bytes()).unwrap();
            assert_eq!(event.event, "participant_joined", "{scheme}");
        }
        let malformed = r#"{"event": 5"#;
        assert_eq!(
            status(
                verify(&receiver, &signed(malformed, SECRET), malformed.as_bytes()).unwrap_err()
            ),
            400
        );
    }
}
