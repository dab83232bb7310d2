//! The convene server as a library: configuration, wiring of store, core, media and HTTP
//! surfaces, and graceful shutdown. `main.rs` is the CLI on top; integration tests start the
//! same server on port 0.

pub mod config;
pub mod livekit_webhook;
pub mod mail;
pub mod media;
pub mod media_livekit;
pub mod twirp;
pub mod web;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use convene_api::{AppState, Hub, Limits, MediaTokens, PublicUrls};
use convene_core::apikey::ApiKey;
use convene_core::login::{Logins, Mailer};
use convene_core::ports::{NoMedia, NoSink};
use convene_core::service::Meetings;
use convene_core::time::{Clock, Timestamp};
use convene_store::SqlStore;
use convene_token::Signer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp::from_millis(millis)
    }
}

/// How the signing key came to be.
pub enum KeyOrigin {
    /// From `CONVENE_API_KEY` / `CONVENE_API_SECRET`.
    Configured,
    /// An active key already stored.
    Stored,
    /// Created now because none existed: print it once.
    CreatedForDevelopment,
}

/// Opens the store named by the configuration and applies migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<SqlStore>> {
    let target = config.store_target();
    let store = SqlStore::connect(&target).await.with_context(|| {
        if config.database_url.is_some() {
            "cannot connect to PostgreSQL (CONVENE_DATABASE_URL)".to_owned()
        } else {
            format!("cannot open the SQLite database {target}")
        }
    })?;
    store.migrate().await.context("database migration failed")?;
    Ok(Arc::new(store))
}

