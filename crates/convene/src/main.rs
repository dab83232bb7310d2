//! The `convene` command: run the server (default), manage API keys, apply migrations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use convene::{Config, KeyOrigin};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a join allocates and frees a few hundred small
/// values (JSON, SQL rows, tokens) across threads, and glibc's malloc and free were a quarter of
/// the server's instructions under a join storm (docs/benchmarks.md, "Join storms"). Built
/// without transparent huge pages (`no_thp`): with them, memory touched again after mimalloc gave
/// it back faulted in 2 MiB at a time, each zeroed whole: 72% of the time of the thread handling
/// the host's join that admits 10,000 waiting guests (docs/benchmarks.md, "Join storms").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "convene",
    version,
    about = "Self-hosted video meetings and live stages in one binary.",
    after_help = "Configuration: defaults, then --config FILE (TOML), then environment variables:\n  CONVENE_HTTP_ADDR, CONVENE_PUBLIC_URL, CONVENE_DATA_DIR, CONVENE_DATABASE_URL,\n  CONVENE_API_KEY, CONVENE_API_SECRET (or CONVENE_API_SECRET_FILE), MEETING_ID_DIGITS,\n  CONVENE_RTC_UDP_PORT, CONVENE_RTC_TCP_PORT, CONVENE_RTC_NODE_IP; an external LiveKit: CONVENE_LIVEKIT_URL,\n  CONVENE_LIVEKIT_WS_URL, CONVENE_LIVEKIT_API_KEY, CONVENE_LIVEKIT_API_SECRET.\nLog level from RUST_LOG (default info); CONVENE_LOG_FORMAT=json for JSON lines."
)]
struct Cli {
    /// TOML configuration file (keys as the environment variables without CONVENE_, lower case).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Apply database migrations and exit.
    Migrate,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key pair and print it (the secret is shown only here).
    Create {
        /// What the key is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List keys (without secrets).
    List,
    /// Revoke a key: tokens signed with it stop working.
    Revoke {
        /// The key id (APIxxxx).
        key: String,
    },
    /// Print a short-lived admin token for convene's API (`Authorization: Bearer`), signed with
    /// an active key: a credential that expires, instead of sending the secret with every call.
    Token {
        /// The key id (APIxxxx) to sign with; default: the oldest active key.
        #[arg(long)]
        key: Option<String>,
        /// Lifetime in seconds (60 to 86400).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(60..=86_400))]
        ttl_seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("CONVENE_LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match Config::load(cli.config.as_deref(), &env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("convene: configuration error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("convene: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::ApiKey(command) => api_key(config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convene: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let store_note = if config.database_url.is_some() {
        "PostgreSQL".to_owned()
    } else {
        format!("SQLite at {}", config.store_target())
    };
    let public_url = config.public_url.clone();
    let running = convene::start(config).await?;
    tracing::info!(addr = %running.addr, store = %store_note, "convene listening");
    println!(
        "convene listening on http://{} (store: {store_note})",
        running.addr
    );
    match running.key_origin {
        KeyOrigin::CreatedForDevelopment => {
            println!("\nCreated a development API key (shown once; stored in the database):");
            println!("  CONVENE_API_KEY={}", running.key.id);
            println!("  CONVENE_API_SECRET={}", running.key.secret.expose());
            println!("Try it:");
            println!(
                "  curl -u {}:{} -H 'content-type: application/json' -d '{{\"name\":\"My meeting\"}}' {public_url}/v1/meetings\n",
                running.key.id,
                running.key.secret.expose()
            );
        }
        KeyOrigin::Configured => println!("Using the configured API key {}", running.key.id),
        KeyOrigin::Stored => println!(
            "Using stored API key {} (list keys with `convene api-key list`)",
            running.key.id
        ),
    }
    println!("API docs: {public_url}/v1/docs");
    let token = running.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    running.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    convene::open_store(&config).await?;
    println!("migrations applied ({})", config.store_target());
    Ok(())
}

async fn api_key(config: Config, command: ApiKeyCommand) -> anyhow::Result<()> {
    use std::sync::Arc;
    let store = convene::open_store(&config).await?;
    let keys = convene_core::service::ApiKeys::new(
        store,
        Arc::new(convene::SystemClock),
        Arc::new(convene::OsEntropy),
    );
    match command {
        ApiKeyCommand::Create { description } => {
            let key = keys
                .create(&description)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "CONVENE_API_KEY={}\nCONVENE_API_SECRET={}",
                key.id,
                key.secret.expose()
            );
        }
        ApiKeyCommand::List => {
            let keys = keys.list().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if keys.is_empty() {
                println!("no API keys");
            }
            for key in keys {
                let status = if key.is_active() { "active" } else { "revoked" };
                println!(
                    "{}\t{}\tcreated {}\t{}",
                    key.id,
                    status,
                    convene_api::wire::rfc3339(key.created_at),
                    key.description
                );
            }
        }
        ApiKeyCommand::Revoke { key } => {
            keys.revoke(&key)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("cannot revoke {key}"))?;
            println!("revoked {key}");
        }
        ApiKeyCommand::Token { key, ttl_seconds } => {
            let mut keys: Vec<_> = keys
                .list()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .into_iter()
                .filter(|k| k.is_active() && key.as_ref().is_none_or(|id| &k.id == id))
                .collect();
            keys.sort_by_key(|k| k.created_at);
            let Some(key) = keys.into_iter().next() else {
                anyhow::bail!(
                    "no active API key{}",
                    key.map(|id| format!(" {id}")).unwrap_or_default()
                );
            };
            let token = convene_token::Signer::new(key.id, key.secret)
                .admin_token(
                    convene_core::Clock::now(&convene::SystemClock),
                    std::time::Duration::from_secs(ttl_seconds),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{token}");
        }
    }
    Ok(())
}
