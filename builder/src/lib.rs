//! Sources and builds.
//!
//! A push to the hosted git remote (see [`git`]) or a request to deploy an image ends here:
//! the builder turns a commit into an image (the tree as a tar context, `.dockerignore`
//! applied, built through the engine with the output kept as the build log) and records a
//! new revision with a pending deployment. It then wakes the deployer. A failed build
//! records why and changes nothing that serves.
//!
//! Builds of one service run one at a time; when several pushes arrive during a build,
//! only the newest commit is built next (older ones are superseded, as on Heroku).

pub mod apprunner;
pub mod context;
pub mod dockerignore;
pub mod git;
pub mod images;
pub mod registry;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_core::{short_id, BuildState, DeploymentKind, EventKind, ServiceSpec, Source};
use slipway_runtime::Runtime;
use slipway_store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use context::{BuildOptions, ContextError};
pub use git::{GitRequest, GitResponse};

fn is_push_request(req: &GitRequest) -> bool {
    req.method == "POST" && req.path == "/git-receive-pack"
}

/// Called with a service name when it has a new target revision.
pub type Wake = Arc<dyn Fn(&str) + Send + Sync>;

/// Why a deploy request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The image is not on the engine.
    #[error("image {0:?} is not on the Docker engine: build or load it first (no registry is reachable)")]
    NoSuchImage(String),
    /// The service's source is not what the request needs.
    #[error("{0}")]
    WrongSource(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] slipway_store::StoreError),
    /// The engine failed.
    #[error(transparent)]
    Runtime(#[from] slipway_runtime::RuntimeError),
    /// git failed on the service's repository.
    #[error("git: {0}")]
    Git(#[from] std::io::Error),
    /// A watched repository could not be fetched.
    #[error("{0}")]
    Fetch(String),
}

/// Why a build failed: what its log and the activity log say.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The pushed commit could not be read from the repository.
    #[error("cannot read commit {commit}: {source}")]
    Commit {
        /// The commit.
        commit: String,
        /// What git said.
        source: std::io::Error,
    },
    /// The tree is not buildable (no Dockerfile, a broken archive).
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The engine's build failed (its message is the build's own).
    #[error(transparent)]
    Engine(#[from] slipway_runtime::RuntimeError),
    /// It ran past the service's build timeout.
    #[error("the build took longer than {0} s and was stopped")]
    Timeout(u64),
    /// The build's context task died.
    #[error("internal error preparing the build context: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// `run.secrets` names a secret the service does not have.
    #[error("apprunner.yaml's run.secrets names the secret {secret}, which service {service} does not have: slipway secrets set {service} {secret}")]
    MissingSecret {
        /// The secret.
        secret: String,
        /// The service.
        service: String,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(slipway_store::StoreError),
}

/// A commit waiting for its build, already recorded in the store as queued.
#[derive(Clone, Debug)]
struct Queued {
    commit: String,
    build_id: i64,
}

/// The builder.
pub struct Builder {
    store: Arc<Store>,
    runtime: Arc<dyn Runtime>,
    repos: PathBuf,
    wake: Wake,
    /// Per service: the newest commit waiting to be built (with its queued build's id),
    /// and whether a build loop runs.
    queue: Mutex<HashMap<String, (Option<Queued>, bool)>>,
    /// Owns the build loops.
    tasks: TaskTracker,
    /// Cancelled at shutdown: a build in progress stops (it stays recorded as running, so
    /// the next start builds it again).
    shutdown: CancellationToken,
    /// The operator's build settings (runtime images, aliases, CA bundle).
    options: BuildOptions,
    /// What deletes a service (the platform's delete), for previews that go away.
    remove: std::sync::OnceLock<Remove>,
    /// Reads registries' manifest digests (made at first use).
    registry: std::sync::OnceLock<registry::RegistryClient>,
    /// One lock per watched repository: one fetch of it at a time (a webhook or `slipway
    /// deploy` during a poll waits for it), even when an earlier one outlived
    /// [`FETCH_TIMEOUT`] (its guard is held until the fetch really ends).
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a watched repository's fetch is waited for before the poll fails. libgit2
/// has no timeout of its own here (setting one is unsafe global state), so a remote that
/// accepts and never answers would otherwise hold its poll forever; the fetch itself runs
/// on until the remote lets go, and the service is not fetched again meanwhile.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Deletes a service the way the API does (record, instances, routes).
pub type Remove = Arc<dyn Fn(String) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

impl Builder {
    /// A builder keeping repositories under `repos`.
    pub fn new(
        store: Arc<Store>,
        runtime: Arc<dyn Runtime>,
        repos: PathBuf,
        wake: Wake,
        shutdown: CancellationToken,
        options: BuildOptions,
    ) -> Arc<Self> {
        Arc::new(Builder {
            options,
            registry: std::sync::OnceLock::new(),
            remove: std::sync::OnceLock::new(),
            store,
            runtime,
            repos,
            wake,
            queue: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown,
            fetching: Mutex::new(HashMap::new()),
        })
    }

    /// Waits, at most `deadline`, for the build loops to end once the shutdown token is
    /// cancelled; true when they did.
    pub async fn stopped(&self, deadline: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
    }

    /// The registry client, made at first use: it trusts the host's roots and the
    /// operator's CA bundle.
    fn registry(&self) -> &registry::RegistryClient {
        self.registry
            .get_or_init(|| registry::RegistryClient::new(self.options.ca.as_deref()))
    }

    /// The image repository for a service's images: unique per platform, so two
    /// platforms sharing an engine never untag each other's images.
    pub fn image_repo(&self, service: &str) -> String {
        let p: String = self.runtime.platform().chars().take(12).collect();
        format!("slipway/{p}/{service}")
    }

    /// The repository a service builds from: its own, or for a preview its parent's.
    fn repo_for(&self, spec: &ServiceSpec) -> std::path::PathBuf {
        git::repo_dir(
            &self.repos,
            spec.preview_of.as_deref().unwrap_or(spec.name.as_str()),
        )
    }

    /// The lock of `service`'s repository fetches.
    fn fetch_lock(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(service.to_string())
            .or_default()
            .clone()
    }

    /// The user `image` runs as, when it is not root: read from the engine, after a pull
    /// if the image is not there yet (the build would pull it anyway). None when it
    /// cannot be known (a `FROM` built from build arguments, no registry): the clean-up
    /// then switches back to no one, as before.
    async fn base_user(&self, image: &str) -> Option<String> {
        if image.contains('$') {
            return None;
        }
        let mut user = self.runtime.image_user(image).await.ok()?;
        if user.is_none() && self.runtime.pull(image, None).await.is_ok() {
            user = self.runtime.image_user(image).await.ok()?;
        }
        user.filter(|u| !u.is_empty() && u != "root" && u != "0")
    }

    /// Creates the service's repository (for git sources).
    pub async fn prepare(&self, spec: &ServiceSpec) -> std::io::Result<()> {
        if spec.preview_of.is_some() {
            return Ok(());
        }
        if let Source::Git { branch, .. } = &spec.source {
            git::ensure_repo(&git::repo_dir(&self.repos, spec.name.as_str()), branch).await?;
        }
        Ok(())
    }

    /// Removes a deleted service's repository.
    pub async fn forget(&self, service: &str) {
        let dir = git::repo_dir(&self.repos, service);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(service, "removing {}: {e}", dir.display()),
        }
    }

    /// Serves one smart-HTTP request for `service`; after a push that moved the
    /// service's branch, starts a build of the new commit.
    pub async fn git_http(self: &Arc<Self>, spec: &ServiceSpec, req: GitRequest) -> GitResponse {
        let service = spec.name.as_str();
        let Source::Git { branch, .. } = &spec.source else {
            return GitResponse {
                status: 409,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: format!("service {service} deploys an image, not git pushes\n").into_bytes(),
            };
        };
        if let Source::Git { url: Some(url), .. } = &spec.source {
            if req.method == "POST" || req.query.contains("git-receive-pack") {
                return GitResponse::error(
                    409,
                    &format!("service {service} watches {url}: push there, not here"),
                );
            }
        }
        if let Some(parent) = &spec.preview_of {
            return GitResponse::error(
                409,
                &format!(
                    "service {service} previews a branch of {parent}: push to {parent}'s remote"
                ),
            );
        }
        let repo = git::repo_dir(&self.repos, service);
        let branches_before = if is_push_request(&req) && spec.previews.is_some() {
            git::branches(&repo).await.ok()
        } else {
            None
        };
        if let Err(e) = git::ensure_repo(&repo, branch).await {
            return GitResponse {
                status: 500,
                headers: vec![],
                body: format!("cannot create the repository: {e}\n").into_bytes(),
            };
        }
        let is_push = is_push_request(&req);
        let before = if is_push {
            // Unknown on error: the push is then built whatever it moved (never missed).
            git::branch_commit(&repo, branch).await.unwrap_or_else(|e| {
                tracing::warn!(service, "reading the branch before a push: {e}");
                None
            })
        } else {
            None
        };
        let resp = git::http_backend(&self.repos, &format!("{service}.git"), req).await;
        if is_push {
            let after = self.branch_after_push(service, &repo, branch).await;
            let moved = after.filter(|a| Some(a) != before.as_ref());
            if let Some(commit) = moved.as_ref().filter(|_| !spec.auto_deploy) {
                self.log(
                    service,
                    EventKind::Build,
                    &format!("push to {branch}: commit {} received; auto-deploy is off, so `slipway deploy {service}` deploys it", short_id(commit)),
                );
            } else if let Some(commit) = moved {
                let short = short_id(&commit);
                // Recorded before git's answer goes back: a push git accepted is never
                // lost (a restart before this point is caught by `resume`).
                match self.enqueue(service, &commit) {
                    Ok(id) => self.log(
                        service,
                        EventKind::Build,
                        &format!("push to {branch}: commit {short} queued for build {id}"),
                    ),
                    Err(e) => tracing::error!(service, "store: {e}"),
                }
            }
            if let (Some(before), Some(previews)) = (branches_before, &spec.previews) {
                self.previews_after_push(spec, previews, &repo, before)
                    .await;
            }
        }
        resp
    }

    /// The branch head after a push, read up to three times (100 ms apart) if git fails;
    /// a push whose head cannot be read at all is said in the activity log, and the next
    /// start builds it (`resume` builds a head that has no build).
    async fn branch_after_push(
        &self,
        service: &str,
        repo: &std::path::Path,
        branch: &str,
    ) -> Option<String> {
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match git::branch_commit(repo, branch).await {
                Ok(head) => return head,
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            self.log(
                service,
                EventKind::Build,
                &format!("a push to {branch} was accepted but its commit could not be read ({e}); the next start of the platform builds it"),
            );
        }
        None
    }

    fn log(&self, service: &str, kind: EventKind, msg: &str) {
        tracing::info!(service, "{msg}");
        if let Err(e) = self.store.event(service, kind, msg) {
            tracing::warn!("store: {e}");
        }
    }

    /// Queues a build of `commit`, recording it in the store first; a queued one not yet
    /// started is superseded. Returns the build's id.
    pub fn enqueue(self: &Arc<Self>, service: &str, commit: &str) -> Result<i64, SourceError> {
        let build_id = self.store.queue_build(service, commit)?;
        self.push_queue(
            service,
            Queued {
                commit: commit.to_string(),
                build_id,
            },
        );
        Ok(build_id)
    }

    fn push_queue(self: &Arc<Self>, service: &str, next: Queued) {
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let entry = q.entry(service.to_string()).or_insert((None, false));
            if let Some(old) = entry.0.replace(next) {
                if let Err(e) = self
                    .store
                    .finish_build(old.build_id, BuildState::Superseded)
                {
                    tracing::error!(service, "store: {e}");
                }
                self.log(
                    service,
                    EventKind::Build,
                    &format!(
                        "commit {} superseded before its build {} started",
                        short_id(&old.commit),
                        old.build_id
                    ),
                );
            }
            !std::mem::replace(&mut entry.1, true)
        };
        if start {
            let me = self.clone();
            let service = service.to_string();
            self.tasks
                .spawn(async move { me.build_loop(service).await });
        }
    }

    /// After a restart: builds that were running are recorded as interrupted and built
    /// again, queued ones are built, and a branch head that a push moved just before the
    /// process died (before its build was recorded) is built too.
    pub async fn resume(self: &Arc<Self>) -> Result<(), SourceError> {
        for b in self.store.unfinished_builds()? {
            if self.store.service(&b.service)?.is_none() {
                self.store.finish_build(b.id, BuildState::Failed)?;
                continue;
            }
            let short = short_id(&b.commit).to_string();
            if b.state == BuildState::Running {
                self.store.finish_build(b.id, BuildState::Interrupted)?;
                self.build_log(b.id, "\n(interrupted by a restart)\n");
                let id = self.enqueue(&b.service, &b.commit)?;
                self.log(
                    &b.service,
                    EventKind::Build,
                    &format!("build {} of commit {short} was interrupted by a restart; building again (build {id})", b.id),
                );
            } else {
                self.log(
                    &b.service,
                    EventKind::Build,
                    &format!(
                        "build {} of commit {short} was queued before a restart; building it",
                        b.id
                    ),
                );
                self.push_queue(
                    &b.service,
                    Queued {
                        commit: b.commit.clone(),
                        build_id: b.id,
                    },
                );
            }
        }
        for row in self.store.services()? {
            let Source::Git { branch, .. } = &row.spec.source else {
                continue;
            };
            let service = row.spec.name.as_str();
            let repo = self.repo_for(&row.spec);
            let Some(head) = git::branch_commit(&repo, branch).await? else {
                continue;
            };
            if !self.store.has_build_of(service, &head)? {
                let id = self.enqueue(service, &head)?;
                self.log(
                    service,
                    EventKind::Build,
                    &format!(
                        "commit {} was pushed to {branch} just before a restart and never built; building it (build {id})",
                        short_id(&head)
                    ),
                );
            }
        }
        Ok(())
    }

    /// `slipway deploy` of a git service: builds the branch head again, whatever became
    /// of its last build (git sends nothing when a ref is already up to date, so pushing
    /// again cannot do this). Returns the build's id and the commit.
    pub async fn deploy_head(
        self: &Arc<Self>,
        spec: &ServiceSpec,
    ) -> Result<(i64, String), SourceError> {
        let service = spec.name.as_str();
        let Source::Git { branch, .. } = &spec.source else {
            return Err(SourceError::WrongSource(format!(
                "service {service} deploys an image"
            )));
        };
        let repo = self.repo_for(spec);
        if let Source::Git { url: Some(_), .. } = &spec.source {
            self.fetch_source(spec).await?;
        }
        let head = git::branch_commit(&repo, branch).await?.ok_or_else(|| {
            SourceError::WrongSource(format!(
                "nothing was pushed to branch {branch} of service {service} yet: push first"
            ))
        })?;
        let id = self.enqueue(service, &head)?;
        self.log(
            service,
            EventKind::Build,
            &format!(
                "deploy requested: building the head of {branch}, commit {} (build {id})",
                short_id(&head)
            ),
        );
        Ok((id, head))
    }

    /// Builds the newest queued commit until none is left. Each build is supervised: a
    /// panic fails that build with an internal error in the activity log, and the loop
    /// goes on, so the service's later pushes still build.
    async fn build_loop(self: Arc<Self>, service: String) {
        /// Clears the loop's running flag if the loop ends without doing so itself (a
        /// panic outside a build). Disarmed when the loop clears the flag under the lock:
        /// clearing it again later could stop a loop started after this one.
        struct Running<'a> {
            builder: &'a Builder,
            service: &'a str,
            armed: bool,
        }
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if !self.armed {
                    return;
                }
                let mut q = self.builder.queue.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(entry) = q.get_mut(self.service) {
                    entry.1 = false;
                }
            }
        }
        let mut running = Running {
            builder: &self,
            service: &service,
            armed: true,
        };
        // Bounded by the queue: each turn takes one queued commit.
        loop {
            let next = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let entry = q.entry(service.clone()).or_insert((None, false));
                match entry.0.take() {
                    Some(c) => c,
                    None => {
                        entry.1 = false;
                        running.armed = false;
                        return;
                    }
                }
            };
            let build = std::panic::AssertUnwindSafe(self.build(&service, &next));
            let result = tokio::select! {
                r = futures_util::FutureExt::catch_unwind(build) => r,
                () = self.shutdown.cancelled() => {
                    tracing::info!(service = %service, build = next.build_id, "shutting down: the build stops and is built again at the next start");
                    return;
                }
            };
            if let Err(panic) = result {
                let why = slipway_core::fault::panic_message(panic.as_ref());
                tracing::error!(service = %service, "build panicked: {why}");
                self.build_log(
                    next.build_id,
                    &format!("\nbuild failed: internal error: {why}\n"),
                );
                self.finish(next.build_id, BuildState::Failed).await;
                self.log(
                    &service,
                    EventKind::Internal,
                    &format!(
                        "internal error: build {} of commit {} of service {service} panicked ({why}); it failed, and later pushes build as usual",
                        next.build_id,
                        short_id(&next.commit)
                    ),
                );
            }
        }
    }

    /// Builds one commit and, on success, records a revision and wakes the deployer.
    async fn build(&self, service: &str, queued: &Queued) {
        let (commit, build_id) = (queued.commit.as_str(), queued.build_id);
        let row = match self.store.service(service) {
            Ok(Some(row)) => row,
            Ok(None) => {
                // Deleted meanwhile.
                self.finish(build_id, BuildState::Failed).await;
                return;
            }
            Err(e) => {
                // It stays recorded as queued: the next start builds it.
                tracing::error!(service, "store: {e}; build {build_id} waits for a restart");
                return;
            }
        };
        let short = short_id(commit);
        if let Err(e) = self.store.start_build(build_id) {
            tracing::error!("store: {e}");
            return;
        }
        if slipway_core::fault::fires("build-panic", service) {
            panic!("injected fault: build-panic:{service}");
        }
        self.log(
            service,
            EventKind::Build,
            &format!("build {build_id} of commit {short} started"),
        );
        let tag = format!("{}:{short}", self.image_repo(service));
        let timeout = Duration::from_secs(row.spec.build_timeout_s as u64);
        let result =
            tokio::time::timeout(timeout, self.build_image(&row.spec, commit, &tag, build_id))
                .await
                .unwrap_or(Err(BuildError::Timeout(timeout.as_secs())));
        match result {
            Ok((image, config)) => {
                self.build_log(build_id, "\nbuild succeeded\n");
                // An apprunner.yaml decides the port and the secret references of the
                // revision it built.
                let adjust = |spec: &mut ServiceSpec| {
                    if let Some(c) = &config {
                        spec.port = u32::from(c.port);
                        spec.secret_refs = c.secrets.clone();
                    }
                };
                let recorded = slipway_store::durable("recording a built revision", || {
                    self.store.new_revision_adjusted(
                        service,
                        &image,
                        |_| tag.clone(),
                        Some(commit),
                        DeploymentKind::Push,
                        &adjust,
                    )
                })
                .await;
                match recorded {
                    Ok((rev, dep)) => {
                        self.finish(build_id, BuildState::Succeeded).await;
                        self.log(
                            service,
                            EventKind::Build,
                            &format!(
                                "build {build_id} succeeded: revision {} (deployment {dep})",
                                rev.number
                            ),
                        );
                        (self.wake)(service);
                    }
                    // Left running in the store: the next start builds it again.
                    Err(e) => self.log(
                        service,
                        EventKind::Build,
                        &format!("build {build_id} of commit {short} succeeded but its revision could not be recorded ({e}); the next start builds it again"),
                    ),
                }
            }
            Err(why) => {
                self.build_log(build_id, &format!("\nbuild failed: {why}\n"));
                self.finish(build_id, BuildState::Failed).await;
                self.log(service, EventKind::Build, &format!("build {build_id} of commit {short} failed: {why}; the running version keeps serving"));
            }
        }
    }

    async fn build_image(
        &self,
        spec: &ServiceSpec,
        commit: &str,
        tag: &str,
        build_id: i64,
    ) -> Result<(String, Option<apprunner::AppRunnerConfig>), BuildError> {
        let service = spec.name.as_str();
        let repo = self.repo_for(spec);
        let tree = git::archive(&repo, commit)
            .await
            .map_err(|source| BuildError::Commit {
                commit: commit.to_string(),
                source,
            })?;
        let settings = spec.build.clone();
        let options = self.options.clone();
        let again = options.ca.is_some().then(|| tree.clone());
        let (s2, o2) = (settings.clone(), options.clone());
        let mut ctx = tokio::task::spawn_blocking(move || {
            context::build_context(&tree, &settings, &options, None)
        })
        .await??;
        // The CA bundle is removed as root at the end: switch back to the user the base
        // image runs as, when no USER of the Dockerfile's says it.
        if let (Some(image), Some(tree)) = (ctx.user_from.clone(), again) {
            if let Some(user) = self.base_user(&image).await {
                ctx = tokio::task::spawn_blocking(move || {
                    context::build_context(&tree, &s2, &o2, Some(&user))
                })
                .await??;
            }
        }
        self.build_log(build_id, &format!("building from {}\n", ctx.from));
        if let Some(cfg) = &ctx.apprunner {
            // Every secret run.secrets names must exist: the build says so, not the
            // first instance.
            let have: Vec<String> = self
                .store
                .secrets(service)
                .map_err(BuildError::Store)?
                .into_iter()
                .map(|s| s.name)
                .collect();
            if let Some(missing) = cfg.secrets.values().find(|s| !have.contains(s)) {
                return Err(BuildError::MissingSecret {
                    secret: missing.clone(),
                    service: service.to_string(),
                });
            }
        }
        let store = self.store.clone();
        let mut pending = String::new();
        let result = self
            .runtime
            .build(ctx.tar, tag, service, &mut |line: &str| {
                pending.push_str(line);
                pending.push('\n');
                if pending.len() > 512 {
                    if let Err(e) = store.append_build_log(build_id, &std::mem::take(&mut pending))
                    {
                        tracing::warn!("store: build {build_id}'s log: {e}");
                    }
                }
            })
            .await;
        self.build_log(build_id, &pending);
        Ok((result?, ctx.apprunner))
    }

    /// Appends to a build's log; a lost line is logged, not fatal.
    fn build_log(&self, build_id: i64, text: &str) {
        if let Err(e) = self.store.append_build_log(build_id, text) {
            tracing::warn!("store: build {build_id}'s log: {e}");
        }
    }

    /// Records a build's end (retried: it decides what the next start builds again).
    async fn finish(&self, build_id: i64, state: BuildState) {
        let what = format!("build {build_id} {state}");
        if let Err(e) =
            slipway_store::durable(&what, || self.store.finish_build(build_id, state)).await
        {
            tracing::error!("{what} was not recorded: {e}");
        }
    }

    /// Deploys the image a service with an image source names: resolves it to an id (so
    /// the revision does not move when the tag does), tags it for the service and records
    /// a revision.
    pub async fn deploy_image(&self, spec: &ServiceSpec) -> Result<i64, SourceError> {
        let service = spec.name.as_str();
        let Source::Image { image, .. } = &spec.source else {
            return Err(SourceError::WrongSource(format!(
                "service {service} deploys git pushes: push to its remote instead"
            )));
        };
        let mut id = self.runtime.image_id(image).await?;
        if id.is_none() && images::registry_ref(image).is_some() {
            // A registry image not on the engine yet: pull it (with the credentials).
            let auth = match &spec.source {
                Source::Image {
                    credentials: Some(n),
                    ..
                } => self
                    .store
                    .secret(service, n)?
                    .as_deref()
                    .and_then(images::basic_auth),
                _ => None,
            };
            self.runtime.pull(image, auth).await?;
            id = self.runtime.image_id(image).await?;
        }
        let id = id.ok_or_else(|| SourceError::NoSuchImage(image.clone()))?;
        let repo = self.image_repo(service);
        let (rev, dep) = self.store.new_revision(
            service,
            &id,
            |n| format!("{repo}:r{n}"),
            None,
            DeploymentKind::Image,
        )?;
        self.runtime
            .tag(&id, &repo, &format!("r{}", rev.number))
            .await?;
        self.log(
            service,
            EventKind::Deployment,
            &format!(
                "image {image} ({}) recorded as revision {} (deployment {dep})",
                short_id(&id),
                rev.number
            ),
        );
        (self.wake)(service);
        Ok(rev.number)
    }
}

