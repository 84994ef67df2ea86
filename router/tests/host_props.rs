//! Property tests: host parsing never panics, normalising is idempotent and ignores case,
//! port and trailing dot; route lookup agrees with normalisation.

use proptest::prelude::*;
use slipway_router::host::normalize_host;
use slipway_router::{Router, RouterConfig, ServiceRoute};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9_-]{0,10}"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|l| l.join("."))
}

/// Randomly upper-case some ASCII letters.
fn recase(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn never_panics(s in any::<String>()) {
        let _ = normalize_host(&s);
    }

    #[test]
    fn never_panics_on_hostish_bytes(s in "[a-zA-Z0-9.:\\[\\]@_-]{0,40}") {
        let _ = normalize_host(&s);
    }

    #[test]
    fn idempotent(s in "[a-zA-Z0-9.:\\[\\]_-]{0,40}") {
        if let Ok(once) = normalize_host(&s) {
            let twice = normalize_host(&once).expect("normal form parses");
            prop_assert_eq!(twice.as_ref(), once.as_ref());
        }
    }

    #[test]
    fn case_port_and_dot_insensitive(n in name(), mask in any::<u64>(), port in proptest::option::of(any::<u16>()), dot in any::<bool>()) {
        let mut spelled = recase(&n, mask);
        if dot { spelled.push('.'); }
        if let Some(p) = port { spelled.push_str(&format!(":{p}")); }
        let got = normalize_host(&spelled).expect("valid spelling");
        prop_assert_eq!(got.as_ref(), n.as_str());
    }

    #[test]
    fn lookup_agrees_with_normalisation(names in prop::collection::btree_set("[a-z][a-z0-9-]{0,8}", 1..8), pick in any::<prop::sample::Index>(), mask in any::<u64>()) {
        let names: Vec<String> = names.into_iter().collect();
        let router = Router::new(RouterConfig::default());
        for n in &names {
            router.upsert_service(ServiceRoute::new(n.clone(), vec![]));
        }
        let want = pick.get(&names);
        let host = recase(&format!("{want}.slipway.localhost.:1234"), mask);
        let found = router.route_for_host(&host);
        prop_assert_eq!(found.as_deref(), Some(want.as_str()));
        prop_assert_eq!(router.route_for_host("not-there.slipway.localhost"), None);
    }
}
