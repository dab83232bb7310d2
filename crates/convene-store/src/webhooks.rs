//! The webhook outbox: `impl WebhookStore for SqlStore`, and the two statements that
//! [`Store::commit`](convene_core::ports::Store::commit) runs inside its transaction (the meeting's
//! own endpoint follows its settings; one delivery row per new event and active endpoint).

use async_trait::async_trait;
use convene_core::Timestamp;
use convene_core::ids::MeetingId;
use convene_core::meeting::Meeting;
use convene_core::ports::StoreError;
use convene_core::webhook::{
    Attempt, AttemptOutcome, DeliveryFilter, DeliveryStatus, DueDelivery, Lane, WebhookDelivery,
    WebhookStore, WebhookUrl, deployment_endpoint_id, meeting_endpoint_id,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::SqlStore;
use crate::error::backend;
use crate::rows::{self, signed};

/// Why a delivery is failed when its endpoint goes away.
const REMOVED: &str = "the endpoint was removed before this delivery";

/// Inside a commit: the meeting's own endpoint follows `settings.webhook_url`. When it is removed,
/// its pending deliveries are failed; when its URL changes, pending deliveries go to the new URL.
pub(crate) async fn sync_meeting_endpoint(
    connection: &mut AnyConnection,
    meeting: &Meeting,
) -> Result<(), sqlx::Error> {
    let id = meeting_endpoint_id(&meeting.id);
    let at = meeting.updated_at.as_millis();
    match &meeting.settings.webhook_url {
        Some(url) => {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, url, meeting_id, active, created_at, updated_at) \
                 VALUES ($1, $2, $3, 1, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET url = excluded.url, active = 1, updated_at = excluded.updated_at \
                 WHERE webhook_endpoints.url <> excluded.url OR webhook_endpoints.active = 0",
            )
            .bind(id.as_str())
            .bind(url.as_str())
            .bind(meeting.id.as_str())
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
        None => {
            let done = sqlx::query("UPDATE webhook_endpoints SET active = 0, updated_at = $2 WHERE id = $1 AND active = 1")
                .bind(id.as_str())
                .bind(at)
                .execute(&mut *connection)
                .await?;
            if done.rows_affected() > 0 {
                fail_pending(connection, &id, at).await?;
            }
        }
    }
    Ok(())
}

async fn fail_pending(
    connection: &mut AnyConnection,
    endpoint_id: &str,
    at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', lease_until = NULL, last_error = $3, updated_at = $2 \
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(endpoint_id)
    .bind(at)
    .bind(REMOVED)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Inside a commit, after the events are appended: one pending delivery per event with
/// `first <= seq <= last` and per active endpoint of the deployment or of this meeting. One
/// statement, whatever the number of events; endpoints first, so no endpoint means no work.
pub(crate) async fn enqueue(
    connection: &mut AnyConnection,
    meeting: &MeetingId,
    first: i64,
    last: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, meeting_id, seq, status, attempts, next_attempt_at, created_at, updated_at) \
         SELECT w.id, e.meeting_id, e.seq, 'pending', 0, e.at, e.at, e.at \
         FROM webhook_endpoints w CROSS JOIN events e \
         WHERE w.active = 1 AND (w.meeting_id IS NULL OR w.meeting_id = $1) \
           AND e.meeting_id = $1 AND e.seq >= $2 AND e.seq <= $3",
    )
    .bind(meeting.as_str())
    .bind(first)
    .bind(last)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Asks whether any webhook endpoint is active (deployment-wide or a meeting's own), added to
/// `script`: the answer is [`any_active_in`] the rows.
pub(crate) fn push_any_active(script: &mut crate::store::Script<'_>) {
    script.push_returning(
        "SELECT COUNT(*) AS any_endpoint \
         FROM (SELECT 1 FROM webhook_endpoints WHERE active = 1 LIMIT 1) t",
        &[("any_endpoint", "bigint")],
    );
}

/// Whether a script with [`push_any_active`] found an active endpoint.
pub(crate) fn any_active_in(rows: &[AnyRow]) -> Result<bool, sqlx::Error> {
    for row in rows {
        // A combined script's other rows have the column, NULL.
        if row.try_column("any_endpoint").is_ok()
            && let Some(count) = row.try_get::<Option<i64>, _>("any_endpoint")?
        {
            return Ok(count > 0);
        }
    }
    Err(sqlx::Error::ColumnNotFound("any_endpoint".into()))
}

/// The columns `rows::due_delivery` reads.
const DUE_COLUMNS: &str = "d.endpoint_id, d.attempts, d.next_attempt_at, d.lease_until, w.url, m.room_name, \
     e.meeting_id, e.seq, e.at, e.instance_id, e.type, e.audience, e.data";

#[async_trait]
impl WebhookStore for SqlStore {
    async fn set_deployment_webhooks(
        &self,
        urls: &[WebhookUrl],
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let at = at.as_millis();
        let mut tx = self.pool().begin().await.map_err(backend)?;
        let ids: Vec<String> = urls.iter().map(deployment_endpoint_id).collect();
        for (id, url) in ids.iter().zip(urls) {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, url, meeting_id, active, created_at, updated_at) \
                 VALUES ($1, $2, NULL, 1, $3, $3) \
                 ON CONFLICT (id) DO UPDATE SET active = 1, updated_at = excluded.updated_at \
                 WHERE webhook_endpoints.active = 0",
            )
            .bind(id.as_str())
            .bind(url.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        let active: Vec<String> =
            sqlx::query("SELECT id FROM webhook_endpoints WHERE meeting_id IS NULL AND active = 1")
                .fetch_all(&mut *tx)
                .await
                .map_err(backend)?
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<_, _>>()
                .map_err(backend)?;
        for gone in active.iter().filter(|id| !ids.contains(id)) {
            sqlx::query("UPDATE webhook_endpoints SET active = 0, updated_at = $2 WHERE id = $1")
                .bind(gone.as_str())
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            fail_pending(&mut tx, gone, at).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn due_lanes(&self, now: Timestamp, limit: u32) -> Result<Vec<Lane>, StoreError> {
        // A lane's head is its first pending delivery; only heads are sent (order per lane).
        let found = sqlx::query(
            "SELECT d.endpoint_id, d.meeting_id FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             WHERE d.status = 'pending' AND w.active = 1 AND d.next_attempt_at <= $1 \
               AND (d.lease_until IS NULL OR d.lease_until <= $1) \
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
                   WHERE p.endpoint_id = d.endpoint_id AND p.meeting_id = d.meeting_id \
                     AND p.status = 'pending' AND p.seq < d.seq) \
             ORDER BY d.next_attempt_at, d.meeting_id, d.endpoint_id LIMIT $2",
        )
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(backend)?;
        found
            .iter()
            .map(|row| {
                let endpoint_id: String = row.try_get("endpoint_id").map_err(backend)?;
                let meeting: String = row.try_get("meeting_id").map_err(backend)?;
                let meeting_id = MeetingId::parse(&meeting)
                    .map_err(|e| crate::error::corrupt("meeting_id", e))?;
                Ok(Lane {
                    endpoint_id,
                    meeting_id,
                })
            })
            .collect()
    }

    async fn claim_lane(
        &self,
        lane: &Lane,
        now: Timestamp,
        lease_until: Timestamp,
        max: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let mut tx = self.pool().begin().await.map_err(backend)?;
        // First a write, so that claims of one endpoint are serialised: it takes the database
        // write lock at once on SQLite (a read first would make the later write fail as a stale
        // snapshot) and the endpoint's row lock on PostgreSQL.
        sqlx::query("UPDATE webhook_endpoints SET updated_at = updated_at WHERE id = $1")
            .bind(lane.endpoint_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let sql = format!(
            "SELECT {DUE_COLUMNS} FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             JOIN events e ON e.meeting_id = d.meeting_id AND e.seq = d.seq \
             JOIN meetings m ON m.id = d.meeting_id \
             WHERE d.endpoint_id = $1 AND d.meeting_id = $2 AND d.status = 'pending' AND w.active = 1 \
             ORDER BY d.seq LIMIT $3"
        );
        let found = sqlx::query(&sql)
            .bind(lane.endpoint_id.as_str())
            .bind(lane.meeting_id.as_str())
            .bind(i64::from(max))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend)?;
        // The run of deliveries, from the head, that are due and not leased.
        let mut claimed = Vec::new();
        for row in &found {
            let due: i64 = row.try_get("next_attempt_at").map_err(backend)?;
            let lease: Option<i64> = row.try_get("lease_until").map_err(backend)?;
            if due > now.as_millis() || lease.is_some_and(|l| l > now.as_millis()) {
                break;
            }
            claimed.push(rows::due_delivery(row)?);
        }
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(Vec::new());
        };
        let leased = sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = $5 \
             WHERE endpoint_id = $1 AND meeting_id = $2 AND seq >= $3 AND seq <= $4 AND status = 'pending' \
               AND (lease_until IS NULL OR lease_until <= $6)",
        )
        .bind(lane.endpoint_id.as_str())
        .bind(lane.meeting_id.as_str())
        .bind(signed("seq", first.event.seq)?)
        .bind(signed("seq", last.event.seq)?)
        .bind(lease_until.as_millis())
        .bind(now.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if leased.rows_affected() != claimed.len() as u64 {
            // Another sender got some of them first: leave the lane to it.
            return Ok(Vec::new());
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        lane: &Lane,
        seq: u64,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let (status, next) = match attempt.outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, attempt.at),
            AttemptOutcome::RetryAt(at) => (DeliveryStatus::Pending, at),
            AttemptOutcome::GaveUp => (DeliveryStatus::Failed, attempt.at),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $4, attempts = attempts + 1, next_attempt_at = $5, \
               lease_until = NULL, last_status = $6, last_error = $7, updated_at = $8 \
             WHERE endpoint_id = $1 AND meeting_id = $2 AND seq = $3 AND status = 'pending'",
        )
        .bind(lane.endpoint_id.as_str())
        .bind(lane.meeting_id.as_str())
        .bind(signed("seq", seq)?)
        .bind(status.as_str())
        .bind(next.as_millis())
        .bind(attempt.status.map(i64::from))
        .bind(attempt.error.as_deref())
        .bind(attempt.at.as_millis())
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn release_lane(
        &self,
        lane: &Lane,
        claimed: &[DueDelivery],
        lease_until: Timestamp,
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = NULL \
             WHERE endpoint_id = $1 AND meeting_id = $2 AND seq >= $3 AND seq <= $4 \
               AND status = 'pending' AND lease_until = $5",
        )
        .bind(lane.endpoint_id.as_str())
        .bind(lane.meeting_id.as_str())
        .bind(signed("seq", first.event.seq)?)
        .bind(signed("seq", last.event.seq)?)
        .bind(lease_until.as_millis())
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn release_all_leases(&self) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL",
        )
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        let mut sql = String::from(
            "SELECT d.endpoint_id, d.meeting_id, d.seq, d.status, d.attempts, d.next_attempt_at, d.last_status, \
               d.last_error, d.created_at, d.updated_at, w.url, e.type \
             FROM webhook_deliveries d \
             JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             JOIN events e ON e.meeting_id = d.meeting_id AND e.seq = d.seq WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.meeting.is_some() {
            sql.push_str(&format!(" AND d.meeting_id = {}", next()));
        }
        if filter.status.is_some() {
            sql.push_str(&format!(" AND d.status = {}", next()));
        }
        if filter.after_seq.is_some() {
            sql.push_str(&format!(" AND d.seq > {}", next()));
        }
        sql.push_str(&format!(
            " ORDER BY d.meeting_id, d.seq, d.endpoint_id LIMIT {}",
            next()
        ));
        let mut query = sqlx::query(&sql);
        if let Some(meeting) = &filter.meeting {
            query = query.bind(meeting.as_str());
        }
        if let Some(status) = filter.status {
            query = query.bind(status.as_str());
        }
        if let Some(after) = filter.after_seq {
            query = query.bind(i64::try_from(after).unwrap_or(i64::MAX));
        }
        let found = query
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await
            .map_err(backend)?;
        found.iter().map(rows::webhook_delivery).collect()
    }

    async fn prune_webhook_deliveries(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND updated_at < $1",
        )
        .bind(before.as_millis())
        .execute(self.pool())
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }
}
