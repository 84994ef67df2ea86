//! Slipway's state: one SQLite file in WAL mode under the data directory.
//!
//! The store holds what the user asked for (services and their specs), what the platform
//! decided (revisions, the target and active revision of each service, the desired instance
//! count) and what happened (deployments with their state, the activity log, build logs).
//! What Docker actually runs is *not* stored: after a restart the deployer lists the
//! containers by label and reconciles them with this desired state.
//!
//! Calls are synchronous and short (a few hundred microseconds); the connection sits behind
//! a mutex that is never held across an await.

pub mod vault;
pub use vault::{Vault, VaultError};

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use slipway_core::{
    now_unix_ms, BuildState, DeploymentKind, DeploymentState, Domain, DomainState, EventKind,
    ServiceSpec, TransitionError, UnknownValue,
};

/// A store error. Only corruption or a full disk produce these; a missing row is `None`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored spec no longer parses.
    #[error("store: bad stored spec: {0}")]
    Spec(#[from] serde_json::Error),
    /// The file was written by a newer Slipway.
    #[error("the store was written by a newer Slipway (schema {0}); upgrade slipway")]
    Newer(i64),
    /// The service does not exist (it was deleted meanwhile).
    #[error("no service named {0}")]
    NoService(String),
    /// The service already exists.
    #[error("service {0} already exists")]
    Exists(String),
    /// A deployment was asked to take a step the state machine does not allow.
    #[error("deployment {id}: {source}")]
    Transition {
        /// The deployment.
        id: i64,
        /// Both states.
        source: TransitionError,
    },
    /// No deployment has this id.
    #[error("no deployment {0}")]
    NoDeployment(i64),
    /// A secret could not be sealed or opened.
    #[error("store: {0}")]
    Vault(#[from] VaultError),
    /// A domain is claimed by another service.
    #[error("{domain} is claimed by service {service}")]
    Claimed {
        /// The domain.
        domain: String,
        /// The service holding it.
        service: String,
    },
}

/// Reads column `idx` as one of a vocabulary's names; anything else is an error that
/// names the value, never a guess.
fn vocab<T>(
    r: &rusqlite::Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, UnknownValue>,
) -> rusqlite::Result<T> {
    let text: String = r.get(idx)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn deployment_state(s: &str) -> std::result::Result<DeploymentState, UnknownValue> {
    DeploymentState::parse(s).ok_or_else(|| UnknownValue {
        what: "deployment state",
        value: s.to_string(),
    })
}

const DOMAIN_COLUMNS: &str =
    "domain, service, token, state, reason, created_ms, checked_ms, cert_status, cert_not_after";

fn domain_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<DomainRow> {
    let text: String = r.get(0)?;
    let domain = Domain::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(DomainRow {
        domain,
        service: r.get(1)?,
        token: r.get(2)?,
        state: vocab(r, 3, DomainState::parse)?,
        reason: r.get(4)?,
        created_ms: r.get(5)?,
        checked_ms: r.get(6)?,
        cert_status: r.get(7)?,
        cert_not_after: r.get(8)?,
    })
}

/// Result alias.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Delays between the attempts of [`durable`].
const DURABLE_RETRIES: [std::time::Duration; 2] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(250),
];

/// Runs a store write that carries a decision (a desired count, a deployment step, a
/// build's result): each failure is logged with `what`, and the write is tried again
/// twice, 50 ms and then 250 ms later, before the last error is returned for the caller
/// to act on. A write the state machine refuses is not retried: it would be refused again.
pub async fn durable<T>(what: &str, mut write: impl FnMut() -> Result<T>) -> Result<T> {
    let mut delays = DURABLE_RETRIES.iter();
    loop {
        match write() {
            Ok(v) => return Ok(v),
            Err(e @ StoreError::Transition { .. }) => {
                tracing::error!("store: {what}: {e}");
                return Err(e);
            }
            Err(e) => match delays.next() {
                Some(d) => {
                    tracing::warn!("store: {what}: {e}; trying again in {} ms", d.as_millis());
                    tokio::time::sleep(*d).await;
                }
                None => {
                    tracing::error!("store: {what}: {e}; giving up");
                    return Err(e);
                }
            },
        }
    }
}

/// A service as stored.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceRow {
    /// The user's spec.
    pub spec: ServiceSpec,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// The revision the service should serve (what the deployer works toward).
    pub target_revision: Option<i64>,
    /// The revision that serves now (set when traffic switches).
    pub active_revision: Option<i64>,
    /// Instances the scaler wants.
    pub desired_instances: i64,
    /// Paused by its user: no instances, requests get 503 until resumed.
    pub paused: bool,
}

/// A custom domain claimed by a service.
#[derive(Clone, Debug, Serialize)]
pub struct DomainRow {
    /// The domain (`www.example.com`, `*.example.com`).
    pub domain: Domain,
    /// The service that claimed it.
    pub service: String,
    /// The ownership token the TXT record must hold (fresh for each claim).
    pub token: String,
    /// Pending, active or failed.
    pub state: DomainState,
    /// What the last check found.
    pub reason: String,
    /// When it was claimed, ms since the epoch.
    pub created_ms: i64,
    /// When it was last checked (0: never).
    pub checked_ms: i64,
    /// The certificate's state in words ("none yet", "issued by ...", "failed: ...").
    pub cert_status: String,
    /// When its certificate expires, ms since the epoch.
    pub cert_not_after: Option<i64>,
}

/// One line of an app's output.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AppLogRow {
    /// Increases with every line kept (a cursor for following).
    pub id: i64,
    /// When the engine recorded it, ms since the epoch.
    pub at_ms: i64,
    /// The revision the instance ran.
    pub revision: i64,
    /// The instance.
    pub instance: String,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// The line.
    pub line: String,
}

/// One point of a service's metrics history: what happened during `res_s` seconds up
/// to `at_ms`.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MetricPoint {
    /// The end of the interval, ms since the epoch.
    pub at_ms: i64,
    /// Requests answered in the interval.
    pub requests: i64,
    /// Of those, 2xx.
    pub s2xx: i64,
    /// 4xx.
    pub s4xx: i64,
    /// 5xx.
    pub s5xx: i64,
    /// Median latency, ms (none without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Ready instances at the end.
    pub instances: i64,
}

/// How long each resolution of the metrics history is kept.
pub const METRICS_KEPT: [(i64, i64); 2] = [(10, 24 * 3600 * 1000), (60, 7 * 24 * 3600 * 1000)];

/// Which application log lines to read.
#[derive(Clone, Debug, Default)]
pub struct AppLogQuery {
    /// Only lines after this id (following).
    pub after: Option<i64>,
    /// Only lines at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Only lines at or before this time (ms).
    pub until_ms: Option<i64>,
    /// Only lines holding this text (ASCII letters in any case).
    pub text: Option<String>,
    /// Only this instance's lines.
    pub instance: Option<String>,
    /// At most this many (the newest of them, in order), 1 to 10000 (default 1000).
    pub limit: Option<u32>,
}

/// A revision: an image plus the commit it came from.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RevisionRow {
    /// Service name.
    pub service: String,
    /// 1, 2, 3... per service.
    pub number: i64,
    /// Image id.
    pub image: String,
    /// The tag Slipway gave the image (kept so it is not garbage collected).
    pub tag: String,
    /// Source commit, for git sources.
    pub commit: Option<String>,
    /// ms since the epoch.
    pub created_ms: i64,
    /// Whether this revision ever served traffic (failed deployments' revisions did not).
    pub served: bool,
    /// The service's configuration when the revision was made: its instances run with
    /// this revision's env, port, CPU and memory, also after a rollback.
    pub spec: Option<ServiceSpec>,
}

/// A deployment.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeploymentRow {
    /// Id.
    pub id: i64,
    /// Service name.
    pub service: String,
    /// The revision it deploys.
    pub revision: i64,
    /// What started it.
    pub kind: DeploymentKind,
    /// Current state.
    pub state: DeploymentState,
    /// Why it is in that state (failures explain themselves here).
    pub reason: String,
    /// ms since the epoch.
    pub created_ms: i64,
    /// ms since the epoch.
    pub updated_ms: i64,
}

/// One line of a service's activity log.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct EventRow {
    /// Id, increasing.
    pub id: i64,
    /// ms since the epoch.
    pub at_ms: i64,
    /// What it is about.
    pub kind: EventKind,
    /// What happened.
    pub message: String,
    /// The deployment this entry is a step of, if it is one.
    pub deployment: Option<i64>,
}

