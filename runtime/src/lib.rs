//! The container runtime behind Slipway: the [`Runtime`] trait, its Docker Engine
//! implementation ([`DockerRuntime`], through bollard) and a scripted in-memory fake
//! ([`fake::FakeRuntime`]) that the deployer's and builder's unit tests run against.
//! [`Runtime::events`] streams container starts and deaths for whoever watches them.
//!
//! This crate is the only place that speaks to the engine; the builder and the deployer
//! hold an `Arc<dyn Runtime>`, and only `slipway serve` picks Docker. It is also the seam
//! where a Docker Swarm runtime goes. It knows nothing of deployments
//! or scaling: it builds images, starts, stops, pauses and lists containers, and reads their
//! state and logs. Every container carries labels (`slipway.platform`, `slipway.service`,
//! `slipway.revision`, `slipway.instance`) and every list is filtered by the platform's own
//! label, because the engine is shared with everything else on the machine.
//!
//! Containers run with an init process (`HostConfig.init`): apps that ignore SIGTERM as
//! PID 1 would otherwise make every stop wait its whole timeout (measured: 5.2 s against
//! 0.15 s), and drain, scale-down and rollback all stop containers.
//!
//! Containers run with least privilege: `no-new-privileges`, every capability dropped but
//! [`INSTANCE_CAPS`], a pids limit, on Slipway's own bridge network [`NETWORK`] with
//! inter-container communication off (one app cannot reach another's container; the
//! router reaches each through its port published on 127.0.0.1). Builds get CPU and
//! memory limits ([`BUILD_MEMORY`], [`BUILD_CPU_QUOTA`]).

pub mod output;

pub mod docker;
pub mod fake;
pub mod probe;

use std::net::SocketAddr;

use slipway_core::HealthCheck;

pub use docker::DockerRuntime;

/// Label keys set on every container and image Slipway makes.
pub mod labels {
    /// The platform instance (one per data directory), so two Slipways can share an engine.
    pub const PLATFORM: &str = "slipway.platform";
    /// The service name.
    pub const SERVICE: &str = "slipway.service";
    /// The revision number.
    pub const REVISION: &str = "slipway.revision";
    /// The instance id.
    pub const INSTANCE: &str = "slipway.instance";
}

/// The bridge network every instance joins, shared by the platforms on an engine (Docker's
/// default address pools run out at about 30 user-defined networks, so not one per
/// service), with inter-container communication disabled.
pub const NETWORK: &str = "slipway";
/// The capabilities an instance keeps (all others are dropped): what ordinary web images
/// need to start as root and drop to a user (nginx-style, gunicorn), bind ports below
/// 1024 and signal their workers. Gone from Docker's default set: `NET_RAW`, `MKNOD`,
/// `SETFCAP`, `SETPCAP`, `SYS_CHROOT`, `AUDIT_WRITE`.
pub const INSTANCE_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETGID",
    "SETUID",
    "NET_BIND_SERVICE",
    "KILL",
];
/// Processes (and threads) an instance may have.
pub const INSTANCE_PIDS_LIMIT: i64 = 1024;
/// Memory a build's containers may use (the engine's build API takes an i32).
pub const BUILD_MEMORY: i32 = 2_000_000_000;
/// CPU time a build may use per `BUILD_CPU_PERIOD` (1.5 CPUs), so the router and the
/// apps keep a share while it runs.
pub const BUILD_CPU_QUOTA: i32 = 150_000;
/// The CFS period of [`BUILD_CPU_QUOTA`], in microseconds.
pub const BUILD_CPU_PERIOD: i32 = 100_000;
/// Relative CPU weight of builds against instances (Docker's default is 1024).
pub const BUILD_CPU_SHARES: i32 = 512;

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine did not answer at all: the caller should tell the user how to start it.
    #[error("no Docker engine answers at {endpoint}: {source}. Start it (`bash scripts/install-engine.sh` installs and starts dockerd) or point DOCKER_HOST at one")]
    Unreachable {
        /// Where we looked.
        endpoint: String,
        /// The underlying error.
        source: bollard::errors::Error,
    },
    /// The engine refused the request (bad image, no such container, ...).
    #[error("{0}")]
    Engine(String),
    /// Talking to the engine failed (the connection, a malformed answer).
    #[error("Docker engine: {0}")]
    Client(#[source] bollard::errors::Error),
}

/// What to run for one instance.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    /// Service name.
    pub service: String,
    /// Revision number.
    pub revision: i64,
    /// Instance id, unique on the platform.
    pub instance: String,
    /// Image id or reference.
    pub image: String,
    /// Environment, `PORT` included.
    pub env: Vec<(String, String)>,
    /// The app's port inside the container.
    pub port: u16,
    /// Docker `NanoCpus`.
    pub nano_cpus: i64,
    /// Docker `Memory` in bytes.
    pub memory_bytes: i64,
}

/// A container the engine reports for this platform.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Container id.
    pub container_id: String,
    /// Service label.
    pub service: String,
    /// Revision label.
    pub revision: i64,
    /// Instance label.
    pub instance: String,
    /// Running (possibly paused).
    pub running: bool,
    /// Paused.
    pub paused: bool,
    /// The loopback address its port is published on, when running.
    pub addr: Option<SocketAddr>,
}

