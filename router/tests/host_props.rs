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

/// Active domains route to their service: exact names, and one label under a wildcard.
/// A service's own names win, a domain of a service that is gone routes nowhere, and
/// removing the domains stops them at once.
#[test]
fn custom_domains_and_wildcards_route() {
    let router = Router::new(RouterConfig::default());
    router.upsert_service(ServiceRoute::new("web", vec![]));
    router.upsert_service(ServiceRoute::new("shop", vec![]));
    assert_eq!(router.route_for_host("www.example.com"), None);
    router.set_domains(
        [
            ("www.example.com".to_string(), "web".to_string()),
            ("*.apps.example.org".to_string(), "shop".to_string()),
            ("shop.slipway.localhost".to_string(), "web".to_string()),
            ("old.example.com".to_string(), "gone".to_string()),
        ]
        .into(),
    );
    let at = |h: &str| router.route_for_host(h);
    assert_eq!(at("WWW.example.com:443").as_deref(), Some("web"));
    assert_eq!(at("a.apps.example.org").as_deref(), Some("shop"));
    assert_eq!(at("apps.example.org"), None);
    assert_eq!(at("a.b.apps.example.org"), None);
    assert_eq!(
        at("shop.slipway.localhost").as_deref(),
        Some("shop"),
        "the service's own name wins"
    );
    assert_eq!(
        at("x.web.slipway.localhost").as_deref(),
        Some("web"),
        "*.<service>.<zone>"
    );
    assert_eq!(at("old.example.com"), None);
    router.set_domains(Default::default());
    assert_eq!(at("www.example.com"), None);
}
