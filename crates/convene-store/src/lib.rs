//! convene-store: the sqlx implementation of convene-core's [`Store`] port, for SQLite (the
//! embedded default) and PostgreSQL.
//!
//! # One code path, one schema
//!
//! [`SqlStore`] talks to both databases through sqlx's `Any` driver: every query is written once,
//! with `$1`-style placeholders (PostgreSQL's syntax, which SQLite also accepts as numbered
//! parameters), and there is ONE migration directory (`migrations/`) written in the SQL both
//! accept: `TEXT`, `BIGINT`, integers 0/1 for booleans (with `CHECK`s), JSON as `TEXT`,
//! `INSERT ... ON CONFLICT ... DO UPDATE`, `RETURNING`. So the SQLite and PostgreSQL schemas cannot
//! drift, and the conformance suite (`tests/conformance.rs`) runs every test body against both.
//! The price of `Any` is that only basic types cross the driver (integers, text); that is all the
//! schema uses.
//!
//! # Durability (SQLite)
//!
//! Each SQLite connection runs, when it opens:
//!
//! - `PRAGMA journal_mode = WAL` (checked: the store refuses to open if WAL is not granted);
//! - `PRAGMA synchronous = FULL`: the WAL is fsynced at every commit, so a write that
//!   [`Store::commit`] or [`Store::create_meeting`] acknowledged survives `kill -9` of the process
//!   AND power loss or an OS crash. (`NORMAL` would only survive process crashes.)
//!   `tests/durability.rs` kills a writer with SIGKILL repeatedly and checks every acknowledged
//!   write is there and `PRAGMA integrity_check` says `ok`.
//! - `PRAGMA foreign_keys = ON` and `PRAGMA busy_timeout = 5000` (writers from several pool
//!   connections queue for up to 5 s instead of failing at once).
//! - `PRAGMA wal_autocheckpoint = 1000` (SQLite's default, set so that it is seen): the WAL is
//!   copied into the database file every 1,000 pages, inside the commit that fills it. An earlier
//!   setting of 100 pages was to avoid joins waiting 1-1.3 s in a storm across 200 rooms; those
//!   waits were a new meeting's insert on another pool connection waiting for SQLite's write lock
//!   behind the group commit, and new meetings now go through the committer too
//!   ([`group`]), so the larger checkpoint, which lets more joins through (docs/benchmarks.md),
//!   no longer stalls anyone.
//! - `PRAGMA temp_store = MEMORY`: the statement journals a multi-row statement inside the group
//!   commit's transaction keeps (to undo that statement alone) stay in memory instead of going to
//!   a temporary file (they are not the database's journal, which is the WAL). Measured with
//!   `make bench-join`, alternating builds: 10-13% less CPU per join in one room
//!   (docs/benchmarks.md).
//!
//! The database file is created (mode 0600 on Unix: it holds API secrets, which are signing keys)
//! together with its parent directory (mode 0700) when missing; SQLite puts `-wal` and `-shm`
//! beside it with the same mode.
//!
//! # Concurrency
//!
//! Changes are committed by one task per store (`group.rs`): [`Store::submit`] queues a change,
//! and everything queued while a commit is under way goes into the next one, one transaction and
//! (SQLite) one fsync for all of it; each caller is answered once that transaction is durable. A
//! meeting's consecutive changes in a batch are written as one, whose first statement is
//! `UPDATE meetings ... WHERE id = $ AND last_seq = $expected`; zero rows means another writer got
//! there first and those changes fail with [`StoreError::Conflict`]. Each meeting's writes sit
//! in a savepoint, so one meeting's conflict does not fail the others. On PostgreSQL a losing
//! transaction waits for the row lock and then sees the new `last_seq`; on SQLite writers are
//! serialised by the database lock. Participants are upserted and events appended in multi-row
//! statements ([`SQLITE_ROWS_PER_STATEMENT`] or [`POSTGRES_ROWS_PER_STATEMENT`] rows each).
//! Admitting everyone waiting writes one `admissions` row, whatever the number of guests
//! (migration 0005; participants are read through the `people` view).
//!
//! # Ordering
//!
//! Meetings are listed `ORDER BY id` (ids are ASCII digits, which every collation orders
//! bytewise). Participants and API keys are sorted in Rust by their byte order, so the order does
//! not depend on the PostgreSQL database's collation.

