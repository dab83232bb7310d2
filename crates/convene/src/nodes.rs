//! Several nodes on one PostgreSQL database: the task that brings the other nodes' commits to
//! this node's realtime hub. The store notifies every commit (`convene_store::listen`); for a
//! meeting someone streams here, the events after the hub's position are read from the store
//! and published to the hub in order (this node's own commits, which the hub has, are skipped by
//! their sequence numbers). After each (re)connection of the listener, every watched meeting is
//! read, since notifications sent while it was away are lost. The same notices keep the service's
//! held views of meetings (`convene_core::service`'s `hot.rs`) from falling behind.

use std::sync::Arc;

use convene_api::Hub;
use convene_core::ids::MeetingId;
use convene_core::ports::EventSink;
use convene_core::service::{MAX_PAGE, Meetings};
use convene_store::listen::{Listener, Notice};
use tokio_util::sync::CancellationToken;

/// Follows the other nodes' commits until shutdown.
pub async fn follow(
    mut listener: Listener,
    meetings: Arc<Meetings>,
    hub: Hub,
    shutdown: CancellationToken,
) {
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            notice = listener.next() => notice,
        };
        match notice {
            Notice::Committed { meeting, seq } => {
                // What this node holds of the meeting, if older, is read again when next needed.
                meetings.observe_commit(&meeting, seq);
                if let Some(position) = hub.position(&meeting)
                    && position < seq
                {
                    catch_up(&meetings, &hub, &meeting, position).await;
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
