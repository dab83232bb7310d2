//! Configuration: defaults, then a TOML file (`--config`), then environment variables; parsed
//! once into a validated [`Config`] that is passed explicitly. Secrets can come from files
//! (`*_FILE`) and never appear in `Debug` output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use convene_core::apikey::ApiSecret;
use convene_core::ids::MeetingIdDigits;
use serde::Deserialize;

/// The file form: every key optional, names as the environment variables without `CONVENE_`, in lower case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub http_addr: Option<String>,
    pub metrics_addr: Option<String>,
    pub http_header_timeout_seconds: Option<u64>,
    pub http_idle_timeout_seconds: Option<u64>,
    pub http_body_timeout_seconds: Option<u64>,
    pub http_max_connections_per_address: Option<u32>,
    pub public_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub api_key: Option<String>,
    pub api_secret: Option<String>,
    pub api_secret_file: Option<PathBuf>,
    pub meeting_id_digits: Option<i64>,
    pub compat_live_passcode: Option<String>,
    pub compat_bbb_token: Option<String>,
    pub rtc_udp_port: Option<u16>,
    pub rtc_tcp_port: Option<u16>,
    pub rtc_node_ip: Option<String>,
    pub rtc_reconnect_grace_ms: Option<u64>,
    pub rate_limit_per_address: Option<u32>,
    pub rate_limit_burst: Option<u32>,
    pub rate_limit_global: Option<u32>,
    pub rate_limit_guesses_per_address: Option<u32>,
    pub rate_limit_guess_window_seconds: Option<u64>,
    pub rate_limit_guesses_per_meeting: Option<u32>,
    pub turn_urls: Option<String>,
    pub turn_secret: Option<String>,
    pub turn_secret_file: Option<PathBuf>,
    pub turn_ttl_seconds: Option<u64>,
    pub rtc_subscriber_bwe: Option<bool>,
    pub rtc_threads: Option<usize>,
    pub trusted_proxies: Option<String>,
    pub webhook_urls: Option<String>,
    pub webhook_max_attempts: Option<u32>,
    pub webhook_first_retry_ms: Option<u64>,
    pub webhook_timeout_ms: Option<u64>,
    pub livekit_url: Option<String>,
    pub livekit_ws_url: Option<String>,
    pub livekit_api_key: Option<String>,
    pub livekit_api_secret: Option<String>,
    pub livekit_api_secret_file: Option<PathBuf>,
    pub smtp_url: Option<String>,
    pub smtp_from: Option<String>,
    pub recording_url: Option<String>,
    pub ffmpeg: Option<String>,
    /// Seed 002's `LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`, `LIVEKIT_SOCKET_URL` (in a file, named
    /// apart from the external engine's `livekit_*` keys).
    pub compat_livekit_api_key: Option<String>,
    pub compat_livekit_api_secret: Option<String>,
    pub compat_livekit_socket_url: Option<String>,
}

/// An external LiveKit deployment that carries the media instead of the embedded SFU.
pub struct ExternalLiveKit {
    /// Its server API (RoomService) base URL, `http://` or `https://`.
    pub api_url: url::Url,
    /// The signalling URL handed to clients, `ws://` or `wss://`.
    pub ws_url: String,
    /// The key pair LiveKit knows (`None` = convene's own signing key pair).
    pub key: Option<(String, ApiSecret)>,
}

impl std::fmt::Debug for ExternalLiveKit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalLiveKit")
            .field("api_url", &self.api_url.as_str())
            .field("ws_url", &self.ws_url)
            .field("api_key", &self.key.as_ref().map(|(id, _)| id))
            .finish()
    }
}

/// The validated configuration.
pub struct Config {
    pub http_addr: SocketAddr,
    /// A separate listener serving `/metrics` without authentication (an internal address).
    pub metrics_addr: Option<SocketAddr>,
    /// Every HTTP connection's deadlines and the per-address cap.
    pub connections: convene_api::server::ConnectionRules,
    /// Base URL clients use to reach this server (events URLs, signalling URL).
    pub public_url: String,
    pub data_dir: PathBuf,
    /// `Some` = PostgreSQL (a `postgres://` URL); `None` = SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// A key pair to provision at start.
    pub api_key: Option<(String, ApiSecret)>,
    pub meeting_id_digits: MeetingIdDigits,
    /// Settings of the compatibility surfaces.
    pub compat: convene_compat::CompatConfig,
    /// The one UDP port for all media (0 = ephemeral, for tests).
    pub rtc_udp_port: u16,
    /// The TCP port of ICE over TCP, for clients whose UDP is blocked (0 = ephemeral, for tests).
    pub rtc_tcp_port: u16,
    /// Addresses advertised in SDP (servers behind 1:1 NAT); empty = local interface addresses.
    pub rtc_node_ips: Vec<std::net::IpAddr>,
    /// How long a media departure waits for the same person to come back before it is recorded.
    pub rtc_reconnect_grace: std::time::Duration,
    /// The in-memory limits on unauthenticated calls (guessing has the store's lockouts).
    pub rate_limits: convene_api::RateLimits,
    /// The guessing limits (wrong credentials per address and per meeting).
    pub guess_limits: convene_core::lockout::GuessLimits,
    /// TURN servers the embedded SFU hands to clients, with time-limited credentials; `None`:
    /// none (clients reach the media ports directly).
    pub turn: Option<convene_sfu::TurnConfig>,
    /// Estimate each subscriber's downstream bandwidth and fit its video layers to it.
    pub rtc_subscriber_bwe: bool,
    /// The embedded SFU's media threads (engine shards), each owning whole rooms.
    pub rtc_threads: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client (empty = none).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where one-time login codes are mailed; `None` = development mode (codes in the log).
    pub smtp: Option<crate::mail::SmtpConfig>,
    /// `Some`: media runs on this external LiveKit deployment, not on the embedded SFU.
    pub livekit: Option<ExternalLiveKit>,
    /// Where every meeting's events are POSTed, and how.
    pub webhooks: WebhookConfig,
    /// Where finished recordings are kept: `file:///dir` or `s3://bucket/prefix` (default the
    /// data directory's `recordings`).
    pub recording_url: String,
    /// The ffmpeg program that builds recordings' composites.
    pub ffmpeg: String,
}

/// Deployment-wide webhooks and the delivery rules for every endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    pub urls: Vec<convene_core::webhook::WebhookUrl>,
    pub retry: convene_core::webhook::RetryPolicy,
    /// How long one POST may take before it counts as failed.
    pub timeout: std::time::Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            retry: Default::default(),
            timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("connections", &self.connections)
            .field("public_url", &self.public_url)
            .field("data_dir", &self.data_dir)
            .field("recording_url", &self.recording_url)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("api_key", &self.api_key.as_ref().map(|(id, _)| id))
            .field("meeting_id_digits", &self.meeting_id_digits)
            .field("compat", &self.compat)
            .field("rtc_udp_port", &self.rtc_udp_port)
            .field("rtc_tcp_port", &self.rtc_tcp_port)
            .field("rtc_node_ips", &self.rtc_node_ips)
            .field("rtc_reconnect_grace", &self.rtc_reconnect_grace)
            .field("rate_limits", &self.rate_limits)
            .field("guess_limits", &self.guess_limits)
            .field("turn", &self.turn)
            .field("rtc_subscriber_bwe", &self.rtc_subscriber_bwe)
            .field("rtc_threads", &self.rtc_threads)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("webhooks", &self.webhooks)
            .field("livekit", &self.livekit)
            .field("smtp", &self.smtp)
            .finish()
    }
}

