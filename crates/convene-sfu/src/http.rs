//! HTTP front end: `/rtc` (token check and the identity's connect budget, then WebSocket
//! upgrade), `/rtc/validate`, and the `/rtc/v1` 404s that make clients fall back to the
//! two-peer-connection protocol. Each WebSocket runs in its own task, which spends the
//! connection's request budget on every frame before anything reaches the engine task.
//!
//! Liveness: clients ping in the signalling protocol, and the engine drops one silent for its
//! `ping_timeout`; every write to the client is bounded by [`WRITE_TIMEOUT`], so a client that
//! neither pings nor reads is disconnected too, even when the engine's last words cannot reach it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{
    CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code,
};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures::{Sink, SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Bucket, Budgets, Rate};
use crate::driver::{OUTBOX_QUEUE, SfuControl, WsOut};
use crate::signal::{self, JoinParams};
use crate::{Admission, Admitted, MAX_SIGNAL_MESSAGE_BYTES, Refusal};

/// Undecodable frames tolerated from one client before it is disconnected.
const MAX_GARBAGE_FRAMES: u32 = 64;

/// How long one write to a client may wait: a client that takes none of it
/// (it does not read) is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closing connection's writer (and, over budget, its reader) may take.
const CLOSING_TIME: Duration = Duration::from_secs(2);

/// Frames read (and dropped) after an over-budget goodbye while waiting for the client's close.
const MAX_FRAMES_AFTER_GOODBYE: u32 = 64;

/// The close reason of a connection that spent its request budget.
pub const SIGNAL_BUDGET_CLOSE_REASON: &str = "signalling request budget exceeded";

/// Connects by identity and room: `(room, identity)`.
pub(crate) type JoinBudgets = Arc<Mutex<Budgets<(String, String)>>>;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub admission: Arc<dyn Admission>,
    pub control: SfuControl,
    pub joins: JoinBudgets,
    /// Each connection's budget of signalling requests.
    pub signal_rate: Rate,
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
    // The scheme in any case (RFC 7235), as convene's own surfaces read it
    // (`convene_api::auth::bearer`; this crate stands alone and does not depend on them).
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
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
    state
        .admission
        .admit(&token)
        .await
        .map_err(|refusal| with_cors(refused(refusal)))
}

/// A join the admission refused: its kind's status and its message.
fn refused(refusal: Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut response = (status, refusal.message().to_owned()).into_response();
    if refusal == Refusal::Unavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(1));
    }
    response
}

/// A connect refused for the identity's budget: 429 with `Retry-After` (whole seconds, rounded
/// up) and a message saying when to come back; `/rtc/validate` gives clients the same answer.
fn too_many_joins(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many connections for this identity in this room; try again in {seconds} s"),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    with_cors(response)
}

fn join_key(admitted: &Admitted) -> (String, String) {
    (admitted.room.clone(), admitted.identity.clone())
}

