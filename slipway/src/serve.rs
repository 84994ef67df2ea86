//! `slipway serve`: wiring.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use slipway_builder::Builder;
use slipway_console::Api;
use slipway_deployer::Deployer;
use slipway_router::{Router, RouterConfig};
use slipway_runtime::{DockerRuntime, Runtime};
use slipway_scaler::{Load, Scaler};
use slipway_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shutdown deadlines, one per part, all counted from the signal. The router keeps its
/// promise to open connections (`SHUTDOWN_DRAIN_DEADLINE`, 30 s) plus a little for the
/// last responses to be written.
const ROUTER_SHUTDOWN_DEADLINE: Duration =
    Duration::from_secs(slipway_router::SHUTDOWN_DRAIN_DEADLINE.as_secs() + 2);
/// The API finishes its requests in flight (a git push among them) in the same time.
const API_SHUTDOWN_DEADLINE: Duration = ROUTER_SHUTDOWN_DEADLINE;
/// Workers stop between steps and leave their instances running for the next start.
const WORKERS_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// A build in progress stops; it is recorded as running, and the next start builds it
/// again.
const BUILDS_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);
/// The scaler's loop and the cold-start wake loop end at their next turn.
const LOOPS_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(2);

/// Flags of `slipway serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// State directory: the SQLite store, the API token, hosted git repositories.
    #[arg(long, env = "SLIPWAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the API (and the git remote) listens.
    #[arg(long, env = "SLIPWAY_API_ADDR", default_value = "127.0.0.1:7070")]
    api_addr: SocketAddr,
    /// Where the router listens for app traffic.
    #[arg(long, env = "SLIPWAY_ROUTER_ADDR", default_value = "127.0.0.1:8080")]
    router_addr: SocketAddr,
    /// Threads of the router's own: each runs a current-thread runtime accepting on the
    /// router's socket, apart from the control plane's runtime (docs/BENCHMARKS.md,
    /// "the router on the product path", measured the gain). `0` serves it on the shared
    /// runtime instead. Default: the CPUs this process may run on.
    #[arg(long, env = "SLIPWAY_ROUTER_THREADS")]
    router_threads: Option<usize>,
    /// Most idle keep-alive connections the router keeps to each instance; 0 opens one per
    /// request. More than the clients in flight at once gains nothing (docs/BENCHMARKS.md,
    /// "the router on the product path", measured it).
    #[arg(long, env = "SLIPWAY_ROUTER_POOL_IDLE", default_value_t = 256)]
    router_pool_idle: usize,
    /// The platform zone: services answer at `<service>.<zone>`.
    #[arg(long, env = "SLIPWAY_ZONE", default_value = "slipway.localhost")]
    zone: String,
    /// Also serve `GET /metrics` here without the token, for scrapers (e.g.
    /// `127.0.0.1:9464`). Off unless set; on the API address `/metrics` needs the token.
    #[arg(long, env = "SLIPWAY_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// The key that seals secrets at rest: a file of 32 bytes (raw or 64 hex digits)
    /// that the operator keeps. Default: `secret.key` in the data directory, created 0600
    /// on first start.
    #[arg(long, env = "SLIPWAY_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// A CA bundle (PEM) that builds trust, for `pip install` and `npm install` behind a
    /// TLS-intercepting proxy: injected into every build stage that runs commands, on any
    /// base image, and removed from the final image (unless a service sets
    /// `build.keep_ca`). Off unless set. Registry digest polls trust it too, beside the
    /// host's CA certificates.
    #[arg(long, env = "SLIPWAY_BUILD_CA_FILE")]
    build_ca_file: Option<PathBuf>,
    /// `NAME=IMAGE`: builds whose Dockerfile says `FROM NAME` use IMAGE (one this engine
    /// has), for hosts without a registry. Repeatable; the variable takes a comma list.
    #[arg(
        long = "image-alias",
        env = "SLIPWAY_IMAGE_ALIASES",
        value_delimiter = ','
    )]
    image_aliases: Vec<String>,
    /// `RUNTIME=IMAGE`: the base image of an apprunner.yaml runtime (e.g.
    /// `python311=python:3.11-slim`). Repeatable; the variable takes a comma list.
    #[arg(
        long = "runtime-image",
        env = "SLIPWAY_RUNTIME_IMAGES",
        value_delimiter = ','
    )]
    runtime_images: Vec<String>,
    /// Let services watch local repositories (`file://` URLs and absolute paths). Off by
    /// default: a service could otherwise read any repository this user can.
    #[arg(long, env = "SLIPWAY_ALLOW_FILE_URLS")]
    allow_file_urls: bool,
    /// Scaler tick in milliseconds.
    #[arg(long, env = "SLIPWAY_SCALER_TICK_MS", default_value_t = 1000)]
    scaler_tick_ms: u64,
    /// Where the authoritative DNS server for the zone listens (UDP and TCP), or `off`.
    /// Delegate the zone to this address (port 53) to make service names public.
    #[arg(long, env = "SLIPWAY_DNS_ADDR", default_value = "127.0.0.1:8053")]
    dns_addr: String,
    /// The router's public address(es): what service names resolve to and what an apex
    /// domain's A/AAAA records must hold. Repeatable; the variable takes a comma list.
    /// Default: the router's listening address (127.0.0.1 when it listens on all).
    #[arg(long = "public-ip", env = "SLIPWAY_PUBLIC_IPS", value_delimiter = ',')]
    public_ips: Vec<std::net::IpAddr>,
    /// Resolvers (`IP` or `IP:PORT`) that custom domains are verified through. Repeatable;
    /// the variable takes a comma list. Default: the host's (`/etc/resolv.conf`).
    #[arg(
        long = "dns-upstream",
        env = "SLIPWAY_DNS_UPSTREAMS",
        value_delimiter = ','
    )]
    dns_upstreams: Vec<String>,
    /// Seconds between checks of custom domains' records.
    #[arg(long, env = "SLIPWAY_DOMAIN_CHECK_S", default_value_t = 60)]
    domain_check_s: u64,
    /// Where the router serves HTTPS (certificates by SNI), or `off`. To serve on 443,
    /// give `0.0.0.0:443` (root or CAP_NET_BIND_SERVICE).
    #[arg(long, env = "SLIPWAY_HTTPS_ADDR", default_value = "127.0.0.1:8443")]
    https_addr: String,
    /// The HTTPS port in redirects and SRV records, when it differs from the listening
    /// port (behind a port forward, say).
    #[arg(long, env = "SLIPWAY_PUBLIC_HTTPS_PORT")]
    public_https_port: Option<u16>,
    /// An ACME CA's directory URL: active custom domains get certificates from it
    /// (e.g. `https://acme-v02.api.letsencrypt.org/directory`). Off unless set: domains
    /// are then served with self-signed certificates.
    #[arg(long, env = "SLIPWAY_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// A contact address for the ACME account.
    #[arg(long, env = "SLIPWAY_ACME_EMAIL")]
    acme_email: Option<String>,
    /// A CA certificate (PEM) that the ACME directory's HTTPS is checked against instead
    /// of the host's roots (a test CA such as pebble's).
    #[arg(long, env = "SLIPWAY_ACME_CA_FILE")]
    acme_ca_file: Option<PathBuf>,
    /// The platform zone's own names (`<service>.<zone>`, `console.<zone>`) get one
    /// wildcard certificate, `*.<zone>`, from the ACME CA too, by DNS-01 answered by
    /// Slipway's DNS server: the zone must be delegated to it. Needs --acme-directory.
    #[arg(long, env = "SLIPWAY_ACME_ZONE")]
    acme_zone: bool,
    /// Seconds between looks at certificates (renewal when a third of the life is left).
    #[arg(long, env = "SLIPWAY_ACME_CHECK_S", default_value_t = 3600)]
    acme_check_s: u64,
    /// Seconds between points of the metrics history (its finest resolution), 1 to 60.
    #[arg(long, env = "SLIPWAY_HISTORY_SAMPLE_S", default_value_t = 10)]
    history_sample_s: u64,
    /// Seconds before the first retry of a failed issuance (doubling, up to an hour).
    #[arg(long, env = "SLIPWAY_ACME_RETRY_S", default_value_t = 60)]
    acme_retry_s: u64,
}

