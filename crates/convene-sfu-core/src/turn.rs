//! TURN servers for the clients, as the JoinResponse's `ice_servers`, with time-limited
//! credentials in coturn's `use-auth-secret` scheme (the "TURN REST API",
//! draft-uberti-behave-turn-rest-00): the username is `<expiry unix seconds>:<identity>` and the
//! password base64(HMAC-SHA1(shared secret, username)). The TURN server knows only the secret;
//! it recomputes the password from the username and refuses it once the expiry has passed. Pure:
//! the time is a parameter.

use std::fmt;
use std::net::Ipv6Addr;
use std::ops::RangeInclusive;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use livekit_protocol as proto;
use sha1::Sha1;

/// Why a TURN setting was refused; the message reads after the setting's name and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    #[error("must start with turn: or turns: (as turn:turn.example.com:3478?transport=udp)")]
    Scheme,
    #[error("has no `//` after the scheme: write turn:host:port, not turn://host:port")]
    Slashes,
    #[error("has no valid host name or address")]
    Host,
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
    #[error("may end only in ?transport=udp or ?transport=tcp")]
    Transport,
    #[error("is turns: (TLS, over TCP) and cannot take ?transport=udp")]
    TlsOverUdp,
    #[error("must be {min} to {max} bytes without spaces or control characters", min = TurnSecret::LENGTH.start(), max = TurnSecret::LENGTH.end())]
    Secret,
    #[error("must be {min} to {max} seconds", min = TurnConfig::TTL_SECS.start(), max = TurnConfig::TTL_SECS.end())]
    Ttl,
    #[error("needs at least one turn: or turns: URL")]
    NoUrls,
}

/// A validated TURN server URL (RFC 7065): `turn:` or `turns:`, a host name, IPv4 address or
/// bracketed IPv6 address, an optional port and an optional `?transport=udp|tcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnUrl(String);

impl TurnUrl {
    pub fn parse(text: &str) -> Result<TurnUrl, TurnError> {
        let text = text.trim();
        let (scheme, rest) = text.split_once(':').ok_or(TurnError::Scheme)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "turn" && scheme != "turns" {
            return Err(TurnError::Scheme);
        }
        if rest.starts_with("//") {
            return Err(TurnError::Slashes);
        }
        let (authority, query) = match rest.split_once('?') {
            Some((authority, query)) => (authority, Some(query)),
            None => (rest, None),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (address, after) = bracketed.split_once(']').ok_or(TurnError::Host)?;
            address.parse::<Ipv6Addr>().map_err(|_| TurnError::Host)?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(TurnError::Port)?),
            };
            (&authority[..address.len() + 2], port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if !host.starts_with('[') && !is_host_name(host) {
            return Err(TurnError::Host);
        }
        if let Some(port) = port {
            // Digits only: u16's parser would take a leading `+`.
            if port.is_empty()
                || !port.bytes().all(|b| b.is_ascii_digit())
                || !port.parse::<u16>().is_ok_and(|p| p != 0)
            {
                return Err(TurnError::Port);
            }
        }
        let transport = match query {
            None => None,
            Some("transport=udp") => Some("udp"),
            Some("transport=tcp") => Some("tcp"),
            Some(_) => return Err(TurnError::Transport),
        };
        if scheme == "turns" && transport == Some("udp") {
            return Err(TurnError::TlsOverUdp);
        }
        let mut url = format!("{scheme}:{host}");
        if let Some(port) = port {
            url = format!("{url}:{port}");
        }
        if let Some(transport) = transport {
            url = format!("{url}?transport={transport}");
        }
        Ok(TurnUrl(url))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TurnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS name or an IPv4 address: dot-separated labels of letters, digits and hyphens.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The secret shared with the TURN server (coturn's `static-auth-secret`). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSecret(String);

impl TurnSecret {
    /// Its length in bytes. Short secrets could be guessed offline from one issued credential.
    pub const LENGTH: RangeInclusive<usize> = 16..=1024;

    /// Without spaces or control characters, since it is written the same in coturn's
    /// configuration file.
    pub fn parse(text: &str) -> Result<TurnSecret, TurnError> {
        if !Self::LENGTH.contains(&text.len())
            || text.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(TurnError::Secret);
        }
        Ok(TurnSecret(text.to_owned()))
    }
}

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(<redacted>)")
    }
}

/// A username and password for the TURN server.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The most bytes of an identity put in a username: STUN's USERNAME attribute must stay under
/// 513 bytes (RFC 8489, 14.3), and the expiry and its colon take at most 21.
pub const MAX_USERNAME_IDENTITY_BYTES: usize = 480;

