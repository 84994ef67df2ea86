//! The scaler's loop: once a tick it samples every service's concurrency (in-flight plus
//! waiting requests, read from the router), feeds the pure [`decide`] function, and when
//! the desired instance count changes it writes it to the store with its reason and wakes
//! the deployer. It never calls Docker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use slipway_core::EventKind;
use slipway_store::Store;
use tokio_util::sync::CancellationToken;

use crate::decision::{decide, Decision, ScalerState};
use crate::window::Window;

/// One service's load at a tick.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    /// Requests in flight plus requests waiting (queued or held at the cold-start gate).
    pub concurrency: f64,
    /// Instances taking traffic.
    pub ready: u32,
}

struct Track {
    window: Window,
    state: ScalerState,
    last: Option<Decision>,
}

/// The autoscaler.
pub struct Scaler {
    store: Arc<Store>,
    tick: Duration,
    origin: Instant,
    tracks: Mutex<HashMap<String, Track>>,
}

impl Scaler {
    /// A scaler deciding every `tick` (Knative decides every 2 s; Slipway every 1 s).
    pub fn new(store: Arc<Store>, tick: Duration) -> Arc<Self> {
        Arc::new(Scaler {
            store,
            tick,
            origin: Instant::now(),
            tracks: Mutex::new(HashMap::new()),
        })
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// One decision round; returns the services whose desired count changed.
    pub fn tick(&self, load: &HashMap<String, Load>) -> Vec<String> {
        let now = self.now();
        // The store's snapshot as of its last write: no re-read or re-parse per tick.
        let snapshot = self.store.snapshot();
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        tracks.retain(|name, _| snapshot.service(name).is_some());
        let mut changed = Vec::new();
        for row in snapshot.services() {
            if row.active_revision.is_none() {
                continue;
            }
            let name = row.spec.name.to_string();
            let s = &row.spec.scaling;
            let l = load.get(&name).copied().unwrap_or_default();
            let cap = (s.stable_window_s as f64 / self.tick.as_secs_f64()).ceil() as usize + 2;
            let track = tracks.entry(name.clone()).or_insert_with(|| Track {
                window: Window::new(cap),
                state: ScalerState {
                    last_active: Some(now),
                    ..Default::default()
                },
                last: None,
            });
            track.window.push(now, l.concurrency);
            let (decision, state) = decide(s, &track.window, l.ready, now, &track.state);
            track.state = state;
            let desired = decision.desired as i64;
            if desired != row.desired_instances {
                // The decision with its inputs, so that the log (and a test) can check it.
                let msg = format!(
                    "desired instances {} -> {}: {}{} [inputs: ready {}, panic-window concurrency {}, stable-window concurrency {}, panicking {}]",
                    row.desired_instances,
                    desired,
                    decision.reason,
                    if decision.panicking {
                        " (panic mode)"
                    } else {
                        ""
                    },
                    l.ready,
                    decision.panic_concurrency,
                    decision.stable_concurrency,
                    decision.panicking
                );
                tracing::info!(service = %name, "{msg}");
                // The scaler's one output: a failed write is not a decision made.
                if let Err(e) = self.store.set_desired_instances(&name, desired) {
                    tracing::error!(service = %name, "store: cannot record the desired count: {e}");
                    track.last = Some(decision);
                    continue;
                }
                if let Err(e) = self.store.event(&name, EventKind::Scale, &msg) {
                    tracing::warn!(service = %name, "store: {e}");
                }
                changed.push(name.clone());
            }
            track.last = Some(decision);
        }
        changed
    }

    /// A request reached a service with no instances: want one now, without waiting for
    /// the next tick. Returns true when the desired count changed.
    pub fn demand(&self, service: &str) -> bool {
        let snapshot = self.store.snapshot();
        let Some(row) = snapshot.service(service) else {
            return false;
        };
        if row.desired_instances >= 1 {
            return false;
        }
        let now = self.now();
        if let Some(t) = self
            .tracks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(service)
        {
            t.state.last_active = Some(now);
        }
        // Not written: the request still waits at the router, so the next tick sees its
        // concurrency and decides (and writes) again.
        if let Err(e) = self.store.set_desired_instances(service, 1) {
            tracing::error!(
                service,
                "store: cannot record the cold start's desired count: {e}"
            );
            return false;
        }
        if let Err(e) = self.store.event(
            service,
            EventKind::Scale,
            "desired instances 0 -> 1: a request arrived while at zero (cold start)",
        ) {
            tracing::warn!(service, "store: {e}");
        }
        true
    }

    /// Runs until `shutdown`: each tick reads `load` and calls `on_change` for every
    /// service whose desired count changed.
    pub async fn run(
        self: Arc<Self>,
        load: impl Fn() -> HashMap<String, Load>,
        on_change: impl Fn(&str),
        shutdown: CancellationToken,
    ) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for name in self.tick(&load()) {
                on_change(&name);
            }
        }
    }

    /// A metrics collector of the scaler's last decisions, for the platform's registry.
    pub fn collector(self: &Arc<Self>) -> ScalerMetrics {
        ScalerMetrics(self.clone())
    }
}

