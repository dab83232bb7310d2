//! The live form of `GET /v1/meetings/{meeting_id}/events`: Server-Sent Events or a WebSocket of
//! JSON text frames. Each starts with a snapshot of what the caller may see (or, given `after=N` /
//! `Last-Event-ID`, a replay of the stored log after N), then continues live from the hub with no
//! gap and no duplicate at the seam: subscribe first, then read the store, then take the live
//! queue skipping every sequence number already sent.
//!
//! Frames: each event is its `EventView` JSON (`{"seq", "at", "instance_id", "type", "data"}`);
//! the snapshot is `{"type": "snapshot", "seq", "data": {"meeting", "you", "participants"}}`.
//! Over SSE, `id:` is the sequence number and `event:` the type.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use convene_core::Standing;
use convene_core::event::{Event, ViewerClass};
use convene_core::ids::{Identity, InstanceId, MeetingId};
use convene_core::participant::{Participant, ParticipantState};
use convene_core::service::{Caller, MAX_PAGE};
use serde_json::json;
use tokio::time::Instant;

use crate::auth::Principal;
use crate::error::ApiResult;
use crate::realtime::direct::Conn;
use crate::realtime::hub::{CloseReason, Settle, Step, Subscription};
use crate::realtime::render::Published;
use crate::state::AppState;
use crate::wire::{MeetingPublicView, ParticipantView};

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

/// Who is opening a stream, checked before any upgrade.
pub struct Opening {
    meeting: MeetingId,
    identity: Option<Identity>,
    run: Option<InstanceId>,
    epoch: u32,
    standing: Standing,
    /// When the token the stream was opened with expires (participants' tokens): the stream
    /// ends then, checked at each keep-alive.
    expires_at: Option<convene_core::Timestamp>,
}

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

/// One frame to send.
pub enum Frame {
    Event(Arc<Published>),
    /// An event in this viewer's own form ([`Published::own_view`]).
    Own {
        of: Arc<Published>,
        json: Utf8Bytes,
    },
    Snapshot {
        seq: u64,
        json: Utf8Bytes,
    },
}

impl Frame {
    fn seq(&self) -> u64 {
        match self {
            Self::Event(p) | Self::Own { of: p, .. } => p.event.seq,
            Self::Snapshot { seq, .. } => *seq,
        }
    }

    fn kind(&self) -> &str {
        match self {
            Self::Event(p) => &p.kind,
            Self::Own { of, .. } => of.own_kind(),
            Self::Snapshot { .. } => "snapshot",
        }
    }

    fn json(&self) -> &Utf8Bytes {
        match self {
            Self::Event(p) => &p.json,
            Self::Own { json, .. } | Self::Snapshot { json, .. } => json,
        }
    }
}

/// Reading the stored log page by page: events after `cursor`; those after `emit_after` are
/// sent, those after `fold_after` also move the caller's own standing.
struct Replay {
    cursor: u64,
    emit_after: u64,
    fold_after: u64,
}

/// The transport-neutral part of a stream: the seam, filtering, the caller's standing.
pub struct Feed {
    state: AppState,
    meeting: MeetingId,
    identity: Option<Identity>,
    run: Option<InstanceId>,
    standing: Standing,
    sub: Subscription,
    /// Highest sequence number handled (sent or filtered out).
    last_seq: u64,
    backlog: VecDeque<Frame>,
    replay: Option<Replay>,
    closing: Option<CloseReason>,
    /// The hub routes by the same standing as here; from then on both apply the same events in
    /// the same order, so they stay in agreement without asking again.
    settled: bool,
}

