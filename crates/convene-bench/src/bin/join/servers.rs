//! The servers the join benchmark runs against, each started fresh for each scenario and killed
//! after it: convene on SQLite (a temporary data directory, the default durable settings), convene
//! on PostgreSQL (a database of its own, created for the run and dropped after), the Node.js peer
//! (`bench/node-join`), `axum-ceiling` (this binary's hidden `serve-ceiling` mode),
//! `durable-floor` (`serve-floor`) and `log-floor` (`serve-floor --rows log`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use clap::ValueEnum;
use convene_bench::{ChildServer, PgDatabase, convene_command, convene_missing};

/// The API key pair every server checks (convene: provisioned at start; node-join: Basic).
pub const KEY: &str = "APIbench";
pub const SECRET: &str = "bench-secret-0123456789-0123456789-abcdef";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// convene on SQLite.
    #[value(name = "convene")]
    Convene,
    /// convene on PostgreSQL (needs `--postgres-url`).
    #[value(name = "convene-pg")]
    ConvenePg,
    /// seed 002's function on Node.js `http` and `livekit-server-sdk`.
    #[value(name = "node-join")]
    NodeJoin,
    /// A bare axum POST route.
    #[value(name = "axum-ceiling")]
    AxumCeiling,
    /// The cheapest durable join in Rust: auth, a signed token, one row group-committed to SQLite.
    #[value(name = "durable-floor")]
    DurableFloor,
    /// durable-floor writing convene's rows: the person, three events and the meeting's row.
    #[value(name = "log-floor")]
    LogFloor,
    /// log-floor on PostgreSQL (needs `--postgres-url`).
    #[value(name = "log-floor-pg")]
    LogFloorPg,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Convene => "convene",
            Kind::ConvenePg => "convene-pg",
            Kind::NodeJoin => "node-join",
            Kind::AxumCeiling => "axum-ceiling",
            Kind::DurableFloor => "durable-floor",
            Kind::LogFloor => "log-floor",
            Kind::LogFloorPg => "log-floor-pg",
        }
    }

    pub fn is_convene(self) -> bool {
        matches!(self, Kind::Convene | Kind::ConvenePg)
    }

    /// Whether it keeps its rows in PostgreSQL.
    pub fn on_postgres(self) -> bool {
        matches!(self, Kind::ConvenePg | Kind::LogFloorPg)
    }
}

/// How to start each server.
pub struct Settings {
    pub convene_bin: PathBuf,
    pub node_dir: PathBuf,
    /// A PostgreSQL URL whose user may create databases (e.g.
    /// `postgres://postgres@127.0.0.1:5432/test`).
    pub postgres_url: Option<String>,
}

impl Settings {
    /// A PostgreSQL database made for one run of `kind` (kept in `made`, dropped when the server
    /// stops); its URL.
    async fn database(
        &self,
        kind: Kind,
        prefix: &str,
        made: &mut Option<PgDatabase>,
    ) -> anyhow::Result<String> {
        let admin_url = self
            .postgres_url
            .as_deref()
            .with_context(|| format!("{} needs --postgres-url", kind.name()))?;
        let database = PgDatabase::create(admin_url, prefix).await?;
        let url = database.url.clone();
        *made = Some(database);
        Ok(url)
    }
}

/// A running server; [`Running::stop`] kills it and drops its database.
pub struct Running {
    pub process: ChildServer,
    database: Option<PgDatabase>,
}

impl Running {
    pub async fn start(kind: Kind, settings: &Settings) -> anyhow::Result<Self> {
        let mut database = None;
        let process = match kind {
            Kind::Convene => {
                ChildServer::start(&convene_missing(&settings.convene_bin), |port, dir| {
                    convene_command(&settings.convene_bin, port, dir, KEY, SECRET)
                })
                .await?
            }
            Kind::ConvenePg => {
                let url = settings
                    .database(kind, "convene_join_bench", &mut database)
                    .await?;
                ChildServer::start(&convene_missing(&settings.convene_bin), |port, dir| {
                    let mut command =
                        convene_command(&settings.convene_bin, port, dir, KEY, SECRET);
                    command.env("CONVENE_DATABASE_URL", &url);
                    command
                })
                .await?
            }
            Kind::NodeJoin => {
                let script = settings.node_dir.join("server.js");
                ChildServer::start(
                    &format!(
                        "node {} (run npm ci in {})",
                        script.display(),
                        settings.node_dir.display()
                    ),
                    |port, _| {
                        let mut command = Command::new("node");
                        command
                            .arg(&script)
                            .arg(port.to_string())
                            .env("API_KEY", KEY)
                            .env("API_SECRET", SECRET);
                        command
                    },
                )
                .await?
            }
            Kind::AxumCeiling => {
                let exe = std::env::current_exe()?;
                ChildServer::start(
                    "axum-ceiling (this binary's serve-ceiling mode)",
                    |port, _| {
                        let mut command = Command::new(exe);
                        command
                            .arg("serve-ceiling")
                            .arg("--port")
                            .arg(port.to_string());
                        command
                    },
                )
                .await?
            }
            Kind::DurableFloor | Kind::LogFloor | Kind::LogFloorPg => {
                let exe = std::env::current_exe()?;
                let rows = if kind == Kind::DurableFloor {
                    "join"
                } else {
                    "log"
                };
                let url = if kind == Kind::LogFloorPg {
                    Some(
                        settings
                            .database(kind, "log_floor_bench", &mut database)
                            .await?,
                    )
                } else {
                    None
                };
                ChildServer::start(
                    &format!("{} (this binary's serve-floor mode)", kind.name()),
                    |port, dir| {
                        let mut command = Command::new(exe);
                        command
                            .arg("serve-floor")
                            .arg("--port")
                            .arg(port.to_string())
                            .arg("--data-dir")
                            .arg(dir)
                            .arg("--rows")
                            .arg(rows);
                        if let Some(url) = &url {
                            command.arg("--database-url").arg(url);
                        }
                        command
                    },
                )
                .await?
            }
        };
        Ok(Self { process, database })
    }

    /// Kills the server, then drops its database if it had one.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Running { process, database } = self;
        drop(process);
        if let Some(database) = database {
            database.drop().await?;
        }
        Ok(())
    }
}