/// A container's end, for explaining failures.
#[derive(Clone, Debug, Default)]
pub struct ExitInfo {
    /// Still running.
    pub running: bool,
    /// Exit code when it stopped.
    pub exit_code: Option<i64>,
    /// Killed by the kernel's OOM killer.
    pub oom_killed: bool,
    /// Engine error text, if any.
    pub error: Option<String>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.running {
            return f.write_str("still running");
        }
        match self.exit_code {
            Some(c) => write!(f, "exited with code {c}")?,
            None => f.write_str("stopped")?,
        }
        if self.oom_killed {
            f.write_str(" (killed: out of memory)")?;
        }
        if let Some(e) = self.error.as_deref().filter(|e| !e.is_empty()) {
            write!(f, " ({})", output::one_line(e, output::ERROR_MAX_CHARS))?;
        }
        Ok(())
    }
}

/// What the engine reports a container of this platform did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The container.
    pub container_id: String,
    /// Its service label.
    pub service: String,
    /// Its instance label.
    pub instance: String,
    /// What happened.
    pub action: EventAction,
}

/// What happened to a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventAction {
    /// It started.
    Start,
    /// Its process ended (it crashed, exited or was stopped), with the exit code if the
    /// engine said.
    Die {
        /// The exit code.
        exit_code: Option<i64>,
    },
}

/// A stream of container events.
pub type EventStream =
    futures_util::stream::BoxStream<'static, Result<ContainerEvent, RuntimeError>>;

/// One line an app wrote, as the engine recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the engine recorded it, ms since the epoch.
    pub at_ms: i64,
    /// stderr (true) or stdout.
    pub stderr: bool,
    /// The line, without its newline, at most [`output::LINE_MAX`] bytes, valid UTF-8
    /// (invalid bytes replaced).
    pub line: String,
}

/// A stream of an app's log lines; it ends when the container stops.
pub type LogStream = futures_util::stream::BoxStream<'static, Result<LogLine, RuntimeError>>;

/// A stream of image references the engine tagged (a `docker tag`, a pull, a build).
pub type TagStream = futures_util::stream::BoxStream<'static, Result<String, RuntimeError>>;

/// Everything the builder and the deployer ask of a container engine. Every method is
/// scoped to one platform id: lists return only that platform's containers, and
/// everything made carries its labels ([`labels`]).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The platform id whose containers this runtime manages.
    fn platform(&self) -> &str;

    /// Builds `context` (a tar stream with a Dockerfile at its root) as `tag`, sending each
    /// output line to `log`. Returns the image id, or the build's error text.
    async fn build(
        &self,
        context: Vec<u8>,
        tag: &str,
        service: &str,
        log: &mut (dyn for<'l> FnMut(&'l str) + Send),
    ) -> Result<String, RuntimeError>;

    /// The id of an image, or None when there is no such image.
    async fn image_id(&self, reference: &str) -> Result<Option<String>, RuntimeError>;

    /// The user an image's containers run as (its `USER`, empty for the default, root),
    /// or None when there is no such image.
    async fn image_user(&self, reference: &str) -> Result<Option<String>, RuntimeError>;

    /// Tags `image` as `repo:tag`.
    async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<(), RuntimeError>;

    /// Removes an image reference; a missing one or one still in use is not an error.
    async fn remove_image(&self, reference: &str) -> Result<(), RuntimeError>;

    /// Creates an instance's container (not started) and returns its id.
    async fn create(&self, cfg: &InstanceConfig) -> Result<String, RuntimeError>;

    /// Starts a created container and returns the loopback address its port `port` is
    /// published on, or None when the container is no longer running once started (it
    /// exited at once: [`Runtime::inspect`] and [`Runtime::logs_tail`] say why).
    async fn start(
        &self,
        container_id: &str,
        port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError>;

    /// Stops a container: SIGTERM, then SIGKILL after `grace_s`. A missing or stopped
    /// container is not an error.
    async fn stop(&self, container_id: &str, grace_s: i32) -> Result<(), RuntimeError>;

    /// Removes a container, killing it if it still runs; a missing one is not an error.
    async fn remove(&self, container_id: &str) -> Result<(), RuntimeError>;

    /// Freezes a container: it keeps its memory and uses no CPU.
    async fn pause(&self, container_id: &str) -> Result<(), RuntimeError>;

    /// Thaws a paused container.
    async fn unpause(&self, container_id: &str) -> Result<(), RuntimeError>;

    /// How a container is doing or how it ended.
    async fn inspect(&self, container_id: &str) -> Result<ExitInfo, RuntimeError>;

    /// Every container of this platform, running or not, by label (restart recovery).
    async fn list(&self) -> Result<Vec<Observed>, RuntimeError>;

    /// The last `lines` lines of a container's output (stdout and stderr), bounded in
    /// time and size; empty when there is none or the engine does not answer.
    async fn logs_tail(&self, container_id: &str, lines: usize) -> String;

    /// A container's output line by line as it is written, from `since_ms` (its first
    /// line when 0), until the container stops.
    async fn follow_logs(
        &self,
        container_id: &str,
        since_ms: i64,
    ) -> Result<LogStream, RuntimeError>;

    /// Starts and deaths of this platform's containers from now on, as the engine sees
    /// them (the seam a watcher of crashes, or a cluster runtime, reads).
    async fn events(&self) -> Result<EventStream, RuntimeError>;

    /// Image references tagged on the engine from now on (the image-tag watcher reads it).
    async fn image_tags(&self) -> Result<TagStream, RuntimeError>;

    /// Pulls `reference` from its registry, with `auth` (`user`, `password`) if given.
    async fn pull(
        &self,
        reference: &str,
        auth: Option<(String, String)>,
    ) -> Result<(), RuntimeError>;

    /// Probes an instance's published address once with its health check: how the
    /// platform reaches an instance is the runtime's business.
    async fn probe(
        &self,
        addr: SocketAddr,
        check: &HealthCheck,
    ) -> Result<(), crate::probe::ProbeError>;
}
