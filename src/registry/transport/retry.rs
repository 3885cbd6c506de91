//! The retry layer: which failures are worth another attempt, and how long to wait first.
//!
//! Every request goes through it, the run's first ones and token fetches included: a registry
//! restarting (connection refused or reset), throttling (429, honouring `Retry-After`) and
//! passing server errors (5xx) are waited out with exponential backoff and jitter. A timeout is
//! retried once only: a registry that stayed silent twice in a row is down, and waiting for it
//! `retries` times would keep a run hanging for many minutes.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Timeouts retried per request (see the module docs).
const TIMEOUT_RETRIES: u32 = 1;

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// An answer with this status (and `Retry-After`, if any).
    Status(u16, Option<Duration>),
    /// The connection failed or broke before an answer (refused, reset, DNS, TLS).
    Connection,
    /// No answer within the configured time.
    Timeout,
}

/// Whether a status is worth retrying: request timeout, throttling, passing server errors.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The retry state of one request.
#[derive(Debug)]
pub struct Retry {
    max: u32,
    attempts: u32,
    timeouts: u32,
}

impl Retry {
    /// `max` retries after the first attempt (`transfer.retries`).
    pub fn new(max: u32) -> Self {
        Retry { max, attempts: 0, timeouts: 0 }
    }

    /// How long to wait before trying again after `cause`, or `None` to give up.
    pub fn next(&mut self, cause: Cause) -> Option<Duration> {
        if self.attempts >= self.max {
            return None;
        }
        let wait = match cause {
            Cause::Status(s, _) if !retryable_status(s) => return None,
            Cause::Status(_, Some(after)) => after,
            Cause::Timeout if self.timeouts >= TIMEOUT_RETRIES => return None,
            Cause::Timeout => {
                self.timeouts += 1;
                backoff(self.attempts + 1)
            }
            Cause::Status(..) | Cause::Connection => backoff(self.attempts + 1),
        };
        self.attempts += 1;
        Some(wait)
    }
}

/// Exponential backoff with jitter: about 0.5 s, 1 s, 2 s, … capped at 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5f64 * 2f64.powi(attempt.saturating_sub(1).min(6) as i32);
    let jitter = 0.5 + rand::random::<f64>();
    Duration::from_secs_f64((base * jitter).min(30.0))
}

/// `Retry-After` as seconds or an HTTP date, capped at five minutes.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(300)), "capped");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs_f64(0.75));
        assert!(backoff(3) >= Duration::from_secs(1));
        assert!(backoff(40) <= Duration::from_secs(30));
    }

    /// Throttling waits as long as the registry asked; refusals and other 4xx are final.
    #[test]
    fn statuses_are_retried_as_the_registry_asks() {
        let mut r = Retry::new(5);
        assert_eq!(r.next(Cause::Status(429, Some(Duration::from_secs(2)))), Some(Duration::from_secs(2)));
        assert!(r.next(Cause::Status(503, None)).is_some());
        assert_eq!(r.next(Cause::Status(404, None)), None);
        assert_eq!(r.next(Cause::Status(401, None)), None);
        assert_eq!(r.attempts, 2);
    }

    /// Connection failures use every retry; timeouts only one; nothing passes the maximum.
    #[test]
    fn connection_failures_use_all_retries_and_timeouts_one() {
        let mut r = Retry::new(3);
        assert!(r.next(Cause::Timeout).is_some());
        assert_eq!(r.next(Cause::Timeout), None, "a second timeout is final");
        assert!(r.next(Cause::Connection).is_some());
        assert!(r.next(Cause::Connection).is_some());
        assert_eq!(r.next(Cause::Connection), None, "three retries at most");
        assert_eq!(Retry::new(0).next(Cause::Connection), None);
    }
}
