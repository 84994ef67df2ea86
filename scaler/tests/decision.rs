//! Unit tests of the decision function, one per rule, with concrete numbers.

use std::time::Duration;

use slipway_core::Scaling;
use slipway_scaler::decision::{decide, Decision, ScalerState};
use slipway_scaler::window::Window;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A window with one sample a second, `load(t)` at each `t` in `from..=to`.
fn window(from: u64, to: u64, load: impl Fn(u64) -> f64) -> Window {
    let mut w = Window::new(4096);
    for t in from..=to {
        w.push(s(t), load(t));
    }
    w
}

/// Ticks once a second from `from` to `to`, pushing `load(t)` and feeding each decision
/// back as `current`; returns every decision with its tick.
fn run(
    settings: &Scaling,
    start: u32,
    from: u64,
    to: u64,
    load: impl Fn(u64) -> f64,
) -> Vec<(u64, Decision)> {
    let mut w = Window::new(settings.stable_window_s as usize + 2);
    let mut state = ScalerState::default();
    let mut current = start;
    let mut out = Vec::new();
    for t in from..=to {
        w.push(s(t), load(t));
        let (d, next) = decide(settings, &w, current, s(t), &state);
        current = d.desired;
        state = next;
        out.push((t, d));
    }
    out
}

#[test]
fn defaults_are_knatives() {
    let d = Scaling::default();
    assert_eq!(d.stable_window_s, 60);
    assert_eq!(d.panic_window_s, 6);
    assert_eq!(d.panic_threshold_pct, 200);
    assert_eq!(d.scale_to_zero_grace_s, 30);
    assert_eq!(d.target_per_instance(), 70.0);
}

#[test]
fn stable_average_over_target_rounds_up() {
    // Target 70, 200 in flight for 60 s: ceil(200 / 70) = 3.
    let w = window(40, 100, |_| 200.0);
    let (d, state) = decide(&Scaling::default(), &w, 2, s(100), &ScalerState::default());
    assert_eq!(d.desired, 3);
    assert!(!d.panicking);
    assert_eq!(d.stable_concurrency, 200.0);
    assert_eq!(d.panic_concurrency, 200.0);
    assert_eq!(
        d.reason,
        "average concurrency 200.0 over 60s / target 70 -> 3"
    );
    assert_eq!(state.panic_since, None);
    assert_eq!(state.last_active, Some(s(100)));
}

#[test]
fn exact_multiples_do_not_add_an_instance() {
    let w = window(40, 100, |_| 140.0);
    let (d, _) = decide(&Scaling::default(), &w, 2, s(100), &ScalerState::default());
    assert_eq!(d.desired, 2);
    // Float noise: target 2.1 (3 x 70%), load 4.2.
    let settings = Scaling {
        max_concurrency: 3,
        ..Scaling::default()
    };
    let w = window(40, 100, |_| 4.2);
    let (d, _) = decide(&settings, &w, 2, s(100), &ScalerState::default());
    assert_eq!(d.desired, 2, "{}", d.reason);
}

#[test]
fn only_the_stable_window_counts() {
    // 1000 in flight long ago, 100 for the last 60 s.
    let w = window(0, 200, |t| if t < 140 { 1000.0 } else { 100.0 });
    let (d, _) = decide(&Scaling::default(), &w, 2, s(200), &ScalerState::default());
    assert_eq!(d.stable_concurrency, 100.0);
    assert_eq!(d.desired, 2);
}

#[test]
fn no_samples_count_as_zero_load() {
    let w = Window::new(10);
    let (d, _) = decide(&Scaling::default(), &w, 1, s(100), &ScalerState::default());
    assert_eq!(d.desired, 1);
    assert_eq!(d.stable_concurrency, 0.0);
    assert_eq!(d.panic_concurrency, 0.0);
}

#[test]
fn clamped_to_max_and_min() {
    let settings = Scaling {
        max_size: 5,
        ..Scaling::default()
    };
    let w = window(40, 100, |_| 2000.0);
    let (d, _) = decide(&settings, &w, 5, s(100), &ScalerState::default());
    assert_eq!(d.desired, 5);
    assert!(d.reason.ends_with("(capped at max size 5)"), "{}", d.reason);

    let settings = Scaling {
        min_size: 3,
        ..Scaling::default()
    };
    let w = window(40, 100, |_| 0.0);
    let (d, _) = decide(&settings, &w, 1, s(100), &ScalerState::default());
    assert_eq!(d.desired, 3);
    assert!(d.reason.ends_with("(raised to min size 3)"), "{}", d.reason);
}

#[test]
fn lowering_max_size_removes_several_at_once() {
    let settings = Scaling {
        max_size: 2,
        ..Scaling::default()
    };
    let w = window(40, 100, |_| 700.0);
    let (d, _) = decide(&settings, &w, 10, s(100), &ScalerState::default());
    assert_eq!(d.desired, 2);
}

