//! The sample window: a bounded ring of `(time, concurrency)` observations for one service.
//!
//! The scaler loop pushes one sample per observation (typically one a second: the number of
//! requests in flight at the router for that service, queued ones included) and the
//! decision function reads averages and peaks over the last stable and panic windows.
//!
//! Times are [`Duration`]s since an arbitrary monotonic origin chosen by the caller (for
//! example the `Instant` the loop started); only differences matter. Samples are expected
//! in time order. An out-of-order sample is kept, and every query filters by time, so
//! queries stay correct; only eviction goes by insertion order.
//!
//! The ring is bounded: when full, pushing drops the oldest sample. Its capacity should
//! cover the longest window that is queried at the sampling rate (for one sample a second
//! and a 60 s stable window, at least 61 samples), otherwise averages silently cover a
//! shorter span.
//!
//! Concurrency that is NaN or negative is stored as 0, so one bad reading cannot poison
//! every average.

use std::collections::VecDeque;
use std::time::Duration;

/// A bounded ring of (time, concurrency) samples for one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    samples: VecDeque<(Duration, f64)>,
    capacity: usize,
}

impl Window {
    /// An empty window holding at most `capacity` samples (at least one); when full, the
    /// oldest sample is dropped.
    pub fn new(capacity: usize) -> Window {
        let capacity = capacity.max(1);
        Window {
            samples: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        }
    }

    /// Records `concurrency` requests in flight at time `at` (monotonic time since an
    /// arbitrary origin). NaN and negative values are stored as 0.
    pub fn push(&mut self, at: Duration, concurrency: f64) {
        let concurrency = if concurrency.is_nan() || concurrency < 0.0 {
            0.0
        } else {
            concurrency
        };
        while self.samples.len() >= self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((at, concurrency));
    }

    /// The mean of the samples taken at or after `since`, or `None` if there are none.
    pub fn average_since(&self, since: Duration) -> Option<f64> {
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= since)
            .fold((0.0, 0usize), |(sum, n), (_, c)| (sum + c, n + 1));
        (n > 0).then(|| sum / n as f64)
    }

    /// The largest sample taken at or after `since`, or `None` if there are none.
    pub fn max_since(&self, since: Duration) -> Option<f64> {
        self.samples
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, c)| *c)
            .reduce(f64::max)
    }

    /// The time of the newest sample with concurrency above 0, or `None` if every sample
    /// is 0 (or there are none).
    pub fn last_nonzero(&self) -> Option<Duration> {
        self.samples
            .iter()
            .filter(|(_, c)| *c > 0.0)
            .map(|(at, _)| *at)
            .max()
    }

    /// The newest sample (by time), or `None` if the window is empty.
    pub fn latest(&self) -> Option<(Duration, f64)> {
        self.samples
            .iter()
            .copied()
            .reduce(|a, b| if b.0 >= a.0 { b } else { a })
    }

    /// The samples held, oldest pushed first.
    pub fn samples(&self) -> impl Iterator<Item = (Duration, f64)> + '_ {
        self.samples.iter().copied()
    }

    /// How many samples the window holds.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the window holds no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The most samples the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn empty_window_has_no_statistics() {
        let w = Window::new(10);
        assert_eq!(w.average_since(s(0)), None);
        assert_eq!(w.max_since(s(0)), None);
        assert_eq!(w.last_nonzero(), None);
        assert_eq!(w.latest(), None);
        assert!(w.is_empty());
        assert_eq!(w.samples().count(), 0);
    }

    #[test]
    fn averages_and_peaks_cover_samples_at_or_after_since() {
        let mut w = Window::new(10);
        for (t, c) in [(1, 10.0), (2, 20.0), (3, 30.0), (4, 0.0)] {
            w.push(s(t), c);
        }
        assert_eq!(w.average_since(s(0)), Some(15.0));
        assert_eq!(w.average_since(s(2)), Some(50.0 / 3.0));
        assert_eq!(w.average_since(s(4)), Some(0.0));
        assert_eq!(w.average_since(s(5)), None);
        assert_eq!(w.max_since(s(0)), Some(30.0));
        assert_eq!(w.max_since(s(4)), Some(0.0));
        assert_eq!(w.last_nonzero(), Some(s(3)));
        assert_eq!(w.latest(), Some((s(4), 0.0)));
    }

    #[test]
    fn oldest_samples_are_dropped_when_full() {
        let mut w = Window::new(3);
        for t in 0..5 {
            w.push(s(t), t as f64);
        }
        assert_eq!(w.len(), 3);
        assert_eq!(
            w.samples().collect::<Vec<_>>(),
            vec![(s(2), 2.0), (s(3), 3.0), (s(4), 4.0)]
        );
        assert_eq!(w.average_since(s(0)), Some(3.0));
    }

    #[test]
    fn zero_capacity_keeps_one_sample() {
        let mut w = Window::new(0);
        w.push(s(1), 1.0);
        w.push(s(2), 2.0);
        assert_eq!(w.capacity(), 1);
        assert_eq!(w.samples().collect::<Vec<_>>(), vec![(s(2), 2.0)]);
    }

    #[test]
    fn bad_readings_count_as_zero() {
        let mut w = Window::new(4);
        w.push(s(1), f64::NAN);
        w.push(s(2), -3.0);
        assert_eq!(w.average_since(s(0)), Some(0.0));
        assert_eq!(w.last_nonzero(), None);
    }

    #[test]
    fn out_of_order_samples_are_filtered_by_time() {
        let mut w = Window::new(4);
        w.push(s(5), 1.0);
        w.push(s(3), 3.0);
        assert_eq!(w.last_nonzero(), Some(s(5)));
        assert_eq!(w.latest(), Some((s(5), 1.0)));
        assert_eq!(w.average_since(s(4)), Some(1.0));
    }
}
