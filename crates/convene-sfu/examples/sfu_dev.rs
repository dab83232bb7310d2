//! Development runner: an axum server with the SFU router, admitting anyone
//! holding a valid LiveKit token, plus a small `/dev/*` control API used by
//! the interop tests (never part of the real binary).
//!
//! Usage: `sfu_dev [--http ADDR] [--udp-port PORT] [--tcp-port PORT] [--key KEY] [--secret SECRET]`
//! (key/secret default to `LIVEKIT_API_KEY` / `LIVEKIT_API_SECRET`). TURN servers for the
//! clients come from `CONVENE_TURN_URLS`, `CONVENE_TURN_SECRET` and `CONVENE_TURN_TTL_SECONDS`,
//! as in the binary. Prints one line `SFU_DEV_READY http=<addr> udp=<addr>,<addr> tcp=<addr>,...`
//! once listening.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use convene_sfu::{
    Admission, Admitted, DataKind, MediaEvent, Permission, Refusal, Sfu, SfuConfig, SfuControl,
    SfuError, TurnConfig, TurnSecret, TurnUrl,
};
use futures::future::BoxFuture;
use livekit_api::access_token::TokenVerifier;

struct TokenAdmission {
    verifier: TokenVerifier,
}

impl Admission for TokenAdmission {
    fn admit(&self, token: &str) -> BoxFuture<'_, Result<Admitted, Refusal>> {
        let result = match self.verifier.verify(token) {
            Err(e) => Err(Refusal::Unauthenticated(format!("invalid token: {e}"))),
            Ok(claims) if !claims.video.room_join || claims.video.room.is_empty() => Err(
                Refusal::Forbidden("token does not grant roomJoin for a room".to_owned()),
            ),
            Ok(claims) => Ok(Admitted {
                room: claims.video.room.clone(),
                identity: claims.sub.clone(),
                name: claims.name.clone(),
                metadata: claims.metadata.clone(),
                permission: Permission {
                    can_publish: claims.video.can_publish(),
                    can_subscribe: claims.video.can_subscribe(),
                    can_publish_data: claims.video.can_publish_data(),
                    hidden: claims.video.hidden,
                    room_admin: claims.video.room_admin,
                },
            }),
        };
        Box::pin(async move { result })
    }

    fn on_event(&self, event: MediaEvent) {
        tracing::info!(?event, "media event");
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// TURN from `CONVENE_TURN_URLS`, `CONVENE_TURN_SECRET`, `CONVENE_TURN_TTL_SECONDS` (unset: none).
fn turn_from_env() -> anyhow::Result<Option<TurnConfig>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (urls, secret) = match (var("CONVENE_TURN_URLS"), var("CONVENE_TURN_SECRET")) {
        (Some(urls), Some(secret)) => (urls, secret),
        (None, None) => return Ok(None),
        _ => anyhow::bail!("set both CONVENE_TURN_URLS and CONVENE_TURN_SECRET, or neither"),
    };
    let urls = urls
        .split(',')
        .map(|url| {
            TurnUrl::parse(url).map_err(|e| anyhow::anyhow!("CONVENE_TURN_URLS: {url:?} {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secret =
        TurnSecret::parse(&secret).map_err(|e| anyhow::anyhow!("CONVENE_TURN_SECRET {e}"))?;
    let ttl = match var("CONVENE_TURN_TTL_SECONDS") {
        Some(ttl) => ttl.parse().map_err(|_| {
            anyhow::anyhow!("CONVENE_TURN_TTL_SECONDS: {ttl:?} is not a whole number")
        })?,
        None => TurnConfig::DEFAULT_TTL_SECS,
    };
    Ok(Some(
        TurnConfig::new(urls, secret, ttl).map_err(|e| anyhow::anyhow!("TURN: {e}"))?,
    ))
}

fn flag(query: &HashMap<String, String>, name: &str, default: bool) -> bool {
    query
        .get(name)
        .map(|v| matches!(v.as_str(), "1" | "true"))
        .unwrap_or(default)
}

fn error_response(e: SfuError) -> Response {
    let status = match e {
        SfuError::NotFound(_) => StatusCode::NOT_FOUND,
        SfuError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string()).into_response()
}

type Q = Query<HashMap<String, String>>;

fn room_identity(q: &HashMap<String, String>) -> (String, String) {
    (
        q.get("room").cloned().unwrap_or_default(),
        q.get("identity").cloned().unwrap_or_default(),
    )
}

async fn dev_permission(State(control): State<SfuControl>, Query(q): Q) -> Response {
    let (room, identity) = room_identity(&q);
    let permission = Permission {
        can_publish: flag(&q, "can_publish", true),
        can_subscribe: flag(&q, "can_subscribe", true),
        can_publish_data: flag(&q, "can_publish_data", true),
        hidden: flag(&q, "hidden", false),
        room_admin: flag(&q, "room_admin", false),
    };
    match control
        .update_permission(&room, &identity, permission)
        .await
    {
        Ok(()) => "ok".into_response(),
        Err(e) => error_response(e),
    }
}

async fn dev_remove(State(control): State<SfuControl>, Query(q): Q) -> Response {
    let (room, identity) = room_identity(&q);
    match control
        .remove_participant(&room, &identity, "PARTICIPANT_REMOVED")
        .await
    {
        Ok(()) => "ok".into_response(),
        Err(e) => error_response(e),
    }
}

async fn dev_mute(State(control): State<SfuControl>, Query(q): Q) -> Response {
    let (room, identity) = room_identity(&q);
    let track = q.get("track_sid").cloned().unwrap_or_default();
    match control
        .mute_published_track(&room, &identity, &track, flag(&q, "muted", true))
        .await
    {
        Ok(info) => Json(serde_json::json!({"sid": info.sid, "muted": info.muted})).into_response(),
        Err(e) => error_response(e),
    }
}

async fn dev_send_data(
    State(control): State<SfuControl>,
    Query(q): Q,
    body: axum::body::Bytes,
) -> Response {
    let room = q.get("room").cloned().unwrap_or_default();
    let destinations = q
        .get("to")
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    match control
        .send_data(
            &room,
            body.to_vec(),
            DataKind::Reliable,
            destinations,
            q.get("topic").cloned(),
        )
        .await
    {
        Ok(()) => "ok".into_response(),
        Err(e) => error_response(e),
    }
}

async fn dev_participants(State(control): State<SfuControl>, Query(q): Q) -> Response {
    let room = q.get("room").cloned().unwrap_or_default();
    match control.list_participants(&room).await {
        Ok(list) => Json(
            list.iter()
                .map(|p| {
                    serde_json::json!({
                        "sid": p.sid, "identity": p.identity, "state": p.state,
                        "tracks": p.tracks.iter().map(|t| serde_json::json!({"sid": t.sid, "type": t.r#type, "muted": t.muted})).collect::<Vec<_>>(),
                        "can_publish": p.permission.as_ref().map(|x| x.can_publish),
                    })
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error_response(e),
    }
}

async fn dev_rooms(State(control): State<SfuControl>) -> Response {
    match control.list_rooms().await {
        Ok(rooms) => Json(
            rooms
                .iter()
                .map(|r| serde_json::json!({"name": r.name, "sid": r.sid, "participants": r.num_participants}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => error_response(e),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,str0m=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let http: SocketAddr = arg(&args, "--http")
        .unwrap_or_else(|| "127.0.0.1:7880".into())
        .parse()?;
    let udp_port: u16 = arg(&args, "--udp-port")
        .unwrap_or_else(|| "7882".into())
        .parse()?;
    let tcp_port: u16 = arg(&args, "--tcp-port")
        .unwrap_or_else(|| "7881".into())
        .parse()?;
    let key = arg(&args, "--key")
        .or_else(|| std::env::var("LIVEKIT_API_KEY").ok())
        .unwrap_or_else(|| "devkey".into());
    let secret = arg(&args, "--secret")
        .or_else(|| std::env::var("LIVEKIT_API_SECRET").ok())
        .unwrap_or_else(|| "devsecret-devsecret-devsecret-devsecret".into());

    let admission = Arc::new(TokenAdmission {
        verifier: TokenVerifier::with_api_key(&key, &secret),
    });
    let config = SfuConfig {
        udp_bind: SocketAddr::from(([0, 0, 0, 0], udp_port)),
        tcp_bind: Some(SocketAddr::from(([0, 0, 0, 0], tcp_port))),
        turn: turn_from_env()?,
        ..SfuConfig::default()
    };
    let sfu = Sfu::start(config, admission).await?;
    let dev = Router::new()
        .route("/dev/permission", post(dev_permission))
        .route("/dev/remove", post(dev_remove))
        .route("/dev/mute", post(dev_mute))
        .route("/dev/send_data", post(dev_send_data))
        .route("/dev/participants", get(dev_participants))
        .route("/dev/rooms", get(dev_rooms))
        .with_state(sfu.control());
    let app = sfu.router().merge(dev);
    let listener = tokio::net::TcpListener::bind(http).await?;
    let udp: Vec<String> = sfu
        .local_udp_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    let tcp: Vec<String> = sfu
        .local_tcp_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    println!(
        "SFU_DEV_READY http={} udp={} tcp={}",
        listener.local_addr()?,
        udp.join(","),
        tcp.join(",")
    );
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    sfu.shutdown().await;
    Ok(())
}
