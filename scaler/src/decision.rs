//! The autoscaling decision: a pure function from observed concurrency, settings, the
//! current instance count and the clock to a desired instance count.
//!
//! [`decide`] does no I/O and reads no clock: the caller passes `now` (monotonic time since
//! the same origin as the [`Window`]'s samples) and carries [`ScalerState`] from one tick to
//! the next. That keeps every rule unit- and property-testable. The model is Knative's KPA,
//! with its default windows (`Scaling`'s defaults):
//!
//! * **Inputs.** `target` is [`Scaling::target_per_instance`] (max concurrency x target
//!   utilization, 70 by default). `stable` is the mean of the samples in
//!   `[now - stable_window_s, now]` (60 s by default), `panic` the mean over
//!   `[now - panic_window_s, now]` (6 s); no samples count as 0. `peak` is the largest
//!   sample in the stable window. Both ends are inclusive, so at one sample a second a
//!   60 s window holds 61 samples; size the [`Window`] accordingly.
//! * **Stable decision.** `desired_stable = ceil(stable / target)`,
//!   `desired_panic = ceil(panic / target)` (a relative 1e-9 slack absorbs float noise, so
//!   140 / 70 is exactly 2).
//! * **Panic.** The panic condition holds when `current > 0` and
//!   `panic / target >= panic_threshold_pct / 100 x current` (load at twice the current
//!   capacity by default), or when `current == 0`, the service is not idle (below) and
//!   `panic > 0`: a cold wake. Each time it holds, `panic_since` is set to `now`; panic mode
//!   ends once the condition no longer holds and a full stable window has passed since
//!   `panic_since`. While panicking, `desired = max(current, desired_panic,
//!   desired_stable)`: panic mode scales up on the short window and never scales down.
//! * **Scale-up** outside panic is immediate: if `desired_stable >= current`, that is the
//!   answer.
//! * **Scale-down** outside panic removes at most one instance per tick, and only when the
//!   *peak* of the stable window would still fit: it removes one instance when
//!   `ceil(peak / target) < current`, otherwise it holds. Scaling up goes by the average
//!   and down by the peak (average <= peak), so a window that calls for one change
//!   cannot call for the opposite one until its samples change: a steady load settles on
//!   one count between `ceil(average / target)` and `ceil(peak / target)` and stays there
//!   instead of flapping across an instance boundary. A second call with the same `now` (the same
//!   tick, per `last_scale_down`) removes nothing more.
//! * **Scale to zero.** The service is *idle* when the newest sample is 0 and no load has
//!   been seen for more than `scale_to_zero_grace_s` (30 s) — load is seen in the window
//!   ([`Window::last_nonzero`]) and remembered in [`ScalerState::last_active`], which starts
//!   at the first tick when nothing is known ("started being tracked"). With
//!   `min_size == 0`, a service that is idle and not panicking steps down one instance per
//!   tick to 0 (so 1 -> 0 happens in one tick), ignoring older load still in the stable
//!   window, and stays at 0 while idle. Until it is idle, a running service with
//!   `min_size == 0` keeps at least one instance. Load at zero instances wakes it at once
//!   (the cold wake above gives at least 1).
//! * **Bounds.** The result is clamped to `[min_size, max_size]`; `max_size` wins if the
//!   settings are inconsistent. Clamping is the one rule that may remove more than one
//!   instance in a tick (when `max_size` is lowered below the current count) or scale down
//!   while panicking (the same case).
//!
//! [`Decision::reason`] always explains the number in words for the activity log, e.g.
//! `average concurrency 200.0 over 60s / target 70 -> 3`.

use std::time::Duration;

use slipway_core::Scaling;

use crate::window::Window;

/// What the scaler remembers about one service between ticks; the caller stores it and
/// passes it back. Pure data; start with `ScalerState::default()`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScalerState {
    /// When panic mode was last triggered (entered, or held again by load over the panic
    /// threshold); `None` when not panicking. Panic mode lasts a stable window from here.
    pub panic_since: Option<Duration>,
    /// The last time load was above 0, or when the service started being tracked (the
    /// first tick, if no load was seen); measures idleness for scale to zero.
    pub last_active: Option<Duration>,
    /// The tick (`now`) of the last decision that removed an instance.
    pub last_scale_down: Option<Duration>,
}

/// The outcome of one tick for one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// How many instances the service should have.
    pub desired: u32,
    /// Whether panic mode is on after this tick.
    pub panicking: bool,
    /// Mean concurrency over the stable window (0 if no samples).
    pub stable_concurrency: f64,
    /// Mean concurrency over the panic window (0 if no samples).
    pub panic_concurrency: f64,
    /// Why `desired` is what it is, in words, for the activity log.
    pub reason: String,
}

/// Instances needed for `load` at `target` per instance: `ceil(load / target)`, with a
/// relative slack so float noise (e.g. 4.2 / 2.1) does not add an instance.
fn instances(load: f64, target: f64) -> u32 {
    if load.is_nan() || load <= 0.0 {
        return 0;
    }
    let ratio = load / target.max(f64::MIN_POSITIVE);
    // `as` saturates, so infinite load gives u32::MAX and is clamped to max_size later.
    (ratio * (1.0 - 1e-9)).ceil() as u32
}