/// The credential valid until `expires_unix_secs` for `identity`: username
/// `<expires_unix_secs>:<identity>` (an identity longer than [`MAX_USERNAME_IDENTITY_BYTES`] is
/// cut at a character boundary; the TURN server uses that part only in its logs), password
/// base64(HMAC-SHA1(secret, username)).
pub fn credential(secret: &TurnSecret, identity: &str, expires_unix_secs: u64) -> TurnCredential {
    let mut end = identity.len().min(MAX_USERNAME_IDENTITY_BYTES);
    while !identity.is_char_boundary(end) {
        end -= 1;
    }
    let username = format!("{expires_unix_secs}:{}", &identity[..end]);
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.0.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential { username, password }
}

/// The TURN servers handed to every joining client, and how long their credentials last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    urls: Vec<TurnUrl>,
    secret: TurnSecret,
    ttl_secs: u64,
}

impl TurnConfig {
    /// A day, as the TURN REST API draft suggests: credentials are checked again on every
    /// allocation refresh, so they must outlast the longest meeting.
    pub const DEFAULT_TTL_SECS: u64 = 86_400;
    /// From a minute to a week.
    pub const TTL_SECS: RangeInclusive<u64> = 60..=604_800;

    pub fn new(
        urls: Vec<TurnUrl>,
        secret: TurnSecret,
        ttl_secs: u64,
    ) -> Result<TurnConfig, TurnError> {
        if urls.is_empty() {
            return Err(TurnError::NoUrls);
        }
        if !Self::TTL_SECS.contains(&ttl_secs) {
            return Err(TurnError::Ttl);
        }
        Ok(TurnConfig {
            urls,
            secret,
            ttl_secs,
        })
    }

