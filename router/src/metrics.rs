//! The router's metrics, read from the atomics in [`crate::state`] at each scrape: the
//! router is a [`Collector`] in the platform's one `prometheus-client` registry, so the
//! request path only bumps atomics and nothing mirrors the route table.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::LATENCY_BUCKETS;
use crate::Router;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A label value escaped for the text format (backslash, double quote, newline), which
/// `prometheus-client` writes as given.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, enc: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        for c in self.0.chars() {
            match c {
                '\\' => enc.write_str("\\\\")?,
                '"' => enc.write_str("\\\"")?,
                '\n' => enc.write_str("\\n")?,
                c => enc.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl Collector for Router {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let table = self.table.load_full();
        let services = || table.services.values();
        {
            let mut fam = enc.encode_descriptor(
                "slipway_router_requests",
                "Responses sent, by service and status class.",
                None,
                MetricType::Counter,
            )?;
            for e in services() {
                for (i, class) in CLASSES.iter().enumerate() {
                    let labels = [
                        ("service", Escaped(&e.route.name)),
                        ("class", Escaped(class)),
                    ];
                    ConstCounter::new(e.state.status[i].load(Ordering::Relaxed))
                        .encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "slipway_router_unrouted_requests",
                "Requests answered without a service (400 bad host, 404 unknown host).",
                None,
                MetricType::Counter,
            )?;
            for (i, code) in ["400", "404"].iter().enumerate() {
                ConstCounter::new(self.unrouted[i].load(Ordering::Relaxed))
                    .encode(fam.encode_family(&[("code", Escaped(code))])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "slipway_router_request_duration_seconds",
                "Time from request arrival to the end of the response body (to the 101 for upgrades).",
                None,
                MetricType::Histogram,
            )?;
            for e in services() {
                let h = &e.state.latency;
                // Per bucket, not cumulative: the encoder sums them.
                let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
                    .iter()
                    .enumerate()
                    .map(|(i, le)| (*le, h.buckets[i].load(Ordering::Relaxed)))
                    .collect();
                buckets.push((
                    f64::MAX,
                    h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed),
                ));
                let count = buckets.iter().map(|(_, n)| n).sum();
                let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
                fam.encode_family(&[("service", Escaped(&e.route.name))])?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
            }
        }
        let gauge = |enc: &mut DescriptorEncoder<'_>,
                     name: &str,
                     help: &str,
                     value: &dyn Fn(&crate::table::ServiceEntry) -> usize|
         -> Result<(), std::fmt::Error> {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for e in services() {
                ConstGauge::new(value(e) as i64)
                    .encode(fam.encode_family(&[("service", Escaped(&e.route.name))])?)?;
            }
            Ok(())
        };
        gauge(
            &mut enc,
            "slipway_router_in_flight",
            "Requests being served, by service.",
            &|e| e.state.in_flight.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut enc,
            "slipway_router_queued",
            "Requests waiting for a slot or a cold start, by service.",
            &|e| e.state.queued.load(Ordering::Relaxed),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "slipway_router_instance_in_flight",
                "Requests being served, by ready instance.",
                None,
                MetricType::Gauge,
            )?;
            for e in services() {
                for i in &e.instances {
                    let labels = [
                        ("service", Escaped(&e.route.name)),
                        ("instance", Escaped(&i.id)),
                    ];
                    ConstGauge::new(i.in_flight.load(Ordering::Relaxed) as i64)
                        .encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        let mut fam = enc.encode_descriptor(
            "slipway_router_instance_requests",
            "Requests sent, by ready instance.",
            None,
            MetricType::Counter,
        )?;
        for e in services() {
            for i in &e.instances {
                let labels = [
                    ("service", Escaped(&e.route.name)),
                    ("instance", Escaped(&i.id)),
                ];
                ConstCounter::new(i.requests_total.load(Ordering::Relaxed))
                    .encode(fam.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The router's metrics alone, as text (the platform exposes them with the others from
/// one registry).
pub(crate) fn render(router: &Arc<Router>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(router.clone()));
    encode_text(&registry).unwrap_or_else(|e| {
        tracing::error!("encoding the router's metrics: {e}");
        String::new()
    })
}

/// A registry in the Prometheus text format (version 0.0.4), as the platform exposes it.
///
/// `prometheus-client` writes a histogram bucket's `le` before the family's labels
/// (`_bucket{le="0.5",service="web"}`); Slipway has always written it last
/// (`_bucket{service="web",le="0.5"}`), as the Go client does, and scrapers and tests read
/// those exact lines. Order inside the braces carries no meaning to Prometheus, so this
/// moves `le` to the end of each bucket line of a histogram family and changes nothing
/// else.
pub fn encode_text(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut raw = String::new();
    prometheus_client::encoding::text::encode_registry(&mut raw, registry)?;
    Ok(le_last(&raw))
}

fn le_last(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut histogram: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            histogram = match rest.trim_end().split_once(' ') {
                Some((name, "histogram")) => Some(name),
                _ => None,
            };
            out.push_str(line);
            continue;
        }
        match histogram.and_then(|name| move_le(line, name)) {
            Some(moved) => out.push_str(&moved),
            None => out.push_str(line),
        }
    }
    out
}

/// `name_bucket{le="X",a="b"} n` as `name_bucket{a="b",le="X"} n`; `None` for any
/// other line. An `le` value is a number or `+Inf`, so it holds no quote.
fn move_le(line: &str, family: &str) -> Option<String> {
    let rest = line.strip_prefix(family)?.strip_prefix("_bucket{le=\"")?;
    let (le, rest) = rest.split_once("\",")?;
    if le.contains(['"', '\\']) {
        return None;
    }
    // The family labels run to the `}` that closes the set: the first `}` outside a
    // quoted value (values may hold escaped quotes and braces).
    let mut quoted = false;
    let mut escaped = false;
    let close = rest.char_indices().find_map(|(i, c)| {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => quoted = !quoted,
            (false, _, '}') => return Some(i),
            _ => {}
        }
        None
    })?;
    let (labels, tail) = rest.split_at(close);
    Some(format!("{family}_bucket{{{labels},le=\"{le}\"{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceRoute, RouterConfig, ServiceRoute};

    #[test]
    fn escapes_label_values() {
        let r = Router::new(RouterConfig::default());
        r.upsert_service(ServiceRoute::new(
            "web",
            vec![InstanceRoute {
                id: "a\"b\\c\nd".into(),
                addr: "127.0.0.1:9".parse().unwrap(),
            }],
        ));
        let t = r.metrics_text();
        assert!(t.contains("instance=\"a\\\"b\\\\c\\nd\"}"), "{t}");
    }

    #[test]
    fn le_goes_last_only_in_histogram_buckets() {
        let text = "# TYPE h histogram\n\
                    h_sum{s=\"a\"} 1.0\n\
                    h_bucket{le=\"0.5\",s=\"x}\\\"y\"} 2\n\
                    h_bucket{le=\"+Inf\"} 3\n\
                    # TYPE c counter\n\
                    c_bucket{le=\"1\",s=\"a\"} 4\n";
        assert_eq!(
            le_last(text),
            "# TYPE h histogram\n\
             h_sum{s=\"a\"} 1.0\n\
             h_bucket{s=\"x}\\\"y\",le=\"0.5\"} 2\n\
             h_bucket{le=\"+Inf\"} 3\n\
             # TYPE c counter\n\
             c_bucket{le=\"1\",s=\"a\"} 4\n"
        );
    }

    proptest::proptest! {
        /// Moving `le` keeps every line's label set and value: only the order changes.
        #[test]
        fn le_last_keeps_the_label_set(
            le in "[0-9.]{1,6}|\\+Inf",
            value in "[ -~]{0,12}",
            n in 0u64..1000,
        ) {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
            let text = format!("# TYPE h histogram\nh_bucket{{le=\"{le}\",s=\"{escaped}\"}} {n}\n");
            let want = format!("# TYPE h histogram\nh_bucket{{s=\"{escaped}\",le=\"{le}\"}} {n}\n");
            proptest::prop_assert_eq!(le_last(&text), want);
        }
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
        assert!(
            t.contains(
                "slipway_router_request_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 0"
            ),
            "{t}"
        );
        assert!(t.contains("slipway_router_instance_in_flight{service=\"web\",instance=\"i1\"} 0"));
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
