//! Routing by host and header rewriting.

mod support;

use std::time::Duration;

use http::{Request, Response, StatusCode};
use slipway_router::RouterConfig;
use support::*;

/// A backend that answers with its name, the request target and every header it got.
async fn echo_backend(name: &'static str) -> std::net::SocketAddr {
    backend(move |req| async move {
        let mut out = format!("{name}\n{}\n", req.uri());
        for (k, v) in req.headers() {
            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        let mut resp = Response::new(full(out));
        // Hop-by-hop on the way back too.
        resp.headers_mut()
            .insert("connection", "x-backend-secret".parse().unwrap());
        resp.headers_mut()
            .insert("x-backend-secret", "1".parse().unwrap());
        resp.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        resp
    })
    .await
}

async fn two_services() -> TestRouter {
    let web = echo_backend("web").await;
    let api = echo_backend("api").await;
    let t = start_router(RouterConfig::default()).await;
    t.router
        .upsert_service(route("web", vec![instance("w", web)]));
    let mut r = route("api", vec![instance("a", api)]);
    r.hosts = vec!["API.Example.com".into()];
    t.router.upsert_service(r);
    t
}

fn body(reply: Reply) -> String {
    String::from_utf8(reply.body.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn unknown_host_is_404_from_slipway() {
    let t = two_services().await;
    let reply = get(t.addr, "nobody.slipway.localhost", "/").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let text = body(reply);
    assert!(text.starts_with("slipway:"), "{text}");
    assert!(text.len() < 100);
    assert_eq!(
        get(t.addr, "example.org", "/").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(t
        .router
        .metrics_text()
        .contains("slipway_router_unrouted_requests_total{code=\"404\"} 2"));
}

#[tokio::test]
async fn host_is_case_port_and_trailing_dot_insensitive() {
    let t = two_services().await;
    for host in [
        "web.slipway.localhost",
        "WEB.Slipway.LOCALHOST",
        "web.slipway.localhost:8080",
        "web.slipway.localhost.",
        "Web.Slipway.Localhost.:80",
    ] {
        let reply = get(t.addr, host, "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}");
        assert!(body(reply).starts_with("web\n"), "{host}");
    }
    for host in [
        "api.example.com",
        "api.EXAMPLE.com:443",
        "api.slipway.localhost",
    ] {
        assert!(
            body(get(t.addr, host, "/").await).starts_with("api\n"),
            "{host}"
        );
    }
}

#[tokio::test]
async fn missing_or_invalid_host_is_400() {
    let t = two_services().await;
    let out = raw_exchange(t.addr, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(2)).await;
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.0 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        get(t.addr, "bad host", "/").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(t.addr, "a..b", "/").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn absolute_form_authority_wins_over_host() {
    let t = two_services().await;
    let req = Request::get("http://api.slipway.localhost/path?q=1")
        .header("host", "web.slipway.localhost")
        .body(empty())
        .unwrap();
    let reply = send(t.addr, req).await.unwrap();
    let text = body(reply);
    assert!(text.starts_with("api\n/path?q=1\n"), "{text}");
}

#[tokio::test]
async fn forwarded_headers_are_set_by_the_router() {
    let t = two_services().await;
    let req = Request::get("/x")
        .header("host", "Web.slipway.localhost:8080")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .body(empty())
        .unwrap();
    let text = body(send(t.addr, req).await.unwrap());
    assert!(text.contains("x-forwarded-for: 127.0.0.1\n"), "{text}");
    assert!(!text.contains("6.6.6.6"), "{text}");
    assert!(text.contains("x-forwarded-proto: http\n"), "{text}");
    assert!(
        text.contains("x-forwarded-host: Web.slipway.localhost:8080\n"),
        "{text}"
    );
    assert!(
        text.contains("host: Web.slipway.localhost:8080\n"),
        "the original Host is kept: {text}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_never_cross() {
    let t = two_services().await;
    let req = Request::get("/")
        .header("host", "web.slipway.localhost")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-kept", "yes")
        .body(empty())
        .unwrap();
    let reply = send(t.addr, req).await.unwrap();
    assert!(!reply.headers.contains_key("x-backend-secret"));
    assert!(!reply.headers.contains_key("keep-alive"));
    let text = body(reply);
    assert!(!text.contains("x-secret"), "{text}");
    assert!(!text.contains("keep-alive"), "{text}");
    assert!(!text.contains("proxy-authorization"), "{text}");
    assert!(!text.contains("\nte:"), "{text}");
    assert!(text.contains("x-kept: yes"), "{text}");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_serve_returns() {
    let mut t = two_services().await;
    assert_eq!(
        get(t.addr, "web.slipway.localhost", "/").await.status,
        StatusCode::OK
    );
    t.shutdown.cancel();
    let task = &mut t.task;
    let result = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returned within 5 s")
        .expect("serve task did not panic");
    assert!(result.is_ok());
    assert!(tokio::net::TcpStream::connect(t.addr).await.is_err());
}
