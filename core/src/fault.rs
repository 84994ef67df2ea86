//! Fault injection, for the tests of supervision: with
//! `SLIPWAY_FAULTS=worker-panic:web,build-panic:web` in `slipway serve`'s environment, the
//! named points panic once each for the named service, the way a bug would. Unset (as in
//! every real deployment) it costs one lookup in an empty list.

use std::sync::{Mutex, OnceLock};

fn armed() -> &'static Mutex<Vec<String>> {
    static ARMED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let list = std::env::var("SLIPWAY_FAULTS").unwrap_or_default();
        Mutex::new(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    })
}

/// Arms fault `point` for `service` in this process, once (what unit tests use instead of
/// the environment).
pub fn arm(point: &str, service: &str) {
    armed()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(format!("{point}:{service}"));
}

/// Whether fault `point` is armed for `service`; it disarms as it fires.
pub fn fires(point: &str, service: &str) -> bool {
    let mut armed = armed().lock().unwrap_or_else(|p| p.into_inner());
    if armed.is_empty() {
        return false;
    }
    let key = format!("{point}:{service}");
    match armed.iter().position(|a| *a == key) {
        Some(i) => {
            armed.remove(i);
            true
        }
        None => false,
    }
}

/// The text of a caught panic's payload (`panic!` with a literal or a formatted message),
/// for the activity log.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "boom 1");
        let p = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "plain");
    }

    #[test]
    fn unarmed_points_never_fire() {
        assert!(!fires("worker-panic", "no-such-service-armed"));
    }
}
