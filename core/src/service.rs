//! A service's specification: what the user asked for. Every field has a default that
//! matches App Runner's (or Knative's where App Runner has none), and `validate` checks the
//! ranges, so a spec that reaches the store is always one the platform can run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Cpu, InstanceSize, Memory, ServiceName};

/// Where a service's code comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// `git push` to the repository the platform hosts at `/git/<service>.git`; every push
    /// to `branch` deploys.
    Git {
        /// The branch that deploys (default `main`).
        #[serde(default = "default_branch")]
        branch: String,
        /// A repository to watch instead of pushes to the hosted one: `https://`,
        /// `http://`, `ssh://`, `user@host:path`, or (when the operator allows it) a
        /// `file://` URL or absolute path. Read with git2.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Seconds between polls of `url` (default 60, 2 to 86400).
        #[serde(default = "default_poll", skip_serializing_if = "is_default_poll")]
        poll_s: u32,
        /// The Slipway secret holding the credentials for `url`: `user:password` or a
        /// token for https, a private key for ssh.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<String>,
        /// The Slipway secret that signs webhooks (`X-Hub-Signature-256`, or compared with
        /// `X-Gitlab-Token`); webhooks are refused without one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webhook_secret: Option<String>,
    },
    /// An image already present on the engine, e.g. `busybox:latest`.
    Image {
        /// The image reference.
        image: String,
        /// Seconds between checks of a registry image's digest (default 60, 2 to
        /// 86400). An image on the engine is followed by its tag events instead.
        #[serde(default = "default_poll", skip_serializing_if = "is_default_poll")]
        poll_s: u32,
        /// The Slipway secret with the registry's credentials: `user:password` (basic) or
        /// a token (bearer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<String>,
    },
}

fn default_logs_max_bytes() -> u32 {
    10 << 20
}

fn default_branch() -> String {
    "main".into()
}

fn default_poll() -> u32 {
    60
}

fn is_default_poll(v: &u32) -> bool {
    *v == default_poll()
}

/// Checks a watched repository's URL: one of the transports git2 speaks, never git's
/// `ext::` helper, nothing option-like, and no credentials inside it (they are secrets).
pub fn check_repo_url(url: &str) -> Result<(), SpecError> {
    let bad = |why: &str| Err(err("source.url", why));
    if url.is_empty() || url.len() > 2048 || url.chars().any(|c| c.is_control() || c == ' ') {
        return bad("the URL is empty, too long, or has spaces or control characters");
    }
    if url.starts_with('-') {
        return bad("a URL cannot start with '-' (git would read it as an option)");
    }
    if url.contains("::") {
        return bad("transport helpers (`ext::`, `fd::`, any `<helper>::`) are refused");
    }
    let lower = url.to_ascii_lowercase();
    let authority = |rest: &str| rest.split('/').next().unwrap_or_default().to_string();
    if let Some(rest) = ["https://", "http://", "ssh://", "git://"]
        .iter()
        .find_map(|p| lower.strip_prefix(p).map(|r| (p, r)))
    {
        let auth = authority(rest.1);
        if auth.is_empty() {
            return bad("the URL has no host");
        }
        if let Some((userinfo, _)) = auth.rsplit_once('@') {
            if userinfo.contains(':') || *rest.0 != "ssh://" {
                return bad(
                    "put credentials in a Slipway secret (source.credentials), not in the URL",
                );
            }
        }
        return Ok(());
    }
    if lower.starts_with("file://") || url.starts_with('/') {
        return Ok(());
    }
    // scp-like `user@host:path`.
    if let Some((host, path)) = url.split_once(':') {
        if !host.contains('/') && !host.is_empty() && !path.is_empty() && !path.starts_with("//") {
            if host.rsplit_once('@').is_some_and(|(u, _)| u.contains(':')) {
                return bad("put credentials in a Slipway secret, not in the URL");
            }
            return Ok(());
        }
    }
    bad("use https://, http://, ssh://, user@host:path, file:// or an absolute path")
}

