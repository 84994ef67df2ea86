//! The small closed vocabularies the store keeps as text: what a build is doing, what
//! an activity-log entry is about, and what started a deployment. Each is an enum with
//! one spelling, used by the store's SQL parameters, the API's JSON and the logs alike;
//! a stored value that is not one of them is an error, not a guess.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stored value that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} in the store")]
pub struct UnknownValue {
    /// Which vocabulary (`deployment state`, `build state`, ...).
    pub what: &'static str,
    /// The value found.
    pub value: String,
}

macro_rules! vocabulary {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $v:ident => $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vm])* $v,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)+];

            /// The value's name as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s,)+
                }
            }

            /// Reads a stored name.
            pub fn parse(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($s => Ok($name::$v),)+
                    _ => Err(UnknownValue { what: $what, value: s.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// Where a build is.
    BuildState, "build state" {
        /// Recorded as soon as git accepted the push; not started.
        Queued => "queued",
        /// The image is being built.
        Running => "running",
        /// Built and recorded as a revision.
        Succeeded => "succeeded",
        /// The build failed (its log says why).
        Failed => "failed",
        /// A newer push of the same branch replaced it before it started.
        Superseded => "superseded",
        /// A restart cut it short; it was queued again.
        Interrupted => "interrupted",
    }
}

impl BuildState {
    /// The states of a build that has not finished: after a restart, build it again.
    pub const UNFINISHED: [BuildState; 2] = [BuildState::Queued, BuildState::Running];
}

vocabulary! {
    /// What an activity-log entry is about.
    EventKind, "event kind" {
        /// A deployment's steps.
        Deployment => "deployment",
        /// A build.
        Build => "build",
        /// The scaler's decisions and the deployer's scaling.
        Scale => "scale",
        /// Health checks of running instances.
        Health => "health",
        /// The service itself: created, updated, adopted after a restart.
        Service => "service",
        /// A bug in the platform (a panic), with the part named.
        Internal => "internal",
        /// Custom domains: claims, verification, certificates.
        Domain => "domain",
    }
}

vocabulary! {
    /// Where a custom domain's verification is.
    DomainState, "domain state" {
        /// Claimed; its records are not (all) there yet.
        Pending => "pending",
        /// Verified: the router serves it.
        Active => "active",
        /// Was active and its records no longer verify: not served until they do.
        Failed => "failed",
    }
}

vocabulary! {
    /// What started a deployment.
    DeploymentKind, "deployment kind" {
        /// A git push (or a build of the branch head).
        Push => "push",
        /// An image deploy.
        Image => "image",
        /// A rollback to a kept revision.
        Rollback => "rollback",
        /// A deployment a restart interrupted, started again.
        Restart => "restart",
        /// The same image with a changed configuration (a secret set or removed).
        Config => "config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_name_and_json() {
        for k in BuildState::ALL {
            assert_eq!(BuildState::parse(k.as_str()), Ok(*k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Ok(*k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for k in DeploymentKind::ALL {
            assert_eq!(DeploymentKind::parse(k.as_str()), Ok(*k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn unknown_values_are_errors_that_name_them() {
        let e = BuildState::parse("exploded").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown build state \"exploded\" in the store"
        );
        assert!(EventKind::parse("").is_err());
        assert!(DeploymentKind::parse("Push").is_err());
    }
}