impl Builder {
    /// Sets what deletes a service: previews whose branch is deleted, or idle too long,
    /// go through it.
    pub fn on_remove(&self, remove: Remove) {
        if self.remove.set(remove).is_err() {
            tracing::warn!("the builder's remove hook was set twice; the first stays");
        }
    }

    async fn remove_preview(&self, parent: &str, name: &str, why: &str) {
        let Some(remove) = self.remove.get() else {
            return;
        };
        remove(name.to_string()).await;
        self.log(
            parent,
            EventKind::Service,
            &format!("preview {name} deleted: {why}"),
        );
    }

    /// After a push to a service with previews: each new or moved branch that matches
    /// gets its preview service (created from the parent's settings, scaling to zero) and
    /// a build; each deleted one loses it.
    async fn previews_after_push(
        self: &Arc<Self>,
        parent: &ServiceSpec,
        previews: &slipway_core::Previews,
        repo: &std::path::Path,
        before: std::collections::BTreeMap<String, String>,
    ) {
        let pname = parent.name.as_str();
        let after = match git::branches(repo).await {
            Ok(a) => a,
            Err(e) => {
                self.log(
                    pname,
                    EventKind::Build,
                    &format!("previews: cannot list the branches: {e}"),
                );
                return;
            }
        };
        let Source::Git { branch: main, .. } = &parent.source else {
            return;
        };
        for (b, commit) in &after {
            if b == main || !previews.matches(b) || before.get(b) == Some(commit) {
                continue;
            }
            let name = match slipway_core::preview_name(b, pname) {
                Ok(n) => n,
                Err(e) => {
                    self.log(
                        pname,
                        EventKind::Service,
                        &format!("branch {b} gets no preview: {e}"),
                    );
                    continue;
                }
            };
            let existing = match self.store.service(name.as_str()) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!("store: {e}");
                    continue;
                }
            };
            match existing {
                Some(row)
                    if row.spec.preview_of.as_deref() == Some(pname)
                        && matches!(&row.spec.source, Source::Git { branch, .. } if branch == b) => {
                }
                Some(_) => {
                    self.log(pname, EventKind::Service, &format!("branch {b} gets no preview: its name {name} is taken by another service"));
                    continue;
                }
                None => {
                    let mut spec = parent.clone();
                    spec.name = name.clone();
                    spec.source = Source::git(b);
                    spec.previews = None;
                    spec.preview_of = Some(pname.to_string());
                    spec.scaling.min_size = 0;
                    if let Err(e) = self.store.create_service(&spec) {
                        self.log(
                            pname,
                            EventKind::Service,
                            &format!("branch {b} gets no preview: {e}"),
                        );
                        continue;
                    }
                    self.log(
                        pname,
                        EventKind::Service,
                        &format!("preview {name} created for branch {b}"),
                    );
                    self.log(
                        name.as_str(),
                        EventKind::Service,
                        &format!("service created: the preview of branch {b} of {pname}"),
                    );
                }
            }
            match self.enqueue(name.as_str(), commit) {
                Ok(id) => self.log(
                    name.as_str(),
                    EventKind::Build,
                    &format!(
                        "push to {b}: commit {} queued for build {id}",
                        short_id(commit)
                    ),
                ),
                Err(e) => tracing::error!("store: {e}"),
            }
        }
        for b in before
            .keys()
            .filter(|b| !after.contains_key(*b) && previews.matches(b))
        {
            let Ok(name) = slipway_core::preview_name(b, pname) else {
                continue;
            };
            if let Ok(Some(row)) = self.store.service(name.as_str()) {
                let same = matches!(&row.spec.source, Source::Git { branch, .. } if branch == b);
                if row.spec.preview_of.as_deref() == Some(pname) && same {
                    self.remove_preview(pname, name.as_str(), &format!("branch {b} was deleted"))
                        .await;
                }
            }
        }
    }

    /// Deletes previews whose last build is older than their parent's `idle_s`.
    async fn expire_previews(&self) {
        let snap = self.store.snapshot();
        let now = slipway_core::now_unix_ms();
        for row in snap.services() {
            let Some(parent) = &row.spec.preview_of else {
                continue;
            };
            let Some(idle) = snap
                .service(parent)
                .and_then(|p| p.spec.previews.as_ref())
                .map(|p| p.idle_s)
                .filter(|i| *i > 0)
            else {
                continue;
            };
            let name = row.spec.name.as_str();
            let last = match self.store.builds(name, 1) {
                Ok(b) => b.first().map(|b| b.created_ms).unwrap_or(row.created_ms),
                Err(_) => continue,
            };
            if now.saturating_sub(last)
                > i64::try_from(idle.saturating_mul(1000)).unwrap_or(i64::MAX)
            {
                self.remove_preview(parent, name, &format!("no push for {idle} s"))
                    .await;
            }
        }
    }

    /// Checks a source against the operator's policy: local repositories are watched only
    /// when the operator allows file URLs.
    pub fn check_source(&self, spec: &ServiceSpec) -> Result<(), SourceError> {
        if let Source::Git { url: Some(url), .. } = &spec.source {
            if watch::is_local(url) && !self.options.allow_file_urls {
                return Err(SourceError::WrongSource(format!(
                    "source.url {url:?} is a local repository: the operator must allow them (slipway serve --allow-file-urls)"
                )));
            }
        }
        Ok(())
    }

    /// Fetches a watched service's branch into its repository; returns the head.
    async fn fetch_source(self: &Arc<Self>, spec: &ServiceSpec) -> Result<String, SourceError> {
        let Source::Git {
            branch,
            url: Some(url),
            credentials,
            ..
        } = &spec.source
        else {
            return Err(SourceError::WrongSource(format!(
                "service {} watches no repository",
                spec.name
            )));
        };
        self.check_source(spec)?;
        let service = spec.name.as_str();
        let creds = match credentials {
            None => watch::Credentials::None,
            Some(name) => {
                let value = self.store.secret(service, name)?.ok_or_else(|| {
                        SourceError::WrongSource(format!(
                            "source.credentials names the secret {name}, which service {service} does not have: slipway secrets set {service} {name}"
                        ))
                    })?;
                watch::Credentials::Secret(value)
            }
        };
        let repo = git::repo_dir(&self.repos, service);
        let lock = self.fetch_lock(service);
        let Ok(turn) = tokio::time::timeout(FETCH_TIMEOUT, lock.lock_owned()).await else {
            return Err(SourceError::Fetch(format!(
                "fetching branch {branch} of {url}: the previous fetch has not finished in {} s",
                FETCH_TIMEOUT.as_secs()
            )));
        };
        // The branches as this fetch finds them (after any fetch before it).
        let before = match &spec.previews {
            Some(_) => Some(git::branches(&repo).await?),
            None => None,
        };
        let (shown, url, branch, dir) = (url.clone(), url.clone(), branch.clone(), repo.clone());
        let all = spec.previews.is_some();
        let fetch = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            watch::fetch(&dir, &url, &branch, &creds, all)
        });
        let head = match tokio::time::timeout(FETCH_TIMEOUT, fetch).await {
            Ok(done) => done
                .map_err(|e| SourceError::Fetch(e.to_string()))?
                .map_err(|e| SourceError::Fetch(e.to_string()))?,
            Err(_) => {
                return Err(SourceError::Fetch(format!(
                    "fetching {shown}: no answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                )))
            }
        };
        if let (Some(before), Some(previews)) = (before, &spec.previews) {
            self.previews_after_push(spec, previews, &repo, before)
                .await;
        }
        Ok(head)
    }

    /// Polls a watched service once: a head with no build yet is queued (with
    /// auto-deploy on) and said in the activity log. `why` says what asked.
    pub async fn poll_source(
        self: &Arc<Self>,
        spec: &ServiceSpec,
        why: &str,
    ) -> Result<Option<i64>, SourceError> {
        let head = self.fetch_source(spec).await?;
        let service = spec.name.as_str();
        if self.store.has_build_of(service, &head)? {
            return Ok(None);
        }
        let Source::Git { branch, url, .. } = &spec.source else {
            return Ok(None);
        };
        let url = url.as_deref().unwrap_or_default();
        if !spec.auto_deploy {
            return Ok(None);
        }
        let id = self.enqueue(service, &head)?;
        self.log(
            service,
            EventKind::Build,
            &format!(
                "{why}: new commit {} on {branch} of {url}, queued for build {id}",
                short_id(&head)
            ),
        );
        Ok(Some(id))
    }

    /// A webhook: polls the service now, in the background.
    pub fn trigger(self: &Arc<Self>, spec: ServiceSpec) {
        let me = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = me.poll_source(&spec, "webhook").await {
                me.log(
                    spec.name.as_str(),
                    EventKind::Build,
                    &format!("webhook: {e}"),
                );
            }
        });
    }

    /// Polls every watched service when its interval is due, until shutdown. A failed
    /// poll is said in the activity log once until it works again.
    pub fn watch(self: &Arc<Self>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let mut due: HashMap<String, tokio::time::Instant> = HashMap::new();
            let failing: Arc<Mutex<HashMap<String, String>>> = Arc::default();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut turns = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = me.shutdown.cancelled() => return,
                }
                turns += 1;
                if turns.is_multiple_of(5) {
                    me.expire_previews().await;
                }
                let snap = me.store.snapshot();
                let now = tokio::time::Instant::now();
                due.retain(|s, _| snap.service(s).is_some());
                for row in snap.services() {
                    let Source::Git {
                        url: Some(_),
                        poll_s,
                        ..
                    } = &row.spec.source
                    else {
                        continue;
                    };
                    let name = row.spec.name.to_string();
                    let in_flight = me.fetch_lock(&name).try_lock().is_err();
                    if in_flight || due.get(&name).is_some_and(|t| *t > now) {
                        continue;
                    }
                    due.insert(name.clone(), now + Duration::from_secs(u64::from(*poll_s)));
                    // Each poll on its own task: a remote that is slow to answer holds
                    // only its own service's polls.
                    let (me2, failing, spec) = (me.clone(), failing.clone(), row.spec.clone());
                    me.tasks.spawn(async move {
                        let polled = tokio::select! {
                            r = me2.poll_source(&spec, "poll") => r,
                            () = me2.shutdown.cancelled() => return,
                        };
                        let mut failing = failing.lock().unwrap_or_else(|p| p.into_inner());
                        match polled {
                            Ok(_) => {
                                failing.remove(&name);
                            }
                            Err(e) => {
                                let msg = e.to_string();
                                if failing.get(&name) != Some(&msg) {
                                    me2.log(&name, EventKind::Build, &format!("poll: {msg}"));
                                    failing.insert(name, msg);
                                }
                            }
                        }
                    });
                }
            }
        });
    }

    /// A new revision of the image the service serves (or is deploying), for a change of
    /// its configuration (secrets): recorded, tagged `rN` and deployed blue/green like a
    /// push. None when the service has no revision yet (its first deploy picks the change
    /// up).
    pub async fn redeploy(&self, service: &str, why: &str) -> Result<Option<i64>, SourceError> {
        self.redeploy_config(service, why, true).await
    }

    /// [`Builder::redeploy`]; with `keep_port` false the service's own port replaces what
    /// the build decided (the user changed it).
    pub async fn redeploy_config(
        &self,
        service: &str,
        why: &str,
        keep_port: bool,
    ) -> Result<Option<i64>, SourceError> {
        let Some(row) = self.store.service(service)? else {
            return Ok(None);
        };
        let Some(current) = row.target_revision.or(row.active_revision) else {
            return Ok(None);
        };
        let Some(rev) = self.store.revision(service, current)? else {
            return Ok(None);
        };
        let repo = self.image_repo(service);
        // What the build decided (an apprunner.yaml's port and secret references) stays.
        let built = rev.spec.clone();
        let keep = |spec: &mut ServiceSpec| {
            if let Some(b) = &built {
                if keep_port {
                    spec.port = b.port;
                }
                spec.secret_refs = b.secret_refs.clone();
            }
        };
        let (new, dep) = self.store.new_revision_adjusted(
            service,
            &rev.image,
            |n| format!("{repo}:r{n}"),
            rev.commit.as_deref(),
            DeploymentKind::Config,
            &keep,
        )?;
        self.runtime
            .tag(&rev.image, &repo, &format!("r{}", new.number))
            .await?;
        self.log(
            service,
            EventKind::Deployment,
            &format!(
                "{why}: revision {} (the image of revision {current}) is deployed (deployment {dep})",
                new.number
            ),
        );
        (self.wake)(service);
        Ok(Some(new.number))
    }
}