impl Default for Source {
    fn default() -> Self {
        Source::git(&default_branch())
    }
}

impl Source {
    /// The secrets this source uses for the platform's own work (repository or registry
    /// credentials, the webhook key). They are not given to the app's environment unless
    /// a revision names them in its `secret_refs`.
    pub fn platform_secrets(&self) -> Vec<&str> {
        match self {
            Source::Git {
                credentials,
                webhook_secret,
                ..
            } => credentials
                .iter()
                .chain(webhook_secret)
                .map(String::as_str)
                .collect(),
            Source::Image { credentials, .. } => credentials.iter().map(String::as_str).collect(),
        }
    }

    /// A git source of pushes to `branch` of the hosted repository.
    pub fn git(branch: &str) -> Source {
        Source::Git {
            branch: branch.to_string(),
            url: None,
            poll_s: default_poll(),
            credentials: None,
            webhook_secret: None,
        }
    }
}

/// Preview services of a git service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Previews {
    /// The branches that get previews: a glob where `*` matches any run of characters
    /// (`feature/*`).
    pub branches: String,
    /// A preview with no push for this many seconds is deleted (default 604800, 7 days;
    /// 0: only when its branch is deleted).
    #[serde(default = "default_preview_idle")]
    pub idle_s: u64,
}

fn default_preview_idle() -> u64 {
    7 * 24 * 3600
}

impl Previews {
    /// Whether `branch` gets a preview.
    pub fn matches(&self, branch: &str) -> bool {
        glob(self.branches.as_bytes(), branch.as_bytes())
    }
}

/// `*` matches any run of bytes (iterative, no backtracking blow-up).
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i, mut star, mut mark) = (0, 0, None, 0);
    while i < s.len() {
        if p < pat.len() && pat[p] != b'*' && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(st) = star {
            p = st + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

/// Which file builds a service's source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BuildConfig {
    /// The Dockerfile when there is one, else `apprunner.yaml` (App Runner's image/source
    /// split: a Dockerfile is an image build).
    #[default]
    Dockerfile,
    /// `apprunner.yaml` (or `.yml`) when there is one, even beside a Dockerfile.
    Apprunner,
}

/// How a service's source is built.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// Which file wins when the source has both (default: the Dockerfile).
    #[serde(default)]
    pub config: BuildConfig,
    /// The source directory inside the repository, for monorepos (default: the root).
    #[serde(default)]
    pub dir: String,
    /// Keep the injected build CA in the final image (default: removed at the end).
    #[serde(default)]
    pub keep_ca: bool,
}

/// How an instance's health is probed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthProtocol {
    /// A TCP connect to the instance's port succeeds.
    #[default]
    Tcp,
    /// An HTTP GET of `path` answers 2xx or 3xx.
    Http,
}

/// Health-check settings, App Runner's shape and defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheck {
    /// TCP or HTTP (default TCP).
    pub protocol: HealthProtocol,
    /// The path an HTTP check requests (default `/`).
    pub path: String,
    /// Seconds between checks, 1 to 20 (default 5).
    pub interval_s: u32,
    /// Seconds before a check counts as failed, 1 to 20 (default 2).
    pub timeout_s: u32,
    /// Consecutive passes before an instance takes traffic, 1 to 20 (default 1).
    pub healthy_threshold: u32,
    /// Consecutive failures before an instance is replaced, 1 to 20 (default 5).
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            protocol: HealthProtocol::Tcp,
            path: "/".into(),
            interval_s: 5,
            timeout_s: 2,
            healthy_threshold: 1,
            unhealthy_threshold: 5,
        }
    }
}

/// What an idle service does when it scales to zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IdleMode {
    /// Remove the instances; the next request starts a new container.
    #[default]
    Stop,
    /// Pause the instances (cgroup freezer); the next request unpauses one in milliseconds.
    Pause,
}

