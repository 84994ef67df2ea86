//! Slipway's HTTP API: what the `slipway` CLI and the web console talk to.
//!
//! JSON in and out. Every error is a JSON body
//! `{"error": {"code": "...", "message": "...", "field": "..." | null}}` with a 4xx status
//! that says what the caller must change (400 malformed, 401 token, 404 no such service,
//! 409 conflict, 413 too large, 422 invalid value); 5xx only when the store or the engine
//! fails. The hosted git remote lives here too, behind the same token (HTTP Basic, any
//! user name, the token as password), because git clients speak HTTP auth natively.

pub mod acme;
pub mod history;
pub mod hooks;
pub mod names;
pub mod platform;
pub mod web;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use names::DomainView;
use serde::{Deserialize, Serialize};
use serde_json::json;
use slipway_builder::GitRequest;
use slipway_core::{ServiceSpec, Source};
use slipway_store::ServiceRow;
use slipway_store::{AppLogRow, BuildRow, DeploymentRow, EventRow, RevisionRow, SecretRow};

pub use platform::{Platform, PlatformError};

/// The platform's one metrics registry (the router, the deployer and the scaler are its
/// collectors), exposed at `/metrics`.
pub type Metrics = Arc<prometheus_client::registry::Registry>;

/// What the API needs.
#[derive(Clone)]
pub struct Api {
    /// The platform's operations (and its store, builder and deployer).
    pub platform: Platform,
    /// The router (for metrics and stats).
    pub router: Arc<slipway_router::Router>,
    /// The API token.
    pub token: String,
    /// The platform zone, e.g. `slipway.localhost`.
    pub zone: String,
    /// The router's public port, for service URLs.
    pub router_port: u16,
    /// The API's own public base URL (for git remotes).
    pub api_url: String,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The platform id: the label value on every container this platform runs.
    pub platform_id: String,
    /// Seconds between the metrics history's finest points (10).
    pub history_res_s: i64,
}

/// An API error: a status, what it says, and the field of the request at fault.
#[derive(Debug)]
pub struct ApiError(StatusCode, String, Option<String>);

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError(status, msg.into(), None)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("internal: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None)
    }

    /// The machine-readable code of a status.
    pub fn code(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "too_large",
            415 => "unsupported_media_type",
            422 => "invalid",
            429 => "too_many_requests",
            503 => "unavailable",
            s if s >= 500 => "internal",
            _ => "error",
        }
    }
}

impl From<PlatformError> for ApiError {
    fn from(e: PlatformError) -> Self {
        let status = match &e {
            PlatformError::BadName(_) | PlatformError::BadDomain(_) => StatusCode::BAD_REQUEST,
            PlatformError::Invalid(_) | PlatformError::Unusable(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PlatformError::NoService(_) | PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
            PlatformError::Exists(_) | PlatformError::Conflict(_) => StatusCode::CONFLICT,
            PlatformError::Store(_) | PlatformError::Runtime(_) | PlatformError::Repository(_) => {
                return ApiError::internal(e)
            }
        };
        let field = match &e {
            PlatformError::Invalid(s) => Some(s.field.clone()),
            PlatformError::BadName(_) => Some("name".to_string()),
            PlatformError::BadDomain(_) => Some("domain".to_string()),
            _ => None,
        };
        ApiError(status, e.to_string(), field)
    }
}

impl From<slipway_store::StoreError> for ApiError {
    fn from(e: slipway_store::StoreError) -> Self {
        PlatformError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "code": ApiError::code(self.0),
            "message": self.1,
            "field": self.2,
        }});
        (self.0, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `too_large`,
    /// `unsupported_media_type`, `invalid`, `internal`.
    code: String,
    /// What to change.
    message: String,
    /// The request's field at fault (`scaling.max_size`), if one is.
    field: Option<String>,
}

