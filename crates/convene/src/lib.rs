//! The convene server as a library: configuration, wiring of store, core, media and HTTP
//! surfaces, and graceful shutdown. `main.rs` is the CLI on top; integration tests start the
//! same server on port 0.

pub mod config;
pub mod egress;
pub mod livekit_webhook;
pub mod mail;
pub mod media;
pub mod media_livekit;
pub mod metrics;
pub mod nodes;
pub mod placement;
pub mod recording;
pub mod twirp;
pub mod web;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use convene_api::{AppState, Hub, Limits, MediaTokens, PublicUrls};
use convene_core::apikey::ApiKey;
use convene_core::login::{Logins, Mailer};
use convene_core::ports::MediaEngine;
use convene_core::random::Entropy;
use convene_core::service::{ApiKeys, Meetings};
use convene_core::time::{Clock, Timestamp};
use convene_store::SqlStore;
use convene_token::Signer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// The operating system's randomness (through `rand`'s thread generator, seeded and reseeded
/// from it), the `Entropy` every service draws its ids, PINs, secrets and codes from.
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn seed(&self) -> [u8; 32] {
        let mut seed = [0; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        seed
    }
}

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
pub async fn signing_key(keys: &ApiKeys, config: &Config) -> anyhow::Result<(ApiKey, KeyOrigin)> {
    if let Some((id, secret)) = &config.api_key {
        let key = keys
            .provision(id, secret.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot provision CONVENE_API_KEY: {e}"))?;
        return Ok((key, KeyOrigin::Configured));
    }
    let mut stored: Vec<ApiKey> = keys
        .list()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read API keys: {e}"))?
        .into_iter()
        .filter(ApiKey::is_active)
        .collect();
    stored.sort_by_key(|k| k.created_at);
    if let Some(key) = stored.into_iter().next() {
        return Ok((key, KeyOrigin::Stored));
    }
    let key = keys
        .create("development key created at first start")
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
    /// The media TCP addresses of ICE over TCP (none when media runs on an external LiveKit).
    pub rtc_tcp_addrs: Vec<SocketAddr>,
    /// The unauthenticated `/metrics` listener (`CONVENE_METRICS_ADDR`), when set.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    /// The embedded SFU (`None` when media runs on an external LiveKit).
    sfu: Option<EmbeddedSfu>,
    /// The background tasks (webhook sender and its lanes, housekeeping, media-report recorder),
    /// joined at shutdown so the work they hold is finished.
    tasks: TaskTracker,
    /// How long the shutdown waits for them at the most.
    tasks_time: Duration,
    /// SQLite: the lock that keeps a second server off the database file, held to the end.
    _node_lock: Option<std::fs::File>,
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

    /// Waits until the server ends (after `shutdown_token().cancel()`), then stops the media
    /// engine and waits for the background tasks to finish what they hold.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.task.await.context("server task panicked");
        // However the server ended, the background tasks are told to stop.
        self.shutdown.cancel();
        if let Some(EmbeddedSfu { sfu, admission }) = self.sfu {
            // Everyone still connected is reported gone; departures still in their reconnect
            // grace are recorded now, so the log does not show them connected after the stop.
            sfu.shutdown().await;
            admission.finish().await;
        }
        self.tasks.close();
        if tokio::time::timeout(self.tasks_time, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "background tasks still running at shutdown were given up"
            );
        }
        served
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The media backend, built from the configuration before the core service that drives it.
enum MediaBackend {
    /// The embedded SFU, its sockets bound; it starts once the service exists (it asks the
    /// service before every join).
    Embedded(Box<convene_sfu::BoundSfu>),
    /// An external LiveKit deployment, driven through its RoomService.
    LiveKit {
        engine: Arc<media_livekit::LiveKitMedia>,
        key: String,
        secret: convene_core::apikey::ApiSecret,
        ws_url: String,
    },
}

impl MediaBackend {
    /// The embedded SFU (bound, not started), or the client of the external LiveKit, which
    /// defaults to the signing key pair.
    fn build(config: &Config, key: &ApiKey) -> anyhow::Result<Self> {
        let Some(livekit) = &config.livekit else {
            let sfu_config = convene_sfu::SfuConfig {
                udp_bind: SocketAddr::new(
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                    config.rtc_udp_port,
                ),
                tcp_bind: Some(SocketAddr::new(
                    std::net::Ipv4Addr::UNSPECIFIED.into(),
                    config.rtc_tcp_port,
                )),
                advertise_ips: config.rtc_node_ips.clone(),
                turn: config.turn.clone(),
                subscriber_bwe: config.rtc_subscriber_bwe,
                threads: config.rtc_threads,
                ..convene_sfu::SfuConfig::default()
            };
            let sfu = convene_sfu::Sfu::bind(sfu_config).with_context(|| {
                format!(
                    "cannot start the media engine on UDP port {} (CONVENE_RTC_UDP_PORT) \
                     and TCP port {} (CONVENE_RTC_TCP_PORT)",
                    config.rtc_udp_port, config.rtc_tcp_port
                )
            })?;
            if let Some(turn) = &config.turn {
                let urls: Vec<&str> = turn.urls().iter().map(|u| u.as_str()).collect();
                tracing::info!(
                    urls = %urls.join(","),
                    ttl_seconds = turn.ttl_secs(),
                    "TURN servers are handed to media clients"
                );
            }
            return Ok(Self::Embedded(Box::new(sfu)));
        };
        // No embedded SFU: no UDP port, no /rtc signalling and no RoomService here; clients
        // and LiveKit server SDKs talk to the LiveKit deployment itself.
        let (key, secret) = livekit
            .key
            .clone()
            .unwrap_or_else(|| (key.id.clone(), key.secret.clone()));
        let engine = Arc::new(media_livekit::LiveKitMedia::start(
            &livekit.api_url,
            &key,
            &secret,
        ));
        tracing::info!(api = %livekit.api_url, signalling = %livekit.ws_url, key = %key, "media runs on an external LiveKit deployment");
        Ok(Self::LiveKit {
            engine,
            key,
            secret,
            ws_url: livekit.ws_url.clone(),
        })
    }

    /// The core's port onto this backend (with several nodes, commands for a room held by
    /// another node go there through `placement`).
    fn engine(
        &self,
        placement: Option<Arc<placement::Placement>>,
        recordings: Option<Arc<recording::Recordings>>,
    ) -> Arc<dyn MediaEngine> {
        match (self, recordings) {
            (Self::Embedded(sfu), Some(recordings)) => Arc::new(media::EmbeddedMedia::new(
                sfu.control(),
                placement,
                recordings,
            )),
            (Self::LiveKit { engine, .. }, _) => engine.clone(),
            (Self::Embedded(_), None) => unreachable!("the embedded SFU always has recordings"),
        }
    }
}

/// What the media backend adds to the server once the core service exists.
struct MediaServing {
    /// `/rtc` and RoomService (embedded), or the LiveKit webhook receiver.
    routes: axum::Router,
    sfu: Option<EmbeddedSfu>,
    tokens: MediaTokens,
    /// The signalling URL clients are given.
    rtc: String,
}

impl MediaBackend {
    /// Starts the backend on the service: the embedded SFU with the core answering its
    /// admission questions (and recording its reports on `tasks`).
    async fn serve(
        self,
        meetings: &Arc<Meetings>,
        config: &Config,
        public_url: &str,
        placement: Option<Arc<placement::Placement>>,
        tasks: &TaskTracker,
    ) -> anyhow::Result<MediaServing> {
        match self {
            Self::Embedded(bound) => {
                let control = bound.control();
                let admission = Arc::new(media::CoreAdmission::new(
                    meetings.clone(),
                    config.rtc_reconnect_grace,
                    placement,
                    tasks,
                ));
                let sfu = bound.start(admission.clone()).await.with_context(|| {
                    format!(
                        "cannot start the media engine on UDP port {} (CONVENE_RTC_UDP_PORT) \
                         and TCP port {} (CONVENE_RTC_TCP_PORT)",
                        config.rtc_udp_port, config.rtc_tcp_port
                    )
                })?;
                let routes = sfu.router().merge(twirp::router(
                    meetings.clone(),
                    control,
                    public_url.to_owned(),
                ));
                Ok(MediaServing {
                    routes,
                    sfu: Some(EmbeddedSfu { sfu, admission }),
                    tokens: MediaTokens::Embedded,
                    rtc: rtc_url(public_url),
                })
            }
            Self::LiveKit {
                engine,
                key,
                secret,
                ws_url,
            } => {
                // Recordings LiveKit Egress would not start are failed in the core.
                engine.attach(meetings.clone());
                Ok(MediaServing {
                    routes: livekit_webhook::router(
                        meetings.clone(),
                        engine,
                        &key,
                        secret.expose(),
                    ),
                    sfu: None,
                    tokens: MediaTokens::LiveKit {
                        signer: Signer::new(key, secret),
                        ttl: media_livekit::ACCESS_TTL,
                    },
                    rtc: ws_url,
                })
            }
        }
    }
}

/// The LiveKit signalling URL of a server at `public_url` (`ws://` for `http://`, `wss://` for
/// `https://`).
fn rtc_url(public_url: &str) -> String {
    public_url.replacen("http", "ws", 1)
}

/// A random name for this process among the nodes (a restart is a new one).
fn random_instance(entropy: &dyn Entropy) -> String {
    entropy.seed()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts the server: opens and migrates the store, picks the signing key, builds the media
/// backend (the embedded SFU, or the client of an external LiveKit deployment), then the core
/// service on it, binds the HTTP listener and serves until shut down.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let descriptors = raise_descriptor_limit();
    let store = open_store(&config).await?;
    let node_lock = lock_sqlite(&config, &store)?;
    let commits = store
        .listener()
        .context("cannot listen for other nodes' commits")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let entropy: Arc<dyn Entropy> = Arc::new(OsEntropy);
    // The key is needed before the media backend (an external LiveKit defaults to this key pair).
    let keys = ApiKeys::new(store.clone(), clock.clone(), entropy.clone());
    let (key, key_origin) = signing_key(&keys, &config).await?;
    let hub = Hub::default();
    let wake = webhooks::Wake::default();
    let sink: Arc<dyn convene_core::ports::EventSink> = Arc::new(webhooks::Sinks(vec![
        Arc::new(hub.clone()),
        Arc::new(wake.clone()),
    ]));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let mailer: Arc<dyn Mailer> = match &config.smtp {
        Some(smtp) => Arc::new(mail::SmtpMailer::new(smtp)?),
        None => {
            mail::ConsoleMailer::announce();
            Arc::new(mail::ConsoleMailer)
        }
    };
    let logins = Arc::new(Logins::new(
        store.clone(),
        clock.clone(),
        entropy.clone(),
        mailer,
    ));
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
    // The media backend first, then the one core service on it.
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let media = MediaBackend::build(&config, &key)?;
    let sfu_control = match &media {
        MediaBackend::Embedded(bound) => Some(bound.control()),
        MediaBackend::LiveKit { .. } => None,
    };
    // Several nodes (PostgreSQL) each running the embedded SFU: each meeting's media on one.
    let placement = match (&commits, &sfu_control) {
        (Some(_), Some(_)) => Some(Arc::new(placement::Placement::new(
            store.clone(),
            rtc_url(&public_url),
            random_instance(entropy.as_ref()),
            clock.clone(),
        ))),
        _ => None,
    };
    if let Some(placement) = &placement {
        tracing::info!(
            node = placement.own(),
            "several nodes may share this database: each meeting's media runs on one of them, and this node is known by its signalling URL (CONVENE_PUBLIC_URL)"
        );
    }
    // The embedded SFU records; its files are kept where CONVENE_RECORDING_URL says.
    let recordings = match &sfu_control {
        Some(control) => {
            let storage = recording::storage::RecordingStorage::from_url(&config.recording_url)
                .with_context(|| format!("CONVENE_RECORDING_URL {:?}", config.recording_url))?;
            let work_dir = match config.recording_url.strip_prefix("file://") {
                Some(dir) => PathBuf::from(dir),
                None => config.data_dir.join("recordings"),
            };
            tracing::info!(storage = storage.describe(), "recordings are kept here");
            Some(recording::Recordings::new(
                control.clone(),
                storage,
                work_dir,
                config.ffmpeg.clone(),
                placement.clone(),
                tasks.clone(),
            ))
        }
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new(
        store.clone(),
        hub.clone(),
        sfu_control.clone(),
    ));
    let probe = convene_api::routes::system::ReadinessProbe {
        store: Arc::new(StorePing(store.clone())),
        timeout: READINESS_TIMEOUT,
    };
    let meetings = Arc::new(
        Meetings::new(
            store,
            clock,
            entropy,
            media.engine(placement.clone(), recordings.clone()),
            sink,
            config.meeting_id_digits,
        )
        .with_guess_limits(config.guess_limits),
    );
    let MediaServing {
        routes: engine_routes,
        sfu,
        tokens: media_tokens,
        rtc,
    } = media
        .serve(&meetings, &config, &public_url, placement.clone(), &tasks)
        .await?;
    // SQLite is one node by construction; PostgreSQL may be shared by several.
    let single_node = config.database_url.is_none();
    match commits {
        Some(commits) => {
            // Commands other nodes send to the rooms held here are carried out on this engine.
            let local_media = match (&placement, &sfu_control) {
                (Some(placement), Some(control)) => {
                    tasks.spawn(placement::keep(
                        placement.clone(),
                        control.clone(),
                        shutdown.clone(),
                    ));
                    Some(nodes::LocalMedia {
                        engine: media::EmbeddedMedia::new(
                            control.clone(),
                            None,
                            recordings.clone().expect("the embedded SFU has recordings"),
                        ),
                        own: placement.own().to_owned(),
                    })
                }
                _ => None,
            };
            tasks.spawn(nodes::follow(
                commits,
                meetings.clone(),
                hub.clone(),
                local_media,
                metrics.notify_delay.clone(),
                shutdown.clone(),
            ));
        }
        None => tracing::info!(
            "SQLite: this node runs alone (several nodes need PostgreSQL, CONVENE_DATABASE_URL)"
        ),
    }
    webhooks::start(
        meetings.store().clone(),
        signer.clone(),
        config.webhooks.clone(),
        wake,
        single_node,
        metrics.webhooks.clone(),
        shutdown.clone(),
        &tasks,
    )
    .await?;
    let state = AppState {
        meetings,
        signer,
        urls: PublicUrls {
            http: public_url,
            rtc,
        },
        limits: Arc::new(Limits::with(config.rate_limits)),
        hub: hub.clone(),
        media: media_tokens,
        logins,
        placement: placement.map(|p| p as Arc<dyn convene_api::state::MediaPlacement>),
        recording_files: recordings.clone().map(|recordings| {
            Arc::new(recording::StoredFiles { recordings })
                as Arc<dyn convene_api::state::RecordingFiles>
        }),
    };
    if let (Some(recordings), Some(control)) = (&recordings, &sfu_control) {
        recordings.attach(state.meetings.clone());
        if let Some(notices) = control.take_recorder_notices() {
            tasks.spawn(recordings.clone().listen(notices, shutdown.clone()));
        }
        let recovering = recordings.clone();
        tasks.spawn(async move { recovering.recover().await });
    }
    tasks.spawn(housekeeping(
        state.meetings.clone(),
        state.logins.clone(),
        shutdown.clone(),
    ));
    let trusted_proxies = convene_api::auth::TrustedProxies::new(config.trusted_proxies.clone());
    let app = convene_api::with_common_layers(
        convene_api::router(state.clone())
            .merge(metrics.admin_router(state.clone()))
            .merge(convene_compat::router(state, &config.compat))
            .merge(engine_routes)
            .merge(web::router())
            // Every surface's requests are counted, under their route templates.
            .layer(axum::middleware::from_fn_with_state(
                metrics.http.clone(),
                convene_api::metrics::track,
            ))
            .layer(axum::Extension(probe))
            .layer(axum::Extension(trusted_proxies.clone())),
    );
    let metrics_addr = match config.metrics_addr {
        Some(bind) => {
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind} (CONVENE_METRICS_ADDR)"))?;
            let bound = listener.local_addr()?;
            tracing::info!(addr = %bound, "metrics served without authentication");
            let options = convene_api::server::ServeOptions {
                rules: config.connections.clone(),
                max_connections: METRICS_CONNECTIONS,
                exempt: trusted_proxies.clone(),
            };
            let token = shutdown.clone();
            tasks.spawn(convene_api::server::serve(
                listener,
                metrics.open_router(),
                options,
                async move { token.cancelled().await },
            ));
            Some(bound)
        }
        None => None,
    };
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
    let rtc_tcp_addrs = sfu
        .as_ref()
        .map(|embedded| embedded.sfu.local_tcp_addrs())
        .unwrap_or_default();
    Ok(Running {
        addr,
        key,
        key_origin,
        rtc_udp_addrs,
        rtc_tcp_addrs,
        metrics_addr,
        shutdown,
        task,
        sfu,
        tasks,
        // A webhook delivery in flight runs into its request timeout at the most; the rest is
        // store writes (the media reports have their own bound, `CoreAdmission::finish`).
        tasks_time: config.webhooks.timeout + TASKS_MARGIN,
        _node_lock: node_lock,
    })
}

