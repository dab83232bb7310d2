//! Where each meeting's media runs when several nodes share the database and each runs the
//! embedded SFU (migration 0006). A node is named by its public signalling URL and holds a lease
//! it renews ([`SqlStore::renew_media_node`]); a room is placed on one node at its first join
//! ([`SqlStore::place_media_room`]) and moved only once that node's lease has run out, by a
//! conditional write, so two nodes placing one room at once agree on one holder.

use convene_core::ports::StoreError;
use sqlx::Row;

use crate::SqlStore;
use crate::error::backend;

/// A room's holder as stored: its URL and whether its lease still runs at the time asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub rtc_url: String,
    pub live: bool,
}

/// Where a room may be placed when it has no live holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// On this node (a client arrived here to join the room).
    Here(&'a str),
    /// On the live node with the fewest people and rooms; this node's URL if none is live.
    LeastLoaded { fallback: &'a str },
}

/// How many times a placement reads and writes before it gives up (each round loses only to
/// another node's placement of the same room, which the next read then finds).
const PLACEMENT_ROUNDS: usize = 4;

impl SqlStore {
    /// Renews `rtc_url`'s lease until `lease_until` (ms since the epoch) with its current `load`
    /// (people connected). Answers the instance that held the row before when it was another
    /// live one (two processes with one public URL).
    pub async fn renew_media_node(
        &self,
        rtc_url: &str,
        instance: &str,
        load: u64,
        now_ms: i64,
        lease_until: i64,
    ) -> Result<Option<String>, StoreError> {
        let previous = sqlx::query(
            "SELECT instance FROM media_nodes WHERE rtc_url = $1 AND lease_until > $2 \
             AND instance <> $3",
        )
        .bind(rtc_url)
        .bind(now_ms)
        .bind(instance)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|row| row.try_get::<String, _>(0))
        .transpose()
        .map_err(backend)?;
        sqlx::query(
            "INSERT INTO media_nodes (rtc_url, instance, load, lease_until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (rtc_url) DO UPDATE SET instance = excluded.instance, \
             load = excluded.load, lease_until = excluded.lease_until",
        )
        .bind(rtc_url)
        .bind(instance)
        .bind(i64::try_from(load).unwrap_or(i64::MAX))
        .bind(lease_until)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(previous)
    }

    /// Ends `rtc_url`'s lease now (a node shutting down), if `instance` still holds it: its rooms
    /// are placed elsewhere at their next join.
    pub async fn end_media_node(&self, rtc_url: &str, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM media_nodes WHERE rtc_url = $1 AND instance = $2")
            .bind(rtc_url)
            .bind(instance)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The node holding `room`, if it was placed, and whether that node is alive at `now_ms`.
    pub async fn media_room_holder(
        &self,
        room: &str,
        now_ms: i64,
    ) -> Result<Option<Holder>, StoreError> {
        let row = sqlx::query(
            "SELECT r.rtc_url, COALESCE(n.lease_until, 0) FROM media_rooms r \
             LEFT JOIN media_nodes n ON n.rtc_url = r.rtc_url WHERE r.room_name = $1",
        )
        .bind(room)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| {
            Ok::<_, sqlx::Error>(Holder {
                rtc_url: row.try_get(0)?,
                live: row.try_get::<i64, _>(1)? > now_ms,
            })
        })
        .transpose()
        .map_err(backend)
    }

    /// The node that holds `room`: its live holder if it has one, otherwise the node `target`
    /// names, recorded as the holder unless another node's placement got there first (then that
    /// one). Answers the holder's URL.
    pub async fn place_media_room(
        &self,
        room: &str,
        target: Target<'_>,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        for _ in 0..PLACEMENT_ROUNDS {
            let holder = self.media_room_holder(room, now_ms).await?;
            if let Some(holder) = &holder
                && holder.live
            {
                return Ok(holder.rtc_url.clone());
            }
            let to = match target {
                Target::Here(url) => url.to_owned(),
                Target::LeastLoaded { fallback } => self
                    .least_loaded_media_node(now_ms)
                    .await?
                    .unwrap_or_else(|| fallback.to_owned()),
            };
            let written = match &holder {
                None => sqlx::query(
                    "INSERT INTO media_rooms (room_name, rtc_url, placed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (room_name) DO NOTHING",
                )
                .bind(room)
                .bind(&to)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(backend)?,
                Some(dead) => sqlx::query(
                    "UPDATE media_rooms SET rtc_url = $1, placed_at = $2 \
                     WHERE room_name = $3 AND rtc_url = $4",
                )
                .bind(&to)
                .bind(now_ms)
                .bind(room)
                .bind(&dead.rtc_url)
                .execute(&self.pool)
                .await
                .map_err(backend)?,
            };
            if written.rows_affected() == 1 {
                return Ok(to);
            }
        }
        Err(StoreError::Conflict)
    }

    /// The live node with the fewest people connected and rooms placed (ties: by URL).
    async fn least_loaded_media_node(&self, now_ms: i64) -> Result<Option<String>, StoreError> {
        sqlx::query(
            "SELECT n.rtc_url FROM media_nodes n WHERE n.lease_until > $1 \
             ORDER BY n.load + (SELECT COUNT(*) FROM media_rooms r WHERE r.rtc_url = n.rtc_url), \
             n.rtc_url LIMIT 1",
        )
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|row| row.try_get::<String, _>(0))
        .transpose()
        .map_err(backend)
    }

    /// The rooms placed on `rtc_url` before `placed_before` (ms since the epoch).
    pub async fn media_rooms_of(
        &self,
        rtc_url: &str,
        placed_before: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_name FROM media_rooms WHERE rtc_url = $1 AND placed_at < $2 \
             ORDER BY room_name",
        )
        .bind(rtc_url)
        .bind(placed_before)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<_, _>>()
            .map_err(backend)
    }

    /// Forgets that `room` is on `rtc_url` (its node no longer has it open); a room since placed
    /// on another node is left alone.
    pub async fn release_media_room(&self, room: &str, rtc_url: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM media_rooms WHERE room_name = $1 AND rtc_url = $2")
            .bind(room)
            .bind(rtc_url)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Sends `payload` to every node listening (PostgreSQL's `pg_notify` on
    /// [`crate::listen::MEDIA_CHANNEL`]); on SQLite there is no other node and nothing is sent.
    pub async fn notify_media(&self, payload: &str) -> Result<(), StoreError> {
        if self.backend != crate::Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(crate::listen::MEDIA_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