/// Seconds, whole if whole, else with one decimal.
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One tick of the autoscaler: the desired instance count for a service with `settings`,
/// the observed `window`, `current` instances, at time `now`, given the `state` returned by
/// the previous tick. Returns the decision and the state to pass to the next tick. See the
/// [module documentation](self) for the rules.
pub fn decide(
    settings: &Scaling,
    window: &Window,
    current: u32,
    now: Duration,
    state: &ScalerState,
) -> (Decision, ScalerState) {
    let target = settings.target_per_instance();
    let stable_w = Duration::from_secs(settings.stable_window_s.into());
    let panic_w = Duration::from_secs(settings.panic_window_s.into());
    let grace = Duration::from_secs(settings.scale_to_zero_grace_s.into());

    let stable_since = now.saturating_sub(stable_w);
    let stable = window.average_since(stable_since).unwrap_or(0.0);
    let peak = window.max_since(stable_since).unwrap_or(0.0);
    let panic = window
        .average_since(now.saturating_sub(panic_w))
        .unwrap_or(0.0);
    let desired_stable = instances(stable, target);
    let desired_panic = instances(panic, target);

    // Idleness, for scale to zero.
    let last_active = match (state.last_active, window.last_nonzero()) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b).unwrap_or(now),
    };
    let load_now = window.latest().is_some_and(|(_, c)| c > 0.0);
    let idle_for = now.saturating_sub(last_active);
    let idle = !load_now && idle_for > grace;

    // Panic mode.
    let threshold = f64::from(settings.panic_threshold_pct) / 100.0;
    let over = if current == 0 {
        panic > 0.0 && !idle
    } else {
        panic / target >= threshold * f64::from(current)
    };
    let panic_since = if over {
        Some(now)
    } else {
        state
            .panic_since
            .filter(|since| now.saturating_sub(*since) < stable_w)
    };
    let panicking = panic_since.is_some();

    let stable_text = format!(
        "average concurrency {stable:.1} over {} / target {target} -> {desired_stable}",
        secs(stable_w)
    );
    let panic_text = format!(
        "average concurrency {panic:.1} over {} / target {target} -> {desired_panic}",
        secs(panic_w)
    );
    let same_tick = state.last_scale_down == Some(now);

    let (raw, mut reason) = if panicking {
        let raw = current.max(desired_panic).max(desired_stable);
        let why = if over && current == 0 {
            format!("waking from zero: {panic_text}")
        } else if over {
            format!(
                "panic: {panic_text}, at least {}% of {current} instance(s) x target {target}",
                settings.panic_threshold_pct
            )
        } else {
            let since = panic_since.unwrap_or(now);
            format!(
                "panicking since {} ago (ends {} after the last trigger): {panic_text}",
                secs(now.saturating_sub(since)),
                secs(stable_w)
            )
        };
        let why = if raw == current && desired_panic.max(desired_stable) < current {
            format!("{why}; holding {current}: no scale-down while panicking")
        } else if raw == desired_stable && desired_stable > desired_panic {
            format!("{why}; {stable_text}")
        } else {
            why
        };
        (raw, why)
    } else if settings.min_size == 0 && idle {
        if current == 0 {
            (
                0,
                format!(
                    "no load for {} (grace {}), min size 0: staying at 0",
                    secs(idle_for),
                    secs(grace)
                ),
            )
        } else if same_tick {
            (
                current,
                format!(
                    "no load for {} (grace {}), min size 0: already removed an instance this tick, holding {current}",
                    secs(idle_for),
                    secs(grace)
                ),
            )
        } else {
            (
                current - 1,
                format!(
                    "no load for {} (grace {}), min size 0: scaling toward zero, {current} -> {}",
                    secs(idle_for),
                    secs(grace),
                    current - 1
                ),
            )
        }
    } else if desired_stable >= current {
        (desired_stable, stable_text)
    } else {
        // Scale down, by at most one, and only if the window's peak would still fit.
        // Here the service is not idle or min_size >= 1, so the floor is at least 1.
        let peak_needs = instances(peak, target);
        let floor = settings.min_size.max(1);
        let needed = peak_needs.max(floor);
        if needed >= current {
            let why = if peak_needs >= floor {
                format!(
                    "{stable_text}; holding {current}: peak concurrency {peak:.1} over {} needs {needed}",
                    secs(stable_w)
                )
            } else if settings.min_size == 0 {
                format!(
                    "{stable_text}; holding {current}: not idle for the grace period yet ({} of {} without load)",
                    secs(idle_for),
                    secs(grace)
                )
            } else {
                format!(
                    "{stable_text}; holding {current}: min size {}",
                    settings.min_size
                )
            };
            (current, why)
        } else if same_tick {
            (
                current,
                format!("{stable_text}; already removed an instance this tick, holding {current}"),
            )
        } else {
            (
                current - 1,
                format!(
                    "{stable_text}; peak concurrency {peak:.1} over {} needs {peak_needs}: removing one instance, {current} -> {}",
                    secs(stable_w),
                    current - 1
                ),
            )
        }
    };

    let desired = raw.max(settings.min_size).min(settings.max_size);
    if desired > raw {
        reason.push_str(&format!(" (raised to min size {})", settings.min_size));
    } else if desired < raw {
        reason.push_str(&format!(" (capped at max size {})", settings.max_size));
    }

    let next = ScalerState {
        panic_since,
        last_active: Some(last_active),
        last_scale_down: if desired < current {
            Some(now)
        } else {
            state.last_scale_down
        },
    };
    (
        Decision {
            desired,
            panicking,
            stable_concurrency: stable,
            panic_concurrency: panic,
            reason,
        },
        next,
    )
}