impl Feed {
    /// Subscribes, then reads the store: a snapshot (`after` = None) or a replay after `after`.
    /// Given a WebSocket's connection, the hub writes into it while the stream is idle.
    pub async fn open(
        state: AppState,
        opening: Opening,
        after: Option<u64>,
        conn: Option<Arc<Conn>>,
    ) -> ApiResult<Self> {
        let Opening {
            meeting,
            identity,
            run,
            epoch,
            standing,
            expires_at: _,
        } = opening;
        let sub = state
            .hub
            .subscribe(&meeting, identity.clone(), run.clone(), standing, conn);
        let current = state.meetings.meeting(&meeting).await?;
        let at = current.last_seq;
        // Read after subscribing: every own event after `at` is then in the store or the queue.
        let me = match (&identity, &run) {
            (Some(identity), Some(run)) => Some(
                state
                    .meetings
                    .check_participant_token(&meeting, identity, run, epoch)
                    .await?
                    .1,
            ),
            _ => None,
        };
        let standing = me.as_ref().map(Standing::of).unwrap_or(Standing::Admin);
        let mut feed = Self {
            state,
            meeting,
            identity,
            run,
            standing,
            sub,
            last_seq: at,
            backlog: VecDeque::new(),
            replay: None,
            closing: None,
            settled: false,
        };
        match after {
            None => {
                let snapshot = feed.snapshot(&current, me.as_ref()).await?;
                feed.backlog.push_back(snapshot);
                feed.replay = Some(Replay {
                    cursor: at,
                    emit_after: at,
                    fold_after: at,
                });
            }
            Some(after) => {
                feed.last_seq = after.max(at);
                feed.replay = Some(Replay {
                    cursor: after.min(at),
                    emit_after: after,
                    fold_after: at,
                });
            }
        }
        Ok(feed)
    }

    async fn snapshot(
        &self,
        meeting: &convene_core::meeting::Meeting,
        me: Option<&Participant>,
    ) -> ApiResult<Frame> {
        let participants = match self.standing.class() {
            ViewerClass::Waiting => None,
            ViewerClass::Member => {
                let present = [ParticipantState::Admitted, ParticipantState::Joined];
                Some(
                    self.state
                        .meetings
                        .participants(&self.meeting, Some(&present))
                        .await?,
                )
            }
            ViewerClass::Host => Some(
                self.state
                    .meetings
                    .participants(&self.meeting, None)
                    .await?,
            ),
        };
        let body = json!({
            "type": "snapshot",
            "seq": meeting.last_seq,
            "data": {
                "meeting": MeetingPublicView::from(meeting),
                "you": me.map(ParticipantView::from),
                "participants": participants.map(|ps| ps.iter().map(ParticipantView::from).collect::<Vec<_>>()),
            }
        });
        Ok(Frame::Snapshot {
            seq: meeting.last_seq,
            json: body.to_string().into(),
        })
    }

    fn visible(&self, event: &Event) -> bool {
        event.visible_to(self.standing.class(), self.identity.as_ref())
    }

    /// The frame of an event this viewer sees in its own form ([`Event::view_for`]): a guest let
    /// in with many others gets its own `participant.admitted`, rendered here rather than by the
    /// hub, so the publisher does not render one per guest.
    fn own_view(&self, event: &Event) -> Option<Frame> {
        let own = event.seen_by(self.standing.class(), self.identity.as_ref())?;
        Some(Frame::Event(Arc::new(Published::new(&own))))
    }

    /// [`Feed::own_view`] from the form the hub rendered once for every receiver.
    fn rendered_own_view(&self, published: &Arc<Published>) -> Option<Frame> {
        let identity = self.identity.as_ref()?;
        if !published
            .event
            .has_own_view(self.standing.class(), Some(identity))
        {
            return None;
        }
        let json = published.own_view(identity)?;
        Some(Frame::Own {
            of: published.clone(),
            json,
        })
    }

    /// Moves the caller's standing with an event; `true` when it changed.
    fn fold(&mut self, event: &Event) -> bool {
        match Step::apply(
            &mut self.standing,
            self.identity.as_ref(),
            self.run.as_ref(),
            &event.kind,
        ) {
            Step::Unchanged => false,
            Step::Changed => true,
            Step::Close(reason) => {
                self.closing.get_or_insert(reason);
                false
            }
        }
    }

    /// Tells the hub the exact standing; re-reads the store when the hub had routed by another.
    fn settle(&mut self) {
        if self.identity.is_none() || self.closing.is_some() || self.settled {
            return;
        }
        match self.sub.settle(self.standing, self.last_seq) {
            Settle::Settled => self.settled = true,
            Settle::Later => {}
            Settle::Corrected => {
                if self.replay.is_none() {
                    let at = self.last_seq;
                    self.replay = Some(Replay {
                        cursor: at,
                        emit_after: at,
                        fold_after: at,
                    });
                }
            }
        }
    }

