//! Names: custom domains (their claims, the records a user creates, verification through
//! upstream resolvers) and what the DNS server and the router serve, rebuilt as whole
//! snapshots whenever the store changes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use serde::Serialize;
use slipway_core::{Domain, DomainState, EventKind};
use slipway_store::{DomainRow, Store};

/// How names are served and checked.
#[derive(Debug, Clone)]
pub struct NamesConfig {
    /// The platform zone (`slipway.example.com`).
    pub zone: String,
    /// The router's public addresses: what service names resolve to, and what an apex
    /// domain's A/AAAA records must hold.
    pub public_ips: Vec<IpAddr>,
    /// The router's HTTP port.
    pub http_port: u16,
    /// The router's HTTPS port, when it serves HTTPS.
    pub https_port: Option<u16>,
    /// The resolvers custom domains are verified through (empty: the host's).
    pub upstreams: Vec<SocketAddr>,
    /// How often pending and active domains are checked.
    pub check_every: Duration,
    /// Where certificates and their keys are kept (0600 files).
    pub certs_dir: std::path::PathBuf,
}

/// A record the user creates at their DNS provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RequiredRecord {
    /// `CNAME`, `A`, `AAAA` or `TXT`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The record's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// What it is for.
    pub purpose: &'static str,
}

/// A domain as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DomainView {
    /// The domain.
    pub domain: String,
    /// Its service.
    pub service: String,
    /// `pending`, `active` or `failed`.
    pub state: DomainState,
    /// What the last check found.
    pub reason: String,
    /// When it was last checked, ms since the epoch (0: not yet).
    pub checked_ms: i64,
    /// The certificate's state.
    pub certificate: String,
    /// The records to create.
    pub records: Vec<RequiredRecord>,
}

/// What a check saw at the upstream resolvers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The domain's CNAME target (lower case, no final dot).
    pub cname: Option<String>,
    /// Its A and AAAA addresses.
    pub addrs: Vec<IpAddr>,
    /// The TXT strings at `_slipway-challenge.<base>`.
    pub txt: Vec<String>,
    /// The name servers the domain (its base, for a wildcard) is delegated to, lower
    /// case, no final dot.
    pub ns: Vec<String>,
}

/// Writes `bytes` to `path` readable by the owner only (0600), through a temporary file
/// renamed into place, making the directory (0700) if needed.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The TXT value that proves a claim.
pub fn token_value(token: &str) -> String {
    format!("slipway-verify={token}")
}

/// The names, their checks and the snapshots they publish.
pub struct Names {
    config: NamesConfig,
    store: Arc<Store>,
    dns: slipway_dns::Handler,
    router: Arc<slipway_router::Router>,
    /// TXT records published for ACME DNS-01, by name.
    acme_txt: Mutex<BTreeMap<String, Vec<String>>>,
    /// Wakes the check loop (a new claim is checked at once).
    check: Arc<tokio::sync::Notify>,
    /// Held while a snapshot is built and published, so an older one never replaces a
    /// newer one.
    publishing: Mutex<()>,
    /// Failed checks in a row of each active domain: one lookup that fails (a resolver
    /// timing out) does not take a domain offline; [`MISSES_TO_FAIL`] in a row do.
    misses: Mutex<BTreeMap<String, u32>>,
    /// What became of the platform zone's own certificate (`*.<zone>`, by ACME when
    /// `slipway serve --acme-zone`), as `GET /v1/platform` shows it.
    zone_cert: Mutex<String>,
}

/// Failed checks in a row after which an active domain is failed and not served.
pub const MISSES_TO_FAIL: u32 = 3;

impl Names {
    /// Names over `store`, publishing to `dns` and `router`.
    pub fn new(
        config: NamesConfig,
        store: Arc<Store>,
        dns: slipway_dns::Handler,
        router: Arc<slipway_router::Router>,
    ) -> Arc<Names> {
        let names = Arc::new(Names {
            config,
            store,
            dns,
            router,
            acme_txt: Mutex::new(BTreeMap::new()),
            check: Arc::new(tokio::sync::Notify::new()),
            publishing: Mutex::new(()),
            misses: Mutex::new(BTreeMap::new()),
            zone_cert: Mutex::new("self-signed".into()),
        });
        names.publish();
        names
    }

