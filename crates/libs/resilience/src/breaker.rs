//! The circuit breaker's state machine: resilience4j's closed → open → half-open, over a
//! time-based sliding window kept as buckets (ADR 0022).
//!
//! Why our own: the crate we used kept one record per call and walked the whole window on every
//! call, so a call's cost grew with rate × window — at a few thousand calls a second the
//! hottest Rust function of the order path. Here the window is [`BUCKETS`] partial counts, as
//! resilience4j keeps it: recording a call and reading the window's rates cost the same at one
//! call a second or a million.
//!
//! This module knows nothing of HTTP or of operators' overrides; `upstream.rs` classifies
//! outcomes, and announces the transitions this module reports through its `on_change`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::policy::BreakerSettings;

/// The breaker's own states (an operator's forced-open or disabled lives in `Upstream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

/// How many buckets a window is cut into: the window's edge is known to a tenth of its
/// length, and a call costs a walk of ten counters at most.
pub const BUCKETS: usize = 10;

/// What a window has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: usize,
    pub failures: usize,
    pub slow_calls: usize,
}

/// The calls of one slice of time.
#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Which slice (slices of `Window::width` since `Window::origin`) these counts are of.
    slice: u64,
    totals: Totals,
}

/// A sliding window of `length`, as [`BUCKETS`] slices; the oldest slice is dropped whole, so
/// the calls counted are those of the last `length` give or take one slice.
struct Window {
    origin: Instant,
    /// Nanoseconds per slice, at least one.
    width: u128,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(length: Duration, origin: Instant) -> Self {
        Self {
            origin,
            width: (length.as_nanos() / BUCKETS as u128).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn slice(&self, at: Instant) -> u64 {
        let slice = at.saturating_duration_since(self.origin).as_nanos() / self.width;
        u64::try_from(slice).unwrap_or(u64::MAX)
    }

    fn record(&mut self, at: Instant, failed: bool, slow: bool) {
        let slice = self.slice(at);
        let bucket = &mut self.buckets[(slice % BUCKETS as u64) as usize];
        if bucket.slice != slice {
            // The slot's previous slice is at least a whole window old.
            *bucket = Bucket {
                slice,
                totals: Totals::default(),
            };
        }
        bucket.totals.calls += 1;
        bucket.totals.failures += usize::from(failed);
        bucket.totals.slow_calls += usize::from(slow);
    }

    fn totals(&self, at: Instant) -> Totals {
        let now = self.slice(at);
        let mut sum = Totals::default();
        for bucket in &self.buckets {
            // Slices of the last BUCKETS, this one included; a stale slot counts nothing.
            if bucket.slice <= now && now - bucket.slice < BUCKETS as u64 {
                sum.calls += bucket.totals.calls;
                sum.failures += bucket.totals.failures;
                sum.slow_calls += bucket.totals.slow_calls;
            }
        }
        sum
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

struct State {
    circuit: Circuit,
    since: Instant,
    /// Bumped by every transition: a call admitted before one does not vote after it.
    generation: u64,
    window: Window,
    /// Half-open: probes admitted in this cycle and not yet finished, and those that succeeded.
    probes_out: usize,
    probes_succeeded: usize,
}

/// A call the breaker let through; its outcome goes back with [`Admitted::finish`]. Dropped
/// unfinished (its caller gave up), it counts for nothing, and a half-open probe's slot frees.
pub struct Admitted<'a> {
    breaker: &'a Breaker,
    generation: u64,
    probe: bool,
    finished: bool,
}

impl Admitted<'_> {
    /// Records the call's outcome: `failed` as the caller classified it, `took` its duration.
    pub fn finish(self, failed: bool, took: Duration) {
        let slow = took >= self.breaker.settings.slow_call;
        self.record(failed, slow);
    }

    /// Records a call the upstream answered for a dependency of its own that failed (ADR
    /// 0031): a success, and never a slow one — the time it took was the dependency's.
    pub fn finish_for_a_dependency(self) {
        self.record(false, false);
    }

    fn record(mut self, failed: bool, slow: bool) {
        self.finished = true;
        self.breaker
            .record(self.generation, self.probe, failed, slow, Instant::now());
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if !self.finished && self.probe {
            let mut state = self.breaker.lock();
            if state.generation == self.generation {
                state.probes_out = state.probes_out.saturating_sub(1);
            }
        }
    }
}

/// Called with (from, to) on every transition, under the breaker's lock — so observers see
/// transitions in the order they happened. Keep it quick and never block in it.
type OnChange = Box<dyn Fn(Circuit, Circuit) + Send + Sync>;

pub struct Breaker {
    settings: BreakerSettings,
    state: Mutex<State>,
    on_change: OnChange,
}

impl Breaker {
    /// A closed breaker; refuses settings the state machine cannot honour.
    pub fn new(settings: BreakerSettings, on_change: OnChange) -> Result<Self, String> {
        let share = |rate: f64| rate.is_finite() && rate > 0.0 && rate <= 1.0;
        if !share(settings.failure_rate) || !share(settings.slow_call_rate) {
            return Err("breaker rates must be shares in (0, 1]".to_owned());
        }
        if settings.half_open_calls == 0 || settings.minimum_calls == 0 {
            return Err("breaker half-open calls and minimum calls must be positive".to_owned());
        }
        let now = Instant::now();
        Ok(Self {
            state: Mutex::new(State {
                circuit: Circuit::Closed,
                since: now,
                generation: 0,
                window: Window::new(settings.window, now),
                probes_out: 0,
                probes_succeeded: 0,
            }),
            settings,
            on_change,
        })
    }

    /// Lets a call through, or says how long until the breaker will probe again. An open
    /// breaker whose wait is over turns half-open here, and this call is its first probe.
    pub fn admit(&self) -> Result<Admitted<'_>, Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        if state.circuit == Circuit::Open {
            let waited = now.saturating_duration_since(state.since);
            if waited < self.settings.open_for {
                return Err(self.settings.open_for - waited);
            }
            self.transition(&mut state, Circuit::HalfOpen, now);
        }
        let probe = state.circuit == Circuit::HalfOpen;
        if probe {
            if state.probes_out + state.probes_succeeded >= self.settings.half_open_calls {
                // Enough probes are out; their outcome decides.
                return Err(Duration::ZERO);
            }
            state.probes_out += 1;
        }
        Ok(Admitted {
            breaker: self,
            generation: state.generation,
            probe,
            finished: false,
        })
    }

