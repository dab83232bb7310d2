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
    pub rtc_node_ip: Option<String>,
}

/// The validated configuration.
pub struct Config {
    pub http_addr: SocketAddr,
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
    /// Addresses advertised in SDP (servers behind 1:1 NAT); empty = local interface addresses.
    pub rtc_node_ips: Vec<std::net::IpAddr>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http_addr", &self.http_addr)
            .field("public_url", &self.public_url)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("api_key", &self.api_key.as_ref().map(|(id, _)| id))
            .field("meeting_id_digits", &self.meeting_id_digits)
            .field("compat", &self.compat)
            .field("rtc_udp_port", &self.rtc_udp_port)
            .field("rtc_node_ips", &self.rtc_node_ips)
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
        "CONVENE_RTC_NODE_IP",
        "comma-separated IPs to advertise to clients (1:1 NAT); default local addresses",
    ),
    (
        "CONVENE_COMPAT_LIVE_PASSCODE",
        "turns on the seed 001 live-stream surface with this passcode",
    ),
    (
        "CONVENE_COMPAT_BBB_TOKEN",
        "turns on the seed 003 BigBlueButton surface; clients send it as `Authorization`",
    ),
];

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
            bbb_token,
        };
        let rtc_udp_port = match var("CONVENE_RTC_UDP_PORT") {
            Some(text) => text
                .trim()
                .parse::<u16>()
                .with_context(|| format!("CONVENE_RTC_UDP_PORT: {text:?} is not a port number"))?,
            None => file.rtc_udp_port.unwrap_or(7882),
        };
        let rtc_node_ips = match var("CONVENE_RTC_NODE_IP").or(file.rtc_node_ip) {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|ip| {
                    ip.parse().with_context(|| {
                        format!("CONVENE_RTC_NODE_IP: {ip:?} is not an IP address")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            http_addr,
            public_url,
            data_dir,
            database_url,
            api_key,
            meeting_id_digits,
            compat,
            rtc_udp_port,
            rtc_node_ips,
        })
    }

    /// Where the store is: the PostgreSQL URL, or the SQLite file under the data directory.
    pub fn store_target(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => self.data_dir.join("convene.db").display().to_string(),
        }
    }

    /// The LiveKit signalling URL clients connect to (ws:// or wss:// on the public URL).
    pub fn rtc_url(&self) -> String {
        if let Some(rest) = self.public_url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.public_url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.public_url.clone()
        }
    }
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
}
