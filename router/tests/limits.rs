//! Concurrency limits, the bounded queue, draining and the cold-start gate.

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
use tokio::sync::{mpsc, Semaphore};

const HOST: &str = "web.slipway.localhost";

/// A backend that records how many requests it serves at once, and holds each one until
/// `gate` gives a permit.
async fn counting_backend(
    current: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    name: &'static str,
) -> std::net::SocketAddr {
    backend(move |_req| {
        let (current, max, gate) = (current.clone(), max.clone(), gate.clone());
        async move {
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            if let Ok(p) = gate.acquire().await {
                p.forget();
            }
            current.fetch_sub(1, Ordering::SeqCst);
            Response::new(full(name))
        }
    })
    .await
}

/// On a multi-thread runtime, against a backend that holds each request until the test
/// lets it go: without the limiter the five requests would all be in the backend at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_of_one_never_overlaps_and_queue_serves_all() {
    let (current, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(Semaphore::new(0));
    let b = counting_backend(current.clone(), max.clone(), gate.clone(), "a").await;
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![instance("a", b)]);
    r.max_concurrency = 1;
    r.queue_size = 10;
    t.router.upsert_service(r);

    let mut tasks = Vec::new();
    for _ in 0..5 {
        let addr = t.addr;
        tasks.push(tokio::spawn(async move { get(addr, HOST, "/").await }));
    }
    // One request is held in the backend and the other four wait in the router's queue.
    assert!(
        wait_for(Duration::from_secs(5), || {
            let s = t.router.stats();
            current.load(Ordering::SeqCst) == 1 && s[0].in_flight == 1 && s[0].queued == 4
        })
        .await,
        "one in the backend, four queued: {:?}",
        t.router.stats()
    );
    // Let them go one at a time, giving each a moment in which an overlap would show.
    for served in 1..=5 {
        gate.add_permits(1);
        assert!(
            wait_for(Duration::from_secs(5), || {
                let in_backend = usize::from(served < 5);
                current.load(Ordering::SeqCst) == in_backend
                    && t.router.stats()[0].queued == 4 - served.min(4)
            })
            .await,
            "after {served} released: {:?}",
            t.router.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(max.load(Ordering::SeqCst), 1, "two requests overlapped");
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.unwrap(), "a");
    }
    assert_eq!(max.load(Ordering::SeqCst), 1);
    let stats = t.router.stats();
    assert_eq!(stats[0].requests_total, 5);
    assert_eq!(stats[0].instances[0].requests_total, 5);
    assert_eq!(stats[0].in_flight, 0);
    assert_eq!(stats[0].queued, 0);
}