    /// Takes in the events the hub wrote into the connection itself (already sent): they move
    /// the standing and the sequence number as if this feed had sent them.
    pub fn take_written(&mut self) {
        for published in self.sub.take_written() {
            self.take_in(&published, true);
        }
    }

    /// Moves the sequence number and the standing past one live event, queueing its frame unless
    /// it was `sent` already (by the hub) or this stream does not show it.
    fn take_in(&mut self, published: &Arc<Published>, sent: bool) {
        let seq = published.event.seq;
        if seq <= self.last_seq {
            return;
        }
        self.last_seq = seq;
        if !sent && self.visible(&published.event) {
            let frame = self
                .rendered_own_view(published)
                .or_else(|| self.own_view(&published.event))
                .unwrap_or_else(|| Frame::Event(published.clone()));
            self.backlog.push_back(frame);
        }
        if self.fold(&published.event) || !self.settled {
            self.settle();
        }
    }

    /// Lets the hub write the next events into the connection itself when nothing is left to
    /// send here (everything sent is flushed by then) and the hub routes by this standing.
    pub fn idle(&self) {
        if self.backlog.is_empty()
            && self.replay.is_none()
            && self.closing.is_none()
            && self.settled
        {
            self.sub.idle(self.last_seq);
        }
    }

    /// The next frame ready to send, without waiting.
    pub fn pop(&mut self) -> Option<Frame> {
        self.backlog.pop_front()
    }

    pub fn has_frames(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Takes, without waiting, what is already in the live queue (at most a burst's worth).
    pub fn accept_ready(&mut self) {
        for _ in 0..64 {
            if self.closing.is_some() {
                return;
            }
            match self.sub.rx.try_recv() {
                Ok(item) => self.accept(Some(item)),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    return self.accept(None);
                }
            }
        }
    }

    /// Why the stream must end, once the backlog is sent.
    pub fn closing(&self) -> Option<CloseReason> {
        if self.backlog.is_empty() {
            self.closing
        } else {
            None
        }
    }

    /// Whether [`Feed::fill`] has stored events to read.
    pub fn replaying(&self) -> bool {
        self.replay.is_some() && self.closing.is_none()
    }

    /// Reads one page of the stored log into the backlog.
    pub async fn fill(&mut self) {
        let Some(replay) = self.replay.take() else {
            return;
        };
        let page = match self
            .state
            .meetings
            .events_after(&self.meeting, replay.cursor, MAX_PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(meeting = %self.meeting, error = %e, "event replay failed");
                self.closing.get_or_insert(CloseReason::Unavailable);
                return;
            }
        };
        let mut cursor = replay.cursor;
        for event in &page {
            cursor = event.seq;
            if event.seq > replay.emit_after && self.visible(event) {
                let frame = self
                    .own_view(event)
                    .unwrap_or_else(|| Frame::Event(Arc::new(Published::new(event))));
                self.backlog.push_back(frame);
            }
            if event.seq > replay.fold_after {
                self.fold(event);
            }
            if self.closing.is_some() {
                return;
            }
        }
        self.last_seq = self.last_seq.max(cursor);
        if page.len() as u32 >= MAX_PAGE {
            self.replay = Some(Replay { cursor, ..replay });
        } else {
            self.settle();
        }
    }

    /// Waits for the next live event (cancel-safe).
    pub async fn recv(&mut self) -> Option<Arc<Published>> {
        self.sub.rx.recv().await
    }

    /// Takes one item from the live queue (`None`: the hub dropped this subscriber), after
    /// whatever the hub wrote itself before it.
    pub fn accept(&mut self, item: Option<Arc<Published>>) {
        self.take_written();
        let Some(published) = item else {
            let reason = if self.state.hub.is_closed() {
                CloseReason::Shutdown
            } else {
                CloseReason::Overflow
            };
            self.closing.get_or_insert(reason);
            return;
        };
        self.take_in(&published, false);
    }

    /// The next frame, waiting as needed; `None` when the stream ends (see [`Feed::closing`]).
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.pop() {
                return Some(frame);
            }
            if self.closing.is_some() {
                return None;
            }
            if self.replaying() {
                Box::pin(self.fill()).await;
                continue;
            }
            let item = self.recv().await;
            self.accept(item);
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