/// How long `/readyz` waits for the store's answer.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections the unauthenticated metrics listener holds at once (scrapers are few).
const METRICS_CONNECTIONS: usize = 64;

/// `/readyz`'s question to the store.
struct StorePing(Arc<SqlStore>);

impl convene_api::routes::system::StoreProbe for StorePing {
    fn ping(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.ping().await.map_err(|e| e.to_string()) })
    }
}

/// SQLite is for one server: takes an exclusive lock on `<database>.lock` beside the file, held
/// while the server runs, and refuses to start when another process (or server) holds it.
/// (The CLI's other commands do not take it: they may run beside the server.)
fn lock_sqlite(config: &Config, store: &SqlStore) -> anyhow::Result<Option<std::fs::File>> {
    if store.backend() != convene_store::Backend::Sqlite {
        return Ok(None);
    }
    let target = config.store_target();
    let database = target
        .strip_prefix("sqlite://")
        .or_else(|| target.strip_prefix("sqlite:"))
        .unwrap_or(&target);
    let path = std::path::PathBuf::from(format!("{database}.lock"));
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "the SQLite database {database} is in use by another convene server \
             (lock {} is held): SQLite is for one server; run several nodes on PostgreSQL \
             (CONVENE_DATABASE_URL)",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// What the shutdown grants the background tasks beyond a webhook request's timeout.
const TASKS_MARGIN: Duration = Duration::from_secs(10);

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