    fn record(&self, generation: u64, probe: bool, failed: bool, slow: bool, now: Instant) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        state.window.record(now, failed, slow);
        match state.circuit {
            Circuit::HalfOpen if probe => {
                state.probes_out = state.probes_out.saturating_sub(1);
                if failed {
                    self.transition(&mut state, Circuit::Open, now);
                } else {
                    // Closes only when every permitted probe has succeeded (ADR 0006).
                    state.probes_succeeded += 1;
                    if state.probes_succeeded >= self.settings.half_open_calls {
                        self.transition(&mut state, Circuit::Closed, now);
                    }
                }
            }
            Circuit::Closed => {
                let totals = state.window.totals(now);
                if totals.calls >= self.settings.minimum_calls {
                    let rate = |count: usize| count as f64 / totals.calls as f64;
                    if rate(totals.failures) >= self.settings.failure_rate
                        || rate(totals.slow_calls) >= self.settings.slow_call_rate
                    {
                        self.transition(&mut state, Circuit::Open, now);
                    }
                }
            }
            Circuit::HalfOpen | Circuit::Open => {}
        }
    }

    pub fn circuit(&self) -> Circuit {
        self.lock().circuit
    }

    /// What the current window holds (emptied by every transition).
    pub fn totals(&self) -> Totals {
        self.lock().window.totals(Instant::now())
    }

    /// Closed and empty, without telling `on_change`: the operator who reset it announces it.
    pub fn reset(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        Self::enter(&mut state, Circuit::Closed, now);
    }

    fn transition(&self, state: &mut State, to: Circuit, now: Instant) {
        let from = state.circuit;
        if from != to {
            Self::enter(state, to, now);
            (self.on_change)(from, to);
        }
    }

    fn enter(state: &mut State, to: Circuit, now: Instant) {
        state.circuit = to;
        state.since = now;
        state.generation += 1;
        state.window.clear();
        state.probes_out = 0;
        state.probes_succeeded = 0;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under this lock can leave the state half-changed: a poisoned lock's state is
        // as good as any.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_window_counts_the_last_length_and_forgets_older_slices_whole() {
        let start = Instant::now();
        let length = Duration::from_secs(10);
        let mut window = Window::new(length, start);
        window.record(start, true, false);
        window.record(start + Duration::from_millis(4_500), false, true);
        window.record(start + Duration::from_millis(9_999), false, false);

        let at_end = window.totals(start + Duration::from_millis(9_999));
        assert_eq!(
            at_end,
            Totals {
                calls: 3,
                failures: 1,
                slow_calls: 1
            }
        );
        // One slice (a tenth) later the first call's slice has left the window.
        let later = window.totals(start + Duration::from_millis(10_000));
        assert_eq!(
            later,
            Totals {
                calls: 2,
                failures: 0,
                slow_calls: 1
            }
        );
        // A whole window after the last call, nothing is left.
        assert_eq!(
            window.totals(start + Duration::from_millis(20_000)),
            Totals::default()
        );
    }

    #[test]
    fn a_slot_reused_by_a_later_slice_starts_from_zero() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(10), start);
        for _ in 0..5 {
            window.record(start, true, false);
        }
        // Same slot (slice 10 ≡ slice 0), a window later: the old five are gone.
        let later = start + Duration::from_secs(10);
        window.record(later, false, false);
        assert_eq!(
            window.totals(later),
            Totals {
                calls: 1,
                failures: 0,
                slow_calls: 0
            }
        );
    }

    fn breaker(minimum_calls: usize, half_open_calls: usize) -> Breaker {
        let settings = BreakerSettings {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call: Duration::from_secs(60),
            window: Duration::from_secs(60),
            minimum_calls,
            // Probes may go at once: no waiting in the test.
            open_for: Duration::ZERO,
            half_open_calls,
        };
        Breaker::new(settings, Box::new(|_, _| {})).unwrap()
    }

    const QUICK: Duration = Duration::from_millis(1);

    #[test]
    fn a_call_let_through_before_a_transition_does_not_vote_after_it() {
        let breaker = breaker(1, 1);
        let before = breaker.admit().unwrap();
        breaker.admit().unwrap().finish(true, QUICK);
        assert_eq!(breaker.circuit(), Circuit::Open);
        breaker.admit().unwrap().finish(false, QUICK);
        assert_eq!(breaker.circuit(), Circuit::Closed);

        // Its failure belongs to the window that opened the breaker, not to the new one.
        before.finish(true, QUICK);
        assert_eq!(breaker.circuit(), Circuit::Closed);
        assert_eq!(breaker.totals(), Totals::default());
    }

    #[test]
    fn a_probe_given_up_by_its_caller_frees_its_place() {
        let breaker = breaker(1, 1);
        breaker.admit().unwrap().finish(true, QUICK);
        let probe = breaker.admit().unwrap();
        assert_eq!(breaker.circuit(), Circuit::HalfOpen);
        assert!(breaker.admit().is_err(), "one probe at a time");

        drop(probe);
        breaker.admit().unwrap().finish(false, QUICK);
        assert_eq!(breaker.circuit(), Circuit::Closed);
    }

    #[test]
    fn settings_the_state_machine_cannot_honour_are_refused() {
        let no_failure_rate = BreakerSettings {
            failure_rate: 0.0,
            ..BreakerSettings::default()
        };
        assert!(Breaker::new(no_failure_rate, Box::new(|_, _| {})).is_err());
        let no_probes = BreakerSettings {
            half_open_calls: 0,
            ..BreakerSettings::default()
        };
        assert!(Breaker::new(no_probes, Box::new(|_, _| {})).is_err());
    }

    #[test]
    fn a_million_calls_spread_over_the_window_are_all_counted() {
        let start = Instant::now();
        let mut window = Window::new(Duration::from_secs(10), start);
        // One call every 5 µs for 5 s: every slice is touched, none is a window old.
        for i in 0..1_000_000u64 {
            window.record(start + Duration::from_micros(i * 5), i % 4 == 0, false);
        }
        let totals = window.totals(start + Duration::from_secs(5));
        assert_eq!((totals.calls, totals.failures), (1_000_000, 250_000));
    }
}
