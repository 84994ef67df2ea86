//! One service's worker: the reconciler that deploys, scales and heals that service.
//!
//! A blue/green deployment walks the states of [`DeploymentState`], writing each step
//! to the store and the activity log: new instances start beside the old ones, each must
//! pass its healthy threshold, then the route table swaps to them in one step, the old
//! instances drain (no new requests, in-flight ones finish, with a deadline) and stop. A
//! deployment that fails at any point before the swap removes its instances; the old ones
//! never stopped serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use slipway_core::{DeploymentState, EventKind, IdleMode, ServiceSpec};
use slipway_router::{InstanceRoute, ServiceRoute};
use slipway_runtime::{InstanceConfig, Observed};
use slipway_store::{DeploymentRow, RevisionRow};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Ctx, InstanceCounts};

/// Lines of an app's output quoted when it fails.
const LOG_LINES: usize = 20;
/// Until an instance's first passing check, probes come at most this far apart (starting
/// at 20 ms and doubling), so an app that takes a second to start is not kept waiting for
/// a whole interval; later checks keep the configured interval.
const STARTUP_PROBE_MAX_GAP: Duration = Duration::from_millis(200);
/// Seconds a stopping container gets after SIGTERM (apps run under an init process).
const STOP_GRACE_S: i32 = 5;

struct Instance {
    id: String,
    container: String,
    addr: SocketAddr,
    revision: i64,
    paused: bool,
    fails: u32,
    started: Instant,
}

/// A container of a revision that could not be started (or exited before its port was
/// published).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("could not start a container of revision {revision}: {source}")]
    Runtime {
        revision: i64,
        source: slipway_runtime::RuntimeError,
    },
    #[error("revision {revision} gives {var} the secret {secret}, which is not set: slipway secrets set SERVICE {secret}")]
    MissingSecret {
        revision: i64,
        var: String,
        secret: String,
    },
    #[error("could not read the service's secrets for revision {revision}: {source}")]
    Secrets {
        revision: i64,
        source: slipway_store::StoreError,
    },
}

enum Abort {
    Failed(String),
    Superseded,
    Cancelled,
}

pub(crate) struct Worker {
    ctx: Arc<Ctx>,
    name: String,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    instances: Vec<Instance>,
    backoff: Duration,
    next_start: Instant,
    /// When the run loop must look again: a start that waits out its backoff.
    retry_at: Option<Instant>,
    /// The service is paused by its user: no instances, the router answers 503.
    service_paused: bool,
    /// The spec the route was last published from: a change of it (network settings,
    /// `max_concurrency`, ...) is published at the next turn, instances changed or not.
    route_spec: Option<ServiceSpec>,
    /// Instances out of the route that finish their in-flight requests, then stop. Owned
    /// by the worker: a deleted service's are cut short (the delete sweeps by label).
    draining: tokio::task::JoinSet<()>,
}

/// The router's view of a service: its settings and ready instances.
pub fn route_for(spec: &ServiceSpec, instances: Vec<(String, SocketAddr)>) -> ServiceRoute {
    let n = &spec.network;
    ServiceRoute {
        name: spec.name.to_string(),
        hosts: Vec::new(),
        instances: instances
            .into_iter()
            .map(|(id, addr)| InstanceRoute { id, addr })
            .collect(),
        max_concurrency: spec.scaling.max_concurrency as usize,
        queue_size: n.queue_size as usize,
        queue_timeout: Duration::from_millis(n.queue_timeout_ms as u64),
        request_timeout: Duration::from_secs(n.request_timeout_s as u64),
        idle_timeout: Duration::from_secs(n.idle_timeout_s as u64),
        cold_start_timeout: Duration::from_millis(n.cold_start_timeout_ms as u64),
        http2: n.http2,
        underscores_in_headers: n.underscores_in_headers,
        https_redirect: n.https_redirect,
        hsts_max_age_s: n.hsts_max_age_s,
        paused: false,
    }
}

/// `msg` followed by what the app printed last (or that it printed nothing).
fn with_output(mut msg: String, logs: &str) -> String {
    let logs = logs.trim_end();
    if logs.is_empty() {
        msg.push_str("; the app printed nothing");
    } else {
        msg.push_str(&format!("; last output:\n{logs}"));
    }
    msg
}

