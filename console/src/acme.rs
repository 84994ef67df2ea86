//! Certificates for active custom domains from an ACME CA (instant-acme): HTTP-01
//! answered by the router, DNS-01 (wildcards) by Slipway's own DNS server. Certificates
//! are kept under `<data>/certs` (0600), served by the router by SNI, renewed when a
//! third of their life is left, and retried with backoff when issuance fails; the
//! domain's status says which.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use slipway_core::{Domain, DomainState, EventKind};
use slipway_store::{DomainRow, Store};

use crate::names::Names;

/// How certificates are obtained.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL (Let's Encrypt: `https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// A contact address for the account.
    pub email: Option<String>,
    /// A CA certificate (PEM) the directory's HTTPS is trusted by instead of the host's
    /// roots (a test CA such as pebble's).
    pub ca_file: Option<PathBuf>,
    /// Where the account's key is kept.
    pub account_file: PathBuf,
    /// How often certificates are looked at (renewal, new active domains).
    pub check_every: Duration,
    /// The first retry delay after a failure; it doubles up to an hour.
    pub retry_after: Duration,
    /// `*.<zone>`, when the platform zone's own names get a certificate too (by DNS-01,
    /// answered by Slipway's DNS server, which the zone must be delegated to).
    pub zone_wildcard: Option<Domain>,
}

/// A certificate's validity, read from its first PEM certificate.
pub fn validity(chain_pem: &[u8]) -> Result<(i64, i64), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok((
        v.not_before.timestamp() * 1000,
        v.not_after.timestamp() * 1000,
    ))
}

/// Whether a certificate valid from `not_before` to `not_after` (ms) needs renewing at
/// `now`: when less than a third of its life is left.
pub fn due(not_before: i64, not_after: i64, now: i64) -> bool {
    let life = (not_after - not_before).max(1);
    not_after - now < life / 3
}

