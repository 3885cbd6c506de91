//! The request budget layer: how many requests may be in flight to one registry, and how many it
//! takes per minute.
//!
//! A permit is taken per attempt and, for most requests, travels with the response body (see
//! [`super::timeouts`] and [`super::Hold`]), so it is held until the body is read to its end or
//! dropped, and given back while a retry sleeps: the budget protects the registry without
//! blocking other work during a `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How many requests a registry takes per minute: a token bucket that allows a burst of ten
/// seconds' worth, since ACR enforces its tier limits as a bucket too.
#[derive(Debug)]
pub struct Budget {
    per_second: f64,
    capacity: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub fn new(per_minute: u32) -> Self {
        let per_second = per_minute as f64 / 60.0;
        let capacity = (per_second * 10.0).max(1.0);
        Budget { per_second, capacity, state: Mutex::new((capacity, Instant::now())) }
    }

    pub async fn take(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(s.1).as_secs_f64() * self.per_second;
                s.0 = (s.0 + refill).min(self.capacity);
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// In-flight limit and per-minute budget of one registry.
#[derive(Debug)]
pub struct Gate {
    in_flight: Arc<Semaphore>,
    budget: Option<Budget>,
}

impl Gate {
    pub fn new(max_in_flight: usize, per_minute: Option<u32>) -> Self {
        Gate {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            budget: per_minute.filter(|r| *r > 0).map(Budget::new),
        }
    }

    /// Waits for a slot, then for the budget. The permit is released when dropped.
    pub async fn enter(&self) -> OwnedSemaphorePermit {
        let permit = self.in_flight.clone().acquire_owned().await.expect("the gate's semaphore is never closed");
        if let Some(b) = &self.budget {
            b.take().await;
        }
        permit
    }

    /// Waits for the per-minute budget only: for requests that take no in-flight slot.
    pub async fn pace(&self) {
        if let Some(b) = &self.budget {
            b.take().await;
        }
    }

    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.in_flight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget lets a burst of ten seconds' worth through at once, then paces requests.
    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_burst_then_paces() {
        let b = Budget::new(60); // one per second, burst of 10
        let start = Instant::now();
        for _ in 0..10 {
            b.take().await;
        }
        assert_eq!(Instant::now(), start, "the burst is not delayed");
        b.take().await;
        b.take().await;
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_millis(1900) && waited <= Duration::from_millis(2100), "{waited:?}");
    }

    /// The gate admits as many requests as configured and no more until a permit is dropped.
    #[tokio::test(start_paused = true)]
    async fn the_gate_limits_requests_in_flight() {
        let g = Gate::new(2, None);
        let a = g.enter().await;
        let _b = g.enter().await;
        assert_eq!(g.available(), 0);
        assert!(tokio::time::timeout(Duration::from_millis(10), g.enter()).await.is_err(), "a third must wait");
        drop(a);
        let _c = g.enter().await;
    }
}