/// `IP` or `IP:PORT` (port 53 by default).
fn upstream(s: &str) -> Result<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| anyhow::anyhow!("--dns-upstream {s:?}: write IP or IP:PORT"))
}

/// `n` hex digits from the operating system's CSPRNG (the API token and the platform id:
/// never a clock-seeded generator).
fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's random source failed: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex[..n].to_string())
}

/// Creates `dir` (and its parents) and makes it private to the user: 0700.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))
}

/// Creates the database file 0600 before SQLite opens it, and makes an existing one (and
/// its `-wal` and `-shm` files) 0600. SQLite gives the `-wal` and `-shm` files it creates
/// the database file's mode.
fn private_db(db: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(db)
        .with_context(|| format!("cannot create {}", db.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", p.display()))?;
        }
    }
    Ok(())
}

/// `NAME=VALUE` pairs of a repeatable flag.
fn pairs(flag: &str, items: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    items
        .iter()
        .filter(|i| !i.trim().is_empty())
        .map(|i| {
            let (k, v) = i
                .split_once('=')
                .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                .ok_or_else(|| anyhow::anyhow!("--{flag} {i:?}: write NAME=VALUE"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn build_options(a: &ServeArgs) -> Result<slipway_builder::BuildOptions> {
    let runtime_images = pairs("runtime-image", &a.runtime_images)?;
    for r in runtime_images.keys() {
        if !slipway_builder::apprunner::RUNTIMES
            .iter()
            .any(|(n, _, _)| n == r)
        {
            anyhow::bail!("--runtime-image {r}=...: {r} is not an apprunner.yaml runtime");
        }
    }
    let ca = match &a.build_ca_file {
        Some(p) => {
            let pem = std::fs::read(p)
                .with_context(|| format!("cannot read the build CA bundle {}", p.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!("{} holds no PEM certificate", p.display());
            }
            Some(pem)
        }
        None => None,
    };
    Ok(slipway_builder::BuildOptions {
        runtime_images,
        aliases: pairs("image-alias", &a.image_aliases)?,
        ca,
        allow_file_urls: a.allow_file_urls,
    })
}

pub async fn serve(a: ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,hyper=warn,bollard=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let zone = a.zone.trim_end_matches('.').to_ascii_lowercase();
    if zone.is_empty() || zone.split('.').any(|l| l.is_empty() || l.len() > 63) {
        anyhow::bail!("--zone {:?} is not a valid domain name", a.zone);
    }
    let data = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    private_dir(&data)?;
    private_dir(&data.join("repos"))?;
    let db = data.join("slipway.db");
    private_db(&db)?;
    let vault = match &a.secret_key_file {
        Some(path) => slipway_store::Vault::open(path, false),
        None => slipway_store::Vault::open(&data.join("secret.key"), true),
    }
    .context("cannot read the secret key")?;
    let store = Arc::new(Store::open(&db, vault).context("cannot open the store")?);
    let platform_id = random_hex(12)?;
    let platform = store.meta_or_init("platform_id", || platform_id)?;
    let token_path = data.join("token");
    let token = match std::env::var("SLIPWAY_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => {
            let fresh = random_hex(64)?;
            store.meta_or_init("api_token", || fresh)?
        }
    };
    write_private(&token_path, &token)?;

    let runtime: Arc<dyn Runtime> = Arc::new(DockerRuntime::connect(&platform).await?);
    let shutdown = CancellationToken::new();
    let router = Router::new(RouterConfig {
        zone: zone.clone(),
        pool_max_idle: a.router_pool_idle,
        ..RouterConfig::default()
    });
    let deployer = Deployer::new(
        store.clone(),
        runtime.clone(),
        router.clone(),
        shutdown.clone(),
    );
    let wake_deployer: slipway_builder::Wake = {
        let d = deployer.clone();
        Arc::new(move |s: &str| d.wake(s))
    };
    let builder = Builder::new(
        store.clone(),
        runtime.clone(),
        data.join("repos"),
        wake_deployer,
        shutdown.clone(),
        build_options(&a)?,
    );
    let scaler = Scaler::new(
        store.clone(),
        Duration::from_millis(a.scaler_tick_ms.max(100)),
    );

    let router_listener = tokio::net::TcpListener::bind(a.router_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the router", a.router_addr))?;
    let api_listener = tokio::net::TcpListener::bind(a.api_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the API", a.api_addr))?;
    let router_port = router_listener.local_addr()?.port();
    let public_ips = if a.public_ips.is_empty() {
        let ip = a.router_addr.ip();
        vec![if ip.is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            ip
        }]
    } else {
        a.public_ips.clone()
    };
    let https_listener = if a.https_addr.eq_ignore_ascii_case("off") {
        None
    } else {
        let addr: SocketAddr = a
            .https_addr
            .parse()
            .with_context(|| format!("--https-addr {:?}: write IP:PORT or off", a.https_addr))?;
        Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for HTTPS"))?,
        )
    };
    let https_port = match &https_listener {
        Some(l) => Some(a.public_https_port.unwrap_or(l.local_addr()?.port())),
        None => None,
    };
    router.set_https_port(https_port);
    // The console through the router (`console.<zone>`, a reserved name no service can
    // take), once HTTPS is on: its one "instance" is the API itself. Without HTTPS the
    // admin token would cross the router's plain-HTTP address, so the name is not routed
    // (the console stays on the API address).
    if https_port.is_some() {
        let mut api_at = api_listener.local_addr()?;
        if api_at.ip().is_unspecified() {
            api_at.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        let mut route = slipway_router::ServiceRoute::new(
            "console",
            vec![slipway_router::InstanceRoute {
                id: "console".into(),
                addr: api_at,
            }],
        );
        // The admin token is typed there: over plain HTTP it is sent to HTTPS.
        route.https_redirect = true;
        router.upsert_service(route);
    }
    let dns = slipway_dns::Handler::new();
    let names = slipway_console::names::Names::new(
        slipway_console::names::NamesConfig {
            zone: zone.clone(),
            public_ips,
            http_port: router_port,
            https_port,
            upstreams: a
                .dns_upstreams
                .iter()
                .map(|u| upstream(u))
                .collect::<Result<_>>()?,
            check_every: Duration::from_secs(a.domain_check_s.max(1)),
            certs_dir: data.join("certs"),
        },
        store.clone(),
        dns.clone(),
        router.clone(),
    );
    let dns_server = if a.dns_addr.eq_ignore_ascii_case("off") {
        None
    } else {
        let addr: SocketAddr = a
            .dns_addr
            .parse()
            .with_context(|| format!("--dns-addr {:?}: write IP:PORT or off", a.dns_addr))?;
        Some(
            slipway_dns::serve(dns.clone(), addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for DNS"))?,
        )
    };
    let api_url = format!("http://{}", api_listener.local_addr()?);

    deployer
        .start()
        .await
        .context("reconciling with the Docker engine")?;
    // Pushes git accepted before a restart and builds it cut short are built (again).
    builder
        .resume()
        .await
        .context("resuming the builds a restart interrupted")?;
    // Watched repositories are polled (and their webhooks answered) from here on.
    {
        // Previews whose branch goes away are deleted as `slipway delete` would.
        let (store, deployer, b) = (store.clone(), deployer.clone(), Arc::downgrade(&builder));
        let names = names.clone();
        builder.on_remove(Arc::new(move |name: String| {
            let (store, deployer, b, names) =
                (store.clone(), deployer.clone(), b.clone(), names.clone());
            Box::pin(async move {
                let domains = store.domains(&name).unwrap_or_default();
                for d in &domains {
                    names.forget(&d.domain);
                }
                if let Err(e) = store.delete_service(&name) {
                    tracing::error!(service = name, "store: deleting a preview: {e}");
                    return;
                }
                deployer.remove(&name).await;
                if let Some(b) = b.upgrade() {
                    b.forget(&name).await;
                }
            })
        }));
    }
    builder.watch();
    builder.watch_images();

    // Cold starts: the router holds the request and tells us; the scaler wants one
    // instance at once and the deployer starts (or unpauses) it.
    // Every long-lived task of this process belongs to `tasks` (the deployer's workers
    // and the builder's loops to their own trackers), under the one `shutdown` token.
    let tasks = TaskTracker::new();
    let (wake_tx, mut wake_rx) = tokio::sync::mpsc::channel::<String>(1024);
    router.set_wake_sender(wake_tx);
    let wakes = {
        let scaler = scaler.clone();
        let deployer = deployer.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    Some(name) = wake_rx.recv() => {
                        scaler.demand(&name);
                        deployer.wake(&name);
                    }
                    () = stop.cancelled() => return,
                    else => return,
                }
            }
        })
    };
    let scaling = {
        let router = router.clone();
        let deployer_l = deployer.clone();
        let deployer_w = deployer.clone();
        let load = move || {
            let counts = deployer_l.counts();
            router
                .stats()
                .into_iter()
                .map(|s| {
                    let ready = counts.get(&s.name).map(|c| c.ready as u32).unwrap_or(0);
                    (
                        s.name,
                        Load {
                            concurrency: (s.in_flight + s.queued) as f64,
                            ready,
                        },
                    )
                })
                .collect::<HashMap<_, _>>()
        };
        tasks.spawn(
            scaler
                .clone()
                .run(load, move |s| deployer_w.wake(s), shutdown.clone()),
        )
    };

    // One registry for the whole platform, each part a collector of its own counters.
    let metrics: slipway_console::Metrics = {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(router.clone()));
        registry.register_collector(Box::new(deployer.collector()));
        registry.register_collector(Box::new(scaler.collector()));
        Arc::new(registry)
    };
    let api = Api {
        platform: slipway_console::Platform {
            store: store.clone(),
            builder: builder.clone(),
            deployer: deployer.clone(),
            names: names.clone(),
        },
        router: router.clone(),
        token,
        zone: zone.clone(),
        router_port,
        api_url: api_url.clone(),
        metrics,
        platform_id: platform.clone(),
        history_res_s: a.history_sample_s.clamp(1, 60) as i64,
    };
    let metrics_task = match a.metrics_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            let app = slipway_console::metrics_app(api.clone());
            let stop = shutdown.clone();
            println!("  metrics:     http://{addr}/metrics   (no token)");
            Some(tasks.spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        None => None,
    };
    let history = {
        let deployer = deployer.clone();
        let ready = move || {
            deployer
                .counts()
                .into_iter()
                .map(|(k, c)| (k, c.ready as i64))
                .collect::<HashMap<_, _>>()
        };
        tasks.spawn(slipway_console::history::run(
            store.clone(),
            router.clone(),
            a.history_sample_s,
            ready,
            shutdown.clone(),
        ))
    };
    names.load_certs();
    if a.acme_zone && a.acme_directory.is_none() {
        anyhow::bail!("--acme-zone needs --acme-directory (the ACME CA that issues it)");
    }
    let zone_wildcard = if a.acme_zone {
        Some(
            slipway_core::Domain::parse(&format!("*.{zone}"))
                .map_err(|e| anyhow::anyhow!("--acme-zone: {e}"))?,
        )
    } else {
        None
    };
    let acme_task = a.acme_directory.as_ref().map(|dir| {
        let acme = slipway_console::acme::Acme::new(
            slipway_console::acme::AcmeConfig {
                directory: dir.clone(),
                email: a.acme_email.clone(),
                ca_file: a.acme_ca_file.clone(),
                account_file: data.join("acme").join("account.json"),
                check_every: Duration::from_secs(a.acme_check_s.max(1)),
                retry_after: Duration::from_secs(a.acme_retry_s.max(1)),
                zone_wildcard,
            },
            store.clone(),
            names.clone(),
        );
        tasks.spawn(acme.run(shutdown.clone()))
    });
    let https_task =
        https_listener.map(|l| tasks.spawn(router.clone().serve_tls(l, shutdown.clone())));
    let names_follow = tasks.spawn(names.clone().follow(shutdown.clone()));
    let names_check = tasks.spawn(names.clone().check_loop(shutdown.clone()));
    let app = slipway_console::app(api);
    let threads = a.router_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let router_task = if threads == 0 {
        tasks.spawn(router.clone().serve(router_listener, shutdown.clone()))
    } else {
        let ends = router_threads(&router, router_listener, threads, &shutdown)?;
        tasks.spawn(async move {
            for end in ends {
                end.await
                    .map_err(|_| std::io::Error::other("a router thread panicked"))??;
            }
            Ok(())
        })
    };
    let api_shutdown = shutdown.clone();
    let api_task = tasks.spawn(async move {
        axum::serve(api_listener, app)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await
    });

    println!("Slipway is running.");
    println!(
        "  console/API: {api_url}   (token in {})",
        token_path.display()
    );
    println!(
        "  router:      http://{}   (services at http://<service>.{zone}:{router_port})",
        a.router_addr
    );
    if let Some(p) = https_port {
        println!("  https:       port {p} (certificates by SNI; self-signed until issued)");
    }
    if let Some(d) = &dns_server {
        println!(
            "  dns:         {} (udp and tcp; try: dig @{} -p {} <service>.{zone})",
            d.addr,
            d.addr.ip(),
            d.addr.port()
        );
    }
    println!("  data:        {}", data.display());

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm() => {}
    }
    eprintln!("slipway: shutting down (instances keep running and are adopted at the next start)");
    shutdown.cancel();
    tasks.close();
    // Each part gets its own deadline, all at once; none is waited for longer.
    let part = |name: &'static str, deadline: Duration, done: bool| {
        if !done {
            eprintln!(
                "slipway: {name} still busy after {} s; exiting",
                deadline.as_secs()
            );
        }
    };
    let metrics_done = async {
        match metrics_task {
            Some(t) => within(API_SHUTDOWN_DEADLINE, t).await,
            None => true,
        }
    };
    let dns_done = async {
        if let Some(d) = dns_server {
            d.stop(LOOPS_SHUTDOWN_DEADLINE).await;
        }
        let f = within(LOOPS_SHUTDOWN_DEADLINE, names_follow).await
            && within(LOOPS_SHUTDOWN_DEADLINE, history).await;
        let c = within(LOOPS_SHUTDOWN_DEADLINE, names_check).await;
        let acme = match acme_task {
            Some(t) => within(LOOPS_SHUTDOWN_DEADLINE, t).await,
            None => true,
        };
        f && c && acme
    };
    let https_done = async {
        match https_task {
            Some(t) => within(ROUTER_SHUTDOWN_DEADLINE, t).await,
            None => true,
        }
    };
    let (r, h, a, m, d, b, s, w, n) = tokio::join!(
        within(ROUTER_SHUTDOWN_DEADLINE, router_task),
        https_done,
        within(API_SHUTDOWN_DEADLINE, api_task),
        metrics_done,
        deployer.stopped(WORKERS_SHUTDOWN_DEADLINE),
        builder.stopped(BUILDS_SHUTDOWN_DEADLINE),
        within(LOOPS_SHUTDOWN_DEADLINE, scaling),
        within(LOOPS_SHUTDOWN_DEADLINE, wakes),
        dns_done,
    );
    part("the router's connections", ROUTER_SHUTDOWN_DEADLINE, r);
    part(
        "the router's HTTPS connections",
        ROUTER_SHUTDOWN_DEADLINE,
        h,
    );
    part("the API", API_SHUTDOWN_DEADLINE, a);
    part("the metrics listener", API_SHUTDOWN_DEADLINE, m);
    part("the service workers", WORKERS_SHUTDOWN_DEADLINE, d);
    part("the builds", BUILDS_SHUTDOWN_DEADLINE, b);
    part("the scaler", LOOPS_SHUTDOWN_DEADLINE, s);
    part("the wake loop", LOOPS_SHUTDOWN_DEADLINE, w);
    part(
        "the DNS server and domain checks",
        LOOPS_SHUTDOWN_DEADLINE,
        n,
    );
    Ok(())
}

