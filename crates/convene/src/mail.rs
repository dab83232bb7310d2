//! The core's `Mailer` port, carried out: over SMTP with lettre (`CONVENE_SMTP_URL`,
//! `CONVENE_SMTP_FROM`), or, with no SMTP configured, on the console (development mode: the code
//! is written to the log, and the log says why). The SMTP mailer never logs a code.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use convene_core::login::{LoginCodeMail, MailError, Mailer};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP exchange may take before the send fails.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The SMTP settings (`CONVENE_SMTP_URL`, `CONVENE_SMTP_FROM`). The URL may hold credentials, so
/// it never appears in `Debug` output.
#[derive(Clone)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, or `?tls=required` for STARTTLS), `smtps://host:port` (TLS),
    /// optionally with `user:password@`.
    pub url: String,
    /// The sender, `noreply@example.com` or `convene <noreply@example.com>`.
    pub from: String,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = url::Url::parse(&self.url)
            .map(|u| {
                format!(
                    "{}://{}:{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port().map(|p| p.to_string()).unwrap_or_default()
                )
            })
            .unwrap_or_else(|_| "<invalid>".into());
        f.debug_struct("SmtpConfig")
            .field("url", &shown)
            .field("from", &self.from)
            .finish()
    }
}

impl SmtpConfig {
    /// Checks the URL and the sender without connecting.
    pub fn validate(&self) -> anyhow::Result<()> {
        SmtpMailer::new(self).map(|_| ())
    }
}

/// Sends mail through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let url = url::Url::parse(&config.url).context("CONVENE_SMTP_URL is not a URL")?;
        anyhow::ensure!(
            matches!(url.scheme(), "smtp" | "smtps"),
            "CONVENE_SMTP_URL must be an smtp:// or smtps:// URL"
        );
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.url)
            .context("CONVENE_SMTP_URL is not usable")?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from: Mailbox = config
            .from
            .parse()
            .context("CONVENE_SMTP_FROM is not a mail address")?;
        Ok(Self { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send_login_code(&self, mail: &LoginCodeMail) -> Result<(), MailError> {
        let to = Mailbox::new(
            Some(mail.name.to_string()),
            mail.to
                .as_str()
                .parse()
                .map_err(|e| MailError(format!("recipient: {e}")))?,
        );
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text())
            .map_err(|e| MailError(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError(e.to_string()))?;
        tracing::info!(to = %mail.to, "sent a one-time login code");
        Ok(())
    }
}

/// Development mode: no SMTP server, so the code goes to the log.
pub struct ConsoleMailer;

impl ConsoleMailer {
    /// Says at start that codes will be logged, and why.
    pub fn announce() {
        tracing::warn!(
            "no SMTP configured (CONVENE_SMTP_URL); development mode: one-time login codes are written to this log instead of being emailed"
        );
    }
}

#[async_trait]
impl Mailer for ConsoleMailer {
    async fn send_login_code(&self, mail: &LoginCodeMail) -> Result<(), MailError> {
        tracing::warn!(
            "no SMTP configured; development mode: code for {} is {}",
            mail.to,
            mail.code.reveal()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_settings_are_checked_and_never_show_credentials() {
        let good = SmtpConfig {
            url: "smtp://user:hunter2@127.0.0.1:2525".into(),
            from: "convene <noreply@example.com>".into(),
        };
        good.validate().unwrap();
        let shown = format!("{good:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("user"),
            "{shown}"
        );
        assert!(
            SmtpConfig {
                url: "http://127.0.0.1".into(),
                from: "a@example.com".into()
            }
            .validate()
            .is_err()
        );
        assert!(
            SmtpConfig {
                url: "smtp://127.0.0.1:2525".into(),
                from: "not an address".into()
            }
            .validate()
            .is_err()
        );
    }
}