/// The environment variables convene reads (fixed names: users' scripts rely on them).
pub const ENV_VARS: &[(&str, &str)] = &[
    (
        "CONVENE_HTTP_ADDR",
        "listen address (default 127.0.0.1:7880)",
    ),
    (
        "CONVENE_METRICS_ADDR",
        "also serve /metrics here without authentication, e.g. 127.0.0.1:9100 (default: none; /metrics on the main address needs the API key)",
    ),
    (
        "CONVENE_HTTP_HEADER_TIMEOUT_SECONDS",
        "a request head must arrive within this, else the connection is closed (default 10, 1 to 3600)",
    ),
    (
        "CONVENE_HTTP_IDLE_TIMEOUT_SECONDS",
        "a kept-alive connection with no request in flight, or whose response the client does not read, is closed after this (default 60, 1 to 86400)",
    ),
    (
        "CONVENE_HTTP_BODY_TIMEOUT_SECONDS",
        "a request body must arrive within this of its head, else 408 (default 30, 1 to 3600)",
    ),
    (
        "CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
        "open connections one client address may hold; trusted proxies exempt (default 512, 1 to 1000000)",
    ),
    (
        "CONVENE_PUBLIC_URL",
        "base URL clients use (default http://<CONVENE_HTTP_ADDR>)",
    ),
    (
        "CONVENE_DATA_DIR",
        "data directory holding the SQLite database (default ./data)",
    ),
    (
        "CONVENE_DATABASE_URL",
        "a postgres:// URL switches the store to PostgreSQL",
    ),
    ("CONVENE_API_KEY", "API key id provisioned at start"),
    (
        "CONVENE_API_SECRET",
        "its secret, at least 32 bytes (or CONVENE_API_SECRET_FILE)",
    ),
    (
        "MEETING_ID_DIGITS",
        "default length of new meeting ids (default 10)",
    ),
    (
        "CONVENE_RTC_UDP_PORT",
        "the one UDP port for all media (default 7882)",
    ),
    (
        "CONVENE_RTC_TCP_PORT",
        "the TCP port of media for clients whose UDP is blocked (ICE over TCP; default 7881)",
    ),
    (
        "CONVENE_RTC_NODE_IP",
        "comma-separated IPs to advertise to clients (1:1 NAT); default local addresses",
    ),
    (
        "CONVENE_RTC_RECONNECT_GRACE_MS",
        "how long a media departure waits for the person to reconnect before it is recorded (default 5000, 100 to 60000)",
    ),
    (
        "CONVENE_RATE_LIMIT_PER_ADDRESS",
        "unauthenticated calls (entering, join links) per second per client address (default 200)",
    ),
    (
        "CONVENE_RATE_LIMIT_BURST",
        "such calls one address may make at once (default 2000)",
    ),
    (
        "CONVENE_RATE_LIMIT_GLOBAL",
        "such calls per second from everyone (default 5000)",
    ),
    (
        "CONVENE_RATE_LIMIT_GUESSES_PER_ADDRESS",
        "wrong credentials, PINs or meeting ids one client address may try per window before it is refused (default 30)",
    ),
    (
        "CONVENE_RATE_LIMIT_GUESS_WINDOW_SECONDS",
        "that window (default 600)",
    ),
    (
        "CONVENE_RATE_LIMIT_GUESSES_PER_MEETING",
        "consecutive wrong credentials for one meeting before its checks lock, with a delay doubling per further failure (default 100)",
    ),
    (
        "CONVENE_TURN_URLS",
        "comma-separated TURN servers handed to clients of the embedded SFU, e.g. turn:turn.example.com:3478?transport=udp,turns:turn.example.com:443?transport=tcp",
    ),
    (
        "CONVENE_TURN_SECRET",
        "the secret shared with the TURN server (coturn's static-auth-secret), 16 to 1024 bytes (or CONVENE_TURN_SECRET_FILE)",
    ),
    (
        "CONVENE_TURN_TTL_SECONDS",
        "how long each issued TURN credential is valid (default 86400, 60 to 604800)",
    ),
    (
        "CONVENE_RTC_SUBSCRIBER_BWE",
        "true to estimate each subscriber's bandwidth and send it the video layers that fit (default false)",
    ),
    (
        "CONVENE_RTC_THREADS",
        "media threads of the embedded SFU, each forwarding whole rooms (default: one per core, 1 to 1024)",
    ),
    (
        "CONVENE_TRUSTED_PROXIES",
        "comma-separated addresses or CIDR ranges of reverse proxies whose X-Forwarded-For names the client",
    ),
    (
        "CONVENE_LIVEKIT_URL",
        "an external LiveKit server's API URL (http/https): media runs there instead of the embedded SFU",
    ),
    (
        "CONVENE_LIVEKIT_WS_URL",
        "the signalling URL clients get for it (default: CONVENE_LIVEKIT_URL with http->ws, https->wss)",
    ),
    (
        "CONVENE_LIVEKIT_API_KEY",
        "the key pair that LiveKit deployment knows (default: convene's own signing key pair)",
    ),
    (
        "CONVENE_LIVEKIT_API_SECRET",
        "its secret, at least 32 bytes (or CONVENE_LIVEKIT_API_SECRET_FILE)",
    ),
    (
        "CONVENE_COMPAT_LIVE_PASSCODE",
        "turns on the seed 001 live-stream surface with this passcode",
    ),
    (
        "CONVENE_WEBHOOK_URLS",
        "comma-separated URLs that receive every meeting's events (signed like LiveKit's webhooks)",
    ),
    (
        "CONVENE_WEBHOOK_MAX_ATTEMPTS",
        "attempts per webhook delivery before it is given up (default 10, 1 to 100)",
    ),
    (
        "CONVENE_WEBHOOK_FIRST_RETRY_MS",
        "delay before the first retry, doubling after each failure up to 5 minutes (default 1000)",
    ),
    (
        "CONVENE_WEBHOOK_TIMEOUT_MS",
        "time one webhook POST may take (default 10000)",
    ),
    (
        "CONVENE_RECORDING_URL",
        "where finished recordings are kept: file:///dir or s3://bucket/prefix with the AWS_* credentials, region and AWS_ENDPOINT_URL (default file://<data dir>/recordings)",
    ),
    (
        "CONVENE_FFMPEG",
        "the ffmpeg program that composes recordings into one MP4 (default ffmpeg on the PATH)",
    ),
    (
        "CONVENE_SMTP_URL",
        "SMTP server for one-time login codes, e.g. smtp://127.0.0.1:2525; unset = codes in the log (development)",
    ),
    (
        "CONVENE_SMTP_FROM",
        "sender of those mails, e.g. convene <noreply@example.com> (required with CONVENE_SMTP_URL)",
    ),
    (
        "LIVEKIT_API_KEY",
        "seed 002: sign its tokens with this external LiveKit key (with LIVEKIT_API_SECRET)",
    ),
    (
        "LIVEKIT_API_SECRET",
        "seed 002: the external LiveKit secret, at least 32 bytes",
    ),
    (
        "LIVEKIT_SOCKET_URL",
        "seed 002: the signalling URL it hands out (default: convene's own)",
    ),
    (
        "CONVENE_COMPAT_BBB_TOKEN",
        "turns on the seed 003 BigBlueButton surface; clients send it as `Authorization`",
    ),
];