/// A secret as a service sees it: its owner (the service or a preview's parent), when
/// it was set, its sealed value.
type VisibleSecret = (String, i64, Vec<u8>);

/// A secret as the API shows it: its name and when it was set, never its value.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SecretRow {
    /// The secret's name, the environment variable it becomes.
    pub name: String,
    /// When it was last set (Unix ms).
    pub set_ms: i64,
}

/// A build.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BuildRow {
    /// Id.
    pub id: i64,
    /// Service name.
    pub service: String,
    /// Commit built.
    pub commit: String,
    /// Where it is.
    pub state: BuildState,
    /// The build's output.
    pub log: String,
    /// ms since the epoch.
    pub created_ms: i64,
}

/// A services row before its spec is parsed: spec, created, target, active, desired.
type RawService = (String, i64, Option<i64>, Option<i64>, i64, bool);

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
    /// The services as of the last write, for readers that would otherwise re-read and
    /// re-parse them every tick (the scaler, the workers).
    snapshot: arc_swap::ArcSwap<Snapshot>,
    /// Held while a snapshot is read and swapped in, so a slower publisher never swaps an
    /// older view over a newer one.
    publishing: Mutex<()>,
    /// Set when a snapshot could not be read after a write: the next reader retries.
    stale: std::sync::atomic::AtomicBool,
    /// The generation of each published snapshot.
    changes: tokio::sync::watch::Sender<u64>,
    /// Seals and opens secret values.
    vault: Vault,
    /// Each service's kept app-log bytes, summed once from the table and then kept up to
    /// date by every append and prune (all of them go through this store), so a flush
    /// costs what it writes and what it prunes, not a scan of every kept line. Only
    /// touched with the connection's lock held.
    log_bytes: Mutex<std::collections::HashMap<String, i64>>,
}

/// Every service as stored, at one generation: a new snapshot is published after each
/// write that changes a service's row (spec, target, active revision, desired count).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases with every published snapshot.
    pub generation: u64,
    services: std::collections::BTreeMap<String, ServiceRow>,
    domains: std::collections::BTreeMap<String, DomainRow>,
}

impl Snapshot {
    /// One service.
    pub fn service(&self, name: &str) -> Option<&ServiceRow> {
        self.services.get(name)
    }