#[tokio::test]
async fn queue_full_gives_503_with_retry_after_at_once() {
    let (current, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(Semaphore::new(0));
    let b = counting_backend(current.clone(), max, gate.clone(), "a").await;
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![instance("a", b)]);
    r.max_concurrency = 1;
    r.queue_size = 1;
    r.queue_timeout = Duration::from_secs(30);
    t.router.upsert_service(r);

    let addr = t.addr;
    let first = tokio::spawn(async move { get(addr, HOST, "/").await });
    assert!(
        wait_for(Duration::from_secs(5), || current.load(Ordering::SeqCst)
            == 1)
        .await
    );
    let second = tokio::spawn(async move { get(addr, HOST, "/").await });
    let router = t.router.clone();
    assert!(wait_for(Duration::from_secs(5), || router.stats()[0].queued == 1).await);

    let started = Instant::now();
    let third = get(addr, HOST, "/").await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(third.headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "queue-full 503 must be immediate"
    );

    gate.add_permits(2);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    assert_eq!(second.await.unwrap().status, StatusCode::OK);
    let text = t.router.metrics_text();
    assert!(
        text.contains("slipway_router_requests_total{service=\"web\",class=\"2xx\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("slipway_router_requests_total{service=\"web\",class=\"5xx\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn queue_timeout_gives_503() {
    let (current, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate = Arc::new(Semaphore::new(0));
    let b = counting_backend(current.clone(), max, gate.clone(), "a").await;
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![instance("a", b)]);
    r.max_concurrency = 1;
    r.queue_timeout = Duration::from_millis(200);
    t.router.upsert_service(r);
    let addr = t.addr;
    let first = tokio::spawn(async move { get(addr, HOST, "/").await });
    assert!(
        wait_for(Duration::from_secs(5), || current.load(Ordering::SeqCst)
            == 1)
        .await
    );
    let second = get(addr, HOST, "/").await;
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers.contains_key("retry-after"));
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn slot_is_held_until_the_body_ends() {
    let (tx, rx) =
        mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let b = backend(move |_req| {
        let rx = rx.lock().unwrap().take();
        async move {
            let rx = rx.expect("one request only");
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|f| (f, rx))
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
    })
    .await;
    let t = start_router(RouterConfig::default()).await;
    t.router
        .upsert_service(route("web", vec![instance("a", b)]));

    let stream = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", HOST)
        .body(empty())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Headers are here, the body is not finished: the slot is still taken.
    assert_eq!(t.router.stats()[0].instances[0].in_flight, 1);
    tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
        .await
        .unwrap();
    drop(tx);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "part");
    let router = t.router.clone();
    assert!(wait_for(Duration::from_secs(5), || router.stats()[0].in_flight == 0).await);
}

#[tokio::test]
async fn drain_sends_new_requests_elsewhere_and_waits_for_in_flight() {
    let (cur_a, max_a) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let gate_a = Arc::new(Semaphore::new(0));
    let a = counting_backend(cur_a.clone(), max_a, gate_a.clone(), "A").await;
    let b = backend(|_req| async { Response::new(full("B")) }).await;
    let t = start_router(RouterConfig::default()).await;
    t.router
        .upsert_service(route("web", vec![instance("a", a)]));

    let addr = t.addr;
    let slow = tokio::spawn(async move { get(addr, HOST, "/slow").await });
    assert!(wait_for(Duration::from_secs(5), || cur_a.load(Ordering::SeqCst) == 1).await);

    t.router
        .upsert_service(route("web", vec![instance("b", b)]));
    for _ in 0..5 {
        let reply = get(addr, HOST, "/").await;
        assert_eq!(reply.body.unwrap(), "B");
    }
    let stats = t.router.stats();
    let a_stats = stats[0].instances.iter().find(|i| i.id == "a").unwrap();
    assert!(a_stats.draining);
    assert_eq!(a_stats.in_flight, 1);
    assert!(!t.router.wait_drained("a", Duration::from_millis(200)).await);

    let router = t.router.clone();
    let waiter =
        tokio::spawn(async move { router.wait_drained("a", Duration::from_secs(10)).await });
    gate_a.add_permits(1);
    let reply = slow.await.unwrap();
    assert_eq!(reply.body.unwrap(), "A");
    assert!(waiter.await.unwrap());
    assert!(t.router.wait_drained("a", Duration::ZERO).await);
    assert!(t.router.wait_drained("never-existed", Duration::ZERO).await);
}

#[tokio::test]
async fn cold_start_holds_request_until_an_instance_appears() {
    let t = start_router(RouterConfig::default()).await;
    let (tx, mut rx) = mpsc::channel(4);
    t.router.set_wake_sender(tx);
    t.router.upsert_service(route("web", vec![]));

    let addr = t.addr;
    let held = tokio::spawn(async move { get(addr, HOST, "/").await });
    let woken = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(woken.as_deref(), Some("web"));
    let router = t.router.clone();
    assert!(wait_for(Duration::from_secs(5), || router.stats()[0].queued == 1).await);

    let b = ok_backend().await;
    t.router
        .upsert_service(route("web", vec![instance("a", b)]));
    let reply = held.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.unwrap(), "ok");
    assert_eq!(t.router.stats()[0].queued, 0);
}

#[tokio::test]
async fn cold_start_times_out_with_503() {
    let t = start_router(RouterConfig::default()).await;
    let mut r = route("web", vec![]);
    r.cold_start_timeout = Duration::from_millis(300);
    t.router.upsert_service(r);
    let started = Instant::now();
    let reply = get(t.addr, HOST, "/").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers.contains_key("retry-after"));
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn removed_service_answers_404_and_its_waiters_503() {
    let t = start_router(RouterConfig::default()).await;
    t.router.upsert_service(route("web", vec![]));
    let addr = t.addr;
    let held = tokio::spawn(async move { get(addr, HOST, "/").await });
    let router = t.router.clone();
    assert!(wait_for(Duration::from_secs(5), || router.stats()[0].queued == 1).await);
    t.router.remove_service("web");
    assert_eq!(held.await.unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(addr, HOST, "/").await.status, StatusCode::NOT_FOUND);
    assert!(t.router.stats().is_empty());
}