async fn validate(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let admitted = match authorize(&state, &query, &headers).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    // Said, not spent: clients ask here why `/rtc` refused them.
    let budget = state
        .joins
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .check(&join_key(&admitted), Instant::now());
    match budget {
        Ok(()) => with_cors((StatusCode::OK, "success").into_response()),
        Err(wait) => too_many_joins(wait),
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
    let budget = state
        .joins
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(join_key(&admitted), Instant::now());
    if let Err(wait) = budget {
        tracing::info!(
            room = admitted.room,
            identity = admitted.identity,
            "signalling connect refused: the identity's connect budget is spent"
        );
        return too_many_joins(wait);
    }
    let params = JoinParams::from_query(&query);
    let rate = state.signal_rate;
    upgrade
        .max_message_size(MAX_SIGNAL_MESSAGE_BYTES)
        .max_frame_size(MAX_SIGNAL_MESSAGE_BYTES)
        .on_upgrade(move |socket| session(socket, state.control, admitted, params, rate))
}

/// Writes what the engine sends this connection until it closes the connection or drops its
/// outbox; gives up at once on a client that takes none of a write for `write_timeout`
/// ([`WRITE_TIMEOUT`]). When `spent` fires (the request budget is spent), whatever is queued is
/// skipped and the client gets a goodbye: a `LeaveRequest` and a close frame with the reason.
async fn write_out<S>(
    mut sink: S,
    mut outgoing: mpsc::Receiver<WsOut>,
    mut spent: oneshot::Receiver<()>,
    write_timeout: Duration,
) where
    S: Sink<WsMessage> + Unpin,
{
    loop {
        let (message, last) = tokio::select! {
            biased;
            spent = &mut spent => {
                if spent.is_ok() {
                    let leave = signal::leave(
                        proto::DisconnectReason::UnknownReason,
                        proto::leave_request::Action::Disconnect,
                    );
                    let close = CloseFrame {
                        code: close_code::POLICY,
                        reason: SIGNAL_BUDGET_CLOSE_REASON.into(),
                    };
                    let _ = tokio::time::timeout(write_timeout, async {
                        sink.send(WsMessage::Binary(leave.encode_to_vec().into())).await?;
                        sink.send(WsMessage::Close(Some(close))).await
                    })
                    .await;
                }
                break;
            }
            out = outgoing.recv() => match out {
                Some(WsOut::Frame(bytes)) => (WsMessage::Binary(bytes.into()), false),
                Some(WsOut::Close) => (WsMessage::Close(None), true),
                None => break,
            },
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

async fn session(
    socket: WebSocket,
    control: SfuControl,
    admitted: Admitted,
    params: JoinParams,
    rate: Rate,
) {
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
    let identity = admitted.identity.clone();
    let (outbox, outgoing) = mpsc::channel::<WsOut>(OUTBOX_QUEUE);
    let Ok(session) = control.join(admitted, params, outbox).await else {
        return;
    };
    let conn = session.conn;
    // Over budget, the writer skips whatever is queued and says goodbye at once.
    let (over_budget, spent) = oneshot::channel::<()>();
    let mut writer = tokio::spawn(write_out(sink, outgoing, spent, WRITE_TIMEOUT));
    let mut garbage = 0u32;
    let mut writer_done = false;
    let mut spent_budget = false;
    // Every frame the client sends (pings and undecodable ones too) spends from this bucket
    // before it is decoded; spent, the connection is closed.
    let mut budget = Bucket::full(Instant::now());
    let mut requests = 0u64;
    let mut least_left = rate.burst;
    loop {
        tokio::select! {
            _ = &mut writer => {
                writer_done = true;
                break;
            }
            frame = stream.next() => {
                let message = match frame {
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(message)) => message,
                };
                let now = Instant::now();
                if budget.take(rate, now).is_err() {
                    tracing::info!(
                        ?conn,
                        identity,
                        requests,
                        "signalling request budget spent; closing the connection"
                    );
                    let _ = over_budget.send(());
                    spent_budget = true;
                    break;
                }
                requests += 1;
                least_left = least_left.min(budget.available(rate, now));
                let WsMessage::Binary(bytes) = message else {
                    continue; // text, ping, pong
                };
                match proto::SignalRequest::decode(bytes.as_ref()) {
                    Ok(request) => {
                        if session.signal(request).await.is_err() {
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
    tracing::debug!(
        ?conn,
        identity,
        requests,
        most_of_burst_used = rate.burst - least_left,
        "signalling connection ended"
    );
    session.close().await;
    if spent_budget {
        // The goodbye is on its way. A socket dropped with unread input is reset, and a reset
        // loses the goodbye if the client has not read it yet: so what the client still sends
        // is read and dropped until it closes too, but only a few frames of it; then nothing
        // more is read (the client's sends stall) until the closing time is up.
        let _ = tokio::time::timeout(CLOSING_TIME, async {
            let mut dropped = 0;
            while let Some(Ok(frame)) = stream.next().await {
                if matches!(frame, WsMessage::Close(_)) {
                    return;
                }
                dropped += 1;
                if dropped >= MAX_FRAMES_AFTER_GOODBYE {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
    }
    // The writer ends when the engine drops this connection's outbox.
    if !writer_done {
        let _ = tokio::time::timeout(CLOSING_TIME, writer).await;
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    #[tokio::test]
    async fn each_kind_of_refusal_is_answered_with_its_status_and_message() {
        for (refusal, status) in [
            (
                Refusal::Unauthenticated("bad token".into()),
                StatusCode::UNAUTHORIZED,
            ),
            (Refusal::Forbidden("banned".into()), StatusCode::FORBIDDEN),
            (Refusal::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        ] {
            let message = refusal.message().to_owned();
            let unavailable = refusal == Refusal::Unavailable;
            let response = refused(refusal);
            assert_eq!(response.status(), status, "{message}");
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).is_some(),
                unavailable,
                "{message}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(body, message.as_bytes());
        }
    }

    #[test]
    fn the_token_is_read_from_a_bearer_scheme_in_any_case_or_the_query() {
        let none = HashMap::new();
        for value in ["Bearer tok", "bearer tok", "BEARER tok", "Bearer  tok "] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(token(&none, &headers).as_deref(), Some("tok"), "{value}");
        }
        for value in ["Basic dG9r", "Bearer ", "tok"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(token(&none, &headers), None, "{value}");
        }
        let query = HashMap::from([("access_token".to_owned(), "q".to_owned())]);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok"),
        );
        assert_eq!(token(&query, &headers).as_deref(), Some("q"));
    }

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
        let (_budget_left, spent) = oneshot::channel();
        tokio::time::timeout(HANGS, write_out(Unread, outgoing, spent, SHORT))
            .await
            .expect("the writer gives up on a client that does not read");
        drop(outbox);
    }

    #[tokio::test]
    async fn the_engines_close_is_not_waited_on_forever() {
        let (outbox, outgoing) = mpsc::channel(OUTBOX_QUEUE);
        outbox.try_send(WsOut::Close).unwrap();
        let (_budget_left, spent) = oneshot::channel();
        tokio::time::timeout(HANGS, write_out(Unread, outgoing, spent, SHORT))
            .await
            .expect("the close frame's write is bounded");
        drop(outbox);
    }
}