    /// The configuration.
    pub fn config(&self) -> &NamesConfig {
        &self.config
    }

    /// Asks the check loop to check every domain now.
    pub fn check_now(&self) {
        self.check.notify_one();
    }

    /// Forgets a removed domain: its published TXT records, its certificate in the
    /// router, and the certificate and key files.
    pub fn forget(&self, d: &Domain) {
        for n in self.acme_txt_names(d) {
            self.set_acme_txt(&n, None);
        }
        self.router.certs().remove(d.as_str());
        let (crt, key) = self.cert_paths(d);
        for f in [crt, key] {
            if let Err(e) = std::fs::remove_file(&f) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", f.display());
                }
            }
        }
    }

    /// The platform zone's own certificate's status.
    pub fn zone_cert(&self) -> String {
        self.zone_cert
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records what became of the platform zone's own certificate.
    pub fn set_zone_cert(&self, status: &str) {
        *self.zone_cert.lock().unwrap_or_else(|p| p.into_inner()) = status.to_string();
    }

    /// The router (for ACME HTTP-01 answers).
    pub fn router(&self) -> &Arc<slipway_router::Router> {
        &self.router
    }

    /// Where DNS-01 answers for `d` are published: the name in the platform zone its
    /// `_acme-challenge` CNAME points at, and `_acme-challenge.<base>` itself for a domain
    /// delegated to this server.
    pub fn acme_txt_names(&self, d: &Domain) -> Vec<String> {
        vec![
            slipway_dns::acme_delegate(d.as_str(), &self.config.zone),
            format!("_acme-challenge.{}", d.base()),
        ]
    }

    fn cert_paths(&self, d: &Domain) -> (std::path::PathBuf, std::path::PathBuf) {
        // `*.example.com` is kept as `_wildcard.example.com`.
        let stem = d.as_str().replace('*', "_wildcard");
        (
            self.config.certs_dir.join(format!("{stem}.crt")),
            self.config.certs_dir.join(format!("{stem}.key")),
        )
    }

    /// The certificate chain and key kept for `d`, if any.
    pub fn stored_cert(&self, d: &Domain) -> Option<(Vec<u8>, Vec<u8>)> {
        let (crt, key) = self.cert_paths(d);
        Some((std::fs::read(crt).ok()?, std::fs::read(key).ok()?))
    }

    /// Keeps a certificate for `d` (0600 files) and serves it from now on.
    pub fn install_cert(&self, d: &Domain, chain: &[u8], key: &[u8]) -> Result<(), String> {
        self.router
            .certs()
            .certified(d.as_str(), chain, key)
            .map_err(|e| e.to_string())?;
        let (crt, key_path) = self.cert_paths(d);
        write_private(&key_path, key).map_err(|e| format!("saving the key: {e}"))?;
        write_private(&crt, chain).map_err(|e| format!("saving the certificate: {e}"))?;
        self.router
            .certs()
            .set(d.as_str(), chain, key)
            .map_err(|e| e.to_string())
    }

    /// Serves the kept certificates of every claimed domain (at start).
    pub fn load_certs(&self) {
        for row in self.store.snapshot().domains() {
            self.load_cert(&row.domain);
        }
    }

    /// Serves `d`'s kept certificate, if it has one; true when it does.
    pub fn load_cert(&self, d: &Domain) -> bool {
        let Some((chain, key)) = self.stored_cert(d) else {
            return false;
        };
        match self.router.certs().set(d.as_str(), &chain, &key) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }

    /// The records `d` needs for `service`.
    pub fn records(&self, d: &Domain, service: &str, token: &str) -> Vec<RequiredRecord> {
        let target = slipway_core::service_host(service, &self.config.zone);
        let mut out = Vec::new();
        if d.is_apex() {
            for ip in &self.config.public_ips {
                out.push(RequiredRecord {
                    kind: if ip.is_ipv4() { "A" } else { "AAAA" },
                    name: d.to_string(),
                    value: ip.to_string(),
                    purpose: "points the apex at the router (an apex cannot be a CNAME)",
                });
            }
        } else {
            out.push(RequiredRecord {
                kind: "CNAME",
                name: d.to_string(),
                value: target,
                purpose: "points the domain at the service",
            });
        }
        out.push(RequiredRecord {
            kind: "TXT",
            name: d.token_name(),
            value: token_value(token),
            purpose: "proves the domain is yours (keep it: it is checked again periodically)",
        });
        out.push(RequiredRecord {
            kind: "NS",
            name: d.base().to_string(),
            value: format!("ns.{}", self.config.zone),
            purpose: "instead of the records above: delegate the domain to Slipway's DNS server, which then answers it (and its DNS-01 challenges) itself",
        });
        if d.is_wildcard() {
            out.push(RequiredRecord {
                kind: "CNAME",
                name: format!("_acme-challenge.{}", d.base()),
                value: slipway_dns::acme_delegate(d.as_str(), &self.config.zone),
                purpose: "lets Slipway's DNS answer ACME DNS-01 for the wildcard certificate",
            });
        }
        out
    }

    /// A domain row as the API shows it.
    pub fn view(&self, row: &DomainRow) -> DomainView {
        DomainView {
            domain: row.domain.to_string(),
            service: row.service.clone(),
            state: row.state,
            reason: row.reason.clone(),
            checked_ms: row.checked_ms,
            certificate: if row.cert_status.is_empty() {
                "none yet".into()
            } else {
                row.cert_status.clone()
            },
            records: self.records(&row.domain, &row.service, &row.token),
        }
    }

    /// Publishes a TXT value (ACME DNS-01) at `name`, or removes the name's values with
    /// `None`.
    pub fn set_acme_txt(&self, name: &str, values: Option<Vec<String>>) {
        {
            let mut m = self.acme_txt.lock().unwrap_or_else(|p| p.into_inner());
            match values {
                Some(v) => m.insert(name.trim_end_matches('.').to_ascii_lowercase(), v),
                None => m.remove(&name.trim_end_matches('.').to_ascii_lowercase()),
            };
        }
        self.publish();
    }

    /// Rebuilds what the DNS server and the router serve from the store's snapshot.
    pub fn publish(&self) {
        let _turn = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let snap = self.store.snapshot();
        let active: BTreeMap<String, String> = snap
            .domains()
            .filter(|d| d.state == DomainState::Active)
            .map(|d| (d.domain.to_string(), d.service.clone()))
            .collect();
        self.router.set_domains(active.clone());
        let txt = self
            .acme_txt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.dns.publish(slipway_dns::Zone {
            origin: self.config.zone.trim_end_matches('.').to_ascii_lowercase(),
            serial: snap.generation as u32,
            addrs: self.config.public_ips.clone(),
            http_port: self.config.http_port,
            https_port: self.config.https_port,
            services: snap.services().map(|s| s.spec.name.to_string()).collect(),
            domains: active,
            claimed: snap
                .domains()
                .map(|d| d.domain.base().to_string())
                .collect(),
            txt,
        });
    }

    /// Follows the store until `shutdown`, republishing at each change.
    pub async fn follow(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut changes = self.store.changes();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = changes.changed() => if r.is_err() { return },
            }
            self.publish();
        }
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        if self.config.upstreams.is_empty() {
            return TokioResolver::builder_tokio()
                .map_err(|e| format!("the host's resolver configuration: {e}"))?
                .build()
                .map_err(|e| e.to_string());
        }
        let servers = self
            .config
            .upstreams
            .iter()
            .map(|a| {
                let mut udp = ConnectionConfig::udp();
                udp.port = a.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = a.port();
                NameServerConfig::new(a.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut b = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        // Each round asks afresh: a record the user just made counts at once.
        b.options_mut().cache_size = 0;
        b.options_mut().timeout = Duration::from_secs(3);
        b.options_mut().attempts = 1;
        b.build().map_err(|e| e.to_string())
    }

    /// What the upstream resolvers say about `d`.
    pub async fn observe(&self, resolver: &TokioResolver, d: &Domain) -> Observed {
        let mut o = Observed::default();
        if let Ok(l) = resolver
            .lookup(format!("{}.", d.as_str()), RecordType::CNAME)
            .await
        {
            o.cname = l.answers().iter().find_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            });
        }
        if o.cname.is_none() {
            for t in [RecordType::A, RecordType::AAAA] {
                if let Ok(l) = resolver.lookup(format!("{}.", d.as_str()), t).await {
                    o.addrs
                        .extend(l.answers().iter().filter_map(|r| match &r.data {
                            RData::A(a) => Some(IpAddr::V4(a.0)),
                            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                            _ => None,
                        }));
                }
            }
        }
        if let Ok(l) = resolver
            .lookup(format!("{}.", d.base()), RecordType::NS)
            .await
        {
            o.ns = l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NS(n) => Some(n.0.to_ascii().trim_end_matches('.').to_ascii_lowercase()),
                    _ => None,
                })
                .collect();
        }
        if let Ok(l) = resolver
            .lookup(format!("{}.", d.token_name()), RecordType::TXT)
            .await
        {
            for r in l.answers() {
                if let RData::TXT(t) = &r.data {
                    let joined: Vec<u8> =
                        t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    o.txt.push(String::from_utf8_lossy(&joined).into_owned());
                }
            }
        }
        o
    }

    /// Checks every claimed domain once, recording each new outcome.
    pub async fn check_all(&self) {
        let snap = self.store.snapshot();
        let rows: Vec<DomainRow> = snap.domains().cloned().collect();
        if rows.is_empty() {
            return;
        }
        let resolver = match self.resolver() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("domains: no resolver: {e}");
                return;
            }
        };
        for row in rows {
            let seen = self.observe(&resolver, &row.domain).await;
            let verdict = verify(&self.config, &row, &seen);
            let misses = {
                let mut m = self.misses.lock().unwrap_or_else(|p| p.into_inner());
                let n = m.entry(row.domain.to_string()).or_insert(0);
                *n = if verdict.is_ok() { 0 } else { *n + 1 };
                *n
            };
            let (state, reason) = match (&verdict, row.state) {
                (Ok(()), _) => (DomainState::Active, "verified".to_string()),
                (Err(why), DomainState::Pending) => (DomainState::Pending, why.clone()),
                // An active domain stays served through a lookup or two that fail.
                (Err(why), DomainState::Active) if misses < MISSES_TO_FAIL => {
                    tracing::info!(
                        "domain {}: check {misses} of {MISSES_TO_FAIL} failed: {why}",
                        row.domain
                    );
                    continue;
                }
                (Err(why), _) => (DomainState::Failed, why.clone()),
            };
            if let Err(e) = self
                .store
                .set_domain_state(&row.domain, &row.token, state, &reason)
            {
                tracing::warn!("domains: recording {}: {e}", row.domain);
                continue;
            }
            if state != row.state || (state != DomainState::Active && reason != row.reason) {
                let msg = match state {
                    DomainState::Active => format!(
                        "domain {} is active: its records verify, and the router serves it",
                        row.domain
                    ),
                    DomainState::Pending => format!("domain {} is pending: {reason}", row.domain),
                    DomainState::Failed => format!(
                        "domain {} failed verification and is not served: {reason}",
                        row.domain
                    ),
                };
                if let Err(e) = self.store.event(&row.service, EventKind::Domain, &msg) {
                    tracing::warn!("store: {e}");
                }
            }
        }
    }

    /// Checks every `check_every` until `shutdown` (and at once after a new claim).
    pub async fn check_loop(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let now = self.check.clone();
        loop {
            self.check_all().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.check_every) => {}
                () = now.notified() => {}
            }
        }
    }
}

