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

pub mod dockerignore;
pub mod git;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use slipway_core::{short_id, BuildState, DeploymentKind, EventKind, ServiceSpec, Source};
use slipway_runtime::Runtime;
use slipway_store::Store;

pub use git::{GitRequest, GitResponse};

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
    /// The engine or the store failed.
    #[error("{0}")]
    Internal(String),
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
}

impl Builder {
    /// A builder keeping repositories under `repos`.
    pub fn new(
        store: Arc<Store>,
        runtime: Arc<dyn Runtime>,
        repos: PathBuf,
        wake: Wake,
    ) -> Arc<Self> {
        Arc::new(Builder {
            store,
            runtime,
            repos,
            wake,
            queue: Mutex::new(HashMap::new()),
        })
    }

    /// The image repository for a service's images: unique per platform, so two
    /// platforms sharing an engine never untag each other's images.
    pub fn image_repo(&self, service: &str) -> String {
        let p: String = self.runtime.platform().chars().take(12).collect();
        format!("slipway/{p}/{service}")
    }

    /// Creates the service's repository (for git sources).
    pub async fn prepare(&self, spec: &ServiceSpec) -> std::io::Result<()> {
        if let Source::Git { branch } = &spec.source {
            git::ensure_repo(&git::repo_dir(&self.repos, spec.name.as_str()), branch).await?;
        }
        Ok(())
    }

    /// Removes a deleted service's repository.
    pub async fn forget(&self, service: &str) {
        let _ = tokio::fs::remove_dir_all(git::repo_dir(&self.repos, service)).await;
    }

    /// Serves one smart-HTTP request for `service`; after a push that moved the
    /// service's branch, starts a build of the new commit.
    pub async fn git_http(self: &Arc<Self>, spec: &ServiceSpec, req: GitRequest) -> GitResponse {
        let service = spec.name.as_str();
        let Source::Git { branch } = &spec.source else {
            return GitResponse {
                status: 409,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: format!("service {service} deploys an image, not git pushes\n").into_bytes(),
            };
        };
        let repo = git::repo_dir(&self.repos, service);
        if let Err(e) = git::ensure_repo(&repo, branch).await {
            return GitResponse {
                status: 500,
                headers: vec![],
                body: format!("cannot create the repository: {e}\n").into_bytes(),
            };
        }
        let is_push = req.method == "POST" && req.path == "/git-receive-pack";
        let before = if is_push {
            git::branch_commit(&repo, branch).await
        } else {
            None
        };
        let resp = git::http_backend(&self.repos, &format!("{service}.git"), req).await;
        if is_push {
            let after = git::branch_commit(&repo, branch).await;
            if let Some(commit) = after.filter(|a| Some(a) != before.as_ref()) {
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
        }
        resp
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
        let build_id = self
            .store
            .queue_build(service, commit)
            .map_err(|e| SourceError::Internal(e.to_string()))?;
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
            tokio::spawn(async move { me.build_loop(service).await });
        }
    }

