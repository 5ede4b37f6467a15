//! The circuit breaker's work on every service-to-service call: let the call through, record
//! its outcome. Its cost must not grow with how many calls the window holds (ADR 0022) — the
//! order path makes two such calls per order, so at 5,000 orders/s a 10 s window holds 100,000.
//! Run: `cargo bench -p resilience --bench breaker`

use std::time::Duration;

use resilience::BreakerSettings;
use resilience::breaker::Breaker;

fn main() {
    divan::main();
}

/// A closed breaker with the default settings (10 s window) already holding `calls` outcomes.
#[allow(clippy::expect_used)]
fn holding(calls: usize) -> Breaker {
    let breaker = Breaker::new(BreakerSettings::default(), Box::new(|_, _| {}))
        .expect("the default settings are valid");
    for _ in 0..calls {
        breaker
            .admit()
            .expect("closed")
            .finish(false, Duration::from_millis(1));
    }
    breaker
}

#[divan::bench(args = [10, 10_000, 100_000])]
fn admit_and_record(bencher: divan::Bencher, calls_in_window: usize) {
    let breaker = holding(calls_in_window);
    bencher.bench_local(|| {
        if let Ok(admitted) = breaker.admit() {
            admitted.finish(false, Duration::from_millis(1));
        }
    });
}
