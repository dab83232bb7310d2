//! HTTP request metrics (Prometheus, through `prometheus-client`): a counter by route, method and
//! status and a latency histogram by route and method, kept by one middleware layer over every
//! surface. The route is axum's `MatchedPath` (the template, `/v1/meetings/{id}`), never the raw
//! path, and the method is one of the standard ones or `other`, so the label sets stay bounded.
//! The registry itself belongs to the binary, which renders it at `/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The route label of a request that matched no route (404 fallbacks).
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: String,
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The HTTP series; cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    /// Registers `convene_http_requests_total` and `convene_http_request_duration_seconds`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "convene_http_requests",
            "HTTP requests answered, by route template, method and status",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "convene_http_request_duration",
            "Time to the response head, by route template and method",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    fn record(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { route, method })
            .observe(seconds);
    }
}

/// The method as a bounded label: the standard ones, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware: apply with `axum::middleware::from_fn_with_state(metrics, track)` through
/// `Router::layer`, so `MatchedPath` is known when it runs. Long-lived responses (event streams,
/// WebSocket upgrades) are counted when their head is sent.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    metrics.record(
        route,
        method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn render(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn requests_are_counted_under_their_route_template_and_unknown_methods_are_other() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let app = Router::new()
            .route("/things/{id}", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(metrics, track));
        for uri in ["/things/1", "/things/2", "/nowhere/at/all"] {
            let request = axum::http::Request::get(uri).body(Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        let odd = axum::http::Request::builder()
            .method(Method::from_bytes(b"BREW").unwrap())
            .uri("/things/3")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(odd).await.unwrap();
        let text = render(&registry);
        assert!(
            text.contains(
                r#"convene_http_requests_total{route="/things/{id}",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"convene_http_requests_total{route="unmatched",method="GET",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"route="/things/{id}",method="other",status="405"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("/things/1"),
            "raw paths never become labels: {text}"
        );
        assert!(
            text.contains(
                r#"convene_http_request_duration_seconds_count{route="/things/{id}",method="GET"} 2"#
            ),
            "{text}"
        );
    }
}
