//! The API's handlers, called in-process with `tower::ServiceExt::oneshot` against an
//! in-memory store and the fake runtime: no Docker, no sockets.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use slipway_builder::Builder;
use slipway_console::{app, Api, Platform};
use slipway_deployer::Deployer;
use slipway_router::{Router, RouterConfig};
use slipway_runtime::fake::{FakeRuntime, Script};
use slipway_runtime::Runtime;
use slipway_store::Store;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Rig {
    api: Api,
    rt: FakeRuntime,
    _repos: TempDir,
}

/// A directory removed at the end of the test.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rig() -> Rig {
    let store = Arc::new(Store::memory().unwrap());
    let rt = FakeRuntime::new("test");
    let runtime: Arc<dyn Runtime> = Arc::new(rt.clone());
    let router = Router::new(RouterConfig::default());
    let shutdown = CancellationToken::new();
    let deployer = Deployer::new(
        store.clone(),
        runtime.clone(),
        router.clone(),
        shutdown.clone(),
    );
    let repos = TempDir(std::env::temp_dir().join(format!(
        "slipway-console-test-{}-{}",
        std::process::id(),
        fastrand_id()
    )));
    let wake: slipway_builder::Wake = {
        let d = deployer.clone();
        Arc::new(move |s: &str| d.wake(s))
    };
    let builder = Builder::new(
        store.clone(),
        runtime,
        repos.0.clone(),
        wake,
        shutdown,
        Default::default(),
    );
    let router_for_metrics = router.clone();
    let deployer_for_metrics = deployer.collector();
    let api = Api {
        platform: Platform {
            names: slipway_console::names::Names::new(
                slipway_console::names::NamesConfig {
                    zone: "slipway.localhost".into(),
                    public_ips: vec!["127.0.0.1".parse().unwrap()],
                    http_port: 8080,
                    https_port: None,
                    upstreams: vec!["127.0.0.1:9".parse().unwrap()],
                    check_every: std::time::Duration::from_secs(3600),
                    certs_dir: repos.0.join("certs"),
                },
                store.clone(),
                slipway_dns::Handler::new(),
                router.clone(),
            ),
            store,
            builder,
            deployer,
        },
        router,
        token: TOKEN.into(),
        zone: "slipway.localhost".into(),
        router_port: 8080,
        api_url: "http://127.0.0.1:7070".into(),
        metrics: {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(router_for_metrics));
            registry.register_collector(Box::new(deployer_for_metrics));
            Arc::new(registry)
        },
        platform_id: "test".into(),
        history_res_s: 10,
    };
    Rig {
        api,
        rt,
        _repos: repos,
    }
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Rig {
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = app(self.api.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, json, ctype)
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bearer = format!("Bearer {TOKEN}");
        let (s, v, _) = self.call(method, path, Some(&bearer), body).await;
        (s, v)
    }
}

