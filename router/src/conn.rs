//! One clock per HTTP/1.1 client connection, instead of timers per request.
//!
//! Two deadlines apply to a client connection: the slowloris guard (a request head must
//! arrive within `header_read_timeout`) and each request's `request_timeout` (the
//! instance's response head must arrive in time). Armed per request, as hyper's
//! `header_read_timeout` and a `tokio::time::timeout` around the send do, they cost a
//! boxed sleep and a timer-wheel insert and removal for every request, which showed in
//! the profile. Here the connection's task owns one `Sleep` and request paths only write
//! atomics:
//!
//! - Slowloris: the sleep fires every `header_read_timeout`; if no request began since
//!   the last check and none is in progress (its response not finished), the connection is
//!   closed. A client that never completes a head is cut after one period; a kept-alive
//!   connection that falls silent after a response, after one to two periods (hyper's own
//!   guard: exactly one).
//! - Request timeout: the request writes its deadline before waiting for the response
//!   head; the sleep is moved earlier when that deadline comes first (only when
//!   `request_timeout` is shorter than `header_read_timeout`), and on expiry the waiting
//!   request is woken and answers 504.
//!
//! HTTP/1.1 serves one request at a time per connection, so one deadline slot suffices.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// No request deadline set.
const NONE: u64 = u64::MAX;

pub(crate) struct ConnClock {
    epoch: Instant,
    /// Requests begun on the connection.
    begun: AtomicU64,
    /// Requests whose response has not finished (see [`Active`]).
    active: AtomicUsize,
    /// Deadline of the response head being waited for, in µs since `epoch`, or [`NONE`].
    deadline: AtomicU64,
    expired: AtomicBool,
    waker: AtomicWaker,
}

impl ConnClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnClock {
            epoch: Instant::now(),
            begun: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            deadline: AtomicU64::new(NONE),
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        })
    }

    /// A request began; it counts as in progress until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(self))
    }

    fn request_deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            NONE => None,
            us => Some(self.epoch + Duration::from_micros(us)),
        }
    }

    /// Wait for `fut` until `timeout` after `start`; `Err(())` when the time is up.
    pub async fn within<F: Future>(
        &self,
        start: std::time::Instant,
        timeout: Duration,
        fut: F,
    ) -> Result<F::Output, ()> {
        let since = Instant::from_std(start).saturating_duration_since(self.epoch);
        let us = u64::try_from((since + timeout).as_micros()).unwrap_or(NONE - 1);
        self.expired.store(false, Ordering::Release);
        self.deadline.store(us.min(NONE - 1), Ordering::Release);
        let _clear = ClearDeadline(self);
        tokio::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
            self.waker.register(cx.waker());
            if self.expired.load(Ordering::Acquire) {
                return Poll::Ready(Err(()));
            }
            Poll::Pending
        })
        .await
    }
}

struct ClearDeadline<'a>(&'a ConnClock);

impl Drop for ClearDeadline<'_> {
    fn drop(&mut self) {
        self.0.deadline.store(NONE, Ordering::Release);
    }
}

/// A request in progress on the connection; dropped with its response body.
pub(crate) struct Active(Arc<ConnClock>);

impl Active {
    pub fn clock(&self) -> &ConnClock {
        &self.0
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's side of the clock: polled by the connection's task after each poll
/// of the connection. Ready when the connection should be closed as idle (slowloris).
pub(crate) struct Watchdog {
    clock: Arc<ConnClock>,
    period: Duration,
    sleep: Pin<Box<Sleep>>,
    next_check: Instant,
    seen: u64,
    /// The sleep has been polled (its waker registered) since its last reset and had not
    /// fired: until it fires or moves, polling it again is wasted work.
    armed: bool,
}

impl Watchdog {
    pub fn new(clock: Arc<ConnClock>, period: Duration) -> Self {
        let next_check = clock.epoch + period;
        Watchdog {
            clock,
            period,
            sleep: Box::pin(tokio::time::sleep_until(next_check)),
            next_check,
            seen: 0,
            armed: false,
        }
    }

    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Bounded: each turn either returns or moves `next_check` a period ahead.
        loop {
            let target = match self.clock.request_deadline() {
                Some(d) if d < self.next_check => d,
                _ => self.next_check,
            };
            if self.sleep.deadline() != target {
                self.sleep.as_mut().reset(target);
                self.armed = false;
            }
            // The connection's task polls this after every poll of its connection, so
            // several times per request; the waker is always that task's, so once it is
            // registered only a reset or the timer firing needs a real poll.
            if self.armed && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            if self.sleep.as_mut().poll(cx).is_pending() {
                self.armed = true;
                return Poll::Pending;
            }
            self.armed = false;
            let now = Instant::now();
            if self.clock.request_deadline().is_some_and(|d| d <= now) {
                self.clock.expired.store(true, Ordering::Release);
                self.clock.deadline.store(NONE, Ordering::Release);
                self.clock.waker.wake();
            }
            if now >= self.next_check {
                let begun = self.clock.begun.load(Ordering::Relaxed);
                let busy = self.clock.active.load(Ordering::Relaxed) > 0;
                if begun == self.seen && !busy {
                    return Poll::Ready(());
                }
                // A request in progress may end just after this check: the connection then
                // gets the whole next period too, as if a request had begun in it.
                self.seen = if busy { begun.wrapping_sub(1) } else { begun };
                self.next_check = now + self.period;
            }
        }
    }
}
