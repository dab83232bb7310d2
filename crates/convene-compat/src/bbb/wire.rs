//! Seed 003's wire types: the documented `/create` response, field for field. `/join` answers
//! with a redirect and has no body.

use convene_core::time::Timestamp;
use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

/// `POST /create`'s answer.
#[derive(Debug, Serialize)]
pub struct Created {
    pub meeting_id: String,
    pub attendee_pass: String,
    pub moderator_pass: String,
    /// The current session's opening time in milliseconds since the Unix epoch, as a string.
    pub create_time: String,
    /// `Mon Jul 09 17:03:29 UTC 2040` (Java's `Date.toString()` in UTC).
    pub created_at: String,
}

/// A time as the seed writes `created_at`: `EEE MMM dd HH:mm:ss UTC yyyy`, always in UTC.
pub fn seed_date(at: Timestamp) -> String {
    let format = format_description!(
        "[weekday repr:short] [month repr:short] [day] [hour]:[minute]:[second] UTC [year]"
    );
    OffsetDateTime::from_unix_timestamp(at.as_secs())
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_look_like_the_seed() {
        // The seed's own example: Mon Jul 09 17:03:29 UTC 2040.
        let at = Timestamp::from_millis(2_225_466_209_613);
        assert_eq!(seed_date(at), "Mon Jul 09 17:03:29 UTC 2040");
        assert_eq!(
            seed_date(Timestamp::from_millis(1_531_155_809_613)),
            "Mon Jul 09 17:03:29 UTC 2018"
        );
    }
}
