//! HTTP front end: `/rtc` (token check, then WebSocket upgrade),
//! `/rtc/validate`, and the `/rtc/v1` 404s that make clients fall back to
//! the two-peer-connection protocol. Each WebSocket runs in its own task.
//!
//! Liveness: clients ping in the signalling protocol, and the engine drops one
//! silent for its `ping_timeout`; every write to the client is bounded by
//! [`WRITE_TIMEOUT`], so a client that neither pings nor reads is
//! disconnected too, even when the engine's last words cannot reach it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{Sink, SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message;
use tokio::sync::mpsc;

use crate::driver::{Command, OUTBOX_QUEUE, SfuControl, WsOut};
use crate::signal::{self, JoinParams};
use crate::{Admission, Admitted, MAX_SIGNAL_MESSAGE_BYTES};

/// Undecodable frames tolerated from one client before it is disconnected.
const MAX_GARBAGE_FRAMES: u32 = 64;

/// How long one write to a client may wait: a client that takes none of it
/// (it does not read) is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Writes what the engine sends this connection until it closes the connection
/// or drops its outbox; gives up at once on a client that takes none of a
/// write for `write_timeout` ([`WRITE_TIMEOUT`]).
async fn write_out<S>(mut sink: S, mut outgoing: mpsc::Receiver<WsOut>, write_timeout: Duration)
where
    S: Sink<WsMessage> + Unpin,
{
    while let Some(out) = outgoing.recv().await {
        let (message, last) = match out {
            WsOut::Frame(bytes) => (WsMessage::Binary(bytes.into()), false),
            WsOut::Close => (WsMessage::Close(None), true),
        };
        match tokio::time::timeout(write_timeout, sink.send(message)).await {
            Ok(Ok(())) if !last => {}
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("signalling client does not read; disconnected");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}

async fn session(socket: WebSocket, control: SfuControl, admitted: Admitted, params: JoinParams) {
    let (mut sink, mut stream) = socket.split();
    if params.reconnect {
        // No session resumption: tell the client to rejoin from scratch.
        let leave = signal::leave(
            proto::DisconnectReason::StateMismatch,
            proto::leave_request::Action::Reconnect,
        );
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            sink.send(WsMessage::Binary(leave.encode_to_vec().into()))
                .await?;
            sink.send(WsMessage::Close(None)).await
        })
        .await;
        return;
    }
    let conn = control.next_conn_id();
    let (outbox, outgoing) = mpsc::channel::<WsOut>(OUTBOX_QUEUE);
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
    let mut writer = tokio::spawn(write_out(sink, outgoing, WRITE_TIMEOUT));
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// A client that reads nothing: no write ever completes.
    struct Unread;

    impl Sink<WsMessage> for Unread {
        type Error = axum::Error;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }

        fn start_send(self: Pin<&mut Self>, _: WsMessage) -> Result<(), Self::Error> {
            Ok(())
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Pending
        }
    }

    /// A short write timeout for the tests; the bound below only catches a writer that never
    /// gives up (or gives up once per queued frame: 512 of them), it times nothing.
    const SHORT: Duration = Duration::from_millis(20);
    const HANGS: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_client_that_does_not_read_is_given_up_at_the_first_stalled_write() {
        let (outbox, outgoing) = mpsc::channel(OUTBOX_QUEUE);
        while outbox.try_send(WsOut::Frame(vec![0; 16])).is_ok() {}
        // The engine still holds the outbox: only the write timeout can end the writer.
        tokio::time::timeout(HANGS, write_out(Unread, outgoing, SHORT))
            .await
            .expect("the writer gives up on a client that does not read");
        drop(outbox);
    }

    #[tokio::test]
    async fn the_engines_close_is_not_waited_on_forever() {
        let (outbox, outgoing) = mpsc::channel(OUTBOX_QUEUE);
        outbox.try_send(WsOut::Close).unwrap();
        tokio::time::timeout(HANGS, write_out(Unread, outgoing, SHORT))
            .await
            .expect("the close frame's write is bounded");
        drop(outbox);
    }
}
