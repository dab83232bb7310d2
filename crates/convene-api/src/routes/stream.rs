//! The live form of `GET /v1/meetings/{meeting_id}/events`: Server-Sent Events or a WebSocket of
//! JSON text frames. Each starts with a snapshot of what the caller may see (or, given `after=N` /
//! `Last-Event-ID`, a replay of the stored log after N), then continues live from the hub with no
//! gap and no duplicate at the seam: subscribe first, then read the store, then take the live
//! queue skipping every sequence number already sent.
//!
//! Frames: each event is its `EventView` JSON (`{"seq", "at", "instance_id", "type", "data"}`);
//! the snapshot is `{"type": "snapshot", "seq", "data": {"meeting", "you", "participants"}}`.
//! Over SSE, `id:` is the sequence number and `event:` the type.
//!
//! Here are the transports: authorization before any upgrade, the SSE body, the WebSocket session
//! (keep-alive, close codes, bounded writes). What a stream sends, and when, is its [`Feed`]
//! (`crate::realtime::feed`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use convene_core::Standing;
use convene_core::ids::MeetingId;
use convene_core::service::Caller;
use serde_json::json;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::realtime::direct::Conn;
use crate::realtime::feed::{Feed, Opening};
use crate::realtime::hub::CloseReason;
use crate::state::AppState;

/// How often an idle WebSocket is pinged (SSE: a comment is sent).
pub const KEEPALIVE: Duration = Duration::from_secs(20);
/// A WebSocket from which nothing (not even a pong) arrives for this long is closed.
pub const DEAD_AFTER: Duration = Duration::from_secs(60);
/// A WebSocket write that cannot complete in this long (the client does not read) closes it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame a client may send (only control frames are expected; a close reason is <= 123 bytes).
pub const MAX_CLIENT_FRAME: usize = 1024;
/// Per-connection read buffer: small, since clients send only control frames.
const READ_BUFFER: usize = 1024;

/// Authorizes the caller for the meeting's stream: 401/403 here, before an upgrade.
pub async fn authorize(
    state: &AppState,
    principal: &Principal,
    meeting: &MeetingId,
) -> ApiResult<Opening> {
    match principal.caller_for(meeting)? {
        Caller::Admin => {
            state.meetings.meeting(meeting).await?;
            Ok(Opening {
                meeting: meeting.clone(),
                identity: None,
                run: None,
                epoch: 0,
                standing: Standing::Admin,
                expires_at: None,
            })
        }
        Caller::Participant {
            identity,
            instance,
            epoch,
        } => {
            let (_, participant) = state
                .meetings
                .check_participant_token(meeting, &identity, &instance, epoch)
                .await?;
            let standing = Standing::of(&participant);
            Ok(Opening {
                meeting: meeting.clone(),
                identity: Some(identity),
                run: Some(instance),
                epoch,
                standing,
                expires_at: match principal {
                    crate::auth::Principal::Participant(token) => Some(token.expires_at),
                    _ => None,
                },
            })
        }
    }
}

// ----- Server-Sent Events ------------------------------------------------------------------------

/// Answers with an SSE stream.
pub async fn sse(state: AppState, opening: Opening, after: Option<u64>) -> ApiResult<Response> {
    let deadline = opening
        .expires_at
        .map(|at| tokio::time::Instant::now() + state.meetings.now().until(at));
    let feed = Feed::open(state, opening, after, None).await?;
    let stream = futures::stream::unfold(Some(feed), move |feed| async move {
        let mut feed = feed?;
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, feed.next()).await {
                Ok(next) => next,
                Err(_) => {
                    feed.closing = Some(CloseReason::Expired);
                    None
                }
            },
            None => feed.next().await,
        };
        match next {
            Some(frame) => {
                let event = SseEvent::default()
                    .id(frame.seq().to_string())
                    .event(frame.kind())
                    .data(frame.json().as_str());
                Some((Ok::<_, Infallible>(event), Some(feed)))
            }
            None => {
                let reason = feed.closing.unwrap_or(CloseReason::Shutdown);
                let event = SseEvent::default()
                    .event("close")
                    .data(json!({"reason": reason.as_str()}).to_string());
                Some((Ok(event), None))
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE))
        .into_response())
}

// ----- WebSocket ---------------------------------------------------------------------------------

