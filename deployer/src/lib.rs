//! The deployer: the one code path that changes containers.
//!
//! Each service gets a worker task that owns that service's instances. A worker is a
//! reconciler: woken by a push, a rollback, the scaler or its health-check timer, it reads
//! the desired state from the store (target revision, desired instance count), compares it
//! with the instances it runs, and acts: a blue/green deployment when the target revision
//! is not the active one, otherwise scaling and health-based replacement. One worker per
//! service means one change at a time per service: never two half-swaps.
//!
//! At start, [`Deployer::start`] lists the platform's containers by label and adopts the
//! ones that belong to a service's active revision; every other container (a deployment
//! interrupted by a crash, a deleted service) is removed in that one pass.

mod logs;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_core::{DeploymentKind, DeploymentState, EventKind};
use slipway_router::Router;
use slipway_runtime::{Observed, Runtime};
use slipway_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use worker::route_for;

/// What stopped the deployer from reconciling: the store or the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] slipway_store::StoreError),
    /// The engine failed.
    #[error(transparent)]
    Runtime(#[from] slipway_runtime::RuntimeError),
}

/// Result alias.
pub type Result<T, E = DeployerError> = std::result::Result<T, E>;

/// Per-service counts the deployer publishes for metrics and the API.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceCounts {
    /// Instances taking traffic.
    pub ready: usize,
    /// Instances paused (warm idle).
    pub paused: usize,
    /// Each instance.
    pub instances: Vec<InstanceInfo>,
}

/// One instance, as the API shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceInfo {
    /// Instance id.
    pub id: String,
    /// Its revision.
    pub revision: i64,
    /// Where it listens (loopback).
    pub addr: String,
    /// Paused (warm idle).
    pub paused: bool,
}

/// Whether a service whose active revision is `active` keeps container `o` at start-up
/// or after its worker restarted: a running instance of that revision with a published
/// address. Every other container of the service is removed.
fn adoptable(o: &Observed, active: Option<i64>) -> bool {
    active == Some(o.revision) && o.running && o.addr.is_some()
}

/// How long a panicked worker's service waits before its new worker starts.
pub const RESTART_DELAY: Duration = Duration::from_millis(250);

/// How long a deleted service's worker may take to remove its instances.
pub const REMOVE_DEADLINE: Duration = Duration::from_secs(10);

struct Handle {
    wake: Arc<Notify>,
    cancel: CancellationToken,
    /// The worker's task: [`Deployer::remove`] waits on it.
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Shared by the deployer and its workers.
pub(crate) struct Ctx {
    pub store: Arc<Store>,
    pub runtime: Arc<dyn Runtime>,
    pub router: Arc<Router>,
    pub counts: Mutex<HashMap<String, InstanceCounts>>,
    pub shutdown: CancellationToken,
    /// The instances' log followers.
    pub logs: logs::Followers,
}

/// The deployer.
pub struct Deployer {
    ctx: Arc<Ctx>,
    workers: Mutex<HashMap<String, Handle>>,
    /// Owns every worker's task.
    tasks: tokio_util::task::TaskTracker,
}

impl Deployer {
    /// A deployer; call [`Deployer::start`] next.
    pub fn new(
        store: Arc<Store>,
        runtime: Arc<dyn Runtime>,
        router: Arc<Router>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Deployer {
            ctx: Arc::new(Ctx {
                store,
                runtime,
                router,
                counts: Mutex::new(HashMap::new()),
                shutdown,
                logs: Default::default(),
            }),
            workers: Mutex::new(HashMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Waits, at most `deadline`, for every worker to end once the shutdown token is
    /// cancelled (each leaves its instances running for the next start to adopt); true
    /// when they did.
    pub async fn stopped(&self, deadline: Duration) -> bool {
        self.tasks.close();
        self.ctx.logs.tasks.close();
        let both = async {
            self.tasks.wait().await;
            self.ctx.logs.tasks.wait().await;
        };
        tokio::time::timeout(deadline, both).await.is_ok()
    }

    /// Reconciles what the engine runs with the store (one pass), then starts a worker
    /// for every service.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        let store = &self.ctx.store;
        let observed = self.ctx.runtime.list().await?;
        let services = store.services()?;
        let mut adopt: HashMap<String, Vec<Observed>> = HashMap::new();
        for o in observed {
            let keep = services
                .iter()
                .any(|s| s.spec.name.as_str() == o.service && adoptable(&o, s.active_revision));
            if keep {
                adopt.entry(o.service.clone()).or_default().push(o);
            } else {
                tracing::info!(container = %o.container_id, service = %o.service, revision = o.revision, "removing a container no service runs");
                self.ctx.runtime.remove(&o.container_id).await?;
            }
        }
        for s in &services {
            let name = s.spec.name.as_str();
            // A deployment the crash interrupted did not finish: record it, and deploy its
            // revision again from the start (the old revision kept serving meanwhile).
            let failed = self.close_interrupted(
                name,
                s.active_revision,
                "completed after a server restart (the old instances were removed)",
                |state| format!("interrupted in state {state} by a server restart"),
            )?;
            for (d, why) in failed {
                store.deployment_event(name, d.id, &format!("deployment {} {why}", d.id))?;
            }
            if let Some(t) = s.target_revision.filter(|t| Some(*t) != s.active_revision) {
                if store.revision(name, t)?.is_some() {
                    let id = store.deploy_revision(name, t, DeploymentKind::Restart)?;
                    store.deployment_event(
                        name,
                        id,
                        &format!(
                            "deployment {id} of revision {t} restarted after the server restart"
                        ),
                    )?;
                }
            }
            let adopted = adopt.remove(name).unwrap_or_default();
            if !adopted.is_empty() {
                store.event(
                    name,
                    EventKind::Service,
                    &format!(
                        "server restarted: adopted {} running instance(s) of revision {}",
                        adopted.len(),
                        s.active_revision.unwrap_or(0)
                    ),
                )?;
            }
            self.spawn_worker(name, adopted);
        }
        Ok(())
    }

    fn spawn_worker(self: &Arc<Self>, name: &str, adopted: Vec<Observed>) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = workers.get(name) {
            h.wake.notify_one();
            return;
        }
        let wake = Arc::new(Notify::new());
        let cancel = self.ctx.shutdown.child_token();
        let me = self.clone();
        let service = name.to_string();
        let (w, c) = (wake.clone(), cancel.clone());
        // The task removes its own entry when it ends, which waits for this lock: the
        // entry is in the map first.
        let task = self.tasks.spawn(async move {
            me.supervise(&service, w, c, adopted).await;
            me.workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&service);
        });
        workers.insert(
            name.to_string(),
            Handle {
                wake,
                cancel,
                task: Some(task),
            },
        );
    }

