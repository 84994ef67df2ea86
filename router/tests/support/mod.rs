//! Test support: a router on an ephemeral port, in-process backends (well-behaved hyper
//! ones and hostile raw-TCP ones), a small client, and `wait_for` instead of sleeps.
#![allow(dead_code, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use slipway_router::{InstanceRoute, Router, RouterConfig, ServiceRoute};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> TestBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A running router; cancels itself when dropped.
pub struct TestRouter {
    pub router: Arc<Router>,
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start a router. With `SLIPWAY_ROUTER_PATH=hyper` in the environment its HTTP/1.1 fast
/// path is off, so that `scripts/test.sh` can run the same suites through the hyper path.
pub async fn start_router(mut config: RouterConfig) -> TestRouter {
    if std::env::var("SLIPWAY_ROUTER_PATH").as_deref() == Ok("hyper") {
        config.fast_path = false;
    }
    let router = Router::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&router).serve(listener, shutdown.clone()));
    TestRouter {
        router,
        addr,
        shutdown,
        task,
    }
}

pub fn instance(id: &str, addr: SocketAddr) -> InstanceRoute {
    InstanceRoute {
        id: id.to_owned(),
        addr,
    }
}

pub fn route(name: &str, instances: Vec<InstanceRoute>) -> ServiceRoute {
    let mut r = ServiceRoute::new(name, instances);
    r.request_timeout = Duration::from_secs(10);
    r.queue_timeout = Duration::from_secs(10);
    r.cold_start_timeout = Duration::from_secs(10);
    r
}

/// An HTTP/1.1 backend running `handler` for every request.
pub async fn backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = handler.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A backend that answers "ok".
pub async fn ok_backend() -> SocketAddr {
    backend(|_req| async { Response::new(full("ok")) }).await
}

/// A raw TCP backend: `script` gets each accepted connection.
pub async fn raw_backend<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(script.clone()(stream));
        }
    });
    addr
}

/// Read a request head (up to the blank line) from a raw connection.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 1 << 20 {
        match stream.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Result<Bytes, hyper::Error>,
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn send(router: SocketAddr, req: Request<TestBody>) -> Result<Reply, hyper::Error> {
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tx.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes());
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub async fn get(router: SocketAddr, host: &str, path: &str) -> Reply {
    let req = Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap();
    send(router, req).await.expect("router answered")
}

/// Write raw bytes to the router and read until it closes (bounded by `limit`).
pub async fn raw_exchange(router: SocketAddr, bytes: &[u8], limit: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(router).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    out
}

/// Poll `cond` every few milliseconds until it holds or `limit` passes.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
