//! Commits seen across nodes (PostgreSQL only): every commit that appends events also sends
//! `pg_notify(CHANNEL, "<last seq> <meeting id> <sent at, ms since the epoch>")` inside its
//! transaction, so the notification is delivered when (and only if) the commit is; media commands
//! for a room held by another node go on [`MEDIA_CHANNEL`]. A [`Listener`] keeps a `LISTEN`
//! connection on both and yields what it hears. It never fails: a lost connection is reconnected with backoff, and
//! [`Notice::Listening`] after each (re)connection says that notifications may have been missed
//! before it, so the caller reads the store for what it cares about.

use std::str::FromStr;
use std::time::Duration;

use convene_core::ids::MeetingId;
use sqlx::AnyConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

/// The channel of commits.
pub const CHANNEL: &str = "convene_events";

/// The channel of media commands sent to the node holding a room (a JSON payload the binary
/// writes and reads: `convene::placement`).
pub const MEDIA_CHANNEL: &str = "convene_media";

/// The `application_name` of the listening connection (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "convene-listen";

/// First wait before reconnecting; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a [`Listener`] heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A commit appended events to `meeting`, the last of them numbered `seq`; the sending node
    /// notified it at `sent_ms` (ms since the epoch, by its clock; `None` from an older node).
    Committed {
        meeting: MeetingId,
        seq: u64,
        sent_ms: Option<i64>,
    },
    /// A payload on [`MEDIA_CHANNEL`], as sent.
    Media(String),
    /// Listening (again): notifications sent before this may have been missed.
    Listening,
}

/// The payload of a commit's notification, sent at `sent_ms`.
pub(crate) fn payload(meeting: &MeetingId, seq: u64, sent_ms: i64) -> String {
    format!("{seq} {meeting} {sent_ms}")
}

/// Reads a payload written by [`payload`] (or by an older node, without the time); `None` for
/// anything else (a foreign sender).
fn parse(payload: &str) -> Option<Notice> {
    let mut parts = payload.split(' ');
    let seq = parts.next()?.parse().ok()?;
    let meeting = MeetingId::parse(parts.next()?).ok()?;
    let sent_ms = match parts.next() {
        Some(ms) => Some(ms.parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Notice::Committed {
        seq,
        meeting,
        sent_ms,
    })
}

/// Milliseconds since the Unix epoch by this machine's clock (the notification's send time).
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Sends the notification of a commit, inside its transaction (PostgreSQL only).
pub(crate) async fn notify(
    connection: &mut AnyConnection,
    meeting: &MeetingId,
    seq: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload(meeting, seq, unix_ms()))
        .execute(connection)
        .await
        .map(|_| ())
}

/// Adds the notifications of several meetings' commits to `script` as one statement (one round
/// trip, not one per meeting): for each, the meeting and its last sequence number. PostgreSQL
/// only (numbered parameters); delivered when the transaction commits, like [`notify`]'s.
pub(crate) fn push_notify_all<'q>(
    script: &mut crate::store::Script<'q>,
    commits: &[(&MeetingId, u64)],
) {
    if commits.is_empty() {
        return;
    }
    // `pg_notify` returns `void`, which the rows cannot carry: the statement answers a count.
    // The payloads are parameters 1..=n, the channel n + 1.
    let sql = format!(
        "SELECT COUNT(*) AS notified FROM (SELECT pg_notify(${}, v.payload) FROM (VALUES {}) \
         AS v (payload)) AS sent",
        commits.len() + 1,
        crate::store::placeholders(commits.len(), 1, crate::store::Params::Numbered),
    );
    let sent_ms = unix_ms();
    script.push_returning(&sql, &[("notified", "bigint")]);
    for (meeting, seq) in commits {
        script.bind(payload(meeting, *seq, sent_ms));
    }
    script.bind(CHANNEL);
}

/// A `LISTEN` connection on [`CHANNEL`] that reconnects by itself. Made by
/// [`crate::SqlStore::listener`].
pub struct Listener {
    options: PgConnectOptions,
    listener: Option<PgListener>,
    backoff: Duration,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the password: never print them.
        f.debug_struct("Listener")
            .field("connected", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    pub(crate) fn new(url: &str) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.application_name(APPLICATION_NAME);
        Ok(Self {
            options,
            listener: None,
            backoff: FIRST_BACKOFF,
        })
    }

    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.options.clone())
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        // Reconnection is ours (so that the caller learns of it): see `next`.
        listener.eager_reconnect(false);
        listener.listen_all([CHANNEL, MEDIA_CHANNEL]).await?;
        Ok(listener)
    }

    /// The next notice, waiting as long as it takes (cancel-safe: a notice not returned stays
    /// buffered in the connection, a connection being opened is opened again).
    pub async fn next(&mut self) -> Notice {
        loop {
            let Some(listener) = &mut self.listener else {
                match self.connect().await {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        self.backoff = FIRST_BACKOFF;
                        return Notice::Listening;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = self.backoff.as_millis() as u64, "cannot listen for other nodes' commits");
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            };
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == MEDIA_CHANNEL => {
                    return Notice::Media(notification.payload().to_owned());
                }
                Ok(Some(notification)) => match parse(notification.payload()) {
                    Some(notice) => return notice,
                    None => tracing::debug!(
                        payload = notification.payload(),
                        "ignored a notification not written by convene"
                    ),
                },
                Ok(None) => {
                    tracing::warn!(
                        "lost the connection listening for other nodes' commits; reconnecting"
                    );
                    self.listener = None;
                }
                Err(error) => {
                    tracing::warn!(%error, "listening for other nodes' commits failed; reconnecting");
                    self.listener = None;
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_and_foreign_ones_are_ignored() {
        let meeting = MeetingId::parse("1234567890").unwrap();
        assert_eq!(
            parse(&payload(&meeting, 42, 1_700_000_000_123)),
            Some(Notice::Committed {
                meeting: meeting.clone(),
                seq: 42,
                sent_ms: Some(1_700_000_000_123)
            })
        );
        // A node of the previous version sends no time.
        assert_eq!(
            parse("42 1234567890"),
            Some(Notice::Committed {
                meeting,
                seq: 42,
                sent_ms: None
            })
        );
        for foreign in [
            "",
            "42",
            "x 1234567890",
            "42 not-a-meeting",
            "-1 1234567890",
            "42 1234567890 soon",
            "42 1234567890 1 2",
        ] {
            assert_eq!(parse(foreign), None, "{foreign:?}");
        }
    }
}
