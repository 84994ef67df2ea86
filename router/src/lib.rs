//! Slipway's managed router: the one HTTP entry point in front of every service.
//!
//! It is a reverse proxy on hyper 1 that knows only a route table (host -> service ->
//! instance addresses), never Docker: the control plane pushes whole [`ServiceRoute`]s in
//! with [`Router::upsert_service`], and the router turns them into atomically swapped
//! snapshots. What makes it "managed" rather than a plain proxy is that it enforces the
//! service's contract with its instances: at most `max_concurrency` requests per instance
//! (exact counters, released when the response body ends), a bounded wait queue in front
//! of that, a cold-start gate that holds requests while a scaled-to-zero service wakes up
//! (and tells the scaler through the wake channel), and draining, so that an instance
//! taken out of the table finishes what it has before it is stopped ([`Router::wait_drained`]).
//! The autoscaler reads its input from [`Router::stats`].
//!
//! Modules: [`host`] parses hosts, `table` holds snapshots, `state` the counters that
//! survive them, `pool` the instance connections, `fast` the HTTP/1.1 fast path for plain
//! requests, `proxy` the hyper request path for everything else, [`error`] what the client
//! is told when it goes wrong.

mod admission;
mod buffer;
mod conn;
pub mod error;
mod fast;
pub mod host;
pub mod metrics;
mod pool;
mod proxy;
mod state;
mod table;
pub mod tls;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use conn::{ConnClock, Watchdog};
use http::Response;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::{Fault, ProxyError};
pub use proxy::RouterBody;

use state::{InstanceState, ServiceState};
use table::{ServiceEntry, Table};

/// How long [`Router::serve`] waits for open connections after shutdown is requested.
pub const SHUTDOWN_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// What an HTTP/2 prior-knowledge (h2c) client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Router-wide settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// DNS zone of the implied hosts: `<service>.<zone>` routes to `<service>`.
    /// Default `slipway.localhost`.
    pub zone: String,
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    /// Default 64 KiB. hyper cannot go below 8 KiB, so smaller values act as 8 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head, on new and kept-alive
    /// connections alike (slowloris guard). Default 10 s.
    pub header_read_timeout: Duration,
    /// Serve plain HTTP/1.1 requests on the hand-written fast path (`fast`), leaving
    /// the rest to hyper. Default true; false sends every request through hyper, which
    /// the tests use to keep both paths honest.
    pub fast_path: bool,
    /// Most idle keep-alive connections kept per instance (each path keeps its own list).
    /// Default 256; 0 opens a new connection to the instance for every request.
    pub pool_max_idle: usize,
}

impl RouterConfig {
    /// The largest request head either path accepts: `max_header_bytes`, at least 8 KiB
    /// (hyper cannot go below).
    pub(crate) fn head_limit(&self) -> usize {
        self.max_header_bytes.max(8192)
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            zone: "slipway.localhost".to_owned(),
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            fast_path: true,
            pool_max_idle: pool::DEFAULT_MAX_IDLE,
        }
    }
}

/// Everything the router needs to know about one service.
#[derive(Debug, Clone)]
pub struct ServiceRoute {
    /// Service name; `<name>.<zone>` always routes here.
    pub name: String,
    /// Extra host names (custom domains).
    pub hosts: Vec<String>,
    /// The ready instances; empty means scaled to zero.
    pub instances: Vec<InstanceRoute>,
    /// Concurrent requests per instance, 1..=200 (values outside are clamped).
    pub max_concurrency: usize,
    /// Requests that may wait for a slot (or for a cold start) at once.
    pub queue_size: usize,
    /// How long a request waits in the queue before 503.
    pub queue_timeout: Duration,
    /// Time from sending a request to receiving response headers before 504.
    pub request_timeout: Duration,
    /// Upgraded (WebSocket) connections close after this long with no bytes either way.
    pub idle_timeout: Duration,
    /// How long a request waits for a first instance before 503.
    pub cold_start_timeout: Duration,
    /// Speak h2c (prior knowledge) to the instances, as gRPC needs.
    pub http2: bool,
    /// Forward request header fields whose names hold `_`; by default they are dropped
    /// (nginx's `underscores_in_headers off`), since CGI/WSGI servers read
    /// `Transfer_Encoding` as `Transfer-Encoding`.
    pub underscores_in_headers: bool,
    /// Plain-HTTP requests get a 308 to HTTPS (when the router serves HTTPS).
    pub https_redirect: bool,
    /// HTTPS answers carry `Strict-Transport-Security: max-age=N` (0: none).
    pub hsts_max_age_s: u32,
    /// Paused by its user: every request gets a 503 page saying so, and none wakes it.
    pub paused: bool,
}