/// Serves the router on `n` threads of its own, each with a current-thread runtime and
/// a handle of the one listening socket (the kernel gives each connection to one of
/// them). Each thread's result arrives on its receiver once it has drained.
fn router_threads(
    router: &Arc<Router>,
    listener: tokio::net::TcpListener,
    n: usize,
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::sync::oneshot::Receiver<std::io::Result<()>>>> {
    let listener = listener
        .into_std()
        .context("cannot hand the router's socket to its threads")?;
    let mut ends = Vec::with_capacity(n);
    for i in 0..n {
        let l = listener
            .try_clone()
            .context("cannot share the router's socket")?;
        let (router, stop) = (router.clone(), shutdown.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("router-{i}"))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async move {
                            let l = tokio::net::TcpListener::from_std(l)?;
                            router.serve(l, stop).await
                        })
                    });
                if tx.send(served).is_err() {
                    tracing::debug!("router thread {i} ended after shutdown stopped waiting");
                }
            })
            .context("cannot start a router thread")?;
        ends.push(rx);
    }
    Ok(ends)
}

/// Whether task `t` ended within `deadline`; how it ended is logged if badly.
async fn within<T: Ended>(deadline: Duration, t: tokio::task::JoinHandle<T>) -> bool {
    match tokio::time::timeout(deadline, t).await {
        Ok(Ok(v)) => {
            v.report();
            true
        }
        Ok(Err(e)) => {
            eprintln!("slipway: a task ended badly at shutdown: {e}");
            true
        }
        Err(_) => false,
    }
}

/// How a task's result is reported at shutdown.
trait Ended {
    fn report(self);
}

impl Ended for () {
    fn report(self) {}
}

impl Ended for std::io::Result<()> {
    fn report(self) {
        if let Err(e) = self {
            eprintln!("slipway: a listener ended with an error at shutdown: {e}");
        }
    }
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

fn write_private(path: &std::path::Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}
