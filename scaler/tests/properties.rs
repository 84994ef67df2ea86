//! Property tests of the decision function: bounds, monotonicity in load, no scale-down
//! while panicking, one removal per tick, scale to zero only after the grace period, and
//! no flapping under steady load.

use std::time::Duration;

use proptest::prelude::*;
use slipway_core::{IdleMode, Scaling};
use slipway_scaler::decision::{decide, Decision, ScalerState};
use slipway_scaler::window::Window;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// Valid settings (the ranges `ServiceSpec::validate` accepts), with the stable window and
/// grace period capped so simulations stay fast.
fn settings(max_stable: u32, max_grace: u32) -> impl Strategy<Value = Scaling> {
    (
        1u32..=200,
        1u32..=25,
        1u32..=100,
        6u32..=max_stable,
        110u32..=1000,
        0u32..=max_grace,
    )
        .prop_flat_map(|(mc, max, pct, stable, thr, grace)| {
            (0u32..=max, 1u32..=stable).prop_map(move |(min, panic)| Scaling {
                max_concurrency: mc,
                min_size: min,
                max_size: max,
                target_utilization_pct: pct,
                stable_window_s: stable,
                panic_window_s: panic,
                panic_threshold_pct: thr,
                scale_to_zero_grace_s: grace,
                idle_mode: IdleMode::Stop,
            })
        })
}

/// Some concurrency: often 0, sometimes small, sometimes huge.
fn load() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 0.0..10.0f64, 0.0..8000.0f64]
}

const NOW: u64 = 10_000;

/// Samples at `NOW - ago` for arbitrary `ago`s.
fn window() -> impl Strategy<Value = Window> {
    prop::collection::vec((0u64..400, load()), 0..120).prop_map(|samples| {
        let mut w = Window::new(1000);
        let mut samples = samples;
        samples.sort_by_key(|(ago, _)| std::cmp::Reverse(*ago));
        for (ago, c) in samples {
            w.push(s(NOW - ago), c);
        }
        w
    })
}

fn state() -> impl Strategy<Value = ScalerState> {
    let ago = || prop::option::of(0u64..4000);
    (ago(), ago(), ago()).prop_map(|(p, a, d)| ScalerState {
        panic_since: p.map(|x| s(NOW - x)),
        last_active: a.map(|x| s(NOW - x)),
        last_scale_down: d.map(|x| s(NOW - x)),
    })
}

/// Whether `reason` mentions `n` as a whole number.
fn mentions(reason: &str, n: u32) -> bool {
    reason
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .any(|word| word == n.to_string())
}

/// Ticks once a second from 0 to `ticks`, pushing `load(t)` and feeding each decision back
/// as `current`.
fn simulate(settings: &Scaling, start: u32, ticks: u64, load: impl Fn(u64) -> f64) -> Vec<u32> {
    let mut w = Window::new(settings.stable_window_s as usize + 2);
    let mut state = ScalerState::default();
    let mut current = start;
    let mut out = Vec::with_capacity(ticks as usize + 1);
    for t in 0..=ticks {
        w.push(s(t), load(t));
        let (d, next) = decide(settings, &w, current, s(t), &state);
        current = d.desired;
        state = next;
        out.push(current);
    }
    out
}

/// Ticks at which the count changed (relative to the previous tick, or to `start`).
fn changes(start: u32, desired: &[u32]) -> Vec<usize> {
    let mut prev = start;
    let mut out = Vec::new();
    for (t, &d) in desired.iter().enumerate() {
        if d != prev {
            out.push(t);
        }
        prev = d;
    }
    out
}

/// Whether the sequence never reverses direction.
fn monotone(start: u32, desired: &[u32]) -> bool {
    let all = std::iter::once(start).chain(desired.iter().copied());
    let steps: Vec<i64> = all
        .clone()
        .zip(all.skip(1))
        .map(|(a, b)| i64::from(b) - i64::from(a))
        .filter(|d| *d != 0)
        .collect();
    steps.iter().all(|d| *d > 0) || steps.iter().all(|d| *d < 0)
}