impl ServiceRoute {
    /// A route with App Runner-like defaults: 100 concurrent requests per instance, a queue
    /// of 100 waiting up to 10 s, 120 s to response headers, 300 s WebSocket idle time,
    /// 30 s for a cold start, HTTP/1.1 to the instances.
    pub fn new(name: impl Into<String>, instances: Vec<InstanceRoute>) -> Self {
        ServiceRoute {
            name: name.into(),
            hosts: Vec::new(),
            instances,
            max_concurrency: 100,
            queue_size: 100,
            queue_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            cold_start_timeout: Duration::from_secs(30),
            http2: false,
            underscores_in_headers: false,
            https_redirect: false,
            hsts_max_age_s: 0,
            paused: false,
        }
    }
}

/// Where ACME HTTP-01 answers live.
pub(crate) const ACME_PREFIX: &str = "/.well-known/acme-challenge/";

/// Upper bounds (seconds) of the router's latency buckets.
pub const LATENCY_BOUNDS_S: [f64; 14] = state::LATENCY_BUCKETS;

/// A service's response counters (see [`Router::counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
    /// Requests per latency bucket (not cumulative), `+Inf` last.
    pub latency: Vec<u64>,
}

/// One ready instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRoute {
    /// Stable id (the container id, say); counters and pools follow it across updates.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A service's load as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStats {
    /// Service name.
    pub name: String,
    /// Requests being served by its instances (including draining ones).
    pub in_flight: usize,
    /// Requests waiting in the queue or at the cold-start gate.
    pub queued: usize,
    /// Requests routed to the service since it was first added.
    pub requests_total: u64,
    /// Its instances, ready ones first in route order, then draining ones.
    pub instances: Vec<InstanceStats>,
}

/// One instance's load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStats {
    /// Instance id.
    pub id: String,
    /// Requests it is serving now (WebSocket tunnels count).
    pub in_flight: usize,
    /// Requests sent to it since it was first listed.
    pub requests_total: u64,
    /// No longer in the route table; finishing its in-flight requests.
    pub draining: bool,
}

/// State that only the control path touches, behind one mutex (never held across await).
#[derive(Default)]
struct Registry {
    services: HashMap<String, Arc<ServiceState>>,
    instances: HashMap<String, Arc<InstanceState>>,
    /// Active custom domains (`www.example.com`, `*.example.com`) and their services.
    domains: BTreeMap<String, String>,
}

