//! convene's HTTP layer: the native `/v1` API (JSON), its OpenAPI document and docs page, the
//! error shape, and authentication. Handlers are thin: parse the wire types, call
//! [`convene_core::service::Meetings`], map the result back to wire types.

pub mod auth;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod realtime;
pub mod routes;
pub mod server;
pub mod state;
pub mod wire;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse};
use convene_core::ErrorCode;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder, content::ContentBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ErrorBody};
pub use realtime::{Hub, HubConfig};
pub use state::{AppState, Limits, MediaTokens, PublicUrls, RateLimits};

use routes::{access, events, meetings, moderation, recordings, system, webhooks};

/// Largest JSON body the native API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "convene", description = "Self-hosted video meetings and live stages: the native API."),
    modifiers(&Security),
    components(schemas(ErrorBody)),
    tags(
        (name = "meetings", description = "Create and run meetings (API key)."),
        (name = "participants", description = "Enter, wait, join, leave."),
        (name = "moderation", description = "Waiting room and moderation (hosts and admins)."),
        (name = "stage", description = "Raise hand, invitations, chat."),
        (name = "events", description = "The meeting's ordered event log."),
        (name = "recordings", description = "Record meetings: start, stop, list, the index, download (hosts and admins)."),
        (name = "webhooks", description = "The webhook outbox: deliveries, their status and errors (API key)."),
        (name = "system", description = "Liveness and readiness."),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut basic = Http::new(HttpAuthScheme::Basic);
        basic.description = Some("API key and secret as Basic credentials (key:secret).".into());
        components.add_security_scheme("api_key", SecurityScheme::Http(basic));
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.bearer_format = Some("JWT".into());
        admin.description = Some("A JWT signed with the API secret, iss = API key: an admin token from `convene api-key token`, or a LiveKit server-API token with roomCreate or roomList and no roomJoin (as LiveKit's server SDKs mint). No media token is an admin credential, a host's (roomAdmin) included.".into());
        components.add_security_scheme("admin_jwt", SecurityScheme::Http(admin));
        let mut participant = Http::new(HttpAuthScheme::Bearer);
        participant.bearer_format = Some("JWT".into());
        participant.description =
            Some("The participant's own waiting-room or access token.".into());
        components.add_security_scheme("participant_token", SecurityScheme::Http(participant));
    }
}

/// Every operation may answer an error in the one error shape.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let response: Response = ResponseBuilder::new()
            .description("An error: `{\"error\": {\"code\", \"message\"}}` with a code from the error-code table.")
            .content("application/json", ContentBuilder::new().schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody"))).build())
            .build();
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                operation
                    .responses
                    .responses
                    .insert("default".into(), RefOr::T(response.clone()));
            }
        }
        let _ = ErrorBody::schema();
    }
}

/// The native API's routes and their OpenAPI document, built from the same handler list.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes();
    // After the paths are merged in: every operation documents the error shape.
    ErrorResponses.modify(&mut doc);
    // The patterns attributes cannot state (see `wire`), so the document is exact.
    wire::Exact.modify(&mut doc);
    (router, doc)
}

fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(meetings::create, meetings::list))
        .routes(routes!(meetings::get, meetings::update))
        .routes(routes!(meetings::start))
        .routes(routes!(meetings::end))
        .routes(routes!(meetings::policy))
        .routes(routes!(access::enter))
        .routes(routes!(access::add, moderation::list))
        .routes(routes!(moderation::get))
        .routes(routes!(access::join))
        .routes(routes!(access::leave))
        .routes(routes!(access::me))
        .routes(routes!(access::exchange_join_link))
        .routes(routes!(moderation::admit))
        .routes(routes!(moderation::deny))
        .routes(routes!(moderation::send_back))
        .routes(routes!(moderation::invite))
        .routes(routes!(moderation::remove))
        .routes(routes!(moderation::unban))
        .routes(routes!(moderation::ban))
        .routes(routes!(moderation::role))
        .routes(routes!(moderation::mute))
        .routes(routes!(moderation::admit_all))
        .routes(routes!(moderation::hand))
        .routes(routes!(moderation::accept))
        .routes(routes!(moderation::decline))
        .routes(routes!(moderation::chat))
        .routes(routes!(recordings::start, recordings::list))
        .routes(routes!(recordings::get, recordings::delete))
        .routes(routes!(recordings::stop))
        .routes(routes!(recordings::download))
        .routes(routes!(events::list))
        .routes(routes!(webhooks::deliveries))
        .split_for_parts()
}

/// The OpenAPI document (OpenAPI 3.1), generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

async fn not_found() -> ApiError {
    ApiError::code(ErrorCode::NotFound)
}

async fn method_not_allowed() -> ApiError {
    ApiError::code(ErrorCode::MethodNotAllowed)
}

const DOCS_PAGE: &str = include_str!("docs.html");

/// The native API's app with its JSON 404/405 fallbacks (other surfaces are merged in by the
/// binary, then [`with_common_layers`] wraps everything).
pub fn router(state: AppState) -> Router {
    let (api, doc) = api();
    let doc_json = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    api.route(
        "/v1/openapi.json",
        axum::routing::get(move || async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                doc_json.clone(),
            )
                .into_response()
        }),
    )
    .route("/v1/docs", axum::routing::get(|| async { Html(DOCS_PAGE) }))
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .with_state(state)
}

/// The layers every surface shares: body size limit, CORS (no cookies are used, so any origin may
/// call with its own credentials), request tracing. Apply once to the merged app.
pub fn with_common_layers(app: Router) -> Router {
    app.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            CorsLayer::new()
                .allow_origin(Any)
                .allow_methods(Any)
                .allow_headers(Any),
        )
        .layer(TraceLayer::new_for_http())
}
