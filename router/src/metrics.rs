//! Prometheus text exposition, written by hand.
//!
//! The counters already live in atomics in [`crate::state`]; rendering them is a few
//! `write!`s, which is less code and fewer dependencies than a metrics registry whose
//! types would then have to mirror the route table. Format: text version 0.0.4, one
//! `# HELP`/`# TYPE` pair per family, label values escaped.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::state::LATENCY_BUCKETS;
use crate::Router;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Escape a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn render(router: &Router) -> String {
    let table = router.table.load_full();
    let mut o = String::with_capacity(1024 + table.services.len() * 2048);
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(
        o,
        "# HELP slipway_router_requests_total Responses sent, by service and status class."
    );
    let _ = writeln!(o, "# TYPE slipway_router_requests_total counter");
    for e in table.services.values() {
        let s = esc(&e.route.name);
        for (i, class) in CLASSES.iter().enumerate() {
            let _ = writeln!(
                o,
                "slipway_router_requests_total{{service=\"{s}\",class=\"{class}\"}} {}",
                e.state.status[i].load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(o, "# HELP slipway_router_unrouted_requests_total Requests answered without a service (400 bad host, 404 unknown host).");
    let _ = writeln!(o, "# TYPE slipway_router_unrouted_requests_total counter");
    for (i, code) in ["400", "404"].iter().enumerate() {
        let _ = writeln!(
            o,
            "slipway_router_unrouted_requests_total{{code=\"{code}\"}} {}",
            router.unrouted[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(o, "# HELP slipway_router_request_duration_seconds Time from request arrival to the end of the response body (to the 101 for upgrades).");
    let _ = writeln!(
        o,
        "# TYPE slipway_router_request_duration_seconds histogram"
    );
    for e in table.services.values() {
        let s = esc(&e.route.name);
        let h = &e.state.latency;
        let mut cum = 0u64;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cum += h.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "slipway_router_request_duration_seconds_bucket{{service=\"{s}\",le=\"{le}\"}} {cum}"
            );
        }
        cum += h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "slipway_router_request_duration_seconds_bucket{{service=\"{s}\",le=\"+Inf\"}} {cum}"
        );
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            o,
            "slipway_router_request_duration_seconds_sum{{service=\"{s}\"}} {sum}"
        );
        let _ = writeln!(
            o,
            "slipway_router_request_duration_seconds_count{{service=\"{s}\"}} {cum}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP slipway_router_in_flight Requests being served, by service."
    );
    let _ = writeln!(o, "# TYPE slipway_router_in_flight gauge");
    for e in table.services.values() {
        let _ = writeln!(
            o,
            "slipway_router_in_flight{{service=\"{}\"}} {}",
            esc(&e.route.name),
            e.state.in_flight.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        o,
        "# HELP slipway_router_queued Requests waiting for a slot or a cold start, by service."
    );
    let _ = writeln!(o, "# TYPE slipway_router_queued gauge");
    for e in table.services.values() {
        let _ = writeln!(
            o,
            "slipway_router_queued{{service=\"{}\"}} {}",
            esc(&e.route.name),
            e.state.queued.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        o,
        "# HELP slipway_router_instance_in_flight Requests being served, by ready instance."
    );
    let _ = writeln!(o, "# TYPE slipway_router_instance_in_flight gauge");
    for e in table.services.values() {
        let s = esc(&e.route.name);
        for i in &e.instances {
            let _ = writeln!(
                o,
                "slipway_router_instance_in_flight{{service=\"{s}\",instance=\"{}\"}} {}",
                esc(&i.id),
                i.in_flight.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP slipway_router_instance_requests_total Requests sent, by ready instance."
    );
    let _ = writeln!(o, "# TYPE slipway_router_instance_requests_total counter");
    for e in table.services.values() {
        let s = esc(&e.route.name);
        for i in &e.instances {
            let _ = writeln!(
                o,
                "slipway_router_instance_requests_total{{service=\"{s}\",instance=\"{}\"}} {}",
                esc(&i.id),
                i.requests_total.load(Ordering::Relaxed)
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceRoute, RouterConfig, ServiceRoute};

    #[test]
    fn escapes_label_values() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_families() {
        let r = Router::new(RouterConfig::default());
        r.upsert_service(ServiceRoute::new(
            "web",
            vec![InstanceRoute {
                id: "i1".into(),
                addr: "127.0.0.1:9".parse().unwrap(),
            }],
        ));
        let t = r.metrics_text();
        assert!(t.contains("slipway_router_requests_total{service=\"web\",class=\"2xx\"} 0"));
        assert!(t.contains(
            "slipway_router_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 0"
        ));
        assert!(t.contains("slipway_router_instance_in_flight{service=\"web\",instance=\"i1\"} 0"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
