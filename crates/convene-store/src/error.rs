//! Why a store call failed below the port: the cause carried inside `StoreError::Backend`.

use convene_core::ports::StoreError;

/// The cause of a [`StoreError::Backend`]; callers can downcast the boxed source to this.
#[derive(Debug, thiserror::Error)]
pub enum StoreFault {
    /// The database (connection, disk, constraint, SQL) failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not parse as its domain type (the store never trusts its rows blindly).
    #[error("corrupt value in column {column}: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
    /// A domain value cannot be stored (e.g. a sequence number beyond the signed 64-bit range).
    #[error("cannot store {what}: {reason}")]
    Unrepresentable { what: &'static str, reason: String },
    /// The connection target is not usable (unsupported URL scheme, path not UTF-8, ...).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// Preparing the SQLite file or its directory failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The group commit holding this change failed (the cause, as text: one failure answers
    /// every caller of the batch).
    #[error("the commit failed: {0}")]
    Commit(String),
    /// `PRAGMA integrity_check` found problems.
    #[error("integrity check failed: {0}")]
    Integrity(String),
}

/// Wraps any fault as the port's `Backend` error.
pub(crate) fn backend(fault: impl Into<StoreFault>) -> StoreError {
    StoreError::Backend(Box::new(fault.into()))
}

pub(crate) fn corrupt(column: &'static str, reason: impl std::fmt::Display) -> StoreError {
    backend(StoreFault::Corrupt {
        column,
        reason: reason.to_string(),
    })
}

pub(crate) fn unrepresentable(what: &'static str, reason: impl std::fmt::Display) -> StoreError {
    backend(StoreFault::Unrepresentable {
        what,
        reason: reason.to_string(),
    })
}

/// The text of a unique-key violation (constraint name and message), if `error` is one.
pub(crate) fn unique_violation(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => Some(
            format!("{} {}", db.constraint().unwrap_or_default(), db.message()),
        ),
        _ => None,
    }
}

/// The same error for another caller (one failed commit answers every change it held).
pub(crate) fn shared(error: &StoreError) -> StoreError {
    match error {
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Duplicate(what) => StoreError::Duplicate(what),
        StoreError::Backend(cause) => backend(StoreFault::Commit(cause.to_string())),
    }
}
