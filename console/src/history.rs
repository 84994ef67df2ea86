//! The metrics history behind the console's charts: every 10 s (and every minute) the
//! router's per-service counters are diffed with the previous sample and kept in the
//! store as one point: requests, 2xx/4xx/5xx, p50/p99 latency and ready instances.
//! 10 s points are kept for 24 h, 1 min points for 7 days.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use slipway_router::{Counters, Router, LATENCY_BOUNDS_S};
use slipway_store::{MetricPoint, Store};

/// The latency (ms) under which a fraction `q` of the requests in `buckets` (counts per
/// bucket, `+Inf` last) fell, interpolated linearly inside its bucket; None without
/// requests. A quantile in the `+Inf` bucket is reported as the last finite bound.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, n) in buckets.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_S[(i - 1).min(LATENCY_BOUNDS_S.len() - 1)]
            };
            let Some(upper) = LATENCY_BOUNDS_S.get(i).copied() else {
                return Some(LATENCY_BOUNDS_S[LATENCY_BOUNDS_S.len() - 1] * 1000.0);
            };
            let within = ((rank - seen as f64) / *n as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) * 1000.0);
        }
        seen += n;
    }
    Some(LATENCY_BOUNDS_S[LATENCY_BOUNDS_S.len() - 1] * 1000.0)
}

/// The point for what happened between two samples of a service's counters (a counter
/// that went backwards, as after the service was re-created, counts from zero).
pub fn point(before: Option<&Counters>, now: &Counters, at_ms: i64, instances: i64) -> MetricPoint {
    let zero = Counters::default();
    let before = before.unwrap_or(&zero);
    let d = |a: u64, b: u64| if a >= b { a - b } else { a };
    let status: Vec<i64> = (0..5)
        .map(|i| d(now.status[i], before.status[i]) as i64)
        .collect();
    let latency: Vec<u64> = now
        .latency
        .iter()
        .enumerate()
        .map(|(i, n)| d(*n, before.latency.get(i).copied().unwrap_or(0)))
        .collect();
    MetricPoint {
        at_ms,
        requests: status.iter().sum(),
        s2xx: status[1],
        s4xx: status[3],
        s5xx: status[4],
        p50_ms: quantile(&latency, 0.5),
        p99_ms: quantile(&latency, 0.99),
        instances,
    }
}

/// Samples the router into the store every `every_s` seconds (points of that resolution;
/// 10 in production) and every minute, until `shutdown`. `ready` gives each service's
/// ready instance count.
pub async fn run(
    store: Arc<Store>,
    router: Arc<Router>,
    every_s: u64,
    ready: impl Fn() -> HashMap<String, i64> + Send + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every_s = every_s.clamp(1, 60);
    let per_minute = 60 / every_s;
    let mut last: [HashMap<String, Counters>; 2] = [HashMap::new(), HashMap::new()];
    let mut tick = tokio::time::interval(Duration::from_secs(every_s));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = slipway_core::now_unix_ms();
        let counters = router.counters();
        let instances = ready();
        // The first tick only sets the baseline.
        for (slot, res_s) in [(0usize, every_s as i64), (1, 60)] {
            // Sampling every 60 s, slot 0 is the minute series already.
            if slot == 1 && (every_s == 60 || !n.is_multiple_of(per_minute)) {
                continue;
            }
            if n > 0 {
                let points: Vec<(String, MetricPoint)> = counters
                    .iter()
                    .map(|(name, c)| {
                        let inst = instances.get(name).copied().unwrap_or(0);
                        (name.clone(), point(last[slot].get(name), c, now, inst))
                    })
                    .collect();
                if let Err(e) = store.record_metrics(res_s, &points) {
                    tracing::warn!("store: metrics history: {e}");
                }
            }
            last[slot] = counters.iter().cloned().collect();
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sampling at 10 s, the 10 s series gets every tick after the first and the minute
    /// series one point a minute; sampling at 60 s, the minute series gets one point per
    /// tick, not two.
    #[tokio::test(start_paused = true)]
    async fn each_series_gets_one_point_per_period() {
        for (every_s, ticks, want_10, want_60) in [(10u64, 13u64, 12usize, 2usize), (60, 4, 0, 3)] {
            let store = Arc::new(Store::memory().unwrap());
            store
                .create_service(&slipway_core::ServiceSpec::new(
                    slipway_core::ServiceName::parse("web").unwrap(),
                ))
                .unwrap();
            let router = Router::new(slipway_router::RouterConfig::default());
            router.upsert_service(slipway_router::ServiceRoute::new("web", vec![]));
            let shutdown = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(run(
                store.clone(),
                router,
                every_s,
                HashMap::new,
                shutdown.clone(),
            ));
            // The interval's first tick is at once; `ticks` ticks in all, then a half period.
            tokio::time::sleep(Duration::from_secs(every_s * (ticks - 1) + every_s / 2)).await;
            shutdown.cancel();
            task.await.unwrap();
            let since = 0;
            assert_eq!(
                store.metrics("web", 10, since).unwrap().len(),
                want_10,
                "every {every_s} s, 10 s series"
            );
            assert_eq!(
                store.metrics("web", 60, since).unwrap().len(),
                want_60,
                "every {every_s} s, minute series"
            );
        }
    }

    #[test]
    fn quantiles_from_buckets() {
        assert_eq!(quantile(&[0; 15], 0.5), None);
        // 100 requests all in the first bucket (<= 1 ms): the median is half of it.
        let mut b = vec![0u64; 15];
        b[0] = 100;
        assert!((quantile(&b, 0.5).unwrap() - 0.5).abs() < 1e-9);
        // 99 fast, 1 in the 250-500 ms bucket: p99 is fast, p100 is slow.
        b[0] = 99;
        b[8] = 1;
        assert!(quantile(&b, 0.99).unwrap() <= 1.0);
        assert!(quantile(&b, 1.0).unwrap() > 250.0);
        let mut inf = vec![0u64; 15];
        inf[14] = 3;
        assert_eq!(quantile(&inf, 0.5), Some(30_000.0));
    }

    #[test]
    fn points_are_differences() {
        let before = Counters {
            status: [0, 10, 0, 2, 1],
            latency: vec![13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        let mut now = before.clone();
        now.status = [0, 15, 1, 2, 3];
        now.latency[0] += 8;
        let p = point(Some(&before), &now, 5, 2);
        assert_eq!(
            (p.requests, p.s2xx, p.s4xx, p.s5xx, p.instances),
            (8, 5, 0, 2, 2)
        );
        assert!(p.p50_ms.is_some());
        let first = point(None, &before, 5, 1);
        assert_eq!(first.requests, 13);
    }

    proptest! {
        #[test]
        fn quantiles_are_monotone_and_bounded(b in proptest::collection::vec(0u64..1000, 15), q1 in 0.0f64..1.0, q2 in 0.0f64..1.0) {
            let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
            match (quantile(&b, lo), quantile(&b, hi)) {
                (Some(a), Some(c)) => {
                    prop_assert!(a <= c + 1e-9);
                    prop_assert!((0.0..=30_000.0).contains(&c));
                }
                (None, None) => prop_assert!(b.iter().all(|n| *n == 0)),
                _ => prop_assert!(false),
            }
        }
    }
}
