//! Email one-time-code login: the rules (pure), the ports they need ([`LoginStore`], [`Mailer`])
//! and the [`Logins`] service that runs them.
//!
//! The rules (security-reliability.md, "Email one-time codes"; NIST SP 800-63B 5.1.3, OWASP ASVS
//! 2.7):
//!
//! - a code is [`CODE_DIGITS`] digits from the random source passed in (the server passes a CSPRNG);
//! - it is stored only as an HMAC-SHA256 under a fresh random 16-byte salt, bound to the address;
//! - it is valid for [`CODE_TTL`], works once, and is void after [`MAX_TRIES`] wrong tries;
//! - asking for a new code replaces the previous one;
//! - sends are capped per address ([`ADDRESS_SEND_CAP`]) and per client ([`CLIENT_SEND_CAP`]),
//!   counted in the store so the caps hold across restarts and nodes.
//!
//! The code never appears in `Debug` output; the [`Mailer`] implementations (SMTP, or the
//! development console) live outside the core.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{DomainError, ErrorCode, ValidationError};
use crate::error::{Result, StoreError};
use crate::ids::DisplayName;
use crate::random::Entropy;
use crate::time::{Clock, Timestamp};

/// Digits in a one-time code.
pub const CODE_DIGITS: usize = 6;
/// How long a code is valid after it is sent.
pub const CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// Wrong tries after which a code is void.
pub const MAX_TRIES: u32 = 5;
/// Codes sent to one email address.
pub const ADDRESS_SEND_CAP: SendCap = SendCap {
    limit: 5,
    window: Duration::from_secs(15 * 60),
};
/// Codes requested by one client address (for any email addresses).
pub const CLIENT_SEND_CAP: SendCap = SendCap {
    limit: 20,
    window: Duration::from_secs(60 * 60),
};
/// How often a store conflict (two checks of one code at once) is retried.
const MAX_ATTEMPTS: usize = 8;

/// An email address: trimmed, lower-cased, `local@domain` with a dotted domain, at most 254 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim().to_lowercase();
        let invalid = |reason: &str| Err(ValidationError::new("email", reason));
        if value.is_empty() {
            return invalid("must not be empty");
        }
        if value.len() > Self::MAX_LEN {
            return invalid("must be at most 254 bytes");
        }
        if value.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ',' | ';' | '\\')
        }) {
            return invalid("must not contain spaces, control characters or <>\",;\\");
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return invalid("must look like name@example.com");
        };
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if local.is_empty()
            || local.len() > 64
            || local.contains('@')
            || !domain.contains('.')
            || !labels_ok
        {
            return invalid("must look like name@example.com");
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({:?})", self.0)
    }
}