    pub fn urls(&self) -> &[TurnUrl] {
        &self.urls
    }

    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// The JoinResponse's `ice_servers` for `identity` joining at `now_unix_secs` (wall-clock
    /// time: the TURN server checks the expiry against its own clock): one server entry with
    /// every URL and one credential expiring `ttl` later.
    pub fn ice_servers(&self, identity: &str, now_unix_secs: u64) -> Vec<proto::IceServer> {
        let TurnCredential { username, password } = credential(
            &self.secret,
            identity,
            now_unix_secs.saturating_add(self.ttl_secs),
        );
        vec![proto::IceServer {
            urls: self.urls.iter().map(|u| u.0.clone()).collect(),
            username,
            credential: password,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "north-wind-turn-secret-0123";

    fn secret() -> TurnSecret {
        TurnSecret::parse(SECRET).unwrap()
    }

    #[test]
    fn credentials_match_an_independent_hmac_sha1() {
        // Computed apart from this code, with Python's standard library:
        //   base64.b64encode(hmac.new(b"north-wind-turn-secret-0123",
        //       b"1700086400:alice", hashlib.sha1).digest())
        let c = credential(&secret(), "alice", 1_700_086_400);
        assert_eq!(c.username, "1700086400:alice");
        assert_eq!(c.password, "ZY/WCj9A3szSBOkLAFirVQOP+Os=");
        // An identity with colons stays whole: coturn reads the expiry before the first one.
        let c = credential(&secret(), "bob:with:colons", 1_700_000_060);
        assert_eq!(c.username, "1700000060:bob:with:colons");
        assert_eq!(c.password, "WudubQYOpLblqe678/jRgiW79Lw=");
        // Another secret, another password.
        let other = TurnSecret::parse("another-turn-secret-4567").unwrap();
        assert_ne!(
            credential(&other, "alice", 1_700_086_400).password,
            c.password
        );
    }

    #[test]
    fn ice_servers_carry_every_url_and_a_credential_expiring_ttl_after_now() {
        let urls = vec![
            TurnUrl::parse("turn:turn.example.com:3478?transport=udp").unwrap(),
            TurnUrl::parse("turns:turn.example.com:443?transport=tcp").unwrap(),
        ];
        let config = TurnConfig::new(urls, secret(), 86_400).unwrap();
        let servers = config.ice_servers("alice", 1_700_000_000);
        assert_eq!(servers.len(), 1);
        assert_eq!(
            servers[0].urls,
            vec![
                "turn:turn.example.com:3478?transport=udp",
                "turns:turn.example.com:443?transport=tcp"
            ]
        );
        assert_eq!(servers[0].username, "1700086400:alice");
        assert_eq!(servers[0].credential, "ZY/WCj9A3szSBOkLAFirVQOP+Os=");
    }

    #[test]
    fn long_identities_are_cut_at_a_character_boundary_below_stuns_limit() {
        let identity = "é".repeat(400); // 800 bytes
        let c = credential(&secret(), &identity, 1_700_000_000);
        let (expiry, kept) = c.username.split_once(':').unwrap();
        assert_eq!(expiry, "1700000000");
        assert_eq!(kept.len(), MAX_USERNAME_IDENTITY_BYTES);
        assert!(identity.starts_with(kept));
        assert!(c.username.len() < 513);
        let odd = format!("a{}", "é".repeat(400)); // the limit falls inside a character
        let c = credential(&secret(), &odd, u64::MAX);
        assert!(c.username.len() < 513);
        assert_eq!(c.username.split_once(':').unwrap().1.len(), 479);
    }

    #[test]
    fn turn_urls_are_validated() {
        let ok = |text: &str| TurnUrl::parse(text).map(|u| u.to_string());
        assert_eq!(
            ok("turn:turn.example.com").unwrap(),
            "turn:turn.example.com"
        );
        assert_eq!(
            ok(" TURN:10.0.0.1:3478?transport=udp ").unwrap(),
            "turn:10.0.0.1:3478?transport=udp"
        );
        assert_eq!(
            ok("turns:[2001:db8::1]:443?transport=tcp").unwrap(),
            "turns:[2001:db8::1]:443?transport=tcp"
        );
        assert_eq!(ok("turn:[::1]").unwrap(), "turn:[::1]");
        assert_eq!(ok("stun:stun.example.com"), Err(TurnError::Scheme));
        assert_eq!(ok("https://turn.example.com"), Err(TurnError::Scheme));
        assert_eq!(ok("turn.example.com"), Err(TurnError::Scheme));
        assert_eq!(ok("turn://turn.example.com:3478"), Err(TurnError::Slashes));
        assert_eq!(ok("turn:"), Err(TurnError::Host));
        assert_eq!(ok("turn::3478"), Err(TurnError::Host));
        assert_eq!(ok("turn:bad_host"), Err(TurnError::Host));
        assert_eq!(ok("turn:user@host"), Err(TurnError::Host));
        assert_eq!(ok("turn:-host.example"), Err(TurnError::Host));
        assert_eq!(ok("turn:[not-v6]:3478"), Err(TurnError::Host));
        assert_eq!(ok("turn:[::1]3478"), Err(TurnError::Port));
        assert_eq!(ok("turn:host:0"), Err(TurnError::Port));
        assert_eq!(ok("turn:host:65536"), Err(TurnError::Port));
        assert_eq!(ok("turn:host:+80"), Err(TurnError::Port));
        assert_eq!(ok("turn:host:"), Err(TurnError::Port));
        assert_eq!(ok("turn:host:3478:1"), Err(TurnError::Port));
        assert_eq!(ok("turn:host?transport=sctp"), Err(TurnError::Transport));
        assert_eq!(ok("turn:host?foo=bar"), Err(TurnError::Transport));
        assert_eq!(
            ok("turns:host:443?transport=udp"),
            Err(TurnError::TlsOverUdp)
        );
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(TurnSecret::parse("short"), Err(TurnError::Secret));
        assert_eq!(
            TurnSecret::parse("has a space in the middle"),
            Err(TurnError::Secret)
        );
        assert_eq!(
            TurnSecret::parse("tab\tinside-the-secret-value"),
            Err(TurnError::Secret)
        );
        assert_eq!(TurnSecret::parse(&"x".repeat(1025)), Err(TurnError::Secret));
        let config = TurnConfig::new(
            vec![TurnUrl::parse("turn:t.example").unwrap()],
            secret(),
            600,
        )
        .unwrap();
        let shown = format!("{config:?} {:?}", credential(&secret(), "a", 1));
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&credential(&secret(), "a", 1).password));
        assert!(shown.contains("turn:t.example") && shown.contains("<redacted>"));
    }

    #[test]
    fn the_config_needs_urls_and_a_ttl_in_bounds() {
        let urls = || vec![TurnUrl::parse("turn:t.example").unwrap()];
        assert_eq!(
            TurnConfig::new(vec![], secret(), 600),
            Err(TurnError::NoUrls)
        );
        assert_eq!(TurnConfig::new(urls(), secret(), 59), Err(TurnError::Ttl));
        assert_eq!(
            TurnConfig::new(urls(), secret(), 604_801),
            Err(TurnError::Ttl)
        );
        assert_eq!(
            TurnConfig::new(urls(), secret(), 60).unwrap().ttl_secs(),
            60
        );
        assert_eq!(TurnError::Ttl.to_string(), "must be 60 to 604800 seconds");
    }
}