/// Picks the key that signs tokens: the configured pair (stored if new), else the oldest active
/// stored key, else a new development key.
pub async fn signing_key(
    meetings: &Meetings,
    config: &Config,
) -> anyhow::Result<(ApiKey, KeyOrigin)> {
    if let Some((id, secret)) = &config.api_key {
        let key = meetings
            .provision_api_key(id, secret.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot provision CONVENE_API_KEY: {e}"))?;
        return Ok((key, KeyOrigin::Configured));
    }
    let mut keys: Vec<ApiKey> = meetings
        .api_keys()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read API keys: {e}"))?
        .into_iter()
        .filter(ApiKey::is_active)
        .collect();
    keys.sort_by_key(|k| k.created_at);
    if let Some(key) = keys.into_iter().next() {
        return Ok((key, KeyOrigin::Stored));
    }
    let key = meetings
        .create_api_key("development key created at first start")
        .await
        .map_err(|e| anyhow::anyhow!("cannot create a development key: {e}"))?;
    Ok((key, KeyOrigin::CreatedForDevelopment))
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub key: ApiKey,
    pub key_origin: KeyOrigin,
    /// The media UDP addresses (none when media runs on an external LiveKit).
    pub rtc_udp_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// The embedded SFU (`None` when media runs on an external LiveKit).
    sfu: Option<EmbeddedSfu>,
}

/// The embedded SFU and the seam that records its reports.
struct EmbeddedSfu {
    sfu: convene_sfu::Sfu,
    admission: Arc<media::CoreAdmission>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the server ends (after `shutdown_token().cancel()`), then stops the media engine.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.task.await.context("server task panicked");
        if let Some(EmbeddedSfu { sfu, admission }) = self.sfu {
            // Everyone still connected is reported gone; departures still in their reconnect
            // grace are recorded now, so the log does not show them connected after the stop.
            sfu.shutdown().await;
            admission.finish().await;
        }
        served
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Starts the server: opens and migrates the store, picks the signing key, starts the media
/// engine (the embedded SFU, or the client of an external LiveKit deployment), binds the HTTP
/// listener and serves until shut down.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let descriptors = raise_descriptor_limit();
    let store = open_store(&config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The key is needed before the media engine (an external LiveKit defaults to this key pair),
    // and the core service needs the media engine: pick it with a service that drives no media.
    let (key, key_origin) = {
        let bootstrap = Meetings::new(
            store.clone(),
            clock.clone(),
            Arc::new(NoMedia),
            Arc::new(NoSink),
            config.meeting_id_digits,
        );
        signing_key(&bootstrap, &config).await?
    };
    let hub = Hub::default();
    let wake = webhooks::Wake::default();
    let sink: Arc<dyn convene_core::ports::EventSink> = Arc::new(webhooks::Sinks(vec![
        Arc::new(hub.clone()),
        Arc::new(wake.clone()),
    ]));
    let shutdown = CancellationToken::new();
    let mailer: Arc<dyn Mailer> = match &config.smtp {
        Some(smtp) => Arc::new(mail::SmtpMailer::new(smtp)?),
        None => {
            mail::ConsoleMailer::announce();
            Arc::new(mail::ConsoleMailer)
        }
    };
    let logins = Arc::new(Logins::new(store.clone(), Arc::new(SystemClock), mailer));
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    // With port 0, the public URL follows the port actually bound.
    let public_url = if config.http_addr.port() == 0 && config.public_url.ends_with(":0") {
        format!("{}{}", config.public_url.trim_end_matches('0'), addr.port())
    } else {
        config.public_url.clone()
    };
    let signer = Signer::new(key.id.clone(), key.secret.clone());
    let (meetings, engine_routes, sfu, media_tokens, rtc) = match &config.livekit {
        None => {
            let admission = Arc::new(media::CoreAdmission::new(config.rtc_reconnect_grace));
            let sfu_config = convene_sfu::SfuConfig {
                udp_bind: SocketAddr::new(
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                    config.rtc_udp_port,
                ),
                advertise_ips: config.rtc_node_ips.clone(),
                ..convene_sfu::SfuConfig::default()
            };
            let sfu = convene_sfu::Sfu::start(sfu_config, admission.clone())
                .await
                .with_context(|| {
                    format!(
                        "cannot start the media engine on UDP port {} (CONVENE_RTC_UDP_PORT)",
                        config.rtc_udp_port
                    )
                })?;
            let media = Arc::new(media::EmbeddedMedia::new(sfu.control()));
            let meetings = Arc::new(Meetings::new(
                store,
                clock,
                media,
                sink.clone(),
                config.meeting_id_digits,
            ));
            admission.attach(meetings.clone());
            let routes = sfu
                .router()
                .merge(twirp::router(meetings.clone(), sfu.control()));
            let rtc = public_url.replacen("http", "ws", 1);
            let sfu = EmbeddedSfu { sfu, admission };
            (meetings, routes, Some(sfu), MediaTokens::Embedded, rtc)
        }
        Some(livekit) => {
            // No embedded SFU: no UDP port, no /rtc signalling and no RoomService here; clients
            // and LiveKit server SDKs talk to the LiveKit deployment itself.
            let (lk_key, lk_secret) = livekit
                .key
                .clone()
                .unwrap_or_else(|| (key.id.clone(), key.secret.clone()));
            let media = Arc::new(media_livekit::LiveKitMedia::start(
                &livekit.api_url,
                &lk_key,
                &lk_secret,
            ));
            let meetings = Arc::new(Meetings::new(
                store,
                clock,
                media.clone(),
                sink.clone(),
                config.meeting_id_digits,
            ));
            let routes =
                livekit_webhook::router(meetings.clone(), media, &lk_key, lk_secret.expose());
            let tokens = MediaTokens::LiveKit {
                signer: Signer::new(lk_key.clone(), lk_secret),
                ttl: media_livekit::ACCESS_TTL,
            };
            tracing::info!(api = %livekit.api_url, signalling = %livekit.ws_url, key = %lk_key, "media runs on an external LiveKit deployment");
            (meetings, routes, None, tokens, livekit.ws_url.clone())
        }
    };
    // SQLite is one node by construction; PostgreSQL may be shared by several.
    let single_node = config.database_url.is_none();
    webhooks::start(
        meetings.store().clone(),
        signer.clone(),
        config.webhooks.clone(),
        wake,
        single_node,
        shutdown.clone(),
    )
    .await?;
    let state = AppState {
        meetings,
        signer,
        urls: PublicUrls {
            http: public_url,
            rtc,
        },
        limits: Arc::new(Limits::default()),
        hub: hub.clone(),
        media: media_tokens,
        logins,
    };
    tokio::spawn(housekeeping(
        state.meetings.clone(),
        state.logins.clone(),
        shutdown.clone(),
    ));
    let trusted_proxies = convene_api::auth::TrustedProxies::new(config.trusted_proxies.clone());
    let app = convene_api::with_common_layers(
        convene_api::router(state.clone())
            .merge(convene_compat::router(state, &config.compat))
            .merge(engine_routes)
            .merge(web::router())
            .layer(axum::Extension(trusted_proxies.clone())),
    );
    let options = convene_api::server::ServeOptions {
        rules: config.connections.clone(),
        max_connections: convene_api::server::max_connections_for(descriptors),
        exempt: trusted_proxies,
    };
    tracing::info!(
        open_files = descriptors,
        max_connections = options.max_connections,
        per_address = options.rules.max_per_address,
        "connection limits"
    );
    let token = shutdown.clone();
    // Every connection with deadlines and caps, its write side reachable by the event hub
    // (convene_api::server, convene_api::realtime::direct).
    let task = tokio::spawn(convene_api::server::serve(
        listener,
        app,
        options,
        async move {
            token.cancelled().await;
            // Live event streams end, so graceful shutdown does not wait on them.
            hub.close_all();
        },
    ));
    let rtc_udp_addrs = sfu
        .as_ref()
        .map(|embedded| embedded.sfu.local_udp_addrs())
        .unwrap_or_default();
    Ok(Running {
        addr,
        key,
        key_origin,
        rtc_udp_addrs,
        shutdown,
        task,
        sfu,
    })
}

/// Raises the soft limit on open files to the hard one, so that the server's connection caps, not
/// the descriptor limit, are what turn clients away; returns the limit in force.
fn raise_descriptor_limit() -> u64 {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; assuming 1024");
            return 1024;
        }
    };
    if soft >= hard {
        return soft;
    }
    match rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard) {
        Ok(()) => {
            tracing::info!(
                from = soft,
                to = hard,
                "open-file limit raised to the hard limit"
            );
            hard
        }
        Err(error) => {
            tracing::warn!(%error, soft, hard, "cannot raise the open-file limit");
            soft
        }
    }
}

/// How often stale guessing counters and expired login codes are dropped.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Drops store rows that no longer change any answer (see `Meetings::prune_failures` and
/// `Logins::prune`), at start and then every [`HOUSEKEEPING_INTERVAL`], until shutdown.
async fn housekeeping(
    meetings: Arc<Meetings>,
    logins: Arc<convene_core::login::Logins>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match meetings.prune_failures().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "housekeeping: stale failure counters dropped"),
            Err(e) => tracing::warn!(error = %e, "housekeeping: cannot prune failure counters"),
        }
        match logins.prune().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                pruned = n,
                "housekeeping: expired login codes and send counters dropped"
            ),
            Err(e) => tracing::warn!(error = %e, "housekeeping: cannot prune login codes"),
        }
    }
}
