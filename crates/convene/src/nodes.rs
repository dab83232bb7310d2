//! Several nodes on one PostgreSQL database: the task that brings the other nodes' commits to
//! this node's realtime hub. The store notifies every commit (`convene_store::listen`); for a
//! meeting someone streams here, the events after the hub's position are read from the store
//! and published to the hub in order (this node's own commits, which the hub has, are skipped by
//! their sequence numbers). After each (re)connection of the listener, every watched meeting is
//! read, since notifications sent while it was away are lost. The same notices keep the service's
//! held views of meetings (`convene_core::service`'s `hot.rs`) from falling behind. Media commands
//! other nodes send to a room held here ([`crate::placement`]) are carried out on this node's
//! engine; after a reconnection, everyone connected here is checked against the store, since
//! commands sent meanwhile are lost.

use std::sync::Arc;

use convene_api::Hub;
use convene_core::ids::MeetingId;
use convene_core::ports::EventSink;
use convene_core::service::{MAX_PAGE, Meetings};
use convene_store::listen::{Listener, Notice};
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;

use crate::media::EmbeddedMedia;
use crate::placement::Forward;

/// This node's embedded engine, for the commands other nodes send to its rooms.
pub struct LocalMedia {
    /// Carries commands out here, never forwards them.
    pub engine: EmbeddedMedia,
    /// This node's signalling URL (what the commands for it are addressed to).
    pub own: String,
}

/// Follows the other nodes' commits until shutdown.
pub async fn follow(
    mut listener: Listener,
    meetings: Arc<Meetings>,
    hub: Hub,
    media: Option<LocalMedia>,
    delay: Histogram,
    shutdown: CancellationToken,
) {
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            notice = listener.next() => notice,
        };
        match notice {
            Notice::Committed {
                meeting,
                seq,
                sent_ms,
            } => {
                if let Some(sent) = sent_ms {
                    // Clocks of two machines: a negative difference is counted as none.
                    delay.observe((meetings.now().as_millis() - sent).max(0) as f64 / 1000.0);
                }
                // What this node holds of the meeting, if older, is read again when next needed.
                meetings.observe_commit(&meeting, seq);
                if let Some(position) = hub.position(&meeting)
                    && position < seq
                {
                    catch_up(&meetings, &hub, &meeting, position).await;
                }
            }
            Notice::Media(payload) => {
                if let Some(media) = &media
                    && let Some(commands) = Forward::for_node(&payload, &media.own)
                {
                    media.engine.apply_here(&commands).await;
                }
            }
            Notice::Listening => {
                // Commits made while the listener was away are unknown here.
                meetings.forget_held();
                let watched = hub.watched();
                tracing::info!(
                    meetings = watched.len(),
                    "listening for other nodes' commits; catching up"
                );
                for (meeting, position) in watched {
                    catch_up(&meetings, &hub, &meeting, position).await;
                }
                // Media commands other nodes sent meanwhile are lost too.
                if let Some(media) = &media {
                    media.engine.reconcile(&meetings).await;
                }
            }
        }
    }
}

/// Publishes to the hub every stored event of `meeting` after `after`, page by page. A failed
/// read is logged and left to the next notification (the hub stays where it is, so nothing is
/// skipped).
async fn catch_up(meetings: &Meetings, hub: &Hub, meeting: &MeetingId, mut after: u64) {
    loop {
        match meetings.events_after(meeting, after, MAX_PAGE).await {
            Ok(page) => {
                let Some(last) = page.last() else { return };
                after = last.seq;
                hub.publish(&page);
                if page.len() < MAX_PAGE as usize {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%meeting, %error, "cannot read another node's events");
                return;
            }
        }
    }
}