/// The ACME side of names.
pub struct Acme {
    config: AcmeConfig,
    store: Arc<Store>,
    names: Arc<Names>,
    account: tokio::sync::OnceCell<Account>,
    /// Per domain: failures in a row and when to try again.
    backoff: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Acme {
    /// ACME for the names in `names`.
    pub fn new(config: AcmeConfig, store: Arc<Store>, names: Arc<Names>) -> Arc<Acme> {
        Arc::new(Acme {
            config,
            store,
            names,
            account: tokio::sync::OnceCell::new(),
            backoff: Mutex::new(HashMap::new()),
        })
    }

    async fn account(&self) -> Result<&Account, String> {
        self.account
            .get_or_try_init(|| async {
                let builder = || match &self.config.ca_file {
                    Some(ca) => {
                        Account::builder_with_root(ca).map_err(|e| format!("the ACME CA file: {e}"))
                    }
                    None => Account::builder().map_err(|e| e.to_string()),
                };
                if let Ok(saved) = std::fs::read(&self.config.account_file) {
                    if let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&saved) {
                        return builder()?
                            .from_credentials(creds)
                            .await
                            .map_err(|e| format!("restoring the ACME account: {e}"));
                    }
                }
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, creds) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| {
                        format!("creating an ACME account at {}: {e}", self.config.directory)
                    })?;
                let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
                crate::names::write_private(&self.config.account_file, &json)
                    .map_err(|e| format!("saving the ACME account: {e}"))?;
                Ok(account)
            })
            .await
    }

    /// Looks at every active domain once, and at the zone's own wildcard when it has
    /// one: issues a certificate where there is none or it is due for renewal (unless
    /// backing off after a failure).
    pub async fn check_all(&self) {
        let rows: Vec<DomainRow> = self
            .store
            .snapshot()
            .domains()
            .filter(|d| d.state == DomainState::Active)
            .cloned()
            .collect();
        for row in rows {
            self.check_one(&row.domain, Some(&row)).await;
        }
        if let Some(zone) = self.config.zone_wildcard.clone() {
            self.check_one(&zone, None).await;
        }
    }

    /// One name: a claimed domain (`row`), or the zone's own wildcard (`None`).
    async fn check_one(&self, domain: &Domain, row: Option<&DomainRow>) {
        let name = domain.to_string();
        let now = slipway_core::now_unix_ms();
        let existing = self.names.stored_cert(domain);
        let renewing = match &existing {
            Some((chain, _)) => match validity(chain) {
                Ok((from, to)) if !due(from, to, now) => return,
                Ok(_) => true,
                Err(_) => false,
            },
            None => false,
        };
        let waiting = self
            .backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .is_some_and(|(_, at)| Instant::now() < *at);
        if waiting {
            return;
        }
        match self.issue(domain).await {
            // Removed (or claimed again) while the order ran: keep nothing of it.
            Ok(_) if row.is_some_and(|r| !self.still_claimed(r)) => {}
            Ok((chain, key)) => {
                self.backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
                let until = validity(chain.as_bytes()).map(|(_, to)| to).ok();
                if let Err(e) = self
                    .names
                    .install_cert(domain, chain.as_bytes(), key.as_bytes())
                {
                    self.failed(domain, row, &e).await;
                    return;
                }
                let when = until.map(fmt_ms).unwrap_or_default();
                self.set_status(
                    domain,
                    row,
                    &format!("issued by ACME; expires {when}"),
                    until,
                );
                let what = if renewing { "renewed" } else { "issued" };
                self.log(
                    row,
                    &format!("certificate for {name} {what} (expires {when})"),
                );
            }
            Err(e) => self.failed(domain, row, &e).await,
        }
    }

    fn still_claimed(&self, row: &DomainRow) -> bool {
        self.store
            .snapshot()
            .domains()
            .any(|d| d.domain == row.domain && d.token == row.token)
    }

    async fn failed(&self, domain: &Domain, row: Option<&DomainRow>, why: &str) {
        let name = domain.to_string();
        let delay = {
            let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            let n = b.get(&name).map_or(0, |(n, _)| *n) + 1;
            let delay = (self.config.retry_after * 2u32.saturating_pow(n - 1))
                .min(Duration::from_secs(3600));
            b.insert(name.clone(), (n, Instant::now() + delay));
            delay
        };
        let status = format!(
            "failed: {why}; retrying in {} s (a self-signed certificate serves meanwhile)",
            delay.as_secs()
        );
        let until = self
            .names
            .stored_cert(domain)
            .and_then(|(c, _)| validity(&c).ok().map(|v| v.1));
        self.set_status(domain, row, &status, until);
        self.log(row, &format!("certificate for {name} {status}"));
    }

    /// A domain's certificate status goes to its row; the zone's to `GET /v1/platform`.
    fn set_status(
        &self,
        domain: &Domain,
        row: Option<&DomainRow>,
        status: &str,
        until: Option<i64>,
    ) {
        if row.is_none() {
            self.names.set_zone_cert(status);
        } else if let Err(e) = self.store.set_domain_cert(domain, status, until) {
            tracing::warn!("store: {e}");
        }
    }

    /// A domain's news goes to its service's activity log; the zone's to the server's log.
    fn log(&self, row: Option<&DomainRow>, msg: &str) {
        let Some(row) = row else {
            tracing::info!("{msg}");
            return;
        };
        tracing::info!(service = %row.service, "{msg}");
        if let Err(e) = self.store.event(&row.service, EventKind::Domain, msg) {
            tracing::warn!("store: {e}");
        }
    }

    /// One order for `d`, answered by HTTP-01 (DNS-01 for a wildcard). Returns the chain
    /// and the key (PEM).
    async fn issue(&self, d: &Domain) -> Result<(String, String), String> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(d.to_string())];
        let mut order = account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut published: Vec<Published> = Vec::new();
        let result = async {
            let mut authzs = order.authorizations();
            while let Some(a) = authzs.next().await {
                let mut a = a.map_err(|e| format!("authorization: {e}"))?;
                match a.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    s => return Err(format!("authorization is {s:?}")),
                }
                let kind = if d.is_wildcard() {
                    ChallengeType::Dns01
                } else {
                    ChallengeType::Http01
                };
                let mut ch = a
                    .challenge(kind.clone())
                    .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
                let key_auth = ch.key_authorization();
                match kind {
                    ChallengeType::Dns01 => {
                        let value = key_auth.dns_value();
                        for n in self.names.acme_txt_names(d) {
                            self.names.set_acme_txt(&n, Some(vec![value.clone()]));
                            published.push(Published::Txt(n));
                        }
                    }
                    _ => {
                        self.names
                            .router()
                            .set_acme_challenge(&ch.token, Some(key_auth.as_str()));
                        published.push(Published::Http(ch.token.clone()));
                    }
                }
                ch.set_ready()
                    .await
                    .map_err(|e| format!("challenge: {e}"))?;
            }
            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .timeout(Duration::from_secs(60));
            let status = order
                .poll_ready(&retry)
                .await
                .map_err(|e| format!("waiting for validation: {e}"))?;
            if status != OrderStatus::Ready {
                let why = order
                    .state()
                    .error
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| format!("the order is {status:?}"));
                return Err(format!("validation failed: {why}"));
            }
            let key = order
                .finalize()
                .await
                .map_err(|e| format!("finalize: {e}"))?;
            let chain = order
                .poll_certificate(&retry)
                .await
                .map_err(|e| format!("certificate: {e}"))?;
            Ok((chain, key))
        }
        .await;
        for p in published {
            match p {
                Published::Txt(n) => self.names.set_acme_txt(&n, None),
                Published::Http(t) => self.names.router().set_acme_challenge(&t, None),
            }
        }
        result
    }

    /// Looks every `check_every` (and whenever the store changes, so a newly active domain
    /// gets its certificate at once) until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        // The zone's kept certificate is no domain row, so `Names::load_certs` does not
        // serve it at start: this does.
        if let Some(zone) = &self.config.zone_wildcard {
            if self.names.load_cert(zone) {
                if let Some((chain, _)) = self.names.stored_cert(zone) {
                    if let Ok((_, to)) = validity(&chain) {
                        self.names.set_zone_cert(&issued(to));
                    }
                }
            }
        }
        let mut changes = self.store.changes();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.check_all() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.check_every) => {}
                r = changes.changed() => if r.is_err() { return },
            }
        }
    }
}

enum Published {
    Txt(String),
    Http(String),
}

/// The status of a certificate issued by the CA that expires at `to` (ms).
fn issued(to: i64) -> String {
    format!("issued by ACME; expires {}", fmt_ms(to))
}

/// A time in ms since the epoch as `2026-12-02T18:00:00Z`.
pub fn fmt_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_a_third_of_life_left() {
        assert!(!due(0, 90, 59));
        assert!(due(0, 90, 61));
        assert!(due(0, 90, 100));
    }

    #[test]
    fn times() {
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_ms(1_796_227_200_000), "2026-12-02T16:00:00Z");
    }

    #[test]
    fn validity_of_a_certificate() {
        let (chain, _) = slipway_router::tls::self_signed_pem("www.example.com").unwrap();
        let (from, to) = validity(chain.as_bytes()).unwrap();
        assert!(from < to);
        assert!(validity(b"not a certificate").is_err());
    }
}