/// A signed-in user's id: 12 decimal digits, the first not zero (numeric for surfaces whose
/// clients expect a number, e.g. mesibo's `uid`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub const DIGITS: usize = 12;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let raw = raw.trim();
        if raw.len() != Self::DIGITS
            || !raw.bytes().all(|b| b.is_ascii_digit())
            || raw.starts_with('0')
        {
            return Err(ValidationError::new(
                "uid",
                "must be a user id of 12 digits",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        let mut id = String::with_capacity(Self::DIGITS);
        id.push(char::from(b'0' + rng.random_range(1..=9u8)));
        for _ in 1..Self::DIGITS {
            id.push(char::from(b'0' + rng.random_range(0..=9u8)));
        }
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_u64(&self) -> u64 {
        self.0.parse().expect("a UserId is 12 digits")
    }
}

impl TryFrom<String> for UserId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}
impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// A user who signed in with an email code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: DisplayName,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A one-time code in clear, on its way to the mailer. Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginCode(String);

impl LoginCode {
    pub fn generate(rng: &mut impl CryptoRng) -> Self {
        Self(
            (0..CODE_DIGITS)
                .map(|_| char::from(b'0' + rng.random_range(0..=9u8)))
                .collect(),
        )
    }

    /// The code itself, for the email.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for LoginCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginCode(<redacted>)")
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn digest(salt: &[u8], email: &Email, code: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes keys of any length");
    mac.update(b"convene login code\0");
    mac.update(email.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(code.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// A code as stored: its salted digest, never the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRecord {
    pub email: Email,
    /// 16 random bytes, hex.
    pub salt: String,
    /// HMAC-SHA256(salt, email, code), hex.
    pub digest: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// Wrong tries so far.
    pub tries: u32,
    pub used: bool,
}

/// Why a code was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRefusal {
    /// No code was sent to this address (or it was replaced and the old one is gone).
    NoCode,
    Wrong {
        tries_left: u32,
    },
    Expired,
    Used,
    TooManyTries,
}

impl CodeRefusal {
    pub fn message(self) -> String {
        match self {
            Self::NoCode => "no code was sent to this address; ask for one".to_owned(),
            Self::Wrong { tries_left: 0 } => {
                "wrong code; that was the last try, ask for a new code".to_owned()
            }
            Self::Wrong { tries_left } => format!("wrong code; {tries_left} tries left"),
            Self::Expired => "the code has expired; ask for a new one".to_owned(),
            Self::Used => "the code has been used already; ask for a new one".to_owned(),
            Self::TooManyTries => "too many wrong tries; ask for a new code".to_owned(),
        }
    }
}

impl From<CodeRefusal> for DomainError {
    fn from(value: CodeRefusal) -> Self {
        DomainError::new(ErrorCode::InvalidCode, value.message())
    }
}

impl CodeRecord {
    /// The record of a code just sent to `email` at `now`.
    pub fn issue(
        email: &Email,
        code: &LoginCode,
        now: Timestamp,
        rng: &mut impl CryptoRng,
    ) -> Self {
        let salt: [u8; 16] = rng.random();
        Self {
            email: email.clone(),
            salt: to_hex(&salt),
            digest: to_hex(&digest(&salt, email, code.reveal())),
            issued_at: now,
            expires_at: now.plus(CODE_TTL),
            tries: 0,
            used: false,
        }
    }

    /// Checks `candidate` at `now`: the record to store next (a counted try, or marked used) and
    /// the outcome. A refusal that changes nothing returns `None` as the next record.
    pub fn check(
        &self,
        candidate: &str,
        now: Timestamp,
    ) -> (Option<CodeRecord>, Result<(), CodeRefusal>) {
        if self.used {
            return (None, Err(CodeRefusal::Used));
        }
        if self.tries >= MAX_TRIES {
            return (None, Err(CodeRefusal::TooManyTries));
        }
        if now >= self.expires_at {
            return (None, Err(CodeRefusal::Expired));
        }
        let candidate = candidate.trim();
        let salt = from_hex(&self.salt).unwrap_or_default();
        let stored = from_hex(&self.digest).unwrap_or_default();
        let given = digest(&salt, &self.email, candidate);
        let mut next = self.clone();
        if bool::from(given.as_slice().ct_eq(stored.as_slice())) {
            next.used = true;
            (Some(next), Ok(()))
        } else {
            next.tries += 1;
            let tries_left = MAX_TRIES.saturating_sub(next.tries);
            (Some(next), Err(CodeRefusal::Wrong { tries_left }))
        }
    }
}

/// A cap on sends: at most `limit` in each fixed window of `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendCap {
    pub limit: u32,
    pub window: Duration,
}

/// A send counter as stored (the count includes the send being counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCount {
    pub count: u32,
    pub window_started_at: Timestamp,
}

impl SendCap {
    /// `Ok` when the send that made `counted` is within the cap.
    pub fn check(self, counted: SendCount, now: Timestamp, what: &str) -> Result<(), DomainError> {
        if counted.count <= self.limit {
            return Ok(());
        }
        let wait = now
            .until(counted.window_started_at.plus(self.window))
            .as_secs()
            .max(1);
        Err(DomainError::new(
            ErrorCode::RateLimited,
            format!(
                "too many codes sent {what} (at most {} in {} min); retry in {wait} s",
                self.limit,
                self.window.as_secs() / 60
            ),
        ))
    }
}

/// The mail a user gets with a code.
#[derive(Clone, Debug)]
pub struct LoginCodeMail {
    pub to: Email,
    pub name: DisplayName,
    pub code: LoginCode,
    pub valid_for: Duration,
}

impl LoginCodeMail {
    pub fn subject(&self) -> String {
        format!("Your sign-in code: {}", self.code.reveal())
    }

    pub fn text(&self) -> String {
        format!(
            "Hello {},\n\nyour sign-in code is {}\n\nIt is valid for {} minutes and works once. If you did not ask for it, ignore this message.\n",
            self.name,
            self.code.reveal(),
            self.valid_for.as_secs() / 60
        )
    }
}

/// The mail could not be handed to the mail server.
#[derive(Debug, thiserror::Error)]
#[error("sending mail failed: {0}")]
pub struct MailError(pub String);

/// The mailer port: SMTP in production, the console in development mode (in the binary).
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send_login_code(&self, mail: &LoginCodeMail) -> Result<(), MailError>;
}