    /// Runs a service's worker until it ends (the service was deleted, or the server
    /// shuts down). A panic in it is caught and written to the activity log as an internal
    /// error with the service named; the deployment it was running fails (it is not
    /// retried: it could panic again); then, after [`RESTART_DELAY`], a new worker starts
    /// from the store and re-adopts the service's containers by label, as start-up does.
    /// The worker's wake and cancel handles outlive it, so a push or a delete that
    /// arrives meanwhile is seen by the next one.
    async fn supervise(
        self: &Arc<Self>,
        name: &str,
        wake: Arc<Notify>,
        cancel: CancellationToken,
        mut adopted: Vec<Observed>,
    ) {
        // Each turn is one run of a worker; every turn after a panic waits first, and the
        // loop ends with the worker (delete or shutdown).
        loop {
            let w = worker::Worker::new(
                self.ctx.clone(),
                name.to_string(),
                wake.clone(),
                cancel.clone(),
                adopted,
            );
            let run = std::panic::AssertUnwindSafe(w.run());
            let Err(panic) = futures_util::FutureExt::catch_unwind(run).await else {
                return;
            };
            let why = slipway_core::fault::panic_message(panic.as_ref());
            tracing::error!(service = name, "worker panicked: {why}");
            self.note(
                name,
                EventKind::Internal,
                &format!("internal error: the worker of service {name} panicked ({why}); restarting it from the store"),
            );
            if let Err(e) = self.fail_interrupted(name, &why) {
                tracing::error!(service = name, "store: {e}");
            }
            tokio::select! {
                () = tokio::time::sleep(RESTART_DELAY) => {}
                () = self.ctx.shutdown.cancelled() => return,
            }
            adopted = match self.readopt(name).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(service = name, "re-adopting after a panic: {e}");
                    Vec::new()
                }
            };
            wake.notify_one();
        }
    }

    fn note(&self, service: &str, kind: EventKind, msg: &str) {
        if let Err(e) = self.ctx.store.event(service, kind, msg) {
            tracing::error!(service, "store: {e}");
        }
    }

    /// Closes the deployments of `name` that an interruption (a restart, a worker's panic)
    /// left open. One whose traffic had switched to its revision (`active`) is complete,
    /// since the old instances were removed; its reason is `completed`. Any other is failed
    /// and rolled back with `interrupted(state)` as its reason, and returned with it.
    fn close_interrupted(
        &self,
        name: &str,
        active: Option<i64>,
        completed: &str,
        interrupted: impl Fn(DeploymentState) -> String,
    ) -> Result<Vec<(slipway_store::DeploymentRow, String)>> {
        let store = &self.ctx.store;
        let mut failed = Vec::new();
        for d in store.deployments(name, 50)? {
            // Traffic had switched: draining comes after the swap, and a deployment cut
            // short while switching traffic had swapped if its revision is active.
            let swapped = d.state == DeploymentState::Draining
                || (d.state == DeploymentState::SwitchingTraffic && active == Some(d.revision));
            if swapped {
                if d.state == DeploymentState::SwitchingTraffic {
                    store.set_deployment_state(d.id, DeploymentState::Draining, completed)?;
                }
                store.set_deployment_state(d.id, DeploymentState::Succeeded, completed)?;
                store.deployment_event(name, d.id, &format!("deployment {} {completed}", d.id))?;
            } else if !d.state.is_terminal() {
                let why = interrupted(d.state);
                if d.state != DeploymentState::Failed {
                    store.set_deployment_state(d.id, DeploymentState::Failed, &why)?;
                }
                store.set_deployment_state(d.id, DeploymentState::RolledBack, &why)?;
                failed.push((d, why));
            }
        }
        Ok(failed)
    }

    /// The deployment a panicked worker was running: complete if traffic had switched,
    /// otherwise failed and rolled back with the panic as its reason, and its revision is
    /// no longer the target (it is not retried: it could panic again).
    fn fail_interrupted(&self, name: &str, why: &str) -> Result<()> {
        let Some(row) = self.ctx.store.service(name)? else {
            return Ok(());
        };
        let failed = self.close_interrupted(
            name,
            row.active_revision,
            "completed after its worker restarted (the old instances were removed)",
            |state| format!("internal error in state {state}: {why}"),
        )?;
        for (d, msg) in failed {
            self.ctx.store.reset_target(name, d.revision)?;
            let msg = format!(
                "deployment {} (revision {}): failed: {msg}; its instances were removed",
                d.id, d.revision
            );
            if let Err(e) = self.ctx.store.deployment_event(name, d.id, &msg) {
                tracing::error!(service = name, "store: {e}");
            }
        }
        Ok(())
    }

    /// A restarted worker's instances: the running containers of the service's active
    /// revision. Every other container of the service (a deployment the panic cut short)
    /// is removed.
    async fn readopt(&self, name: &str) -> Result<Vec<Observed>> {
        let active = self
            .ctx
            .store
            .service(name)?
            .and_then(|r| r.active_revision);
        let mut keep = Vec::new();
        for o in self.ctx.runtime.list().await? {
            if o.service != name {
                continue;
            }
            if adoptable(&o, active) {
                keep.push(o);
            } else {
                self.ctx.runtime.remove(&o.container_id).await?;
            }
        }
        self.note(
            name,
            EventKind::Service,
            &format!(
                "worker restarted: adopted {} running instance(s) of revision {}",
                keep.len(),
                active.unwrap_or(0)
            ),
        );
        Ok(keep)
    }

    /// Wakes a service's worker (starting it for a new service).
    pub fn wake(self: &Arc<Self>, service: &str) {
        self.spawn_worker(service, Vec::new());
    }

    /// Stops a deleted service's worker, which removes its instances and routes, and
    /// waits for it to end (at most [`REMOVE_DEADLINE`]).
    pub async fn remove(self: &Arc<Self>, service: &str) {
        let task = {
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            workers.get_mut(service).and_then(|h| {
                h.cancel.cancel();
                h.task.take()
            })
        };
        if let Some(task) = task {
            match tokio::time::timeout(REMOVE_DEADLINE, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(service, "the worker ended badly: {e}"),
                Err(_) => tracing::warn!(
                    service,
                    "the worker did not stop within {} s",
                    REMOVE_DEADLINE.as_secs()
                ),
            }
        }
        self.ctx.router.remove_service(service);
    }

    /// Instance counts per service.
    pub fn counts(&self) -> HashMap<String, InstanceCounts> {
        self.ctx
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A metrics collector of instance counts, for the platform's registry.
    pub fn collector(&self) -> InstanceMetrics {
        InstanceMetrics(self.ctx.clone())
    }
}

/// `slipway_instances{service,state}`: each service's ready and paused instances, read at
/// each scrape.
pub struct InstanceMetrics(Arc<Ctx>);

impl std::fmt::Debug for InstanceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceMetrics")
    }
}

impl prometheus_client::collector::Collector for InstanceMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use slipway_router::metrics::Escaped;
        let counts = self
            .0
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut names: Vec<_> = counts.keys().collect();
        names.sort();
        let mut fam = enc.encode_descriptor(
            "slipway_instances",
            "Instances per service and state.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for n in names {
            let c = &counts[n];
            for (state, v) in [("ready", c.ready), ("paused", c.paused)] {
                prometheus_client::metrics::gauge::ConstGauge::new(v as i64).encode(
                    fam.encode_family(&[("service", Escaped(n)), ("state", Escaped(state))])?,
                )?;
            }
        }
        Ok(())
    }
}