/// The API's OpenAPI 3.1 document, made from the handlers' annotations and the types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Slipway",
        description = "Source to a live URL: the platform's HTTP API."
    ),
    paths(
        platform,
        list_services,
        create_service,
        show_service,
        update_service,
        delete_service,
        deploy,
        rollback,
        pause,
        resume,
        revisions,
        deployments,
        events,
        events_stream,
        builds,
        app_logs,
        app_logs_stream,
        build_stream,
        metrics_history,
        secrets,
        set_secret,
        unset_secret,
        add_domain,
        list_domains,
        remove_domain,
        metrics,
        webhook
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`.
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

/// Builds the API's router. One layer checks the token on everything but `/healthz`:
/// `Authorization: Bearer <token>` for the API and `/metrics`, and HTTP Basic (any user
/// name, the token as password; Bearer works too) for the git remote, because git clients
/// speak Basic natively.
pub fn app(api: Api) -> Router {
    let token: Arc<str> = api.token.as_str().into();
    let sessions = web::Sessions::default();
    let v1 = Router::new()
        .route("/v1/platform", get(platform))
        .route("/v1/services", get(list_services).post(create_service))
        .route(
            "/v1/services/{name}",
            get(show_service)
                .patch(update_service)
                .delete(delete_service),
        )
        .route("/v1/services/{name}/deploy", post(deploy))
        .route("/v1/services/{name}/rollback", post(rollback))
        .route("/v1/services/{name}/pause", post(pause))
        .route("/v1/services/{name}/resume", post(resume))
        .route("/v1/services/{name}/revisions", get(revisions))
        .route("/v1/services/{name}/deployments", get(deployments))
        .route("/v1/services/{name}/events", get(events))
        .route("/v1/services/{name}/events/stream", get(events_stream))
        .route("/v1/services/{name}/builds", get(builds))
        .route("/v1/services/{name}/builds/{id}/stream", get(build_stream))
        .route("/v1/services/{name}/logs", get(app_logs))
        .route("/v1/services/{name}/metrics", get(metrics_history))
        .route("/v1/services/{name}/logs/stream", get(app_logs_stream))
        .route("/v1/services/{name}/secrets", get(secrets))
        .route(
            "/v1/services/{name}/domains",
            get(list_domains).post(add_domain),
        )
        .route(
            "/v1/services/{name}/domains/{domain}",
            axum::routing::delete(remove_domain),
        )
        .route(
            "/v1/services/{name}/secrets/{key}",
            axum::routing::put(set_secret).delete(unset_secret),
        )
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(1 << 20))
        .route_layer(middleware::from_fn_with_state(
            (token.clone(), Schemes::Bearer, Some(sessions.clone())),
            require_token,
        ))
        .layer(middleware::from_fn(error_shape));
    let git = Router::new()
        .route("/git/{repo}/{*path}", any(git_http))
        .layer(DefaultBodyLimit::max(512 << 20))
        .route_layer(middleware::from_fn_with_state(
            (token.clone(), Schemes::BearerOrBasic, None),
            require_token,
        ));
    let console = Router::new()
        .route("/", get(web::index))
        .route("/console/app.js", get(web::app_js))
        .route("/console/app.css", get(web::app_css))
        .route(
            "/console/login",
            post(web::login).with_state((token, sessions.clone())),
        )
        .route(
            "/console/session",
            get(web::session).with_state(sessions.clone()),
        )
        .route("/console/logout", post(web::logout).with_state(sessions))
        .layer(DefaultBodyLimit::max(16 << 10))
        .layer(middleware::from_fn(error_shape));
    // Webhooks carry their own proof (a signature or a token per service), not the API
    // token.
    let hooks = Router::new()
        .route("/hooks/{name}", post(webhook))
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(middleware::from_fn(error_shape));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/openapi.json", get(openapi))
        .merge(hooks)
        .merge(console)
        .merge(v1)
        .merge(git)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method (see /v1/openapi.json)",
            )
        })
        .with_state(api)
}

/// Every error of the API, the console's endpoints and the webhooks in the error shape:
/// a rejection that axum writes as plain text before a handler runs (a body over the
/// limit, a path that is not UTF-8, a body that is not JSON) becomes
/// `{"error": {"code", "message", "field"}}` with its status and its text as the message.
async fn error_shape(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Rejections are one line; a longer body is cut, never buffered without bound.
    let text = match axum::body::to_bytes(body, 16 << 10).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    // Headers a status needs (`WWW-Authenticate`, `Allow`) are kept.
    for (k, v) in parts.headers.iter() {
        if k != axum::http::header::CONTENT_TYPE && k != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Which `Authorization` schemes a route accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schemes {
    Bearer,
    BearerOrBasic,
}

/// The auth layer: the request goes on only with the platform's token.
async fn require_token(
    State((token, schemes, sessions)): State<(Arc<str>, Schemes, Option<web::Sessions>)>,
    req: Request,
    next: Next,
) -> Response {
    if authorized(&token, schemes, req.headers()) {
        return next.run(req).await;
    }
    // The console's session cookie, for the API only (never the git remote).
    let session = sessions
        .as_ref()
        .map(|s| s.check(req.method(), req.headers()));
    match session {
        Some(web::SessionAuth::Ok) => next.run(req).await,
        Some(web::SessionAuth::Forgery) => ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused (CSRF): a signed-in console request needs its X-CSRF-Token and this site's Origin",
        )
        .into_response(),
        _ => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send `Authorization: Bearer <token>` (the token is in the data directory's `token` file)",
            )
            .into_response();
            // git asks for credentials on a Basic challenge; a browser would open a
            // password dialog on one, so the API's challenge is Bearer.
            let challenge = match schemes {
                Schemes::BearerOrBasic => "Basic realm=\"slipway\"",
                Schemes::Bearer => "Bearer realm=\"slipway\"",
            };
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            r
        }
    }
}

fn authorized(token: &str, schemes: Schemes, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(t) = v.strip_prefix("Bearer ") {
        t.trim().to_string()
    } else if let Some(b) = v
        .strip_prefix("Basic ")
        .filter(|_| schemes == Schemes::BearerOrBasic)
    {
        match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
            Ok(raw) => {
                let s = String::from_utf8_lossy(&raw).to_string();
                s.split_once(':')
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default()
            }
            Err(_) => return false,
        }
    } else {
        return false;
    };
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn load(api: &Api, name: &str) -> ApiResult<ServiceRow> {
    Ok(api.platform.service(name)?)
}

/// A service as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
struct ServiceView {
    name: String,
    url: String,
    status: String,
    git_remote: Option<String>,
    active_revision: Option<i64>,
    target_revision: Option<i64>,
    desired_instances: i64,
    paused: bool,
    instances: slipway_deployer::InstanceCounts,
    latest_deployment: Option<slipway_store::DeploymentRow>,
    spec: ServiceSpec,
}

fn view(api: &Api, row: ServiceRow) -> ApiResult<ServiceView> {
    let (status, counts, latest) = api.platform.status(&row)?;
    Ok(view_of(api, row, status, counts, latest))
}

fn view_of(
    api: &Api,
    row: ServiceRow,
    status: String,
    counts: slipway_deployer::InstanceCounts,
    latest: Option<slipway_store::DeploymentRow>,
) -> ServiceView {
    let name = row.spec.name.to_string();
    let git_remote = matches!(row.spec.source, Source::Git { .. })
        .then(|| format!("{}/git/{name}.git", api.api_url));
    ServiceView {
        url: service_url(api, &name),
        name,
        status,
        git_remote,
        active_revision: row.active_revision,
        target_revision: row.target_revision,
        desired_instances: row.desired_instances,
        paused: row.paused,
        instances: counts,
        latest_deployment: latest,
        spec: row.spec,
    }
}

fn service_url(api: &Api, name: &str) -> String {
    let host = slipway_core::service_host(name, &api.zone);
    if api.router_port == 80 {
        format!("http://{host}")
    } else {
        format!("http://{host}:{}", api.router_port)
    }
}

#[utoipa::path(get, path = "/v1/platform", description = "The platform: id, zone, router port, API URL, version.", responses((status = 200, description = "the platform", body = PlatformInfo), (status = 401, body = ErrorBody)))]
async fn platform(State(api): State<Api>) -> ApiResult<Json<PlatformInfo>> {
    Ok(Json(PlatformInfo {
        platform_id: api.platform_id.clone(),
        zone: api.zone.clone(),
        router_port: api.router_port,
        api_url: api.api_url.clone(),
        version: env!("CARGO_PKG_VERSION"),
        zone_certificate: api.platform.names.zone_cert(),
    }))
}

/// `GET /v1/platform`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PlatformInfo {
    /// This platform's id (the `slipway.platform` label of its containers).
    platform_id: String,
    /// Services answer at `<service>.<zone>`.
    zone: String,
    /// The router's HTTP port.
    router_port: u16,
    /// The API's base URL.
    api_url: String,
    /// Slipway's version.
    version: &'static str,
    /// The certificate of the zone's own names over HTTPS: `self-signed`, or with
    /// `--acme-zone` what became of `*.<zone>` from the ACME CA.
    zone_certificate: String,
}

/// What a change answers: the service now, and the revision it deploys, if any.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Updated {
    /// The service as it is now.
    service: ServiceView,
    /// The new revision that deploys the change (env, port, CPU, memory); null when the
    /// change applied at once.
    revision: Option<i64>,
}

/// `POST .../deploy`: the build that rebuilds a git service's branch head, or the
/// revision an image service deploys.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DeployStarted {
    /// A git service: the branch head is built again.
    Build {
        /// The build's id.
        build: i64,
        /// The commit it builds.
        commit: String,
    },
    /// An image service: this revision deploys.
    Revision {
        /// The revision.
        revision: i64,
    },
}

/// `POST .../rollback`: the revision deployed again and its deployment.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RollbackStarted {
    /// The revision.
    revision: i64,
    /// Its deployment's id.
    deployment: i64,
}

/// A secret set or removed: its name and the revision that deploys the change.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretChanged {
    /// The secret's name.
    name: String,
    /// The revision that deploys the change (null when nothing runs yet).
    revision: Option<i64>,
}

/// `POST .../pause` and `.../resume`: the state now, and whether this call changed it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PauseState {
    /// Whether the service is paused now.
    paused: bool,
    /// Whether this call changed it.
    changed: bool,
}

#[utoipa::path(get, path = "/v1/services", description = "Every service with its status.", responses((status = 200, body = [ServiceView]), (status = 401, body = ErrorBody)))]
async fn list_services(State(api): State<Api>) -> ApiResult<Json<Vec<ServiceView>>> {
    // The parsed rows of the store's snapshot, and one query for every service's newest
    // deployment: a thousand services list in a few milliseconds.
    let rows: Vec<ServiceRow> = api.platform.store.snapshot().services().cloned().collect();
    Ok(Json(
        api.platform
            .statuses(rows)?
            .into_iter()
            .map(|(row, (status, counts, latest))| view_of(&api, row, status, counts, latest))
            .collect(),
    ))
}

fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        if !ct.starts_with("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("send JSON (Content-Type: application/json), not {ct}"),
            ));
        }
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = platform::error_field(&e.path().to_string(), &e.inner().to_string());
        let e = e.into_inner();
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError(
            status,
            format!("invalid body: {e}"),
            e.is_data().then_some(field).flatten(),
        )
    })
}

#[utoipa::path(post, path = "/v1/services", description = "Create a service (an image service deploys at once).", request_body = ServiceSpec, responses((status = 201, body = ServiceView), (status = 409, description = "the name is taken", body = ErrorBody), (status = 422, description = "an invalid setting; `field` names it", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn create_service(
    State(api): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ServiceView>)> {
    let spec: ServiceSpec = json_body(&headers, &body)?;
    let row = api.platform.create_service(spec).await?;
    Ok((StatusCode::CREATED, Json(view(&api, row)?)))
}

#[utoipa::path(get, path = "/v1/services/{name}", description = "One service.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = ServiceView), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn show_service(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<ServiceView>> {
    let row = load(&api, &name)?;
    Ok(Json(view(&api, row)?))
}

/// `PATCH /v1/services/{name}` with a JSON merge patch of the spec: the service as it is
/// now, and `revision` when the change deploys a new one (env, port, CPU, memory).
#[utoipa::path(patch, path = "/v1/services/{name}", description = "Change settings with a JSON merge patch of the spec; env, port, CPU and memory changes deploy a new revision.", request_body = Object, params(("name" = String, Path, description = "the service")), responses((status = 200, description = "the service and the revision that deploys the change", body = Updated), (status = 422, body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn update_service(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Updated>> {
    let patch: serde_json::Value = json_body(&headers, &body)?;
    let (row, revision) = api.platform.update_service(&name, &patch).await?;
    Ok(Json(Updated {
        service: view(&api, row)?,
        revision,
    }))
}

#[utoipa::path(delete, path = "/v1/services/{name}", description = "Delete a service, its instances and everything recorded about it.", params(("name" = String, Path, description = "the service")), responses((status = 204), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn delete_service(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    api.platform.delete_service(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/services/{name}/deploy", description = "Deploy again: the image as it is now, or the branch head rebuilt.", params(("name" = String, Path, description = "the service")), responses((status = 202, description = "`{build, commit}` or `{revision}`", body = DeployStarted), (status = 409, body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn deploy(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<(StatusCode, Json<DeployStarted>)> {
    let body = match api.platform.deploy(&name).await? {
        platform::Deployed::Build { build, commit } => DeployStarted::Build { build, commit },
        platform::Deployed::Revision(revision) => DeployStarted::Revision { revision },
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    revision: Option<i64>,
}

#[utoipa::path(post, path = "/v1/services/{name}/rollback", description = "Deploy a kept revision again (default: the one before the active one).", request_body = RollbackBody, params(("name" = String, Path, description = "the service")), responses((status = 202, body = RollbackStarted), (status = 409, body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn rollback(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<RollbackStarted>)> {
    let req: RollbackBody = if body.is_empty() {
        RollbackBody::default()
    } else {
        json_body(&headers, &body)?
    };
    let done = api.platform.rollback(&name, req.revision)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RollbackStarted {
            revision: done.revision,
            deployment: done.deployment,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/services/{name}/revisions", description = "Revisions, newest first.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = [RevisionRow]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn revisions(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<slipway_store::RevisionRow>>> {
    let row = load(&api, &name)?;
    Ok(Json(api.platform.store.revisions(row.spec.name.as_str())?))
}

#[utoipa::path(get, path = "/v1/services/{name}/deployments", description = "Deployments, newest first.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = [DeploymentRow]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn deployments(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<slipway_store::DeploymentRow>>> {
    let row = load(&api, &name)?;
    Ok(Json(
        api.platform
            .store
            .deployments(row.spec.name.as_str(), 100)?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Entries after this id.
    #[serde(default)]
    after: i64,
    /// At most this many (1 to 1000, default 200).
    #[serde(default = "default_limit")]
    limit: i64,
    /// Only the steps of this deployment.
    deployment: Option<i64>,
}
fn default_limit() -> i64 {
    200
}

#[utoipa::path(get, path = "/v1/services/{name}/events", description = "The activity log (`after`: an id; `limit`: 1 to 1000).", params(("name" = String, Path, description = "the service"), EventsQuery), responses((status = 200, body = [EventRow]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn events(
    State(api): State<Api>,
    Path(name): Path<String>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<slipway_store::EventRow>>> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let row = load(&api, &name)?;
    let (service, limit) = (row.spec.name.as_str(), q.limit.clamp(1, 1000));
    let store = &api.platform.store;
    Ok(Json(match q.deployment {
        Some(d) => store.deployment_events(service, d, limit)?,
        None => store.events(service, q.after, limit)?,
    }))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// Lines after this id.
    after: Option<i64>,
    /// From this time (ms since the epoch).
    since: Option<i64>,
    /// To this time (ms since the epoch).
    until: Option<i64>,
    /// Lines holding this text.
    q: Option<String>,
    /// One instance's lines.
    instance: Option<String>,
    /// At most this many, the newest (1 to 10000, default 1000).
    limit: Option<u32>,
}

impl LogsQuery {
    fn store(self) -> slipway_store::AppLogQuery {
        slipway_store::AppLogQuery {
            after: self.after,
            since_ms: self.since,
            until_ms: self.until,
            text: self.q.filter(|t| !t.is_empty()),
            instance: self.instance,
            limit: self.limit,
        }
    }
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct MetricsQuery {
    /// `1h` (default), `6h`, `24h` or `7d`.
    period: Option<String>,
}

/// `GET /v1/services/{name}/metrics?period=1h|6h|24h|7d`: the service's history, one
/// point per interval (the finest kept for periods up to a day, 1 min beyond).
#[utoipa::path(get, path = "/v1/services/{name}/metrics", description = "The metrics history for a period (`1h`, `6h`, `24h`, `7d`).", params(("name" = String, Path, description = "the service"), MetricsQuery), responses((status = 200, description = "the points of the period", body = MetricsHistory), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn metrics_history(
    State(api): State<Api>,
    Path(name): Path<String>,
    q: Result<Query<MetricsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<MetricsHistory>> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let row = load(&api, &name)?;
    let hour = 3600 * 1000;
    let (span, res) = match q.period.as_deref().unwrap_or("1h") {
        "1h" => (hour, api.history_res_s),
        "6h" => (6 * hour, api.history_res_s),
        "24h" => (24 * hour, api.history_res_s),
        "7d" => (7 * 24 * hour, 60),
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("period {other:?}: use 1h, 6h, 24h or 7d"),
                Some("period".into()),
            ))
        }
    };
    let since = slipway_core::now_unix_ms() - span;
    let points = api
        .platform
        .store
        .metrics(row.spec.name.as_str(), res, since)?;
    Ok(Json(MetricsHistory {
        resolution_s: res,
        points,
    }))
}

/// A service's metrics history over a period.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MetricsHistory {
    /// Seconds each point covers.
    resolution_s: i64,
    /// Oldest first.
    points: Vec<slipway_store::MetricPoint>,
}

/// `GET /v1/services/{name}/logs`: the app's own output (every instance's stdout and
/// stderr), oldest first, searchable by time and text.
#[utoipa::path(get, path = "/v1/services/{name}/logs", description = "The app's own output, oldest first.", params(("name" = String, Path, description = "the service"), LogsQuery), responses((status = 200, body = [AppLogRow]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn app_logs(
    State(api): State<Api>,
    Path(name): Path<String>,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<slipway_store::AppLogRow>>> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let row = load(&api, &name)?;
    Ok(Json(
        api.platform
            .store
            .app_logs(row.spec.name.as_str(), &q.store())?,
    ))
}

/// `GET /v1/services/{name}/logs/stream`: the same lines as server-sent events (`data:`
/// one JSON line each, `id:` its cursor), then every new one as it is kept; a client
/// that reconnects with `Last-Event-ID` (or `?after=`) goes on from there.
#[utoipa::path(get, path = "/v1/services/{name}/logs/stream", description = "The app's output as server-sent events.", params(("name" = String, Path, description = "the service"), LogsQuery), responses((status = 200, content_type = "text/event-stream", body = String), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn app_logs_stream(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let row = load(&api, &name)?;
    let service = row.spec.name.to_string();
    let mut query = q.store();
    if let Some(id) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        query.after = Some(id);
    }
    // After the first page, every new line (up to the most a page holds).
    let fetch =
        move |store: &slipway_store::Store, service: &str, after: Option<i64>, first: bool| {
            let mut q = query.clone();
            q.after = after.or(q.after);
            if !first {
                q.limit = Some(10_000);
            }
            store.app_logs(service, &q)
        };
    Ok(follow_sse(
        api.platform.store.clone(),
        service,
        None,
        fetch,
        |r| r.id,
    ))
}

/// Server-sent events of what `fetch` reads from the store after a cursor: each row as
/// one JSON `data:` line with its id as the event id, the first page at once and then a
/// poll every 500 ms, until the service is deleted or the store fails.
fn follow_sse<T, F>(
    store: Arc<slipway_store::Store>,
    service: String,
    after: Option<i64>,
    fetch: F,
    id: fn(&T) -> i64,
) -> Response
where
    T: Serialize + Send + 'static,
    F: Fn(&slipway_store::Store, &str, Option<i64>, bool) -> slipway_store::Result<Vec<T>>
        + Send
        + Sync
        + 'static,
{
    use axum::response::sse::{Event, KeepAlive, Sse};
    let fetch = Arc::new(fetch);
    let start = (after, std::collections::VecDeque::<T>::new(), false);
    let stream = futures_util::stream::unfold(start, move |(mut after, mut ready, mut polled)| {
        let (store, service, fetch) = (store.clone(), service.clone(), fetch.clone());
        async move {
            loop {
                if let Some(r) = ready.pop_front() {
                    let ev = Event::default()
                        .id(id(&r).to_string())
                        .data(serde_json::to_string(&r).unwrap_or_default());
                    return Some((
                        Ok::<_, std::convert::Infallible>(ev),
                        (after, ready, polled),
                    ));
                }
                if polled {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                let first = !polled;
                polled = true;
                // Deleted: the stream ends.
                store.snapshot().service(&service)?;
                match fetch(&store, &service, after, first) {
                    Ok(rows) => {
                        if let Some(last) = rows.last() {
                            after = Some(id(last));
                        }
                        ready.extend(rows);
                    }
                    Err(e) => {
                        tracing::warn!("store: following {service}: {e}");
                        return None;
                    }
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /v1/services/{name}/events/stream`: the activity log as server-sent events (the
/// newest 200, then each new entry), resumable with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/services/{name}/events/stream", description = "The activity log as server-sent events (`Last-Event-ID` resumes).", params(("name" = String, Path, description = "the service")), responses((status = 200, description = "text/event-stream", content_type = "text/event-stream", body = String), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn events_stream(
    State(api): State<Api>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let row = load(&api, &name)?;
    let service = row.spec.name.to_string();
    // From the client's cursor, or the newest 200 first (the store gives the newest of
    // what is after the cursor).
    let after: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let fetch = |store: &slipway_store::Store, service: &str, after: Option<i64>, first: bool| {
        store.events(service, after.unwrap_or(0), if first { 200 } else { 1000 })
    };
    Ok(follow_sse(
        api.platform.store.clone(),
        service,
        after,
        fetch,
        |e| e.id,
    ))
}

#[utoipa::path(get, path = "/v1/services/{name}/builds", description = "The latest builds with their output.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = [BuildRow]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn builds(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<slipway_store::BuildRow>>> {
    let row = load(&api, &name)?;
    Ok(Json(api.platform.store.builds(row.spec.name.as_str(), 20)?))
}

