//! A minimal HTTP/1.1 keep-alive backend answering `ok`, for `bench/router.sh`.
//!
//! How to run: `cargo run --release -p slipway-router --example bench_backend -- 127.0.0.1:18081 [work-us] [wait-ms]`
//!
//! By default it does as little as hyper allows, so that a benchmark measures the proxy in
//! front of it, not the backend. With `work-us`, each request first burns that many
//! microseconds of CPU (a busy loop), standing in for an application that does some work:
//! the proxy's share of the cost is then what a real app's users would see. With
//! `wait-ms`, each request then waits that long without using the CPU (an app waiting on
//! its database): what bench/autoscale.sh uses, so that concurrency, not CPU, is what
//! its clients demand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned())
        .parse()
        .map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("listen address: {e}"),
            )
        })?;
    let work_us: u64 = match std::env::args().nth(2) {
        Some(w) => w.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("work-us: {e}"))
        })?,
        None => 0,
    };
    let work = Duration::from_micros(work_us);
    let wait = match std::env::args().nth(3) {
        Some(w) => Duration::from_millis(w.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("wait-ms: {e}"))
        })?),
        None => Duration::ZERO,
    };
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(move |_req| async move {
                if !work.is_zero() {
                    let start = Instant::now();
                    // Bounded by `work`.
                    while start.elapsed() < work {
                        std::hint::spin_loop();
                    }
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