#[test]
fn panic_scales_up_on_the_short_window() {
    // 2 instances x 70 = 140 capacity; 50 for a minute then 300 over the panic window
    // [94, 100]: 300 / 70 = 4.3 >= 2 x 2, so panic, and ceil(300 / 70) = 5.
    let w = window(40, 100, |t| if t >= 94 { 300.0 } else { 50.0 });
    let (d, state) = decide(&Scaling::default(), &w, 2, s(100), &ScalerState::default());
    assert!(d.panicking);
    assert_eq!(d.panic_concurrency, 300.0);
    assert_eq!(d.desired, 5);
    assert_eq!(state.panic_since, Some(s(100)));
    assert!(
        d.reason
            .starts_with("panic: average concurrency 300.0 over 6s / target 70 -> 5"),
        "{}",
        d.reason
    );
}

#[test]
fn below_the_panic_threshold_no_panic() {
    // 270 on 2 instances: 270 / 70 = 3.86 < 4.
    let w = window(95, 100, |_| 270.0);
    let (d, _) = decide(&Scaling::default(), &w, 2, s(100), &ScalerState::default());
    assert!(!d.panicking);
    assert_eq!(d.desired, 4);
}

#[test]
fn no_scale_down_while_panicking_then_one_at_a_time() {
    // Panic at t = 100 takes 2 instances to 5, then the load vanishes.
    let settings = Scaling::default();
    let log = run(&settings, 2, 40, 200, |t| match t {
        94..=100 => 300.0,
        t if t < 94 => 100.0,
        _ => 0.0,
    });
    let at = |t: u64| &log.iter().find(|(tt, _)| *tt == t).unwrap().1;
    assert_eq!(at(100).desired, 5);
    assert!(at(100).panicking);
    // Still panicking a stable window after the last trigger (t = 100).
    for t in 101..160 {
        assert!(at(t).panicking, "t={t}");
        assert_eq!(at(t).desired, 5, "t={t}");
    }
    let held = at(120);
    assert!(
        held.reason
            .contains("holding 5: no scale-down while panicking"),
        "{}",
        held.reason
    );
    // Panic over at 160; the 300s at t <= 100 are still in [100, 160], so hold on the peak.
    assert!(!at(160).panicking);
    assert_eq!(at(160).desired, 5);
    assert!(
        at(160).reason.contains("peak concurrency"),
        "{}",
        at(160).reason
    );
    // From 161 the peak is 0: one instance per tick, down to the min size 1.
    assert_eq!(at(161).desired, 4);
    assert!(
        at(161).reason.contains("removing one instance, 5 -> 4"),
        "{}",
        at(161).reason
    );
    assert_eq!(at(162).desired, 3);
    assert_eq!(at(163).desired, 2);
    assert_eq!(at(164).desired, 1);
    assert_eq!(at(200).desired, 1);
}

#[test]
fn panic_is_held_again_by_each_trigger() {
    let w = window(40, 100, |_| 300.0);
    let state = ScalerState {
        panic_since: Some(s(30)),
        ..ScalerState::default()
    };
    let (d, next) = decide(&Scaling::default(), &w, 2, s(100), &state);
    assert!(d.panicking);
    assert_eq!(next.panic_since, Some(s(100)));
}

#[test]
fn scale_down_removes_at_most_one_per_tick() {
    let w = window(40, 100, |_| 70.0);
    let (d, state) = decide(&Scaling::default(), &w, 10, s(100), &ScalerState::default());
    assert_eq!(d.desired, 9);
    assert_eq!(
        d.reason,
        "average concurrency 70.0 over 60s / target 70 -> 1; peak concurrency 70.0 over 60s \
         needs 1: removing one instance, 10 -> 9"
    );
    assert_eq!(state.last_scale_down, Some(s(100)));
    // The same tick again removes nothing more.
    let (again, _) = decide(&Scaling::default(), &w, 9, s(100), &state);
    assert_eq!(again.desired, 9);
    assert!(again.reason.contains("already removed"), "{}", again.reason);
}

#[test]
fn scale_down_waits_for_the_peak_to_fit() {
    // Mostly 60 with one spike of 200: the average needs 1, the peak 3.
    let w = window(40, 100, |t| if t == 70 { 200.0 } else { 60.0 });
    let (d, _) = decide(&Scaling::default(), &w, 3, s(100), &ScalerState::default());
    assert_eq!(d.desired, 3);
    assert!(
        d.reason
            .ends_with("holding 3: peak concurrency 200.0 over 60s needs 3"),
        "{}",
        d.reason
    );
    // Once the spike has left the window, one instance goes.
    let w = window(40, 131, |t| if t == 70 { 200.0 } else { 60.0 });
    let (d, _) = decide(&Scaling::default(), &w, 3, s(131), &ScalerState::default());
    assert_eq!(d.desired, 2);
}