/// What the login rules need stored. Implemented by `convene-store` for SQLite and PostgreSQL.
#[async_trait]
pub trait LoginStore: Send + Sync + 'static {
    /// Counts one send for `subject` atomically in fixed windows of `window`: a counter whose
    /// window started `window` or longer before `now` restarts at 1 with its window at `now`.
    async fn count_login_send(
        &self,
        subject: &str,
        now: Timestamp,
        window: Duration,
    ) -> Result<SendCount, StoreError>;
    /// Drops codes that expired before `codes_expired_before` and send counters whose window
    /// started before `sends_started_before`; returns how many rows went.
    async fn prune_logins(
        &self,
        codes_expired_before: Timestamp,
        sends_started_before: Timestamp,
    ) -> Result<u64, StoreError>;
    /// Stores a freshly sent code, replacing any code of the same address.
    async fn put_login_code(&self, record: &CodeRecord) -> Result<(), StoreError>;
    async fn login_code(&self, email: &Email) -> Result<Option<CodeRecord>, StoreError>;
    /// Replaces `previous` by `next` only if the stored record is still `previous` (same salt, same
    /// tries, unused); otherwise `Conflict`.
    async fn update_login_code(
        &self,
        previous: &CodeRecord,
        next: &CodeRecord,
    ) -> Result<(), StoreError>;
    /// `Duplicate("user_id")` or `Duplicate("email")` on a clash.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError>;
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError>;
    async fn rename_user(
        &self,
        id: &UserId,
        name: &DisplayName,
        at: Timestamp,
    ) -> Result<(), StoreError>;
}

/// The login service: sends codes and signs users in. Cheap to share behind an `Arc`.
pub struct Logins {
    store: Arc<dyn LoginStore>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    mailer: Arc<dyn Mailer>,
}

impl Logins {
    pub fn new(
        store: Arc<dyn LoginStore>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        mailer: Arc<dyn Mailer>,
    ) -> Self {
        Self {
            store,
            clock,
            entropy,
            mailer,
        }
    }

    fn rng(&self) -> rand::rngs::StdRng {
        crate::random::rng(self.entropy.as_ref())
    }

    /// Sends a fresh code to `email` (replacing any earlier one), within the send caps for the
    /// address and for `client` (the caller's network address).
    pub async fn send_code(&self, email: &Email, name: &DisplayName, client: &str) -> Result<()> {
        let now = self.clock.now();
        let by_client = self
            .store
            .count_login_send(&format!("client:{client}"), now, CLIENT_SEND_CAP.window)
            .await?;
        CLIENT_SEND_CAP.check(by_client, now, "from this client")?;
        let by_address = self
            .store
            .count_login_send(&format!("email:{email}"), now, ADDRESS_SEND_CAP.window)
            .await?;
        ADDRESS_SEND_CAP.check(by_address, now, "to this address")?;
        let code = LoginCode::generate(&mut self.rng());
        let record = CodeRecord::issue(email, &code, now, &mut self.rng());
        self.store.put_login_code(&record).await?;
        let mail = LoginCodeMail {
            to: email.clone(),
            name: name.clone(),
            code,
            valid_for: CODE_TTL,
        };
        self.mailer
            .send_login_code(&mail)
            .await
            .map_err(|e| DomainError::new(ErrorCode::MailFailed, e.to_string()))?;
        Ok(())
    }

    /// Checks a code sent to `email`; on success the user (created at the first sign-in; `name`
    /// becomes their name).
    pub async fn sign_in(&self, email: &Email, name: &DisplayName, code: &str) -> Result<User> {
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let record = self
                .store
                .login_code(email)
                .await?
                .ok_or_else(|| DomainError::from(CodeRefusal::NoCode))?;
            let (next, outcome) = record.check(code, now);
            if let Some(next) = &next {
                match self.store.update_login_code(&record, next).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            outcome.map_err(DomainError::from)?;
            return self.user_for(email, name, now).await;
        }
        Err(DomainError::code(ErrorCode::Busy).into())
    }