/// Autoscaling settings: App Runner's shape plus scale to zero, Knative's windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Scaling {
    /// Requests one instance serves at once, 1 to 200 (default 100).
    pub max_concurrency: u32,
    /// Fewest instances, 0 to 25 (default 1); 0 lets the service scale to zero.
    pub min_size: u32,
    /// Most instances, 1 to 25 (default 25).
    pub max_size: u32,
    /// Target concurrency per instance as a percentage of `max_concurrency`, 1 to 100
    /// (default 70).
    pub target_utilization_pct: u32,
    /// Seconds of history the stable decision averages, 6 to 3600 (default 60).
    pub stable_window_s: u32,
    /// Seconds of history the panic decision averages, 1 to the stable window (default 6).
    pub panic_window_s: u32,
    /// Load, as a percentage of current capacity, that starts panic mode, 110 to 1000
    /// (default 200).
    pub panic_threshold_pct: u32,
    /// Idle seconds before a service with `min_size` 0 goes to zero, 0 to 3600 (default 30).
    pub scale_to_zero_grace_s: u32,
    /// Stop or pause instances when idle (default stop).
    pub idle_mode: IdleMode,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            max_concurrency: 100,
            min_size: 1,
            max_size: 25,
            target_utilization_pct: 70,
            stable_window_s: 60,
            panic_window_s: 6,
            panic_threshold_pct: 200,
            scale_to_zero_grace_s: 30,
            idle_mode: IdleMode::Stop,
        }
    }
}

impl Scaling {
    /// Target in-flight requests per instance.
    pub fn target_per_instance(&self) -> f64 {
        (self.max_concurrency as f64 * self.target_utilization_pct as f64 / 100.0).max(0.01)
    }
}

/// Request handling settings for the router.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// Seconds the router waits for a response's headers, 1 to 3600 (default 120).
    pub request_timeout_s: u32,
    /// The app speaks HTTP/2 without TLS (h2c), e.g. a gRPC server (default false).
    pub http2: bool,
    /// Seconds a WebSocket or other upgraded connection may stay silent, 1 to 86400
    /// (default 300).
    pub idle_timeout_s: u32,
    /// Requests that may wait when every instance is at its max concurrency, 0 to 10000
    /// (default 100).
    pub queue_size: u32,
    /// Milliseconds a request may wait in that queue, 0 to 600000 (default 10000).
    pub queue_timeout_ms: u32,
    /// Milliseconds a request waits for a scaled-to-zero service to start, 100 to 600000
    /// (default 30000).
    pub cold_start_timeout_ms: u32,
    /// Seconds old instances get to finish in-flight requests after a swap, 0 to 3600
    /// (default 30).
    pub drain_timeout_s: u32,
    /// Pass request header fields with `_` in their names to the app (default false: the
    /// router drops them, as nginx does, since CGI and WSGI servers fold `_` and `-`
    /// together and a `Transfer_Encoding` would then frame the request).
    pub underscores_in_headers: bool,
    /// Plain-HTTP requests get a 308 redirect to HTTPS when the router serves HTTPS
    /// (default false).
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on HTTPS answers, 0 to 63072000 (default 0:
    /// none).
    pub hsts_max_age_s: u32,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            request_timeout_s: 120,
            http2: false,
            idle_timeout_s: 300,
            queue_size: 100,
            queue_timeout_ms: 10_000,
            cold_start_timeout_ms: 30_000,
            drain_timeout_s: 30,
            underscores_in_headers: false,
            https_redirect: false,
            hsts_max_age_s: 0,
        }
    }
}