mod census;
mod error;
mod group;
pub mod listen;
mod login;
pub mod placement;
mod rows;
mod store;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use convene_core::ports::StoreError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

pub use census::Census;
pub use convene_core::ports::Store;
pub use convene_core::webhook::WebhookStore;
pub use error::StoreFault;
use error::backend;
pub use group::CommitCounts;

/// Rows per multi-row `INSERT` on PostgreSQL (13 columns x 500 rows stays far below its limit of
/// 65,535 bound parameters, and few statements means few round trips to a remote server).
pub const POSTGRES_ROWS_PER_STATEMENT: usize = 500;
/// Rows per multi-row `INSERT` on SQLite (an embedded database has no round trips, so a
/// statement need not be large). Its parameters are anonymous (`?`): with numbered ones binding
/// costs O(n^2) in the parameters of one statement (see `store::Params`).
pub const SQLITE_ROWS_PER_STATEMENT: usize = 50;

/// How long a SQLite writer waits for the database lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, embedded in the binary; the same set for both databases.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database a [`SqlStore`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite settings as read back from a connection (`PRAGMA` values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteSettings {
    /// `wal`.
    pub journal_mode: String,
    /// 0 = OFF, 1 = NORMAL, 2 = FULL, 3 = EXTRA; convene uses 2.
    pub synchronous: i64,
    pub foreign_keys: bool,
    pub busy_timeout_ms: i64,
    /// WAL pages between checkpoints; convene uses 100.
    pub wal_autocheckpoint: i64,
    /// 2 = MEMORY (statement journals in memory); convene uses 2.
    pub temp_store: i64,
}