/// The scaler's last decision per service: desired count, stable-window concurrency and
/// panic mode, read at each scrape.
pub struct ScalerMetrics(Arc<Scaler>);

impl std::fmt::Debug for ScalerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScalerMetrics")
    }
}

impl prometheus_client::collector::Collector for ScalerMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let last: Vec<(String, Decision)> = {
            let tracks = self.0.tracks.lock().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<_> = tracks
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.last.clone()?)))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        // One gauge family, a sample per service. Service names are validated DNS
        // labels: nothing in them needs escaping.
        fn family<N>(
            enc: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
            name: &str,
            help: &str,
            last: &[(String, Decision)],
            value: impl Fn(&Decision) -> N,
        ) -> Result<(), std::fmt::Error>
        where
            ConstGauge<N>: EncodeMetric,
        {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (n, d) in last {
                ConstGauge::new(value(d)).encode(fam.encode_family(&[("service", n.as_str())])?)?;
            }
            Ok(())
        }
        family(
            &mut enc,
            "slipway_scaler_desired_instances",
            "Instances the scaler wants.",
            &last,
            |d| d.desired,
        )?;
        family(
            &mut enc,
            "slipway_scaler_stable_concurrency",
            "Average concurrency over the stable window.",
            &last,
            |d| d.stable_concurrency,
        )?;
        family(
            &mut enc,
            "slipway_scaler_panic",
            "Whether the service is in panic mode.",
            &last,
            |d| d.panicking as i64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_core::{DeploymentKind, ServiceName, ServiceSpec};

    fn store_with(name: &str, min_size: u32) -> Arc<Store> {
        let store = Arc::new(Store::memory().unwrap());
        let mut spec = ServiceSpec::new(ServiceName::parse(name).unwrap());
        spec.scaling.min_size = min_size;
        store.create_service(&spec).unwrap();
        let (rev, _) = store
            .new_revision(
                name,
                "sha256:a",
                |n| format!("t{n}"),
                None,
                DeploymentKind::Image,
            )
            .unwrap();
        store.set_active_revision(name, rev.number).unwrap();
        store
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_at_zero_wants_one_instance_at_once() {
        let store = store_with("web", 0);
        store.set_desired_instances("web", 0).unwrap();
        let scaler = Scaler::new(store.clone(), Duration::from_secs(1));
        assert!(scaler.demand("web"), "0 -> 1");
        assert_eq!(
            store.snapshot().service("web").unwrap().desired_instances,
            1
        );
        assert!(!scaler.demand("web"), "already wanted");
        assert!(!scaler.demand("nope"), "no such service");
        let events = store.events("web", 0, 10).unwrap();
        assert!(events
            .iter()
            .any(|e| e.message.contains("a request arrived while at zero")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_writes_its_decision_and_the_collector_shows_it() {
        let store = store_with("web", 1);
        let scaler = Scaler::new(store.clone(), Duration::from_secs(1));
        let load = |c: f64| {
            HashMap::from([(
                "web".to_string(),
                Load {
                    concurrency: c,
                    ready: 1,
                },
            )])
        };
        // Far more concurrency than one instance's target: the panic window scales up.
        let mut changed = Vec::new();
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            changed.extend(scaler.tick(&load(500.0)));
        }
        assert_eq!(changed.first().map(String::as_str), Some("web"));
        let desired = store.snapshot().service("web").unwrap().desired_instances;
        assert!(desired > 1, "{desired}");
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(scaler.collector()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        assert!(
            text.contains(&format!(
                "slipway_scaler_desired_instances{{service=\"web\"}} {desired}"
            )),
            "{text}"
        );
    }
}
