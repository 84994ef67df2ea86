//! Long-lived per-service and per-instance state: counters, wakeups and connection pools.
//!
//! The route table is replaced wholesale on every change, but what the router knows about
//! an instance must not be: a request admitted under the old table still holds a slot on
//! instance A, and the new table must see that slot taken, or the concurrency limit breaks
//! at every deploy. So the counters live here, behind `Arc`s keyed by instance id (and
//! service name) in the router's registry, and every table snapshot points at the same
//! objects. Slots are exact: an [`InFlightGuard`] is created only by a successful
//! compare-and-swap below the limit, and gives the slot back on drop, which the proxy
//! arranges to happen when the response body ends (pingora's `inflight` guard, applied per
//! instance). Waiting requests are bounded by a [`QueueTicket`], taken the same way.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::pool::Pool;

/// Upper bounds (seconds) of the latency histogram buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A fixed-bucket latency histogram updated with relaxed atomics (no lock on the hot path).
#[derive(Default)]
pub(crate) struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    pub sum_micros: AtomicU64,
    pub count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[idx].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// State of one service that outlives route-table snapshots.
pub(crate) struct ServiceState {
    pub name: String,
    /// Woken (one waiter) when a slot frees, (all waiters) when the service's route changes.
    pub notify: Notify,
    pub in_flight: AtomicUsize,
    pub queued: AtomicUsize,
    pub requests_total: AtomicU64,
    /// Rotating start offset so that equally loaded instances take turns.
    pub next: AtomicUsize,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [AtomicU64; 5],
    pub latency: Histogram,
}

impl ServiceState {
    pub fn new(name: String) -> Self {
        ServiceState {
            name,
            notify: Notify::new(),
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            requests_total: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            status: Default::default(),
            latency: Histogram::default(),
        }
    }

    pub fn record_status(&self, status: http::StatusCode) {
        self.record_status_code(status.as_u16());
    }

    pub fn record_status_code(&self, code: u16) {
        let class = (code / 100).clamp(1, 5) as usize - 1;
        self.status[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// State of one instance that outlives route-table snapshots.
pub(crate) struct InstanceState {
    pub id: String,
    pub service: String,
    pub addr: SocketAddr,
    pub in_flight: AtomicUsize,
    pub requests_total: AtomicU64,
    /// Set when the instance is in no current snapshot: it gets no new requests.
    pub draining: AtomicBool,
    /// Woken when `in_flight` drops to zero.
    pub drained: Notify,
    pub pool: Pool,
}

/// The router's tasks that belong to an instance connection rather than to a client's:
/// the drivers of pooled h2c connections and of upgraded HTTP/1.1 ones. Each is tracked,
/// and all of them stop when the router has finished serving.
#[derive(Clone, Default)]
pub(crate) struct Background {
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

impl Background {
    /// Runs `task` until it ends or the router stops.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
        });
    }

    /// Stops every task and waits (at most `deadline`) for them to go.
    pub async fn stop(&self, deadline: std::time::Duration) -> bool {
        self.stop.cancel();
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
    }
}

impl<F> hyper::rt::Executor<F> for Background
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    /// hyper's own tasks of an instance connection (h2 streams) are the router's too.
    fn execute(&self, fut: F) {
        self.spawn(fut);
    }
}

/// hyper's executor for the tasks it spawns on a client connection (h2 streams): they
/// belong to a [`TaskTracker`](tokio_util::task::TaskTracker) that shutdown waits for,
/// within the drain deadline, instead of being detached.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tracked(pub tokio_util::task::TaskTracker);

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

impl InstanceState {
    pub fn new(
        id: String,
        service: String,
        addr: SocketAddr,
        background: Background,
        pool_max_idle: usize,
    ) -> Self {
        InstanceState {
            id,
            service,
            addr,
            in_flight: AtomicUsize::new(0),
            requests_total: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            drained: Notify::new(),
            pool: Pool::new(addr, background, pool_max_idle),
        }
    }

    /// Take a slot if fewer than `max` are taken.
    pub fn try_take(
        self: &Arc<Self>,
        service: &Arc<ServiceState>,
        max: usize,
    ) -> Option<InFlightGuard> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        service.in_flight.fetch_add(1, Ordering::AcqRel);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        Some(InFlightGuard {
            instance: Arc::clone(self),
            service: Arc::clone(service),
        })
    }
}

/// One taken slot on one instance. Dropping it frees the slot and wakes a waiter.
pub(crate) struct InFlightGuard {
    pub instance: Arc<InstanceState>,
    pub service: Arc<ServiceState>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let before = self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.service.in_flight.fetch_sub(1, Ordering::AcqRel);
        // One slot freed: one waiter may take it. If that waiter gives up before taking it,
        // tokio's Notify hands the wakeup to the next waiter.
        self.service.notify.notify_one();
        if before == 1 {
            self.instance.drained.notify_waiters();
        }
    }
}

/// A place in a service's bounded wait queue (which also counts the cold-start gate).
pub(crate) struct QueueTicket {
    service: Arc<ServiceState>,
}

impl QueueTicket {
    /// Take a place if fewer than `bound` requests wait.
    pub fn try_new(service: &Arc<ServiceState>, bound: usize) -> Option<QueueTicket> {
        service
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .ok()?;
        Some(QueueTicket {
            service: Arc::clone(service),
        })
    }
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.service.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exact() {
        let svc = Arc::new(ServiceState::new("s".into()));
        let inst = Arc::new(InstanceState::new(
            "i".into(),
            "s".into(),
            "127.0.0.1:1".parse().unwrap(),
            Background::default(),
            crate::pool::DEFAULT_MAX_IDLE,
        ));
        let a = inst.try_take(&svc, 2).unwrap();
        let b = inst.try_take(&svc, 2).unwrap();
        assert!(inst.try_take(&svc, 2).is_none());
        assert_eq!(svc.in_flight.load(Ordering::Relaxed), 2);
        drop(a);
        let c = inst.try_take(&svc, 2).unwrap();
        drop((b, c));
        assert_eq!(inst.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(svc.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(inst.requests_total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn queue_is_bounded() {
        let svc = Arc::new(ServiceState::new("s".into()));
        let t = QueueTicket::try_new(&svc, 1).unwrap();
        assert!(QueueTicket::try_new(&svc, 1).is_none());
        drop(t);
        assert!(QueueTicket::try_new(&svc, 1).is_some());
        assert!(QueueTicket::try_new(&svc, 0).is_none());
    }

    #[test]
    fn histogram_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_secs(100));
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.count.load(Ordering::Relaxed), 2);
    }
}