    async fn user_for(&self, email: &Email, name: &DisplayName, now: Timestamp) -> Result<User> {
        for _ in 0..MAX_ATTEMPTS {
            if let Some(mut user) = self.store.user_by_email(email).await? {
                if &user.name != name {
                    self.store.rename_user(&user.id, name, now).await?;
                    user.name = name.clone();
                    user.updated_at = now;
                }
                return Ok(user);
            }
            let user = User {
                id: UserId::generate(&mut self.rng()),
                email: email.clone(),
                name: name.clone(),
                created_at: now,
                updated_at: now,
            };
            match self.store.insert_user(&user).await {
                Ok(()) => return Ok(user),
                // Someone signed in with this address at the same moment, or the id was taken.
                Err(StoreError::Duplicate(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::code(ErrorCode::Busy).into())
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<User>> {
        Ok(self.store.user(id).await?)
    }

    /// Housekeeping: drops expired codes and send counters whose window has passed (neither
    /// changes any answer), so the tables do not grow with every address ever tried.
    pub async fn prune(&self) -> Result<u64> {
        let now = self.clock.now();
        let longest_window = ADDRESS_SEND_CAP.window.max(CLIENT_SEND_CAP.window);
        Ok(self
            .store
            .prune_logins(now.minus(CODE_TTL), now.minus(longest_window))
            .await?)
    }
}

/// An in-memory [`LoginStore`], for tests of the rules and of the surfaces built on them.
#[derive(Default)]
pub struct MemoryLoginStore {
    inner: std::sync::Mutex<MemoryLogins>,
}

#[derive(Default)]
struct MemoryLogins {
    sends: HashMap<String, SendCount>,
    codes: HashMap<Email, CodeRecord>,
    users: HashMap<UserId, User>,
}

impl MemoryLoginStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryLogins> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl LoginStore for MemoryLoginStore {
    async fn count_login_send(
        &self,
        subject: &str,
        now: Timestamp,
        window: Duration,
    ) -> Result<SendCount, StoreError> {
        let mut inner = self.lock();
        let entry = inner.sends.entry(subject.to_owned()).or_insert(SendCount {
            count: 0,
            window_started_at: now,
        });
        if entry.window_started_at.plus(window) <= now {
            *entry = SendCount {
                count: 0,
                window_started_at: now,
            };
        }
        entry.count += 1;
        Ok(*entry)
    }

    async fn prune_logins(
        &self,
        codes_expired_before: Timestamp,
        sends_started_before: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.codes.len() + inner.sends.len();
        inner
            .codes
            .retain(|_, code| code.expires_at >= codes_expired_before);
        inner
            .sends
            .retain(|_, send| send.window_started_at >= sends_started_before);
        Ok((before - inner.codes.len() - inner.sends.len()) as u64)
    }

    async fn put_login_code(&self, record: &CodeRecord) -> Result<(), StoreError> {
        self.lock()
            .codes
            .insert(record.email.clone(), record.clone());
        Ok(())
    }

    async fn login_code(&self, email: &Email) -> Result<Option<CodeRecord>, StoreError> {
        Ok(self.lock().codes.get(email).cloned())
    }

    async fn update_login_code(
        &self,
        previous: &CodeRecord,
        next: &CodeRecord,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let current = inner.codes.get(&previous.email).is_some_and(|stored| {
            stored.salt == previous.salt && stored.tries == previous.tries && !stored.used
        });
        if !current {
            return Err(StoreError::Conflict);
        }
        inner.codes.insert(next.email.clone(), next.clone());
        Ok(())
    }

    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.users.contains_key(&user.id) {
            return Err(StoreError::Duplicate("user_id"));
        }
        if inner.users.values().any(|u| u.email == user.email) {
            return Err(StoreError::Duplicate("email"));
        }
        inner.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(self.lock().users.get(id).cloned())
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| &u.email == email)
            .cloned())
    }

    async fn rename_user(
        &self,
        id: &UserId,
        name: &DisplayName,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        if let Some(user) = self.lock().users.get_mut(id) {
            user.name = name.clone();
            user.updated_at = at;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
