//! Slipway's domain model, shared by every other crate.
//!
//! Everything a user can type (service names, sizes, health-check and scaling settings)
//! is validated here, once, so the API, the CLI and the store agree on what is valid and
//! say the same thing when it is not. The deployment state machine lives here too: it is
//! pure data, so it can be tested without a Docker engine.

pub mod deployment;
pub mod name;
pub mod service;
pub mod size;

pub use deployment::{DeploymentState, TransitionError};
pub use name::{NameError, ServiceName};
pub use service::{
    HealthCheck, HealthProtocol, IdleMode, Network, Scaling, ServiceSpec, Source, SpecError,
};
pub use size::{Cpu, InstanceSize, Memory, SizeError};

/// Milliseconds since the Unix epoch, the timestamp unit of the store and the API.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
