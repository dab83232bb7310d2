//! What convene's load generators share: the server under test as a child process on a free
//! loopback port, with its own temporary data directory, ready once `/healthz` answers; a fresh
//! PostgreSQL database for a run; the CPU time a process used; percentiles.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

/// The release `convene` binary on `port`, SQLite in `dir`, the bench's API key, media on an
/// ephemeral UDP port, no per-address connection cap, warnings only.
pub fn convene_command(
    bin: &std::path::Path,
    port: u16,
    dir: &std::path::Path,
    key: &str,
    secret: &str,
) -> Command {
    let mut command = Command::new(bin);
    command
        .env("CONVENE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("CONVENE_DATA_DIR", dir)
        .env_remove("CONVENE_DATABASE_URL")
        .env("CONVENE_API_KEY", key)
        .env("CONVENE_API_SECRET", secret)
        .env("CONVENE_RTC_UDP_PORT", "0")
        .env("CONVENE_RTC_TCP_PORT", "0")
        // A load generator is many clients from few loopback addresses, not an attack.
        .env("CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "1000000")
        .env("RUST_LOG", "warn");
    command
}

/// What to build `bin` with, for error messages.
pub fn convene_missing(bin: &std::path::Path) -> String {
    format!(
        "{} (build it with cargo build --release -p convene)",
        bin.display()
    )
}

/// A server process; killed when dropped.
pub struct ChildServer {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildServer {
    /// Starts the command `make` builds for a port and a data directory, and waits (up to 30 s)
    /// until it answers `GET /healthz`. `what` names it in errors, e.g. how to build it.
    pub async fn start(
        what: &str,
        make: impl FnOnce(u16, &std::path::Path) -> Command,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let child = make(port, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(format!("{}/healthz", server.base)).send().await
                && response.status().is_success()
            {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("{what} did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time used so far by every thread of a process, from /proc/<pid>/task/*/schedstat
/// (nanoseconds on the CPU; exited threads are not counted).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(path) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .context("schedstat runtime")?
            .parse::<u64>()?;
    }
    Ok(Duration::from_nanos(total))
}

/// The `p`th percentile (nearest rank) of sorted durations; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A PostgreSQL database made for one run, next to the one an admin URL names.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl PgDatabase {
    /// Creates `<prefix>_<pid>_<n>` with the connection `admin_url` opens (its user may create
    /// databases, e.g. `postgres://postgres@127.0.0.1:5432/test`).
    pub async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{}_{run}", std::process::id());
        let Some(slash) = admin_url.rfind('/').filter(|&i| i > "postgres://".len()) else {
            bail!(
                "the PostgreSQL URL needs a database path, e.g. postgres://postgres@127.0.0.1:5432/test"
            );
        };
        let mut connection = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("PostgreSQL at {admin_url}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: format!("{}/{name}", &admin_url[..slash]),
            name,
        })
    }

    /// Drops the database (its servers stopped first, or their connections are ended).
    pub async fn drop(self) -> anyhow::Result<()> {
        let mut connection = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut connection)
        .await?;
        Ok(())
    }
}