impl Rig {
    /// `POST /v1/services` of a service deploying `image`.
    async fn create_image_service(&self, name: &str, image: &str) -> (StatusCode, Value) {
        let body = json!({"name": name, "source": {"type": "image", "image": image}});
        self.api(Method::POST, "/v1/services", Some(body)).await
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn one_auth_layer_guards_everything_but_healthz() {
    let rig = rig();
    let (s, body, _) = rig.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, body), (StatusCode::OK, Value::String("ok\n".into())));
    for path in [
        "/v1/platform",
        "/v1/services",
        "/v1/services/web",
        "/v1/services/web/events",
        "/metrics",
        "/git/web.git/info/refs?service=git-upload-pack",
    ] {
        let (s, body, _) = rig.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("token"),
            "{path}: {body}"
        );
        let wrong = format!("Bearer {}", "f".repeat(64));
        let (s, _, _) = rig.call(Method::GET, path, Some(&wrong), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}: a wrong token");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (s, _, _) = rig
        .call(Method::GET, "/v1/platform", Some(&bearer), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Basic is git's scheme: accepted on /git (the service does not exist: 404, past the
    // layer), not on the API.
    let b = basic("slipway", TOKEN);
    let (s, _, _) = rig
        .call(
            Method::GET,
            "/git/web.git/info/refs?service=git-upload-pack",
            Some(&b),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = rig.call(Method::GET, "/v1/platform", Some(&b), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = rig
        .call(
            Method::GET,
            "/git/web.git/info/refs",
            Some(&basic("x", "nope")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn create_show_and_delete_an_image_service() {
    let rig = rig();
    rig.rt.add_image("app:latest", Script::healthy());
    let (s, v) = rig.create_image_service("web", "app:latest").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "web");
    assert_eq!(v["url"], "http://web.slipway.localhost:8080");
    assert_eq!(v["git_remote"], Value::Null);
    assert_eq!(
        v["target_revision"], 1,
        "the image was recorded as revision 1"
    );
    let (s, v) = rig.create_image_service("web", "app:latest").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, list) = rig.api(Method::GET, "/v1/services", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, revs) = rig
        .api(Method::GET, "/v1/services/web/revisions", None)
        .await;
    assert_eq!((s, revs.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (s, _) = rig.api(Method::DELETE, "/v1/services/web", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = rig.api(Method::GET, "/v1/services/web", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["message"], "no service named web");
    assert_eq!(v["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_create_that_fails_leaves_nothing_behind() {
    let rig = rig();
    let (s, v) = rig.create_image_service("web", "missing:1").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing:1"),
        "{v}"
    );
    let (s, _) = rig.api(Method::GET, "/v1/services/web", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the half-made service was undone");
    // The name is free again.
    rig.rt.add_image("missing:1", Script::healthy());
    let (s, v) = rig.create_image_service("web", "missing:1").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_that_says_what_to_change() {
    let rig = rig();
    let bearer = format!("Bearer {TOKEN}");
    // Not JSON at all.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/services")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let resp = app(rig.api.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let cases = [
        (
            json!({"name": "Web!"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"name": "web", "port": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "port",
        ),
        (
            json!({"name": "web", "colour": "blue"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            json!({"name": "web", "scaling": {"min_size": 5, "max_size": 2}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "scaling.min_size",
        ),
    ];
    for (body, status, says) in cases {
        let (s, v) = rig
            .api(Method::POST, "/v1/services", Some(body.clone()))
            .await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
        let code = if status == StatusCode::BAD_REQUEST {
            "bad_request"
        } else {
            "invalid"
        };
        assert_eq!(v["error"]["code"], code, "{v}");
        if says.contains('.') {
            assert_eq!(v["error"]["field"], says, "the field at fault: {v}");
        }
    }
    let (s, v) = rig.api(Method::GET, "/v1/services/NOT_A_NAME", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _) = rig
        .api(Method::GET, "/v1/services/web/events?after=x", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = rig.api(Method::GET, "/v1/nothing", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rollback_picks_the_previous_revision_or_says_why_not() {
    let rig = rig();
    rig.rt.add_image("app:latest", Script::healthy());
    let (s, _) = rig.create_image_service("web", "app:latest").await;
    assert_eq!(s, StatusCode::CREATED);
    // Nothing serves yet: no active revision to roll back from.
    let (s, v) = rig
        .api(Method::POST, "/v1/services/web/rollback", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let store = &rig.api.platform.store;
    store.set_active_revision("web", 1).unwrap();
    let (s, v) = rig.api(Method::POST, "/v1/services/web/deploy", None).await;
    assert_eq!(
        (s, &v["revision"]),
        (StatusCode::ACCEPTED, &json!(2)),
        "{v}"
    );
    store.set_active_revision("web", 2).unwrap();
    let (s, v) = rig
        .api(Method::POST, "/v1/services/web/rollback", None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        v["revision"], 1,
        "the newest revision older than the active one"
    );
    let (s, v) = rig
        .api(
            Method::POST,
            "/v1/services/web/rollback",
            Some(json!({"revision": 9})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("kept revisions: 2, 1"),
        "{v}"
    );
    let (s, v) = rig
        .api(
            Method::POST,
            "/v1/services/web/rollback",
            Some(json!({"revison": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (_, deps) = rig
        .api(Method::GET, "/v1/services/web/deployments", None)
        .await;
    assert_eq!(deps[0]["kind"], "rollback");
}

#[tokio::test]
async fn git_services_deploy_their_branch_head_or_ask_for_a_push() {
    let rig = rig();
    let (s, v) = rig
        .api(Method::POST, "/v1/services", Some(json!({"name": "app"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["git_remote"], "http://127.0.0.1:7070/git/app.git");
    assert_eq!(v["status"], "waiting for a push");
    let (s, v) = rig.api(Method::POST, "/v1/services/app/deploy", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("push first"),
        "{v}"
    );
}

#[tokio::test]
async fn metrics_keep_their_content_type() {
    let rig = rig();
    let bearer = format!("Bearer {TOKEN}");
    let (s, body, ctype) = rig.call(Method::GET, "/metrics", Some(&bearer), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ctype, "text/plain; version=0.0.4");
    let text = body.as_str().unwrap();
    assert!(text.contains("# TYPE slipway_instances gauge"), "{text}");
    assert!(
        text.contains("# TYPE slipway_router_requests counter"),
        "{text}"
    );
}

#[tokio::test]
async fn updates_merge_into_the_spec_and_env_changes_make_a_revision() {
    let rig = rig();
    rig.rt.add_image("app:latest", Script::healthy());
    let (s, _) = rig.create_image_service("web", "app:latest").await;
    assert_eq!(s, StatusCode::CREATED);
    // Scaling applies to the running service: no new revision.
    let (s, v) = rig
        .api(
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"scaling": {"max_size": 7}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revision"], Value::Null);
    assert_eq!(v["service"]["spec"]["scaling"]["max_size"], 7);
    assert_eq!(
        v["service"]["spec"]["scaling"]["min_size"], 1,
        "the rest of scaling kept"
    );
    // env: a new revision of the same image, with the variable in its configuration.
    let (s, v) = rig
        .api(
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"env": {"GREETING": "hi", "MODE": "x"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revision"], 2, "{v}");
    let (_, revs) = rig
        .api(Method::GET, "/v1/services/web/revisions", None)
        .await;
    let newest = revs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == 2)
        .unwrap()
        .clone();
    assert_eq!(newest["spec"]["env"]["GREETING"], "hi", "{newest}");
    // A null removes a key (merge patch); the same settings again change nothing.
    let (_, v) = rig
        .api(
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"env": {"MODE": null}})),
        )
        .await;
    assert_eq!(v["revision"], 3);
    assert_eq!(v["service"]["spec"]["env"], json!({"GREETING": "hi"}));
    let (_, v) = rig
        .api(
            Method::PATCH,
            "/v1/services/web",
            Some(json!({"env": {"GREETING": "hi"}})),
        )
        .await;
    assert_eq!(v["revision"], Value::Null, "nothing changed: {v}");
    // Bad input: the field at fault, 4xx, and nothing changed.
    for (patch, field) in [
        (json!({"scaling": {"max_size": 0}}), "scaling.max_size"),
        (json!({"name": "other"}), "name"),
        (json!({"colour": "blue"}), "colour"),
        (json!([1, 2]), "body"),
        (json!({"preview_of": "other"}), "preview_of"),
    ] {
        let (s, v) = rig
            .api(Method::PATCH, "/v1/services/web", Some(patch.clone()))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {v}");
        assert_eq!(v["error"]["field"], field, "{patch}: {v}");
    }
    let (_, v) = rig.api(Method::GET, "/v1/services/web", None).await;
    assert_eq!(v["spec"]["scaling"]["max_size"], 7);
    // Nor can a new service say it previews another (its repository and secrets).
    let (s, v) = rig
        .api(
            Method::POST,
            "/v1/services",
            Some(json!({"name": "sneaky", "preview_of": "web"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "preview_of", "{v}");
    let (s, _) = rig
        .api(Method::PATCH, "/v1/services/nope", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token() {
    let rig = rig();
    let (s, v, _) = rig.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["openapi"].as_str().unwrap().starts_with("3.1"), "{v}");
    assert!(v["paths"]["/v1/services/{name}/logs"]["get"].is_object());
}

#[tokio::test]
async fn wrong_methods_and_missing_tokens_get_the_error_shape() {
    let rig = rig();
    let (s, v) = rig.api(Method::PUT, "/v1/services", Some(json!({}))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{v}");
    assert_eq!(v["error"]["code"], "method_not_allowed");
    for (m, path) in [
        (Method::POST, "/v1/services"),
        (Method::PATCH, "/v1/services/web"),
        (Method::PUT, "/v1/services/web/secrets/K"),
        (Method::DELETE, "/v1/services/web"),
        (Method::POST, "/v1/services/web/pause"),
    ] {
        let (s, v, _) = rig.call(m.clone(), path, None, Some(json!({}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {path}: {v}");
        assert_eq!(v["error"]["code"], "unauthorized", "{m} {path}");
    }
}

/// Rejections axum makes before a handler runs are in the error shape too: a body over
/// the limit (413), a path that is not UTF-8 (400), a body that is not JSON (400/415).
#[tokio::test]
async fn rejections_before_a_handler_get_the_error_shape() {
    let rig = rig();
    let big = json!({"name": "web", "pad": "x".repeat(2 << 20)});
    let (s, v) = rig.api(Method::POST, "/v1/services", Some(big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["error"]["code"], "too_large", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    let (s, v) = rig.api(Method::GET, "/v1/services/%FF%FE", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    let bearer = format!("Bearer {TOKEN}");
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/services")
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::from("name=web"))
        .unwrap();
    let resp = app(rig.api.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    assert!(status.is_client_error(), "{status}");
    assert!(v["error"]["message"].is_string(), "{v}");
    // The console's sign-in is guarded the same way.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/console/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("x".repeat(64 << 10)))
        .unwrap();
    let resp = app(rig.api.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["code"], "too_large", "{v}");
}
