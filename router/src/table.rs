//! The route table: an immutable snapshot, swapped whole.
//!
//! Requests read the table far more often than the control plane writes it, so a request
//! loads the current snapshot with one `ArcSwap` load (no lock, no copy) and a write builds
//! a complete new snapshot and swaps it in (vector's and omicron's pattern). A request
//! therefore never sees half an update: either the old set of instances or the new one.
//! Snapshots hold `Arc`s to the long-lived state in [`crate::state`], so building one is
//! cheap and the counters carry over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::host::normalize_host;
use crate::state::{InFlightGuard, InstanceState, ServiceState};
use crate::ServiceRoute;

/// One service as of one snapshot.
pub(crate) struct ServiceEntry {
    pub route: ServiceRoute,
    /// `route.max_concurrency` clamped to 1..=200.
    pub max_concurrency: usize,
    pub state: Arc<ServiceState>,
    /// The ready instances, in route order. Draining instances are not here.
    pub instances: Vec<Arc<InstanceState>>,
}

impl ServiceEntry {
    /// Take a slot on the least-loaded instance that is under its limit.
    ///
    /// Ties rotate so equally loaded instances share the work. The scan-then-CAS can lose
    /// a race; it retries a bounded number of times, and a miss only sends the request to
    /// the queue, where the next freed slot wakes it.
    pub fn try_acquire(&self) -> Option<InFlightGuard> {
        let n = self.instances.len();
        let max = self.max_concurrency;
        if n == 1 {
            return self.instances[0].try_take(&self.state, max);
        }
        for _ in 0..=n {
            let start = self
                .state
                .next
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut best: Option<(usize, &Arc<InstanceState>)> = None;
            for i in 0..n {
                let inst = &self.instances[(start.wrapping_add(i)) % n];
                let load = inst.in_flight.load(std::sync::atomic::Ordering::Acquire);
                if load < max && best.is_none_or(|(b, _)| load < b) {
                    best = Some((load, inst));
                }
            }
            let (_, inst) = best?;
            if let Some(g) = inst.try_take(&self.state, max) {
                return Some(g);
            }
        }
        None
    }
}

/// One immutable route-table snapshot.
#[derive(Default)]
pub(crate) struct Table {
    /// Normalised host -> service.
    pub hosts: HashMap<String, Arc<ServiceEntry>>,
    /// Service name -> service, ordered so that host conflicts resolve the same way every
    /// time.
    pub services: BTreeMap<String, Arc<ServiceEntry>>,
    /// Increases with every table the router publishes.
    pub generation: u64,
}

impl Table {
    /// The service for a normalised host: the host itself, else the wildcard one label
    /// up (`a.example.com` by `*.example.com`).
    pub fn lookup(&self, host: &str) -> Option<&Arc<ServiceEntry>> {
        if let Some(e) = self.hosts.get(host) {
            return Some(e);
        }
        let (_, parent) = host.split_once('.')?;
        if parent.is_empty() {
            return None;
        }
        self.hosts.get(&format!("*.{parent}"))
    }

    /// Build the host index. `<name>.<zone>` and `*.<name>.<zone>` always win over a
    /// custom domain; a domain whose service is gone routes nowhere.
    pub fn build(
        services: BTreeMap<String, Arc<ServiceEntry>>,
        zone: &str,
        domains: &BTreeMap<String, String>,
    ) -> Table {
        let mut hosts = HashMap::with_capacity(services.len() * 2 + domains.len());
        let mut insert = |h: &str, entry: &Arc<ServiceEntry>| {
            // A `*.` first label is kept as it is: it is the wildcard's key.
            let (star, rest) = match h.strip_prefix("*.") {
                Some(r) => ("*.", r),
                None => ("", h),
            };
            match normalize_host(rest) {
                Ok(n) => {
                    hosts.insert(format!("{star}{n}"), Arc::clone(entry));
                }
                Err(e) => {
                    tracing::warn!(service = %entry.route.name, host = %h, error = %e, "ignoring invalid host");
                }
            }
        };
        for entry in services.values() {
            for h in &entry.route.hosts {
                insert(h, entry);
            }
        }
        for (host, service) in domains {
            if let Some(entry) = services.get(service) {
                insert(host, entry);
            }
        }
        for (name, entry) in &services {
            let implied = slipway_core::service_host(name, zone);
            insert(&implied, entry);
            insert(&format!("*.{implied}"), entry);
        }
        Table {
            hosts,
            services,
            generation: 0,
        }
    }
}