/// Whether what was observed proves `row`'s claim: the token in the TXT record, and the
/// domain pointed at the service (a CNAME to its name, or A/AAAA records that are all
/// the router's). A CNAME without the token is not enough.
pub fn verify(config: &NamesConfig, row: &DomainRow, seen: &Observed) -> Result<(), String> {
    // Delegated to this server: only the domain's owner can make its NS records point
    // here, so that is the proof (and nobody else could serve the token for it).
    let ns = format!("ns.{}", config.zone.trim_end_matches('.'));
    if seen.ns.contains(&ns) {
        return Ok(());
    }
    let want = token_value(&row.token);
    if !seen.txt.iter().any(|t| t.trim() == want) {
        return Err(if seen.txt.is_empty() {
            format!(
                "no TXT record at {}: create it with the value {want}",
                row.domain.token_name()
            )
        } else {
            format!(
                "the TXT record at {} does not hold {want}",
                row.domain.token_name()
            )
        });
    }
    let target = slipway_core::service_host(&row.service, &config.zone);
    match (&seen.cname, seen.addrs.is_empty()) {
        (Some(c), _) if *c == target => Ok(()),
        (Some(c), _) => Err(format!("{} is a CNAME to {c}, not to {target}", row.domain)),
        (None, false) if seen.addrs.iter().all(|a| config.public_ips.contains(a)) => Ok(()),
        (None, false) => Err(format!(
            "{} has addresses that are not the router's ({})",
            row.domain,
            config
                .public_ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (None, true) if row.domain.is_apex() => Err(format!(
            "no A/AAAA record at {} pointing at the router",
            row.domain
        )),
        (None, true) => Err(format!("no CNAME at {} to {target}", row.domain)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NamesConfig {
        NamesConfig {
            zone: "slipway.test".into(),
            public_ips: vec!["127.0.0.1".parse().unwrap()],
            http_port: 8080,
            https_port: None,
            upstreams: vec![],
            check_every: Duration::from_secs(60),
            certs_dir: std::env::temp_dir(),
        }
    }

    fn row(domain: &str) -> DomainRow {
        DomainRow {
            domain: Domain::parse(domain).unwrap(),
            service: "web".into(),
            token: "abc".into(),
            state: DomainState::Pending,
            reason: String::new(),
            created_ms: 0,
            checked_ms: 0,
            cert_status: String::new(),
            cert_not_after: None,
        }
    }

    #[test]
    fn a_claim_needs_the_token_and_the_pointer() {
        let c = config();
        let r = row("www.example.com");
        let token = vec!["slipway-verify=abc".to_string()];
        let cname = Some("web.slipway.test".to_string());
        let ok = Observed {
            cname: cname.clone(),
            addrs: vec![],
            txt: token.clone(),
            ns: vec![],
        };
        assert_eq!(verify(&c, &r, &ok), Ok(()));
        let only_cname = Observed {
            cname,
            addrs: vec![],
            txt: vec![],
            ns: vec![],
        };
        assert!(verify(&c, &r, &only_cname)
            .unwrap_err()
            .contains("no TXT record"));
        let wrong = Observed {
            cname: Some("shop.slipway.test".into()),
            addrs: vec![],
            txt: token.clone(),
            ns: vec![],
        };
        assert!(verify(&c, &r, &wrong)
            .unwrap_err()
            .contains("not to web.slipway.test"));
        let other_token = Observed {
            cname: None,
            addrs: vec![],
            txt: vec!["slipway-verify=zzz".into()],
            ns: vec![],
        };
        assert!(verify(&c, &r, &other_token)
            .unwrap_err()
            .contains("does not hold"));
        let apex = row("example.com");
        let at_router = Observed {
            cname: None,
            addrs: vec!["127.0.0.1".parse().unwrap()],
            txt: token.clone(),
            ns: vec![],
        };
        assert_eq!(verify(&c, &apex, &at_router), Ok(()));
        let elsewhere = Observed {
            cname: None,
            addrs: vec!["10.1.1.1".parse().unwrap()],
            txt: token,
            ns: vec![],
        };
        assert!(verify(&c, &apex, &elsewhere)
            .unwrap_err()
            .contains("not the router's"));
        let delegated = Observed {
            ns: vec!["ns.slipway.test".into()],
            ..Observed::default()
        };
        assert_eq!(verify(&c, &apex, &delegated), Ok(()));
        let elsewhere_ns = Observed {
            ns: vec!["ns.other.test".into()],
            ..Observed::default()
        };
        assert!(verify(&c, &apex, &elsewhere_ns).is_err());
    }
}
