//! The embedded web app: the landing page at `/`, the meeting page at `/meet`, the admin console
//! at `/admin`, and their scripts and styles under `/assets/` (built from `web/` by
//! `make web`, committed in `assets/app/`, embedded by `build.rs`, so building the binary needs
//! no Node).
//!
//! Scripts and styles have content-hashed names and are cached for a year; pages are revalidated
//! by ETag. Each file is served gzip-compressed (compressed at build time) to clients that accept
//! it, otherwise as is.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    /// Strong ETag of `body` (quoted).
    etag: &'static str,
    body: &'static [u8],
    gzip: Option<&'static [u8]>,
}

static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// Where the pages may load from and connect to: this origin, and any WebSocket or HTTP(S) host
/// for the media server (an external LiveKit deployment can be elsewhere).
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data: blob:; media-src 'self' blob: mediastream:; \
    connect-src 'self' ws: wss: http: https:; base-uri 'none'; form-action 'self'; object-src 'none'";

/// The routes of the web app; stateless, merged into the app beside the API.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { page("index.html", &h, false) }),
        )
        .route(
            "/meet",
            get(|h: HeaderMap| async move { page("meet.html", &h, false) }),
        )
        .route(
            "/admin",
            get(|h: HeaderMap| async move { page("admin.html", &h, true) }),
        )
        .route("/assets/{name}", get(asset))
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// A page: always revalidated (it names the current hashed scripts), never sniffed; the admin
/// console may not be framed.
fn page(name: &str, headers: &HeaderMap, no_framing: bool) -> Response {
    let Some(asset) = find(name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let csp = if no_framing {
        format!("{PAGE_CSP}; frame-ancestors 'none'")
    } else {
        PAGE_CSP.to_owned()
    };
    let mut response = serve(asset, headers, "no-cache");
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).expect("a constant ASCII header"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A script or style: hashed names never change content, so caches keep them for a year.
async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match find(&name).filter(|a| !a.name.ends_with(".html")) {
        Some(asset) => serve(asset, &headers, "public, max-age=31536000, immutable"),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn serve(asset: &'static Asset, headers: &HeaderMap, cache_control: &'static str) -> Response {
    let gzip = asset.gzip.filter(|_| accepts_gzip(headers));
    let etag = match gzip {
        Some(_) => format!("{}-gz\"", asset.etag.trim_end_matches('"')),
        None => asset.etag.to_owned(),
    };
    let mut common = HeaderMap::new();
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    common.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("a hex ETag is a valid header value"),
    );
    common.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    common.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if matches_etag(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    common.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    match gzip {
        Some(body) => {
            common.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            (common, body).into_response()
        }
        None => (common, asset.body).into_response(),
    }
}

fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// Whether `Accept-Encoding` takes gzip: named with a non-zero quality, or `*` when gzip is not
/// named (RFC 9110 12.5.3).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for item in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .next()
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(quality);
        } else if coding == "*" {
            any = Some(quality);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn gzip_is_chosen_by_accept_encoding() {
        let accepts = |v: &str| accepts_gzip(&with(header::ACCEPT_ENCODING, v));
        assert!(accepts("gzip, deflate, br"));
        assert!(accepts("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("br"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0, *"), "named gzip wins over *");
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_page_and_its_scripts_are_embedded_with_a_compressed_twin() {
        for page in ["index.html", "meet.html", "admin.html"] {
            let asset = find(page).unwrap_or_else(|| panic!("{page} embedded"));
            let html = std::str::from_utf8(asset.body).unwrap();
            for name in html
                .split("/assets/")
                .skip(1)
                .map(|rest| rest.split('"').next().unwrap())
            {
                assert!(
                    find(name).is_some(),
                    "{page} names {name}, which is embedded"
                );
            }
        }
        for asset in ASSETS {
            assert!(asset.gzip.is_some(), "{} has a .gz twin", asset.name);
        }
        assert!(
            find("meet.html")
                .unwrap()
                .body
                .windows(8)
                .any(|w| w == b"/assets/")
        );
    }

    #[tokio::test]
    async fn assets_are_cached_compressed_and_revalidated() {
        let script = ASSETS
            .iter()
            .find(|a| a.name.starts_with("meeting-") && a.name.ends_with(".js"))
            .expect("the meeting bundle");
        let plain = asset(Path(script.name.to_owned()), HeaderMap::new()).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(
            plain.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        let gz = asset(
            Path(script.name.to_owned()),
            with(header::ACCEPT_ENCODING, "gzip, br"),
        )
        .await;
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(gz.headers()[header::VARY], "accept-encoding");
        let etag = gz.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert_ne!(etag, plain.headers()[header::ETAG].to_str().unwrap());
        let mut again = with(header::ACCEPT_ENCODING, "gzip");
        again.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&etag).unwrap());
        let cached = asset(Path(script.name.to_owned()), again).await;
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let missing = asset(Path("meet.html".to_owned()), HeaderMap::new()).await;
        assert_eq!(
            missing.status(),
            StatusCode::NOT_FOUND,
            "pages are not assets"
        );
        let page = page("admin.html", &HeaderMap::new(), true);
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}