/// Close codes (RFC 6455 7.4.1).
mod code {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

fn close_code(reason: CloseReason) -> u16 {
    match reason {
        CloseReason::Revoked | CloseReason::NewRun | CloseReason::Expired => code::POLICY_VIOLATION,
        CloseReason::Overflow => code::TRY_AGAIN_LATER,
        CloseReason::Shutdown => code::GOING_AWAY,
        CloseReason::Unavailable => code::INTERNAL_ERROR,
    }
}

/// Accepts the upgrade with small buffers and client frame limits.
pub fn websocket(
    upgrade: WebSocketUpgrade,
    state: AppState,
    opening: Opening,
    after: Option<u64>,
    conn: Option<Arc<Conn>>,
) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| async move {
            // The session future is boxed so an idle connection's task stays small.
            Box::pin(session(socket, state, opening, after, conn)).await;
        })
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(frame)).await;
}

/// The close code for a failed read from the client.
fn read_error_code(error: axum::Error) -> (u16, &'static str) {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error.into_inner().downcast::<WsError>().map(|e| *e) {
        Ok(WsError::Capacity(_)) => (code::MESSAGE_TOO_BIG, "frame too large"),
        Ok(WsError::Utf8(_)) => (code::INVALID_PAYLOAD, "invalid UTF-8"),
        Ok(WsError::Protocol(_)) => (code::PROTOCOL_ERROR, "malformed frame"),
        _ => (code::PROTOCOL_ERROR, "read error"),
    }
}

/// Writes every ready frame, then flushes once (one write for a burst).
async fn write_all(socket: &mut WebSocket, feed: &mut Feed) -> Result<(), axum::Error> {
    use futures::SinkExt;
    while let Some(frame) = feed.pop() {
        socket.feed(Message::Text(frame.json().clone())).await?;
    }
    socket.flush().await
}

async fn session(
    mut socket: WebSocket,
    state: AppState,
    opening: Opening,
    after: Option<u64>,
    conn: Option<Arc<Conn>>,
) {
    let expires_at = opening.expires_at;
    let clock = state.meetings.clone();
    // Opening and replay await store queries whose futures are large: boxed, so the idle
    // session's future (and so each idle connection) stays small.
    let mut feed = match Box::pin(Feed::open(state, opening, after, conn.clone())).await {
        Ok(feed) => feed,
        Err(e) => {
            let code = if e.code.http_status() < 500 {
                code::POLICY_VIOLATION
            } else {
                code::INTERNAL_ERROR
            };
            close(&mut socket, code, "cannot open the stream").await;
            return;
        }
    };
    let mut last_heard = Instant::now();
    // One timer for the connection's life, reset rather than re-created at every wake-up.
    let ping = tokio::time::sleep(KEEPALIVE);
    tokio::pin!(ping);
    loop {
        if feed.has_frames() || conn.as_ref().is_some_and(|c| c.has_pending()) {
            match tokio::time::timeout(WRITE_TIMEOUT, write_all(&mut socket, &mut feed)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    close(
                        &mut socket,
                        code::TRY_AGAIN_LATER,
                        CloseReason::Overflow.as_str(),
                    )
                    .await;
                    return;
                }
            }
        }
        if let Some(reason) = feed.closing() {
            close(&mut socket, close_code(reason), reason.as_str()).await;
            return;
        }
        if feed.replaying() {
            Box::pin(feed.fill()).await;
            continue;
        }
        feed.idle();
        tokio::select! {
            item = feed.recv() => {
                feed.accept(item);
                // Take what else is queued, to write it in one go.
                feed.accept_ready();
            }
            incoming = socket.recv() => match incoming {
                None | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_heard = Instant::now(),
                Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                    close(&mut socket, code::UNSUPPORTED_DATA, "this stream accepts no messages").await;
                    return;
                }
                Some(Err(error)) => {
                    let (code, reason) = read_error_code(error);
                    close(&mut socket, code, reason).await;
                    return;
                }
            },
            () = &mut ping => {
                feed.take_written();
                if expires_at.is_some_and(|at| clock.now() >= at) {
                    let reason = CloseReason::Expired;
                    close(&mut socket, close_code(reason), reason.as_str()).await;
                    return;
                }
                if last_heard.elapsed() >= DEAD_AFTER {
                    close(&mut socket, code::GOING_AWAY, "no answer to pings").await;
                    return;
                }
                ping.as_mut().reset(Instant::now() + KEEPALIVE);
                if tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Ping(Default::default()))).await.is_err() {
                    return;
                }
            }
        }
    }
}