/// A whole number from the environment or the file, within `range`, or the default.
fn number<T>(
    name: &str,
    env: Option<String>,
    file: Option<T>,
    range: std::ops::RangeInclusive<T>,
    default: T,
) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let value = match env {
        Some(text) => text
            .trim()
            .parse::<T>()
            .map_err(|_| anyhow::anyhow!("{name}: {text:?} is not a whole number"))?,
        None => file.unwrap_or(default),
    };
    if !range.contains(&value) {
        bail!(
            "{name} must be {} to {} (got {value})",
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

impl Config {
    /// Loads defaults, then `file` (if given), then the environment `env`.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let file_config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::from_layers(file_config, env)
    }

    pub fn from_layers(file: FileConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let var = |name: &str| env.get(name).filter(|v| !v.is_empty()).cloned();
        let http_addr_text = var("CONVENE_HTTP_ADDR")
            .or(file.http_addr)
            .unwrap_or_else(|| "127.0.0.1:7880".into());
        let http_addr: SocketAddr = http_addr_text.parse().with_context(|| {
            format!("CONVENE_HTTP_ADDR: {http_addr_text:?} is not an address like 127.0.0.1:7880")
        })?;
        let metrics_addr = match var("CONVENE_METRICS_ADDR").or(file.metrics_addr) {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().with_context(|| {
                format!("CONVENE_METRICS_ADDR: {text:?} is not an address like 127.0.0.1:9100")
            })?),
        };
        let seconds = |name: &str, file: Option<u64>, max: u64, default: u64| {
            number(name, var(name), file, 1..=max, default).map(std::time::Duration::from_secs)
        };
        let defaults = convene_api::server::ConnectionRules::default();
        let connections = convene_api::server::ConnectionRules {
            header_timeout: seconds(
                "CONVENE_HTTP_HEADER_TIMEOUT_SECONDS",
                file.http_header_timeout_seconds,
                3600,
                defaults.header_timeout.as_secs(),
            )?,
            idle_timeout: seconds(
                "CONVENE_HTTP_IDLE_TIMEOUT_SECONDS",
                file.http_idle_timeout_seconds,
                86_400,
                defaults.idle_timeout.as_secs(),
            )?,
            body_timeout: seconds(
                "CONVENE_HTTP_BODY_TIMEOUT_SECONDS",
                file.http_body_timeout_seconds,
                3600,
                defaults.body_timeout.as_secs(),
            )?,
            max_per_address: number(
                "CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
                var("CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS"),
                file.http_max_connections_per_address,
                1..=1_000_000,
                defaults.max_per_address,
            )?,
        };
        let public_url = var("CONVENE_PUBLIC_URL")
            .or(file.public_url)
            .unwrap_or_else(|| {
                let host = if http_addr.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    http_addr.ip().to_string()
                };
                let host = if http_addr.is_ipv6() && !http_addr.ip().is_unspecified() {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("http://{host}:{}", http_addr.port())
            });
        let public_url = public_url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&public_url)
            .with_context(|| format!("CONVENE_PUBLIC_URL: {public_url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("CONVENE_PUBLIC_URL must be an http:// or https:// URL");
        }
        let data_dir = var("CONVENE_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = var("CONVENE_DATABASE_URL").or(file.database_url);
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            bail!(
                "CONVENE_DATABASE_URL must be a postgres:// URL (leave it unset for the embedded SQLite store)"
            );
        }
        let key = var("CONVENE_API_KEY").or(file.api_key);
        let secret = match var("CONVENE_API_SECRET").or(file.api_secret) {
            Some(secret) => Some(secret),
            None => match var("CONVENE_API_SECRET_FILE")
                .map(PathBuf::from)
                .or(file.api_secret_file)
            {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| {
                            format!("cannot read CONVENE_API_SECRET_FILE {}", path.display())
                        })?
                        .trim_end_matches(['\n', '\r'])
                        .to_owned(),
                ),
                None => None,
            },
        };
        let api_key = match (key, secret) {
            (Some(key), Some(secret)) => {
                let secret = ApiSecret::parse(&secret)
                    .map_err(|e| anyhow::anyhow!("CONVENE_API_SECRET {}", e.reason))?;
                convene_core::apikey::ApiKey::parse_id(&key)
                    .map_err(|e| anyhow::anyhow!("CONVENE_API_KEY {}", e.reason))?;
                Some((key, secret))
            }
            (None, None) => None,
            (Some(_), None) => {
                bail!("CONVENE_API_KEY is set but CONVENE_API_SECRET is not: set both, or neither")
            }
            (None, Some(_)) => {
                bail!("CONVENE_API_SECRET is set but CONVENE_API_KEY is not: set both, or neither")
            }
        };
        let digits = match var("MEETING_ID_DIGITS") {
            Some(text) => Some(
                text.trim()
                    .parse::<i64>()
                    .with_context(|| format!("MEETING_ID_DIGITS: {text:?} is not a number"))?,
            ),
            None => file.meeting_id_digits,
        };
        let meeting_id_digits = match digits {
            Some(d) => MeetingIdDigits::new(d)
                .map_err(|e| anyhow::anyhow!("MEETING_ID_DIGITS {}", e.reason))?,
            None => MeetingIdDigits::DEFAULT,
        };
        let live_passcode = var("CONVENE_COMPAT_LIVE_PASSCODE").or(file.compat_live_passcode);
        if live_passcode.as_ref().is_some_and(|p| p.len() > 256) {
            bail!("CONVENE_COMPAT_LIVE_PASSCODE must be at most 256 bytes");
        }
        let livekit_api = match (
            var("LIVEKIT_API_KEY").or(file.compat_livekit_api_key),
            var("LIVEKIT_API_SECRET").or(file.compat_livekit_api_secret),
        ) {
            (Some(key), Some(secret)) => {
                convene_core::apikey::ApiKey::parse_id(&key)
                    .map_err(|e| anyhow::anyhow!("LIVEKIT_API_KEY {}", e.reason))?;
                let secret = ApiSecret::parse(&secret)
                    .map_err(|e| anyhow::anyhow!("LIVEKIT_API_SECRET {}", e.reason))?;
                Some((key, secret))
            }
            (None, None) => None,
            (Some(_), None) => {
                bail!("LIVEKIT_API_KEY is set but LIVEKIT_API_SECRET is not: set both, or neither")
            }
            (None, Some(_)) => {
                bail!("LIVEKIT_API_SECRET is set but LIVEKIT_API_KEY is not: set both, or neither")
            }
        };
        let livekit_socket_url = var("LIVEKIT_SOCKET_URL").or(file.compat_livekit_socket_url);
        if let Some(url) = &livekit_socket_url {
            let parsed = url::Url::parse(url)
                .with_context(|| format!("LIVEKIT_SOCKET_URL: {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "ws" | "wss" | "http" | "https") {
                bail!("LIVEKIT_SOCKET_URL must be a ws://, wss://, http:// or https:// URL");
            }
        }
        let bbb_token = var("CONVENE_COMPAT_BBB_TOKEN").or(file.compat_bbb_token);
        if bbb_token.as_ref().is_some_and(|t| t.len() > 256) {
            bail!("CONVENE_COMPAT_BBB_TOKEN must be at most 256 bytes");
        }
        if bbb_token
            .as_ref()
            .is_some_and(|t| axum::http::HeaderValue::from_str(t).is_err())
        {
            bail!("CONVENE_COMPAT_BBB_TOKEN must be text a client can send in a header");
        }
        let compat = convene_compat::CompatConfig {
            live_passcode,
            livekit_api,
            livekit_socket_url,
            bbb_token,
        };
        let smtp = match (
            var("CONVENE_SMTP_URL").or(file.smtp_url),
            var("CONVENE_SMTP_FROM").or(file.smtp_from),
        ) {
            (Some(url), Some(from)) => {
                let smtp = crate::mail::SmtpConfig { url, from };
                smtp.validate()?;
                Some(smtp)
            }
            (None, None) => None,
            (Some(_), None) => bail!(
                "CONVENE_SMTP_URL is set but CONVENE_SMTP_FROM is not: set the sender address too"
            ),
            (None, Some(_)) => bail!(
                "CONVENE_SMTP_FROM is set but CONVENE_SMTP_URL is not: set the SMTP server too"
            ),
        };
        let rtc_udp_port = match var("CONVENE_RTC_UDP_PORT") {
            Some(text) => text
                .trim()
                .parse::<u16>()
                .with_context(|| format!("CONVENE_RTC_UDP_PORT: {text:?} is not a port number"))?,
            None => file.rtc_udp_port.unwrap_or(7882),
        };
        let rtc_tcp_port = match var("CONVENE_RTC_TCP_PORT") {
            Some(text) => text
                .trim()
                .parse::<u16>()
                .with_context(|| format!("CONVENE_RTC_TCP_PORT: {text:?} is not a port number"))?,
            None => file.rtc_tcp_port.unwrap_or(7881),
        };
        let rtc_node_ips = match var("CONVENE_RTC_NODE_IP").or(file.rtc_node_ip) {
            Some(list) => comma_list(&list)
                .map(|ip| {
                    ip.parse().with_context(|| {
                        format!("CONVENE_RTC_NODE_IP: {ip:?} is not an IP address")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let rtc_subscriber_bwe = match var("CONVENE_RTC_SUBSCRIBER_BWE") {
            Some(text) => match text.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => bail!("CONVENE_RTC_SUBSCRIBER_BWE: {text:?} is not true or false"),
            },
            None => file.rtc_subscriber_bwe.unwrap_or(false),
        };
        let rtc_threads = number(
            "CONVENE_RTC_THREADS",
            var("CONVENE_RTC_THREADS"),
            file.rtc_threads,
            1..=1024,
            convene_sfu::default_threads(),
        )?;
        let rtc_reconnect_grace = std::time::Duration::from_millis(number(
            "CONVENE_RTC_RECONNECT_GRACE_MS",
            var("CONVENE_RTC_RECONNECT_GRACE_MS"),
            file.rtc_reconnect_grace_ms,
            100..=60_000,
            crate::media::RECONNECT_GRACE.as_millis() as u64,
        )?);
        let defaults = convene_api::RateLimits::default();
        let rate_limits = convene_api::RateLimits {
            per_address: number(
                "CONVENE_RATE_LIMIT_PER_ADDRESS",
                var("CONVENE_RATE_LIMIT_PER_ADDRESS"),
                file.rate_limit_per_address,
                1..=1_000_000,
                defaults.per_address,
            )?,
            burst: number(
                "CONVENE_RATE_LIMIT_BURST",
                var("CONVENE_RATE_LIMIT_BURST"),
                file.rate_limit_burst,
                1..=1_000_000,
                defaults.burst,
            )?,
            global: number(
                "CONVENE_RATE_LIMIT_GLOBAL",
                var("CONVENE_RATE_LIMIT_GLOBAL"),
                file.rate_limit_global,
                1..=10_000_000,
                defaults.global,
            )?,
        };
        let guess_defaults = convene_core::lockout::GuessLimits::default();
        let guess_limits = convene_core::lockout::GuessLimits {
            per_address: number(
                "CONVENE_RATE_LIMIT_GUESSES_PER_ADDRESS",
                var("CONVENE_RATE_LIMIT_GUESSES_PER_ADDRESS"),
                file.rate_limit_guesses_per_address,
                1..=100_000,
                guess_defaults.per_address,
            )?,
            address_window: std::time::Duration::from_secs(number(
                "CONVENE_RATE_LIMIT_GUESS_WINDOW_SECONDS",
                var("CONVENE_RATE_LIMIT_GUESS_WINDOW_SECONDS"),
                file.rate_limit_guess_window_seconds,
                1..=86_400,
                guess_defaults.address_window.as_secs(),
            )?),
            per_meeting: number(
                "CONVENE_RATE_LIMIT_GUESSES_PER_MEETING",
                var("CONVENE_RATE_LIMIT_GUESSES_PER_MEETING"),
                file.rate_limit_guesses_per_meeting,
                1..=100_000,
                guess_defaults.per_meeting,
            )?,
        };
        let turn = turn_from_layers(
            var("CONVENE_TURN_URLS").or(file.turn_urls),
            match (var("CONVENE_TURN_SECRET"), var("CONVENE_TURN_SECRET_FILE")) {
                (None, None) => (file.turn_secret, file.turn_secret_file),
                (secret, path) => (secret, path.map(PathBuf::from)),
            },
            var("CONVENE_TURN_TTL_SECONDS"),
            file.turn_ttl_seconds,
        )?;
        let trusted_proxies = match var("CONVENE_TRUSTED_PROXIES").or(file.trusted_proxies) {
            Some(list) => comma_list(&list)
                .map(|entry| {
                    entry
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "CONVENE_TRUSTED_PROXIES: {entry:?} is not an IP address or CIDR range"
                            )
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let webhook_urls = match var("CONVENE_WEBHOOK_URLS").or(file.webhook_urls) {
            Some(list) => comma_list(&list)
                .map(|url| {
                    convene_core::webhook::WebhookUrl::parse(url)
                        .map_err(|e| anyhow::anyhow!("CONVENE_WEBHOOK_URLS: {url:?} {}", e.reason))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let webhooks = WebhookConfig {
            urls: webhook_urls,
            retry: convene_core::webhook::RetryPolicy {
                max_attempts: number(
                    "CONVENE_WEBHOOK_MAX_ATTEMPTS",
                    var("CONVENE_WEBHOOK_MAX_ATTEMPTS"),
                    file.webhook_max_attempts,
                    1..=100,
                    10,
                )?,
                first_delay: std::time::Duration::from_millis(number(
                    "CONVENE_WEBHOOK_FIRST_RETRY_MS",
                    var("CONVENE_WEBHOOK_FIRST_RETRY_MS"),
                    file.webhook_first_retry_ms,
                    10..=3_600_000,
                    1000,
                )?),
                max_delay: std::time::Duration::from_secs(300),
            },
            timeout: std::time::Duration::from_millis(number(
                "CONVENE_WEBHOOK_TIMEOUT_MS",
                var("CONVENE_WEBHOOK_TIMEOUT_MS"),
                file.webhook_timeout_ms,
                100..=120_000,
                10_000,
            )?),
        };
        let recording_url = match var("CONVENE_RECORDING_URL").or(file.recording_url) {
            Some(url) => {
                if !(url.starts_with("file:///") || url.starts_with("s3://")) {
                    bail!(
                        "CONVENE_RECORDING_URL must be a file:///absolute/dir or s3://bucket[/prefix] URL"
                    );
                }
                url
            }
            None => {
                let dir = data_dir.join("recordings");
                let dir = std::path::absolute(&dir).unwrap_or(dir);
                format!("file://{}", dir.display())
            }
        };
        let ffmpeg = var("CONVENE_FFMPEG")
            .or(file.ffmpeg)
            .unwrap_or_else(|| "ffmpeg".to_owned());
        let livekit = ExternalLiveKit::from_layers(
            var("CONVENE_LIVEKIT_URL").or(file.livekit_url),
            var("CONVENE_LIVEKIT_WS_URL").or(file.livekit_ws_url),
            var("CONVENE_LIVEKIT_API_KEY").or(file.livekit_api_key),
            var("CONVENE_LIVEKIT_API_SECRET").or(file.livekit_api_secret),
            var("CONVENE_LIVEKIT_API_SECRET_FILE")
                .map(PathBuf::from)
                .or(file.livekit_api_secret_file),
        )?;
        Ok(Self {
            http_addr,
            metrics_addr,
            connections,
            public_url,
            data_dir,
            database_url,
            api_key,
            meeting_id_digits,
            compat,
            rtc_udp_port,
            rtc_tcp_port,
            rtc_node_ips,
            rtc_reconnect_grace,
            rate_limits,
            guess_limits,
            turn,
            rtc_subscriber_bwe,
            rtc_threads,
            trusted_proxies,
            webhooks,
            livekit,
            smtp,
            recording_url,
            ffmpeg,
        })
    }

    /// Settings that are valid but do nothing in this deployment, to be logged at start.
    pub fn warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.livekit.is_some() && self.turn.is_some() {
            warnings.push(
                "CONVENE_TURN_* apply to the embedded SFU only and are ignored with CONVENE_LIVEKIT_URL: configure TURN in the LiveKit deployment",
            );
        }
        warnings
    }

    /// Whether media runs on an external LiveKit deployment.
    pub fn external_media(&self) -> bool {
        self.livekit.is_some()
    }

    /// Where the store is: the PostgreSQL URL, or the SQLite file under the data directory.
    pub fn store_target(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join("convene.db").display().to_string(),
        }
    }

    /// The LiveKit signalling URL clients connect to: the external deployment's when one is
    /// configured, else ws:// or wss:// on the public URL (the embedded SFU).
    pub fn rtc_url(&self) -> String {
        if let Some(livekit) = &self.livekit {
            livekit.ws_url.clone()
        } else if let Some(rest) = self.public_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.public_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.public_url.clone()
        }
    }
}

impl ExternalLiveKit {
    /// Validates the `CONVENE_LIVEKIT_*` settings; `None` when no URL is set (and nothing else is).
    fn from_layers(
        url: Option<String>,
        ws_url: Option<String>,
        key: Option<String>,
        secret: Option<String>,
        secret_file: Option<PathBuf>,
    ) -> anyhow::Result<Option<Self>> {
        let secret = match (secret, secret_file) {
            (Some(secret), _) => Some(secret),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "cannot read CONVENE_LIVEKIT_API_SECRET_FILE {}",
                            path.display()
                        )
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let Some(url) = url else {
            if ws_url.is_some() || key.is_some() || secret.is_some() {
                bail!(
                    "CONVENE_LIVEKIT_WS_URL / CONVENE_LIVEKIT_API_KEY / CONVENE_LIVEKIT_API_SECRET need CONVENE_LIVEKIT_URL (the LiveKit server's API URL)"
                );
            }
            return Ok(None);
        };
        let api_url = url::Url::parse(url.trim())
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
            .with_context(|| format!("CONVENE_LIVEKIT_URL: {url:?} is not an http:// or https:// URL (the LiveKit server's API URL)"))?;
        let ws_url = match ws_url {
            Some(ws) => {
                let parsed = url::Url::parse(ws.trim())
                    .ok()
                    .filter(|u| {
                        matches!(u.scheme(), "ws" | "wss")
                            && u.host_str().is_some_and(|h| !h.is_empty())
                    })
                    .with_context(|| {
                        format!("CONVENE_LIVEKIT_WS_URL: {ws:?} is not a ws:// or wss:// URL")
                    })?;
                parsed.as_str().trim_end_matches('/').to_owned()
            }
            None => {
                let base = api_url.as_str().trim_end_matches('/');
                match base.strip_prefix("https://") {
                    Some(rest) => format!("wss://{rest}"),
                    None => format!("ws://{}", base.strip_prefix("http://").unwrap_or(base)),
                }
            }
        };
        let key = match (key, secret) {
            (Some(key), Some(secret)) => {
                let secret = ApiSecret::parse(&secret)
                    .map_err(|e| anyhow::anyhow!("CONVENE_LIVEKIT_API_SECRET {}", e.reason))?;
                if key.is_empty()
                    || key.len() > 128
                    || key.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    bail!(
                        "CONVENE_LIVEKIT_API_KEY must be 1 to 128 printable characters without spaces"
                    );
                }
                Some((key, secret))
            }
            (None, None) => None,
            (Some(_), None) => bail!(
                "CONVENE_LIVEKIT_API_KEY is set but CONVENE_LIVEKIT_API_SECRET is not: set both, or neither"
            ),
            (None, Some(_)) => bail!(
                "CONVENE_LIVEKIT_API_SECRET is set but CONVENE_LIVEKIT_API_KEY is not: set both, or neither"
            ),
        };
        Ok(Some(Self {
            api_url,
            ws_url,
            key,
        }))
    }
}

/// Validates the `CONVENE_TURN_*` settings; `None` when none is set. `secret` is the one layer
/// (environment, else file) that names a secret: the value and the file's path.
fn turn_from_layers(
    urls: Option<String>,
    secret: (Option<String>, Option<PathBuf>),
    ttl_env: Option<String>,
    ttl_file: Option<u64>,
) -> anyhow::Result<Option<convene_sfu::TurnConfig>> {
    use convene_sfu::{TurnConfig, TurnSecret, TurnUrl};
    let secret = match secret {
        (Some(_), Some(_)) => {
            bail!("CONVENE_TURN_SECRET and CONVENE_TURN_SECRET_FILE are both set: set one of them")
        }
        (Some(secret), None) => Some(
            TurnSecret::parse(&secret).map_err(|e| anyhow::anyhow!("CONVENE_TURN_SECRET {e}"))?,
        ),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read CONVENE_TURN_SECRET_FILE {}", path.display())
            })?;
            Some(
                TurnSecret::parse(text.trim_end_matches(['\n', '\r'])).map_err(|e| {
                    anyhow::anyhow!(
                        "CONVENE_TURN_SECRET_FILE {}: the secret in it {e}",
                        path.display()
                    )
                })?,
            )
        }
        (None, None) => None,
    };
    let urls = match urls {
        Some(list) => comma_list(&list)
            .map(|url| {
                TurnUrl::parse(url).map_err(|e| anyhow::anyhow!("CONVENE_TURN_URLS: {url:?} {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let ttl = number(
        "CONVENE_TURN_TTL_SECONDS",
        ttl_env.clone(),
        ttl_file,
        TurnConfig::TTL_SECS,
        TurnConfig::DEFAULT_TTL_SECS,
    )?;
    match (urls.is_empty(), secret) {
        (false, Some(secret)) => Ok(Some(
            TurnConfig::new(urls, secret, ttl).map_err(|e| anyhow::anyhow!("TURN: {e}"))?,
        )),
        (false, None) => bail!(
            "CONVENE_TURN_URLS is set but CONVENE_TURN_SECRET (or CONVENE_TURN_SECRET_FILE) is not: the TURN server's credentials are made with it"
        ),
        (true, Some(_)) => bail!(
            "CONVENE_TURN_SECRET is set but CONVENE_TURN_URLS is not: name the TURN servers too"
        ),
        (true, None) if ttl_env.is_some() || ttl_file.is_some() => {
            bail!("CONVENE_TURN_TTL_SECONDS is set but CONVENE_TURN_URLS is not")
        }
        (true, None) => Ok(None),
    }
}

/// The non-empty, trimmed entries of a comma-separated setting.
fn comma_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_without_file_or_env() {
        let c = Config::from_layers(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:7880");
        assert_eq!(c.public_url, "http://127.0.0.1:7880");
        assert_eq!(c.rtc_url(), "ws://127.0.0.1:7880");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.meeting_id_digits, MeetingIdDigits::DEFAULT);
        assert!(c.api_key.is_none() && c.database_url.is_none());
    }

    #[test]
    fn the_metrics_address_is_optional_and_checked() {
        let c = Config::from_layers(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!(c.metrics_addr, None);
        let file: FileConfig = toml::from_str("metrics_addr = \"127.0.0.1:9100\"\n").unwrap();
        let c = Config::from_layers(file, &env(&[])).unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        let error = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_METRICS_ADDR", "localhost")]),
        )
        .err()
        .unwrap();
        assert!(
            format!("{error:#}").contains("CONVENE_METRICS_ADDR"),
            "{error:#}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let file: FileConfig =
            toml::from_str("http_addr = \"0.0.0.0:9000\"\nmeeting_id_digits = 8\n").unwrap();
        let c = Config::from_layers(file, &env(&[("MEETING_ID_DIGITS", "6")])).unwrap();
        assert_eq!(c.http_addr.port(), 9000);
        assert_eq!(c.meeting_id_digits.get(), 6);
        assert_eq!(c.public_url, "http://127.0.0.1:9000");
    }

    #[test]
    fn short_secrets_refuse_to_start_with_a_clear_message() {
        let err = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_API_KEY", "APIkey1"),
                ("CONVENE_API_SECRET", "short"),
            ]),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "CONVENE_API_SECRET must be at least 32 bytes (got 5)"
        );
        let half = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_API_KEY", "APIkey1")]),
        )
        .err()
        .unwrap();
        assert!(half.to_string().contains("set both"));
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::from_layers(FileConfig::default(), &env(&[("MEETING_ID_DIGITS", "40")]))
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("MEETING_ID_DIGITS"));
        let err = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_DATABASE_URL", "mysql://x")]),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("postgres://"));
        assert!(toml::from_str::<FileConfig>("unknown_key = 1").is_err());
    }

    #[test]
    fn the_media_tcp_port_defaults_to_livekits_and_is_checked() {
        let c = Config::from_layers(FileConfig::default(), &env(&[])).unwrap();
        assert_eq!((c.rtc_udp_port, c.rtc_tcp_port), (7882, 7881));
        let file: FileConfig = toml::from_str("rtc_tcp_port = 443").unwrap();
        assert_eq!(
            Config::from_layers(file, &env(&[])).unwrap().rtc_tcp_port,
            443
        );
        let file: FileConfig = toml::from_str("rtc_tcp_port = 443").unwrap();
        let c = Config::from_layers(file, &env(&[("CONVENE_RTC_TCP_PORT", "0")])).unwrap();
        assert_eq!(c.rtc_tcp_port, 0);
        for bad in ["70000", "tcp", "-1", "7881x"] {
            let err = Config::from_layers(
                FileConfig::default(),
                &env(&[("CONVENE_RTC_TCP_PORT", bad)]),
            )
            .err()
            .unwrap();
            assert_eq!(
                err.to_string(),
                format!("CONVENE_RTC_TCP_PORT: {bad:?} is not a port number")
            );
        }
        assert!(toml::from_str::<FileConfig>("rtc_tcp_port = 70000").is_err());
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8,::1,")]),
        )
        .unwrap();
        let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, vec!["127.0.0.1/32", "10.0.0.0/8", "::1/128"]);
        let none = Config::from_layers(FileConfig::default(), &env(&[])).unwrap();
        assert!(none.trusted_proxies.is_empty());
        let file: FileConfig = toml::from_str("trusted_proxies = \"192.168.0.0/16\"").unwrap();
        let from_file = Config::from_layers(file, &env(&[])).unwrap();
        assert_eq!(from_file.trusted_proxies[0].to_string(), "192.168.0.0/16");
        let err = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_TRUSTED_PROXIES", "10.0.0.0/8, proxy.local")]),
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "CONVENE_TRUSTED_PROXIES: \"proxy.local\" is not an IP address or CIDR range"
        );
    }

    #[test]
    fn webhook_settings_are_read_and_checked() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                (
                    "CONVENE_WEBHOOK_URLS",
                    "https://a.example/hook, http://127.0.0.1:9/x,",
                ),
                ("CONVENE_WEBHOOK_MAX_ATTEMPTS", "3"),
                ("CONVENE_WEBHOOK_FIRST_RETRY_MS", "200"),
            ]),
        )
        .unwrap();
        let urls: Vec<&str> = c.webhooks.urls.iter().map(|u| u.as_str()).collect();
        assert_eq!(urls, vec!["https://a.example/hook", "http://127.0.0.1:9/x"]);
        assert_eq!(c.webhooks.retry.max_attempts, 3);
        assert_eq!(c.webhooks.retry.first_delay.as_millis(), 200);
        assert_eq!(c.webhooks.timeout.as_secs(), 10);
        let defaults = Config::from_layers(FileConfig::default(), &env(&[]))
            .unwrap()
            .webhooks;
        assert_eq!(defaults, WebhookConfig::default());
        let bad = |k: &str, v: &str| {
            Config::from_layers(FileConfig::default(), &env(&[(k, v)]))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(
            bad("CONVENE_WEBHOOK_URLS", "ftp://x/")
                .starts_with("CONVENE_WEBHOOK_URLS: \"ftp://x/\"")
        );
        assert_eq!(
            bad("CONVENE_WEBHOOK_MAX_ATTEMPTS", "0"),
            "CONVENE_WEBHOOK_MAX_ATTEMPTS must be 1 to 100 (got 0)"
        );
        assert!(bad("CONVENE_WEBHOOK_TIMEOUT_MS", "soon").contains("not a whole number"));
    }

    #[test]
    fn connection_deadlines_and_the_address_cap_are_read_and_checked() {
        let defaults = Config::from_layers(FileConfig::default(), &env(&[]))
            .unwrap()
            .connections;
        assert_eq!(defaults, convene_api::server::ConnectionRules::default());
        assert_eq!(
            (
                defaults.header_timeout.as_secs(),
                defaults.idle_timeout.as_secs(),
                defaults.body_timeout.as_secs(),
                defaults.max_per_address
            ),
            (10, 60, 30, 512)
        );
        let file: FileConfig =
            toml::from_str("http_idle_timeout_seconds = 120\nhttp_body_timeout_seconds = 5\n")
                .unwrap();
        let c = Config::from_layers(
            file,
            &env(&[
                ("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "2"),
                ("CONVENE_HTTP_BODY_TIMEOUT_SECONDS", "7"),
                ("CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "64"),
            ]),
        )
        .unwrap()
        .connections;
        assert_eq!(c.header_timeout.as_secs(), 2);
        assert_eq!(c.idle_timeout.as_secs(), 120);
        assert_eq!(c.body_timeout.as_secs(), 7);
        assert_eq!(c.max_per_address, 64);
        let bad = |k: &str, v: &str| {
            Config::from_layers(FileConfig::default(), &env(&[(k, v)]))
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            bad("CONVENE_HTTP_HEADER_TIMEOUT_SECONDS", "0"),
            "CONVENE_HTTP_HEADER_TIMEOUT_SECONDS must be 1 to 3600 (got 0)"
        );
        assert_eq!(
            bad("CONVENE_HTTP_IDLE_TIMEOUT_SECONDS", "86401"),
            "CONVENE_HTTP_IDLE_TIMEOUT_SECONDS must be 1 to 86400 (got 86401)"
        );
        assert!(bad("CONVENE_HTTP_BODY_TIMEOUT_SECONDS", "1.5").contains("not a whole number"));
        assert_eq!(
            bad("CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "0"),
            "CONVENE_HTTP_MAX_CONNECTIONS_PER_ADDRESS must be 1 to 1000000 (got 0)"
        );
    }

    #[test]
    fn the_reconnect_grace_is_read_and_checked() {
        let grace = |pairs: &[(&str, &str)], file: FileConfig| {
            Config::from_layers(file, &env(pairs)).map(|c| c.rtc_reconnect_grace)
        };
        assert_eq!(
            grace(&[], FileConfig::default()).unwrap(),
            std::time::Duration::from_secs(5)
        );
        let file = FileConfig {
            rtc_reconnect_grace_ms: Some(8000),
            ..FileConfig::default()
        };
        assert_eq!(grace(&[], file).unwrap().as_millis(), 8000);
        assert_eq!(
            grace(
                &[("CONVENE_RTC_RECONNECT_GRACE_MS", "250")],
                FileConfig::default()
            )
            .unwrap()
            .as_millis(),
            250
        );
        let error = grace(
            &[("CONVENE_RTC_RECONNECT_GRACE_MS", "0")],
            FileConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "CONVENE_RTC_RECONNECT_GRACE_MS must be 100 to 60000 (got 0)"
        );
    }

    #[test]
    fn the_rate_limits_are_read_and_checked() {
        let limits = |pairs: &[(&str, &str)], file: FileConfig| {
            Config::from_layers(file, &env(pairs)).map(|c| c.rate_limits)
        };
        assert_eq!(
            limits(&[], FileConfig::default()).unwrap(),
            convene_api::RateLimits::default()
        );
        let file = FileConfig {
            rate_limit_burst: Some(50),
            rate_limit_global: Some(900),
            ..FileConfig::default()
        };
        let read = limits(&[("CONVENE_RATE_LIMIT_PER_ADDRESS", "7")], file).unwrap();
        assert_eq!(
            read,
            convene_api::RateLimits {
                per_address: 7,
                burst: 50,
                global: 900
            }
        );
        for (name, value, error) in [
            (
                "CONVENE_RATE_LIMIT_PER_ADDRESS",
                "0",
                "must be 1 to 1000000 (got 0)",
            ),
            (
                "CONVENE_RATE_LIMIT_BURST",
                "-3",
                "\"-3\" is not a whole number",
            ),
            (
                "CONVENE_RATE_LIMIT_GLOBAL",
                "lots",
                "\"lots\" is not a whole number",
            ),
        ] {
            let got = limits(&[(name, value)], FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(got.starts_with(name) && got.ends_with(error), "{got}");
        }
    }

    #[test]
    fn the_guessing_limits_are_read_and_checked() {
        use convene_core::lockout::GuessLimits;
        let limits = |pairs: &[(&str, &str)], file: FileConfig| {
            Config::from_layers(file, &env(pairs)).map(|c| c.guess_limits)
        };
        assert_eq!(
            limits(&[], FileConfig::default()).unwrap(),
            GuessLimits::default()
        );
        let file = FileConfig {
            rate_limit_guess_window_seconds: Some(60),
            ..FileConfig::default()
        };
        let read = limits(
            &[
                ("CONVENE_RATE_LIMIT_GUESSES_PER_ADDRESS", "5"),
                ("CONVENE_RATE_LIMIT_GUESSES_PER_MEETING", "12"),
            ],
            file,
        )
        .unwrap();
        assert_eq!(
            read,
            GuessLimits {
                per_meeting: 12,
                per_address: 5,
                address_window: std::time::Duration::from_secs(60)
            }
        );
        for (name, value, error) in [
            (
                "CONVENE_RATE_LIMIT_GUESSES_PER_ADDRESS",
                "0",
                "must be 1 to 100000 (got 0)",
            ),
            (
                "CONVENE_RATE_LIMIT_GUESS_WINDOW_SECONDS",
                "86401",
                "must be 1 to 86400 (got 86401)",
            ),
            (
                "CONVENE_RATE_LIMIT_GUESSES_PER_MEETING",
                "many",
                "\"many\" is not a whole number",
            ),
        ] {
            let got = limits(&[(name, value)], FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(got.starts_with(name) && got.ends_with(error), "{got}");
        }
    }

    #[test]
    fn media_threads_default_to_the_cores_and_are_checked() {
        let threads = |pairs: &[(&str, &str)], file: FileConfig| {
            Config::from_layers(file, &env(pairs)).map(|c| c.rtc_threads)
        };
        assert_eq!(
            threads(&[], FileConfig::default()).unwrap(),
            convene_sfu::default_threads()
        );
        let file = || FileConfig {
            rtc_threads: Some(3),
            ..FileConfig::default()
        };
        assert_eq!(threads(&[], file()).unwrap(), 3);
        assert_eq!(
            threads(&[("CONVENE_RTC_THREADS", "1")], file()).unwrap(),
            1,
            "the environment wins over the file"
        );
        for (bad, error) in [
            ("0", "CONVENE_RTC_THREADS must be 1 to 1024 (got 0)"),
            ("1025", "CONVENE_RTC_THREADS must be 1 to 1024 (got 1025)"),
            ("two", "CONVENE_RTC_THREADS: \"two\" is not a whole number"),
        ] {
            let got = threads(&[("CONVENE_RTC_THREADS", bad)], FileConfig::default())
                .unwrap_err()
                .to_string();
            assert_eq!(got, error);
        }
    }

    #[test]
    fn subscriber_bandwidth_estimation_is_off_unless_asked_for() {
        let bwe = |pairs: &[(&str, &str)], file: FileConfig| {
            Config::from_layers(file, &env(pairs)).map(|c| c.rtc_subscriber_bwe)
        };
        assert!(!bwe(&[], FileConfig::default()).unwrap());
        let file = FileConfig {
            rtc_subscriber_bwe: Some(true),
            ..FileConfig::default()
        };
        assert!(bwe(&[], file).unwrap());
        assert!(
            bwe(
                &[("CONVENE_RTC_SUBSCRIBER_BWE", "true")],
                FileConfig::default()
            )
            .unwrap()
        );
        let error = bwe(
            &[("CONVENE_RTC_SUBSCRIBER_BWE", "yes")],
            FileConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "CONVENE_RTC_SUBSCRIBER_BWE: \"yes\" is not true or false"
        );
    }

    #[test]
    fn smtp_and_external_livekit_settings_are_checked() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_SMTP_URL", "smtp://mailer:pw-0123@127.0.0.1:2525"),
                ("CONVENE_SMTP_FROM", "convene <noreply@example.com>"),
                ("LIVEKIT_API_KEY", "APIexternal"),
                (
                    "LIVEKIT_API_SECRET",
                    "external-livekit-secret-0123456789-abcdef",
                ),
                ("LIVEKIT_SOCKET_URL", "wss://media.example.com"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.smtp.as_ref().unwrap().from,
            "convene <noreply@example.com>"
        );
        assert_eq!(c.compat.livekit_api.as_ref().unwrap().0, "APIexternal");
        assert_eq!(
            c.compat.livekit_socket_url.as_deref(),
            Some("wss://media.example.com")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw-0123") && !shown.contains("external-livekit-secret"),
            "{shown}"
        );

        let half = |pairs: &[(&str, &str)]| {
            Config::from_layers(FileConfig::default(), &env(pairs))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(
            half(&[("CONVENE_SMTP_URL", "smtp://127.0.0.1:2525")]).contains("CONVENE_SMTP_FROM")
        );
        assert!(
            half(&[
                ("CONVENE_SMTP_URL", "imap://x"),
                ("CONVENE_SMTP_FROM", "a@example.com")
            ])
            .contains("smtp://")
        );
        assert!(half(&[("LIVEKIT_API_KEY", "APIx")]).contains("set both"));
        assert!(
            half(&[("LIVEKIT_API_KEY", "APIx"), ("LIVEKIT_API_SECRET", "short")])
                .starts_with("LIVEKIT_API_SECRET must be at least 32 bytes")
        );
        assert!(half(&[("LIVEKIT_SOCKET_URL", "ftp://x")]).contains("LIVEKIT_SOCKET_URL"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_API_KEY", "APIkey1"),
                (
                    "CONVENE_API_SECRET",
                    "a-secret-that-is-long-enough-0123456789",
                ),
                ("CONVENE_DATABASE_URL", "postgres://u:pw@h/db"),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("a-secret") && !shown.contains("pw@"));
    }

    #[test]
    fn external_livekit_is_off_by_default_and_derives_the_signalling_url() {
        let c = Config::from_layers(FileConfig::default(), &env(&[])).unwrap();
        assert!(c.livekit.is_none() && !c.external_media());
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_LIVEKIT_URL", "https://lk.example.com/")]),
        )
        .unwrap();
        let lk = c.livekit.unwrap();
        assert_eq!(lk.api_url.as_str(), "https://lk.example.com/");
        assert_eq!(lk.ws_url, "wss://lk.example.com");
        assert!(lk.key.is_none());
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[("CONVENE_LIVEKIT_URL", "http://10.0.0.5:7880")]),
        )
        .unwrap();
        assert_eq!(c.livekit.unwrap().ws_url, "ws://10.0.0.5:7880");
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_LIVEKIT_URL", "http://livekit:7880"),
                ("CONVENE_LIVEKIT_WS_URL", "wss://media.example.com"),
                ("CONVENE_LIVEKIT_API_KEY", "lkkey"),
                (
                    "CONVENE_LIVEKIT_API_SECRET",
                    "a-livekit-secret-that-is-long-enough-0123",
                ),
            ]),
        )
        .unwrap();
        let lk = c.livekit.unwrap();
        assert_eq!(lk.ws_url, "wss://media.example.com");
        assert_eq!(lk.key.as_ref().map(|(id, _)| id.as_str()), Some("lkkey"));
    }

    #[test]
    fn bad_external_livekit_settings_are_clear_startup_errors() {
        let err = |pairs: &[(&str, &str)]| {
            Config::from_layers(FileConfig::default(), &env(pairs))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(
            err(&[("CONVENE_LIVEKIT_URL", "not a url")]).starts_with(
                "CONVENE_LIVEKIT_URL: \"not a url\" is not an http:// or https:// URL"
            )
        );
        assert!(err(&[("CONVENE_LIVEKIT_URL", "ws://lk:7880")]).starts_with("CONVENE_LIVEKIT_URL"));
        assert!(
            err(&[
                ("CONVENE_LIVEKIT_URL", "http://lk"),
                ("CONVENE_LIVEKIT_WS_URL", "http://lk")
            ])
            .starts_with("CONVENE_LIVEKIT_WS_URL")
        );
        assert!(err(&[("CONVENE_LIVEKIT_API_KEY", "k")]).contains("need CONVENE_LIVEKIT_URL"));
        assert!(
            err(&[
                ("CONVENE_LIVEKIT_URL", "http://lk"),
                ("CONVENE_LIVEKIT_API_KEY", "k")
            ])
            .contains("set both")
        );
        assert_eq!(
            err(&[
                ("CONVENE_LIVEKIT_URL", "http://lk"),
                ("CONVENE_LIVEKIT_API_KEY", "k"),
                ("CONVENE_LIVEKIT_API_SECRET", "short")
            ]),
            "CONVENE_LIVEKIT_API_SECRET must be at least 32 bytes (got 5)"
        );
    }

    #[test]
    fn debug_output_hides_the_livekit_secret() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_LIVEKIT_URL", "http://lk"),
                ("CONVENE_LIVEKIT_API_KEY", "k"),
                (
                    "CONVENE_LIVEKIT_API_SECRET",
                    "a-livekit-secret-that-is-long-enough-0123",
                ),
            ]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("a-livekit-secret"));
    }

    const TURN_SECRET: &str = "turn-shared-secret-0123456789";

    #[test]
    fn turn_servers_are_read_from_the_environment_or_the_file() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                (
                    "CONVENE_TURN_URLS",
                    "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:443?transport=tcp,",
                ),
                ("CONVENE_TURN_SECRET", TURN_SECRET),
            ]),
        )
        .unwrap();
        let turn = c.turn.as_ref().unwrap();
        let urls: Vec<&str> = turn.urls().iter().map(|u| u.as_str()).collect();
        assert_eq!(
            urls,
            vec![
                "turn:turn.example.com:3478?transport=udp",
                "turns:turn.example.com:443?transport=tcp"
            ]
        );
        assert_eq!(turn.ttl_secs(), 86_400);
        let servers = turn.ice_servers("alice", 1_000);
        assert_eq!(servers[0].username, "87400:alice");
        assert!(c.warnings().is_empty());

        let file: FileConfig = toml::from_str(&format!(
            "turn_urls = \"turn:10.0.0.1\"\nturn_secret = \"{TURN_SECRET}\"\nturn_ttl_seconds = 3600\n"
        ))
        .unwrap();
        let turn = Config::from_layers(file, &env(&[])).unwrap().turn.unwrap();
        assert_eq!(turn.urls()[0].as_str(), "turn:10.0.0.1");
        assert_eq!(turn.ttl_secs(), 3600);
        assert!(
            Config::from_layers(FileConfig::default(), &env(&[]))
                .unwrap()
                .turn
                .is_none()
        );
    }

    #[test]
    fn the_turn_secret_can_come_from_a_file_but_not_from_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turn-secret");
        std::fs::write(&path, format!("{TURN_SECRET}\n")).unwrap();
        let path_text = path.display().to_string();
        let from_file = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET_FILE", &path_text),
            ]),
        )
        .unwrap()
        .turn
        .unwrap();
        let from_value = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET", TURN_SECRET),
            ]),
        )
        .unwrap()
        .turn
        .unwrap();
        // The trailing newline is not part of the secret: both make the same credentials.
        assert_eq!(
            from_file.ice_servers("a", 0),
            from_value.ice_servers("a", 0)
        );

        let err = |pairs: &[(&str, &str)]| {
            Config::from_layers(FileConfig::default(), &env(pairs))
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET", TURN_SECRET),
                ("CONVENE_TURN_SECRET_FILE", &path_text),
            ]),
            "CONVENE_TURN_SECRET and CONVENE_TURN_SECRET_FILE are both set: set one of them"
        );
        let missing = dir.path().join("absent").display().to_string();
        assert_eq!(
            err(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET_FILE", &missing),
            ]),
            format!("cannot read CONVENE_TURN_SECRET_FILE {missing}")
        );
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(
            err(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET_FILE", &path_text),
            ]),
            format!(
                "CONVENE_TURN_SECRET_FILE {path_text}: the secret in it must be 16 to 1024 bytes without spaces or control characters"
            )
        );
        // The environment's pair replaces the file's: a file secret and an environment file
        // are not "both".
        let file: FileConfig =
            toml::from_str("turn_secret = \"from-the-config-file-0123\"").unwrap();
        std::fs::write(&path, TURN_SECRET).unwrap();
        let layered = Config::from_layers(
            file,
            &env(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET_FILE", &path_text),
            ]),
        )
        .unwrap()
        .turn
        .unwrap();
        assert_eq!(layered.ice_servers("a", 0), from_value.ice_servers("a", 0));
    }

    #[test]
    fn bad_turn_settings_are_clear_startup_errors() {
        let err = |pairs: &[(&str, &str)]| {
            Config::from_layers(FileConfig::default(), &env(pairs))
                .err()
                .unwrap()
                .to_string()
        };
        let with_secret = |urls: &str| {
            err(&[
                ("CONVENE_TURN_URLS", urls),
                ("CONVENE_TURN_SECRET", TURN_SECRET),
            ])
        };
        assert_eq!(
            with_secret("turn:ok.example, stun:stun.example"),
            "CONVENE_TURN_URLS: \"stun:stun.example\" must start with turn: or turns: (as turn:turn.example.com:3478?transport=udp)"
        );
        assert_eq!(
            with_secret("turn:host:99999"),
            "CONVENE_TURN_URLS: \"turn:host:99999\" has a port that is not a number from 1 to 65535"
        );
        assert_eq!(
            with_secret("turn:host?transport=quic"),
            "CONVENE_TURN_URLS: \"turn:host?transport=quic\" may end only in ?transport=udp or ?transport=tcp"
        );
        assert_eq!(
            with_secret("turn://host"),
            "CONVENE_TURN_URLS: \"turn://host\" has no `//` after the scheme: write turn:host:port, not turn://host:port"
        );
        assert!(err(&[("CONVENE_TURN_URLS", "turn:t.example")]).starts_with(
            "CONVENE_TURN_URLS is set but CONVENE_TURN_SECRET (or CONVENE_TURN_SECRET_FILE) is not"
        ));
        assert!(
            err(&[("CONVENE_TURN_SECRET", TURN_SECRET)])
                .starts_with("CONVENE_TURN_SECRET is set but CONVENE_TURN_URLS is not")
        );
        assert!(
            err(&[
                ("CONVENE_TURN_URLS", " , "),
                ("CONVENE_TURN_SECRET", TURN_SECRET)
            ])
            .starts_with("CONVENE_TURN_SECRET is set but CONVENE_TURN_URLS is not")
        );
        assert_eq!(
            err(&[("CONVENE_TURN_TTL_SECONDS", "600")]),
            "CONVENE_TURN_TTL_SECONDS is set but CONVENE_TURN_URLS is not"
        );
        let ttl = |value: &str| {
            err(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET", TURN_SECRET),
                ("CONVENE_TURN_TTL_SECONDS", value),
            ])
        };
        assert_eq!(
            ttl("59"),
            "CONVENE_TURN_TTL_SECONDS must be 60 to 604800 (got 59)"
        );
        assert_eq!(
            ttl("604801"),
            "CONVENE_TURN_TTL_SECONDS must be 60 to 604800 (got 604801)"
        );
        assert!(ttl("a day").contains("not a whole number"));
        assert_eq!(
            err(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET", "too short"),
            ]),
            "CONVENE_TURN_SECRET must be 16 to 1024 bytes without spaces or control characters"
        );
    }

    #[test]
    fn the_turn_secret_never_shows_and_turn_with_livekit_is_warned_about() {
        let c = Config::from_layers(
            FileConfig::default(),
            &env(&[
                ("CONVENE_TURN_URLS", "turn:t.example"),
                ("CONVENE_TURN_SECRET", TURN_SECRET),
                ("CONVENE_LIVEKIT_URL", "http://lk"),
            ]),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains(TURN_SECRET), "{shown}");
        assert!(shown.contains("turn:t.example"), "{shown}");
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("embedded SFU only"));
    }
}