fn new_id() -> String {
    format!("{:010x}", fastrand::u64(..) & 0xff_ffff_ffff)
}

impl Worker {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        name: String,
        wake: Arc<Notify>,
        cancel: CancellationToken,
        adopted: Vec<Observed>,
    ) -> Self {
        let instances: Vec<Instance> = adopted
            .into_iter()
            .filter_map(|o| {
                Some(Instance {
                    id: o.instance,
                    container: o.container_id,
                    addr: o.addr?,
                    revision: o.revision,
                    paused: o.paused,
                    fails: 0,
                    started: Instant::now(),
                })
            })
            .collect();
        for i in &instances {
            ctx.follow_logs(&name, i.revision, &i.id, &i.container);
        }
        Worker {
            ctx,
            name,
            wake,
            cancel,
            instances,
            backoff: Duration::from_secs(1),
            next_start: Instant::now(),
            retry_at: None,
            service_paused: false,
            route_spec: None,
            draining: tokio::task::JoinSet::new(),
        }
    }

    fn event(&self, kind: EventKind, msg: &str) {
        tracing::info!(service = %self.name, "{msg}");
        if let Err(e) = self.ctx.store.event(&self.name, kind, msg) {
            tracing::warn!("store: {e}");
        }
    }

    /// A step of deployment `id` in the activity log.
    fn step_event(&self, id: i64, msg: &str) {
        tracing::info!(service = %self.name, "{msg}");
        if let Err(e) = self.ctx.store.deployment_event(&self.name, id, msg) {
            tracing::warn!("store: {e}");
        }
    }

    pub(crate) async fn run(mut self) {
        let mut published = false;
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            while self.draining.try_join_next().is_some() {}
            // The store's snapshot as of its last write: no re-read or re-parse per tick.
            let Some(row) = self.ctx.store.snapshot().service(&self.name).cloned() else {
                break; // deleted
            };
            let spec = row.spec;
            if row.paused != self.service_paused {
                self.service_paused = row.paused;
                published = false;
            }
            if (!published || self.route_spec.as_ref() != Some(&spec))
                && (row.active_revision.is_some() || row.paused)
            {
                self.publish(&spec);
                self.route_spec = Some(spec.clone());
                published = true;
            }
            if row.paused {
                // Paused: every instance leaves the route (the router answers 503 with a
                // page saying so), drains and goes; deployments wait for the resume.
                if !self.instances.is_empty() {
                    let all: Vec<_> = self.instances.drain(..).collect();
                    self.publish(&spec);
                    let drain = Duration::from_secs(spec.network.drain_timeout_s as u64);
                    let n = all.len();
                    for inst in all {
                        self.retire(inst, drain);
                    }
                    self.event(
                        EventKind::Service,
                        &format!("paused: removing {n} instance(s) after they drain"),
                    );
                }
                self.publish_counts();
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.cancel.cancelled() => {}
                }
                continue;
            }
            match self.ctx.store.open_deployment(&self.name) {
                Ok(Some(dep)) => {
                    self.deploy(&spec, dep).await;
                    published = true;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!("store: {e}"),
            }
            // Every instance's output is followed (again, if its stream broke).
            for i in &self.instances {
                self.ctx
                    .follow_logs(&self.name, i.revision, &i.id, &i.container);
            }
            if let Some(active) = row.active_revision {
                self.check_health(&spec).await;
                self.scale(&spec, active, row.desired_instances).await;
            }
            self.publish_counts();
            let tick = Instant::now() + Duration::from_secs(spec.health_check.interval_s as u64);
            let until = self.retry_at.take().map_or(tick, |at| at.min(tick));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
                _ = self.cancel.cancelled() => {}
            }
        }
        self.shutdown().await;
    }

    /// On delete, remove everything; on server shutdown, leave the containers running so
    /// the next start adopts them (the URL keeps answering across a restart's gap).
    async fn shutdown(&mut self) {
        let deleted = !self.ctx.shutdown.is_cancelled();
        if deleted {
            self.ctx.router.remove_service(&self.name);
            let all: Vec<_> = self.instances.drain(..).collect();
            self.remove_all(&all).await;
            // Containers of a deployment in flight were not in `instances`: sweep by label.
            match self.ctx.runtime.list().await {
                Ok(list) => {
                    for o in list.into_iter().filter(|o| o.service == self.name) {
                        if let Err(e) = self.ctx.runtime.remove(&o.container_id).await {
                            tracing::warn!(container = %o.container_id, "removing a deleted service's container: {e}");
                        }
                    }
                }
                // The next start removes what no service runs.
                Err(e) => {
                    tracing::warn!(service = %self.name, "listing a deleted service's containers: {e}; the next start removes any left")
                }
            }
        }
        self.ctx
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }

    fn publish(&self, spec: &ServiceSpec) {
        let ready = self
            .instances
            .iter()
            .filter(|i| !i.paused)
            .map(|i| (i.id.clone(), i.addr))
            .collect();
        let mut route = route_for(spec, ready);
        route.paused = self.service_paused;
        self.ctx.router.upsert_service(route);
        self.publish_counts();
    }

    fn publish_counts(&self) {
        let paused = self.instances.iter().filter(|i| i.paused).count();
        self.ctx
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                self.name.clone(),
                InstanceCounts {
                    ready: self.instances.len() - paused,
                    paused,
                    instances: self
                        .instances
                        .iter()
                        .map(|i| crate::InstanceInfo {
                            id: i.id.clone(),
                            revision: i.revision,
                            addr: i.addr.to_string(),
                            paused: i.paused,
                        })
                        .collect(),
                },
            );
    }

    async fn step(
        &self,
        dep: &DeploymentRow,
        state: &mut DeploymentState,
        next: DeploymentState,
        why: &str,
    ) {
        match state.go_to(next) {
            Ok(s) => *state = s,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        }
        let what = format!("deployment {} {next}", dep.id);
        if let Err(e) = slipway_store::durable(&what, || {
            self.ctx.store.set_deployment_state(dep.id, next, why)
        })
        .await
        {
            tracing::error!("{what} was not recorded: {e}");
        }
        self.step_event(
            dep.id,
            &format!(
                "deployment {} (revision {}): {next}: {why}",
                dep.id, dep.revision
            ),
        );
    }

    async fn start_instance(
        &self,
        spec: &ServiceSpec,
        rev: &RevisionRow,
    ) -> Result<Instance, StartError> {
        let id = new_id();
        // The revision's own configuration; revisions recorded before it was kept use the
        // service's.
        let spec = rev.spec.as_ref().unwrap_or(spec);
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Secrets come after the plain variables, so a secret wins over a variable of the
        // same name.
        let secrets = self
            .ctx
            .store
            .secret_values(spec.name.as_str())
            .map_err(|source| StartError::Secrets {
                revision: rev.number,
                source,
            })?;
        for (var, secret) in &spec.secret_refs {
            match secrets.iter().find(|(n, _)| n == secret) {
                Some((_, v)) => env.push((var.clone(), v.clone())),
                None => {
                    return Err(StartError::MissingSecret {
                        revision: rev.number,
                        var: var.clone(),
                        secret: secret.clone(),
                    })
                }
            }
        }
        // Every other secret of the service, except those the platform itself uses for
        // the source (repository or registry credentials, the webhook key): the app
        // gets those only by naming them.
        let own = spec.source.platform_secrets();
        env.extend(
            secrets
                .into_iter()
                .filter(|(n, _)| !own.contains(&n.as_str())),
        );
        env.push(("PORT".into(), spec.port.to_string()));
        env.push(("SLIPWAY_SERVICE".into(), spec.name.to_string()));
        env.push(("SLIPWAY_REVISION".into(), rev.number.to_string()));
        let cfg = InstanceConfig {
            service: self.name.clone(),
            revision: rev.number,
            instance: id.clone(),
            image: rev.image.clone(),
            env,
            port: spec.port as u16,
            nano_cpus: spec.cpu.nano_cpus(),
            memory_bytes: spec.memory.bytes(),
        };
        let rt = &self.ctx.runtime;
        let cannot = |source| StartError::Runtime {
            revision: rev.number,
            source,
        };
        let container = rt.create(&cfg).await.map_err(cannot)?;
        let addr = match rt.start(&container, cfg.port).await {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                // It exited before its port was published: say how it ended and what it
                // printed, then remove it.
                let info = rt.inspect(&container).await.unwrap_or_default();
                let logs = rt.logs_tail(&container, LOG_LINES).await;
                // Its output stays readable in the app logs after the container goes.
                self.ctx
                    .keep_logs_of_stopped(
                        &self.name,
                        rev.number,
                        &id,
                        &container,
                        Duration::from_secs(3),
                    )
                    .await;
                if let Err(e) = rt.remove(&container).await {
                    tracing::warn!(container, "removing a container that exited at once: {e}");
                }
                return Err(cannot(slipway_runtime::RuntimeError::Engine(with_output(
                    format!("the container {info} at once"),
                    &logs,
                ))));
            }
            Err(e) => {
                if let Err(e) = rt.remove(&container).await {
                    tracing::warn!(container, "removing a container that did not start: {e}");
                }
                return Err(cannot(e));
            }
        };
        self.ctx
            .follow_logs(&self.name, rev.number, &id, &container);
        Ok(Instance {
            id,
            container,
            addr,
            revision: rev.number,
            paused: false,
            fails: 0,
            started: Instant::now(),
        })
    }

    /// Why a container failed: how it ended and its last output.
    async fn explain(&self, inst: &Instance, what: &str) -> String {
        let info = self.ctx.runtime.inspect(&inst.container).await.ok();
        let logs = self.ctx.runtime.logs_tail(&inst.container, LOG_LINES).await;
        let mut msg = what.to_string();
        if let Some(info) = info.filter(|i| !i.running) {
            msg.push_str(&format!("; the container {info}"));
        }
        with_output(msg, &logs)
    }

    /// Waits until `inst` passes `healthy_threshold` checks in a row. Until its first pass
    /// it is probed quickly (20 ms, doubling to at most 200 ms) so a fast app takes traffic
    /// fast; later passes are spaced by the interval, as configured.
    async fn wait_healthy(
        &self,
        spec: &ServiceSpec,
        inst: &Instance,
        deadline: Instant,
        superseded: &(dyn Fn() -> bool + Sync),
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(), Abort> {
        let hc = &spec.health_check;
        let interval = Duration::from_secs(hc.interval_s as u64);
        let mut passes = 0;
        let mut delay = Duration::from_millis(20);
        let mut last = String::from("no check finished yet");
        let mut checks = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                return Err(Abort::Cancelled);
            }
            if superseded() {
                return Err(Abort::Superseded);
            }
            if Instant::now() >= deadline {
                let what = format!(
                    "instance {} did not pass its health check within {} s ({checks} checks; last: {last})",
                    inst.id, spec.deploy_timeout_s
                );
                return Err(Abort::Failed(self.explain(inst, &what).await));
            }
            checks += 1;
            match self.ctx.runtime.probe(inst.addr, hc).await {
                Ok(()) => {
                    passes += 1;
                    if passes >= hc.healthy_threshold {
                        return Ok(());
                    }
                    self.sleep(interval.min(deadline.saturating_duration_since(Instant::now())))
                        .await;
                }
                Err(e) => {
                    passes = 0;
                    last = e.to_string();
                    progress(&format!(
                        "instance {} not healthy yet (check {checks}: {last})",
                        inst.id
                    ));
                    if let Ok(info) = self.ctx.runtime.inspect(&inst.container).await {
                        if !info.running {
                            let what = format!(
                                "instance {} stopped before it was healthy (last check: {last})",
                                inst.id
                            );
                            return Err(Abort::Failed(self.explain(inst, &what).await));
                        }
                    }
                    self.sleep(delay).await;
                    delay = (delay * 2).min(interval).min(STARTUP_PROBE_MAX_GAP);
                }
            }
        }
    }

    async fn sleep(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.cancel.cancelled() => {}
        }
    }

    async fn remove_all(&self, insts: &[Instance]) {
        let results = join_all(
            insts
                .iter()
                .map(|i| self.ctx.stop_and_remove(&i.container, 0)),
        )
        .await;
        for (i, r) in insts.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(instance = %i.id, "removing an instance: {e}");
            }
        }
    }

    /// Starts `n` instances of `rev`; on any failure the ones that started are removed.
    async fn start_many(
        &self,
        spec: &ServiceSpec,
        rev: &RevisionRow,
        n: usize,
    ) -> Result<Vec<Instance>, Abort> {
        let started = join_all((0..n).map(|_| self.start_instance(spec, rev))).await;
        let mut ok = Vec::new();
        let mut err = None;
        for r in started {
            match r {
                Ok(i) => ok.push(i),
                Err(e) => err = Some(e),
            }
        }
        if let Some(e) = err {
            self.remove_all(&ok).await;
            return Err(Abort::Failed(e.to_string()));
        }
        Ok(ok)
    }

    /// Waits for every instance to be healthy within the deploy deadline; on any failure
    /// all of them are removed.
    async fn wait_all_healthy(
        &self,
        spec: &ServiceSpec,
        insts: &[Instance],
        superseded: &(dyn Fn() -> bool + Sync),
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<(), Abort> {
        let deadline = Instant::now() + Duration::from_secs(spec.deploy_timeout_s as u64);
        let results = join_all(
            insts
                .iter()
                .map(|i| self.wait_healthy(spec, i, deadline, superseded, progress)),
        )
        .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            self.remove_all(insts).await;
            return Err(e);
        }
        Ok(())
    }

    async fn deploy(&mut self, spec: &ServiceSpec, dep: DeploymentRow) {
        let store = self.ctx.store.clone();
        let mut state = dep.state;
        let rev = match store.revision(&self.name, dep.revision) {
            Ok(Some(r)) => r,
            Err(e) => {
                // Not a verdict on the deployment: the loop tries again.
                tracing::error!(service = %self.name, "store: reading revision {}: {e}", dep.revision);
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            Ok(None) => {
                let why = format!(
                    "revision {} no longer exists (its image was pruned)",
                    dep.revision
                );
                self.step(&dep, &mut state, DeploymentState::Failed, &why)
                    .await;
                self.step(
                    &dep,
                    &mut state,
                    DeploymentState::RolledBack,
                    "nothing changed",
                )
                .await;
                self.reset_target(dep.revision).await;
                return;
            }
        };
        let s = &spec.scaling;
        let n = (self.instances.len().max(1) as u32)
            .max(s.min_size)
            .min(s.max_size)
            .max(1) as usize;
        self.step(
            &dep,
            &mut state,
            DeploymentState::Starting,
            &format!(
                "starting {n} instance(s) of image {}",
                slipway_core::short_id(&rev.image)
            ),
        )
        .await;
        let name = self.name.clone();
        let dep_id = dep.id;
        let superseded = move || match store.deployment(dep_id) {
            Ok(Some(d)) => d.state == DeploymentState::Superseded,
            Ok(None) => true,
            Err(e) => {
                // Asked again at the next check.
                tracing::warn!("store: is deployment {dep_id} superseded: {e}");
                false
            }
        } || store.snapshot().service(&name).is_none();
        let hc = &spec.health_check;
        let check = slipway_runtime::probe::describe(hc);
        let new = match self.start_many(spec, &rev, n).await {
            Ok(new) => new,
            Err(Abort::Failed(why)) => {
                self.fail(&dep, &mut state, &why).await;
                return;
            }
            Err(_) => return,
        };
        if slipway_core::fault::fires("worker-panic", &self.name) {
            panic!("injected fault: worker-panic:{}", self.name);
        }
        let waiting = format!(
            "waiting for {n} instance(s) to pass {} {check} check(s) in a row (deadline {} s)",
            hc.healthy_threshold, spec.deploy_timeout_s
        );
        self.step(&dep, &mut state, DeploymentState::HealthChecking, &waiting)
            .await;
        let progress = |p: &str| {
            // Progress within the state, not a step: a lost one is only a stale message.
            if let Err(e) = self
                .ctx
                .store
                .set_deployment_reason(dep.id, &format!("{waiting}; {p}"))
            {
                tracing::warn!("store: {e}");
            }
        };
        match self
            .wait_all_healthy(spec, &new, &superseded, &progress)
            .await
        {
            Ok(()) => {}
            Err(Abort::Cancelled) => return,
            Err(Abort::Superseded) => {
                self.step_event(dep.id, &format!("deployment {} (revision {}): superseded by a newer deployment; its instances were removed", dep.id, dep.revision));
                return;
            }
            Err(Abort::Failed(why)) => {
                self.fail(&dep, &mut state, &why).await;
                return;
            }
        }
        self.step(
            &dep,
            &mut state,
            DeploymentState::SwitchingTraffic,
            "all new instances are healthy; swapping the route table",
        )
        .await;
        let old = std::mem::replace(&mut self.instances, new);
        self.publish(spec);
        let what = format!("revision {} of {} is active", rev.number, self.name);
        if let Err(e) = slipway_store::durable(&what, || {
            self.ctx.store.set_active_revision(&self.name, rev.number)
        })
        .await
        {
            tracing::error!("{what} was not recorded: {e}");
        }
        let drain = Duration::from_secs(spec.network.drain_timeout_s as u64);
        self.step(
            &dep,
            &mut state,
            DeploymentState::Draining,
            &format!(
                "{} old instance(s) finish their in-flight requests (deadline {} s), then stop",
                old.len(),
                drain.as_secs()
            ),
        )
        .await;
        join_all(old.iter().map(|i| {
            let ctx = &self.ctx;
            async move {
                if !i.paused && !ctx.router.wait_drained(&i.id, drain).await {
                    tracing::warn!(instance = %i.id, "drain deadline passed with requests in flight");
                }
                if let Err(e) = ctx.stop_and_remove(&i.container, STOP_GRACE_S).await {
                    tracing::warn!(instance = %i.id, "removing a drained instance: {e}");
                }
            }
        }))
        .await;
        self.step(
            &dep,
            &mut state,
            DeploymentState::Succeeded,
            &format!("revision {} serves all traffic", rev.number),
        )
        .await;
        self.backoff = Duration::from_secs(1);
        self.prune(spec, rev.number).await;
    }

    async fn fail(&self, dep: &DeploymentRow, state: &mut DeploymentState, why: &str) {
        self.step(dep, state, DeploymentState::Failed, why).await;
        self.reset_target(dep.revision).await;
        let serving = self
            .ctx
            .store
            .snapshot()
            .service(&self.name)
            .and_then(|r| r.active_revision);
        let msg = match serving {
            Some(r) => format!("the new instances were removed; revision {r} keeps serving"),
            None => "the new instances were removed; no revision serves yet".into(),
        };
        self.step(dep, state, DeploymentState::RolledBack, &msg)
            .await;
    }

    /// Points the target back at the active revision after `failed` failed (retried: a
    /// target left on it would deploy it again).
    async fn reset_target(&self, failed: i64) {
        let what = format!(
            "resetting the target of {} from revision {failed}",
            self.name
        );
        if let Err(e) =
            slipway_store::durable(&what, || self.ctx.store.reset_target(&self.name, failed)).await
        {
            tracing::error!("{what}: {e}");
        }
    }

    /// Keeps the images of the newest `keep_revisions` revisions that served (rollback
    /// targets) and of any newer one; removes the rest: older served revisions, and
    /// revisions older than the active one that never served (failed deployments).
    async fn prune(&self, spec: &ServiceSpec, active: i64) {
        let revs = match self.ctx.store.revisions(&self.name) {
            Ok(revs) => revs,
            Err(e) => {
                // Pruning waits for the next deployment.
                tracing::warn!(service = %self.name, "store: listing revisions to prune: {e}");
                return;
            }
        };
        let keep = spec.keep_revisions as usize;
        let kept: Vec<&RevisionRow> = revs
            .iter()
            .filter(|r| r.served || r.number >= active)
            .take(keep)
            .chain(revs.iter().filter(|r| r.number >= active))
            .collect();
        for r in revs
            .iter()
            .filter(|r| !kept.iter().any(|k| k.number == r.number))
        {
            if !kept.iter().any(|k| k.tag == r.tag) {
                if let Err(e) = self.ctx.runtime.remove_image(&r.tag).await {
                    tracing::warn!("pruning {}: {e}", r.tag);
                    continue;
                }
            }
            if let Err(e) = self.ctx.store.delete_revision(&self.name, r.number) {
                tracing::warn!("store: forgetting pruned revision {}: {e}", r.number);
            }
            let why = if r.served {
                format!("keeping the newest {keep} that served")
            } else {
                "it never served".into()
            };
            self.event(
                EventKind::Deployment,
                &format!("pruned revision {} ({why})", r.number),
            );
        }
    }

    /// Probes every running instance once; one that fails `unhealthy_threshold` checks in
    /// a row, or whose container is gone, is taken out of routing and removed. The scale
    /// step then replaces it, with backoff when instances keep dying young.
    async fn check_health(&mut self, spec: &ServiceSpec) {
        let hc = &spec.health_check;
        let running: Vec<usize> = (0..self.instances.len())
            .filter(|i| !self.instances[*i].paused)
            .collect();
        let results = join_all(
            running
                .iter()
                .map(|i| self.ctx.runtime.probe(self.instances[*i].addr, hc)),
        )
        .await;
        let mut dead = Vec::new();
        for (idx, r) in running.into_iter().zip(results) {
            let inst = &mut self.instances[idx];
            match r {
                Ok(()) => inst.fails = 0,
                Err(e) => {
                    inst.fails += 1;
                    let gone = matches!(self.ctx.runtime.inspect(&inst.container).await, Ok(i) if !i.running);
                    if gone || inst.fails >= hc.unhealthy_threshold {
                        dead.push((idx, e, gone));
                    }
                }
            }
        }
        if dead.is_empty() {
            return;
        }
        let mut removed = Vec::new();
        for (idx, e, gone) in dead.into_iter().rev() {
            let inst = self.instances.remove(idx);
            let what = if gone {
                format!("instance {} stopped", inst.id)
            } else {
                format!(
                    "instance {} failed {} health checks in a row ({e})",
                    inst.id, hc.unhealthy_threshold
                )
            };
            removed.push((inst, what, gone));
        }
        // Out of the route at once; each one's in-flight requests then get the drain
        // timeout before it stops, while the scale step starts its replacement.
        self.publish(spec);
        let drain = Duration::from_secs(spec.network.drain_timeout_s as u64);
        for (inst, what, gone) in removed {
            let msg = self.explain(&inst, &what).await;
            let young = inst.started.elapsed() < Duration::from_secs(30);
            self.back_off(young);
            self.event(
                EventKind::Health,
                &format!(
                    "{msg}\nreplacing it{}{}",
                    if young {
                        format!(
                            " after {} s (it died young: backing off)",
                            self.backoff.as_secs()
                        )
                    } else {
                        String::new()
                    },
                    if gone {
                        String::new()
                    } else {
                        format!(
                            "; it stops once its in-flight requests finish (at most {} s)",
                            drain.as_secs()
                        )
                    }
                ),
            );
            self.retire(inst, if gone { Duration::ZERO } else { drain });
        }
    }

    /// Stops an instance that left the route once its in-flight requests finish (at
    /// most `drain`), without holding up the worker.
    fn retire(&mut self, inst: Instance, drain: Duration) {
        let ctx = Arc::clone(&self.ctx);
        self.draining.spawn(async move {
            if !drain.is_zero() && !ctx.router.wait_drained(&inst.id, drain).await {
                tracing::warn!(instance = %inst.id, "drain deadline passed with requests in flight");
            }
            let grace = if drain.is_zero() { 0 } else { STOP_GRACE_S };
            if let Err(e) = ctx.stop_and_remove(&inst.container, grace).await {
                tracing::warn!(instance = %inst.id, "removing a retired instance: {e}");
            }
        });
    }

    /// After an instance died (or could not start): instances that die young wait a
    /// doubling backoff (up to a minute) before the next start, so a crash loop is not a
    /// busy loop; an instance that lived long resets it.
    fn back_off(&mut self, young: bool) {
        if young {
            self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
            self.next_start = Instant::now() + self.backoff;
        } else {
            self.backoff = Duration::from_secs(1);
            self.next_start = Instant::now();
        }
    }

    async fn scale(&mut self, spec: &ServiceSpec, active: i64, desired: i64) {
        let s = &spec.scaling;
        let desired = (desired.max(0) as u32).clamp(s.min_size, s.max_size) as usize;
        let ready = self.instances.iter().filter(|i| !i.paused).count();
        if ready < desired {
            let mut need = desired - ready;
            // Warm instances first: unpausing takes milliseconds.
            let mut woke = 0;
            for inst in self.instances.iter_mut().filter(|i| i.paused).take(need) {
                match self.ctx.runtime.unpause(&inst.container).await {
                    Ok(()) => {
                        inst.paused = false;
                        need -= 1;
                        woke += 1;
                    }
                    Err(e) => tracing::warn!("unpause {}: {e}", inst.id),
                }
            }
            if woke > 0 {
                self.publish(spec);
                self.event(EventKind::Scale, &format!("unpaused {woke} instance(s)"));
            }
            if need == 0 {
                return;
            }
            if Instant::now() < self.next_start {
                // The run loop wakes then (or earlier, for a health-check tick).
                self.retry_at = Some(self.next_start);
                return;
            }
            let rev = match self.ctx.store.revision(&self.name, active) {
                Ok(Some(rev)) => rev,
                Ok(None) => {
                    tracing::error!(service = %self.name, "the active revision {active} is not in the store");
                    return;
                }
                Err(e) => {
                    // The next tick tries again.
                    tracing::warn!(service = %self.name, "store: reading revision {active}: {e}");
                    return;
                }
            };
            let never = || false;
            let quiet = |_: &str| {};
            let started = match self.start_many(spec, &rev, need).await {
                Ok(insts) => self
                    .wait_all_healthy(spec, &insts, &never, &quiet)
                    .await
                    .map(|()| insts),
                Err(e) => Err(e),
            };
            match started {
                Ok(new) => {
                    let ids: Vec<_> = new.iter().map(|i| i.id.clone()).collect();
                    self.instances.extend(new);
                    self.publish(spec);
                    self.event(
                        EventKind::Scale,
                        &format!(
                            "started {} instance(s) ({}): now {} ready",
                            ids.len(),
                            ids.join(", "),
                            ready + woke + ids.len()
                        ),
                    );
                }
                Err(Abort::Failed(why)) => {
                    self.back_off(true);
                    self.event(
                        EventKind::Scale,
                        &format!(
                            "could not start an instance: {why}\nretrying in {} s",
                            self.backoff.as_secs()
                        ),
                    );
                }
                Err(_) => {}
            }
        } else if ready > desired {
            let excess = ready - desired;
            if desired == 0 && s.idle_mode == IdleMode::Pause {
                for inst in self.instances.iter_mut() {
                    inst.paused = true;
                }
                self.publish(spec);
                let drain = Duration::from_secs(spec.network.drain_timeout_s as u64);
                let mut paused = 0;
                for inst in self.instances.iter() {
                    self.ctx.router.wait_drained(&inst.id, drain).await;
                    match self.ctx.runtime.pause(&inst.container).await {
                        Ok(()) => paused += 1,
                        Err(e) => tracing::warn!("pause {}: {e}", inst.id),
                    }
                }
                self.event(
                    EventKind::Scale,
                    &format!(
                        "idle: {paused} instance(s) kept warm, frozen (they wake in milliseconds)"
                    ),
                );
                return;
            }
            // Remove the newest first: the oldest have warm caches.
            let mut victims = Vec::new();
            for _ in 0..excess {
                if let Some(pos) = self.instances.iter().rposition(|i| !i.paused) {
                    victims.push(self.instances.remove(pos));
                }
            }
            self.publish(spec);
            let ids: Vec<_> = victims.iter().map(|i| i.id.clone()).collect();
            self.event(
                EventKind::Scale,
                &format!(
                    "removing {} instance(s) ({}) after they drain: now {} ready",
                    ids.len(),
                    ids.join(", "),
                    ready - victims.len()
                ),
            );
            let drain = Duration::from_secs(spec.network.drain_timeout_s as u64);
            for v in victims {
                self.retire(v, drain);
            }
        } else if s.idle_mode == IdleMode::Stop && self.instances.iter().any(|i| i.paused) {
            // The idle mode changed from pause to stop: paused instances go.
            let paused: Vec<_> = self
                .instances
                .iter()
                .filter(|i| i.paused)
                .map(|i| i.container.clone())
                .collect();
            self.instances.retain(|i| !i.paused);
            for c in paused {
                if let Err(e) = self.ctx.runtime.remove(&c).await {
                    tracing::warn!(container = %c, "removing a paused instance: {e}");
                }
            }
            self.publish_counts();
        }
    }
}
