//! `impl LoginStore for SqlStore`: users, one-time login codes (salted digests) and send
//! counters, written once for SQLite and PostgreSQL (migration `0003_logins.sql`).

use std::time::Duration;

use async_trait::async_trait;
use convene_core::Timestamp;
use convene_core::ids::DisplayName;
use convene_core::login::{CodeRecord, Email, LoginStore, SendCount, User, UserId};
use convene_core::ports::StoreError;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::{backend, unique_violation};
use crate::rows::{flag, parsed, text, timestamp, uint};

const USER_COLUMNS: &str = "id, email, name, created_at, updated_at";
const CODE_COLUMNS: &str = "email, salt, digest, issued_at, expires_at, tries, used";

fn user(row: &AnyRow) -> Result<User, StoreError> {
    Ok(User {
        id: parsed(row, "id", UserId::parse)?,
        email: parsed(row, "email", Email::parse)?,
        name: parsed(row, "name", DisplayName::parse)?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

fn code(row: &AnyRow) -> Result<CodeRecord, StoreError> {
    Ok(CodeRecord {
        email: parsed(row, "email", Email::parse)?,
        salt: text(row, "salt")?,
        digest: text(row, "digest")?,
        issued_at: timestamp(row, "issued_at")?,
        expires_at: timestamp(row, "expires_at")?,
        tries: uint(row, "tries")?,
        used: flag(row, "used")?,
    })
}

#[async_trait]
impl LoginStore for SqlStore {
    async fn count_login_send(
        &self,
        subject: &str,
        now: Timestamp,
        window: Duration,
    ) -> Result<SendCount, StoreError> {
        let window_over_before = now
            .as_millis()
            .saturating_sub(window.as_millis().min(i64::MAX as u128) as i64);
        // One statement, so concurrent sends from several nodes are all counted. Every SET
        // expression reads the row as it was before the update.
        let row = sqlx::query(
            "INSERT INTO login_sends (subject, sends, window_started_at) VALUES ($1, 1, $2) \
             ON CONFLICT (subject) DO UPDATE SET \
               sends = CASE WHEN login_sends.window_started_at <= $3 THEN 1 ELSE login_sends.sends + 1 END, \
               window_started_at = CASE WHEN login_sends.window_started_at <= $3 THEN $2 ELSE login_sends.window_started_at END \
             RETURNING sends, window_started_at",
        )
        .bind(subject)
        .bind(now.as_millis())
        .bind(window_over_before)
        .fetch_one(self.pool())
        .await
        .map_err(backend)?;
        Ok(SendCount {
            count: uint(&row, "sends")?,
            window_started_at: timestamp(&row, "window_started_at")?,
        })
    }

    async fn prune_logins(
        &self,
        codes_expired_before: Timestamp,
        sends_started_before: Timestamp,
    ) -> Result<u64, StoreError> {
        let codes = sqlx::query("DELETE FROM login_codes WHERE expires_at < $1")
            .bind(codes_expired_before.as_millis())
            .execute(self.pool())
            .await
            .map_err(backend)?;
        let sends = sqlx::query("DELETE FROM login_sends WHERE window_started_at < $1")
            .bind(sends_started_before.as_millis())
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(codes.rows_affected() + sends.rows_affected())
    }

    async fn put_login_code(&self, record: &CodeRecord) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO login_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (email) DO UPDATE SET salt = excluded.salt, digest = excluded.digest, \
               issued_at = excluded.issued_at, expires_at = excluded.expires_at, tries = excluded.tries, used = excluded.used"
        );
        sqlx::query(&sql)
            .bind(record.email.as_str())
            .bind(record.salt.as_str())
            .bind(record.digest.as_str())
            .bind(record.issued_at.as_millis())
            .bind(record.expires_at.as_millis())
            .bind(i64::from(record.tries))
            .bind(i64::from(record.used))
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn login_code(&self, email: &Email) -> Result<Option<CodeRecord>, StoreError> {
        let sql = format!("SELECT {CODE_COLUMNS} FROM login_codes WHERE email = $1");
        let row = sqlx::query(&sql)
            .bind(email.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(code).transpose()
    }

    async fn update_login_code(
        &self,
        previous: &CodeRecord,
        next: &CodeRecord,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE login_codes SET tries = $1, used = $2 \
             WHERE email = $3 AND salt = $4 AND tries = $5 AND used = 0",
        )
        .bind(i64::from(next.tries))
        .bind(i64::from(next.used))
        .bind(previous.email.as_str())
        .bind(previous.salt.as_str())
        .bind(i64::from(previous.tries))
        .execute(self.pool())
        .await
        .map_err(backend)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
        sqlx::query(&sql)
            .bind(user.id.as_str())
            .bind(user.email.as_str())
            .bind(user.name.as_str())
            .bind(user.created_at.as_millis())
            .bind(user.updated_at.as_millis())
            .execute(self.pool())
            .await
            .map_err(|e| match unique_violation(&e) {
                Some(text) if text.contains("email") => StoreError::Duplicate("email"),
                Some(_) => StoreError::Duplicate("user_id"),
                None => backend(e),
            })?;
        Ok(())
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(user).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let row = sqlx::query(&sql)
            .bind(email.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(backend)?;
        row.as_ref().map(user).transpose()
    }

    async fn rename_user(
        &self,
        id: &UserId,
        name: &DisplayName,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET name = $1, updated_at = $2 WHERE id = $3")
            .bind(name.as_str())
            .bind(at.as_millis())
            .bind(id.as_str())
            .execute(self.pool())
            .await
            .map_err(backend)?;
        Ok(())
    }
}
