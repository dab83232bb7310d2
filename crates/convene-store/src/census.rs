//! What the `/metrics` gauges and `/readyz` ask of the store: a trivial query, and one cheap
//! counting query (meetings not ended by status, people present by state, webhook deliveries pending).

use sqlx::Row;

use crate::SqlStore;
use crate::error::backend;
use convene_core::ports::StoreError;

/// Counts across every meeting, read in one statement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Meetings not ended, by status (`created`, `live`); a status no meeting has is absent.
    pub meetings: Vec<(String, u64)>,
    /// People in a meeting's current run, by state (`waiting`, `admitted`, `joined`); a state
    /// nobody is in is absent.
    pub people: Vec<(String, u64)>,
    /// Webhook deliveries still to be made (status `pending`): the outbox depth.
    pub webhooks_pending: u64,
}

const CENSUS: &str = "\
SELECT 'meeting' AS kind, status AS name, COUNT(*) AS n FROM meetings WHERE status <> 'ended' GROUP BY status \
UNION ALL \
SELECT 'person', state, COUNT(*) FROM people WHERE state IN ('waiting', 'admitted', 'joined') GROUP BY state \
UNION ALL \
SELECT 'webhook', status, COUNT(*) FROM webhook_deliveries WHERE status = 'pending' GROUP BY status";

impl SqlStore {
    /// Answers when the store answers a trivial query (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The counts behind the `/metrics` gauges, in one query.
    pub async fn census(&self) -> Result<Census, StoreError> {
        let rows = sqlx::query(CENSUS)
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
        let mut census = Census::default();
        for row in rows {
            let kind: String = row.try_get(0).map_err(backend)?;
            let name: String = row.try_get(1).map_err(backend)?;
            let count: i64 = row.try_get(2).map_err(backend)?;
            let count = u64::try_from(count).unwrap_or(0);
            match kind.as_str() {
                "meeting" => census.meetings.push((name, count)),
                "person" => census.people.push((name, count)),
                _ => census.webhooks_pending = count,
            }
        }
        census.meetings.sort();
        census.people.sort();
        Ok(census)
    }
}