fn one_tick(
    settings: &Scaling,
    w: &Window,
    current: u32,
    state: &ScalerState,
) -> (Decision, ScalerState) {
    decide(settings, w, current, s(NOW), state)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_below_min_nor_above_max(
        settings in settings(3600, 3600), w in window(), current in 0u32..40, state in state(),
    ) {
        let (d, _) = one_tick(&settings, &w, current, &state);
        prop_assert!(d.desired >= settings.min_size, "{d:?}");
        prop_assert!(d.desired <= settings.max_size, "{d:?}");
    }

    #[test]
    fn no_scale_down_while_panicking(
        settings in settings(3600, 3600), w in window(), current in 0u32..40, state in state(),
    ) {
        let (d, next) = one_tick(&settings, &w, current, &state);
        prop_assert_eq!(d.panicking, next.panic_since.is_some());
        if d.panicking {
            // Only lowering max_size below the current count can take instances away.
            prop_assert!(d.desired >= current.min(settings.max_size), "{d:?}");
        }
    }

    #[test]
    fn at_most_one_removal_per_tick(
        settings in settings(3600, 3600), w in window(), current in 0u32..40, state in state(),
    ) {
        let (d, next) = one_tick(&settings, &w, current, &state);
        prop_assert!(
            d.desired + 1 >= current.min(settings.max_size + 1),
            "{current} -> {d:?}"
        );
        // A second call in the same tick removes nothing more.
        if d.desired < current && current <= settings.max_size {
            let (again, _) = one_tick(&settings, &w, d.desired, &next);
            prop_assert!(again.desired >= d.desired, "{d:?} then {again:?}");
        }
    }

    #[test]
    fn reason_explains_the_number(
        settings in settings(3600, 3600), w in window(), current in 0u32..40, state in state(),
    ) {
        let (d, _) = one_tick(&settings, &w, current, &state);
        prop_assert!(mentions(&d.reason, d.desired), "{d:?}");
    }

    #[test]
    fn zero_only_after_the_grace_period(
        settings in settings(3600, 3600), w in window(), current in 1u32..40, state in state(),
    ) {
        let (d, _) = one_tick(&settings, &w, current, &state);
        if d.desired == 0 {
            prop_assert_eq!(settings.min_size, 0);
            let grace = s(settings.scale_to_zero_grace_s.into());
            let since = s(NOW) - grace;
            prop_assert!(
                w.samples().all(|(at, c)| at < since || c == 0.0),
                "load within the grace period: {d:?}"
            );
            prop_assert!(state.last_active.is_none_or(|a| a < since), "{d:?}");
            prop_assert!(
                state.last_active.is_some() || w.last_nonzero().is_some(),
                "went to zero on the first tick with nothing known: {d:?}"
            );
        }
    }

    #[test]
    fn load_at_zero_wakes(
        settings in settings(3600, 3600), w in window(), c in 0.001..5000.0f64, state in state(),
    ) {
        let mut w = w;
        w.push(s(NOW), c);
        let (d, _) = one_tick(&settings, &w, 0, &state);
        prop_assert!(d.desired >= 1, "{d:?}");
    }

    #[test]
    fn monotone_in_load(
        settings in settings(3600, 3600),
        current in 0u32..40,
        state in state(),
        span in 1u64..400,
        a in load(),
        b in load(),
    ) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let constant = |c: f64| {
            let mut w = Window::new(1000);
            for ago in (0..span).rev() {
                w.push(s(NOW - ago), c);
            }
            w
        };
        let (dlo, _) = one_tick(&settings, &constant(lo), current, &state);
        let (dhi, _) = one_tick(&settings, &constant(hi), current, &state);
        prop_assert!(dhi.desired >= dlo.desired, "{lo} -> {dlo:?}, {hi} -> {dhi:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A constant load held for 10 stable windows, ticking once a second: the count moves
    /// in one direction only, settles on `ceil(load / target)` (clamped) within one tick
    /// per instance it has to remove (or one tick to scale up), and never changes again,
    /// so there is at most one change per stable window after the initial ramp.
    #[test]
    fn constant_load_settles_without_flapping(
        settings in settings(120, 120), start in 0u32..30, l in 0.01..8000.0f64,
    ) {
        let ticks = 10 * u64::from(settings.stable_window_s);
        let desired = simulate(&settings, start, ticks, |_| l);
        let target = settings.target_per_instance();
        let want = ((l / target * (1.0 - 1e-9)).ceil() as u32)
            .max(settings.min_size)
            .min(settings.max_size);
        let last = *desired.last().unwrap();
        prop_assert_eq!(last, want, "{:?}", desired);
        prop_assert!(monotone(start, &desired), "{:?}", desired);
        let settled = desired.iter().position(|&d| d == want).unwrap();
        prop_assert!(desired[settled..].iter().all(|&d| d == want), "{:?}", desired);
        prop_assert!(settled as u32 <= start.saturating_sub(want), "settled at {}: {:?}", settled, desired);
        // The wording, checked directly: at most one change per stable window
        // after the first.
        let w = settings.stable_window_s as usize;
        for (k, chunk) in desired.chunks(w).enumerate().skip(1) {
            let moved = chunk.windows(2).filter(|p| p[0] != p[1]).count()
                + usize::from(chunk[0] != desired[k * w - 1]);
            prop_assert!(moved <= 1 || (k * w) <= settled, "window {}: {:?}", k, desired);
        }
    }

    /// No load at all: down to the min size, one per tick, and to zero (min size 0) only
    /// after the grace period counted from the first tick.
    #[test]
    fn no_load_goes_to_min_or_zero_after_grace(
        settings in settings(120, 120), start in 0u32..30,
    ) {
        let ticks = 10 * u64::from(settings.stable_window_s) + u64::from(settings.scale_to_zero_grace_s);
        let desired = simulate(&settings, start, ticks, |_| 0.0);
        prop_assert!(monotone(start, &desired), "{:?}", desired);
        prop_assert_eq!(*desired.last().unwrap(), settings.min_size, "{:?}", desired);
        if start > 0 {
            for (t, &d) in desired.iter().enumerate() {
                if d == 0 {
                    prop_assert!(t as u32 > settings.scale_to_zero_grace_s, "zero at {}: {:?}", t, desired);
                }
            }
        }
    }

    /// Load for a while, then none: with min size 0 the service reaches zero, but only
    /// after the grace period following the last load; with min size >= 1, never.
    #[test]
    fn scale_to_zero_only_after_grace(
        settings in settings(120, 120), start in 0u32..30, l in 0.01..8000.0f64, busy in 1u64..200,
    ) {
        let ticks = busy + 2 * u64::from(settings.stable_window_s)
            + u64::from(settings.scale_to_zero_grace_s) + 30;
        let desired = simulate(&settings, start, ticks, |t| if t < busy { l } else { 0.0 });
        for (t, &d) in desired.iter().enumerate() {
            if d == 0 && t > 0 && desired[t - 1] > 0 {
                prop_assert_eq!(settings.min_size, 0);
                // The last load was at busy - 1.
                prop_assert!(
                    t as u64 > busy - 1 + u64::from(settings.scale_to_zero_grace_s),
                    "zero at {}: {:?}", t, desired
                );
            }
            if (t as u64) < busy {
                prop_assert!(d >= 1, "zero under load at {}: {:?}", t, desired);
            }
        }
        prop_assert_eq!(*desired.last().unwrap(), settings.min_size, "{:?}", desired);
    }

    /// A steady but noisy load (a periodic pattern around a mean, never 0): after the first
    /// stable window the count never reverses direction, and after two windows and a ramp
    /// it no longer changes at all.
    #[test]
    fn noisy_steady_load_does_not_flap(
        settings in settings(120, 120),
        start in 0u32..30,
        mean in 1.0..6000.0f64,
        noise in prop::collection::vec(-1.0..1.0f64, 1..6),
        amp in 0.0..0.9f64,
    ) {
        let ticks = 10 * u64::from(settings.stable_window_s);
        let pattern: Vec<f64> = noise.iter().map(|n| mean * (1.0 + amp * n)).collect();
        let desired = simulate(&settings, start, ticks, |t| pattern[t as usize % pattern.len()]);
        let w = settings.stable_window_s as usize;
        prop_assert!(monotone(desired[w], &desired[w + 1..]), "{:?}", desired);
        let late = changes(desired[0], &desired);
        prop_assert!(late.iter().all(|&t| t <= 2 * w + 30), "changes at {:?}: {:?}", late, desired);
    }
}
