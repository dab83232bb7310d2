//! The transport-neutral part of a live event stream (`GET /v1/meetings/{meeting_id}/events`
//! over SSE or a WebSocket, `routes/stream.rs`): subscribe to the hub, then read the store (a
//! snapshot, or a replay of the log after `after`), then take the live queue skipping every
//! sequence number already sent; filter by the caller's standing, folded with the core's rule
//! ([`convene_core::standing`]) and settled with the hub; take in what the hub wrote into the
//! connection itself.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use convene_core::Standing;
use convene_core::event::{Event, ViewerClass};
use convene_core::ids::{Identity, InstanceId, MeetingId};
use convene_core::participant::{Participant, ParticipantState};
use convene_core::service::MAX_PAGE;
use serde_json::json;

use crate::error::ApiResult;
use crate::realtime::direct::Conn;
use crate::realtime::hub::{CloseReason, Settle, Step, Subscription};
use crate::realtime::render::Published;
use crate::state::AppState;
use crate::wire::{MeetingPublicView, ParticipantView};

/// Who is opening a stream, checked before any upgrade.
pub struct Opening {
    pub(crate) meeting: MeetingId,
    pub(crate) identity: Option<Identity>,
    pub(crate) run: Option<InstanceId>,
    pub(crate) epoch: u32,
    pub(crate) standing: Standing,
    /// When the token the stream was opened with expires (participants' tokens): the stream
    /// ends then, checked at each keep-alive.
    pub(crate) expires_at: Option<convene_core::Timestamp>,
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
    pub fn seq(&self) -> u64 {
        match self {
            Self::Event(p) | Self::Own { of: p, .. } => p.event.seq,
            Self::Snapshot { seq, .. } => *seq,
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            Self::Event(p) => &p.kind,
            Self::Own { of, .. } => of.own_kind(),
            Self::Snapshot { .. } => "snapshot",
        }
    }

    pub fn json(&self) -> &Utf8Bytes {
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
    /// Why the stream must end (see [`Feed::closing`]); a transport may end it too.
    pub(crate) closing: Option<CloseReason>,
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
        sub.known(at);
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
