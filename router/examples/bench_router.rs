//! The router standalone, for `bench/router.sh`: one service `bench` at
//! `bench.slipway.localhost` with one instance, plus N dummy services in the table.
//!
//! How to run:
//! `cargo run --release -p slipway-router --example bench_router -- 127.0.0.1:18083 127.0.0.1:18081 1000`
//! (listen address, backend address, number of extra dummy services, and optionally the
//! tokio runtime: `current` (default) or `multi`, and the request path: `fast` (default)
//! or `hyper`, which turns `RouterConfig::fast_path` off), then
//! `wrk -H 'Host: bench.slipway.localhost' http://127.0.0.1:18083/`.
//!
//! The dummy services make the host table as large as a busy installation's, to show that
//! routing cost does not grow with it. The instance limit is the maximum (200) so the
//! benchmark measures proxying, not queueing.

use std::net::SocketAddr;
use std::time::Duration;

use slipway_router::{InstanceRoute, Router, RouterConfig, ServiceRoute};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn arg<T: std::str::FromStr>(n: usize, default: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    std::env::args()
        .nth(n)
        .unwrap_or_else(|| default.to_owned())
        .parse()
        .map_err(|e| format!("argument {n}: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `current` (default): one thread runs everything, as nginx's `worker_processes 1`
    // does; `multi`: tokio's multi-thread scheduler, one worker per CPU it may use.
    let runtime: String = arg(4, "current")?;
    let rt = match runtime.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        other => return Err(format!("runtime {other:?}: expected current or multi").into()),
    };
    rt.block_on(run(runtime))
}

async fn run(runtime: String) -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = arg(1, "127.0.0.1:18083")?;
    let backend: SocketAddr = arg(2, "127.0.0.1:18081")?;
    let extra: usize = arg(3, "0")?;

    let path: String = arg(5, "fast")?;
    let fast_path = match path.as_str() {
        "fast" => true,
        "hyper" => false,
        other => return Err(format!("path {other:?}: expected fast or hyper").into()),
    };
    let router = Router::new(RouterConfig {
        fast_path,
        ..RouterConfig::default()
    });
    let mut bench = ServiceRoute::new(
        "bench",
        vec![InstanceRoute {
            id: "bench-1".into(),
            addr: backend,
        }],
    );
    bench.max_concurrency = 200;
    bench.queue_size = 1000;
    bench.request_timeout = Duration::from_secs(30);
    router.upsert_service(bench);
    for i in 0..extra {
        let mut r = ServiceRoute::new(
            format!("dummy-{i}"),
            vec![InstanceRoute {
                id: format!("dummy-{i}-1"),
                addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            }],
        );
        r.hosts = vec![format!("www.dummy-{i}.example.com")];
        router.upsert_service(r);
    }

    let listener = TcpListener::bind(listen).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    eprintln!(
        "bench_router: {listen} -> {backend}, {} services, {runtime} runtime, {path} path",
        extra + 1
    );
    router.serve(listener, shutdown).await?;
    Ok(())
}
