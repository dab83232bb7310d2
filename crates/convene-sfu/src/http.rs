//! HTTP front end: `/rtc` (token check, then WebSocket upgrade),
//! `/rtc/validate`, and the `/rtc/v1` 404s that make clients fall back to
//! the two-peer-connection protocol. Each WebSocket runs in its own task.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message;
use tokio::sync::mpsc;

use crate::driver::{Command, OUTBOX_QUEUE, SfuControl, WsOut};
use crate::signal::{self, JoinParams};
use crate::{Admission, Admitted, MAX_SIGNAL_MESSAGE_BYTES};

/// Undecodable frames tolerated from one client before it is disconnected.
const MAX_GARBAGE_FRAMES: u32 = 64;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub admission: Arc<dyn Admission>,
    pub control: SfuControl,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/rtc", any(rtc))
        .route("/rtc/validate", any(validate))
        .route("/rtc/v1", any(not_found_with_cors))
        .route("/rtc/v1/validate", any(not_found_with_cors))
        .with_state(state)
}

fn with_cors(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn not_found_with_cors() -> Response {
    with_cors((StatusCode::NOT_FOUND, "not found").into_response())
}

/// The token from `?access_token=` or `Authorization: Bearer`.
fn token(query: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    if let Some(token) = query.get("access_token").filter(|t| !t.is_empty()) {
        return Some(token.clone());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty()).then(|| token.to_owned())
}

async fn authorize(
    state: &HttpState,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Admitted, Response> {
    let Some(token) = token(query, headers) else {
        return Err(with_cors(
            (StatusCode::UNAUTHORIZED, "missing access token").into_response(),
        ));
    };
    state.admission.admit(&token).await.map_err(|refusal| {
        let status = StatusCode::from_u16(refusal.status)
            .ok()
            .filter(|s| s.is_client_error())
            .unwrap_or(StatusCode::UNAUTHORIZED);
        with_cors((status, refusal.message).into_response())
    })
}

async fn validate(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match authorize(&state, &query, &headers).await {
        Ok(_) => with_cors((StatusCode::OK, "success").into_response()),
        Err(response) => response,
    }
}

async fn rtc(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let admitted = match authorize(&state, &query, &headers).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let params = JoinParams::from_query(&query);
    upgrade
        .max_message_size(MAX_SIGNAL_MESSAGE_BYTES)
        .max_frame_size(MAX_SIGNAL_MESSAGE_BYTES)
        .on_upgrade(move |socket| session(socket, state.control, admitted, params))
}

async fn session(socket: WebSocket, control: SfuControl, admitted: Admitted, params: JoinParams) {
    let (mut sink, mut stream) = socket.split();
    if params.reconnect {
        // No session resumption: tell the client to rejoin from scratch.
        let leave = signal::leave(
            proto::DisconnectReason::StateMismatch,
            proto::leave_request::Action::Reconnect,
        );
        let _ = sink
            .send(WsMessage::Binary(leave.encode_to_vec().into()))
            .await;
        let _ = sink.send(WsMessage::Close(None)).await;
        return;
    }
    let conn = control.next_conn_id();
    let (outbox, mut outgoing) = mpsc::channel::<WsOut>(OUTBOX_QUEUE);
    if control
        .command(Command::Join {
            conn,
            admitted,
            params,
            outbox,
        })
        .await
        .is_err()
    {
        return;
    }
    let mut writer = tokio::spawn(async move {
        while let Some(out) = outgoing.recv().await {
            match out {
                WsOut::Frame(bytes) => {
                    if sink.send(WsMessage::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                WsOut::Close => {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    break;
                }
            }
        }
        let _ = sink.close().await;
    });
    let mut garbage = 0u32;
    let mut writer_done = false;
    loop {
        tokio::select! {
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            frame = stream.next() => {
                let bytes = match frame {
                    Some(Ok(WsMessage::Binary(bytes))) => bytes,
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue, // text, ping, pong
                };
                match proto::SignalRequest::decode(bytes.as_ref()) {
                    Ok(request) => {
                        if control.command(Command::Signal { conn, request }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        garbage += 1;
                        tracing::debug!(?conn, "undecodable signal frame: {e}");
                        if garbage > MAX_GARBAGE_FRAMES {
                            break;
                        }
                    }
                }
            }
        }
    }
    let _ = control.command(Command::Closed { conn }).await;
    // The writer ends when the engine drops this connection's outbox.
    if !writer_done {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    }
}