    /// Every service, in name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceRow> {
        self.services.values()
    }

    /// Every claimed domain, in name order.
    pub fn domains(&self) -> impl Iterator<Item = &DomainRow> {
        self.domains.values()
    }
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS services (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    target_revision INTEGER,
    active_revision INTEGER,
    desired_instances INTEGER NOT NULL DEFAULT 1,
    paused INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revisions (
    service TEXT NOT NULL,
    number INTEGER NOT NULL,
    image TEXT NOT NULL,
    tag TEXT NOT NULL,
    commit_sha TEXT,
    created_ms INTEGER NOT NULL,
    served INTEGER NOT NULL DEFAULT 0,
    spec TEXT,
    PRIMARY KEY (service, number)
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    revision INTEGER NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_service ON deployments (service, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    deployment INTEGER
);
CREATE INDEX IF NOT EXISTS events_service ON events (service, id);
CREATE TABLE IF NOT EXISTS builds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    state TEXT NOT NULL,
    log TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS builds_service ON builds (service, id);
CREATE TABLE IF NOT EXISTS domains (
    domain TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    token TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    checked_ms INTEGER NOT NULL DEFAULT 0,
    cert_status TEXT NOT NULL DEFAULT '',
    cert_not_after INTEGER
);
CREATE TABLE IF NOT EXISTS app_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service TEXT NOT NULL,
    revision INTEGER NOT NULL,
    instance TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    stderr INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS app_logs_service ON app_logs (service, id);
CREATE INDEX IF NOT EXISTS app_logs_instance ON app_logs (instance, at_ms);
CREATE TABLE IF NOT EXISTS metric_points (
    service TEXT NOT NULL,
    res_s INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    s2xx INTEGER NOT NULL,
    s4xx INTEGER NOT NULL,
    s5xx INTEGER NOT NULL,
    p50_ms REAL,
    p99_ms REAL,
    instances INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metric_points_at ON metric_points (service, res_s, at_ms);
CREATE TABLE IF NOT EXISTS secrets (
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed BLOB NOT NULL,
    set_ms INTEGER NOT NULL,
    PRIMARY KEY (service, name)
);
"#;

/// Columns added after a table was first made, for stores written before them.
fn migrate(conn: &Connection) -> Result<()> {
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('services') WHERE name = 'paused'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE services ADD COLUMN paused INTEGER NOT NULL DEFAULT 0")?;
    }
    let has: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'deployment'")?
        .exists([])?;
    if !has {
        conn.execute_batch("ALTER TABLE events ADD COLUMN deployment INTEGER")?;
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS events_deployment ON events (deployment) WHERE deployment IS NOT NULL",
    )?;
    Ok(())
}

/// The schema's version, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

/// Events kept per service; older ones are pruned.
const EVENTS_KEPT: i64 = 2000;
/// Build log bytes kept per build.
const BUILD_LOG_MAX: usize = 1 << 20;

impl Store {
    /// Opens (creating) `path` in WAL mode and applies the schema.
    pub fn open(path: &Path, vault: Vault) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer(version));
        }
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        // Later schema changes go here as `if version < N { ALTER ...; }` steps.
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Store::with(conn, vault)
    }

    fn with(conn: Connection, vault: Vault) -> Result<Store> {
        let store = Store {
            conn: Mutex::new(conn),
            snapshot: arc_swap::ArcSwap::from_pointee(Snapshot::default()),
            publishing: Mutex::new(()),
            stale: std::sync::atomic::AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            vault,
            log_bytes: Mutex::default(),
        };
        store.reload()?;
        Ok(store)
    }

    /// The services as of the last write.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        if self.stale.load(std::sync::atomic::Ordering::Acquire) {
            self.publish();
        }
        self.snapshot.load_full()
    }

    /// The generation of each snapshot published from now on.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Reads every service and swaps the new snapshot in.
    fn reload(&self) -> Result<()> {
        let _turn = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let services = self
            .services()?
            .into_iter()
            .map(|r| (r.spec.name.to_string(), r))
            .collect();
        let domains = self
            .all_domains()?
            .into_iter()
            .map(|d| (d.domain.to_string(), d))
            .collect();
        let generation = self.snapshot.load().generation + 1;
        self.snapshot.store(Arc::new(Snapshot {
            generation,
            services,
            domains,
        }));
        self.stale
            .store(false, std::sync::atomic::Ordering::Release);
        self.changes.send_replace(generation);
        Ok(())
    }

    /// Passes a write's result on, publishing a snapshot when it succeeded.
    fn published<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_ok() {
            self.publish();
        }
        r
    }

    /// Creates a service; refuses a duplicate name.
    pub fn create_service(&self, spec: &ServiceSpec) -> Result<()> {
        let r = self.create_service_row(spec);
        self.published(r)
    }

    /// Replaces a service's spec.
    pub fn update_spec(&self, spec: &ServiceSpec) -> Result<bool> {
        let r = self.update_spec_row(spec);
        self.published(r)
    }

    /// Deletes a service and everything recorded about it.
    pub fn delete_service(&self, name: &str) -> Result<bool> {
        let r = self.delete_service_row(name);
        self.published(r)
    }

    /// Records that traffic now goes to `revision`.
    pub fn set_active_revision(&self, service: &str, revision: i64) -> Result<()> {
        let r = self.set_active_revision_row(service, revision);
        self.published(r)
    }

    /// Points the target back at the active revision (after a failed deployment).
    pub fn reset_target(&self, service: &str, failed_revision: i64) -> Result<()> {
        let r = self.reset_target_row(service, failed_revision);
        self.published(r)
    }

    /// Pauses or resumes a service; false if it does not exist. Resuming asks for at
    /// least one instance at once (the scaler adjusts from there).
    pub fn set_paused(&self, service: &str, paused: bool) -> Result<bool> {
        let r = self
            .db()
            .execute(
                "UPDATE services SET paused = ?2, desired_instances = CASE WHEN ?2 THEN desired_instances ELSE MAX(desired_instances, 1) END WHERE name = ?1",
                params![service, paused],
            )
            .map(|n| n > 0)
            .map_err(StoreError::from);
        self.published(r)
    }

    /// Records the scaler's wish.
    pub fn set_desired_instances(&self, service: &str, n: i64) -> Result<()> {
        let r = self.set_desired_instances_row(service, n);
        self.published(r)
    }

    /// Records a new revision (numbered after the last) and makes it the target, with a
    /// pending deployment, in one transaction. Returns (revision, deployment id).
    pub fn new_revision(
        &self,
        service: &str,
        image: &str,
        tag_for: impl FnOnce(i64) -> String,
        commit: Option<&str>,
        kind: DeploymentKind,
    ) -> Result<(RevisionRow, i64)> {
        let r = self.new_revision_row(service, image, tag_for, commit, kind, &|_| {});
        self.published(r)
    }

    /// [`Store::new_revision`] whose recorded configuration is the service's as changed
    /// by `adjust` (what the build itself decided: the port and secret references of an
    /// `apprunner.yaml`).
    pub fn new_revision_adjusted(
        &self,
        service: &str,
        image: &str,
        tag_for: impl FnOnce(i64) -> String,
        commit: Option<&str>,
        kind: DeploymentKind,
        adjust: &dyn Fn(&mut ServiceSpec),
    ) -> Result<(RevisionRow, i64)> {
        let r = self.new_revision_row(service, image, tag_for, commit, kind, adjust);
        self.published(r)
    }

    /// Starts a deployment of an existing revision (rollback, restart recovery).
    pub fn deploy_revision(
        &self,
        service: &str,
        revision: i64,
        kind: DeploymentKind,
    ) -> Result<i64> {
        let r = self.deploy_revision_row(service, revision, kind);
        self.published(r)
    }

    /// Publishes a snapshot after a write; a failed read is logged and retried by the
    /// next reader.
    fn publish(&self) {
        if let Err(e) = self.reload() {
            self.stale.store(true, std::sync::atomic::Ordering::Release);
            tracing::error!("store: reading the services for a new snapshot: {e}");
        }
    }

    /// Claims `domain` for `service` with a fresh ownership `token`, pending. Claiming it
    /// again for the same service keeps the claim as it is (and its token); another
    /// service's claim is refused.
    pub fn claim_domain(&self, service: &str, domain: &Domain, token: &str) -> Result<DomainRow> {
        let r = self.claim_domain_row(service, domain, token);
        self.published(r)
    }

    fn claim_domain_row(&self, service: &str, domain: &Domain, token: &str) -> Result<DomainRow> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let exists: Option<String> = tx
            .query_row(
                "SELECT name FROM services WHERE name = ?1",
                [service],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NoService(service.to_string()));
        }
        let holder: Option<String> = tx
            .query_row(
                "SELECT service FROM domains WHERE domain = ?1",
                [domain.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        match holder {
            Some(h) if h != service => {
                return Err(StoreError::Claimed {
                    domain: domain.to_string(),
                    service: h,
                })
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO domains (domain, service, token, state, reason, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        domain.as_str(),
                        service,
                        token,
                        DomainState::Pending.as_str(),
                        "waiting for its DNS records",
                        now_unix_ms()
                    ],
                )?;
            }
        }
        let row = tx.query_row(
            &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE domain = ?1"),
            [domain.as_str()],
            domain_from,
        )?;
        tx.commit()?;
        Ok(row)
    }

    /// A service's domains, in name order.
    pub fn domains(&self, service: &str) -> Result<Vec<DomainRow>> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE service = ?1 ORDER BY domain"
        ))?;
        let rows = st.query_map([service], domain_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn all_domains(&self) -> Result<Vec<DomainRow>> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains ORDER BY domain"
        ))?;
        let rows = st.query_map([], domain_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a check's outcome for the claim that holds `token`. False if the domain is
    /// no longer claimed that way (removed, or claimed again, while it was checked).
    pub fn set_domain_state(
        &self,
        domain: &Domain,
        token: &str,
        state: DomainState,
        reason: &str,
    ) -> Result<bool> {
        let r = self.db().execute(
            "UPDATE domains SET state = ?2, reason = ?3, checked_ms = ?4 WHERE domain = ?1 AND token = ?5",
            params![domain.as_str(), state.as_str(), reason, now_unix_ms(), token],
        );
        self.published(r.map(|n| n > 0).map_err(StoreError::from))
    }

    /// Records the domain's certificate state. False if the domain is no longer claimed.
    pub fn set_domain_cert(
        &self,
        domain: &Domain,
        status: &str,
        not_after_ms: Option<i64>,
    ) -> Result<bool> {
        let r = self.db().execute(
            "UPDATE domains SET cert_status = ?2, cert_not_after = ?3 WHERE domain = ?1",
            params![domain.as_str(), status, not_after_ms],
        );
        self.published(r.map(|n| n > 0).map_err(StoreError::from))
    }

    /// Removes `service`'s claim on `domain`; false if it had none.
    pub fn release_domain(&self, service: &str, domain: &Domain) -> Result<bool> {
        let r = self.db().execute(
            "DELETE FROM domains WHERE domain = ?1 AND service = ?2",
            params![domain.as_str(), service],
        );
        self.published(r.map(|n| n > 0).map_err(StoreError::from))
    }

    /// Keeps an instance's new log lines (time ms, stderr, text), then drops the
    /// service's oldest lines past `max_bytes` of text. A deleted service keeps nothing.
    pub fn append_app_logs(
        &self,
        service: &str,
        revision: i64,
        instance: &str,
        lines: &[(i64, bool, String)],
        max_bytes: u64,
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut db = self.db();
        let tx = db.transaction()?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM services WHERE name = ?1", [service], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Ok(());
        }
        let mut sizes = self.log_bytes.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = match sizes.get(service) {
            Some(&n) => n,
            // Once per service and process: what earlier runs kept.
            None => tx.query_row(
                "SELECT COALESCE(SUM(length(CAST(line AS BLOB))), 0) FROM app_logs WHERE service = ?1",
                [service],
                |r| r.get(0),
            )?,
        };
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO app_logs (service, revision, instance, at_ms, stderr, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (at, stderr, line) in lines {
                st.execute(params![service, revision, instance, at, stderr, line])?;
                kept += line.len() as i64;
            }
        }
        let max = max_bytes as i64;
        if kept > max {
            // Past the bound: the oldest lines go until a tenth of the bound is free, so
            // the next prunes come a tenth of the bound apart rather than at every flush.
            let goal = max - max / 10;
            let mut cut = None;
            {
                let mut st = tx.prepare_cached(
                    "SELECT id, length(CAST(line AS BLOB)) FROM app_logs WHERE service = ?1 ORDER BY id",
                )?;
                let mut rows = st.query([service])?;
                while kept > goal {
                    let Some(r) = rows.next()? else { break };
                    let (id, len): (i64, i64) = (r.get(0)?, r.get(1)?);
                    kept -= len;
                    cut = Some(id);
                }
            }
            if let Some(cut) = cut {
                tx.execute(
                    "DELETE FROM app_logs WHERE service = ?1 AND id <= ?2",
                    params![service, cut],
                )?;
            }
        }
        tx.commit()?;
        sizes.insert(service.to_string(), kept.max(0));
        Ok(())
    }

    /// The time of an instance's newest kept line (0: none), where following resumes.
    pub fn last_app_log_ms(&self, instance: &str) -> Result<i64> {
        Ok(self.db().query_row(
            "SELECT COALESCE(MAX(at_ms), 0) FROM app_logs WHERE instance = ?1",
            [instance],
            |r| r.get(0),
        )?)
    }

    /// A service's application log lines, oldest first.
    pub fn app_logs(&self, service: &str, q: &AppLogQuery) -> Result<Vec<AppLogRow>> {
        let limit = i64::from(q.limit.unwrap_or(1000).clamp(1, 10_000));
        let like = q.text.as_ref().map(|t| {
            let escaped = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT id, at_ms, revision, instance, stderr, line FROM (
               SELECT * FROM app_logs WHERE service = ?1
                 AND (?2 IS NULL OR id > ?2)
                 AND (?3 IS NULL OR at_ms >= ?3)
                 AND (?4 IS NULL OR at_ms <= ?4)
                 AND (?5 IS NULL OR line LIKE ?5 ESCAPE '\\')
                 AND (?6 IS NULL OR instance = ?6)
               ORDER BY id DESC LIMIT ?7) ORDER BY id",
        )?;
        let rows = st.query_map(
            params![service, q.after, q.since_ms, q.until_ms, like, q.instance, limit],
            |r| {
                Ok(AppLogRow {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    revision: r.get(2)?,
                    instance: r.get(3)?,
                    stream: if r.get::<_, bool>(4)? {
                        "stderr"
                    } else {
                        "stdout"
                    },
                    line: r.get(5)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records metrics points of resolution `res_s` (one per service), and drops points of
    /// that resolution older than it is kept ([`METRICS_KEPT`]). Deleted services get none.
    pub fn record_metrics(&self, res_s: i64, points: &[(String, MetricPoint)]) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO metric_points (service, res_s, at_ms, requests, s2xx, s4xx, s5xx, p50_ms, p99_ms, instances)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10 WHERE EXISTS (SELECT 1 FROM services WHERE name = ?1)",
            )?;
            for (service, p) in points {
                st.execute(params![
                    service,
                    res_s,
                    p.at_ms,
                    p.requests,
                    p.s2xx,
                    p.s4xx,
                    p.s5xx,
                    p.p50_ms,
                    p.p99_ms,
                    p.instances
                ])?;
            }
        }
        let kept = METRICS_KEPT
            .iter()
            .find(|(r, _)| *r == res_s)
            .map_or(24 * 3600 * 1000, |(_, k)| *k);
        tx.execute(
            "DELETE FROM metric_points WHERE res_s = ?1 AND at_ms < ?2",
            params![res_s, now_unix_ms() - kept],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A service's metrics points of resolution `res_s` since `since_ms`, oldest first.
    pub fn metrics(&self, service: &str, res_s: i64, since_ms: i64) -> Result<Vec<MetricPoint>> {
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT at_ms, requests, s2xx, s4xx, s5xx, p50_ms, p99_ms, instances FROM metric_points
             WHERE service = ?1 AND res_s = ?2 AND at_ms >= ?3 ORDER BY at_ms",
        )?;
        let rows = st.query_map(params![service, res_s, since_ms], |r| {
            Ok(MetricPoint {
                at_ms: r.get(0)?,
                requests: r.get(1)?,
                s2xx: r.get(2)?,
                s4xx: r.get(3)?,
                s5xx: r.get(4)?,
                p50_ms: r.get(5)?,
                p99_ms: r.get(6)?,
                instances: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// An in-memory store, for tests.
    pub fn memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Store::with(conn, Vault::ephemeral()?)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A value from the meta table, created by `init` when missing.
    pub fn meta_or_init(&self, key: &str, init: impl FnOnce() -> String) -> Result<String> {
        let db = self.db();
        let v: Option<String> = db
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?;
        if let Some(v) = v {
            return Ok(v);
        }
        let v = init();
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            params![key, v],
        )?;
        Ok(v)
    }

    fn create_service_row(&self, spec: &ServiceSpec) -> Result<()> {
        let db = self.db();
        let json = serde_json::to_string(spec)?;
        let desired = spec.scaling.min_size.max(1) as i64;
        match db.execute(
            "INSERT INTO services (name, spec, created_ms, desired_instances) VALUES (?1, ?2, ?3, ?4)",
            params![spec.name.as_str(), json, now_unix_ms(), desired],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(spec.name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn row_to_service(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawService> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    }

    fn service_from(t: RawService) -> Result<ServiceRow> {
        Ok(ServiceRow {
            spec: serde_json::from_str(&t.0)?,
            created_ms: t.1,
            target_revision: t.2,
            active_revision: t.3,
            desired_instances: t.4,
            paused: t.5,
        })
    }

    /// One service.
    pub fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        let t = self
            .db()
            .query_row(
                "SELECT spec, created_ms, target_revision, active_revision, desired_instances, paused FROM services WHERE name = ?1",
                [name],
                Self::row_to_service,
            )
            .optional()?;
        t.map(Self::service_from).transpose()
    }

    /// Every service, by name.
    pub fn services(&self) -> Result<Vec<ServiceRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT spec, created_ms, target_revision, active_revision, desired_instances, paused FROM services ORDER BY name",
        )?;
        let rows = st
            .query_map([], Self::row_to_service)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(Self::service_from).collect()
    }

    fn update_spec_row(&self, spec: &ServiceSpec) -> Result<bool> {
        let json = serde_json::to_string(spec)?;
        let n = self.db().execute(
            "UPDATE services SET spec = ?2 WHERE name = ?1",
            params![spec.name.as_str(), json],
        )?;
        Ok(n > 0)
    }

    fn delete_service_row(&self, name: &str) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.execute("DELETE FROM services WHERE name = ?1", [name])?;
        for table in [
            "revisions",
            "deployments",
            "events",
            "builds",
            "secrets",
            "domains",
            "app_logs",
            "metric_points",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE service = ?1"), [name])?;
        }
        tx.commit()?;
        self.log_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(n > 0)
    }

    fn new_revision_row(
        &self,
        service: &str,
        image: &str,
        tag_for: impl FnOnce(i64) -> String,
        commit: Option<&str>,
        kind: DeploymentKind,
        adjust: &dyn Fn(&mut ServiceSpec),
    ) -> Result<(RevisionRow, i64)> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let stored: Option<String> = tx
            .query_row(
                "SELECT spec FROM services WHERE name = ?1",
                [service],
                |r| r.get(0),
            )
            .optional()?;
        let Some(stored) = stored else {
            return Err(StoreError::NoService(service.to_string()));
        };
        let mut spec: ServiceSpec = serde_json::from_str(&stored)?;
        adjust(&mut spec);
        let spec_json = serde_json::to_string(&spec)?;
        let number: i64 = tx.query_row(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE service = ?1",
            [service],
            |r| r.get(0),
        )?;
        let now = now_unix_ms();
        let tag = tag_for(number);
        tx.execute(
            "INSERT INTO revisions (service, number, image, tag, commit_sha, created_ms, spec)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![service, number, image, tag, commit, now, spec_json],
        )?;
        let dep = Self::start_deployment_tx(&tx, service, number, kind, now)?;
        tx.commit()?;
        Ok((
            RevisionRow {
                service: service.into(),
                number,
                image: image.into(),
                tag,
                commit: commit.map(str::to_string),
                created_ms: now,
                served: false,
                spec: Some(spec),
            },
            dep,
        ))
    }

    fn start_deployment_tx(
        tx: &rusqlite::Transaction<'_>,
        service: &str,
        revision: i64,
        kind: DeploymentKind,
        now: i64,
    ) -> Result<i64> {
        // A newer deployment supersedes any that the state machine lets go to superseded
        // (those that have not switched traffic yet).
        let open: Vec<(i64, DeploymentState)> = {
            let mut st = tx.prepare("SELECT id, state FROM deployments WHERE service = ?1")?;
            let rows = st
                .query_map([service], |r| {
                    Ok((r.get(0)?, vocab(r, 1, deployment_state)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        for (id, state) in open {
            if state.can_go_to(DeploymentState::Superseded) {
                tx.execute(
                    "UPDATE deployments SET state = ?2, reason = 'a newer deployment replaced it', updated_ms = ?3 WHERE id = ?1",
                    params![id, DeploymentState::Superseded.as_str(), now],
                )?;
            }
        }
        tx.execute(
            "INSERT INTO deployments (service, revision, kind, state, reason, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, '', ?5, ?5)",
            params![service, revision, kind.as_str(), DeploymentState::Pending.as_str(), now],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE services SET target_revision = ?2 WHERE name = ?1",
            params![service, revision],
        )?;
        Ok(id)
    }

    fn deploy_revision_row(
        &self,
        service: &str,
        revision: i64,
        kind: DeploymentKind,
    ) -> Result<i64> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let id = Self::start_deployment_tx(&tx, service, revision, kind, now_unix_ms())?;
        tx.commit()?;
        Ok(id)
    }

    /// One revision.
    pub fn revision(&self, service: &str, number: i64) -> Result<Option<RevisionRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT service, number, image, tag, commit_sha, created_ms, served, spec FROM revisions WHERE service = ?1 AND number = ?2",
                params![service, number],
                Self::revision_row,
            )
            .optional()?)
    }

    fn revision_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RevisionRow> {
        Ok(RevisionRow {
            service: r.get(0)?,
            number: r.get(1)?,
            image: r.get(2)?,
            tag: r.get(3)?,
            commit: r.get(4)?,
            created_ms: r.get(5)?,
            served: r.get(6)?,
            spec: r
                .get::<_, Option<String>>(7)?
                .and_then(|s| serde_json::from_str(&s).ok()),
        })
    }

    /// A service's revisions, newest first.
    pub fn revisions(&self, service: &str) -> Result<Vec<RevisionRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT service, number, image, tag, commit_sha, created_ms, served, spec FROM revisions WHERE service = ?1 ORDER BY number DESC",
        )?;
        let rows = st
            .query_map([service], Self::revision_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Forgets a revision whose image was pruned.
    pub fn delete_revision(&self, service: &str, number: i64) -> Result<()> {
        self.db().execute(
            "DELETE FROM revisions WHERE service = ?1 AND number = ?2",
            params![service, number],
        )?;
        Ok(())
    }

    /// Moves a deployment to `next` with `reason`, if the state machine allows the step
    /// from its stored state; otherwise refuses with an error naming both states.
    pub fn set_deployment_state(&self, id: i64, next: DeploymentState, reason: &str) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let current = tx
            .query_row("SELECT state FROM deployments WHERE id = ?1", [id], |r| {
                vocab(r, 0, deployment_state)
            })
            .optional()?
            .ok_or(StoreError::NoDeployment(id))?;
        current
            .go_to(next)
            .map_err(|source| StoreError::Transition { id, source })?;
        tx.execute(
            "UPDATE deployments SET state = ?2, reason = ?3, updated_ms = ?4 WHERE id = ?1",
            params![id, next.as_str(), reason, now_unix_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Updates why a deployment is where it is, within its state (a health check's
    /// progress): not a transition.
    pub fn set_deployment_reason(&self, id: i64, reason: &str) -> Result<()> {
        let n = self.db().execute(
            "UPDATE deployments SET reason = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, reason, now_unix_ms()],
        )?;
        if n == 0 {
            return Err(StoreError::NoDeployment(id));
        }
        Ok(())
    }

    fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
        Ok(DeploymentRow {
            id: r.get(0)?,
            service: r.get(1)?,
            revision: r.get(2)?,
            kind: vocab(r, 3, DeploymentKind::parse)?,
            state: vocab(r, 4, deployment_state)?,
            reason: r.get(5)?,
            created_ms: r.get(6)?,
            updated_ms: r.get(7)?,
        })
    }

    /// One deployment.
    pub fn deployment(&self, id: i64) -> Result<Option<DeploymentRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT id, service, revision, kind, state, reason, created_ms, updated_ms FROM deployments WHERE id = ?1",
                [id],
                Self::deployment_row,
            )
            .optional()?)
    }

    /// A service's deployments, newest first, at most `limit`.
    pub fn deployments(&self, service: &str, limit: i64) -> Result<Vec<DeploymentRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, service, revision, kind, state, reason, created_ms, updated_ms FROM deployments WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![service, limit], Self::deployment_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every service's newest deployment, in one query (what a list of all services
    /// shows).
    pub fn latest_deployments(&self) -> Result<std::collections::HashMap<String, DeploymentRow>> {
        let db = self.db();
        let mut st = db.prepare_cached(
            "SELECT id, service, revision, kind, state, reason, created_ms, updated_ms FROM deployments WHERE id IN (SELECT MAX(id) FROM deployments GROUP BY service)",
        )?;
        let rows = st
            .query_map([], Self::deployment_row)?
            .map(|r| r.map(|d| (d.service.clone(), d)))
            .collect::<rusqlite::Result<std::collections::HashMap<_, _>>>()?;
        Ok(rows)
    }

    /// The newest deployment of a service that is not over, if any.
    pub fn open_deployment(&self, service: &str) -> Result<Option<DeploymentRow>> {
        Ok(self
            .deployments(service, 20)?
            .into_iter()
            .find(|d| !d.state.is_terminal() && d.state != DeploymentState::Failed))
    }

    fn set_active_revision_row(&self, service: &str, revision: i64) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE services SET active_revision = ?2 WHERE name = ?1",
            params![service, revision],
        )?;
        tx.execute(
            "UPDATE revisions SET served = 1 WHERE service = ?1 AND number = ?2",
            params![service, revision],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn reset_target_row(&self, service: &str, failed_revision: i64) -> Result<()> {
        self.db().execute(
            "UPDATE services SET target_revision = active_revision WHERE name = ?1 AND target_revision = ?2",
            params![service, failed_revision],
        )?;
        Ok(())
    }

    fn set_desired_instances_row(&self, service: &str, n: i64) -> Result<()> {
        self.db().execute(
            "UPDATE services SET desired_instances = ?2 WHERE name = ?1",
            params![service, n],
        )?;
        Ok(())
    }

    /// Sets `service`'s secret `name` (sealed before it reaches SQLite). Returns whether
    /// it replaced a value.
    pub fn set_secret(&self, service: &str, name: &str, value: &str) -> Result<bool> {
        let sealed = self.vault.seal(service, name, value.as_bytes())?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let known: i64 = tx.query_row(
            "SELECT COUNT(*) FROM services WHERE name = ?1",
            [service],
            |r| r.get(0),
        )?;
        if known == 0 {
            return Err(StoreError::NoService(service.to_string()));
        }
        let n = tx.execute(
            "DELETE FROM secrets WHERE service = ?1 AND name = ?2",
            params![service, name],
        )?;
        tx.execute(
            "INSERT INTO secrets (service, name, sealed, set_ms) VALUES (?1, ?2, ?3, ?4)",
            params![service, name, sealed, now_unix_ms()],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Removes a secret; false when there was none.
    pub fn unset_secret(&self, service: &str, name: &str) -> Result<bool> {
        let n = self.db().execute(
            "DELETE FROM secrets WHERE service = ?1 AND name = ?2",
            params![service, name],
        )?;
        Ok(n > 0)
    }

    /// Whose secrets a service sees, nearest first: its own, then, for a preview, its
    /// parent's (a preview inherits the parent's secrets; one of its own of the same
    /// name wins).
    fn secret_owners(&self, service: &str) -> Vec<String> {
        let mut owners = vec![service.to_string()];
        if let Some(parent) = self
            .snapshot()
            .service(service)
            .and_then(|r| r.spec.preview_of.clone())
        {
            owners.push(parent);
        }
        owners
    }

    /// One owner's secrets, sealed, in name order.
    fn sealed_secrets(&self, owner: &str) -> Result<Vec<(String, i64, Vec<u8>)>> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT name, set_ms, sealed FROM secrets WHERE service = ?1 ORDER BY name")?;
        let rows = st
            .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The secrets a service sees, by name: owner, when set, sealed value; see
    /// [`Self::secret_owners`].
    fn visible_secrets(
        &self,
        service: &str,
    ) -> Result<std::collections::BTreeMap<String, VisibleSecret>> {
        let mut out = std::collections::BTreeMap::new();
        for owner in self.secret_owners(service) {
            for (name, set_ms, sealed) in self.sealed_secrets(&owner)? {
                out.entry(name).or_insert((owner.clone(), set_ms, sealed));
            }
        }
        Ok(out)
    }

    /// A service's secrets (a preview's include its parent's), names and when they were
    /// set: never their values.
    pub fn secrets(&self, service: &str) -> Result<Vec<SecretRow>> {
        Ok(self
            .visible_secrets(service)?
            .into_iter()
            .map(|(name, (_, set_ms, _))| SecretRow { name, set_ms })
            .collect())
    }

    /// One secret's value (credentials, a webhook's key), if it is set.
    pub fn secret(&self, service: &str, name: &str) -> Result<Option<String>> {
        for owner in self.secret_owners(service) {
            let sealed: Option<Vec<u8>> = self
                .db()
                .query_row(
                    "SELECT sealed FROM secrets WHERE service = ?1 AND name = ?2",
                    params![owner, name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(s) = sealed {
                let value = self.vault.open_value(&owner, name, &s)?;
                return Ok(Some(String::from_utf8_lossy(&value).into_owned()));
            }
        }
        Ok(None)
    }

    /// A service's secrets with their values, for its instances' environment only.
    pub fn secret_values(&self, service: &str) -> Result<Vec<(String, String)>> {
        self.visible_secrets(service)?
            .into_iter()
            .map(|(name, (owner, _, sealed))| {
                let value = self.vault.open_value(&owner, &name, &sealed)?;
                Ok((name, String::from_utf8_lossy(&value).into_owned()))
            })
            .collect()
    }

    /// Appends to a service's activity log.
    pub fn event(&self, service: &str, kind: EventKind, message: &str) -> Result<()> {
        self.insert_event(service, kind, message, None)
    }

    /// Appends a step of deployment `id` to its service's activity log (listed by
    /// [`Store::deployment_events`] too).
    pub fn deployment_event(&self, service: &str, id: i64, message: &str) -> Result<()> {
        self.insert_event(service, EventKind::Deployment, message, Some(id))
    }

    fn insert_event(
        &self,
        service: &str,
        kind: EventKind,
        message: &str,
        deployment: Option<i64>,
    ) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT INTO events (service, at_ms, kind, message, deployment) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![service, now_unix_ms(), kind.as_str(), message, deployment],
        )?;
        let id = db.last_insert_rowid();
        if id % 100 == 0 {
            db.execute(
                "DELETE FROM events WHERE service = ?1 AND id <= ?2",
                params![service, id - EVENTS_KEPT],
            )?;
        }
        Ok(())
    }

    /// A service's activity log after `after_id`, oldest first, at most `limit`.
    pub fn events(&self, service: &str, after_id: i64, limit: i64) -> Result<Vec<EventRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, at_ms, kind, message, deployment FROM (SELECT * FROM events WHERE service = ?1 AND id > ?2 ORDER BY id DESC LIMIT ?3) ORDER BY id",
        )?;
        let rows = st
            .query_map(params![service, after_id, limit], Store::event_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The steps of one deployment of `service`, oldest first (at most `limit`).
    pub fn deployment_events(
        &self,
        service: &str,
        deployment: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, at_ms, kind, message, deployment FROM events WHERE deployment = ?2 AND service = ?1 ORDER BY id LIMIT ?3",
        )?;
        let rows = st
            .query_map(params![service, deployment, limit], Store::event_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
        Ok(EventRow {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            kind: vocab(r, 2, EventKind::parse)?,
            message: r.get(3)?,
            deployment: r.get(4)?,
        })
    }

    /// A builds row: id, service, commit_sha, state, log, created_ms.
    fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRow> {
        Ok(BuildRow {
            id: r.get(0)?,
            service: r.get(1)?,
            commit: r.get(2)?,
            state: vocab(r, 3, BuildState::parse)?,
            log: r.get(4)?,
            created_ms: r.get(5)?,
        })
    }

    /// Records a build of `commit` as queued, before anything else happens to it: a push
    /// git accepted is in the store from then on, whatever happens to the process.
    pub fn queue_build(&self, service: &str, commit: &str) -> Result<i64> {
        let db = self.db();
        db.execute(
            "INSERT INTO builds (service, commit_sha, state, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![service, commit, BuildState::Queued.as_str(), now_unix_ms()],
        )?;
        Ok(db.last_insert_rowid())
    }

    /// Marks a queued build as running.
    pub fn start_build(&self, id: i64) -> Result<()> {
        self.finish_build(id, BuildState::Running)
    }

    /// Builds that were queued or running (not finished), oldest first: after a restart,
    /// the ones to build again.
    pub fn unfinished_builds(&self) -> Result<Vec<BuildRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, service, commit_sha, state, '', created_ms FROM builds WHERE state IN (?1, ?2) ORDER BY id",
        )?;
        let [a, b] = BuildState::UNFINISHED.map(BuildState::as_str);
        let rows = st
            .query_map([a, b], Self::build_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Whether any build of `commit` was ever recorded for `service`.
    pub fn has_build_of(&self, service: &str, commit: &str) -> Result<bool> {
        let n: i64 = self.db().query_row(
            "SELECT count(*) FROM builds WHERE service = ?1 AND commit_sha = ?2",
            params![service, commit],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Appends output to a build's log (bounded).
    pub fn append_build_log(&self, id: i64, text: &str) -> Result<()> {
        self.db().execute(
            "UPDATE builds SET log = log || ?2 WHERE id = ?1 AND length(log) < ?3",
            params![id, text, BUILD_LOG_MAX as i64],
        )?;
        Ok(())
    }

    /// Moves a build to `state`.
    pub fn finish_build(&self, id: i64, state: BuildState) -> Result<()> {
        self.db().execute(
            "UPDATE builds SET state = ?2 WHERE id = ?1",
            params![id, state.as_str()],
        )?;
        Ok(())
    }

    /// One build of a service, if it has it.
    pub fn build(&self, service: &str, id: i64) -> Result<Option<BuildRow>> {
        Ok(self
            .db()
            .query_row(
                "SELECT id, service, commit_sha, state, log, created_ms FROM builds WHERE service = ?1 AND id = ?2",
                params![service, id],
                Self::build_row,
            )
            .optional()?)
    }

    /// A service's builds, newest first.
    pub fn builds(&self, service: &str, limit: i64) -> Result<Vec<BuildRow>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, service, commit_sha, state, log, created_ms FROM builds WHERE service = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![service, limit], Self::build_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_core::ServiceName;

    /// 10 s points are kept for 24 h and 1 min points for 7 days; older ones go at the
    /// next write of their resolution; points of a service that does not exist are not kept.
    #[test]
    fn metrics_history_is_bounded_by_resolution() {
        let s = Store::memory().unwrap();
        s.create_service(&spec("web")).unwrap();
        let now = now_unix_ms();
        let point = |ago_ms: i64| MetricPoint {
            at_ms: now - ago_ms,
            requests: 1,
            s2xx: 1,
            s4xx: 0,
            s5xx: 0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            instances: 1,
        };
        let hour = 3600 * 1000;
        let web = |p: MetricPoint| ("web".to_string(), p);
        s.record_metrics(
            10,
            &[web(point(25 * hour)), web(point(23 * hour)), web(point(0))],
        )
        .unwrap();
        s.record_metrics(
            60,
            &[
                web(point(8 * 24 * hour)),
                web(point(6 * 24 * hour)),
                web(point(0)),
            ],
        )
        .unwrap();
        let ages = |res: i64| -> Vec<i64> {
            s.metrics("web", res, 0)
                .unwrap()
                .iter()
                .map(|p| (now - p.at_ms) / hour)
                .collect()
        };
        assert_eq!(ages(10), [23, 0]);
        assert_eq!(ages(60), [6 * 24, 0]);
        // Points of a service that is not there are not kept.
        s.record_metrics(10, &[("gone".to_string(), point(0))])
            .unwrap();
        assert!(s.metrics("gone", 10, 0).unwrap().is_empty());
    }

    fn spec(name: &str) -> ServiceSpec {
        ServiceSpec::new(ServiceName::parse(name).unwrap())
    }

    #[test]
    fn app_logs_are_bounded_searchable_and_go_with_their_service() {
        let s = Store::memory().unwrap();
        s.create_service(&spec("web")).unwrap();
        let line = |i: i64| {
            (
                1000 + i,
                i % 2 == 0,
                format!("line {i:04} {}", "x".repeat(90)),
            )
        };
        // 100-byte lines, a 1000-byte bound: past it, the oldest go until a tenth of the
        // bound is free, so the newest 9 stay.
        let batch: Vec<_> = (0..30).map(line).collect();
        s.append_app_logs("web", 1, "i1", &batch, 1000).unwrap();
        let all = s.app_logs("web", &AppLogQuery::default()).unwrap();
        assert_eq!(all.len(), 9);
        assert!(all[0].line.starts_with("line 0021") && all[8].line.starts_with("line 0029"));
        assert_eq!(all[0].stream, "stdout");
        let q = |f: &dyn Fn(&mut AppLogQuery)| {
            let mut q = AppLogQuery::default();
            f(&mut q);
            s.app_logs("web", &q).unwrap()
        };
        assert_eq!(
            q(&|q| q.text = Some("LINE 0025".into())).len(),
            1,
            "any case"
        );
        assert_eq!(q(&|q| q.text = Some("%".into())).len(), 0, "% is literal");
        assert_eq!(
            q(&|q| {
                q.since_ms = Some(1027);
                q.until_ms = Some(1028)
            })
            .len(),
            2
        );
        assert_eq!(q(&|q| q.after = Some(all[6].id)).len(), 2);
        let newest: Vec<i64> = q(&|q| q.limit = Some(3)).iter().map(|r| r.at_ms).collect();
        assert_eq!(newest, [1027, 1028, 1029]);
        assert_eq!(s.last_app_log_ms("i1").unwrap(), 1029);
        assert_eq!(s.last_app_log_ms("i2").unwrap(), 0);
        // An unknown service keeps nothing.
        s.append_app_logs("gone", 1, "i9", &batch, 1000).unwrap();
        assert!(s
            .app_logs("gone", &AppLogQuery::default())
            .unwrap()
            .is_empty());
        s.delete_service("web").unwrap();
        assert!(s
            .app_logs("web", &AppLogQuery::default())
            .unwrap()
            .is_empty());
    }

    /// However lines arrive (one at a time, in batches, across a reopen of the store),
    /// the kept bytes never pass the bound and the newest line is always kept.
    #[test]
    fn app_log_bound_holds_across_batches_and_reopens() {
        let dir = std::env::temp_dir().join(format!("slipway-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let bytes = |s: &Store| -> i64 {
            s.app_logs("web", &AppLogQuery::default())
                .unwrap()
                .iter()
                .map(|l| l.line.len() as i64)
                .sum()
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut n = 0i64;
        for round in 0..4 {
            let s = Store::open(&path, Vault::ephemeral().unwrap()).unwrap();
            if round == 0 {
                s.create_service(&spec("web")).unwrap();
            }
            for _ in 0..60 {
                let batch: Vec<_> = (0..rng.usize(1..20))
                    .map(|_| {
                        n += 1;
                        (n, false, format!("{n}:{}", "y".repeat(rng.usize(0..300))))
                    })
                    .collect();
                s.append_app_logs("web", 1, "i1", &batch, 4000).unwrap();
                let kept = bytes(&s);
                assert!(kept <= 4000, "round {round}: {kept} bytes kept");
                let all = s.app_logs("web", &AppLogQuery::default()).unwrap();
                assert!(all.last().unwrap().line.starts_with(&format!("{n}:")));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn domains_are_claimed_once_and_go_with_their_service() {
        let s = Store::memory().unwrap();
        s.create_service(&spec("web")).unwrap();
        s.create_service(&spec("shop")).unwrap();
        let d = Domain::parse("www.example.com").unwrap();
        assert!(matches!(
            s.claim_domain("nope", &d, "t0"),
            Err(StoreError::NoService(_))
        ));
        let row = s.claim_domain("web", &d, "t1").unwrap();
        assert_eq!(
            (row.state, row.token.as_str()),
            (DomainState::Pending, "t1")
        );
        // Again by the same service: the same claim, the same token.
        assert_eq!(s.claim_domain("web", &d, "t2").unwrap().token, "t1");
        match s.claim_domain("shop", &d, "t3") {
            Err(StoreError::Claimed { service, .. }) => assert_eq!(service, "web"),
            other => panic!("{other:?}"),
        }
        assert!(s
            .set_domain_state(&d, "t1", DomainState::Active, "verified")
            .unwrap());
        assert!(
            !s.set_domain_state(&d, "stale", DomainState::Failed, "x")
                .unwrap(),
            "a check of an older claim changes nothing"
        );
        let snap = s.snapshot();
        let active: Vec<_> = snap
            .domains()
            .map(|d| (d.domain.to_string(), d.state))
            .collect();
        assert_eq!(
            active,
            [("www.example.com".to_string(), DomainState::Active)]
        );
        assert!(
            !s.release_domain("shop", &d).unwrap(),
            "not api's to release"
        );
        s.delete_service("web").unwrap();
        assert_eq!(s.snapshot().domains().count(), 0);
        // Free again: a new claim gets a new token.
        assert_eq!(s.claim_domain("shop", &d, "t4").unwrap().token, "t4");
    }

    #[test]
    fn secrets_are_sealed_listed_without_values_and_go_with_their_service() {
        let dir = std::env::temp_dir().join(format!("slipway-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.db");
        let key = dir.join("secret.key");
        let canary = "canary-7f3a9b1c";
        {
            let s = Store::open(&path, Vault::open(&key, true).unwrap()).unwrap();
            assert!(matches!(
                s.set_secret("nope", "K", "v"),
                Err(StoreError::NoService(_))
            ));
            s.create_service(&spec("web")).unwrap();
            assert!(!s.set_secret("web", "DB_PASSWORD", "old").unwrap());
            assert!(s.set_secret("web", "DB_PASSWORD", canary).unwrap());
            s.set_secret("web", "API_KEY", "k").unwrap();
            let listed = serde_json::to_string(&s.secrets("web").unwrap()).unwrap();
            assert!(
                listed.contains("DB_PASSWORD") && !listed.contains(canary),
                "{listed}"
            );
        }
        // The database's files (WAL included) never hold the value in plaintext.
        for f in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(!bytes.windows(canary.len()).any(|w| w == canary.as_bytes()));
        }
        let s = Store::open(&path, Vault::open(&key, false).unwrap()).unwrap();
        assert_eq!(
            s.secret_values("web").unwrap(),
            vec![
                ("API_KEY".to_string(), "k".to_string()),
                ("DB_PASSWORD".to_string(), canary.to_string())
            ]
        );
        // Another key opens nothing, and says so.
        let other = Store::open(&path, Vault::ephemeral().unwrap()).unwrap();
        assert!(matches!(
            other.secret_values("web"),
            Err(StoreError::Vault(_))
        ));
        assert!(s.unset_secret("web", "API_KEY").unwrap());
        assert!(!s.unset_secret("web", "API_KEY").unwrap());
        s.delete_service("web").unwrap();
        s.create_service(&spec("web")).unwrap();
        assert!(s.secrets("web").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn services_round_trip_and_refuse_duplicates() {
        let s = Store::memory().unwrap();
        s.create_service(&spec("web")).unwrap();
        assert!(matches!(
            s.create_service(&spec("web")),
            Err(StoreError::Exists(_))
        ));
        let row = s.service("web").unwrap().unwrap();
        assert_eq!(row.spec, spec("web"));
        assert_eq!(row.desired_instances, 1);
        assert_eq!(s.services().unwrap().len(), 1);
        assert!(s.delete_service("web").unwrap());
        assert!(s.service("web").unwrap().is_none());
        assert!(!s.delete_service("web").unwrap());
    }

    #[test]
    fn new_revisions_supersede_open_deployments() {
        let s = Store::memory().unwrap();
        assert!(matches!(
            s.new_revision(
                "web",
                "sha256:a",
                |n| format!("t{n}"),
                None,
                DeploymentKind::Push
            ),
            Err(StoreError::NoService(_))
        ));
        s.create_service(&spec("web")).unwrap();
        let (r1, d1) = s
            .new_revision(
                "web",
                "sha256:a",
                |n| format!("t{n}"),
                Some("c1"),
                DeploymentKind::Push,
            )
            .unwrap();
        assert_eq!(r1.number, 1);
        assert_eq!(r1.tag, "t1");
        assert_eq!(
            r1.spec.as_ref(),
            Some(&spec("web")),
            "the revision keeps the config"
        );
        assert_eq!(
            s.revision("web", 1).unwrap().unwrap().spec,
            Some(spec("web"))
        );
        s.set_deployment_state(d1, DeploymentState::Starting, "")
            .unwrap();
        let (r2, d2) = s
            .new_revision(
                "web",
                "sha256:b",
                |n| format!("t{n}"),
                Some("c2"),
                DeploymentKind::Push,
            )
            .unwrap();
        assert_eq!(r2.number, 2);
        assert_eq!(
            s.deployment(d1).unwrap().unwrap().state,
            DeploymentState::Superseded
        );
        assert_eq!(s.open_deployment("web").unwrap().unwrap().id, d2);
        assert_eq!(s.service("web").unwrap().unwrap().target_revision, Some(2));
        s.set_active_revision("web", 1).unwrap();
        s.reset_target("web", 2).unwrap();
        assert_eq!(s.service("web").unwrap().unwrap().target_revision, Some(1));
        // Every service's newest deployment at once: the same as one query per service.
        let latest = s.latest_deployments().unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest["web"].id, d2);
        assert_eq!(latest["web"].id, s.deployments("web", 1).unwrap()[0].id);
    }

    #[test]
    fn events_and_builds() {
        let s = Store::memory().unwrap();
        s.event("web", EventKind::Service, "created").unwrap();
        s.event("web", EventKind::Build, "started").unwrap();
        let ev = s.events("web", 0, 10).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].message, "created");
        assert_eq!(s.events("web", ev[0].id, 10).unwrap().len(), 1);
        // A deployment's steps: in the activity log, and listed by the deployment.
        s.deployment_event("web", 7, "deployment 7: starting")
            .unwrap();
        s.event("web", EventKind::Scale, "started 1 instance(s)")
            .unwrap();
        s.deployment_event("web", 7, "deployment 7: succeeded")
            .unwrap();
        s.deployment_event("api", 7, "another service's deployment 7")
            .unwrap();
        let steps = s.deployment_events("web", 7, 10).unwrap();
        let texts: Vec<_> = steps.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(texts, ["deployment 7: starting", "deployment 7: succeeded"]);
        assert!(steps
            .iter()
            .all(|e| e.deployment == Some(7) && e.kind == EventKind::Deployment));
        assert_eq!(s.events("web", 0, 10).unwrap().len(), 5);
        assert_eq!(s.events("web", 0, 10).unwrap()[0].deployment, None);
        let b = s.queue_build("web", "abc").unwrap();
        let q = s.queue_build("web", "def").unwrap();
        assert!(s.has_build_of("web", "abc").unwrap());
        assert!(!s.has_build_of("web", "ghi").unwrap());
        s.start_build(b).unwrap();
        s.append_build_log(b, "step 1\n").unwrap();
        s.append_build_log(b, "step 2\n").unwrap();
        let open: Vec<(i64, BuildState)> = s
            .unfinished_builds()
            .unwrap()
            .into_iter()
            .map(|b| (b.id, b.state))
            .collect();
        assert_eq!(
            open,
            vec![(b, BuildState::Running), (q, BuildState::Queued)]
        );
        s.finish_build(b, BuildState::Failed).unwrap();
        s.finish_build(q, BuildState::Succeeded).unwrap();
        assert!(s.unfinished_builds().unwrap().is_empty());
        let builds = s.builds("web", 5).unwrap();
        assert!(builds[1].log.starts_with("step 1\nstep 2\n"));
        assert_eq!(builds[1].state, BuildState::Failed);
    }

    #[test]
    fn a_deployment_moves_only_by_the_state_machine() {
        let s = Store::memory().unwrap();
        s.create_service(&spec("web")).unwrap();
        let (_, d) = s
            .new_revision(
                "web",
                "sha256:a",
                |n| format!("t{n}"),
                None,
                DeploymentKind::Image,
            )
            .unwrap();
        // pending -> health_checking skips starting: refused, naming both states.
        let e = s
            .set_deployment_state(d, DeploymentState::HealthChecking, "skip")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("deployment {d}: a deployment cannot go from pending to health_checking")
        );
        assert_eq!(
            s.deployment(d).unwrap().unwrap().state,
            DeploymentState::Pending,
            "nothing was written"
        );
        s.set_deployment_state(d, DeploymentState::Starting, "go")
            .unwrap();
        // Progress within a state is not a transition.
        s.set_deployment_reason(d, "still starting").unwrap();
        let row = s.deployment(d).unwrap().unwrap();
        assert_eq!(
            (row.state, row.reason.as_str()),
            (DeploymentState::Starting, "still starting")
        );
        assert!(s
            .set_deployment_state(d, DeploymentState::Starting, "again")
            .is_err());
        assert!(matches!(
            s.set_deployment_state(999, DeploymentState::Starting, ""),
            Err(StoreError::NoDeployment(999))
        ));
        // Terminal states stay terminal.
        s.set_deployment_state(d, DeploymentState::Failed, "x")
            .unwrap();
        s.set_deployment_state(d, DeploymentState::RolledBack, "x")
            .unwrap();
        for next in DeploymentState::ALL {
            assert!(s.set_deployment_state(d, next, "").is_err(), "{next}");
        }
    }

    #[test]
    fn every_service_write_publishes_a_new_snapshot() {
        let s = Store::memory().unwrap();
        let mut changes = s.changes();
        let g0 = s.snapshot().generation;
        assert!(s.snapshot().service("web").is_none());
        s.create_service(&spec("web")).unwrap();
        let snap = s.snapshot();
        assert!(snap.generation > g0);
        assert_eq!(snap.service("web").unwrap().desired_instances, 1);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), snap.generation);
        s.set_desired_instances("web", 3).unwrap();
        assert_eq!(s.snapshot().service("web").unwrap().desired_instances, 3);
        let (rev, _) = s
            .new_revision(
                "web",
                "sha256:a",
                |n| format!("t{n}"),
                None,
                DeploymentKind::Image,
            )
            .unwrap();
        assert_eq!(
            s.snapshot().service("web").unwrap().target_revision,
            Some(rev.number)
        );
        s.set_active_revision("web", rev.number).unwrap();
        assert_eq!(
            s.snapshot().service("web").unwrap().active_revision,
            Some(rev.number)
        );
        let before = s.snapshot().generation;
        // Writes that change no service row publish nothing.
        s.event("web", EventKind::Service, "hello").unwrap();
        assert_eq!(s.snapshot().generation, before);
        assert!(s.delete_service("web").unwrap());
        assert!(s.snapshot().service("web").is_none());
        assert!(s.snapshot().generation > before);
        // A refused write publishes nothing either.
        let before = s.snapshot().generation;
        assert!(s.create_service(&spec("web")).is_ok());
        assert!(s.create_service(&spec("web")).is_err());
        assert_eq!(s.snapshot().generation, before + 1);
    }

    #[test]
    fn unknown_stored_values_are_errors_not_guesses() {
        let s = Store::memory().unwrap();
        s.create_service(&spec("web")).unwrap();
        let (_, d) = s
            .new_revision(
                "web",
                "sha256:a",
                |n| format!("t{n}"),
                None,
                DeploymentKind::Image,
            )
            .unwrap();
        let b = s.queue_build("web", "abc").unwrap();
        s.event("web", EventKind::Service, "created").unwrap();
        {
            let db = s.db();
            db.execute(
                "UPDATE deployments SET state = 'exploded' WHERE id = ?1",
                [d],
            )
            .unwrap();
            db.execute("UPDATE builds SET state = 'melted' WHERE id = ?1", [b])
                .unwrap();
            db.execute("UPDATE events SET kind = 'gossip'", []).unwrap();
        }
        let e = s.deployment(d).unwrap_err().to_string();
        assert!(e.contains("unknown deployment state \"exploded\""), "{e}");
        let e = s.builds("web", 5).unwrap_err().to_string();
        assert!(e.contains("unknown build state \"melted\""), "{e}");
        let e = s.events("web", 0, 5).unwrap_err().to_string();
        assert!(e.contains("unknown event kind \"gossip\""), "{e}");
        // A new deployment cannot decide what to supersede: it is refused too.
        assert!(s
            .deploy_revision("web", 1, DeploymentKind::Rollback)
            .is_err());
    }

    #[test]
    fn file_store_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("slipway-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        {
            let s = Store::open(&path, Vault::ephemeral().unwrap()).unwrap();
            s.create_service(&spec("web")).unwrap();
            assert_eq!(s.meta_or_init("platform", || "p1".into()).unwrap(), "p1");
        }
        let s = Store::open(&path, Vault::ephemeral().unwrap()).unwrap();
        assert!(s.service("web").unwrap().is_some());
        assert_eq!(s.meta_or_init("platform", || "p2".into()).unwrap(), "p1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A store written before `services.paused` and `events.deployment` existed opens,
    /// keeps its rows, and takes the new columns.
    #[test]
    fn older_store_gains_the_new_columns() {
        let dir = std::env::temp_dir().join(format!("slipway-store-old-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, at_ms INTEGER NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL);
                 INSERT INTO events (service, at_ms, kind, message) VALUES ('web', 1, 'service', 'created');
                 CREATE TABLE services (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_ms INTEGER NOT NULL, target_revision INTEGER, active_revision INTEGER, desired_instances INTEGER NOT NULL DEFAULT 1);",
            )
            .unwrap();
        }
        let s = Store::open(&path, Vault::ephemeral().unwrap()).unwrap();
        let ev = s.events("web", 0, 10).unwrap();
        assert_eq!((ev.len(), ev[0].deployment), (1, None));
        s.deployment_event("web", 3, "deployment 3: starting")
            .unwrap();
        assert_eq!(s.deployment_events("web", 3, 10).unwrap().len(), 1);
        s.create_service(&spec("web")).unwrap();
        assert!(!s.service("web").unwrap().unwrap().paused);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