/// `GET /v1/services/{name}/builds/{id}/stream`: one build's output as server-sent
/// events, as it is written: each `data:` a JSON `{"text": ...}` of the output since the
/// last (the event id is the byte offset after it; `Last-Event-ID` resumes there), then
/// one `end` event `{"state": ...}` once the build is over. Bounded: it ends after three
/// hours (longer than any build may run).
#[utoipa::path(get, path = "/v1/services/{name}/builds/{id}/stream", description = "One build's output as server-sent events while it runs, then an `end` event with its state.", params(("name" = String, Path, description = "the service"), ("id" = i64, Path, description = "the build")), responses((status = 200, content_type = "text/event-stream", body = String), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service or build", body = ErrorBody)))]
async fn build_stream(
    State(api): State<Api>,
    Path((name, id)): Path<(String, i64)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let row = load(&api, &name)?;
    let service = row.spec.name.to_string();
    let store = api.platform.store.clone();
    if store.build(&service, id)?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "service {service} has no build {id}: `slipway logs {service} --build` lists them"
            ),
        ));
    }
    let from: usize = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3 * 3600);
    // State: bytes sent so far, and whether the end was sent.
    let stream = futures_util::stream::unfold((from, false), move |(sent, ended)| {
        let (store, service) = (store.clone(), service.clone());
        async move {
            if ended {
                return None;
            }
            loop {
                let b = match store.build(&service, id) {
                    Ok(Some(b)) => b,
                    _ => return None, // gone with its service, or the store failed
                };
                let done = !slipway_core::BuildState::UNFINISHED.contains(&b.state);
                // A char boundary at or before the end: the log only grows.
                let mut at = sent.min(b.log.len());
                while !b.log.is_char_boundary(at) {
                    at -= 1;
                }
                if at < b.log.len() {
                    let event = Event::default()
                        .id(b.log.len().to_string())
                        .data(json!({ "text": &b.log[at..] }).to_string());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (b.log.len(), false),
                    ));
                }
                if done || tokio::time::Instant::now() >= deadline {
                    let event = Event::default()
                        .event("end")
                        .data(json!({ "state": b.state }).to_string());
                    return Some((Ok(event), (sent, true)));
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `POST /hooks/{name}`: a GitHub-style push webhook (`X-Hub-Signature-256:
/// sha256=<HMAC-SHA256 of the body>`) or a GitLab-style one (`X-Gitlab-Token`), keyed by
/// the service's `source.webhook_secret`. A wrong or missing proof is 401 and builds
/// nothing; a valid one polls the watched repository at once (202).
#[utoipa::path(post, path = "/hooks/{name}", description = "A push webhook (GitHub signature or GitLab token).", request_body = Object, params(("name" = String, Path, description = "the service")), responses((status = 202, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn webhook(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    // Unknown services are refused like bad signatures: a hook learns nothing.
    let row = api
        .platform
        .service(&name)
        .map_err(|_| unauthorized("webhook refused: bad or missing signature"))?;
    let Source::Git {
        branch,
        url,
        webhook_secret,
        ..
    } = &row.spec.source
    else {
        return Err(unauthorized("webhook refused: bad or missing signature"));
    };
    let secret = match webhook_secret {
        Some(n) => api.platform.store.secret(row.spec.name.as_str(), n)?,
        None => None,
    };
    let Some(secret) = secret else {
        return Err(unauthorized(
            "webhook refused: the service has no webhook secret set",
        ));
    };
    if !hooks::verify(&headers, &body, secret.as_bytes()) {
        return Err(unauthorized("webhook refused: bad or missing signature"));
    }
    if url.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("service {name} takes pushes to its own remote, not webhooks"),
        ));
    }
    match hooks::pushed_ref(&headers, &body) {
        hooks::Pushed::Ping => return Ok((StatusCode::OK, Json(json!({"ok": "pong"})))),
        // A branch that gets a preview polls too: the poll makes, updates or removes it.
        hooks::Pushed::Ref(r)
            if r != format!("refs/heads/{branch}")
                && !r
                    .strip_prefix("refs/heads/")
                    .is_some_and(|b| row.spec.previews.as_ref().is_some_and(|p| p.matches(b))) =>
        {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"ignored": format!("a push to {r}, not to {branch}")})),
            ))
        }
        _ => {}
    }
    api.platform.builder.trigger(row.spec);
    Ok((StatusCode::ACCEPTED, Json(json!({"polling": name}))))
}