/// Everything a user sets on a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name, its host label.
    pub name: ServiceName,
    /// Where its code comes from (default: git push to `main`).
    #[serde(default)]
    pub source: Source,
    /// The port the app listens on inside its container, also passed as `PORT`
    /// (default 8080).
    #[serde(default = "default_port")]
    pub port: u32,
    /// Environment variables given to every instance.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// CPU units (default 1024, 1 vCPU); see [`InstanceSize`] for the valid pairs.
    #[serde(default = "default_cpu")]
    pub cpu: Cpu,
    /// Memory in MB (default 2048, 2 GB).
    #[serde(default = "default_memory")]
    pub memory: Memory,
    /// Health check.
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Autoscaling.
    #[serde(default)]
    pub scaling: Scaling,
    /// Router settings.
    #[serde(default)]
    pub network: Network,
    /// Seconds a build may take, 10 to 7200 (default 1800).
    #[serde(default = "default_build_timeout")]
    pub build_timeout_s: u32,
    /// Bytes of application logs kept, oldest out first, 64 KiB to 1 GiB (default
    /// 10 MiB).
    #[serde(default = "default_logs_max_bytes")]
    pub logs_max_bytes: u32,
    /// Images of this many latest revisions are kept for rollback, 1 to 100 (default 5).
    #[serde(default = "default_keep")]
    pub keep_revisions: u32,
    /// Seconds a deployment's new instances have to become healthy, 5 to 3600 (default 300).
    #[serde(default = "default_deploy_timeout")]
    pub deploy_timeout_s: u32,
    /// How the source is built.
    #[serde(default)]
    pub build: BuildSettings,
    /// Whether a new commit (pushed or seen by the watcher) or a moved image tag deploys
    /// by itself (default true); off, `slipway deploy` deploys on demand.
    #[serde(default = "default_true")]
    pub auto_deploy: bool,
    /// Preview services per branch (hosted git services): pushes to a branch matching
    /// the pattern get their own service, `<branch-slug>--<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previews: Option<Previews>,
    /// Set on a preview service: the service it previews (its repository is that
    /// service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_of: Option<String>,
    /// Variables whose values come from differently named secrets (`run.secrets` of an
    /// `apprunner.yaml`, recorded on the revision it built): variable to secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_refs: BTreeMap<String, String>,
}

fn default_cpu() -> Cpu {
    InstanceSize::DEFAULT.cpu
}
fn default_memory() -> Memory {
    InstanceSize::DEFAULT.memory
}
fn default_true() -> bool {
    true
}
fn default_port() -> u32 {
    8080
}
fn default_build_timeout() -> u32 {
    1800
}
fn default_keep() -> u32 {
    5
}
fn default_deploy_timeout() -> u32 {
    300
}

/// Checks the name of a secret: a variable name the platform does not set itself.
pub fn secret_name(name: &str) -> Result<(), SpecError> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256;
    if !ok {
        return Err(err(
            "name",
            format!("{name:?} is not a valid secret name: use letters, digits and '_', not starting with a digit"),
        ));
    }
    if name == "PORT" || name.starts_with("SLIPWAY_") {
        return Err(err("name", format!("{name} is set by the platform")));
    }
    Ok(())
}

/// Why a spec was refused: always names the field and the valid range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The offending field, dotted (`scaling.max_size`).
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

fn range(field: &str, v: u32, lo: u32, hi: u32) -> Result<(), SpecError> {
    if v < lo || v > hi {
        Err(SpecError {
            field: field.into(),
            message: format!("{v} is out of range: choose {lo} to {hi}"),
        })
    } else {
        Ok(())
    }
}

fn err(field: &str, message: impl Into<String>) -> SpecError {
    SpecError::new(field, message)
}

