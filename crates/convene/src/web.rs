//! The embedded web pages: a landing page at `/`, the meeting page at `/meet` and its script
//! bundle at `/assets/meeting.js` (built from `web/` by `npm run build`, committed, so building
//! the binary needs no Node).

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

const LANDING_PAGE: &str = include_str!("../assets/landing.html");
const MEETING_PAGE: &str = include_str!("../assets/meeting.html");
const MEETING_JS: &str = include_str!("../assets/meeting.js");

/// The routes of the web pages; stateless, merged into the app beside the API.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { page(LANDING_PAGE) }))
        .route("/meet", get(|| async { page(MEETING_PAGE) }))
        .route("/assets/meeting.js", get(meeting_js))
}

/// HTML is small and names the script by a fixed URL, so it is always revalidated.
fn page(html: &'static str) -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(html),
    )
        .into_response()
}

/// The bundle's URL is not versioned, so browsers keep it but revalidate it by its ETag: a new
/// binary serves its own script at once, an unchanged one answers 304.
async fn meeting_js(headers: HeaderMap) -> Response {
    let etag = etag(MEETING_JS.as_bytes());
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, no-cache"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).expect("a hex ETag is a valid header value"),
        ),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        MEETING_JS,
    )
        .into_response()
}

/// A strong ETag from the content (64-bit FNV-1a; not a security boundary).
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::etag;

    #[test]
    fn etag_follows_the_content() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
        assert!(etag(b"").starts_with('"') && etag(b"").ends_with('"'));
    }
}