/// The router. Cheap to share: hand out the `Arc` from [`Router::new`].
pub struct Router {
    config: RouterConfig,
    /// Instance-connection drivers: stopped once serving ends.
    background: state::Background,
    /// WebSocket and other upgrade tunnels: load like requests, waited for at shutdown
    /// within the drain deadline.
    tunnels: TaskTracker,
    /// hyper's tasks for the streams of client h2 connections: waited for with the
    /// connections.
    streams: state::Tracked,
    zone: String,
    table: ArcSwap<Table>,
    registry: Mutex<Registry>,
    wake: Mutex<Option<mpsc::Sender<String>>>,
    /// Answers with no service: [0] = 400, [1] = 404.
    unrouted: [AtomicU64; 2],
    /// The certificates HTTPS serves.
    certs: Arc<tls::Certs>,
    /// The public HTTPS port plain-HTTP requests are redirected to (0: no HTTPS).
    https_port: std::sync::atomic::AtomicU16,
    /// ACME HTTP-01 answers: token -> key authorization.
    acme: ArcSwap<HashMap<String, String>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.config)
            .field("services", &self.table.load().services.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with an empty route table.
    pub fn new(config: RouterConfig) -> Arc<Router> {
        let zone = host::normalize_host(&config.zone)
            .map(|z| z.into_owned())
            .unwrap_or_else(|_| config.zone.to_ascii_lowercase());
        Arc::new(Router {
            config,
            background: state::Background::default(),
            tunnels: TaskTracker::new(),
            streams: state::Tracked::default(),
            zone: zone.clone(),
            table: ArcSwap::from_pointee(Table::default()),
            registry: Mutex::new(Registry::default()),
            wake: Mutex::new(None),
            unrouted: Default::default(),
            certs: Arc::new(tls::Certs::new(&zone)),
            https_port: Default::default(),
            acme: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// The certificates HTTPS serves (chosen by SNI).
    pub fn certs(&self) -> &Arc<tls::Certs> {
        &self.certs
    }

    /// The public HTTPS port, for redirects of services that ask for them (`None`: no
    /// HTTPS, no redirects).
    pub fn set_https_port(&self, port: Option<u16>) {
        self.https_port.store(port.unwrap_or(0), Ordering::Relaxed);
    }

    fn https_port(&self) -> Option<u16> {
        match self.https_port.load(Ordering::Relaxed) {
            0 => None,
            p => Some(p),
        }
    }

    /// Answers `GET /.well-known/acme-challenge/<token>` on plain HTTP, for any host, with
    /// `key_authorization` (ACME HTTP-01); `None` stops answering it.
    pub fn set_acme_challenge(&self, token: &str, key_authorization: Option<&str>) {
        let mut m = (**self.acme.load()).clone();
        match key_authorization {
            Some(k) => m.insert(token.to_string(), k.to_string()),
            None => m.remove(token),
        };
        self.acme.store(Arc::new(m));
    }

    /// The key authorization for an HTTP-01 token, if one is being answered.
    pub(crate) fn acme_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(ACME_PREFIX)?;
        self.acme.load().get(token).cloned()
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Cold-start demand: when a request arrives for a service with no instances, the
    /// router `try_send`s the service name here (dropped when the channel is full) and holds
    /// the request.
    pub fn set_wake_sender(&self, tx: mpsc::Sender<String>) {
        if let Ok(mut w) = self.wake.lock() {
            *w = Some(tx);
        }
    }

    fn wake(&self, service: &str) {
        let tx = self.wake.lock().ok().and_then(|w| w.clone());
        if let Some(tx) = tx {
            if tx.try_send(service.to_owned()).is_err() {
                tracing::debug!(service, "wake channel full or closed; dropping wake");
            }
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters more than stopping routing, so recover the guard.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add or replace a service's route: one atomic swap of a whole new table. Instances
    /// the new route no longer lists start draining: no new requests, in-flight ones finish.
    pub fn upsert_service(&self, route: ServiceRoute) {
        let mut reg = self.registry();
        let state = Arc::clone(
            reg.services
                .entry(route.name.clone())
                .or_insert_with(|| Arc::new(ServiceState::new(route.name.clone()))),
        );
        let mut seen = HashSet::new();
        let mut instances = Vec::with_capacity(route.instances.len());
        for ir in &route.instances {
            if !seen.insert(ir.id.as_str()) {
                continue;
            }
            let inst = match reg.instances.get(&ir.id) {
                Some(i) if i.addr == ir.addr && i.service == route.name => Arc::clone(i),
                other => {
                    if let Some(old) = other {
                        old.draining.store(true, Ordering::Release);
                    }
                    let i = Arc::new(InstanceState::new(
                        ir.id.clone(),
                        route.name.clone(),
                        ir.addr,
                        self.background.clone(),
                        self.config.pool_max_idle,
                    ));
                    reg.instances.insert(ir.id.clone(), Arc::clone(&i));
                    i
                }
            };
            inst.draining.store(false, Ordering::Release);
            instances.push(inst);
        }
        let entry = Arc::new(ServiceEntry {
            max_concurrency: route.max_concurrency.clamp(1, 200),
            route,
            state: Arc::clone(&state),
            instances,
        });
        let mut services = self.table.load().services.clone();
        services.insert(entry.route.name.clone(), entry);
        self.swap(&mut reg, services);
        // Waiters re-read the table: instances may have appeared (cold start) or changed.
        state.notify.notify_waiters();
    }

    /// Replaces the custom domains served (active ones only): each host, or for
    /// `*.example.com` each name one label under it, routes to its service. A service's
    /// own `<name>.<zone>` always wins over a domain.
    pub fn set_domains(&self, domains: BTreeMap<String, String>) {
        let mut reg = self.registry();
        if reg.domains == domains {
            return;
        }
        reg.domains = domains;
        let services = self.table.load().services.clone();
        self.swap(&mut reg, services);
    }

    /// Remove a service: its host stops routing (404) and its instances drain. Requests
    /// waiting for it get 503.
    pub fn remove_service(&self, name: &str) {
        let mut reg = self.registry();
        let mut services = self.table.load().services.clone();
        if services.remove(name).is_none() {
            return;
        }
        self.swap(&mut reg, services);
        if let Some(state) = reg.services.remove(name) {
            state.notify.notify_waiters();
        }
    }

    /// Publish a new snapshot, then mark unlisted instances draining and forget idle ones.
    fn swap(&self, reg: &mut Registry, services: BTreeMap<String, Arc<ServiceEntry>>) {
        let mut table = Table::build(services, &self.zone, &reg.domains);
        // Swaps happen under the registry lock: generations never go backwards.
        table.generation = self.table.load().generation + 1;
        let listed: HashSet<&str> = table
            .services
            .values()
            .flat_map(|e| e.instances.iter().map(|i| i.id.as_str()))
            .collect();
        for inst in reg.instances.values() {
            if !listed.contains(inst.id.as_str()) {
                inst.draining.store(true, Ordering::Release);
            }
        }
        reg.instances.retain(|id, inst| {
            listed.contains(id.as_str()) || inst.in_flight.load(Ordering::Acquire) > 0
        });
        self.table.store(Arc::new(table));
    }

    /// Wait until the instance has no request in flight. True at once for an unknown or
    /// idle instance; false if `timeout` passes first.
    pub async fn wait_drained(&self, instance_id: &str, timeout: Duration) -> bool {
        let Some(inst) = self.registry().instances.get(instance_id).cloned() else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        // Bounded by the deadline: each turn waits for a wakeup or returns.
        loop {
            let notified = inst.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if inst.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return inst.in_flight.load(Ordering::Acquire) == 0;
            }
        }
    }

    /// Load per service and instance, services in name order.
    pub fn stats(&self) -> Vec<ServiceStats> {
        let table = self.table.load_full();
        let reg = self.registry();
        let mut draining: HashMap<&str, Vec<&Arc<InstanceState>>> = HashMap::new();
        for inst in reg.instances.values() {
            if inst.draining.load(Ordering::Acquire) {
                draining
                    .entry(inst.service.as_str())
                    .or_default()
                    .push(inst);
            }
        }
        let inst_stats = |i: &InstanceState| InstanceStats {
            id: i.id.clone(),
            in_flight: i.in_flight.load(Ordering::Acquire),
            requests_total: i.requests_total.load(Ordering::Relaxed),
            draining: i.draining.load(Ordering::Acquire),
        };
        table
            .services
            .values()
            .map(|e| {
                let mut instances: Vec<InstanceStats> =
                    e.instances.iter().map(|i| inst_stats(i)).collect();
                if let Some(d) = draining.get(e.route.name.as_str()) {
                    let mut d: Vec<InstanceStats> = d.iter().map(|i| inst_stats(i)).collect();
                    d.sort_by(|a, b| a.id.cmp(&b.id));
                    instances.extend(d);
                }
                ServiceStats {
                    name: e.route.name.clone(),
                    in_flight: e.state.in_flight.load(Ordering::Acquire),
                    queued: e.state.queued.load(Ordering::Acquire),
                    requests_total: e.state.requests_total.load(Ordering::Relaxed),
                    instances,
                }
            })
            .collect()
    }

    /// Each routed service's counters since it was first added: responses by status
    /// class and the latency histogram (per bucket, not cumulative; the bounds are
    /// [`LATENCY_BOUNDS_S`], then `+Inf`). What a history samples.
    pub fn counters(&self) -> Vec<(String, Counters)> {
        let table = self.table.load_full();
        table
            .services
            .values()
            .map(|e| {
                let st = &e.state;
                (
                    e.route.name.clone(),
                    Counters {
                        status: std::array::from_fn(|i| st.status[i].load(Ordering::Relaxed)),
                        latency: st
                            .latency
                            .buckets
                            .iter()
                            .map(|b| b.load(Ordering::Relaxed))
                            .collect(),
                    },
                )
            })
            .collect()
    }

    /// The generation of the route table requests use now: it increases with every
    /// published change.
    pub fn generation(&self) -> u64 {
        self.table.load().generation
    }

    /// The service a host routes to now, if any (the same lookup requests use).
    pub fn route_for_host(&self, host: &str) -> Option<String> {
        let host = host::normalize_host(host).ok()?;
        self.table
            .load()
            .lookup(host.as_ref())
            .map(|e| e.route.name.clone())
    }

    /// The router's metrics alone in the Prometheus text format (the platform registers
    /// the router as a collector in its one registry instead).
    pub fn metrics_text(self: &Arc<Self>) -> String {
        metrics::render(self)
    }

    fn unrouted_response(&self, e: &ProxyError) -> Response<RouterBody> {
        let resp = proxy::error_response(e);
        admission::record_unrouted(self, resp.status());
        resp
    }

    /// Accept and serve connections until `shutdown` is cancelled, then stop accepting and
    /// give open connections up to [`SHUTDOWN_DRAIN_DEADLINE`] to finish (hyper's graceful
    /// shutdown: idle keep-alive connections close, busy ones finish their request).
    ///
    /// A connection whose first bytes are not the start of the HTTP/2 preface is served by
    /// the HTTP/1.1 fast path (`fast`), which hands it to hyper's HTTP/1 connection at the
    /// first request it does not take (one `peek` decides); only h2c and the odd client
    /// whose first bytes leave it open go through hyper-util's protocol-sniffing `auto`
    /// builder, which wraps every read of the connection.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut h1 = http1::Builder::new();
        // The slowloris guard of these connections is `conn::Watchdog`, one timer per
        // connection instead of hyper's boxed sleep per request head.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(self.config.max_header_bytes.max(8192))
            .writev(false)
            .keep_alive(true);
        let builders = Arc::new((h1, self.auto_builder()));
        let conns = TaskTracker::new();
        while let Some((stream, peer)) = accept(&listener, &shutdown).await {
            conns.spawn(Arc::clone(&self).connection(
                stream,
                peer,
                Arc::clone(&builders),
                shutdown.clone(),
            ));
        }
        drop(listener);
        conns.close();
        self.tunnels.close();
        self.streams.0.close();
        let drained = async {
            conns.wait().await;
            self.tunnels.wait().await;
            self.streams.0.wait().await;
        };
        if tokio::time::timeout(SHUTDOWN_DRAIN_DEADLINE, drained)
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown drain deadline");
        }
        // Nothing is left to use the instance connections.
        if !self.background.stop(Duration::from_secs(1)).await {
            tracing::warn!("instance connections still closing after 1 s");
        }
        Ok(())
    }

    /// hyper-util's sniffing builder, as every path that is not the HTTP/1.1 fast path
    /// uses it.
    fn auto_builder(&self) -> auto::Builder<state::Tracked> {
        let mut auto = auto::Builder::new(self.streams.clone());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192))
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.config.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_secs(30));
        auto
    }

    /// Accepts HTTPS connections until `shutdown`, then gives open ones the same drain
    /// deadline as [`Router::serve`]. Each gets its certificate by SNI from
    /// [`Router::certs`] (self-signed until one is issued) and speaks h2 or http/1.1 as
    /// ALPN chose; requests are routed as on plain HTTP, with `X-Forwarded-Proto: https`.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.certs.server_config());
        let auto = Arc::new(self.auto_builder());
        let conns = TaskTracker::new();
        while let Some((stream, peer)) = accept(&listener, &shutdown).await {
            let (router, acceptor, auto, stop) = (
                Arc::clone(&self),
                acceptor.clone(),
                Arc::clone(&auto),
                shutdown.clone(),
            );
            conns.spawn(async move {
                let handshake = tokio::time::timeout(
                    router.config.header_read_timeout,
                    acceptor.accept(stream),
                );
                let tls = tokio::select! {
                    () = stop.cancelled() => return,
                    r = handshake => match r {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    },
                };
                let peer_ip = proxy::peer_ip_value(peer);
                router.serve_sniffed(tls, peer_ip, &auto, stop, true).await;
            });
        }
        drop(listener);
        conns.close();
        if tokio::time::timeout(SHUTDOWN_DRAIN_DEADLINE, conns.wait())
            .await
            .is_err()
        {
            tracing::warn!("https connections still open after the shutdown drain deadline");
        }
        Ok(())
    }

    /// Serve one accepted connection to its end (or to a graceful close at shutdown).
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        builders: Arc<(http1::Builder, auto::Builder<state::Tracked>)>,
        shutdown: CancellationToken,
    ) {
        let head_timeout = self.config.header_read_timeout;
        let peer_ip = proxy::peer_ip_value(peer);
        // The first bytes decide the protocol. A client that connects and sends nothing
        // is dropped after the header-read timeout, like one that sends half a head.
        let mut first = [0u8; H2_PREFACE.len()];
        let n = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(head_timeout, stream.peek(&mut first)) => match r {
                Ok(Ok(n)) if n > 0 => n,
                _ => return,
            },
        };
        if first[..n] != H2_PREFACE[..n] {
            let mut stream = stream;
            let prefix = if self.config.fast_path {
                match fast::serve(&self, &mut stream, peer_ip.as_bytes(), &shutdown).await {
                    fast::End::Closed => return,
                    fast::End::HandOff(prefix) => prefix,
                }
            } else {
                Vec::new()
            };
            let stream = fast::Prefixed::new(prefix, stream);
            let clock = ConnClock::new();
            let mut watchdog = Watchdog::new(Arc::clone(&clock), head_timeout);
            let router = self;
            let svc = service_fn(move |req| {
                proxy::handle(
                    Arc::clone(&router),
                    req,
                    peer_ip.clone(),
                    Some(clock.begin()),
                    false,
                )
            });
            let conn = builders
                .0
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let stop = shutdown.cancelled();
            tokio::pin!(stop);
            let mut stopping = false;
            let r = std::future::poll_fn(|cx| {
                if !stopping && stop.as_mut().poll(cx).is_ready() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if watchdog.poll_idle(cx).is_ready() {
                    tracing::debug!("no request head within the header-read timeout; closing");
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            })
            .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection error");
            }
            return;
        }
        // h2c, or too few bytes to tell: hyper-util sniffs.
        self.serve_sniffed(stream, peer_ip, &builders.1, shutdown, false)
            .await;
    }

    /// Serves a connection through hyper-util's sniffing builder: h2c, a client whose
    /// first bytes left the protocol open, and every HTTPS connection (after the
    /// handshake; ALPN or the preface picks h2).
    async fn serve_sniffed<I>(
        self: Arc<Self>,
        io: I,
        peer_ip: http::HeaderValue,
        auto: &auto::Builder<state::Tracked>,
        shutdown: CancellationToken,
        https: bool,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let head_timeout = self.config.header_read_timeout;
        // hyper-util sniffs h1 or h2. hyper's header_read_timeout
        // starts only once the protocol is known; the select below covers the sniffing
        // before it (half an h2 preface, then nothing).
        let first_request = Arc::new(Notify::new());
        let seen = Arc::clone(&first_request);
        let told = AtomicBool::new(false);
        let router = self;
        let svc = service_fn(move |req| {
            if !told.load(Ordering::Relaxed) {
                told.store(true, Ordering::Relaxed);
                seen.notify_one();
            }
            proxy::handle(Arc::clone(&router), req, peer_ip.clone(), None, https)
        });
        let conn = auto.serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut shut = false;
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r { tracing::debug!(error = %e, "connection error"); }
                return;
            }
            r = tokio::time::timeout(head_timeout, first_request.notified()) => {
                if r.is_err() { return; }
            }
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                shut = true;
            }
        }
        let r = if shut {
            conn.await
        } else {
            tokio::select! {
                r = &mut conn => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "connection error");
        }
    }
}

/// The next connection, with Nagle off; None once `shutdown` is cancelled. A failed
/// accept (usually EMFILE, or a connection reset before accept) backs off a little
/// instead of spinning, and serving goes on.
async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        return Some((stream, peer));
    }
}
