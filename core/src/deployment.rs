//! The deployment state machine. Every transition a deployment can take is listed in
//! [`DeploymentState::can_go_to`]; the deployer asks before it moves and the store records
//! each step, so a deployment's history reads like App Runner's operations log.
//!
//! ```text
//! pending -> building -> starting -> health_checking -> switching_traffic -> draining -> succeeded
//!    \          \            \              \                  \
//!     `----------`------------`--------------`------------------`--> failed -> rolled_back
//! any state before switching_traffic -> superseded (a newer deployment took over)
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a deployment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Recorded, not started.
    Pending,
    /// Building the image from source.
    Building,
    /// Starting the new revision's instances beside the old ones.
    Starting,
    /// Waiting for every new instance to pass its healthy threshold.
    HealthChecking,
    /// Swapping the route table to the new instances.
    SwitchingTraffic,
    /// Old instances finish their in-flight requests, then stop.
    Draining,
    /// The new revision serves all traffic.
    Succeeded,
    /// Something failed; the new instances are being removed.
    Failed,
    /// The failed deployment's instances are gone; the previous revision serves.
    RolledBack,
    /// A newer deployment of the same service replaced this one before it switched traffic.
    Superseded,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a deployment cannot go from {from} to {to}")]
pub struct TransitionError {
    /// The current state.
    pub from: DeploymentState,
    /// The refused next state.
    pub to: DeploymentState,
}

impl DeploymentState {
    /// Every state, in order.
    pub const ALL: [DeploymentState; 10] = [
        Self::Pending,
        Self::Building,
        Self::Starting,
        Self::HealthChecking,
        Self::SwitchingTraffic,
        Self::Draining,
        Self::Succeeded,
        Self::Failed,
        Self::RolledBack,
        Self::Superseded,
    ];

    /// Whether the deployment is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::RolledBack | Self::Superseded)
    }

    /// Whether `next` may follow `self`.
    // The match reads as the transition table; `matches!` would hide its rows.
    #[allow(clippy::match_like_matches_macro)]
    pub fn can_go_to(self, next: DeploymentState) -> bool {
        use DeploymentState::*;
        match (self, next) {
            (Pending, Building | Starting) => true,
            (Building, Starting) => true,
            (Starting, HealthChecking) => true,
            (HealthChecking, SwitchingTraffic) => true,
            (SwitchingTraffic, Draining) => true,
            (Draining, Succeeded) => true,
            (Pending | Building | Starting | HealthChecking | SwitchingTraffic, Failed) => true,
            (Failed, RolledBack) => true,
            (Pending | Building | Starting | HealthChecking, Superseded) => true,
            _ => false,
        }
    }

    /// Moves to `next` or says why not.
    pub fn go_to(self, next: DeploymentState) -> Result<DeploymentState, TransitionError> {
        if self.can_go_to(next) {
            Ok(next)
        } else {
            Err(TransitionError {
                from: self,
                to: next,
            })
        }
    }

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Building => "building",
            Self::Starting => "starting",
            Self::HealthChecking => "health_checking",
            Self::SwitchingTraffic => "switching_traffic",
            Self::Draining => "draining",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Superseded => "superseded",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::DeploymentState::{self, *};

    #[test]
    fn the_happy_path_is_allowed() {
        let mut s = Pending;
        for next in [
            Building,
            Starting,
            HealthChecking,
            SwitchingTraffic,
            Draining,
            Succeeded,
        ] {
            s = s.go_to(next).unwrap();
        }
        assert!(s.is_terminal());
        // A rollback or an image deploy skips the build.
        assert!(Pending.can_go_to(Starting));
    }

    #[test]
    fn failures_roll_back() {
        for s in [
            Pending,
            Building,
            Starting,
            HealthChecking,
            SwitchingTraffic,
        ] {
            assert_eq!(
                s.go_to(Failed).unwrap().go_to(RolledBack).unwrap(),
                RolledBack
            );
        }
        // Once old instances drain, the new revision is serving: no failing back.
        assert!(Draining.go_to(Failed).is_err());
    }

    #[test]
    fn invalid_transitions_are_refused() {
        let bad = [
            (Pending, Succeeded),
            (Pending, SwitchingTraffic),
            (Building, HealthChecking),
            (Starting, SwitchingTraffic),
            (HealthChecking, Draining),
            (SwitchingTraffic, Superseded),
            (Succeeded, Failed),
            (RolledBack, Starting),
            (Superseded, Starting),
            (Failed, Succeeded),
        ];
        for (from, to) in bad {
            let e = from.go_to(to).unwrap_err();
            assert_eq!((e.from, e.to), (from, to));
            assert!(e.to_string().contains(from.as_str()));
        }
    }

    #[test]
    fn terminal_states_go_nowhere() {
        for from in DeploymentState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in DeploymentState::ALL {
                assert!(!from.can_go_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in DeploymentState::ALL {
            assert_eq!(DeploymentState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeploymentState::parse("nope"), None);
    }
}