/// The SQL store: a connection pool to SQLite or PostgreSQL. Cheap to share behind an `Arc`.
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL's URL, for [`SqlStore::listener`] (it may hold a password: never printed).
    url: Option<String>,
    /// The task that commits queued changes in groups (see `group.rs`).
    committer: group::Committer,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's options hold the URL, which may carry a password: never print it.
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl SqlStore {
    /// Opens `target`: a `postgres://` or `postgresql://` URL, a `sqlite:` URL
    /// (`sqlite:///var/lib/convene/convene.db`, `sqlite:data/convene.db`), or a plain file path.
    /// Does not migrate: call [`SqlStore::migrate`] next.
    pub async fn connect(target: &str) -> Result<Self, StoreError> {
        if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            Self::postgres(target).await
        } else if let Some(path) = target
            .strip_prefix("sqlite://")
            .or_else(|| target.strip_prefix("sqlite:"))
        {
            Self::sqlite(Path::new(path)).await
        } else if target.contains("://") {
            Err(backend(StoreFault::Config(
                "unsupported database URL scheme: use postgres://, sqlite: or a file path".into(),
            )))
        } else {
            Self::sqlite(Path::new(target)).await
        }
    }

    /// Opens (creating if needed, with its parent directory) the SQLite database at `path`, in WAL
    /// mode with `synchronous = FULL`. Does not migrate.
    pub async fn sqlite(path: &Path) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if path.as_os_str() == ":memory:" || path.as_os_str().is_empty() {
            return Err(backend(StoreFault::Config(
                "SQLite needs a file path (an in-memory database is not durable)".into(),
            )));
        }
        let path = std::path::absolute(path).map_err(|source| io_fault(path, source))?;
        prepare_sqlite_file(&path)?;
        let url = sqlite_url(&path)?;
        let options: AnyConnectOptions = url.parse().map_err(backend)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(|connection, _meta| {
                Box::pin(async move {
                    let mode: String =
                        sqlx::query("PRAGMA journal_mode = WAL").fetch_one(&mut *connection).await?.try_get(0)?;
                    if !mode.eq_ignore_ascii_case("wal") {
                        return Err(sqlx::Error::Configuration(
                            format!("SQLite refused WAL journal mode (got {mode:?})").into(),
                        ));
                    }
                    connection
                        .execute(
                            format!(
                                "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 1000;",
                                SQLITE_BUSY_TIMEOUT.as_millis()
                            )
                            .as_str(),
                        )
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(backend)?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            url: None,
            committer: group::Committer::default(),
        })
    }

    /// Connects to PostgreSQL at `url` (a plain pool). Does not migrate.
    pub async fn postgres(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(backend(StoreFault::Config(
                "a PostgreSQL URL starts with postgres://".into(),
            )));
        }
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(backend)?;
        tracing::debug!("connected to PostgreSQL store");
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            url: Some(url.to_owned()),
            committer: group::Committer::default(),
        })
    }

    /// Applies the migrations that are not applied yet. Idempotent; run it at every start.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await.map_err(backend)?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A listener for the commits of every node on this database (see [`listen`]); `None` on
    /// SQLite, which one process uses alone.
    pub fn listener(&self) -> Result<Option<listen::Listener>, StoreError> {
        self.url
            .as_deref()
            .map(listen::Listener::new)
            .transpose()
            .map_err(backend)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite: runs `PRAGMA integrity_check` and fails unless it answers `ok`.
    /// PostgreSQL: checks the connection (PostgreSQL has no equivalent cheap whole-database check).
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let rows = sqlx::query("PRAGMA integrity_check")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(backend)?;
                let mut lines = Vec::with_capacity(rows.len());
                for row in &rows {
                    lines.push(row.try_get::<String, _>(0).map_err(backend)?);
                }
                if lines == ["ok"] {
                    Ok(())
                } else {
                    Err(backend(StoreFault::Integrity(lines.join("; "))))
                }
            }
            Backend::Postgres => {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(backend)?;
                Ok(())
            }
        }
    }

    /// SQLite: the durability settings in force on a pooled connection (for start-up logs and
    /// tests); `None` on PostgreSQL.
    pub async fn sqlite_settings(&self) -> Result<Option<SqliteSettings>, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let mut connection = self.pool.acquire().await.map_err(backend)?;
        let mut text = async |pragma: &str| -> Result<String, StoreError> {
            let row = sqlx::query(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut *connection)
                .await
                .map_err(backend)?;
            // Some pragmas answer integers, some text; read either.
            match row.try_get::<String, _>(0) {
                Ok(value) => Ok(value),
                Err(_) => row
                    .try_get::<i64, _>(0)
                    .map(|n| n.to_string())
                    .map_err(backend),
            }
        };
        let journal_mode = text("journal_mode").await?;
        let synchronous = text("synchronous").await?;
        let foreign_keys = text("foreign_keys").await?;
        let busy_timeout = text("busy_timeout").await?;
        let wal_autocheckpoint = text("wal_autocheckpoint").await?;
        let temp_store = text("temp_store").await?;
        let number = |column: &'static str, raw: &str| {
            raw.parse::<i64>()
                .map_err(|e| error::corrupt(column, format!("{raw:?}: {e}")))
        };
        Ok(Some(SqliteSettings {
            journal_mode,
            synchronous: number("synchronous", &synchronous)?,
            foreign_keys: number("foreign_keys", &foreign_keys)? == 1,
            busy_timeout_ms: number("busy_timeout", &busy_timeout)?,
            wal_autocheckpoint: number("wal_autocheckpoint", &wal_autocheckpoint)?,
            temp_store: number("temp_store", &temp_store)?,
        }))
    }

    pub(crate) fn bulk(&self) -> store::Bulk {
        match self.backend {
            Backend::Sqlite => store::Bulk {
                rows: SQLITE_ROWS_PER_STATEMENT,
                params: store::Params::Anonymous,
            },
            Backend::Postgres => store::Bulk {
                rows: POSTGRES_ROWS_PER_STATEMENT,
                params: store::Params::Numbered,
            },
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

fn io_fault(path: &Path, source: std::io::Error) -> StoreError {
    backend(StoreFault::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Creates the parent directory and an empty database file, private to the owner, when missing.
fn prepare_sqlite_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent()
        && !parent.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(parent)
            .map_err(|source| io_fault(parent, source))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(io_fault(path, source)),
    }
}

/// `sqlite://<percent-encoded absolute path>?mode=rwc`. sqlx decodes the path, so every byte
/// outside a small safe set (including `%`, `?` and `#`) is encoded.
fn sqlite_url(path: &Path) -> Result<String, StoreError> {
    let text = path.to_str().ok_or_else(|| {
        backend(StoreFault::Config(format!(
            "SQLite path is not UTF-8: {}",
            path.display()
        )))
    })?;
    let mut url = String::from("sqlite://");
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_encode_awkward_paths() {
        let url = sqlite_url(Path::new("/tmp/a dir/x%41?#.db")).unwrap();
        assert_eq!(url, "sqlite:///tmp/a%20dir/x%2541%3F%23.db?mode=rwc");
    }
}
