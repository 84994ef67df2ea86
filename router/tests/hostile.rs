//! Hostile backends and hostile clients: one scenario each, and never a panic.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use slipway_router::RouterConfig;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "web.slipway.localhost";

async fn router_for(backend: std::net::SocketAddr, request_timeout: Duration) -> TestRouter {
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![instance("a", backend)]);
    r.request_timeout = request_timeout;
    r.idle_timeout = Duration::from_secs(10);
    t.router.upsert_service(r);
    t
}

/// Read from `s` until `needle` has arrived, or fail after `limit`.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8], limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .expect("timed out waiting for data")
            .expect("read failed");
        assert!(
            n > 0,
            "closed before {:?} arrived; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn reset_before_headers_is_502() {
    let b = raw_backend(|mut s| async move {
        read_head(&mut s).await;
        // RST instead of FIN.
        let _ = socket2_linger_zero(&s);
        drop(s);
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    let reply = get(t.addr, HOST, "/").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
}

/// Make the next close an abortive one (RST).
fn socket2_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO))
}

#[tokio::test]
async fn close_before_headers_is_502() {
    let b = raw_backend(|mut s| async move {
        read_head(&mut s).await;
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    assert_eq!(get(t.addr, HOST, "/").await.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn connect_refused_is_502() {
    // Bind then drop: the port is (almost certainly) closed.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let t = router_for(addr, Duration::from_secs(5)).await;
    assert_eq!(get(t.addr, HOST, "/").await.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn never_answering_is_504() {
    let b = raw_backend(|mut s| async move {
        read_head(&mut s).await;
        // Hold the connection open until the router gives up and closes it.
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut sink)).await;
    })
    .await;
    let t = router_for(b, Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = get(t.addr, HOST, "/").await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn death_mid_body_aborts_the_client_connection() {
    // Both framings: a short Content-Length body and an unterminated chunked body.
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"[..],
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"[..],
    ] {
        let b = raw_backend(move |mut s| async move {
            read_head(&mut s).await;
            let _ = s.write_all(reply).await;
            let _ = s.flush().await;
        })
        .await;
        let t = router_for(b, Duration::from_secs(5)).await;
        let got = get(t.addr, HOST, "/").await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(
            got.body.is_err(),
            "a truncated body must not look complete: {:?}",
            got.body
        );
        let router = t.router.clone();
        assert!(wait_for(Duration::from_secs(5), || router.stats()[0].in_flight == 0).await);
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_dropped_and_connection_not_reused() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let b = raw_backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            // Serve requests on this connection until it closes (at most a few).
            for _ in 0..4 {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                if s.write_all(reply).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    for _ in 0..2 {
        let reply = get(t.addr, HOST, "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.headers.contains_key("content-length"));
        assert_eq!(reply.body.unwrap(), "hello");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a CL+TE connection must not be reused"
    );
}

/// A backend answering `ok` to up to 10 requests per connection, and the count of the
/// connections it accepted.
async fn counting_keep_alive_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let b = raw_backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            for _ in 0..10 {
                if read_head(&mut s).await.is_empty() {
                    return;
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    (b, accepted)
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (b, accepted) = counting_keep_alive_backend().await;
    let t = router_for(b, Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert_eq!(get(t.addr, HOST, "/").await.body.unwrap(), "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// `pool_max_idle: 0` keeps no connection to the instance: every request opens its own,
/// on both paths (the setting `bench/product.sh` measures as a lever).
#[tokio::test]
async fn a_pool_of_zero_keeps_no_connection() {
    let (b, accepted) = counting_keep_alive_backend().await;
    let t = start_router(RouterConfig {
        pool_max_idle: 0,
        ..RouterConfig::default()
    })
    .await;
    t.router
        .upsert_service(route("web", vec![instance("a", b)]));
    for _ in 0..3 {
        assert_eq!(get(t.addr, HOST, "/").await.body.unwrap(), "ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// An instance that answers the first request on a connection, then reads the second and
/// closes without answering: the close reaches the router only after it has sent the
/// request on its pooled connection. A GET (idempotent, no body) is sent again on a new
/// connection and gets 200; a POST is not sent twice and gets 502. Runs on both request
/// paths (`SLIPWAY_ROUTER_PATH=hyper` in scripts/test.sh).
#[tokio::test]
async fn request_on_a_connection_the_instance_just_closed() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (counter, post_counter) = (accepted.clone(), posts.clone());
    let b = raw_backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        let posts = post_counter.clone();
        async move {
            // Bounded: two requests per connection at most.
            for nth in 0..2 {
                let head = read_head(&mut s).await;
                if head.is_empty() {
                    return;
                }
                if head.starts_with("POST") {
                    posts.fetch_add(1, Ordering::SeqCst);
                }
                if nth == 1 {
                    return;
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    assert_eq!(get(t.addr, HOST, "/").await.status, StatusCode::OK);
    // Give the router time to pool the connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = get(t.addr, HOST, "/again").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // The second connection is now pooled after one answer: a POST meets the close.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = http::Request::post("/submit")
        .header("host", HOST)
        .body(full("x"))
        .unwrap();
    let reply = send(t.addr, req).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(posts.load(Ordering::SeqCst), 1, "the POST was sent twice");
}

#[tokio::test]
async fn idle_connection_closed_by_the_instance_is_not_reused() {
    // The instance answers one request per connection and then closes it without saying
    // so (no `Connection: close`). The router's pooled connection has no task watching it:
    // it must notice the close when it takes the connection out, and open a fresh one
    // instead of answering 502.
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let b = raw_backend(move |mut s| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if read_head(&mut s).await.is_empty() {
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    for _ in 0..3 {
        let reply = get(t.addr, HOST, "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), "ok");
        // Let the instance's FIN arrive before the next checkout.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn switching_protocols_then_data_is_tunnelled() {
    let b = raw_backend(|mut s| async move {
        let head = read_head(&mut s).await.to_ascii_lowercase();
        assert!(head.contains("upgrade: foo"), "{head}");
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nhello from backend")
            .await;
        // Echo whatever comes next.
        let mut buf = [0u8; 1024];
        for _ in 0..100 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    s.write_all(
        format!("GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    read_until(
        &mut s,
        &mut buf,
        b"hello from backend",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut echo = Vec::new();
    read_until(
        &mut s,
        &mut echo,
        b"ping-through-tunnel",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(t.router.stats()[0].in_flight, 1, "a tunnel holds its slot");
    drop(s);
    let router = t.router.clone();
    assert!(wait_for(Duration::from_secs(5), || router.stats()[0].in_flight == 0).await);
}

#[tokio::test]
async fn upgrade_refused_by_backend_is_a_normal_response() {
    let b = backend(|_req| async { Response::new(full("no upgrade here")) }).await;
    let t = router_for(b, Duration::from_secs(5)).await;
    let req = http::Request::get("/")
        .header("host", HOST)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .unwrap();
    let reply = send(t.addr, req).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.unwrap(), "no upgrade here");
}

#[tokio::test]
async fn slow_drip_body_arrives_complete() {
    let b = backend(|_req| async {
        let stream = futures_util::stream::unfold(0u32, |i| async move {
            if i == 20 {
                return None;
            }
            // Simulated slowness of the backend, not synchronisation.
            tokio::time::sleep(Duration::from_millis(15)).await;
            let frame: Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>> =
                Ok(Frame::data(Bytes::from(format!("{i:02},"))));
            Some((frame, i + 1))
        });
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    let reply = get(t.addr, HOST, "/").await;
    let expected: String = (0..20).map(|i| format!("{i:02},")).collect();
    assert_eq!(reply.body.unwrap(), expected);
}

#[tokio::test]
async fn huge_response_headers_are_502() {
    let b = raw_backend(|mut s| async move {
        read_head(&mut s).await;
        let mut reply = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        reply.extend(std::iter::repeat_n(b'a', 1 << 20));
        reply.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
        let _ = s.write_all(&reply).await;
    })
    .await;
    let t = router_for(b, Duration::from_secs(5)).await;
    assert_eq!(get(t.addr, HOST, "/").await.status, StatusCode::BAD_GATEWAY);
    // The router is still fine afterwards.
    assert_eq!(
        get(t.addr, "nope.slipway.localhost", "/").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn huge_request_headers_are_431() {
    let b = ok_backend().await;
    let t = start_router(RouterConfig {
        max_header_bytes: 16 * 1024,
        ..RouterConfig::default()
    })
    .await;
    t.router
        .upsert_service(route("web", vec![instance("a", b)]));
    let big = "a".repeat(32 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n");
    let out = raw_exchange(t.addr, req.as_bytes(), Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 431"), "{text:?}");
    // And a request under the limit still works.
    assert_eq!(get(t.addr, HOST, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn slowloris_is_disconnected_after_header_read_timeout() {
    let t = start_router(RouterConfig {
        header_read_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    })
    .await;
    for partial in [
        &b"GET / HTTP/1.1\r\nHost: web.slipway.localhost\r\nX-A: "[..],
        b"",
        b"PRI * HTTP/2.0\r\n",
    ] {
        let started = Instant::now();
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let mut out = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(
            r.is_ok(),
            "connection still open after 5 s with {partial:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}

#[tokio::test]
async fn garbage_requests_never_kill_the_router() {
    let b = ok_backend().await;
    let t = router_for(b, Duration::from_secs(5)).await;
    let inputs: [&[u8]; 6] = [
        b"\x00\x01\x02\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a..b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: web.slipway.localhost\r\nHost: other\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET http://web.slipway.localhost:99999/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
    ];
    for input in inputs {
        let out = raw_exchange(t.addr, input, Duration::from_secs(1)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 4"),
            "{input:?} -> {text:?}"
        );
    }
    assert_eq!(get(t.addr, HOST, "/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn slowloris_after_a_kept_alive_request_is_disconnected() {
    // The guard is one clock per connection: a connection that served a request and then
    // drips half a head is closed within two header-read periods; one that keeps sending
    // whole requests, or waits on a slow response, is not.
    let b = backend(|req| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        Response::new(full("ok"))
    })
    .await;
    let t = start_router(RouterConfig {
        header_read_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    })
    .await;
    t.router
        .upsert_service(route("web", vec![instance("a", b)]));
    let mut s = TcpStream::connect(t.addr).await.unwrap();
    let mut buf = Vec::new();
    // Busy for four periods, then a response slower than two periods.
    for path in ["/", "/", "/", "/", "/", "/", "/slow"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        buf.clear();
        read_until(&mut s, &mut buf, b"\r\n\r\nok", Duration::from_secs(5)).await;
        if path == "/" {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ").await.unwrap();
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "kept-alive slowloris still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
}