    /// After a restart: builds that were running are recorded as interrupted and built
    /// again, queued ones are built, and a branch head that a push moved just before the
    /// process died (before its build was recorded) is built too.
    pub async fn resume(self: &Arc<Self>) -> Result<(), SourceError> {
        let internal = |e: slipway_store::StoreError| SourceError::Internal(e.to_string());
        for b in self.store.unfinished_builds().map_err(internal)? {
            if self.store.service(&b.service).map_err(internal)?.is_none() {
                self.store
                    .finish_build(b.id, BuildState::Failed)
                    .map_err(internal)?;
                continue;
            }
            let short = short_id(&b.commit).to_string();
            if b.state == BuildState::Running {
                self.store
                    .finish_build(b.id, BuildState::Interrupted)
                    .map_err(internal)?;
                let _ = self
                    .store
                    .append_build_log(b.id, "\n(interrupted by a restart)\n");
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
        for row in self.store.services().map_err(internal)? {
            let Source::Git { branch } = &row.spec.source else {
                continue;
            };
            let service = row.spec.name.as_str();
            let repo = git::repo_dir(&self.repos, service);
            let Some(head) = git::branch_commit(&repo, branch).await else {
                continue;
            };
            if !self.store.has_build_of(service, &head).map_err(internal)? {
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
        let Source::Git { branch } = &spec.source else {
            return Err(SourceError::WrongSource(format!(
                "service {service} deploys an image"
            )));
        };
        let repo = git::repo_dir(&self.repos, service);
        let head = git::branch_commit(&repo, branch).await.ok_or_else(|| {
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
            if let Err(panic) = futures_util::FutureExt::catch_unwind(build).await {
                let why = slipway_core::fault::panic_message(panic.as_ref());
                tracing::error!(service = %service, "build panicked: {why}");
                let _ = self.store.finish_build(next.build_id, BuildState::Failed);
                let _ = self.store.append_build_log(
                    next.build_id,
                    &format!("\nbuild failed: internal error: {why}\n"),
                );
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
        let Ok(Some(row)) = self.store.service(service) else {
            let _ = self.store.finish_build(build_id, BuildState::Failed);
            return; // deleted meanwhile
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
            tokio::time::timeout(timeout, self.build_image(service, commit, &tag, build_id))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the build took longer than {} s and was stopped",
                        timeout.as_secs()
                    ))
                });
        match result {
            Ok(image) => {
                let _ = self.store.append_build_log(build_id, "\nbuild succeeded\n");
                let recorded = self.store.new_revision(
                    service,
                    &image,
                    |_| tag.clone(),
                    Some(commit),
                    DeploymentKind::Push,
                );
                let _ = self.store.finish_build(build_id, BuildState::Succeeded);
                match recorded {
                    Ok((rev, dep)) => {
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
                    Err(e) => tracing::error!("store: {e}"),
                }
            }
            Err(why) => {
                let _ = self
                    .store
                    .append_build_log(build_id, &format!("\nbuild failed: {why}\n"));
                let _ = self.store.finish_build(build_id, BuildState::Failed);
                self.log(service, EventKind::Build, &format!("build {build_id} of commit {short} failed: {why}; the running version keeps serving"));
            }
        }
    }

    async fn build_image(
        &self,
        service: &str,
        commit: &str,
        tag: &str,
        build_id: i64,
    ) -> Result<String, String> {
        let repo = git::repo_dir(&self.repos, service);
        let tree = git::archive(&repo, commit)
            .await
            .map_err(|e| format!("cannot read commit {commit}: {e}"))?;
        let context = tokio::task::spawn_blocking(move || build_context(&tree))
            .await
            .map_err(|e| e.to_string())??;
        let store = self.store.clone();
        let mut pending = String::new();
        let result = self
            .runtime
            .build(context, tag, service, &mut |line: &str| {
                pending.push_str(line);
                pending.push('\n');
                if pending.len() > 512 {
                    let _ = store.append_build_log(build_id, &std::mem::take(&mut pending));
                }
            })
            .await;
        let _ = self.store.append_build_log(build_id, &pending);
        result.map_err(|e| e.to_string())
    }

    /// Deploys the image a service with an image source names: resolves it to an id (so
    /// the revision does not move when the tag does), tags it for the service and records
    /// a revision.
    pub async fn deploy_image(&self, spec: &ServiceSpec) -> Result<i64, SourceError> {
        let service = spec.name.as_str();
        let Source::Image { image } = &spec.source else {
            return Err(SourceError::WrongSource(format!(
                "service {service} deploys git pushes: push to its remote instead"
            )));
        };
        let id = self
            .runtime
            .image_id(image)
            .await
            .map_err(|e| SourceError::Internal(e.to_string()))?
            .ok_or_else(|| SourceError::NoSuchImage(image.clone()))?;
        let repo = self.image_repo(service);
        let (rev, dep) = self
            .store
            .new_revision(
                service,
                &id,
                |n| format!("{repo}:r{n}"),
                None,
                DeploymentKind::Image,
            )
            .map_err(|e| SourceError::Internal(e.to_string()))?;
        self.runtime
            .tag(&id, &repo, &format!("r{}", rev.number))
            .await
            .map_err(|e| SourceError::Internal(e.to_string()))?;
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

/// Filters a `git archive` tar through the tree's `.dockerignore` and checks that a
/// Dockerfile is there. `.git` is never in the context.
pub fn build_context(tree: &[u8]) -> Result<Vec<u8>, String> {
    let mut ignore = dockerignore::DockerIgnore::default();
    let mut has_dockerfile = false;
    {
        let mut ar = tar::Archive::new(tree);
        for entry in ar.entries().map_err(|e| format!("bad archive: {e}"))? {
            let mut entry = entry.map_err(|e| format!("bad archive: {e}"))?;
            let path = entry
                .path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .to_string();
            if path == ".dockerignore" {
                let mut s = String::new();
                let _ = entry.read_to_string(&mut s);
                ignore = dockerignore::DockerIgnore::parse(&s);
            }
            if path == "Dockerfile" {
                has_dockerfile = true;
            }
        }
    }
    if !has_dockerfile {
        return Err("no Dockerfile at the root of the pushed tree: add one (apprunner.yaml builds come in a later release)".into());
    }
    let mut out = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(tree);
    for entry in ar.entries().map_err(|e| format!("bad archive: {e}"))? {
        let mut entry = entry.map_err(|e| format!("bad archive: {e}"))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue; // pax headers and the like
        }
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .to_string();
        let rel = path.trim_end_matches('/');
        if rel.is_empty()
            || rel == ".git"
            || rel.starts_with(".git/")
            || (ignore.excludes(rel) && rel != "Dockerfile" && rel != ".dockerignore")
        {
            continue;
        }
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
        out.append_data(&mut header, &path, data.as_slice())
            .map_err(|e| e.to_string())?;
    }
    out.into_inner().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, c) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, c.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn names(t: &[u8]) -> Vec<String> {
        tar::Archive::new(t)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn context_honours_dockerignore_and_drops_git() {
        let t = tar_of(&[
            ("Dockerfile", "FROM busybox"),
            (".dockerignore", "*.log\nsecret\nDockerfile\n"),
            ("index.html", "hi"),
            ("debug.log", "x"),
            ("secret/key", "k"),
            (".git/HEAD", "ref"),
        ]);
        let ctx = build_context(&t).unwrap();
        assert_eq!(
            names(&ctx),
            vec!["Dockerfile", ".dockerignore", "index.html"]
        );
    }

    #[test]
    fn missing_dockerfile_is_explained() {
        let err = build_context(&tar_of(&[("index.html", "hi")])).unwrap_err();
        assert!(err.contains("no Dockerfile"), "{err}");
    }
}