#[test]
fn noisy_load_near_a_boundary_does_not_flap() {
    // 130 and 150 alternating around 140 = 2 x 70.
    let log = run(&Scaling::default(), 1, 0, 900, |t| {
        if t % 2 == 0 {
            130.0
        } else {
            150.0
        }
    });
    let changes: Vec<u64> = log
        .windows(2)
        .filter(|p| p[0].1.desired != p[1].1.desired)
        .map(|p| p[1].0)
        .collect();
    assert!(changes.len() <= 2, "changes at {changes:?}");
    assert_eq!(log.last().unwrap().1.desired, 3);
}

#[test]
fn scale_to_zero_after_the_grace_period() {
    let settings = Scaling {
        min_size: 0,
        ..Scaling::default()
    };
    // Load until t = 10, then nothing.
    let log = run(&settings, 1, 0, 200, |t| if t <= 10 { 5.0 } else { 0.0 });
    let at = |t: u64| &log.iter().find(|(tt, _)| *tt == t).unwrap().1;
    for t in 0..=40 {
        assert_eq!(at(t).desired, 1, "t={t}: {}", at(t).reason);
    }
    // Idle for 31 s > 30 s grace. Not panicking: the load never reached 2 x capacity.
    assert_eq!(at(41).desired, 0);
    assert_eq!(
        at(41).reason,
        "no load for 31s (grace 30s), min size 0: scaling toward zero, 1 -> 0"
    );
    // Old load still in the stable window does not bring it back.
    for t in 42..=200 {
        assert_eq!(at(t).desired, 0, "t={t}: {}", at(t).reason);
    }
    assert_eq!(
        at(42).reason,
        "no load for 32s (grace 30s), min size 0: staying at 0"
    );
}

#[test]
fn never_zero_with_min_size_one() {
    let log = run(&Scaling::default(), 3, 0, 300, |t| {
        if t <= 10 {
            5.0
        } else {
            0.0
        }
    });
    assert!(log.iter().all(|(_, d)| d.desired >= 1));
    assert_eq!(log.last().unwrap().1.desired, 1);
}

#[test]
fn idle_service_steps_down_one_per_tick_to_zero() {
    let settings = Scaling {
        min_size: 0,
        ..Scaling::default()
    };
    let w = window(0, 100, |_| 0.0);
    let state = ScalerState {
        last_active: Some(s(20)),
        ..ScalerState::default()
    };
    let (d, _) = decide(&settings, &w, 3, s(100), &state);
    assert_eq!(d.desired, 2);
}

#[test]
fn tracking_starts_the_grace_period() {
    let settings = Scaling {
        min_size: 0,
        ..Scaling::default()
    };
    let w = Window::new(10);
    let (d, state) = decide(&settings, &w, 1, s(500), &ScalerState::default());
    assert_eq!(d.desired, 1);
    assert_eq!(state.last_active, Some(s(500)));
    let (d, _) = decide(&settings, &w, 1, s(530), &state);
    assert_eq!(d.desired, 1);
    assert!(
        d.reason
            .contains("not idle for the grace period yet (30s of 30s without load)"),
        "{}",
        d.reason
    );
    let (d, _) = decide(&settings, &w, 1, s(531), &state);
    assert_eq!(d.desired, 0);
}

#[test]
fn load_wakes_a_service_at_zero() {
    let settings = Scaling {
        min_size: 0,
        ..Scaling::default()
    };
    let state = ScalerState {
        last_active: Some(s(10)),
        ..ScalerState::default()
    };
    let mut w = window(0, 99, |_| 0.0);
    w.push(s(100), 1.0);
    let (d, next) = decide(&settings, &w, 0, s(100), &state);
    assert_eq!(d.desired, 1);
    assert!(d.panicking);
    assert_eq!(next.last_active, Some(s(100)));
    assert!(d.reason.starts_with("waking from zero"), "{}", d.reason);
    // A burst wakes enough instances at once.
    let w = window(95, 100, |_| 300.0);
    let (d, _) = decide(&settings, &w, 0, s(100), &state);
    assert_eq!(d.desired, 5);
}

#[test]
fn zero_grace_scales_to_zero_at_once_without_waking_on_old_load() {
    let settings = Scaling {
        min_size: 0,
        scale_to_zero_grace_s: 0,
        ..Scaling::default()
    };
    let log = run(&settings, 1, 0, 100, |t| if t <= 10 { 5.0 } else { 0.0 });
    let desired: Vec<u32> = log.iter().map(|(_, d)| d.desired).collect();
    assert!(desired[..=10].iter().all(|&d| d == 1), "{desired:?}");
    assert!(desired[11..].iter().all(|&d| d == 0), "{desired:?}");
}