#[utoipa::path(get, path = "/v1/services/{name}/secrets", description = "Secrets' names and when each was set (never values).", params(("name" = String, Path, description = "the service")), responses((status = 200, body = [SecretRow]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn secrets(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<slipway_store::SecretRow>>> {
    Ok(Json(api.platform.secrets(&name)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
}

/// `PUT /v1/services/{name}/secrets/{key}` with `{"value": "..."}`: the value is sealed
/// and never returned; the answer names the revision that deploys it.
#[utoipa::path(put, path = "/v1/services/{name}/secrets/{key}", description = "Set a secret (sealed; deploys a new revision).", request_body = SecretBody, params(("name" = String, Path, description = "the service"), ("key" = String, Path, description = "the secret's name")), responses((status = 200, body = SecretChanged), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn set_secret(
    State(api): State<Api>,
    headers: HeaderMap,
    Path((name, key)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SecretChanged>)> {
    let req: SecretBody = json_body(&headers, &body)?;
    let revision = api.platform.set_secret(&name, &key, &req.value).await?;
    Ok((
        StatusCode::OK,
        Json(SecretChanged {
            name: key,
            revision,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/services/{name}/secrets/{key}", description = "Remove a secret (deploys a new revision).", params(("name" = String, Path, description = "the service"), ("key" = String, Path, description = "the secret's name")), responses((status = 200, body = SecretChanged), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn unset_secret(
    State(api): State<Api>,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult<Json<SecretChanged>> {
    let revision = api.platform.unset_secret(&name, &key).await?;
    Ok(Json(SecretChanged {
        name: key,
        revision,
    }))
}

/// `POST /v1/services/{name}/pause`: `{"paused": true, "changed": bool}`.
#[utoipa::path(post, path = "/v1/services/{name}/pause", description = "Pause: instances stop, requests get a 503 page.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = PauseState), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn pause(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<Json<PauseState>> {
    let changed = api.platform.pause(&name)?;
    Ok(Json(PauseState {
        paused: true,
        changed,
    }))
}

/// `POST /v1/services/{name}/resume`: `{"paused": false, "changed": bool}`.
#[utoipa::path(post, path = "/v1/services/{name}/resume", description = "Resume a paused service.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = PauseState), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn resume(State(api): State<Api>, Path(name): Path<String>) -> ApiResult<Json<PauseState>> {
    let changed = api.platform.resume(&name)?;
    Ok(Json(PauseState {
        paused: false,
        changed,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DomainBody {
    domain: String,
}

/// `POST /v1/services/{name}/domains` with `{"domain": "www.example.com"}`: 201 with the
/// claim and the records to create (200 when the service already holds it).
#[utoipa::path(post, path = "/v1/services/{name}/domains", description = "Claim a custom domain; the answer lists the records to create.", request_body = DomainBody, params(("name" = String, Path, description = "the service")), responses((status = 201, body = DomainView), (status = 409, description = "claimed by another service", body = ErrorBody), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn add_domain(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<names::DomainView>)> {
    let req: DomainBody = json_body(&headers, &body)?;
    let before = api.platform.domains(&name)?.len();
    let view = api.platform.add_domain(&name, &req.domain)?;
    let after = api.platform.domains(&name)?.len();
    let status = if after > before {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

#[utoipa::path(get, path = "/v1/services/{name}/domains", description = "Custom domains with their state and records.", params(("name" = String, Path, description = "the service")), responses((status = 200, body = [DomainView]), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn list_domains(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<names::DomainView>>> {
    Ok(Json(api.platform.domains(&name)?))
}

#[utoipa::path(delete, path = "/v1/services/{name}/domains/{domain}", description = "Stop serving a domain; its certificate and key are deleted.", params(("name" = String, Path, description = "the service"), ("domain" = String, Path, description = "the domain")), responses((status = 200, body = DomainRemoved), (status = 400, description = "bad input", body = ErrorBody), (status = 401, description = "no or wrong token", body = ErrorBody), (status = 404, description = "no such service", body = ErrorBody)))]
async fn remove_domain(
    State(api): State<Api>,
    Path((name, domain)): Path<(String, String)>,
) -> ApiResult<Json<DomainRemoved>> {
    api.platform.remove_domain(&name, &domain)?;
    Ok(Json(DomainRemoved { removed: domain }))
}

/// `DELETE .../domains/{domain}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DomainRemoved {
    /// The domain no longer served.
    removed: String,
}

/// `/metrics` on the API address: behind the token like everything else there (scrapers
/// without it use `--metrics-addr`, see [`metrics_app`]).
#[utoipa::path(get, path = "/metrics", description = "Prometheus metrics (text/plain; version=0.0.4).", responses((status = 200, content_type = "text/plain", body = String), (status = 401, body = ErrorBody)))]
async fn metrics(State(api): State<Api>) -> Response {
    metrics_text(&api)
}

/// The metrics alone, without a token, for a separate scrape address (`slipway serve
/// --metrics-addr`, off unless set): only `GET /metrics` is served there.
pub fn metrics_app(api: Api) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(api): State<Api>| async move { metrics_text(&api) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "only /metrics is served here") })
        .with_state(api)
}

fn metrics_text(api: &Api) -> Response {
    match slipway_router::metrics::encode_text(&api.metrics) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::internal(format!("encoding metrics: {e}")).into_response(),
    }
}

async fn git_http(
    State(api): State<Api>,
    Path((repo, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    match git_inner(api, repo, path, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn git_inner(api: Api, repo: String, path: String, req: Request) -> ApiResult<Response> {
    let name = repo.strip_suffix(".git").unwrap_or(&repo);
    let row = load(&api, name)?;
    let method = req.method().clone();
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "git smart HTTP uses GET and POST",
        ));
    }
    let h = req.headers();
    let get = |k: header::HeaderName| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = get(header::CONTENT_TYPE);
    let content_encoding = get(header::CONTENT_ENCODING);
    let query = req.uri().query().unwrap_or("").to_string();
    let body = axum::body::to_bytes(req.into_body(), 512 << 20)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("push too large or cut short: {e}"),
            )
        })?;
    let out = api
        .platform
        .builder
        .git_http(
            &row.spec,
            GitRequest {
                method: method.to_string(),
                path: format!("/{path}"),
                query,
                content_type,
                content_encoding,
                body: body.to_vec(),
                user: "slipway".into(),
            },
        )
        .await;
    let mut resp = Response::builder().status(out.status);
    for (k, v) in out.headers {
        resp = resp.header(k, v);
    }
    resp.body(axum::body::Body::from(out.body))
        .map_err(ApiError::internal)
}
