//! Concurrency-based autoscaling, Knative's KPA in App Runner's shape, plus scale to zero.
//!
//! [`decision`] holds the rules as a pure function, [`window`] the bounded sample history
//! they read, and [`driver`] the loop that samples the router, decides, and writes the
//! desired instance count to the store. The scaler never calls Docker: the deployer makes
//! the count real.

pub mod decision;
pub mod driver;
pub mod window;

pub use decision::{decide, Decision, ScalerState};
pub use driver::{Load, Scaler};
pub use window::Window;
