//! Slipway's domain model, shared by every other crate.
//!
//! Everything a user can type (service names, sizes, health-check and scaling settings)
//! is validated here, once, so the API, the CLI and the store agree on what is valid and
//! say the same thing when it is not. The deployment state machine lives here too: it is
//! pure data, so it can be tested without a Docker engine.

pub mod deployment;
pub mod domain;
pub mod fault;
pub mod kinds;
pub mod name;
pub mod service;
pub mod size;

pub use deployment::{DeploymentState, TransitionError};
pub use domain::{Domain, DomainError};
pub use kinds::{BuildState, DeploymentKind, DomainState, EventKind, UnknownValue};
pub use name::{preview_name, service_host, NameError, ServiceName};
pub use service::{
    check_repo_url, secret_name, BuildConfig, BuildSettings, HealthCheck, HealthProtocol, IdleMode,
    Network, Previews, Scaling, ServiceSpec, Source, SpecError,
};
pub use size::{Cpu, InstanceSize, Memory, SizeError};

/// The short form of a commit or image id shown to people: without a `sha256:` prefix,
/// at most 12 characters.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

/// Milliseconds since the Unix epoch, the timestamp unit of the store and the API.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_ids() {
        assert_eq!(super::short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(super::short_id("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(super::short_id("abc"), "abc");
    }
}