impl SpecError {
    /// An error about `field`.
    pub fn new(field: &str, message: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ServiceSpec {
    /// A spec with every default.
    pub fn new(name: ServiceName) -> Self {
        ServiceSpec {
            name,
            source: Source::default(),
            port: default_port(),
            env: BTreeMap::new(),
            cpu: default_cpu(),
            memory: default_memory(),
            health_check: HealthCheck::default(),
            scaling: Scaling::default(),
            network: Network::default(),
            build_timeout_s: default_build_timeout(),
            logs_max_bytes: default_logs_max_bytes(),
            keep_revisions: default_keep(),
            deploy_timeout_s: default_deploy_timeout(),
            build: BuildSettings::default(),
            auto_deploy: true,
            previews: None,
            preview_of: None,
            secret_refs: BTreeMap::new(),
        }
    }

    /// The CPU and memory pair, checked.
    pub fn size(&self) -> Result<InstanceSize, crate::SizeError> {
        InstanceSize::new(self.cpu, self.memory)
    }

    /// Checks every range and cross-field rule.
    pub fn validate(&self) -> Result<(), SpecError> {
        match &self.source {
            Source::Git {
                branch,
                url,
                poll_s,
                credentials,
                webhook_secret,
            } => {
                if let Some(url) = url {
                    check_repo_url(url)?;
                }
                range("source.poll_s", *poll_s, 2, 86400)?;
                for (field, name) in [
                    ("source.credentials", credentials),
                    ("source.webhook_secret", webhook_secret),
                ] {
                    if let Some(n) = name {
                        secret_name(n).map_err(|e| err(field, e.message))?;
                    }
                }
                let ok = !branch.is_empty()
                    && branch.len() <= 200
                    && !branch.starts_with(['-', '/', '.'])
                    && !branch.ends_with(['/', '.'])
                    && !branch.contains("..")
                    && !branch.contains("//")
                    && !branch.ends_with(".lock")
                    && branch
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
                if !ok {
                    return Err(err(
                        "source.branch",
                        format!("{branch:?} is not a valid branch name"),
                    ));
                }
            }
            Source::Image {
                image,
                poll_s,
                credentials,
            } => {
                range("source.poll_s", *poll_s, 2, 86400)?;
                if let Some(n) = credentials {
                    secret_name(n).map_err(|e| err("source.credentials", e.message))?;
                }
                let ok = !image.is_empty()
                    && image.len() <= 255
                    && image
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c))
                    && !image.starts_with(['-', '.', '/', ':', '@']);
                if !ok {
                    return Err(err(
                        "source.image",
                        format!("{image:?} is not a valid image reference"),
                    ));
                }
            }
        }
        range("port", self.port, 1, 65535)?;
        if let Some(p) = &self.previews {
            if p.branches.is_empty()
                || p.branches.len() > 200
                || p.branches.chars().any(char::is_control)
            {
                return Err(err(
                    "previews.branches",
                    "a branch pattern of 1 to 200 characters, e.g. \"feature/*\"",
                ));
            }
            if !matches!(&self.source, Source::Git { .. }) {
                return Err(err(
                    "previews",
                    "previews are made from branches: a git source",
                ));
            }
        }
        let dir = &self.build.dir;
        let dir_ok = dir.len() <= 256
            && !dir.starts_with('/')
            && dir.split('/').all(|p| p != ".." && p != ".")
            && dir
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./@+".contains(c));
        if !dir_ok {
            return Err(err(
                "build.dir",
                format!(
                    "{dir:?} is not a directory of the repository: a relative path without '..'"
                ),
            ));
        }
        for (k, v) in &self.env {
            let ok = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k.len() <= 256;
            if !ok {
                return Err(err(
                    "env",
                    format!("{k:?} is not a valid variable name: use letters, digits and '_', not starting with a digit"),
                ));
            }
            if k == "PORT" {
                return Err(err(
                    "env",
                    "PORT is set by the platform from the service's port",
                ));
            }
            if v.contains('\0') || v.len() > 32 * 1024 {
                return Err(err(
                    "env",
                    format!("the value of {k} is not valid (NUL byte or over 32 KiB)"),
                ));
            }
        }
        if self.env.len() > 200 {
            return Err(err("env", "at most 200 variables"));
        }
        self.size().map_err(|e| err("cpu/memory", e.to_string()))?;
        let h = &self.health_check;
        range("health_check.interval_s", h.interval_s, 1, 20)?;
        range("health_check.timeout_s", h.timeout_s, 1, 20)?;
        range("health_check.healthy_threshold", h.healthy_threshold, 1, 20)?;
        range(
            "health_check.unhealthy_threshold",
            h.unhealthy_threshold,
            1,
            20,
        )?;
        if !h.path.starts_with('/')
            || h.path.len() > 1024
            || h.path.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err(err(
                "health_check.path",
                format!("{:?} must be a path starting with '/'", h.path),
            ));
        }
        let s = &self.scaling;
        range("scaling.max_concurrency", s.max_concurrency, 1, 200)?;
        range("scaling.min_size", s.min_size, 0, 25)?;
        range("scaling.max_size", s.max_size, 1, 25)?;
        if s.min_size > s.max_size {
            return Err(err(
                "scaling.min_size",
                format!("{} is above max_size {}", s.min_size, s.max_size),
            ));
        }
        range(
            "scaling.target_utilization_pct",
            s.target_utilization_pct,
            1,
            100,
        )?;
        range("scaling.stable_window_s", s.stable_window_s, 6, 3600)?;
        range(
            "scaling.panic_window_s",
            s.panic_window_s,
            1,
            s.stable_window_s,
        )?;
        range(
            "scaling.panic_threshold_pct",
            s.panic_threshold_pct,
            110,
            1000,
        )?;
        range(
            "scaling.scale_to_zero_grace_s",
            s.scale_to_zero_grace_s,
            0,
            3600,
        )?;
        let n = &self.network;
        range("network.request_timeout_s", n.request_timeout_s, 1, 3600)?;
        range("network.idle_timeout_s", n.idle_timeout_s, 1, 86400)?;
        range("network.queue_size", n.queue_size, 0, 10_000)?;
        range("network.queue_timeout_ms", n.queue_timeout_ms, 0, 600_000)?;
        range(
            "network.cold_start_timeout_ms",
            n.cold_start_timeout_ms,
            100,
            600_000,
        )?;
        range("network.drain_timeout_s", n.drain_timeout_s, 0, 3600)?;
        range("network.hsts_max_age_s", n.hsts_max_age_s, 0, 63_072_000)?;
        range("build_timeout_s", self.build_timeout_s, 10, 7200)?;
        range("logs_max_bytes", self.logs_max_bytes, 64 << 10, 1 << 30)?;
        range("keep_revisions", self.keep_revisions, 1, 100)?;
        range("deploy_timeout_s", self.deploy_timeout_s, 5, 3600)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ServiceSpec, String> {
        let spec: ServiceSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    #[test]
    fn preview_patterns() {
        let p = Previews {
            branches: "feature/*".into(),
            idle_s: 0,
        };
        assert!(p.matches("feature/login"));
        assert!(p.matches("feature/"));
        assert!(!p.matches("main"));
        assert!(!p.matches("xfeature/a"));
        let all = Previews {
            branches: "*".into(),
            idle_s: 0,
        };
        assert!(all.matches("anything/at/all"));
    }

    #[test]
    fn watched_urls_are_checked() {
        for ok in [
            "https://github.com/a/b.git",
            "http://127.0.0.1:7070/git/a.git",
            "ssh://git@host:2222/a.git",
            "git@github.com:a/b.git",
            "file:///srv/repo",
            "/srv/repo",
        ] {
            assert!(check_repo_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "--upload-pack=evil",
            "https://user:pass@github.com/a/b",
            "https://token@github.com/a/b",
            "fd::17",
            "ftp://x/y",
            "relative/path",
            "",
            "https:// x",
        ] {
            let e = check_repo_url(bad).unwrap_err();
            assert_eq!(e.field, "source.url");
            assert!(!e.message.contains("pass@"), "credentials echoed: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_url_is_checked_without_panicking(url in "\\PC{0,80}") {
            if check_repo_url(&url).is_ok() {
                proptest::prop_assert!(!url.starts_with('-') && !url.contains("::"));
            }
        }
    }

    #[test]
    fn minimal_spec_gets_app_runner_defaults() {
        let s = parse(r#"{"name":"web"}"#).unwrap();
        assert_eq!(s.source, Source::git("main"));
        assert_eq!(s.port, 8080);
        assert_eq!(s.size().unwrap(), InstanceSize::DEFAULT);
        assert_eq!(s.health_check.interval_s, 5);
        assert_eq!(s.health_check.timeout_s, 2);
        assert_eq!(s.health_check.healthy_threshold, 1);
        assert_eq!(s.health_check.unhealthy_threshold, 5);
        assert_eq!(s.scaling.max_concurrency, 100);
        assert_eq!(s.scaling.min_size, 1);
        assert_eq!(s.scaling.max_size, 25);
        assert_eq!(s.network.request_timeout_s, 120);
        assert_eq!(s, ServiceSpec::new(ServiceName::parse("web").unwrap()));
    }

    #[test]
    fn full_spec_round_trips() {
        let s = parse(
            r#"{"name":"api2","source":{"type":"image","image":"busybox:latest"},"port":80,
            "env":{"GREETING":"hi"},"cpu":"0.25 vCPU","memory":"1 GB",
            "health_check":{"protocol":"http","path":"/healthz","interval_s":1},
            "scaling":{"min_size":0,"max_size":3,"idle_mode":"pause"},
            "network":{"http2":true,"request_timeout_s":3600}}"#,
        )
        .unwrap();
        assert_eq!(s.memory.0, 1024);
        let back: ServiceSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn refuses_with_the_field_and_the_range() {
        let cases = [
            (r#"{"name":"Web"}"#, "lower-case"),
            (r#"{"name":"web","port":0}"#, "port"),
            (r#"{"name":"web","port":70000}"#, "port"),
            (
                r#"{"name":"web","cpu":256,"memory":4096}"#,
                "0.5 GB, 1 GB, 2 GB",
            ),
            (r#"{"name":"web","cpu":300}"#, "cpu"),
            (
                r#"{"name":"web","scaling":{"max_concurrency":201}}"#,
                "scaling.max_concurrency: 201 is out of range: choose 1 to 200",
            ),
            (
                r#"{"name":"web","scaling":{"min_size":5,"max_size":2}}"#,
                "above max_size",
            ),
            (
                r#"{"name":"web","scaling":{"max_size":26}}"#,
                "scaling.max_size",
            ),
            (
                r#"{"name":"web","network":{"request_timeout_s":3601}}"#,
                "network.request_timeout_s",
            ),
            (
                r#"{"name":"web","health_check":{"interval_s":0}}"#,
                "health_check.interval_s",
            ),
            (
                r#"{"name":"web","health_check":{"path":"nope"}}"#,
                "health_check.path",
            ),
            (
                r#"{"name":"web","env":{"1X":"a"}}"#,
                "not a valid variable name",
            ),
            (
                r#"{"name":"web","env":{"PORT":"1"}}"#,
                "PORT is set by the platform",
            ),
            (
                r#"{"name":"web","source":{"type":"git","branch":"../x"}}"#,
                "source.branch",
            ),
            (
                r#"{"name":"web","source":{"type":"image","image":""}}"#,
                "source.image",
            ),
            (
                r#"{"name":"web","source":{"type":"svn"}}"#,
                "unknown variant",
            ),
            (r#"{"name":"web","colour":"blue"}"#, "unknown field"),
        ];
        for (json, want) in cases {
            let got = parse(json).unwrap_err();
            assert!(got.contains(want), "{json}: got {got:?}, want {want:?}");
        }
    }
}
